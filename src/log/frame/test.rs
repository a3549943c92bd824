//! Unit tests for the frame codec.

#![allow(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    reason = "tests index fixed, known-length buffers and unwrap to fail loudly"
)]

use proptest::prelude::*;

use super::*;

/// Byte offset of a payload field within a whole frame.
const fn at(payload_off: usize) -> usize {
    FRAME_PREFIX_BYTES + payload_off
}

fn header() -> EventHeader {
    EventHeader {
        position: 42,
        revision: 7,
        durable_through: 41,
        timestamp_us: 1_700_000_000_123_456,
        id: *b"0123456789abcdef",
        commit_index: 1,
        commit_count: 3,
        content_type: 1,
        flags: 0,
    }
}

fn body() -> EventBody<'static> {
    EventBody {
        stream: "order-42",
        event_type: "OrderPlaced",
        data: br#"{"total":42}"#,
        metadata: b"meta",
        principal: "ada",
    }
}

fn encode(h: &EventHeader, b: &EventBody<'_>) -> Vec<u8> {
    let mut buf = Vec::new();
    encode_into(&mut buf, h, b);
    buf
}

/// Decoded content of a frame, owned, for comparisons.
#[derive(Debug, PartialEq, Eq)]
struct Content {
    header: EventHeader,
    stream: String,
    event_type: String,
    data: Vec<u8>,
    metadata: Vec<u8>,
    principal: String,
}

fn content_of(h: &EventHeader, b: &EventBody<'_>) -> Content {
    Content {
        header: *h,
        stream: b.stream.to_owned(),
        event_type: b.event_type.to_owned(),
        data: b.data.to_vec(),
        metadata: b.metadata.to_vec(),
        principal: b.principal.to_owned(),
    }
}

/// Decodes a whole frame at the start of `bytes`, panicking on anything else.
fn decode_content(bytes: &[u8]) -> (Content, usize) {
    match decode_from(bytes) {
        Ok(Decoded::Frame(f)) => {
            let payload = &bytes[FRAME_PREFIX_BYTES..f.frame_len];
            (content_of(&f.header, &f.body(payload)), f.frame_len)
        }
        other => panic!("expected a frame, got {other:?}"),
    }
}

/// Recomputes the CRC of a whole frame after its bytes were patched.
fn reseal(frame: &mut [u8]) {
    let mut h = crc32fast::Hasher::new();
    h.update(&frame[0..4]);
    h.update(&frame[8..]);
    let crc = h.finalize();
    frame[4..8].copy_from_slice(&crc.to_le_bytes());
}

fn patched(patch: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut f = encode(&header(), &body());
    patch(&mut f);
    reseal(&mut f);
    f
}

fn put_u32(f: &mut [u8], off: usize, v: u32) {
    f[off..off + 4].copy_from_slice(&v.to_le_bytes());
}

// ---- round trips --------------------------------------------------------------------------

#[test]
fn round_trip() {
    let (h, b) = (header(), body());
    let bytes = encode(&h, &b);
    let (content, frame_len) = decode_content(&bytes);
    assert_eq!(content, content_of(&h, &b));
    assert_eq!(frame_len, bytes.len());
}

#[test]
fn round_trip_header_fields_land_at_documented_offsets() {
    let h = header();
    let bytes = encode(&h, &body());
    let p = &bytes[FRAME_PREFIX_BYTES..];
    assert_eq!(
        u32::from_le_bytes(bytes[0..4].try_into().unwrap()) as usize,
        bytes.len() - 8
    );
    assert_eq!(p[0..8], h.position.to_le_bytes());
    assert_eq!(p[8..16], h.revision.to_le_bytes());
    assert_eq!(p[16..24], h.durable_through.to_le_bytes());
    assert_eq!(p[24..32], h.timestamp_us.to_le_bytes());
    assert_eq!(p[32..48], h.id);
    assert_eq!(p[48..52], h.commit_index.to_le_bytes());
    assert_eq!(p[52..56], h.commit_count.to_le_bytes());
    assert_eq!(p[56], h.content_type);
    assert_eq!(p[57], h.flags);
    assert_eq!(p[58..60], 8u16.to_le_bytes());
    assert_eq!(p[60..62], 11u16.to_le_bytes());
    assert_eq!(p[62..64], 3u16.to_le_bytes());
    assert_eq!(p[64..68], 12u32.to_le_bytes());
    assert_eq!(p[68..72], 4u32.to_le_bytes());
    assert_eq!(&p[72..], b"order-42OrderPlaced{\"total\":42}metaada");
}

