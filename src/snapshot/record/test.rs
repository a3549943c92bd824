//! Unit tests for the snapshot record codec.

#![allow(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    reason = "tests index fixed, known-length buffers and unwrap to fail loudly"
)]

use proptest::prelude::*;

use super::*;

/// Byte offset of a payload field within a whole record.
const fn at(payload_off: usize) -> usize {
    RECORD_PREFIX_BYTES + payload_off
}

fn save(stream: &str, revision: u64, schema: &str, ts: u64, data: &[u8]) -> Vec<u8> {
    let mut buf = Vec::new();
    encode_save(&mut buf, stream, revision, revision / 2, schema, ts, data);
    buf
}

fn put_u32(buf: &mut [u8], off: usize, v: u32) {
    buf[off..off + 4].copy_from_slice(&v.to_le_bytes());
}

/// Recomputes the CRC of the record at the start of `buf` after a test edited it.
fn reseal(buf: &mut [u8]) {
    let len = u32::from_le_bytes(buf[0..4].try_into().unwrap()) as usize;
    let crc = checksum(&buf[..RECORD_PREFIX_BYTES + len]);
    buf[4..8].copy_from_slice(&crc.to_le_bytes());
}

#[test]
fn save_round_trips() {
    let data = b"{\"total\":42,\"lines\":3}";
    let bytes = save("order-42", 9_990, "order.v2", 1_700_000_000_000_001, data);
    assert_eq!(bytes.len(), record_len(8, 8, data.len()));
    let Ok(Decoded::Record { record, len }) = decode(&bytes) else {
        panic!("not a record: {:?}", decode(&bytes));
    };
    assert_eq!(len, bytes.len());
    let Record::Save {
        stream,
        revision,
        prune_below,
        schema,
        timestamp_us,
        data: range,
    } = record
    else {
        panic!("not a save: {record:?}");
    };
    assert_eq!(stream, "order-42");
    assert_eq!(revision, 9_990);
    assert_eq!(prune_below, 4_995);
    assert_eq!(schema, "order.v2");
    assert_eq!(timestamp_us, 1_700_000_000_000_001);
    assert_eq!(&bytes[range], data);
}

#[test]
fn empty_data_round_trips() {
    let bytes = save("s", 0, "v", 0, b"");
    let Ok(Decoded::Record { record, .. }) = decode(&bytes) else {
        panic!("not a record");
    };
    assert!(matches!(record, Record::Save { ref data, .. } if data.is_empty()));
}

#[test]
fn delete_round_trips() {
    let mut bytes = Vec::new();
    encode_delete(&mut bytes, "order-42", 77);
    assert_eq!(
        decode(&bytes),
        Ok(Decoded::Record {
            record: Record::DeleteStream {
                stream: "order-42",
                timestamp_us: 77
            },
            len: record_len(8, 0, 0),
        })
    );
}

#[test]
fn records_decode_one_after_another() {
    let mut bytes = save("a", 1, "v1", 5, b"one");
    encode_delete(&mut bytes, "b", 6);
    encode_save(&mut bytes, "c", 3, 0, "v3", 7, b"three");
    let mut offset = 0;
    let mut streams = Vec::new();
    loop {
        match decode(&bytes[offset..]).unwrap() {
            Decoded::Record { record, len } => {
                streams.push(record.stream().to_owned());
                offset += len;
            }
            Decoded::End => break,
            Decoded::Incomplete => panic!("incomplete at {offset}"),
        }
    }
    assert_eq!(streams, ["a", "b", "c"]);
}

#[test]
fn empty_input_is_the_end_and_a_cut_record_is_incomplete() {
    assert_eq!(decode(&[]), Ok(Decoded::End));
    let bytes = save("order-42", 1, "v1", 2, b"state");
    for cut in 1..bytes.len() {
        assert_eq!(
            decode(&bytes[..cut]),
            Ok(Decoded::Incomplete),
            "cut at {cut}"
        );
    }
}

#[test]
fn zero_and_huge_lengths_are_bad() {
    let zeros = [0u8; 64];
    assert_eq!(decode(&zeros), Err(RecordError::BadLength(0)));
    let mut bytes = save("s", 1, "v", 2, b"x");
    put_u32(&mut bytes, 0, u32::MAX);
    assert_eq!(
        decode(&bytes),
        Err(RecordError::BadLength(u64::from(u32::MAX)))
    );
    put_u32(&mut bytes, 0, (RECORD_HEADER_BYTES - 1) as u32);
    assert!(matches!(decode(&bytes), Err(RecordError::BadLength(_))));
}

#[test]
fn every_bit_flip_is_detected() {
    let bytes = save("order-42", 12, "order.v1", 99, b"some state bytes");
    for i in 0..bytes.len() {
        for bit in 0..8 {
            let mut flipped = bytes.clone();
            flipped[i] ^= 1 << bit;
            match decode(&flipped) {
                Ok(Decoded::Record { .. }) => panic!("flip of bit {bit} of byte {i} undetected"),
                Ok(Decoded::End) => panic!("flip of bit {bit} of byte {i} reads as the end"),
                Ok(Decoded::Incomplete) | Err(_) => {}
            }
        }
    }
}

