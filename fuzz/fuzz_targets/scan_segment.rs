//! `scan_segment` on arbitrary bytes, in both roles, must return (Ok or Err) and never panic.
//!
//! Raw input rarely gets past the header and frame CRCs, so each input is also tried "sealed":
//! a valid header for the first position found at bytes 16..24 (and the gap flag found in bit
//! 0 of byte 24), and the CRC of every frame that a walk from the header finds whole
//! recomputed. That lets the fuzzer reach the commit grouping, the gap rules and the
//! torn-tail / damage rules.

#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use statestore::internals::{SEGMENT_GAP_BEFORE, SegmentRole, encode_header, scan_segment};

const HEADER: usize = 32;
const PREFIX: usize = 8;
const EVENT_HEADER: usize = 72;

fn check(bytes: &[u8]) {
    let path = Path::new("fuzz.seg");
    for role in [SegmentRole::Sealed, SegmentRole::Last] {
        let _ = scan_segment(path, bytes, role, None, None, None, &mut |_| Ok(()));
    }
    // With an expected first position, too (mismatch or match).
    let _ = scan_segment(path, bytes, SegmentRole::Last, Some(1), None, None, &mut |_| Ok(()));
}

fn sealed(data: &[u8]) -> Option<Vec<u8>> {
    let mut bytes = data.to_vec();
    let first = u64::from_le_bytes(bytes.get(16..24)?.try_into().ok()?);
    let flags = u32::from(*bytes.get(24)?) & SEGMENT_GAP_BEFORE;
    bytes
        .get_mut(..HEADER)?
        .copy_from_slice(&encode_header(first, flags));
    let mut at = HEADER;
    while let Some(len) = bytes.get(at..at + 4) {
        let len = u32::from_le_bytes(len.try_into().ok()?) as usize;
        if len < EVENT_HEADER || at + PREFIX + len > bytes.len() {
            break;
        }
        let mut h = crc32fast::Hasher::new();
        h.update(bytes.get(at..at + 4)?);
        h.update(bytes.get(at + PREFIX..at + PREFIX + len)?);
        let crc = h.finalize();
        bytes
            .get_mut(at + 4..at + PREFIX)?
            .copy_from_slice(&crc.to_le_bytes());
        at += PREFIX + len;
    }
    Some(bytes)
}

fuzz_target!(|data: &[u8]| {
    check(data);
    if let Some(bytes) = sealed(data) {
        check(&bytes);
    }
});