#[test]
fn round_trip_empty_parts() {
    let h = EventHeader {
        commit_index: 0,
        commit_count: 1,
        content_type: 0,
        ..header()
    };
    let b = EventBody {
        stream: "",
        event_type: "",
        data: &[],
        metadata: &[],
        principal: "",
    };
    let bytes = encode(&h, &b);
    assert_eq!(bytes.len(), FRAME_BYTES_MIN);
    let (content, frame_len) = decode_content(&bytes);
    assert_eq!(content, content_of(&h, &b));
    assert_eq!(frame_len, FRAME_BYTES_MIN);

    // Empty data and metadata with non-empty names.
    let b = EventBody {
        data: &[],
        metadata: &[],
        ..body()
    };
    let bytes = encode(&h, &b);
    assert_eq!(decode_content(&bytes).0, content_of(&h, &b));
}

#[test]
fn round_trip_max_length_names() {
    let stream = "s".repeat(usize::from(u16::MAX));
    // Multi-byte characters up to exactly u16::MAX bytes: 21845 * 3 = 65535.
    let event_type = "\u{20ac}".repeat(usize::from(u16::MAX) / 3);
    assert_eq!(event_type.len(), usize::from(u16::MAX));
    let b = EventBody {
        stream: &stream,
        event_type: &event_type,
        data: &[0xff; 1000],
        metadata: &[],
        principal: "",
    };
    let h = header();
    let bytes = encode(&h, &b);
    let (content, frame_len) = decode_content(&bytes);
    assert_eq!(content, content_of(&h, &b));
    assert_eq!(frame_len, bytes.len());
}

#[test]
fn round_trip_extreme_header_values() {
    let h = EventHeader {
        position: u64::MAX,
        revision: u64::MAX,
        durable_through: u64::MAX,
        timestamp_us: u64::MAX,
        id: [0xff; 16],
        commit_index: u32::MAX - 1,
        commit_count: u32::MAX,
        content_type: 0,
        flags: GAP_BEFORE,
    };
    let bytes = encode(&h, &body());
    assert_eq!(decode_content(&bytes).0, content_of(&h, &body()));

    let h = EventHeader {
        position: 1,
        revision: 0,
        durable_through: 0,
        timestamp_us: 0,
        id: [0; 16],
        commit_index: 0,
        commit_count: 1,
        content_type: 1,
        flags: 0,
    };
    let bytes = encode(&h, &body());
    assert_eq!(decode_content(&bytes).0, content_of(&h, &body()));
}

#[test]
fn encode_appends_and_frames_decode_in_sequence() {
    let h1 = header();
    let h2 = EventHeader {
        position: 43,
        commit_index: 2,
        ..header()
    };
    let b2 = EventBody {
        stream: "other",
        ..body()
    };
    let mut buf = b"prefix".to_vec();
    encode_into(&mut buf, &h1, &body());
    let first_len = buf.len() - 6;
    encode_into(&mut buf, &h2, &b2);
    assert_eq!(&buf[..6], b"prefix");
    let (c1, len1) = decode_content(&buf[6..]);
    assert_eq!(len1, first_len);
    assert_eq!(c1, content_of(&h1, &body()));
    let (c2, len2) = decode_content(&buf[6 + len1..]);
    assert_eq!(c2, content_of(&h2, &b2));
    assert_eq!(6 + len1 + len2, buf.len());
    // Zeros after the last frame are a clean end.
    buf.extend_from_slice(&[0; 100]);
    assert_eq!(decode_from(&buf[6 + len1 + len2..]), Ok(Decoded::End));
}

#[test]
fn serialized_len_equals_encoded_len() {
    let long = "x".repeat(300);
    let bodies = [
        body(),
        EventBody {
            stream: "",
            event_type: "",
            data: &[],
            metadata: &[],
            principal: "",
        },
        EventBody {
            stream: &long,
            event_type: "t",
            data: &[1; 4096],
            metadata: &[2; 17],
            principal: "",
        },
    ];
    for b in &bodies {
        assert_eq!(serialized_len(b), encode(&header(), b).len());
    }
}

// ---- End and Incomplete -------------------------------------------------------------------

