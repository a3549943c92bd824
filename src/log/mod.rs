//! The log: segment files on disk, opened and checked at start, written by one writer.
//!
//! Architecture invariant: bytes are written only by [`LogWriter`], only past the last whole
//! commit, and never changed after the fdatasync that made them durable. Readers map the files
//! read-only and read only up to the visible position the store publishes.

pub mod frame;
pub mod rewrite;
pub mod segment;

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;

use bytes::Bytes;
use memmap2::Mmap;

use crate::error::{Error, Result};
use segment::{
    SEGMENT_HEADER_BYTES, ScannedFrame, SegmentRole, encode_header, parse_segment_file_name,
    scan_segment, segment_file_name,
};

/// Name of the zero-filled file that becomes the next segment.
const PREALLOC_FILE_NAME: &str = "next.seg.prealloc";
const ZERO_CHUNK_BYTES: usize = 1 << 20;

/// A segment as readers see it: its bytes, mapped read-only.
pub struct SegmentView {
    pub path: PathBuf,
    /// The whole file, mapped. Only the part below the visible position is ever read.
    pub bytes: Bytes,
}

/// Where an event's frame starts: a segment (by index in the segment list) and a byte offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    pub segment: u32,
    pub offset: u32,
}

/// The writing end of the log. Owned by the writer thread.
pub struct LogWriter {
    dir: PathBuf,
    active: File,
    active_path: PathBuf,
    /// Index of the active segment in the segment list.
    active_index: u32,
    /// Where the next frame goes in the active segment.
    write_offset: u64,
    /// Size of the active segment file.
    capacity: u64,
    segment_bytes: u64,
    next_segment: Option<JoinHandle<std::io::Result<File>>>,
}

/// What opening the log found.
pub struct OpenedLog {
    pub writer: LogWriter,
    pub segments: Vec<std::sync::Arc<SegmentView>>,
    /// The position the next appended event gets.
    pub next_position: u64,
}

/// Where scanning resumes at open: just past the last event an index checkpoint covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resume {
    /// Index of the segment holding the next frame.
    pub segment: u32,
    /// Byte offset of the next frame in that segment.
    pub offset: u64,
    /// Position of the next event.
    pub next_position: u64,
}

/// The log's segment files, opened and mapped but not yet scanned.
pub struct MappedLog {
    dir: PathBuf,
    segment_bytes: u64,
    names: Vec<(u64, PathBuf)>,
    segments: Vec<std::sync::Arc<SegmentView>>,
    last_file: File,
}

/// Opens (or creates) the log in `dir` and maps every segment; [`MappedLog::scan`] then checks
/// them. The last segment is zero-filled up to the segment size if it is shorter.
pub fn map_log(dir: &Path, segment_bytes: u64) -> Result<MappedLog> {
    let prealloc = dir.join(PREALLOC_FILE_NAME);
    if prealloc.exists() {
        fs::remove_file(&prealloc).map_err(|e| Error::io(&prealloc, e))?;
        sync_dir(dir)?;
    }
    let mut names: Vec<(u64, PathBuf)> = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        if let Some(first) = entry.file_name().to_str().and_then(parse_segment_file_name) {
            names.push((first, entry.path()));
        }
    }
    names.sort();
    if names.is_empty() {
        let path = dir.join(segment_file_name(1));
        let file = preallocate(&prealloc, segment_bytes)?;
        install_segment(&file, &prealloc, &path, dir, 1, 0)?;
        names.push((1, path));
    }
    if u32::try_from(names.len()).is_err() {
        return Err(Error::InvalidConfig("more than u32::MAX segments".into()));
    }
    let last_index = names.len() - 1;
    let mut segments = Vec::with_capacity(names.len());
    let mut last_file = None;
    for (i, (_, path)) in names.iter().enumerate() {
        let last = i == last_index;
        let file = OpenOptions::new()
            .read(true)
            .write(last)
            .open(path)
            .map_err(|e| Error::io(path, e))?;
        if last {
            let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
            if len < segment_bytes && len >= SEGMENT_HEADER_BYTES as u64 {
                zero_fill(&file, len, segment_bytes).map_err(|e| Error::io(path, e))?;
                file.sync_all().map_err(|e| Error::io(path, e))?;
            }
        }
        let bytes = map(&file, path)?;
        segments.push(std::sync::Arc::new(SegmentView {
            path: path.clone(),
            bytes: Bytes::from_owner(bytes),
        }));
        if last {
            last_file = Some(file);
        }
    }
    Ok(MappedLog {
        dir: dir.to_path_buf(),
        segment_bytes,
        names,
        segments,
        last_file: last_file.ok_or_else(|| Error::InvalidConfig("no segment".into()))?,
    })
}

