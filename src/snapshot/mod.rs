//! Aggregate snapshots: the durable snapshot log and its in-memory directory.
//!
//! A client stores the state of a stream at a revision (opaque bytes plus a schema tag) so that
//! it can later load it and read only the events after it. Snapshots live in one append-only
//! file, `<data dir>/snapshots/snapshots.log`, of CRC-framed records ([`record`]): a save, or a
//! delete of all of a stream's snapshots. Every save and delete appends one record and syncs it
//! before returning (unless the store runs with `FsyncPolicy::Never`).
//!
//! At open the file is scanned and an in-memory directory is built: stream → the newest
//! `snapshot_keep` snapshots by revision, each with the file offset and length of its record.
//! A load copies one directory entry under a short read lock, then reads the record with
//! `pread` and checks its CRC; it never waits for a save's fsync. Saves and deletes are
//! serialized by the writer mutex and publish to the directory only after the sync.
//!
//! Records that are no longer live (pruned, replaced, deleted) are dead bytes. When they exceed
//! both the live bytes and [`COMPACT_DEAD_BYTES_MIN`], the file is rewritten with only the live
//! records (temporary file, fsync, rename over, fsync of the directory), so a crash leaves
//! either the old file or the new one, each holding every live snapshot.

pub(crate) mod record;

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use memmap2::Mmap;
use parking_lot::{Mutex, RwLock};

use crate::config::{Config, FsyncPolicy};
use crate::error::{Error, Result};
use crate::types::Revision;
use record::{Decoded, FILE_HEADER_BYTES, Record, RecordError};

/// Directory of the snapshot log, under the data directory.
pub const SNAPSHOT_DIR_NAME: &str = "snapshots";
/// The snapshot log.
pub const SNAPSHOT_FILE_NAME: &str = "snapshots.log";
/// A compaction in progress writes here, then renames it over the log.
pub(crate) const COMPACT_FILE_NAME: &str = "snapshots.log.compact";
/// A new, empty log is prepared here, then renamed into place.
pub(crate) const CREATE_FILE_NAME: &str = "snapshots.log.new";
/// Dead bytes below this never trigger a compaction, however few the live ones.
pub const COMPACT_DEAD_BYTES_MIN: u64 = 1 << 20;

/// A stored snapshot of a stream's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub stream: String,
    /// The revision of the stream's last event folded into the state.
    pub revision: Revision,
    /// The client's tag for the encoding of `data` (e.g. `order.v2`).
    pub schema: String,
    /// The state, as the client gave it.
    pub data: Bytes,
    /// When the snapshot was saved, in microseconds since the Unix epoch.
    pub timestamp_us: u64,
}

/// Where a live snapshot's record lies in the current file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    revision: u64,
    offset: u64,
    /// Bytes of the whole record.
    len: u64,
}

/// What loads read: the current file and the live snapshots of every stream, each list sorted
/// by revision (oldest first) and at most `keep` long.
struct Directory {
    file: Arc<File>,
    streams: HashMap<String, Vec<Entry>>,
}

/// The writing end, behind the writer mutex.
struct Writer {
    file: Arc<File>,
    /// Where the next record goes: the file's length.
    end: u64,
    /// Bytes of the live records (those in the directory).
    live: u64,
    /// Set after a failed write or sync: the end of the file is unknown until reopened.
    poisoned: Option<String>,
}

impl Writer {
    fn dead(&self) -> u64 {
        self.end - FILE_HEADER_BYTES as u64 - self.live
    }
}

/// The snapshot log and its directory.
pub(crate) struct SnapshotStore {
    dir: PathBuf,
    path: PathBuf,
    keep: usize,
    sync: bool,
    directory: RwLock<Directory>,
    writer: Mutex<Writer>,
}

