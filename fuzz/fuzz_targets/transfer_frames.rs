//! Node-to-node transfer frames (`FILEQ`, `FILEREPLY`, `FILEDATA`) and the
//! JSON meta of our binary exchanges on arbitrary bytes: parsing must never
//! panic, and whatever parses must re-encode to the same value
//! (`roundtable_shared::transfer::decode_and_parse`, also run by the
//! shared crate's proptests).
#![no_main]

use libfuzzer_sys::fuzz_target;
use roundtable_shared::transfer::decode_and_parse;

fuzz_target!(|data: &[u8]| {
    decode_and_parse(data);
});
