//! Unit tests for segment headers, file names and the segment scan.

#![allow(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    reason = "tests index fixed, known-length buffers and unwrap to fail loudly"
)]

use std::path::{Path, PathBuf};

use super::*;
use crate::log::frame::{EventBody, EventHeader, encode_into};

const PATH: &str = "/data/00000000000000000001.seg";

// ---- helpers ------------------------------------------------------------------------------

/// One frame of event `position`, event `index` of a `count`-event commit.
fn frame(position: u64, index: u32, count: u32, durable_through: u64) -> Vec<u8> {
    let header = EventHeader {
        position,
        revision: position - 1,
        durable_through,
        timestamp_us: 1_700_000_000_000_000u64.wrapping_add(position),
        id: position.to_le_bytes().repeat(2).try_into().unwrap(),
        commit_index: index,
        commit_count: count,
        content_type: 1,
        flags: 0,
    };
    let data = format!(
        r#"{{"n":{position},"pad":"{}"}}"#,
        "x".repeat(usize::try_from(position % 7).unwrap())
    );
    let body = EventBody {
        stream: "stream-1",
        event_type: "Happened",
        data: data.as_bytes(),
        metadata: b"m",
        principal: "",
    };
    let mut buf = Vec::new();
    encode_into(&mut buf, &header, &body);
    buf
}

/// A segment starting at `first`: header, the given parts in order, zeros up to `size` bytes
/// (no padding when `size` is smaller than the content).
fn segment(first: u64, parts: &[&[u8]], size: usize) -> Vec<u8> {
    let mut bytes = encode_header(first, 0).to_vec();
    for p in parts {
        bytes.extend_from_slice(p);
    }
    if bytes.len() < size {
        bytes.resize(size, 0);
    }
    bytes
}

/// Offsets at which each of `parts` starts in a segment built by [`segment`], and the end.
fn offsets(parts: &[&[u8]]) -> (Vec<u64>, u64) {
    let mut at = SEGMENT_HEADER_BYTES as u64;
    let mut starts = Vec::new();
    for p in parts {
        starts.push(at);
        at += p.len() as u64;
    }
    (starts, at)
}

/// Scans, collecting (offset, position) of every event passed to the callback.
fn scan(
    bytes: &[u8],
    role: SegmentRole,
    expected: Option<u64>,
) -> (Result<SegmentScan>, Vec<(u64, u64)>) {
    let mut seen = Vec::new();
    let result = scan_segment(
        Path::new(PATH),
        bytes,
        role,
        expected,
        None,
        None,
        &mut |f| {
            let end = usize::try_from(f.offset).unwrap() + f.frame.frame_len;
            assert_eq!(
                f.payload,
                &bytes[usize::try_from(f.offset).unwrap() + FRAME_PREFIX_BYTES..end],
                "payload of the frame at {}",
                f.offset
            );
            seen.push((f.offset, f.frame.header.position));
            Ok(())
        },
    );
    (result, seen)
}

/// The offset and reason of a corruption error for [`PATH`].
fn corruption(result: Result<SegmentScan>) -> (u64, String) {
    match result {
        Err(Error::Corruption {
            file,
            offset,
            reason,
        }) => {
            assert_eq!(file, PathBuf::from(PATH));
            (offset, reason)
        }
        other => panic!("expected Corruption, got {other:?}"),
    }
}

fn reseal_frame(f: &mut [u8]) {
    let mut h = crc32fast::Hasher::new();
    h.update(&f[0..4]);
    h.update(&f[8..]);
    let crc = h.finalize();
    f[4..8].copy_from_slice(&crc.to_le_bytes());
}

fn reseal_header(h: &mut [u8]) {
    let crc = crc32fast::hash(&h[..OFF_CRC]);
    h[OFF_CRC..SEGMENT_HEADER_BYTES].copy_from_slice(&crc.to_le_bytes());
}

/// Deterministic pseudo-random bytes (xorshift64), none of them zero.
fn noise(n: usize, mut seed: u64) -> Vec<u8> {
    (0..n)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed >> 24) as u8 | 1
        })
        .collect()
}

// ---- header -------------------------------------------------------------------------------

#[test]
fn header_round_trip() {
    for first in [1, 2, 42, 1 << 40, u64::MAX - 1, u64::MAX] {
        let h = encode_header(first, 0);
        let plain = SegmentHeader {
            first_position: first,
            flags: 0,
        };
        assert_eq!(decode_header(&h), Ok(plain));
        // Bytes after the header do not matter.
        let mut longer = h.to_vec();
        longer.extend_from_slice(&[0xee; 100]);
        assert_eq!(decode_header(&longer), Ok(plain));
        let flagged = decode_header(&encode_header(first, SEGMENT_GAP_BEFORE)).unwrap();
        assert_eq!(
            flagged,
            SegmentHeader {
                first_position: first,
                flags: SEGMENT_GAP_BEFORE
            }
        );
        assert!(flagged.gap_before() && !plain.gap_before());
    }
}