impl SnapshotStore {
    /// Opens (or creates) the snapshot log under `dir` (the data directory), checks every record,
    /// truncates a torn tail, and builds the directory. Damage elsewhere is `Error::Corruption`.
    pub(crate) fn open(dir: &Path, config: &Config) -> Result<SnapshotStore> {
        if config.snapshot_bytes_max > record::DATA_BYTES_MAX as u64 {
            return Err(Error::InvalidConfig(format!(
                "snapshot_bytes_max must be at most {}",
                record::DATA_BYTES_MAX
            )));
        }
        let keep = config.snapshot_keep.max(1);
        let snap_dir = dir.join(SNAPSHOT_DIR_NAME);
        if !snap_dir.is_dir() {
            fs::create_dir_all(&snap_dir).map_err(|e| Error::io(&snap_dir, e))?;
            sync_dir(dir)?;
        }
        let leftover = snap_dir.join(COMPACT_FILE_NAME);
        if leftover.exists() {
            // A compaction was cut short before its rename: the log itself is whole.
            fs::remove_file(&leftover).map_err(|e| Error::io(&leftover, e))?;
            sync_dir(&snap_dir)?;
        }
        let path = snap_dir.join(SNAPSHOT_FILE_NAME);
        if !path.exists() {
            create_empty(&snap_dir, &path)?;
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        let scan = scan(&path, &file, keep)?;
        if let Some(torn) = &scan.torn {
            tracing::warn!(
                file = %path.display(),
                found_at = scan.end,
                bytes = torn.file_len - scan.end,
                reason = torn.reason,
                "torn tail: dropping the incomplete snapshot record at the end of the snapshot log"
            );
            file.set_len(scan.end).map_err(|e| Error::io(&path, e))?;
            file.sync_all().map_err(|e| Error::io(&path, e))?;
        }
        let file = Arc::new(file);
        let scan_pruned_by_keep = scan.pruned_by_keep;
        let store = SnapshotStore {
            dir: snap_dir,
            path,
            keep,
            sync: config.fsync != FsyncPolicy::Never,
            directory: RwLock::new(Directory {
                file: Arc::clone(&file),
                streams: scan.streams,
            }),
            writer: Mutex::new(Writer {
                file,
                end: scan.end,
                live: scan.live,
                poisoned: None,
            }),
        };
        {
            let mut w = store.writer.lock();
            let (streams, snapshots) = {
                let d = store.directory.read();
                (
                    d.streams.len(),
                    d.streams.values().map(Vec::len).sum::<usize>(),
                )
            };
            tracing::info!(
                file = %store.path.display(),
                streams,
                snapshots,
                live_bytes = w.live,
                dead_bytes = w.dead(),
                "opened the snapshot log"
            );
            if scan_pruned_by_keep {
                // Make the smaller keep's pruning durable: the file keeps only what is live,
                // so a later open with a larger keep does not bring pruned snapshots back.
                store.compact_now(&mut w);
            } else {
                store.maybe_compact(&mut w);
            }
        }
        Ok(store)
    }

    /// Saves a snapshot durably. The caller has checked the stream, revision, schema and size.
    /// A snapshot at a revision that already has one replaces it; the oldest beyond `keep` are
    /// pruned. A snapshot older than all of a full stream's kept ones would be pruned at once,
    /// so nothing is written for it.
    pub(crate) fn save(
        &self,
        stream: &str,
        revision: u64,
        schema: &str,
        data: &[u8],
    ) -> Result<()> {
        let mut w = self.writer.lock();
        if let Some(cause) = &w.poisoned {
            return Err(Error::Poisoned {
                cause: cause.clone(),
            });
        }
        // The stream's lowest kept revision after this save, recorded in the save so that
        // replaying the log prunes exactly what was pruned now. `None`: the save would be
        // pruned at once (it is below all of a full stream's kept snapshots), so nothing is
        // written for it.
        let prune_below = {
            let d = self.directory.read();
            let mut list = d.streams.get(stream).cloned().unwrap_or_default();
            let probe = Entry {
                revision,
                offset: 0,
                len: 0,
            };
            apply_save(&mut list, probe, 0, self.keep);
            if !list.iter().any(|e| e.revision == revision) {
                return Ok(());
            }
            list.first().map_or(revision, |e| e.revision)
        };
        let mut buf =
            Vec::with_capacity(record::record_len(stream.len(), schema.len(), data.len()));
        record::encode_save(
            &mut buf,
            stream,
            revision,
            prune_below,
            schema,
            now_us(),
            data,
        );
        let offset = self.append(&mut w, &buf)?;
        let len = buf.len() as u64;
        let entry = Entry {
            revision,
            offset,
            len,
        };
        let freed = {
            let mut d = self.directory.write();
            let list = d.streams.entry(stream.to_owned()).or_default();
            apply_save(list, entry, prune_below, self.keep).freed
        };
        w.live = w.live + len - freed;
        self.maybe_compact(&mut w);
        Ok(())
    }

    /// The newest snapshot of `stream` at or below `at_or_below`, if any.
    pub(crate) fn load(&self, stream: &str, at_or_below: u64) -> Result<Option<Snapshot>> {
        let (file, entry) = {
            let d = self.directory.read();
            let Some(entry) = d
                .streams
                .get(stream)
                .and_then(|l| l.iter().rev().find(|e| e.revision <= at_or_below))
            else {
                return Ok(None);
            };
            (Arc::clone(&d.file), *entry)
        };
        self.read_entry(&file, stream, entry).map(Some)
    }

    /// Durably removes every snapshot of `stream`; returns how many there were.
    pub(crate) fn delete_stream(&self, stream: &str) -> Result<usize> {
        let mut w = self.writer.lock();
        if let Some(cause) = &w.poisoned {
            return Err(Error::Poisoned {
                cause: cause.clone(),
            });
        }
        if !self.directory.read().streams.contains_key(stream) {
            return Ok(0);
        }
        let mut buf = Vec::new();
        record::encode_delete(&mut buf, stream, now_us());
        self.append(&mut w, &buf)?;
        let removed = self.directory.write().streams.remove(stream);
        let removed = removed.unwrap_or_default();
        w.live -= removed.iter().map(|e| e.len).sum::<u64>();
        self.maybe_compact(&mut w);
        Ok(removed.len())
    }

    /// Writes `bytes` at the end of the log and syncs them; returns where they start. A failure
    /// poisons the writer: the file may now end in a partial record, which only the torn-tail
    /// rule of the next open may remove.
    fn append(&self, w: &mut Writer, bytes: &[u8]) -> Result<u64> {
        let offset = w.end;
        let written = w.file.write_all_at(bytes, offset).and_then(|()| {
            if self.sync {
                w.file.sync_data()
            } else {
                Ok(())
            }
        });
        if let Err(e) = written {
            let cause = format!("snapshot log write failed: {e}");
            tracing::error!(file = %self.path.display(), error = %e, "snapshot log write failed; no more snapshots are saved until the store is reopened");
            w.poisoned = Some(cause);
            return Err(Error::io(&self.path, e));
        }
        w.end += bytes.len() as u64;
        Ok(offset)
    }

    /// Reads and checks the record of `entry`, which must be a save of `stream` at its revision.
    fn read_entry(&self, file: &File, stream: &str, entry: Entry) -> Result<Snapshot> {
        let len = usize::try_from(entry.len)
            .map_err(|_| Error::corruption(&self.path, entry.offset, "record too large"))?;
        let mut buf = vec![0u8; len];
        file.read_exact_at(&mut buf, entry.offset)
            .map_err(|e| Error::io(&self.path, e))?;
        let bytes = Bytes::from(buf);
        let bad = |reason: String| Error::corruption(&self.path, entry.offset, reason);
        let (schema, timestamp_us, data) = match record::decode(&bytes) {
            Ok(Decoded::Record {
                record:
                    Record::Save {
                        stream: s,
                        revision,
                        schema,
                        timestamp_us,
                        data,
                        ..
                    },
                len: l,
            }) if s == stream && revision == entry.revision && l == len => {
                (schema.to_owned(), timestamp_us, data)
            }
            Ok(Decoded::Record { record, .. }) => {
                return Err(bad(format!(
                    "expected the snapshot of stream '{stream}' at revision {}, found {record:?}",
                    entry.revision
                )));
            }
            Ok(_) => return Err(bad("expected a snapshot record, found none".into())),
            Err(e) => return Err(bad(e.to_string())),
        };
        Ok(Snapshot {
            stream: stream.to_owned(),
            revision: Revision(entry.revision),
            schema,
            data: bytes.slice(data),
            timestamp_us,
        })
    }

    /// Compacts when the dead bytes exceed both the live bytes and the minimum. A failure is
    /// logged and leaves the old file in use; the next save tries again.
    fn maybe_compact(&self, w: &mut Writer) {
        if w.poisoned.is_some() {
            return;
        }
        let dead = w.dead();
        if dead <= w.live || dead <= COMPACT_DEAD_BYTES_MIN {
            return;
        }
        self.compact_now(w);
    }

    /// Compacts now; a failure is logged.
    fn compact_now(&self, w: &mut Writer) {
        if w.poisoned.is_some() {
            return;
        }
        let before = w.end;
        match self.compact(w) {
            Ok(()) => tracing::info!(
                file = %self.path.display(),
                bytes_before = before,
                bytes_after = w.end,
                "compacted the snapshot log"
            ),
            Err(e) => tracing::error!(
                file = %self.path.display(),
                error = %e,
                "compacting the snapshot log failed; the old file stays in use"
            ),
        }
    }

    /// Rewrites the log with only its live records. Called under the writer mutex, so the
    /// directory does not change meanwhile; loads go on reading the old file (their handle
    /// keeps it alive) until the new directory is published.
    fn compact(&self, w: &mut Writer) -> Result<()> {
        let (old_file, mut live): (Arc<File>, Vec<(String, Entry)>) = {
            let d = self.directory.read();
            let live = d
                .streams
                .iter()
                .flat_map(|(s, l)| l.iter().map(move |e| (s.clone(), *e)))
                .collect();
            (Arc::clone(&d.file), live)
        };
        // Keep the log order of the survivors.
        live.sort_by_key(|(_, e)| e.offset);
        let tmp = self.dir.join(COMPACT_FILE_NAME);
        let written = self.write_compacted(&tmp, &old_file, &mut live);
        let (new_file, end) = match written {
            Ok(v) => v,
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                return Err(e);
            }
        };
        fs::rename(&tmp, &self.path).map_err(|e| {
            let _ = fs::remove_file(&tmp);
            Error::io(&self.path, e)
        })?;
        // From here the new file is the log: later records must go to it.
        let new_file = Arc::new(new_file);
        let mut streams: HashMap<String, Vec<Entry>> = HashMap::new();
        for (stream, entry) in live {
            streams.entry(stream).or_default().push(entry);
        }
        for list in streams.values_mut() {
            list.sort_by_key(|e| e.revision);
        }
        {
            let mut d = self.directory.write();
            d.file = Arc::clone(&new_file);
            d.streams = streams;
        }
        w.file = new_file;
        w.end = end;
        if let Err(e) = sync_dir(&self.dir) {
            // Whether the rename is durable is unknown; a later save could be lost with it.
            w.poisoned = Some(format!("snapshot directory sync failed: {e}"));
            return Err(e);
        }
        Ok(())
    }