#[test]
fn zero_length_is_end() {
    assert_eq!(decode_from(&[]), Ok(Decoded::End));
    for n in 1..=200 {
        assert_eq!(decode_from(&vec![0; n]), Ok(Decoded::End), "{n} zero bytes");
    }
    // A zero length ends the written part whatever follows; the segment scan judges the rest.
    assert_eq!(decode_from(&[0, 0, 0, 0, 1, 2, 3]), Ok(Decoded::End));
}

#[test]
fn short_non_zero_length_is_incomplete() {
    for bytes in [&[1u8][..], &[0, 1], &[0, 0, 1], &[72, 0, 0]] {
        assert_eq!(decode_from(bytes), Ok(Decoded::Incomplete), "{bytes:?}");
    }
}

#[test]
fn every_truncation_is_incomplete() {
    // The names and metadata of `body()` take 23 bytes, so 161 bytes of data make the payload
    // 256 bytes long: the first byte of the length field is then zero.
    for extra in [0usize, 1, 161, 200] {
        let data = vec![0xa5; extra];
        let b = EventBody {
            data: &data,
            ..body()
        };
        let bytes = encode(&header(), &b);
        for k in 0..bytes.len() {
            let prefix = &bytes[..k];
            let expected = if prefix.iter().all(|&x| x == 0) {
                Decoded::End
            } else {
                Decoded::Incomplete
            };
            assert_eq!(
                decode_from(prefix),
                Ok(expected),
                "extra {extra}, prefix of {k} bytes"
            );
        }
    }
}

#[test]
fn truncation_with_low_zero_length_byte() {
    // A payload of 256 bytes has a length field of [0, 1, 0, 0]: a one-byte prefix is all zero.
    let data = vec![7u8; 256 - EVENT_HEADER_BYTES];
    let b = EventBody {
        stream: "",
        event_type: "",
        data: &data,
        metadata: &[],
        principal: "",
    };
    let bytes = encode(&header(), &b);
    assert_eq!(bytes[..4], [0, 1, 0, 0]);
    assert_eq!(decode_from(&bytes[..1]), Ok(Decoded::End));
    assert_eq!(decode_from(&bytes[..2]), Ok(Decoded::Incomplete));
    assert_eq!(decode_content(&bytes).0, content_of(&header(), &b));
}

// ---- damage -------------------------------------------------------------------------------

#[test]
fn every_single_bit_flip_is_rejected() {
    let original = encode(&header(), &body());
    let follower = encode(
        &EventHeader {
            position: 43,
            commit_index: 2,
            ..header()
        },
        &body(),
    );
    // Alone, followed by zeros, and followed by another whole frame: a flipped length could
    // otherwise point into bytes that are present.
    for tail in [Vec::new(), vec![0; 4096], follower] {
        for bit in 0..original.len() * 8 {
            let mut bytes = original.clone();
            bytes[bit / 8] ^= 1 << (bit % 8);
            bytes.extend_from_slice(&tail);
            match decode_from(&bytes) {
                Ok(Decoded::Frame(f)) => {
                    let payload = &bytes[FRAME_PREFIX_BYTES..f.frame_len];
                    panic!(
                        "bit {bit} flipped (tail {} bytes) still decodes as a frame: {:?}",
                        tail.len(),
                        content_of(&f.header, &f.body(payload))
                    );
                }
                Ok(Decoded::End | Decoded::Incomplete) | Err(_) => {}
            }
        }
    }
}

#[test]
fn bit_flip_outcomes_by_field() {
    let original = encode(&header(), &body());
    // A flip in the payload or the CRC field is a checksum mismatch.
    for byte in 4..original.len() {
        let mut bytes = original.clone();
        bytes[byte] ^= 0x10;
        assert!(
            matches!(decode_from(&bytes), Err(FrameError::Checksum { .. })),
            "byte {byte}: {:?}",
            decode_from(&bytes)
        );
    }
    // A flip in the top length byte makes the length too large.
    let mut bytes = original.clone();
    bytes[3] ^= 0x80;
    assert!(matches!(decode_from(&bytes), Err(FrameError::BadLength(_))));
    // A flip that lengthens the frame past the bytes given is Incomplete.
    let mut bytes = original.clone();
    bytes[1] ^= 0x01;
    assert_eq!(decode_from(&bytes), Ok(Decoded::Incomplete));
}

