//! Index runs: the persisted, memory-mapped form of the index for a contiguous range of
//! positions. A run is written once (by a checkpoint or a merge), never changed, and read
//! through `memmap2`; only the pages a lookup touches become resident.
//!
//! ```text
//! file     = locations | stream postings | stream entries | stream names
//!          | type postings | type entries | type names | ids | id filter
//!          | zero padding to a block | block crcs | trailer
//! ```
//!
//! Every section starts 8-byte aligned; all integers are little-endian. The byte layout of
//! each section and of the trailer is in `docs/FORMAT.md`.
//!
//! A run covers `n` positions, of which `m` hold events; the others are holes (positions
//! removed from the log), whose location is 0. Locations have `n` entries; postings and ids
//! `m`. `m` is not stored: it is the length of the stream postings section. The last position
//! of a run is always an event (its fingerprint names that frame). Checksums are per 4 KiB block
//! ([`BLOCK_BYTES`]): the block table is checked when the run is opened and each block the
//! first time a lookup reads it, so opening costs the same at any size and a damaged block is
//! an error naming the file and offset, never a wrong answer.

#![deny(clippy::indexing_slicing, clippy::unwrap_used)]

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use memmap2::Mmap;

use super::HOLE;
use crate::error::{Error, Result};
use crate::log::Location;
use crate::types::Direction;

pub const RUN_MAGIC: [u8; 8] = *b"STSTIDX\0";
pub const RUN_FORMAT_VERSION: u32 = 1;
pub const BLOCK_BYTES: u64 = 4096;
/// Bytes of one stream or type entry: name offset, name length, first revision, first posting.
const ENTRY_BYTES: u64 = 32;
/// Bytes of one id entry: the id (u128) and its position.
const ID_BYTES: u64 = 24;
pub const TRAILER_BYTES: usize = 168;
/// Bytes of one block of the id filter (a blocked Bloom filter: one cache line per lookup).
const FILTER_BLOCK_BYTES: u64 = 64;
/// Filter bits per id: about a 1% false-positive rate with [`FILTER_PROBES`] probes.
const FILTER_BITS_PER_ID: u64 = 10;
const FILTER_PROBES: u32 = 6;

/// Which postings table of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Table {
    Streams,
    Types,
}

/// Where the last event a run covers lies in the log, and its frame checksum: how a run is
/// checked against the log before it is trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fingerprint {
    pub location: Location,
    pub frame_crc: u32,
}

/// The decoded trailer of a run file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Trailer {
    pub first_position: u64,
    pub last_position: u64,
    /// Distinct streams and types in positions `1..=last_position` (not only in this run).
    pub streams_total: u64,
    pub types_total: u64,
    /// Events in the run (`m`): positions that are not holes. Not stored; the length of the
    /// stream postings section says it.
    pub events: u64,
    stream_count: u64,
    type_count: u64,
    off: [u64; SECTIONS],
    pub fingerprint: Fingerprint,
}

// Indexes into `Trailer::off`.
const LOCATIONS: usize = 0;
const S_POSTINGS: usize = 1;
const S_ENTRIES: usize = 2;
const S_NAMES: usize = 3;
const T_POSTINGS: usize = 4;
const T_ENTRIES: usize = 5;
const T_NAMES: usize = 6;
const IDS: usize = 7;
const FILTER: usize = 8;
const CRCS: usize = 9;
const SECTIONS: usize = 10;

impl Trailer {
    /// Positions covered (`n`), holes included.
    pub fn positions(&self) -> u64 {
        self.last_position - self.first_position + 1
    }

    fn encode(&self, crcs_crc: u32) -> [u8; TRAILER_BYTES] {
        let mut t = [0u8; TRAILER_BYTES];
        let mut w = Cursor { buf: &mut t, at: 0 };
        w.put(&RUN_MAGIC);
        w.put(&RUN_FORMAT_VERSION.to_le_bytes());
        #[expect(clippy::cast_possible_truncation, reason = "4096 fits in u32")]
        w.put(&(BLOCK_BYTES as u32).to_le_bytes());
        for v in [
            self.first_position,
            self.last_position,
            self.streams_total,
            self.types_total,
            self.stream_count,
            self.type_count,
        ] {
            w.put(&v.to_le_bytes());
        }
        for v in self.off {
            w.put(&v.to_le_bytes());
        }
        w.put(&self.fingerprint.location.segment.to_le_bytes());
        w.put(&self.fingerprint.location.offset.to_le_bytes());
        w.put(&self.fingerprint.frame_crc.to_le_bytes());
        w.put(&crcs_crc.to_le_bytes());
        let crc = crc32fast::hash(t.get(..TRAILER_BYTES - 4).unwrap_or_default());
        if let Some(slot) = t.get_mut(TRAILER_BYTES - 4..) {
            slot.copy_from_slice(&crc.to_le_bytes());
        }
        t
    }