impl MappedLog {
    pub fn segments(&self) -> &[std::sync::Arc<SegmentView>] {
        &self.segments
    }

    /// The first position of the log: the first segment's, from its header (1 unless the log
    /// was written starting after a gap).
    pub fn first_position(&self) -> Result<u64> {
        let (view, (_, path)) = self
            .segments
            .first()
            .zip(self.names.first())
            .ok_or_else(|| Error::InvalidConfig("no segment".into()))?;
        segment::decode_header(&view.bytes)
            .map(|h| h.first_position)
            .map_err(|reason| Error::corruption(path, 0, reason))
    }

    /// Checks the segments and calls `on_event` with each event of every whole commit in log
    /// order, from `resume` on when given (the segments before it are trusted: only their
    /// headers are checked). A torn tail of the last segment is zeroed.
    ///
    /// Positions may skip only where the log says so: a frame flagged `GAP_BEFORE`, or a
    /// segment whose header is flagged `SEGMENT_GAP_BEFORE` (the first segment starts at 1
    /// otherwise). The last segment may be empty with a flagged header: the next position is
    /// then its first position, above the last event + 1.
    pub fn scan(
        self,
        resume: Option<Resume>,
        on_event: &mut dyn FnMut(&Path, Location, ScannedFrame<'_>) -> Result<()>,
    ) -> Result<OpenedLog> {
        let MappedLog {
            dir,
            segment_bytes,
            names,
            segments,
            last_file,
        } = self;
        // The first segment starts at 1 unless its header is flagged; the segments after a
        // resume point are checked against the scan, those before it only by their headers.
        let mut expected_first = Some(1);
        let last_index = names.len() - 1;
        let mut data_end = 0;
        for (i, ((named_first, path), view)) in names.iter().zip(&segments).enumerate() {
            let role = if i == last_index {
                SegmentRole::Last
            } else {
                SegmentRole::Sealed
            };
            #[expect(clippy::cast_possible_truncation, reason = "checked in map_log")]
            let segment_index = i as u32;
            let start = match resume {
                Some(r) if segment_index < r.segment => {
                    let header = segment::decode_header(&view.bytes)
                        .map_err(|reason| Error::corruption(path, 0, reason))?;
                    let first = header.first_position;
                    if first != *named_first {
                        return Err(Error::corruption(
                            path,
                            0,
                            format!("file name says position {named_first}, header says {first}"),
                        ));
                    }
                    if i == 0 && first != 1 && !header.gap_before() {
                        return Err(Error::corruption(
                            path,
                            segment::OFF_FIRST_POSITION as u64,
                            format!(
                                "segment starts at position {first}, but the log continues at 1"
                            ),
                        ));
                    }
                    expected_first = None;
                    continue;
                }
                Some(r) if segment_index == r.segment => Some((r.offset, r.next_position)),
                _ => None,
            };
            let zeros_from = |from: usize| file_is_zero_from(&last_file, from as u64);
            let scan = scan_segment(
                path,
                &view.bytes,
                role,
                expected_first,
                start,
                (role == SegmentRole::Last).then_some(&zeros_from as &dyn Fn(usize) -> bool),
                &mut |f: ScannedFrame<'_>| {
                    let location = Location {
                        segment: segment_index,
                        offset: u32::try_from(f.offset)
                            .map_err(|_| Error::corruption(path, f.offset, "offset past 4 GiB"))?,
                    };
                    on_event(path, location, f)
                },
            )?;
            if scan.first_position != *named_first {
                return Err(Error::corruption(
                    path,
                    0,
                    format!(
                        "file name says position {named_first}, header says {}",
                        scan.first_position
                    ),
                ));
            }
            if let Some(torn) = scan.torn {
                tracing::warn!(
                    file = %path.display(),
                    found_at = torn.found_at,
                    truncated_to = scan.data_end,
                    bytes = torn.garbage_end - scan.data_end,
                    reason = torn.reason,
                    "torn tail: dropping the incomplete commit at the end of the log"
                );
                zero_fill(&last_file, scan.data_end, torn.garbage_end)
                    .map_err(|e| Error::io(path, e))?;
                last_file.sync_data().map_err(|e| Error::io(path, e))?;
            }
            expected_first = Some(scan.next_position);
            data_end = scan.data_end;
        }
        let active_path = names.last().map(|(_, p)| p.clone()).unwrap_or_default();
        let capacity = last_file
            .metadata()
            .map_err(|e| Error::io(&active_path, e))?
            .len();
        let mut writer = LogWriter {
            dir,
            active: last_file,
            active_path,
            active_index: u32::try_from(last_index).unwrap_or(u32::MAX),
            write_offset: data_end,
            capacity,
            segment_bytes,
            next_segment: None,
        };
        if writer.write_offset.saturating_mul(2) >= writer.capacity {
            writer.start_preallocation();
        }
        Ok(OpenedLog {
            writer,
            segments,
            next_position: expected_first.unwrap_or(1),
        })
    }
}