#[test]
fn checksum_mismatch_reports_both_values() {
    let mut bytes = encode(&header(), &body());
    let stored = u32::from_le_bytes(bytes[4..8].try_into().unwrap());
    bytes[4] ^= 0xff;
    let damaged = u32::from_le_bytes(bytes[4..8].try_into().unwrap());
    assert_eq!(
        decode_from(&bytes),
        Err(FrameError::Checksum {
            stored: damaged,
            computed: stored,
        })
    );
}

#[test]
fn lengths_out_of_range_are_bad_length() {
    let plenty = vec![0x55u8; 4096];
    for len in (1..EVENT_HEADER_BYTES as u32).chain([
        PAYLOAD_BYTES_MAX as u32 + 1,
        PAYLOAD_BYTES_MAX as u32 * 2,
        u32::MAX,
    ]) {
        let mut bytes = plenty.clone();
        put_u32(&mut bytes, 0, len);
        assert_eq!(
            decode_from(&bytes),
            Err(FrameError::BadLength(u64::from(len))),
            "len {len}"
        );
        // Checked before whether the bytes are all there.
        assert_eq!(
            decode_from(&len.to_le_bytes()),
            Err(FrameError::BadLength(u64::from(len))),
            "len {len}, prefix only"
        );
    }
    // The bounds themselves are in range.
    assert_eq!(
        decode_from(&(PAYLOAD_BYTES_MAX as u32).to_le_bytes()),
        Ok(Decoded::Incomplete)
    );
    assert_eq!(
        decode_from(&(EVENT_HEADER_BYTES as u32).to_le_bytes()),
        Ok(Decoded::Incomplete)
    );
}

fn inconsistent(bytes: &[u8]) -> &'static str {
    match decode_from(bytes) {
        Err(FrameError::Inconsistent(what)) => what,
        other => panic!("expected Inconsistent, got {other:?}"),
    }
}

#[test]
fn a_principal_length_that_does_not_add_up_is_inconsistent() {
    for off in [at(OFF_PRINCIPAL_LEN), at(OFF_PRINCIPAL_LEN) + 1] {
        for v in [0u8, 1, 0x80, 0xff] {
            let f = patched(|f| f[off] = v);
            // The body's principal is 3 bytes: only that exact length adds up.
            let low = off == at(OFF_PRINCIPAL_LEN);
            if (low && v == 3) || (!low && v == 0) {
                continue;
            }
            assert_eq!(
                inconsistent(&f),
                "part lengths do not add up to the frame length",
                "offset {off} = {v}"
            );
        }
    }
}

#[test]
fn a_principal_that_is_not_utf8_is_inconsistent() {
    let f = patched(|f| {
        let n = f.len();
        f[n - 1] = 0xff;
    });
    assert_eq!(inconsistent(&f), "name is not UTF-8");
}

#[test]
fn frames_without_a_principal_decode_as_before() {
    // Frames written before principals existed hold 0 in the field and nothing after the
    // metadata: they decode with an empty principal.
    let b = EventBody {
        principal: "",
        ..body()
    };
    let bytes = encode(&header(), &b);
    assert_eq!(
        &bytes[at(OFF_PRINCIPAL_LEN)..at(OFF_PRINCIPAL_LEN) + 2],
        &[0, 0]
    );
    assert_eq!(decode_content(&bytes).0.principal, "");
    assert_eq!(
        decode_content(&encode(&header(), &body())).0.principal,
        "ada"
    );
}

#[test]
fn unknown_flags_are_inconsistent() {
    for v in [2u8, 3, 4, 0x80, 0xfe, 0xff] {
        let f = patched(|f| f[at(OFF_FLAGS)] = v);
        assert_eq!(inconsistent(&f), "unknown frame flags", "flags {v:#04x}");
    }
}

#[test]
fn gap_before_flag_round_trips() {
    let h = EventHeader {
        flags: GAP_BEFORE,
        ..header()
    };
    assert!(h.gap_before());
    assert!(!header().gap_before());
    let bytes = encode(&h, &body());
    assert_eq!(bytes[at(OFF_FLAGS)], GAP_BEFORE);
    assert_eq!(decode_content(&bytes).0, content_of(&h, &body()));
    // Set by patching a frame encoded without it, too.
    let f = patched(|f| f[at(OFF_FLAGS)] = GAP_BEFORE);
    assert_eq!(decode_content(&f).0.header.flags, GAP_BEFORE);
}