    /// Writes the header and the records of `live` (updating their offsets) into a new file at
    /// `tmp`, checking each record's CRC on the way, and syncs it. Returns the file, open for
    /// reading and writing, and its length.
    fn write_compacted(
        &self,
        tmp: &Path,
        old: &File,
        live: &mut [(String, Entry)],
    ) -> Result<(File, u64)> {
        let io = |e| Error::io(tmp, e);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(tmp)
            .map_err(io)?;
        let mut out = BufWriter::with_capacity(1 << 20, &file);
        out.write_all(&record::encode_file_header()).map_err(io)?;
        let mut end = FILE_HEADER_BYTES as u64;
        let mut buf = Vec::new();
        for (stream, entry) in live.iter_mut() {
            let len = usize::try_from(entry.len)
                .map_err(|_| Error::corruption(&self.path, entry.offset, "record too large"))?;
            buf.resize(len, 0);
            old.read_exact_at(&mut buf, entry.offset)
                .map_err(|e| Error::io(&self.path, e))?;
            match record::decode(&buf) {
                Ok(Decoded::Record {
                    record:
                        Record::Save {
                            stream: s,
                            revision,
                            ..
                        },
                    len: l,
                }) if s == stream.as_str() && revision == entry.revision && l == len => {}
                Ok(_) => {
                    return Err(Error::corruption(
                        &self.path,
                        entry.offset,
                        format!(
                            "expected the snapshot of stream '{stream}' at revision {}",
                            entry.revision
                        ),
                    ));
                }
                Err(e) => return Err(Error::corruption(&self.path, entry.offset, e.to_string())),
            }
            out.write_all(&buf).map_err(io)?;
            entry.offset = end;
            end += entry.len;
        }
        out.flush().map_err(io)?;
        drop(out);
        file.sync_all().map_err(io)?;
        Ok((file, end))
    }
}

