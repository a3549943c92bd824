//! The log rewriter: writes a new log, offline, from events taken out of another one. The
//! offline tools use it: `compact` copies a log without its deleted, truncated or expired
//! events, `replay --into` copies the events from a position on.
//!
//! Every event keeps its position, so the new log has gaps where events were left out; the
//! rewriter marks each one, as the format requires: a frame after a gap inside a segment carries
//! [`GAP_BEFORE`], a segment starting after a gap has [`SEGMENT_GAP_BEFORE`] in its header (the
//! first segment too, when the log does not start at position 1). [`LogRewriter::finish`] says
//! where the next append goes: when that is past the last event kept (the newest events were
//! left out), the log ends with an empty segment flagged as starting there, so positions are
//! never handed out twice.
//!
//! The segment files are what [`crate::Store::open`] expects: `segment_bytes` long, a header,
//! whole commits, zeros after them. The sealed ones are sparse (extended with `set_len`); the
//! last one is written out in full, as the store's own active segment is pre-allocated. The
//! rewriter writes into a new directory and is not crash-safe by itself: a caller replacing a
//! log with its output swaps directories in a crash-safe step of its own (and deletes the index
//! runs, which name segment offsets of the old log).

#![deny(clippy::indexing_slicing, clippy::unwrap_used)]

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::frame::{self, EventBody, EventHeader, GAP_BEFORE};
use super::segment::{SEGMENT_GAP_BEFORE, SEGMENT_HEADER_BYTES, encode_header, segment_file_name};
use super::{PREALLOC_FILE_NAME, install_segment, preallocate, sync_dir, zero_fill};
use crate::config::SEGMENT_BYTES_MAX;
use crate::error::{Error, Result};

/// Encoded frames are written once this many bytes are waiting.
const FLUSH_BYTES: usize = 1 << 20;

/// Writes a new log, commit by commit, into an empty directory.
#[derive(Debug)]
pub struct LogRewriter {
    dir: PathBuf,
    segment_bytes: u64,
    /// Whether `create` made the directory (its parent is synced at the end).
    created_dir: bool,
    /// The segment being written.
    current: Option<OpenSegment>,
    /// The last position pushed; 0 before the first.
    last_position: u64,
    files: Vec<String>,
    data_bytes: u64,
    events: u64,
    commits: u64,
}

#[derive(Debug)]
struct OpenSegment {
    file: File,
    path: PathBuf,
    /// Where the next frame goes, counting the bytes still in `buf`.
    end: u64,
    /// Encoded frames not yet written; they go at `end - buf.len()`.
    buf: Vec<u8>,
}

/// What [`LogRewriter::finish`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RewriteSummary {
    /// The segment files, in log order (names within the directory).
    pub files: Vec<String>,
    /// Their total length: `segment_bytes` each.
    pub bytes: u64,
    /// Bytes of segment headers and frames; the rest is zeros.
    pub data_bytes: u64,
    pub events: u64,
    pub commits: u64,
    /// The position the store's next append gets.
    pub next_position: u64,
}

impl LogRewriter {
    /// Starts a new log in `dir` (created if missing; it must be empty otherwise), with
    /// segments of `segment_bytes`: the same value the store will be opened with.
    pub fn create(dir: &Path, segment_bytes: u64) -> Result<LogRewriter> {
        let smallest = (SEGMENT_HEADER_BYTES + frame::FRAME_BYTES_MIN) as u64;
        if !(smallest..=SEGMENT_BYTES_MAX).contains(&segment_bytes) {
            return Err(Error::InvalidArgument(format!(
                "segment size {segment_bytes} is outside {smallest}..={SEGMENT_BYTES_MAX}"
            )));
        }
        let created_dir = !dir.exists();
        if created_dir {
            fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        } else {
            let mut entries = fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
            if entries.next().is_some() {
                return Err(Error::InvalidArgument(format!(
                    "{} is not empty: a log is rewritten into a new directory",
                    dir.display()
                )));
            }
        }
        Ok(LogRewriter {
            dir: dir.to_path_buf(),
            segment_bytes,
            created_dir,
            current: None,
            last_position: 0,
            files: Vec::new(),
            data_bytes: 0,
            events: 0,
            commits: 0,
        })
    }