#[test]
fn header_layout() {
    let h = encode_header(0x0102_0304_0506_0708, 0);
    assert_eq!(h[..8], *b"STSTSEG\0");
    assert_eq!(h[8..12], FORMAT_VERSION.to_le_bytes());
    assert_eq!(h[12..16], 32u32.to_le_bytes());
    assert_eq!(h[16..24], 0x0102_0304_0506_0708u64.to_le_bytes());
    assert_eq!(h[24..28], [0; 4]);
    assert_eq!(h[28..32], crc32fast::hash(&h[..28]).to_le_bytes());
    let h = encode_header(9, SEGMENT_GAP_BEFORE);
    assert_eq!(h[24..28], 1u32.to_le_bytes());
    assert_eq!(h[28..32], crc32fast::hash(&h[..28]).to_le_bytes());
    // Unknown bits are not written.
    assert_eq!(encode_header(9, u32::MAX), h);
}

#[test]
fn header_too_short() {
    let h = encode_header(5, 0);
    for n in 0..SEGMENT_HEADER_BYTES {
        let err = decode_header(&h[..n]).unwrap_err();
        assert!(
            err.contains("shorter than the segment header"),
            "{n}: {err}"
        );
        assert!(err.contains(&format!("{n} bytes")), "{n}: {err}");
    }
}

#[test]
fn header_bad_magic() {
    for i in 0..8 {
        let mut h = encode_header(5, 0);
        h[i] ^= 0x20;
        reseal_header(&mut h);
        let err = decode_header(&h).unwrap_err();
        assert_eq!(err, "bad segment magic", "byte {i}");
    }
    assert_eq!(decode_header(&[0; 32]).unwrap_err(), "bad segment magic");
}

#[test]
fn header_bad_crc() {
    for i in 8..SEGMENT_HEADER_BYTES {
        let mut h = encode_header(5, 0);
        h[i] ^= 0x01;
        let err = decode_header(&h).unwrap_err();
        assert!(
            err.contains("segment header checksum mismatch"),
            "byte {i}: {err}"
        );
    }
}

#[test]
fn header_bad_version() {
    for v in [0u32, 2, u32::MAX] {
        let mut h = encode_header(5, 0);
        h[OFF_VERSION..OFF_VERSION + 4].copy_from_slice(&v.to_le_bytes());
        reseal_header(&mut h);
        let err = decode_header(&h).unwrap_err();
        assert!(
            err.contains(&format!("unsupported segment format version {v}")),
            "{err}"
        );
    }
}

#[test]
fn header_bad_size_or_unknown_flags() {
    let mut h = encode_header(5, 0);
    h[OFF_HEADER_BYTES..OFF_HEADER_BYTES + 4].copy_from_slice(&64u32.to_le_bytes());
    reseal_header(&mut h);
    assert_eq!(
        decode_header(&h).unwrap_err(),
        "unexpected segment header size 64"
    );

    for flags in [2u32, 0x80, 1 << 31, u32::MAX] {
        let mut h = encode_header(5, 0);
        h[OFF_FLAGS..OFF_FLAGS + 4].copy_from_slice(&flags.to_le_bytes());
        reseal_header(&mut h);
        assert_eq!(
            decode_header(&h).unwrap_err(),
            format!("unknown segment header flags {flags:#010x}")
        );
    }
}

#[test]
fn header_first_position_zero() {
    let h = encode_header(0, 0);
    assert_eq!(
        decode_header(&h).unwrap_err(),
        "segment first position is 0"
    );
}

// ---- file names ---------------------------------------------------------------------------

#[test]
fn file_name_format() {
    assert_eq!(segment_file_name(1), "00000000000000000001.seg");
    assert_eq!(segment_file_name(1234), "00000000000000001234.seg");
    assert_eq!(segment_file_name(u64::MAX), "18446744073709551615.seg");
}

#[test]
fn file_name_round_trip_and_order() {
    let positions = [
        0,
        1,
        9,
        10,
        99,
        100,
        12_345_678,
        1 << 53,
        u64::MAX - 1,
        u64::MAX,
    ];
    let mut names = Vec::new();
    for p in positions {
        let name = segment_file_name(p);
        assert_eq!(parse_segment_file_name(&name), Some(p), "{name}");
        names.push(name);
    }
    // Lexical order is log order.
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(sorted, names);
}