/// Adds `entry` to a stream's list (sorted by revision), replacing one at the same revision,
/// then prunes the snapshots below `prune_below` and the oldest beyond `keep`.
fn apply_save(list: &mut Vec<Entry>, entry: Entry, prune_below: u64, keep: usize) -> Applied {
    let mut freed = 0;
    match list.binary_search_by_key(&entry.revision, |e| e.revision) {
        Ok(i) => {
            if let Some(slot) = list.get_mut(i) {
                freed += slot.len;
                *slot = entry;
            }
        }
        Err(i) => list.insert(i, entry),
    }
    let below = list.partition_point(|e| e.revision < prune_below);
    let over_keep = list.len().saturating_sub(keep);
    freed += list
        .drain(..below.max(over_keep))
        .map(|e| e.len)
        .sum::<u64>();
    Applied {
        freed,
        pruned_by_keep: over_keep > below,
    }
}

struct Applied {
    /// Bytes of the records that stopped being live.
    freed: u64,
    /// The keep count pruned more than the record itself says: only when replaying a log
    /// written with a larger `snapshot_keep`.
    pruned_by_keep: bool,
}

/// What scanning the log found.
struct Scan {
    streams: HashMap<String, Vec<Entry>>,
    live: u64,
    /// Just past the last whole record: where the next record goes.
    end: u64,
    torn: Option<Torn>,
    /// A smaller `snapshot_keep` than the log was written with pruned snapshots at open.
    pruned_by_keep: bool,
}