    /// Appends one commit: its events in increasing position order, all above the positions
    /// pushed before (positions may skip, and the first may be above 1).
    ///
    /// Each event keeps its position, revision, id, timestamp, content type, names, data and
    /// metadata; `commit_index` and `commit_count` are renumbered for the events given, `flags`
    /// is set to [`GAP_BEFORE`] where the position jumps, and `durable_through` is kept but
    /// lowered below the commit's first position. A commit is never split across segments:
    /// when it does not fit in the current one, that one is sealed and a new segment begins
    /// with it. The events of a stream must keep its revisions consecutive (only a prefix of a
    /// stream may be left out), which [`crate::Store::open`] checks.
    ///
    /// `InvalidArgument` (and nothing written) for an empty commit, positions out of order,
    /// names, data or a content type the format cannot hold, or a commit larger than a segment.
    pub fn push_commit(&mut self, events: &[(EventHeader, EventBody<'_>)]) -> Result<()> {
        let invalid = |m: String| Err(Error::InvalidArgument(m));
        let Some((first, _)) = events.first() else {
            return invalid("a commit has at least one event".into());
        };
        let Ok(commit_count) = u32::try_from(events.len()) else {
            return invalid(format!("a commit of {} events is too large", events.len()));
        };
        let mut previous = self.last_position;
        let mut commit_bytes = 0u64;
        for (h, body) in events {
            if h.position <= previous {
                return invalid(format!(
                    "position {} does not come after {previous}",
                    h.position
                ));
            }
            previous = h.position;
            check_body(h, body)?;
            commit_bytes += frame::serialized_len(body) as u64;
        }
        let room = self.segment_bytes - SEGMENT_HEADER_BYTES as u64;
        if commit_bytes > room {
            return invalid(format!(
                "a commit of {commit_bytes} bytes does not fit in a segment of {} bytes",
                self.segment_bytes
            ));
        }
        let fits = self
            .current
            .as_ref()
            .is_some_and(|s| s.end + commit_bytes <= self.segment_bytes);
        if !fits {
            self.seal()?;
            self.start_segment(first.position)?;
        }
        let Some(segment) = self.current.as_mut() else {
            return invalid("no segment to write to".into());
        };
        // Within a segment the position after the previous frame; the first frame of a
        // segment is where its header says.
        let mut expected = if segment.end == SEGMENT_HEADER_BYTES as u64 {
            first.position
        } else {
            self.last_position + 1
        };
        for (k, (h, body)) in (0u32..).zip(events) {
            let header = EventHeader {
                durable_through: h.durable_through.min(first.position - 1),
                commit_index: k,
                commit_count,
                flags: if h.position == expected {
                    0
                } else {
                    GAP_BEFORE
                },
                ..*h
            };
            frame::encode_into(&mut segment.buf, &header, body);
            expected = h.position.saturating_add(1);
        }
        segment.end += commit_bytes;
        self.data_bytes += commit_bytes;
        self.last_position = previous;
        self.events += u64::from(commit_count);
        self.commits += 1;
        if segment.buf.len() >= FLUSH_BYTES {
            segment.flush()?;
        }
        Ok(())
    }

    /// Ends the log so that the store's next append gets `next_position`, which must be past
    /// the last position pushed (1 or more when nothing was). When it is above the last
    /// position + 1, or nothing was pushed, the log ends with an empty segment starting at
    /// `next_position`, flagged [`SEGMENT_GAP_BEFORE`] when that leaves a gap. Every file and
    /// the directory are synced.
    pub fn finish(mut self, next_position: u64) -> Result<RewriteSummary> {
        let after_last = self.last_position.checked_add(1).ok_or_else(|| {
            Error::InvalidArgument("no position is left after the last event".into())
        })?;
        if next_position < after_last {
            return Err(Error::InvalidArgument(format!(
                "the next position {next_position} is not past the last event {}",
                self.last_position
            )));
        }
        match self.current.take() {
            Some(mut last) if next_position == after_last => {
                // The last segment becomes the store's active one: zeros written out in
                // full, as the store pre-allocates its segments.
                last.flush()?;
                zero_fill(&last.file, last.end, self.segment_bytes)
                    .map_err(|e| Error::io(&last.path, e))?;
                last.file.sync_all().map_err(|e| Error::io(&last.path, e))?;
            }
            current => {
                if let Some(segment) = current {
                    segment.seal()?;
                }
                let flags = if next_position == after_last {
                    0
                } else {
                    SEGMENT_GAP_BEFORE
                };
                let prealloc = self.dir.join(PREALLOC_FILE_NAME);
                let name = segment_file_name(next_position);
                let file = preallocate(&prealloc, self.segment_bytes)?;
                install_segment(
                    &file,
                    &prealloc,
                    &self.dir.join(&name),
                    &self.dir,
                    next_position,
                    flags,
                )?;
                self.files.push(name);
                self.data_bytes += SEGMENT_HEADER_BYTES as u64;
            }
        }
        sync_dir(&self.dir)?;
        if self.created_dir
            && let Some(parent) = self.dir.parent().filter(|p| !p.as_os_str().is_empty())
        {
            sync_dir(parent)?;
        }
        Ok(RewriteSummary {
            bytes: self.files.len() as u64 * self.segment_bytes,
            files: self.files,
            data_bytes: self.data_bytes,
            events: self.events,
            commits: self.commits,
            next_position,
        })
    }

    /// Seals the current segment, if any.
    fn seal(&mut self) -> Result<()> {
        match self.current.take() {
            Some(segment) => segment.seal(),
            None => Ok(()),
        }
    }

    /// Starts a segment whose first event is `first_position`: header written, file extended
    /// to `segment_bytes` (sparse until the end).
    fn start_segment(&mut self, first_position: u64) -> Result<()> {
        let flags = if first_position == self.last_position + 1 {
            0
        } else {
            SEGMENT_GAP_BEFORE
        };
        let name = segment_file_name(first_position);
        let path = self.dir.join(&name);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        file.write_all_at(&encode_header(first_position, flags), 0)
            .and_then(|()| file.set_len(self.segment_bytes))
            .map_err(|e| Error::io(&path, e))?;
        self.files.push(name);
        self.data_bytes += SEGMENT_HEADER_BYTES as u64;
        self.current = Some(OpenSegment {
            file,
            path,
            end: SEGMENT_HEADER_BYTES as u64,
            buf: Vec::new(),
        });
        Ok(())
    }
}

impl OpenSegment {
    fn flush(&mut self) -> Result<()> {
        let at = self.end - self.buf.len() as u64;
        self.file
            .write_all_at(&self.buf, at)
            .map_err(|e| Error::io(&self.path, e))?;
        self.buf.clear();
        Ok(())
    }

    /// Writes what is buffered and syncs the file: a sealed segment, sparse after its data.
    fn seal(mut self) -> Result<()> {
        self.flush()?;
        self.file.sync_all().map_err(|e| Error::io(&self.path, e))
    }
}

/// The limits the frame format sets on one event, checked so that encoding cannot go wrong.
fn check_body(h: &EventHeader, body: &EventBody<'_>) -> Result<()> {
    let too_long = |what: &str, len: usize, max: u64| {
        Error::InvalidArgument(format!(
            "position {}: {what} of {len} bytes is over the format's {max}",
            h.position
        ))
    };
    if body.stream.len() > usize::from(u16::MAX) {
        return Err(too_long("stream name", body.stream.len(), u16::MAX.into()));
    }
    if body.event_type.len() > usize::from(u16::MAX) {
        return Err(too_long(
            "event type",
            body.event_type.len(),
            u16::MAX.into(),
        ));
    }
    let payload = frame::serialized_len(body) - frame::FRAME_PREFIX_BYTES;
    if payload > frame::PAYLOAD_BYTES_MAX {
        return Err(too_long("event", payload, frame::PAYLOAD_BYTES_MAX as u64));
    }
    if h.content_type > 1 {
        return Err(Error::InvalidArgument(format!(
            "position {}: unknown content type {}",
            h.position, h.content_type
        )));
    }
    Ok(())
}

#[cfg(test)]
mod test;
