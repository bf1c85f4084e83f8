//! NVFlare binary exchanges (`roundtable_shared::binary`) on arbitrary
//! bytes, fed whole and in small pieces: decoding must never panic, never
//! take more than the limits allow, and give the same answer however the
//! stream is split.
#![no_main]

use libfuzzer_sys::fuzz_target;
use roundtable_shared::binary::{decode_in_pieces, Limits};

fuzz_target!(|data: &[u8]| {
    let limits = Limits {
        max_meta: 1024,
        max_body: 1 << 20,
    };
    let whole = decode_in_pieces(data, data.len().max(1), limits);
    for chunk in [1, 7, 64] {
        assert_eq!(decode_in_pieces(data, chunk, limits), whole, "split into {chunk}s");
    }
});
