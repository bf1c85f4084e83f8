//! The progress exchange's bodies and the metric forms (issue 15) on
//! arbitrary bytes: parsing a `progress` request or reply, a metric line
//! or a metric post must never panic, and whatever parses must be valid
//! and re-encode to an equal value
//! (`roundtable_shared::progress::decode_and_parse`, which the shared
//! crate's proptests also run).
#![no_main]

use libfuzzer_sys::fuzz_target;
use roundtable_shared::progress::decode_and_parse;

fuzz_target!(|data: &[u8]| {
    decode_and_parse(data);
});