struct Torn {
    file_len: u64,
    reason: &'static str,
}

/// Checks the header and every record of the log, replaying saves and deletes into a directory
/// that keeps the newest `keep` snapshots per stream.
///
/// Every record is synced before the next one is written, so only the last record can be
/// torn by a crash. An unreadable record is therefore a torn tail when no whole record follows
/// it, and damage (`Error::Corruption` naming the file and offset) when one does. A record whose
/// checksum matches but whose fields do not make sense is damage wherever it is.
fn scan(path: &Path, file: &File, keep: usize) -> Result<Scan> {
    let file_len = file.metadata().map_err(|e| Error::io(path, e))?.len();
    if file_len < FILE_HEADER_BYTES as u64 {
        return Err(Error::corruption(
            path,
            0,
            format!("file is {file_len} bytes, shorter than the snapshot log header"),
        ));
    }
    // SAFETY: the data directory is locked by this process, and nothing writes the file while
    // it is scanned; the mapping is dropped before the file is truncated or written.
    let map = unsafe { Mmap::map(file) }.map_err(|e| Error::io(path, e))?;
    let bytes: &[u8] = &map;
    record::check_file_header(bytes).map_err(|r| Error::corruption(path, 0, r))?;
    let mut streams: HashMap<String, Vec<Entry>> = HashMap::new();
    let mut live = 0u64;
    let mut pruned_by_keep = false;
    let mut offset = FILE_HEADER_BYTES;
    let anomaly: &'static str = loop {
        let rest = bytes.get(offset..).unwrap_or_default();
        let (record, len) = match record::decode(rest) {
            Ok(Decoded::Record { record, len }) => (record, len),
            Ok(Decoded::End) => {
                return Ok(Scan {
                    streams,
                    live,
                    end: offset as u64,
                    torn: None,
                    pruned_by_keep,
                });
            }
            Ok(Decoded::Incomplete) => break "record runs past the end of the file",
            Err(RecordError::BadLength(_)) => break "record length out of range",
            Err(RecordError::Checksum { .. }) => break "record checksum mismatch",
            Err(e @ RecordError::Inconsistent(_)) => {
                return Err(Error::corruption(path, offset as u64, e.to_string()));
            }
        };
        match record {
            Record::Save {
                stream,
                revision,
                prune_below,
                ..
            } => {
                let entry = Entry {
                    revision,
                    offset: offset as u64,
                    len: len as u64,
                };
                let list = match streams.get_mut(stream) {
                    Some(list) => list,
                    None => streams.entry(stream.to_owned()).or_default(),
                };
                let applied = apply_save(list, entry, prune_below, keep);
                live = live + entry.len - applied.freed;
                pruned_by_keep |= applied.pruned_by_keep;
            }
            Record::DeleteStream { stream, .. } => {
                if let Some(list) = streams.remove(stream) {
                    live -= list.iter().map(|e| e.len).sum::<u64>();
                }
            }
        }
        offset += len;
    };
    if let Some(at) = whole_record_after(bytes, offset) {
        return Err(Error::corruption(
            path,
            offset as u64,
            format!(
                "{anomaly}, but a whole record follows at byte offset {at}, so this is damage, \
                 not a torn write"
            ),
        ));
    }
    drop(map);
    Ok(Scan {
        streams,
        live,
        end: offset as u64,
        torn: Some(Torn {
            file_len,
            reason: anomaly,
        }),
        pruned_by_keep,
    })
}