#[test]
fn unknown_content_type_is_inconsistent() {
    for v in [2u8, 3, 0x7f, 0xff] {
        let f = patched(|f| f[at(OFF_CONTENT_TYPE)] = v);
        assert_eq!(inconsistent(&f), "unknown content type", "content type {v}");
    }
    for v in [0u8, 1] {
        let f = patched(|f| f[at(OFF_CONTENT_TYPE)] = v);
        assert_eq!(decode_content(&f).0.header.content_type, v);
    }
}

#[test]
fn commit_index_out_of_range_is_inconsistent() {
    // (commit_index, commit_count)
    for (index, count) in [
        (3, 3),
        (4, 3),
        (u32::MAX, 3),
        (0, 0),
        (1, 0),
        (u32::MAX, u32::MAX),
    ] {
        let f = patched(|f| {
            put_u32(f, at(OFF_COMMIT_INDEX), index);
            put_u32(f, at(OFF_COMMIT_COUNT), count);
        });
        assert_eq!(
            inconsistent(&f),
            "commit index out of range",
            "{index} of {count}"
        );
    }
    for (index, count) in [(0, 1), (2, 3), (u32::MAX - 1, u32::MAX)] {
        let f = patched(|f| {
            put_u32(f, at(OFF_COMMIT_INDEX), index);
            put_u32(f, at(OFF_COMMIT_COUNT), count);
        });
        let h = decode_content(&f).0.header;
        assert_eq!((h.commit_index, h.commit_count), (index, count));
    }
}

#[test]
fn position_zero_is_inconsistent() {
    let f = patched(|f| f[at(OFF_POSITION)..at(OFF_POSITION) + 8].fill(0));
    assert_eq!(inconsistent(&f), "position 0");
}

#[test]
fn part_lengths_must_add_up() {
    let changes: [(usize, i64); 8] = [
        (OFF_STREAM_LEN, 1),
        (OFF_STREAM_LEN, -1),
        (OFF_TYPE_LEN, 1),
        (OFF_TYPE_LEN, -1),
        (OFF_DATA_LEN, 1),
        (OFF_DATA_LEN, -1),
        (OFF_METADATA_LEN, 1),
        (OFF_METADATA_LEN, -1),
    ];
    for (off, delta) in changes {
        let f = patched(|f| {
            let p = at(off);
            if matches!(off, OFF_STREAM_LEN | OFF_TYPE_LEN) {
                let v = u16::from_le_bytes(f[p..p + 2].try_into().unwrap());
                let v = u16::try_from(i64::from(v) + delta).unwrap();
                f[p..p + 2].copy_from_slice(&v.to_le_bytes());
            } else {
                let v = u32::from_le_bytes(f[p..p + 4].try_into().unwrap());
                put_u32(f, p, u32::try_from(i64::from(v) + delta).unwrap());
            }
        });
        assert_eq!(
            inconsistent(&f),
            "part lengths do not add up to the frame length",
            "field at {off} changed by {delta}"
        );
    }
    // Huge part lengths do not overflow.
    let f = patched(|f| {
        put_u32(f, at(OFF_DATA_LEN), u32::MAX);
        put_u32(f, at(OFF_METADATA_LEN), u32::MAX);
        f[at(OFF_STREAM_LEN)..at(OFF_STREAM_LEN) + 4].fill(0xff);
    });
    assert_eq!(
        inconsistent(&f),
        "part lengths do not add up to the frame length"
    );
}

#[test]
fn non_utf8_names_are_inconsistent() {
    // Stream name starts at payload offset 72 and is 8 bytes; the event type follows it.
    for off in [at(EVENT_HEADER_BYTES), at(EVENT_HEADER_BYTES + 8 + 3)] {
        let f = patched(|f| f[off] = 0xff);
        assert_eq!(inconsistent(&f), "name is not UTF-8", "offset {off}");
    }
    // A multi-byte character cut in two by the boundary between the names.
    let b = EventBody {
        stream: "ab\u{e9}",
        event_type: "x",
        ..body()
    };
    let mut f = encode(&header(), &b);
    let p = at(OFF_STREAM_LEN);
    f[p..p + 2].copy_from_slice(&3u16.to_le_bytes());
    let p = at(OFF_TYPE_LEN);
    f[p..p + 2].copy_from_slice(&2u16.to_le_bytes());
    reseal(&mut f);
    assert_eq!(inconsistent(&f), "name is not UTF-8");
    // Bytes that are not UTF-8 in data and metadata are fine.
    let b = EventBody {
        data: &[0xff, 0xfe],
        metadata: &[0xc3],
        ..body()
    };
    assert_eq!(
        decode_content(&encode(&header(), &b)).0,
        content_of(&header(), &b)
    );
}