#[test]
fn file_name_rejects_other_names() {
    for name in [
        "",
        ".seg",
        "1.seg",
        "0000000000000000001.seg",   // 19 digits
        "000000000000000000001.seg", // 21 digits
        "0000000000000000000a.seg",
        "+0000000000000000001.seg",
        "-0000000000000000001.seg",
        " 0000000000000000001.seg",
        "00000000000000000001",
        "00000000000000000001.SEG",
        "00000000000000000001.seg.tmp",
        "00000000000000000001.seg ",
        "x00000000000000000001.seg",
        "next.seg.prealloc",
        "18446744073709551616.seg", // u64::MAX + 1
        "99999999999999999999.seg",
        "\u{0661}\u{0662}\u{0663}\u{0664}\u{0665}\u{0666}\u{0667}\u{0668}\u{0669}\u{0660}.seg",
    ] {
        assert_eq!(parse_segment_file_name(name), None, "{name:?}");
    }
}

// ---- scan: whole segments -----------------------------------------------------------------

#[test]
fn scan_clean_end() {
    let (f1, f2, f3, f4) = (
        frame(7, 0, 1, 6),
        frame(8, 0, 2, 7),
        frame(9, 1, 2, 7),
        frame(10, 0, 1, 9),
    );
    let parts: [&[u8]; 4] = [&f1, &f2, &f3, &f4];
    let (starts, end) = offsets(&parts);
    for (role, size) in [
        (SegmentRole::Last, 4096),
        (SegmentRole::Sealed, 4096),
        (SegmentRole::Last, 0),
    ] {
        let bytes = segment(7, &parts, size);
        let (result, seen) = scan(&bytes, role, Some(7));
        assert_eq!(
            result.unwrap(),
            SegmentScan {
                first_position: 7,
                next_position: 11,
                data_end: end,
                torn: None,
            },
            "{role:?}, size {size}"
        );
        let expected: Vec<(u64, u64)> = starts.iter().copied().zip(7..).collect();
        assert_eq!(seen, expected);
    }
}

#[test]
fn scan_empty_segment() {
    for size in [
        SEGMENT_HEADER_BYTES,
        SEGMENT_HEADER_BYTES + 1,
        SEGMENT_HEADER_BYTES + 3,
        4096,
    ] {
        for role in [SegmentRole::Last, SegmentRole::Sealed] {
            let bytes = segment(3, &[], size);
            let (result, seen) = scan(&bytes, role, None);
            assert_eq!(
                result.unwrap(),
                SegmentScan {
                    first_position: 3,
                    next_position: 3,
                    data_end: SEGMENT_HEADER_BYTES as u64,
                    torn: None,
                }
            );
            assert!(seen.is_empty());
        }
    }
}

#[test]
fn scan_bad_header_is_corruption_at_zero() {
    let mut bytes = segment(1, &[&frame(1, 0, 1, 0)], 1024);
    bytes[3] ^= 0xff;
    for role in [SegmentRole::Last, SegmentRole::Sealed] {
        let (offset, reason) = corruption(scan(&bytes, role, None).0);
        assert_eq!((offset, reason.as_str()), (0, "bad segment magic"));
    }
    let (offset, reason) = corruption(scan(&bytes[..10], SegmentRole::Last, None).0);
    assert_eq!(offset, 0);
    assert!(
        reason.contains("shorter than the segment header"),
        "{reason}"
    );
}

#[test]
fn scan_expected_first_mismatch() {
    let bytes = segment(10, &[&frame(10, 0, 1, 9)], 1024);
    for role in [SegmentRole::Last, SegmentRole::Sealed] {
        let (offset, reason) = corruption(scan(&bytes, role, Some(11)).0);
        assert_eq!(offset, OFF_FIRST_POSITION as u64);
        assert!(reason.contains("starts at position 10"), "{reason}");
        assert!(reason.contains("continues at 11"), "{reason}");
        assert_eq!(scan(&bytes, role, Some(10)).0.unwrap().next_position, 11);
        assert_eq!(scan(&bytes, role, None).0.unwrap().next_position, 11);
    }
}

#[test]
fn scan_callback_error_stops_the_scan() {
    let (f1, f2) = (frame(1, 0, 1, 0), frame(2, 0, 1, 1));
    let bytes = segment(1, &[&f1, &f2], 1024);
    let mut calls = 0;
    let result = scan_segment(
        Path::new(PATH),
        &bytes,
        SegmentRole::Last,
        None,
        None,
        None,
        &mut |_| {
            calls += 1;
            Err(Error::InvalidArgument("stop".into()))
        },
    );
    assert!(
        matches!(result, Err(Error::InvalidArgument(ref s)) if s == "stop"),
        "{result:?}"
    );
    assert_eq!(calls, 1);
}