impl LogWriter {
    /// Where a frame written now would start.
    pub fn next_location(&self) -> Location {
        Location {
            segment: self.active_index,
            #[expect(
                clippy::cast_possible_truncation,
                reason = "segments are at most u32::MAX bytes"
            )]
            offset: self.write_offset as u32,
        }
    }

    /// Bytes still free in the active segment.
    pub fn remaining(&self) -> u64 {
        self.capacity - self.write_offset
    }

    /// Writes `buf` at the end of the active segment. The caller has checked that it fits.
    pub fn write(&mut self, buf: &[u8]) -> Result<()> {
        debug_assert!(buf.len() as u64 <= self.remaining());
        self.active
            .write_all_at(buf, self.write_offset)
            .map_err(|e| Error::io(&self.active_path, e))?;
        self.write_offset += buf.len() as u64;
        // Pre-allocate the next segment once this one is half full: early enough to be ready
        // at the roll, late enough that an idle store does not hold a second empty segment.
        if self.next_segment.is_none() && self.write_offset.saturating_mul(2) >= self.capacity {
            self.start_preallocation();
        }
        Ok(())
    }

    /// fdatasync of the active segment. The segment was zero-filled ahead, so this flushes data
    /// blocks only, not a file-size change.
    pub fn sync(&mut self) -> Result<()> {
        self.active
            .sync_data()
            .map_err(|e| Error::io(&self.active_path, e))
    }

    /// Seals the active segment and makes the pre-allocated file the new active segment, whose
    /// first event will be `first_position`. Returns the new segment's view.
    pub fn roll(&mut self, first_position: u64) -> Result<SegmentView> {
        self.sync()?;
        let prealloc = self.dir.join(PREALLOC_FILE_NAME);
        let file = match self.next_segment.take() {
            Some(handle) => handle
                .join()
                .unwrap_or_else(|_| Err(std::io::Error::other("pre-allocation thread panicked")))
                .map_err(|e| Error::io(&prealloc, e))?,
            None => preallocate(&prealloc, self.segment_bytes)?,
        };
        let path = self.dir.join(segment_file_name(first_position));
        install_segment(&file, &prealloc, &path, &self.dir, first_position, 0)?;
        let bytes = map(&file, &path)?;
        self.capacity = file.metadata().map_err(|e| Error::io(&path, e))?.len();
        self.active = file;
        self.active_path = path.clone();
        self.active_index += 1;
        self.write_offset = SEGMENT_HEADER_BYTES as u64;
        Ok(SegmentView {
            path,
            bytes: Bytes::from_owner(bytes),
        })
    }

    /// Prepares the next segment file in the background, so a roll does not wait for it.
    fn start_preallocation(&mut self) {
        let path = self.dir.join(PREALLOC_FILE_NAME);
        let bytes = self.segment_bytes;
        self.next_segment = std::thread::Builder::new()
            .name("statestore-prealloc".into())
            .spawn(move || preallocate_io(&path, bytes, true))
            .ok();
    }

    /// Waits for background pre-allocation to finish, so that no thread outlives the store.
    pub fn finish(&mut self) {
        if let Some(h) = self.next_segment.take() {
            let _ = h.join();
        }
    }
}