    /// Decodes and checks a trailer; returns it with the checksum of the block table.
    fn decode(t: &[u8]) -> std::result::Result<(Trailer, u32), String> {
        if t.len() != TRAILER_BYTES {
            return Err("file is shorter than a run trailer".into());
        }
        let stored = le_u32(t, TRAILER_BYTES - 4);
        let computed = crc32fast::hash(t.get(..TRAILER_BYTES - 4).unwrap_or_default());
        if t.get(..8) != Some(&RUN_MAGIC[..]) {
            return Err("bad run magic".into());
        }
        if stored != computed {
            return Err(format!(
                "trailer checksum mismatch (stored {stored:#010x}, computed {computed:#010x})"
            ));
        }
        let version = le_u32(t, 8);
        if version != RUN_FORMAT_VERSION {
            return Err(format!(
                "run format version {version}, this build reads {RUN_FORMAT_VERSION}"
            ));
        }
        if u64::from(le_u32(t, 12)) != BLOCK_BYTES {
            return Err(format!("block size {} is not {BLOCK_BYTES}", le_u32(t, 12)));
        }
        let u = |i: usize| le_u64(t, 16 + 8 * i);
        let mut off = [0u64; SECTIONS];
        for (i, o) in off.iter_mut().enumerate() {
            *o = u(6 + i);
        }
        let f = 16 + 8 * (6 + SECTIONS);
        let trailer = Trailer {
            first_position: u(0),
            last_position: u(1),
            streams_total: u(2),
            types_total: u(3),
            events: off[S_ENTRIES].saturating_sub(off[S_POSTINGS]) / 8,
            stream_count: u(4),
            type_count: u(5),
            off,
            fingerprint: Fingerprint {
                location: Location {
                    segment: le_u32(t, f),
                    offset: le_u32(t, f + 4),
                },
                frame_crc: le_u32(t, f + 8),
            },
        };
        Ok((trailer, le_u32(t, f + 12)))
    }

    /// Checks that the sections are where their counts say, inside a file of `file_len` bytes.
    fn check_layout(&self, file_len: u64) -> std::result::Result<(), String> {
        if self.first_position == 0 || self.last_position < self.first_position {
            return Err(format!(
                "position range {}..={} is empty or starts at 0",
                self.first_position, self.last_position
            ));
        }
        let n = self.positions();
        let m = self.events;
        if m == 0 || m > n {
            return Err(format!(
                "{m} events (stream postings) for {n} positions; a run holds at least one event \
                 and at most one per position"
            ));
        }
        let o = &self.off;
        let at = |i: usize| o.get(i).copied().unwrap_or_default();
        let expect =
            |from: usize, bytes: Option<u64>, to: usize| -> std::result::Result<(), String> {
                match bytes.and_then(|b| at(from).checked_add(b)) {
                    Some(end) if end <= at(to) && at(to) - end < 8 => Ok(()),
                    _ => Err(format!(
                        "section {from} does not end where section {to} starts"
                    )),
                }
            };
        if at(LOCATIONS) != 0 {
            return Err("locations do not start the file".into());
        }
        expect(LOCATIONS, n.checked_mul(8), S_POSTINGS)?;
        expect(S_POSTINGS, m.checked_mul(8), S_ENTRIES)?;
        let entries = |c: u64| c.checked_add(1).and_then(|c| c.checked_mul(ENTRY_BYTES));
        expect(S_ENTRIES, entries(self.stream_count), S_NAMES)?;
        if at(T_POSTINGS) < at(S_NAMES) {
            return Err("stream names overlap type postings".into());
        }
        expect(T_POSTINGS, m.checked_mul(8), T_ENTRIES)?;
        expect(T_ENTRIES, entries(self.type_count), T_NAMES)?;
        if at(IDS) < at(T_NAMES) {
            return Err("type names overlap ids".into());
        }
        expect(IDS, m.checked_mul(ID_BYTES), FILTER)?;
        let filter_end = at(FILTER)
            .checked_add(filter_blocks(m) * FILTER_BLOCK_BYTES)
            .ok_or("id filter overflows")?;
        let crcs = at(CRCS);
        if crcs % BLOCK_BYTES != 0 || crcs < filter_end || crcs - filter_end >= BLOCK_BYTES {
            return Err("block table is not at the block after the id filter".into());
        }
        let expected_len = (crcs / BLOCK_BYTES)
            .checked_mul(4)
            .and_then(|b| b.checked_add(crcs))
            .and_then(|b| b.checked_add(TRAILER_BYTES as u64));
        if expected_len != Some(file_len) {
            return Err(format!(
                "file is {file_len} bytes, its sections say {}",
                expected_len.map_or("more than 2^64".into(), |l| l.to_string())
            ));
        }
        Ok(())
    }
}

struct Cursor<'a> {
    buf: &'a mut [u8],
    at: usize,
}