// ---- scan: damage that is always corruption -----------------------------------------------

#[test]
fn scan_wrong_position_is_corruption() {
    let (f1, f3) = (frame(1, 0, 1, 0), frame(3, 0, 1, 1));
    let parts: [&[u8]; 2] = [&f1, &f3];
    let (starts, _) = offsets(&parts);
    let bytes = segment(1, &parts, 1024);
    for role in [SegmentRole::Last, SegmentRole::Sealed] {
        let (result, seen) = scan(&bytes, role, None);
        let (offset, reason) = corruption(result);
        assert_eq!(offset, starts[1]);
        assert_eq!(reason, "frame has position 3, expected 2");
        assert_eq!(seen, vec![(starts[0], 1)]);
    }
    // The first frame must carry the segment's first position.
    let bytes = segment(5, &[&frame(4, 0, 1, 3)], 1024);
    let (offset, reason) = corruption(scan(&bytes, SegmentRole::Last, None).0);
    assert_eq!(
        (offset, reason.as_str()),
        (32, "frame has position 4, expected 5")
    );
}

#[test]
fn scan_wrong_commit_shape_is_corruption() {
    // Event 1 of a commit where event 0 is expected.
    let (f1, f2) = (frame(1, 0, 1, 0), frame(2, 1, 2, 1));
    let (starts, _) = offsets(&[&f1, &f2]);
    let bytes = segment(1, &[&f1, &f2], 1024);
    for role in [SegmentRole::Last, SegmentRole::Sealed] {
        let (offset, reason) = corruption(scan(&bytes, role, None).0);
        assert_eq!(offset, starts[1]);
        assert_eq!(
            reason,
            "frame is event 1 of a 2-event commit, expected event 0"
        );
    }
    // A new commit starting before the previous one ends.
    let (f2, f3) = (frame(2, 0, 2, 1), frame(3, 0, 1, 1));
    let (starts, _) = offsets(&[&f1, &f2, &f3]);
    let bytes = segment(1, &[&f1, &f2, &f3], 1024);
    let (offset, reason) = corruption(scan(&bytes, SegmentRole::Last, None).0);
    assert_eq!(offset, starts[2]);
    assert_eq!(
        reason,
        "frame is event 0 of a 1-event commit, expected event 1"
    );
    // The commit count changing within a commit.
    let f3 = frame(3, 1, 3, 1);
    let bytes = segment(1, &[&f1, &f2, &f3], 1024);
    let (offset, reason) = corruption(scan(&bytes, SegmentRole::Last, None).0);
    assert_eq!(offset, starts[2]);
    assert_eq!(
        reason,
        "frame is event 1 of a 3-event commit, expected event 1"
    );
}

#[test]
fn scan_inconsistent_frame_is_corruption_even_in_last_role() {
    // (byte of the payload, value, reason)
    for (at, value, why) in [
        (57, 2, "unknown frame flags"),
        (57, 0x81, "unknown frame flags"),
        (62, 1, "part lengths do not add up to the frame length"),
    ] {
        let f1 = frame(1, 0, 1, 0);
        let mut f2 = frame(2, 0, 1, 1);
        f2[FRAME_PREFIX_BYTES + at] = value;
        reseal_frame(&mut f2);
        let (starts, _) = offsets(&[&f1, &f2]);
        let bytes = segment(1, &[&f1, &f2], 1024);
        for role in [SegmentRole::Last, SegmentRole::Sealed] {
            let (offset, reason) = corruption(scan(&bytes, role, None).0);
            assert_eq!((offset, reason.as_str()), (starts[1], why));
        }
    }
}

// ---- scan: gaps in positions --------------------------------------------------------------

/// [`frame`] with [`frame::GAP_BEFORE`] set.
fn gap_frame(position: u64, index: u32, count: u32, durable_through: u64) -> Vec<u8> {
    let mut f = frame(position, index, count, durable_through);
    f[FRAME_PREFIX_BYTES + 57] = frame::GAP_BEFORE;
    reseal_frame(&mut f);
    f
}

/// [`segment`] with a header flagged [`SEGMENT_GAP_BEFORE`].
fn gap_segment(first: u64, parts: &[&[u8]], size: usize) -> Vec<u8> {
    let mut bytes = segment(first, parts, size);
    bytes[..SEGMENT_HEADER_BYTES].copy_from_slice(&encode_header(first, SEGMENT_GAP_BEFORE));
    bytes
}