#[test]
fn sealed_inconsistencies_are_reported() {
    let base = save("order-42", 12, "order.v1", 99, b"state");
    type Edit = fn(&mut Vec<u8>);
    let cases: [(&str, Edit); 8] = [
        ("unknown kind", |b| b[at(OFF_KIND)] = 9),
        ("flags", |b| b[at(OFF_FLAGS)] = 1),
        ("reserved", |b| b[at(OFF_RESERVED_B)] = 1),
        ("lengths", |b| b[at(OFF_DATA_LEN)] += 1),
        ("empty schema", |b| {
            // Move the schema bytes into the data: lengths still add up.
            b[at(OFF_SCHEMA_LEN)..at(OFF_SCHEMA_LEN) + 2].copy_from_slice(&0u16.to_le_bytes());
            let data_len = 5 + 8u32;
            b[at(OFF_DATA_LEN)..at(OFF_DATA_LEN) + 4].copy_from_slice(&data_len.to_le_bytes());
        }),
        ("utf-8", |b| b[at(RECORD_HEADER_BYTES)] = 0xFF),
        ("delete with revision", |b| {
            b[at(OFF_KIND)] = KIND_DELETE_STREAM
        }),
        ("prune_below above revision", |b| {
            b[at(OFF_PRUNE_BELOW)] = 13
        }),
    ];
    for (what, edit) in cases {
        let mut bytes = base.clone();
        edit(&mut bytes);
        reseal(&mut bytes);
        assert!(
            matches!(decode(&bytes), Err(RecordError::Inconsistent(_))),
            "{what}: {:?}",
            decode(&bytes)
        );
    }
}

#[test]
fn file_header_round_trips_and_damage_is_named() {
    let h = encode_file_header();
    assert_eq!(check_file_header(&h), Ok(()));
    assert!(check_file_header(&h[..10]).unwrap_err().contains("shorter"));
    let mut bad = h;
    bad[0] ^= 1;
    assert!(check_file_header(&bad).unwrap_err().contains("magic"));
    let mut bad = h;
    bad[9] ^= 1;
    assert!(check_file_header(&bad).unwrap_err().contains("checksum"));
}

#[test]
fn plausible_start_accepts_records_and_rejects_zeros() {
    let bytes = save("s", 1, "v", 2, b"x");
    assert!(plausible_start(&bytes));
    assert!(!plausible_start(&bytes[..bytes.len() - 1]));
    assert!(!plausible_start(&[0u8; 64]));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    /// Any byte string decodes to a record, the end, incomplete, or an error: never a panic.
    #[test]
    fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode(&bytes);
        let _ = plausible_start(&bytes);
        let _ = check_file_header(&bytes);
    }

    /// Arbitrary payloads behind a length that fits and a correct CRC, so decoding reaches the
    /// payload checks.
    #[test]
    fn decode_never_panics_on_sealed_payloads(
        payload in proptest::collection::vec(any::<u8>(), 0..400),
        lens in (any::<u16>(), any::<u16>(), any::<u32>()),
        kind in 0u8..4,
        use_lens in any::<bool>(),
    ) {
        let mut r = vec![0u8; RECORD_PREFIX_BYTES];
        r.extend_from_slice(&payload);
        if r.len() < RECORD_PREFIX_BYTES + RECORD_HEADER_BYTES {
            r.resize(RECORD_PREFIX_BYTES + RECORD_HEADER_BYTES, 0);
        }
        let payload_len = u32::try_from(r.len() - RECORD_PREFIX_BYTES).unwrap();
        put_u32(&mut r, 0, payload_len);
        r[at(OFF_KIND)] = kind;
        if use_lens {
            r[at(OFF_STREAM_LEN)..at(OFF_STREAM_LEN) + 2].copy_from_slice(&lens.0.to_le_bytes());
            r[at(OFF_SCHEMA_LEN)..at(OFF_SCHEMA_LEN) + 2].copy_from_slice(&lens.1.to_le_bytes());
            put_u32(&mut r, at(OFF_DATA_LEN), lens.2);
        }
        reseal(&mut r);
        let _ = decode(&r);
    }

    /// Whatever is saved decodes to the same parts, and bytes after a record do not matter.
    #[test]
    fn encode_decode_round_trip(
        stream in "[^\\p{Cc}]{1,40}",
        schema in "[^\\p{Cc}]{1,20}",
        revision in any::<u64>(),
        prune in any::<u64>(),
        ts in any::<u64>(),
        data in proptest::collection::vec(any::<u8>(), 0..300),
        trailing in proptest::collection::vec(any::<u8>(), 0..16),
    ) {
        prop_assume!(schema.len() <= SCHEMA_BYTES_MAX);
        let prune = prune % (revision.saturating_add(1)).max(1);
        let mut bytes = Vec::new();
        encode_save(&mut bytes, &stream, revision, prune, &schema, ts, &data);
        let len = bytes.len();
        bytes.extend_from_slice(&trailing);
        match decode(&bytes) {
            Ok(Decoded::Record { record: Record::Save { stream: s, revision: r, prune_below: p, schema: t, timestamp_us, data: range }, len: l }) => {
                prop_assert_eq!(p, prune);
                prop_assert_eq!(l, len);
                prop_assert_eq!(s, stream.as_str());
                prop_assert_eq!(t, schema.as_str());
                prop_assert_eq!(r, revision);
                prop_assert_eq!(timestamp_us, ts);
                prop_assert_eq!(&bytes[range], &data[..]);
            }
            other => prop_assert!(false, "not a save record: {:?}", other),
        }
    }
}