impl Cursor<'_> {
    fn put(&mut self, bytes: &[u8]) {
        if let Some(slot) = self.buf.get_mut(self.at..self.at + bytes.len()) {
            slot.copy_from_slice(bytes);
        }
        self.at += bytes.len();
    }
}

fn le_u32(b: &[u8], at: usize) -> u32 {
    b.get(at..at + 4)
        .and_then(|s| s.try_into().ok())
        .map(u32::from_le_bytes)
        .unwrap_or_default()
}

fn le_u64(b: &[u8], at: usize) -> u64 {
    b.get(at..at + 8)
        .and_then(|s| s.try_into().ok())
        .map(u64::from_le_bytes)
        .unwrap_or_default()
}

/// A location as stored in a run: `segment << 32 | offset`; a hole ([`HOLE`]) is 0.
pub fn pack_location(l: Location) -> u64 {
    (u64::from(l.segment) << 32) | u64::from(l.offset)
}

pub fn unpack_location(v: u64) -> Location {
    #[expect(clippy::cast_possible_truncation, reason = "the two halves of a u64")]
    Location {
        segment: (v >> 32) as u32,
        offset: v as u32,
    }
}

/// One stream's (or type's) events within a layer: the revision of the first, and positions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Posting {
    pub name: Box<str>,
    pub first_revision: u64,
    pub positions: Vec<u64>,
}

/// An open, memory-mapped run.
pub struct Run {
    path: PathBuf,
    map: Mmap,
    trailer: Trailer,
    /// One bit per block: set once the block's checksum has been checked.
    verified: Box<[AtomicU64]>,
    /// Set once a damaged block has been found and the file set aside.
    quarantined: std::sync::atomic::AtomicBool,
    /// Per table, (hash of the name, entry index) for every entry, sorted: built on the first
    /// lookup, so that a lookup is a search in this compact array plus one entry read to
    /// confirm the name, instead of a binary search probing all over the file.
    directories: [std::sync::OnceLock<Vec<(u64, u64)>>; 2],
    /// Seeded per process: the hashes never leave memory, and names come from clients.
    hasher: foldhash::quality::RandomState,
}

impl std::fmt::Debug for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Run({}, {}..={})",
            self.path.display(),
            self.trailer.first_position,
            self.trailer.last_position
        )
    }
}