#[test]
fn scan_flagged_frame_may_jump_ahead() {
    // 1, then 5 (flagged), then a commit of 6 and 9 (9 flagged), then 10.
    let (f1, f5, f6, f9, f10) = (
        frame(1, 0, 1, 0),
        gap_frame(5, 0, 1, 1),
        frame(6, 0, 2, 5),
        gap_frame(9, 1, 2, 5),
        frame(10, 0, 1, 9),
    );
    let parts: [&[u8]; 5] = [&f1, &f5, &f6, &f9, &f10];
    let (starts, end) = offsets(&parts);
    for role in [SegmentRole::Last, SegmentRole::Sealed] {
        let bytes = segment(1, &parts, 4096);
        let (result, seen) = scan(&bytes, role, Some(1));
        assert_eq!(
            result.unwrap(),
            SegmentScan {
                first_position: 1,
                next_position: 11,
                data_end: end,
                torn: None,
            }
        );
        let want: Vec<(u64, u64)> = starts.iter().copied().zip([1, 5, 6, 9, 10]).collect();
        assert_eq!(seen, want);
    }
    // A flag on a frame that does not jump is harmless.
    let (g1, g2) = (gap_frame(1, 0, 1, 0), gap_frame(2, 0, 1, 1));
    let bytes = segment(1, &[&g1, &g2], 4096);
    assert_eq!(
        scan(&bytes, SegmentRole::Sealed, Some(1))
            .0
            .unwrap()
            .next_position,
        3
    );
}

#[test]
fn scan_unflagged_or_backward_jump_is_corruption() {
    let (f1, f2) = (frame(1, 0, 1, 0), frame(2, 0, 1, 1));
    let (starts, _) = offsets(&[&f1, &f2, &[]]);
    // Unflagged jump: as without gaps.
    let bytes = segment(1, &[&f1, &f2, &frame(7, 0, 1, 2)], 4096);
    let (offset, reason) = corruption(scan(&bytes, SegmentRole::Last, None).0);
    assert_eq!(
        (offset, reason.as_str()),
        (starts[2], "frame has position 7, expected 3")
    );
    // A flagged frame going back, or repeating a position.
    for p in [1, 2] {
        let bytes = segment(1, &[&f1, &f2, &gap_frame(p, 0, 1, 2)], 4096);
        let (offset, reason) = corruption(scan(&bytes, SegmentRole::Last, None).0);
        assert_eq!(offset, starts[2]);
        assert_eq!(
            reason,
            format!("frame has position {p}, expected 3 or above")
        );
    }
    // After a flagged jump, the next frame must follow it.
    let f9 = gap_frame(9, 0, 1, 2);
    let bytes = segment(1, &[&f1, &f2, &f9, &frame(3, 0, 1, 9)], 4096);
    let (offset, reason) = corruption(scan(&bytes, SegmentRole::Sealed, None).0);
    assert_eq!(offset, starts[2] + f9.len() as u64);
    assert_eq!(reason, "frame has position 3, expected 10");
}

#[test]
fn scan_flagged_segment_may_start_above_the_expected_position() {
    let f20 = frame(20, 0, 1, 0);
    let (_, end) = offsets(&[&f20]);
    for role in [SegmentRole::Last, SegmentRole::Sealed] {
        let bytes = gap_segment(20, &[&f20], 4096);
        for expected in [Some(1), Some(19), Some(20), None] {
            let s = scan(&bytes, role, expected).0.unwrap();
            assert_eq!(
                (s.first_position, s.next_position),
                (20, 21),
                "{expected:?}"
            );
            assert_eq!(s.data_end, end);
        }
        // Not below the expected position.
        let (offset, reason) = corruption(scan(&bytes, role, Some(21)).0);
        assert_eq!(offset, OFF_FIRST_POSITION as u64);
        assert_eq!(
            reason,
            "segment starts at position 20, but the log continues at 21"
        );
        // Without the flag, only exactly where the log continues.
        let bytes = segment(20, &[&f20], 4096);
        let (offset, reason) = corruption(scan(&bytes, role, Some(19)).0);
        assert_eq!(offset, OFF_FIRST_POSITION as u64);
        assert_eq!(
            reason,
            "segment starts at position 20, but the log continues at 19"
        );
    }
}

