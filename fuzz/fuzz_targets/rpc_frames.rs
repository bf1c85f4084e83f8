//! Overlay request/reply frames (`REQ`, `REP`) on arbitrary bytes:
//! decoding and parsing them and reading their bodies as an `info` reply
//! must never panic, and whatever parses must be valid, within the body
//! limit and re-encode to the same bytes
//! (`roundtable_shared::rpc::decode_and_parse`, which the shared crate's
//! proptests also run, so this code path is built by normal tests).
#![no_main]

use libfuzzer_sys::fuzz_target;
use roundtable_shared::rpc::decode_and_parse;

fuzz_target!(|data: &[u8]| {
    decode_and_parse(data);
});