impl Run {
    /// Opens and checks a run file: trailer, layout and block table. The blocks themselves are
    /// checked as lookups first read them.
    pub fn open(path: &Path) -> Result<Run> {
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        // SAFETY: run files are written once, renamed into place, and never changed; the
        // directory lock keeps other processes away. A damaged file is caught by checksums.
        let map = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        let len = map.len() as u64;
        let bad = |offset: u64, reason: String| Error::corruption(path, offset, reason);
        let trailer_at = map.len().checked_sub(TRAILER_BYTES).ok_or_else(|| {
            bad(
                0,
                format!("file is {len} bytes, shorter than a run trailer"),
            )
        })?;
        let (trailer, crcs_crc) = Trailer::decode(map.get(trailer_at..).unwrap_or_default())
            .map_err(|r| bad(trailer_at as u64, r))?;
        trailer
            .check_layout(len)
            .map_err(|r| bad(trailer_at as u64, r))?;
        let crcs_off = trailer.off[CRCS];
        let crcs = map
            .get(crcs_off as usize..trailer_at)
            .ok_or_else(|| bad(crcs_off, "block table out of range".into()))?;
        let computed = crc32fast::hash(crcs);
        if computed != crcs_crc {
            return Err(bad(
                crcs_off,
                format!(
                    "block table checksum mismatch (stored {crcs_crc:#010x}, computed {computed:#010x})"
                ),
            ));
        }
        let blocks = crcs_off / BLOCK_BYTES;
        let verified = (0..blocks.div_ceil(64))
            .map(|_| AtomicU64::new(0))
            .collect();
        Ok(Run {
            path: path.to_path_buf(),
            map,
            trailer,
            verified,
            quarantined: std::sync::atomic::AtomicBool::new(false),
            directories: Default::default(),
            hasher: foldhash::quality::RandomState::default(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn trailer(&self) -> &Trailer {
        &self.trailer
    }

    pub fn first_position(&self) -> u64 {
        self.trailer.first_position
    }

    pub fn last_position(&self) -> u64 {
        self.trailer.last_position
    }

    /// `len` bytes at `off`, after checking every block they touch.
    fn bytes(&self, off: u64, len: u64) -> Result<&[u8]> {
        let data_end = self.trailer.off[CRCS];
        let end = off
            .checked_add(len)
            .filter(|&e| e <= data_end)
            .ok_or_else(|| Error::corruption(&self.path, off, "reference past the run's data"))?;
        if len > 0 {
            for block in off / BLOCK_BYTES..=(end - 1) / BLOCK_BYTES {
                self.verify_block(block)?;
            }
        }
        Ok(self.map.get(off as usize..end as usize).unwrap_or_default())
    }

    fn verify_block(&self, block: u64) -> Result<()> {
        let word = self.verified.get((block / 64) as usize);
        let bit = 1u64 << (block % 64);
        if word.is_some_and(|w| w.load(Ordering::Relaxed) & bit != 0) {
            return Ok(());
        }
        let start = block * BLOCK_BYTES;
        let data = self
            .map
            .get(start as usize..(start + BLOCK_BYTES) as usize)
            .unwrap_or_default();
        let stored = le_u32(&self.map, (self.trailer.off[CRCS] + block * 4) as usize);
        let computed = crc32fast::hash(data);
        if stored != computed || data.len() as u64 != BLOCK_BYTES {
            self.quarantine(start);
            return Err(Error::corruption(
                &self.path,
                start,
                format!(
                    "index block checksum mismatch (stored {stored:#010x}, computed {computed:#010x})"
                ),
            ));
        }
        if let Some(w) = word {
            w.fetch_or(bit, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Renames a damaged run out of the way (once), so that the next open ignores it and
    /// rebuilds its part of the index from the log. Until then, lookups that need the damaged
    /// block fail with `Corruption`; the others are answered.
    fn quarantine(&self, offset: u64) {
        if self.quarantined.swap(true, Ordering::AcqRel) {
            return;
        }
        let mut to = self.path.clone().into_os_string();
        to.push(".damaged");
        let renamed = std::fs::rename(&self.path, &to);
        tracing::error!(
            file = %self.path.display(),
            offset,
            set_aside_as = %std::path::Path::new(&to).display(),
            renamed = renamed.is_ok(),
            "damaged index checkpoint block: lookups that need it fail until the store is \
             reopened, which rebuilds this part of the index from the log"
        );
    }

    fn u64_at(&self, off: u64) -> Result<u64> {
        Ok(le_u64(self.bytes(off, 8)?, 0))
    }

    pub fn contains(&self, position: u64) -> bool {
        (self.trailer.first_position..=self.trailer.last_position).contains(&position)
    }

    /// The location of the event at `position`; `None` for a hole or a position outside.
    pub fn location(&self, position: u64) -> Result<Option<Location>> {
        if !self.contains(position) {
            return Ok(None);
        }
        let i = position - self.trailer.first_position;
        let l = unpack_location(self.u64_at(self.trailer.off[LOCATIONS] + 8 * i)?);
        Ok((l != HOLE).then_some(l))
    }

    /// The first (forwards) or last (backwards) event at a position in `from..=to`, stepping
    /// over holes; each block's checksum is looked at once.
    pub fn find_event(
        &self,
        from: u64,
        to: u64,
        direction: Direction,
    ) -> Result<Option<(u64, Location)>> {
        let (first, last) = (self.trailer.first_position, self.trailer.last_position);
        let (from, to) = (from.max(first), to.min(last));
        if from > to {
            return Ok(None);
        }
        let base = self.trailer.off[LOCATIONS];
        let mut checked = u64::MAX;
        let mut look = |p: u64| -> Result<Option<(u64, Location)>> {
            let off = base + 8 * (p - first);
            let block = off / BLOCK_BYTES;
            if block != checked {
                self.verify_block(block)?;
                checked = block;
            }
            let l = unpack_location(le_u64(&self.map, off as usize));
            Ok((l != HOLE).then_some((p, l)))
        };
        match direction {
            Direction::Forwards => {
                for p in from..=to {
                    if let Some(found) = look(p)? {
                        return Ok(Some(found));
                    }
                }
            }
            Direction::Backwards => {
                for p in (from..=to).rev() {
                    if let Some(found) = look(p)? {
                        return Ok(Some(found));
                    }
                }
            }
        }
        Ok(None)
    }

    /// Appends `(position, location)` for the leading `positions` this run covers (in any
    /// order), skipping holes; returns how many it took (holes included). The batch form of
    /// [`Run::location`] for reads: each block's checksum is looked at once per run of
    /// neighbouring positions.
    pub fn locate_into(&self, positions: &[u64], out: &mut Vec<(u64, Location)>) -> Result<usize> {
        let (first, last) = (self.trailer.first_position, self.trailer.last_position);
        let base = self.trailer.off[LOCATIONS];
        let mut checked = u64::MAX;
        let mut taken = 0;
        for &p in positions {
            if p < first || p > last {
                break;
            }
            // Entries are 8-byte aligned from offset 0, so none straddles a block.
            let off = base + 8 * (p - first);
            let block = off / BLOCK_BYTES;
            if block != checked {
                self.verify_block(block)?;
                checked = block;
            }
            let l = unpack_location(le_u64(&self.map, off as usize));
            if l != HOLE {
                out.push((p, l));
            }
            taken += 1;
        }
        Ok(taken)
    }

    fn table(&self, table: Table) -> (u64, u64, u64, u64) {
        let o = &self.trailer.off;
        match table {
            Table::Streams => (
                self.trailer.stream_count,
                o[S_ENTRIES],
                o[S_NAMES],
                o[S_POSTINGS],
            ),
            Table::Types => (
                self.trailer.type_count,
                o[T_ENTRIES],
                o[T_NAMES],
                o[T_POSTINGS],
            ),
        }
    }

    /// Entry `k` of a table: (name bytes, first revision, first posting, end posting).
    fn entry(&self, table: Table, k: u64) -> Result<(&[u8], u64, u64, u64)> {
        let (count, entries, names, _) = self.table(table);
        let e = self.bytes(entries + k * ENTRY_BYTES, 2 * ENTRY_BYTES)?;
        let (name_off, name_len) = (le_u64(e, 0), le_u64(e, 8));
        let (first_revision, start, end) = (le_u64(e, 16), le_u64(e, 24), le_u64(e, 56));
        let names_end = match table {
            Table::Streams => self.trailer.off[T_POSTINGS],
            Table::Types => self.trailer.off[IDS],
        };
        let bad = |what: &str| Error::corruption(&self.path, entries + k * ENTRY_BYTES, what);
        if k >= count || start >= end || end > self.trailer.events {
            return Err(bad("index entry has an empty or out-of-range posting list"));
        }
        let name_start = names
            .checked_add(name_off)
            .filter(|s| s.checked_add(name_len).is_some_and(|e| e <= names_end))
            .ok_or_else(|| bad("index entry name out of range"))?;
        Ok((
            self.bytes(name_start, name_len)?,
            first_revision,
            start,
            end,
        ))
    }

    fn name_hash(&self, name: &[u8]) -> u64 {
        use std::hash::{BuildHasher, Hasher};
        let mut h = self.hasher.build_hasher();
        h.write(name);
        h.finish()
    }

    fn directory(&self, table: Table) -> Result<&[(u64, u64)]> {
        let cell = match table {
            Table::Streams => &self.directories[0],
            Table::Types => &self.directories[1],
        };
        if let Some(d) = cell.get() {
            return Ok(d);
        }
        let (count, ..) = self.table(table);
        let mut d = Vec::with_capacity(usize::try_from(count).unwrap_or_default());
        for k in 0..count {
            d.push((self.name_hash(self.entry(table, k)?.0), k));
        }
        d.sort_unstable();
        // Another thread may have built it meanwhile; both built the same directory.
        let _ = cell.set(d);
        Ok(cell.get().map(Vec::as_slice).unwrap_or_default())
    }

    /// The posting list of `name`: (first revision, first posting, end posting).
    pub fn find(&self, table: Table, name: &str) -> Result<Option<(u64, u64, u64)>> {
        let key = name.as_bytes();
        let h = self.name_hash(key);
        let directory = self.directory(table)?;
        let from = directory.partition_point(|&(x, _)| x < h);
        for &(x, k) in directory.get(from..).unwrap_or_default() {
            if x != h {
                break;
            }
            let (n, first_revision, start, end) = self.entry(table, k)?;
            if n == key {
                return Ok(Some((first_revision, start, end)));
            }
        }
        Ok(None)
    }

    /// Postings `from..to` of a table (indexes into its postings section).
    pub fn postings(&self, table: Table, from: u64, to: u64) -> Result<Vec<u64>> {
        let (.., postings) = self.table(table);
        if to <= from {
            return Ok(Vec::new());
        }
        let b = self.bytes(postings + 8 * from, 8 * (to - from))?;
        Ok(b.chunks_exact(8).map(|c| le_u64(c, 0)).collect())
    }

    pub fn posting(&self, table: Table, k: u64) -> Result<u64> {
        let (.., postings) = self.table(table);
        self.u64_at(postings + 8 * k)
    }

    /// The first posting index in `from..to` whose position is not below `position`.
    pub fn posting_partition(
        &self,
        table: Table,
        from: u64,
        to: u64,
        position: u64,
    ) -> Result<u64> {
        let (mut lo, mut hi) = (from, to);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.posting(table, mid)? < position {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        Ok(lo)
    }

    fn id_entry(&self, k: u64) -> Result<(u128, u64)> {
        let b = self.bytes(self.trailer.off[IDS] + k * ID_BYTES, ID_BYTES)?;
        let id = b
            .get(..16)
            .and_then(|s| s.try_into().ok())
            .map(u128::from_le_bytes)
            .unwrap_or_default();
        Ok((id, le_u64(b, 16)))
    }

    /// Whether the run may hold an event with this id (false: it certainly does not).
    fn may_hold_id(&self, id: u128) -> Result<bool> {
        let (block, bits) = filter_probe(id, filter_blocks(self.trailer.events));
        let b = self.bytes(
            self.trailer.off[FILTER] + block * FILTER_BLOCK_BYTES,
            FILTER_BLOCK_BYTES,
        )?;
        Ok(bits.iter().all(|&bit| {
            b.get(bit / 8)
                .is_some_and(|byte| byte & (1 << (bit % 8)) != 0)
        }))
    }

    /// Positions of the events with this id, in order.
    pub fn positions_of_id(&self, id: u128) -> Result<Vec<u64>> {
        if !self.may_hold_id(id)? {
            return Ok(Vec::new());
        }
        let n = self.trailer.events;
        let (mut lo, mut hi) = (0u64, n);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.id_entry(mid)?.0 < id {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        let mut out = Vec::new();
        while lo < n {
            let (i, p) = self.id_entry(lo)?;
            if i != id {
                break;
            }
            out.push(p);
            lo += 1;
        }
        Ok(out)
    }

    /// Every posting list of a table, in name order.
    pub fn iter_postings(&self, table: Table) -> impl Iterator<Item = Result<Posting>> + '_ {
        let (count, ..) = self.table(table);
        (0..count).map(move |k| {
            let (name, first_revision, start, end) = self.entry(table, k)?;
            let name = std::str::from_utf8(name)
                .map_err(|_| Error::corruption(&self.path, k, "index name is not UTF-8"))?;
            Ok(Posting {
                name: name.into(),
                first_revision,
                positions: self.postings(table, start, end)?,
            })
        })
    }

    pub fn iter_ids(&self) -> impl Iterator<Item = Result<(u128, u64)>> + '_ {
        (0..self.trailer.events).map(move |k| self.id_entry(k))
    }

    /// Every location, packed, holes (0) included.
    pub fn iter_locations(&self) -> impl Iterator<Item = Result<u64>> + '_ {
        (0..self.trailer.positions()).map(move |k| self.u64_at(self.trailer.off[LOCATIONS] + 8 * k))
    }
}

/// Writes a run file section by section, computing the block checksums on the way.
pub struct RunWriter {
    path: PathBuf,
    out: BufWriter<File>,
    at: u64,
    block_hasher: crc32fast::Hasher,
    crcs: Vec<u32>,
    off: [u64; SECTIONS],
}

impl RunWriter {
    pub fn create(path: &Path) -> Result<RunWriter> {
        let file = File::create(path).map_err(|e| Error::io(path, e))?;
        Ok(RunWriter {
            path: path.to_path_buf(),
            out: BufWriter::with_capacity(1 << 20, file),
            at: 0,
            block_hasher: crc32fast::Hasher::new(),
            crcs: Vec::new(),
            off: [0; SECTIONS],
        })
    }

    fn write(&mut self, mut bytes: &[u8]) -> Result<()> {
        while !bytes.is_empty() {
            let room = (BLOCK_BYTES - self.at % BLOCK_BYTES) as usize;
            let (now, rest) = bytes.split_at(room.min(bytes.len()));
            self.block_hasher.update(now);
            self.out
                .write_all(now)
                .map_err(|e| Error::io(&self.path, e))?;
            self.at += now.len() as u64;
            if self.at.is_multiple_of(BLOCK_BYTES) {
                let h = std::mem::take(&mut self.block_hasher);
                self.crcs.push(h.finalize());
            }
            bytes = rest;
        }
        Ok(())
    }

    fn u64(&mut self, v: u64) -> Result<()> {
        self.write(&v.to_le_bytes())
    }

    fn pad_to(&mut self, align: u64) -> Result<()> {
        let pad = (align - self.at % align) % align;
        self.write(&vec![0u8; pad as usize])
    }

    fn start(&mut self, section: usize) -> Result<()> {
        self.pad_to(8)?;
        if let Some(o) = self.off.get_mut(section) {
            *o = self.at;
        }
        Ok(())
    }
}

/// A boxed iterator of fallible items: how run contents flow from layers into a run file.
pub type Items<'a, T> = Box<dyn Iterator<Item = Result<T>> + 'a>;

/// The contents of a run, as streams of sorted items. Built from memtables, from runs, or from a
/// merge of both.
pub struct RunContents<'a> {
    pub first_position: u64,
    pub last_position: u64,
    pub streams_total: u64,
    pub types_total: u64,
    pub fingerprint: Fingerprint,
    pub locations: Items<'a, u64>,
    pub streams: Items<'a, Posting>,
    pub types: Items<'a, Posting>,
    pub ids: Items<'a, (u128, u64)>,
}

/// Writes `contents` to `path` and makes the file durable (it is not renamed into place here).
/// Locations cover every position (a hole is 0); postings and ids only the events, and the
/// last position must be an event.
pub fn write_run(path: &Path, contents: RunContents<'_>) -> Result<()> {
    let invalid = |what: &str| Error::InvalidArgument(format!("index run: {what}"));
    let n = contents
        .last_position
        .checked_add(1)
        .and_then(|end| end.checked_sub(contents.first_position))
        .filter(|&n| n > 0 && contents.first_position > 0)
        .ok_or_else(|| invalid("empty position range"))?;
    let mut w = RunWriter::create(path)?;
    w.start(LOCATIONS)?;
    let mut count = 0u64;
    let mut m = 0u64;
    let mut last = None;
    for l in contents.locations {
        let l = l?;
        w.u64(l)?;
        count += 1;
        m += u64::from(l != pack_location(HOLE));
        last = Some(l);
    }
    if count != n {
        return Err(invalid("location count does not match the position range"));
    }
    if last == Some(pack_location(HOLE)) {
        return Err(invalid("the last position is a hole"));
    }
    let (stream_count, s_entries, s_names) = write_table(&mut w, S_POSTINGS, contents.streams, m)?;
    w.start(S_ENTRIES)?;
    w.write(&s_entries)?;
    w.start(S_NAMES)?;
    w.write(&s_names)?;
    let (type_count, t_entries, t_names) = write_table(&mut w, T_POSTINGS, contents.types, m)?;
    w.start(T_ENTRIES)?;
    w.write(&t_entries)?;
    w.start(T_NAMES)?;
    w.write(&t_names)?;
    w.start(IDS)?;
    let mut ids = 0u64;
    let mut previous = None;
    let blocks = filter_blocks(m);
    let mut filter = vec![0u8; (blocks * FILTER_BLOCK_BYTES) as usize];
    for item in contents.ids {
        let (id, position) = item?;
        if previous.is_some_and(|p| p > (id, position)) {
            return Err(invalid("ids out of order"));
        }
        previous = Some((id, position));
        w.write(&id.to_le_bytes())?;
        w.u64(position)?;
        ids += 1;
        let (block, bits) = filter_probe(id, blocks);
        for bit in bits {
            if let Some(byte) = filter.get_mut((block * FILTER_BLOCK_BYTES) as usize + bit / 8) {
                *byte |= 1 << (bit % 8);
            }
        }
    }
    if ids != m {
        return Err(invalid("id count does not match the events"));
    }
    w.start(FILTER)?;
    w.write(&filter)?;
    w.pad_to(BLOCK_BYTES)?;
    w.off[CRCS] = w.at;
    let table: Vec<u8> = w.crcs.iter().flat_map(|c| c.to_le_bytes()).collect();
    let trailer = Trailer {
        first_position: contents.first_position,
        last_position: contents.last_position,
        streams_total: contents.streams_total,
        types_total: contents.types_total,
        events: m,
        stream_count,
        type_count,
        off: w.off,
        fingerprint: contents.fingerprint,
    };
    let encoded = trailer.encode(crc32fast::hash(&table));
    let path_buf = w.path.clone();
    let io = |e| Error::io(&path_buf, e);
    w.out.write_all(&table).map_err(io)?;
    w.out.write_all(&encoded).map_err(io)?;
    let file = w.out.into_inner().map_err(|e| io(e.into_error()))?;
    file.sync_all().map_err(io)?;
    Ok(())
}

/// Blocks of the id filter of a run of `n` events (holes not counted).
fn filter_blocks(n: u64) -> u64 {
    (n.saturating_mul(FILTER_BITS_PER_ID) / (FILTER_BLOCK_BYTES * 8)).max(1)
}

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The filter block of `id` and the bits to test in it. A fixed function: it is part of the
/// file format.
fn filter_probe(id: u128, blocks: u64) -> (u64, [usize; FILTER_PROBES as usize]) {
    #[expect(clippy::cast_possible_truncation, reason = "the two halves of a u128")]
    let h = mix((id as u64) ^ mix((id >> 64) as u64 ^ 0x9e37_79b9_7f4a_7c15));
    let block = u64::try_from((u128::from(h) * u128::from(blocks)) >> 64).unwrap_or_default();
    let mut g = mix(h);
    let mut bits = [0usize; FILTER_PROBES as usize];
    for b in bits.iter_mut() {
        *b = (g % (FILTER_BLOCK_BYTES * 8)) as usize;
        g >>= 9;
    }
    (block, bits)
}

/// Writes one postings section of `n` postings (one per event); returns the entry count, the
/// entries and the names blob.
fn write_table(
    w: &mut RunWriter,
    section: usize,
    postings: Items<'_, Posting>,
    n: u64,
) -> Result<(u64, Vec<u8>, Vec<u8>)> {
    w.start(section)?;
    let mut entries = Vec::new();
    let mut names: Vec<u8> = Vec::new();
    let mut written = 0u64;
    let mut count = 0u64;
    let mut previous: Option<Box<str>> = None;
    for p in postings {
        let p = p?;
        if p.positions.is_empty() || previous.as_ref().is_some_and(|prev| *prev >= p.name) {
            return Err(Error::InvalidArgument(
                "index run: posting lists must be non-empty and in name order".into(),
            ));
        }
        for v in [
            names.len() as u64,
            p.name.len() as u64,
            p.first_revision,
            written,
        ] {
            entries.extend_from_slice(&v.to_le_bytes());
        }
        names.extend_from_slice(p.name.as_bytes());
        for &position in &p.positions {
            w.u64(position)?;
        }
        written += p.positions.len() as u64;
        count += 1;
        previous = Some(p.name);
    }
    if written != n {
        return Err(Error::InvalidArgument(format!(
            "index run: {written} postings for {n} events"
        )));
    }
    // The sentinel entry: its first posting is the end of the last list.
    for v in [names.len() as u64, 0, 0, written] {
        entries.extend_from_slice(&v.to_le_bytes());
    }
    Ok((count, entries, names))
}

/// Merges posting iterators of consecutive layers (oldest first) into one, in name order. A
/// name in several layers gets one list: the oldest layer's first revision, then every
/// position in layer order.
pub fn merge_postings<'a>(
    layers: Vec<Items<'a, Posting>>,
) -> impl Iterator<Item = Result<Posting>> + 'a {
    merge_by(
        layers,
        |p: &Posting| p.name.clone(),
        |into: &mut Posting, next: Posting| into.positions.extend_from_slice(&next.positions),
    )
}

/// Merges sorted (id, position) iterators into one sorted iterator.
pub fn merge_ids<'a>(
    layers: Vec<Items<'a, (u128, u64)>>,
) -> impl Iterator<Item = Result<(u128, u64)>> + 'a {
    // Positions differ between layers, so no two items have the same key.
    merge_by(layers, |v: &(u128, u64)| *v, |_, _| {})
}

/// Merges iterators sorted by `key` into one; items of equal key are combined, oldest layer
/// first. Stops after the first error.
fn merge_by<'a, T: 'a, K: Ord + 'a>(
    layers: Vec<Items<'a, T>>,
    key: impl Fn(&T) -> K + 'a,
    combine: impl Fn(&mut T, T) + 'a,
) -> impl Iterator<Item = Result<T>> + 'a {
    let mut heads: Vec<Option<T>> = layers.iter().map(|_| None).collect();
    let mut layers = layers;
    let mut failed = false;
    std::iter::from_fn(move || {
        if failed {
            return None;
        }
        for (head, it) in heads.iter_mut().zip(layers.iter_mut()) {
            if head.is_none() {
                match it.next() {
                    Some(Ok(v)) => *head = Some(v),
                    Some(Err(e)) => {
                        failed = true;
                        return Some(Err(e));
                    }
                    None => {}
                }
            }
        }
        let min = heads.iter().flatten().map(&key).min()?;
        let mut out: Option<T> = None;
        for head in heads.iter_mut() {
            if head.as_ref().is_some_and(|v| key(v) == min)
                && let Some(v) = head.take()
            {
                match out.as_mut() {
                    None => out = Some(v),
                    Some(o) => combine(o, v),
                }
            }
        }
        out.map(Ok)
    })
}