#[test]
fn scan_empty_flagged_segment_says_where_the_log_continues() {
    let bytes = gap_segment(1000, &[], 4096);
    for role in [SegmentRole::Last, SegmentRole::Sealed] {
        let (result, seen) = scan(&bytes, role, Some(501));
        assert_eq!(
            result.unwrap(),
            SegmentScan {
                first_position: 1000,
                next_position: 1000,
                data_end: SEGMENT_HEADER_BYTES as u64,
                torn: None,
            }
        );
        assert!(seen.is_empty());
    }
}

#[test]
fn scan_torn_commit_after_a_gap_continues_before_the_gap() {
    // 1, 2, then a commit of 8 (flagged) and 9 whose second frame never reached the disk: the
    // log continues at 3, where an unflagged frame may follow 2.
    let (f1, f2, f8) = (frame(1, 0, 1, 0), frame(2, 0, 1, 1), gap_frame(8, 0, 2, 2));
    let parts: [&[u8]; 3] = [&f1, &f2, &f8];
    let (starts, end) = offsets(&parts);
    let bytes = segment(1, &parts, 4096);
    let (result, seen) = scan(&bytes, SegmentRole::Last, None);
    assert_eq!(
        result.unwrap(),
        SegmentScan {
            first_position: 1,
            next_position: 3,
            data_end: starts[2],
            torn: Some(TornTail {
                found_at: end,
                garbage_end: end,
                reason: "commit ends before all its events",
            }),
        }
    );
    assert_eq!(seen, vec![(starts[0], 1), (starts[1], 2)]);
}

// ---- scan: torn tails and damage near the end ---------------------------------------------

#[test]
fn scan_pending_commit_at_end() {
    let (f1, f2, f3) = (frame(1, 0, 1, 0), frame(2, 0, 3, 1), frame(3, 1, 3, 1));
    let parts: [&[u8]; 3] = [&f1, &f2, &f3];
    let (starts, end) = offsets(&parts);
    for size in [4096, 0] {
        let bytes = segment(1, &parts, size);

        let (result, seen) = scan(&bytes, SegmentRole::Last, None);
        assert_eq!(
            result.unwrap(),
            SegmentScan {
                first_position: 1,
                next_position: 2,
                data_end: starts[1],
                torn: Some(TornTail {
                    found_at: end,
                    garbage_end: end,
                    reason: "commit ends before all its events",
                }),
            },
            "size {size}"
        );
        // Events of the incomplete commit are not passed on.
        assert_eq!(seen, vec![(starts[0], 1)]);

        let (result, _) = scan(&bytes, SegmentRole::Sealed, None);
        let (offset, reason) = corruption(result);
        assert_eq!(
            (offset, reason.as_str()),
            (end, "commit ends before all its events")
        );
    }
}

#[test]
fn scan_pending_commit_is_the_whole_segment() {
    let f1 = frame(1, 0, 2, 0);
    let bytes = segment(1, &[&f1], 4096);
    let scan_result = scan(&bytes, SegmentRole::Last, None).0.unwrap();
    assert_eq!(scan_result.next_position, 1);
    assert_eq!(scan_result.data_end, SEGMENT_HEADER_BYTES as u64);
    assert_eq!(
        scan_result.torn.unwrap().found_at,
        (SEGMENT_HEADER_BYTES + f1.len()) as u64
    );
}

#[test]
fn scan_torn_frame_at_end() {
    let (f1, f2) = (frame(1, 0, 1, 0), frame(2, 0, 1, 1));
    let (starts, _) = offsets(&[&f1, &f2]);
    // Most of f2 written: the zeros after it are read as its rest, so the CRC fails.
    let half = &f2[..f2.len() - 3];
    assert_ne!(half.last(), Some(&0));
    let bytes = segment(1, &[&f1, half], 4096);
    let s = scan(&bytes, SegmentRole::Last, None).0.unwrap();
    assert_eq!(
        s,
        SegmentScan {
            first_position: 1,
            next_position: 2,
            data_end: starts[1],
            torn: Some(TornTail {
                found_at: starts[1],
                garbage_end: starts[1] + half.len() as u64,
                reason: "frame checksum mismatch",
            }),
        }
    );
    let (offset, reason) = corruption(scan(&bytes, SegmentRole::Sealed, None).0);
    assert_eq!(
        (offset, reason.as_str()),
        (starts[1], "frame checksum mismatch")
    );

    // The same frame cut by the end of the file.
    let bytes = segment(1, &[&f1, half], 0);
    let s = scan(&bytes, SegmentRole::Last, None).0.unwrap();
    assert_eq!(s.data_end, starts[1]);
    assert_eq!(
        s.torn.unwrap().reason,
        "frame runs past the end of the segment"
    );
    assert_eq!(s.torn.unwrap().garbage_end, bytes.len() as u64);
    let (offset, reason) = corruption(scan(&bytes, SegmentRole::Sealed, None).0);
    assert_eq!(
        (offset, reason.as_str()),
        (starts[1], "frame runs past the end of the segment")
    );

    // Only part of the length field written.
    let bytes = segment(1, &[&f1, &f2[..2]], 0);
    let s = scan(&bytes, SegmentRole::Last, None).0.unwrap();
    assert_eq!(s.data_end, starts[1]);
    assert_eq!(
        s.torn.unwrap().reason,
        "frame runs past the end of the segment"
    );
}

