//! Room frames (issue 16) on arbitrary bytes: decoding frames and parsing
//! them as `ROOM` frames must never panic, and whatever parses must be
//! valid, re-encode to an equal value, and merge into a member list
//! within its bound (`roundtable_shared::room::decode_and_parse`, which
//! the shared crate's proptests also run).
#![no_main]

use libfuzzer_sys::fuzz_target;
use roundtable_shared::room::decode_and_parse;

fuzz_target!(|data: &[u8]| {
    decode_and_parse(data);
});
