//! Directory frames on arbitrary bytes: decoding and then parsing them as
//! client requests and as server replies (the classic commands and the
//! key commands `KEY`/`REKEY`/`KEYQUERY`, `NAK`/`KEYRESULT`, and the relay's
//! `RELAY`/`RELAYQUERY`/`HELLO`/`SEC`, `RELAYRESULT`/`RELAYNAK`) must never
//! panic, whatever parses must re-encode to a frame that parses the same, a
//! relayed frame must read the same as a request and as a reply (moved or
//! copied), and a key text that parses must print as itself
//! (`roundtable_shared::directory::decode_and_parse`, which the shared
//! crate's proptests also run, so this code path is built by normal tests).
#![no_main]

use libfuzzer_sys::fuzz_target;
use roundtable_shared::directory::decode_and_parse;

fuzz_target!(|data: &[u8]| {
    decode_and_parse(data);
});