#[test]
fn scan_bad_length_at_end() {
    let f1 = frame(1, 0, 1, 0);
    let (starts, _) = offsets(&[&f1, &[]]);
    let bytes = segment(1, &[&f1, &[5, 0, 0, 0, 0xaa]], 4096);
    let s = scan(&bytes, SegmentRole::Last, None).0.unwrap();
    assert_eq!(s.data_end, starts[1]);
    assert_eq!(
        s.torn.unwrap(),
        TornTail {
            found_at: starts[1],
            garbage_end: starts[1] + 5,
            reason: "frame length out of range",
        }
    );
    let (offset, reason) = corruption(scan(&bytes, SegmentRole::Sealed, None).0);
    assert_eq!(
        (offset, reason.as_str()),
        (starts[1], "frame length out of range")
    );
}

#[test]
fn scan_zero_gap_then_durable_frame_is_corruption() {
    // Positions 1 and 2 are whole; 3 has been zeroed; 4 was written after 3 was durable.
    let (f1, f2) = (frame(1, 0, 1, 0), frame(2, 0, 1, 1));
    let zeroed = vec![0u8; frame(3, 0, 1, 2).len()];
    for durable in [3, 4, u64::MAX] {
        let f4 = frame(4, 0, 1, durable);
        let parts: [&[u8]; 4] = [&f1, &f2, &zeroed, &f4];
        let (starts, _) = offsets(&parts);
        let bytes = segment(1, &parts, 4096);
        let (result, seen) = scan(&bytes, SegmentRole::Last, None);
        let (offset, reason) = corruption(result);
        assert_eq!(offset, starts[2], "durable_through {durable}");
        assert!(
            reason.starts_with("zero length followed by non-zero bytes"),
            "{reason}"
        );
        assert!(
            reason.contains(&format!("byte offset {}", starts[3])),
            "{reason}"
        );
        assert!(reason.contains("durable past position 3"), "{reason}");
        assert_eq!(seen, vec![(starts[0], 1), (starts[1], 2)]);

        let (offset, reason) = corruption(scan(&bytes, SegmentRole::Sealed, None).0);
        assert_eq!(
            (offset, reason.as_str()),
            (starts[2], "zero length followed by non-zero bytes")
        );
    }
}

#[test]
fn scan_damaged_frame_then_durable_frame_is_corruption() {
    // A commit of two events whose second frame is damaged, then a commit written after it was
    // durable: the damage is not a torn write.
    let (f1, f2) = (frame(1, 0, 1, 0), frame(2, 0, 2, 1));
    let mut f3 = frame(3, 1, 2, 1);
    f3[FRAME_PREFIX_BYTES + 20] ^= 0x04;
    let f4 = frame(4, 0, 1, 3);
    let parts: [&[u8]; 4] = [&f1, &f2, &f3, &f4];
    let (starts, _) = offsets(&parts);
    let bytes = segment(1, &parts, 4096);
    let (offset, reason) = corruption(scan(&bytes, SegmentRole::Last, None).0);
    assert_eq!(offset, starts[2]);
    assert!(reason.starts_with("frame checksum mismatch"), "{reason}");
    assert!(reason.contains("durable past position 2"), "{reason}");

    // The same, with the later frame written before the commit was durable: a torn write.
    let f4 = frame(4, 0, 1, 1);
    let parts: [&[u8]; 4] = [&f1, &f2, &f3, &f4];
    let (_, end) = offsets(&parts);
    let bytes = segment(1, &parts, 4096);
    let s = scan(&bytes, SegmentRole::Last, None).0.unwrap();
    assert_eq!(
        s,
        SegmentScan {
            first_position: 1,
            next_position: 2,
            data_end: starts[1],
            torn: Some(TornTail {
                found_at: starts[2],
                garbage_end: end,
                reason: "frame checksum mismatch",
            }),
        }
    );
}

