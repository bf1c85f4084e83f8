//! The frame decoder on arbitrary bytes: it must never panic, never claim
//! more bytes than it was given, respect its limits, and agree with the
//! encoder on everything it accepts.
#![no_main]

use libfuzzer_sys::fuzz_target;
use roundtable_shared::frame::{decode, decode_all, Decoded, Frame, Limits};

/// The limits in force: the defaults, and tight ones so that the limit
/// checks are reached by short inputs.
fn limits() -> [Limits; 3] {
    [
        Limits::default(),
        Limits {
            max_header: 16,
            max_payload: 8,
        },
        Limits {
            max_header: 64,
            max_payload: 0,
        },
    ]
}

/// `frame` encodes, and decoding the encoding gives it back, whole.
fn round_trips(frame: &Frame, limits: &Limits) {
    let wire = frame
        .encode()
        .unwrap_or_else(|e| panic!("decoded frame {frame:?} does not encode: {e}"));
    match decode(&wire, limits) {
        Ok(Decoded::Frame(again, used)) => {
            assert_eq!(&again, frame, "re-encoded frame decodes differently");
            assert_eq!(used, wire.len(), "re-encoded frame not consumed whole");
        }
        other => panic!("re-encoded frame {frame:?} ({wire:?}) decodes as {other:?}"),
    }
}

fuzz_target!(|data: &[u8]| {
    for limits in limits() {
        let first = match decode(data, &limits) {
            Ok(Decoded::Frame(frame, used)) => {
                assert!(
                    used <= data.len(),
                    "consumed {used} of {} bytes",
                    data.len()
                );
                assert!(frame.payload.len() <= limits.max_payload);
                round_trips(&frame, &limits);
                Some(frame)
            }
            Ok(Decoded::NeedMore) | Err(_) => None,
        };

        if let Ok((frames, used)) = decode_all(data, &limits) {
            assert!(
                used <= data.len(),
                "consumed {used} of {} bytes",
                data.len()
            );
            assert_eq!(
                frames.first(),
                first.as_ref(),
                "decode_all disagrees with decode"
            );
            let mut wire = Vec::new();
            for frame in &frames {
                assert!(frame.payload.len() <= limits.max_payload);
                round_trips(frame, &limits);
                frame.encode_into(&mut wire).unwrap();
            }
            // The frames' own encoding decodes to the same frames, all of it used.
            assert_eq!(decode_all(&wire, &limits), Ok((frames, wire.len())));
        }
    }
});