impl Drop for LogWriter {
    fn drop(&mut self) {
        self.finish();
    }
}

fn map(file: &File, path: &Path) -> Result<Mmap> {
    // SAFETY: the file is only ever appended to by this process's writer (the directory lock
    // keeps other processes out), and readers only read below the visible position, whose bytes
    // are never changed again; a shrinking truncation never happens while the store is open.
    unsafe { Mmap::map(file) }.map_err(|e| Error::io(path, e))
}

fn preallocate(path: &Path, bytes: u64) -> Result<File> {
    preallocate_io(path, bytes, false).map_err(|e| Error::io(path, e))
}

/// Creates a file of `bytes` zeros, written (not sparse) and synced, so that later
/// fdatasyncs into it do not have to allocate blocks or change the file size.
///
/// `paced` (the background pre-allocation) syncs after every chunk: a commit's fdatasync then
/// queues behind at most one chunk of zeros instead of the whole segment's writeback, which
/// otherwise showed as 40+ ms stalls of appends while a 64 MiB segment was flushed.
fn preallocate_io(path: &Path, bytes: u64, paced: bool) -> std::io::Result<File> {
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)?;
    let zeros = vec![0u8; ZERO_CHUNK_BYTES];
    let mut left = bytes;
    while left > 0 {
        let n = left.min(ZERO_CHUNK_BYTES as u64) as usize;
        file.write_all(zeros.get(..n).unwrap_or_default())?;
        left -= n as u64;
        if paced {
            file.sync_data()?;
        }
    }
    file.sync_all()?;
    Ok(file)
}

/// Writes the header (with segment header `flags`) into a pre-allocated file, syncs it, renames
/// it into place and syncs the directory, so the segment's directory entry is durable before
/// any event is written to it.
fn install_segment(
    file: &File,
    from: &Path,
    to: &Path,
    dir: &Path,
    first_position: u64,
    flags: u32,
) -> Result<()> {
    file.write_all_at(&encode_header(first_position, flags), 0)
        .map_err(|e| Error::io(from, e))?;
    file.sync_data().map_err(|e| Error::io(from, e))?;
    fs::rename(from, to).map_err(|e| Error::io(to, e))?;
    sync_dir(dir)
}

/// Whether every byte of `file` from `from` on is zero (or unreadable: then the caller scans
/// the mapping and reports what it finds). Reads through a buffer, not the mapping, so the
/// checked pages do not count as this process's memory.
fn file_is_zero_from(file: &File, from: u64) -> bool {
    let mut buf = vec![0u8; ZERO_CHUNK_BYTES];
    let mut at = from;
    loop {
        match file.read_at(&mut buf, at) {
            Ok(0) => return true,
            Ok(n) => {
                if buf.get(..n).is_some_and(|b| b.iter().any(|&x| x != 0)) {
                    return false;
                }
                at += n as u64;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
}

fn zero_fill(file: &File, from: u64, to: u64) -> std::io::Result<()> {
    let zeros = vec![0u8; ZERO_CHUNK_BYTES];
    let mut at = from;
    while at < to {
        let n = (to - at).min(ZERO_CHUNK_BYTES as u64) as usize;
        file.write_all_at(zeros.get(..n).unwrap_or_default(), at)?;
        at += n as u64;
    }
    Ok(())
}

pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(dir, e))
}