#[test]
fn scan_zero_gap_then_garbage_is_torn() {
    let (f1, f2) = (frame(1, 0, 1, 0), frame(2, 0, 1, 1));
    let gap = [0u8; 8];
    for seed in [1u64, 0x9e37_79b9_7f4a_7c15, 12345] {
        let garbage = noise(700, seed);
        let parts: [&[u8]; 4] = [&f1, &f2, &gap, &garbage];
        let (starts, end) = offsets(&parts);
        let bytes = segment(1, &parts, 4096);
        let (result, seen) = scan(&bytes, SegmentRole::Last, None);
        assert_eq!(
            result.unwrap(),
            SegmentScan {
                first_position: 1,
                next_position: 3,
                data_end: starts[2],
                torn: Some(TornTail {
                    found_at: starts[2],
                    garbage_end: end,
                    reason: "zero length followed by non-zero bytes",
                }),
            },
            "seed {seed}"
        );
        assert_eq!(seen.len(), 2);
        let (offset, _) = corruption(scan(&bytes, SegmentRole::Sealed, None).0);
        assert_eq!(offset, starts[2]);
    }
}

#[test]
fn scan_zero_gap_then_frame_not_yet_durable_is_torn() {
    // Frames 3 and 4 belong to the unsynced group (durable_through 2): 3 never reached the disk
    // and 4 did. That is a torn write.
    let (f1, f2) = (frame(1, 0, 1, 0), frame(2, 0, 1, 1));
    let zeroed = vec![0u8; frame(3, 0, 1, 2).len()];
    for durable in [0, 1, 2] {
        let f4 = frame(4, 0, 1, durable);
        let parts: [&[u8]; 4] = [&f1, &f2, &zeroed, &f4];
        let (starts, end) = offsets(&parts);
        let bytes = segment(1, &parts, 4096);
        let s = scan(&bytes, SegmentRole::Last, None).0.unwrap();
        assert_eq!(
            s,
            SegmentScan {
                first_position: 1,
                next_position: 3,
                data_end: starts[2],
                torn: Some(TornTail {
                    found_at: starts[2],
                    garbage_end: end,
                    reason: "zero length followed by non-zero bytes",
                }),
            },
            "durable_through {durable}"
        );
    }
}

#[test]
fn scan_frame_from_before_the_lost_position_does_not_count() {
    // A stale copy of an earlier frame with a high durable_through is not evidence: only
    // frames at or past the lost position are.
    let (f1, f2) = (frame(1, 0, 1, 0), frame(2, 0, 1, 1));
    let stale = frame(1, 0, 1, 100);
    let gap = [0u8; 8];
    let parts: [&[u8]; 4] = [&f1, &f2, &gap, &stale];
    let (starts, end) = offsets(&parts);
    let bytes = segment(1, &parts, 4096);
    let s = scan(&bytes, SegmentRole::Last, None).0.unwrap();
    assert_eq!(s.data_end, starts[2]);
    assert_eq!(s.torn.unwrap().garbage_end, end);
}

#[test]
fn scan_durable_frame_inside_the_pending_commit_counts() {
    // The search for evidence starts just past the commit start, so it also covers whole
    // frames of the pending commit itself: one carrying a durable_through at or past the lost
    // position (which the writer never produces) makes the missing event damage.
    let f1 = frame(1, 0, 3, 0);
    let f2 = frame(2, 1, 3, 1);
    let parts: [&[u8]; 2] = [&f1, &f2];
    let (_, end) = offsets(&parts);
    let bytes = segment(1, &parts, 4096);
    let (offset, reason) = corruption(scan(&bytes, SegmentRole::Last, None).0);
    assert_eq!(offset, end);
    assert!(
        reason.starts_with("commit ends before all its events"),
        "{reason}"
    );
}

#[test]
fn scan_at_the_largest_positions() {
    // A segment whose events end at u64::MAX.
    let max = u64::MAX;
    let bytes = segment(max - 1, &[&frame(max - 1, 0, 1, 0)], 1024);
    let s = scan(&bytes, SegmentRole::Sealed, None).0.unwrap();
    assert_eq!(s.next_position, max);
}

#[test]
fn scan_frame_at_u64_max_does_not_panic() {
    let max = u64::MAX;
    for (count, role) in [
        (1, SegmentRole::Sealed),
        (1, SegmentRole::Last),
        (2, SegmentRole::Last),
    ] {
        let bytes = segment(max, &[&frame(max, 0, count, 0)], 1024);
        let result =
            std::panic::catch_unwind(|| scan(&bytes, role, None).0.map(|s| s.next_position));
        assert!(
            result.is_ok(),
            "scan panicked for a {count}-event commit at u64::MAX ({role:?})"
        );
    }
}