/// Whole-file checks and item offsets, for the offline verify: it checks every block (not only
/// those a lookup reads) and names the byte offset of an item that disagrees with the log.
impl Run {
    /// Blocks of data covered by the block table.
    pub fn block_count(&self) -> u64 {
        self.trailer.off[CRCS] / BLOCK_BYTES
    }

    /// Checks one block against the block table. Unlike a lookup, a failure only reports: the
    /// file is not set aside.
    pub fn check_block(&self, block: u64) -> std::result::Result<(), String> {
        let start = block.saturating_mul(BLOCK_BYTES);
        let data = usize::try_from(start)
            .ok()
            .and_then(|s| self.map.get(s..s.checked_add(BLOCK_BYTES as usize)?))
            .unwrap_or_default();
        let slot = self.trailer.off[CRCS].saturating_add(block.saturating_mul(4));
        let stored = le_u32(&self.map, usize::try_from(slot).unwrap_or(usize::MAX));
        let computed = crc32fast::hash(data);
        if block >= self.block_count() || data.len() as u64 != BLOCK_BYTES || stored != computed {
            return Err(format!(
                "index block checksum mismatch (stored {stored:#010x}, computed {computed:#010x})"
            ));
        }
        if let Some(w) = self.verified.get((block / 64) as usize) {
            w.fetch_or(1u64 << (block % 64), Ordering::Relaxed);
        }
        Ok(())
    }

    /// Byte offset of the location entry of `position` (which the run covers).
    pub fn location_offset(&self, position: u64) -> u64 {
        let i = position.saturating_sub(self.trailer.first_position);
        self.trailer.off[LOCATIONS].saturating_add(i.saturating_mul(8))
    }

    /// Byte offset of posting `k` of a table.
    pub fn posting_offset(&self, table: Table, k: u64) -> u64 {
        let (.., postings) = self.table(table);
        postings.saturating_add(k.saturating_mul(8))
    }
}