/// The offset of the first whole, valid record that starts after `from`, if any.
fn whole_record_after(bytes: &[u8], from: usize) -> Option<usize> {
    (from + 1..bytes.len()).find(|&at| {
        let rest = bytes.get(at..).unwrap_or_default();
        record::plausible_start(rest) && matches!(record::decode(rest), Ok(Decoded::Record { .. }))
    })
}

/// Creates an empty log (just the header) at `path`: written and synced under another name,
/// then renamed into place and the directory synced, so the log never exists half-written.
fn create_empty(dir: &Path, path: &Path) -> Result<()> {
    let tmp = dir.join(CREATE_FILE_NAME);
    let io = |e| Error::io(&tmp, e);
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)
        .map_err(io)?;
    file.write_all(&record::encode_file_header()).map_err(io)?;
    file.sync_all().map_err(io)?;
    fs::rename(&tmp, path).map_err(|e| Error::io(path, e))?;
    sync_dir(dir)
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(dir, e))
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod test;

/// What [`check_log`] found in a snapshot log.
pub(crate) struct LogCheck {
    /// Live snapshots, and the streams they belong to.
    pub snapshots: u64,
    pub streams: u64,
    /// Bytes of the file.
    pub file_len: u64,
    /// Set when the file ends in a torn record: where it starts, and why it is not whole.
    pub torn: Option<(u64, &'static str)>,
}

/// Checks the snapshot log at `path` by the rules of an open (every record's CRC and fields; a
/// torn tail or damage), without changing the file. Damage is `Error::Corruption`.
pub(crate) fn check_log(path: &Path) -> Result<LogCheck> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let scan = scan(path, &file, usize::MAX)?;
    let file_len = file.metadata().map_err(|e| Error::io(path, e))?.len();
    Ok(LogCheck {
        snapshots: scan.streams.values().map(|l| l.len() as u64).sum(),
        streams: scan.streams.len() as u64,
        file_len,
        torn: scan.torn.map(|t| (scan.end, t.reason)),
    })
}
