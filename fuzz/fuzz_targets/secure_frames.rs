//! Secure overlay frames (`HELLO`, `SEC`) on arbitrary bytes: decoding and
//! parsing them, their payloads as sealed records and their arguments as
//! key texts must never panic, and whatever parses must re-encode to the
//! same bytes within the size limits
//! (`roundtable_shared::secure::decode_and_parse`, which the shared crate's
//! proptests also run, so this code path is built by normal tests).
#![no_main]

use libfuzzer_sys::fuzz_target;
use roundtable_shared::secure::decode_and_parse;

fuzz_target!(|data: &[u8]| {
    decode_and_parse(data);
});
