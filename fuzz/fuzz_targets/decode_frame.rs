//! `decode_from` on arbitrary bytes must not panic, and whatever it decodes as a frame must
//! re-encode to exactly the bytes it was decoded from.
//!
//! Raw input rarely gets past the CRC, so each input is also tried "sealed": its first four
//! bytes set to the length of the rest and its CRC recomputed, which sends the fuzzer into the
//! payload checks.

#![no_main]

use libfuzzer_sys::fuzz_target;
use statestore::internals::{Decoded, decode_from, encode_into};

/// Bytes of `len` + `crc` before the payload.
const PREFIX: usize = 8;

fn check(bytes: &[u8]) {
    if let Ok(Decoded::Frame(f)) = decode_from(bytes) {
        let frame = bytes
            .get(..f.frame_len)
            .expect("frame_len is within the input");
        let payload = frame
            .get(PREFIX..)
            .expect("frame is longer than its prefix");
        let mut again = Vec::with_capacity(frame.len());
        encode_into(&mut again, &f.header, &f.body(payload));
        assert_eq!(
            again, frame,
            "decoded frame {f:?} does not re-encode to its bytes"
        );
    }
}

fn sealed(data: &[u8]) -> Option<Vec<u8>> {
    let payload_len = u32::try_from(data.len().checked_sub(PREFIX)?).ok()?;
    let mut bytes = data.to_vec();
    bytes
        .get_mut(..4)?
        .copy_from_slice(&payload_len.to_le_bytes());
    let mut h = crc32fast::Hasher::new();
    h.update(bytes.get(..4)?);
    h.update(bytes.get(PREFIX..)?);
    let crc = h.finalize();
    bytes
        .get_mut(4..PREFIX)?
        .copy_from_slice(&crc.to_le_bytes());
    Some(bytes)
}

fuzz_target!(|data: &[u8]| {
    check(data);
    if let Some(bytes) = sealed(data) {
        check(&bytes);
    }
});