#[test]
fn peek_reads_len_and_position() {
    let bytes = encode(&header(), &body());
    assert_eq!(
        peek_len_and_position(&bytes),
        Some(((bytes.len() - FRAME_PREFIX_BYTES) as u32, 42))
    );
    assert_eq!(peek_len_and_position(&bytes[..15]), None);
    assert_eq!(
        peek_len_and_position(&bytes[..16]),
        Some(((bytes.len() - 8) as u32, 42))
    );
}

// ---- properties ---------------------------------------------------------------------------

fn arb_header() -> impl Strategy<Value = EventHeader> {
    (
        1..=u64::MAX,
        any::<u64>(),
        any::<u64>(),
        any::<u64>(),
        any::<[u8; 16]>(),
        (1..=u32::MAX).prop_flat_map(|count| (0..count, Just(count))),
        0u8..=1,
        0u8..=KNOWN_FLAGS,
    )
        .prop_map(
            |(
                position,
                revision,
                durable_through,
                timestamp_us,
                id,
                (commit_index, commit_count),
                content_type,
                flags,
            )| {
                EventHeader {
                    position,
                    revision,
                    durable_through,
                    timestamp_us,
                    id,
                    commit_index,
                    commit_count,
                    content_type,
                    flags,
                }
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode_from(&bytes);
    }

    /// Arbitrary payloads behind a length that fits and a correct CRC, so decoding reaches the
    /// payload checks.
    #[test]
    fn decode_never_panics_on_sealed_payloads(
        payload in proptest::collection::vec(any::<u8>(), 0..400),
        lens in (any::<u16>(), any::<u16>(), any::<u32>(), any::<u32>()),
        use_lens in any::<bool>(),
    ) {
        let mut f = vec![0u8; 8];
        f.extend_from_slice(&payload);
        if f.len() < FRAME_BYTES_MIN {
            f.resize(FRAME_BYTES_MIN, 0);
        }
        let payload_len = u32::try_from(f.len() - 8).unwrap();
        put_u32(&mut f, 0, payload_len);
        if use_lens {
            f[at(OFF_STREAM_LEN)..at(OFF_STREAM_LEN) + 2].copy_from_slice(&lens.0.to_le_bytes());
            f[at(OFF_TYPE_LEN)..at(OFF_TYPE_LEN) + 2].copy_from_slice(&lens.1.to_le_bytes());
            put_u32(&mut f, at(OFF_DATA_LEN), lens.2);
            put_u32(&mut f, at(OFF_METADATA_LEN), lens.3);
        }
        reseal(&mut f);
        match decode_from(&f) {
            Ok(Decoded::Frame(d)) => {
                prop_assert_eq!(d.frame_len, f.len());
                // Whatever decodes re-encodes to the same bytes.
                let body = d.body(&f[FRAME_PREFIX_BYTES..]);
                prop_assert_eq!(encode(&d.header, &body), f);
            }
            Ok(other) => prop_assert!(false, "unexpected {:?}", other),
            Err(FrameError::Inconsistent(_)) => {}
            Err(e) => prop_assert!(false, "unexpected error {:?}", e),
        }
    }

    #[test]
    fn encode_decode_round_trips(
        h in arb_header(),
        stream in ".{0,40}",
        event_type in "\\PC{0,20}",
        data in proptest::collection::vec(any::<u8>(), 0..300),
        metadata in proptest::collection::vec(any::<u8>(), 0..100),
        principal in "\\PC{0,20}",
        trailing in proptest::collection::vec(any::<u8>(), 0..16),
    ) {
        let b = EventBody { stream: &stream, event_type: &event_type, data: &data, metadata: &metadata, principal: &principal };
        let mut bytes = encode(&h, &b);
        prop_assert_eq!(bytes.len(), serialized_len(&b));
        let frame_len = bytes.len();
        // Bytes after the frame do not matter.
        bytes.extend_from_slice(&trailing);
        let (content, decoded_len) = decode_content(&bytes);
        prop_assert_eq!(decoded_len, frame_len);
        prop_assert_eq!(content, content_of(&h, &b));
    }
}
