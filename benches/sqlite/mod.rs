//! The same workloads against SQLite (bundled, via rusqlite), as the baseline.
//!
//! Setup: `journal_mode=WAL`, `synchronous=FULL` (the WAL is fsynced at every commit, so a
//! commit is durable when it returns, like `FsyncPolicy::Always`), default page size (4 KiB)
//! and automatic checkpoints. Reads use `mmap_size` = 4 GiB (capped by SQLite's compile-time
//! maximum) and a 64 MiB page cache, so that they too read the OS page cache without a system
//! call per page, as statestore does through its memory-mapped segments.
//!
//! ```sql
//! CREATE TABLE events(position INTEGER PRIMARY KEY, stream TEXT, revision INTEGER, type TEXT,
//!                     id BLOB, data BLOB, metadata BLOB);
//! CREATE UNIQUE INDEX events_stream ON events(stream, revision);
//! CREATE INDEX events_type ON events(type, position);
//! ```
//!
//! An append is `BEGIN IMMEDIATE; SELECT MAX(revision) ... WHERE stream = ?` (the
//! expected-revision check), one `INSERT` per event, `COMMIT`. Statements are prepared once
//! and cached. Reads copy each row out into owned values.
//!
//! 64 writer threads: [`Sqlite`] shares one connection behind a mutex (commits are serial, one
//! WAL fsync each: SQLite has no group commit). [`SqlitePerThread`] (optional, see
//! `BENCH_SQLITE_PER_THREAD`) gives each thread its own connection with a busy timeout; writers
//! still serialize on the WAL write lock, and waiters sleep in SQLite's busy handler.

use std::path::Path;
use std::sync::Mutex;
use std::time::Instant;

use rusqlite::{Connection, TransactionBehavior, params};
use tempfile::TempDir;

use super::{Dataset, Engine, Ev, temp_dir};

const SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS events(
        position INTEGER PRIMARY KEY,
        stream TEXT NOT NULL,
        revision INTEGER NOT NULL,
        type TEXT NOT NULL,
        id BLOB NOT NULL,
        data BLOB NOT NULL,
        metadata BLOB NOT NULL
    );
    CREATE UNIQUE INDEX IF NOT EXISTS events_stream ON events(stream, revision);
    CREATE INDEX IF NOT EXISTS events_type ON events(type, position);
";

fn connect(path: &Path) -> Connection {
    let conn = Connection::open(path).expect("open sqlite");
    conn.pragma_update(None, "journal_mode", "WAL")
        .expect("WAL");
    conn.pragma_update(None, "synchronous", "FULL")
        .expect("synchronous=FULL");
    conn.pragma_update(None, "mmap_size", 4i64 << 30)
        .expect("mmap_size");
    conn.pragma_update(None, "cache_size", -65_536i64)
        .expect("cache_size");
    conn.busy_timeout(std::time::Duration::from_secs(30))
        .expect("busy_timeout");
    conn
}

/// A row as read back, copied out of SQLite.
#[allow(dead_code)]
struct Row {
    position: i64,
    stream: String,
    revision: i64,
    ty: String,
    id: Vec<u8>,
    data: Vec<u8>,
    metadata: Vec<u8>,
}

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Row> {
    Ok(Row {
        position: r.get(0)?,
        stream: r.get(1)?,
        revision: r.get(2)?,
        ty: r.get(3)?,
        id: r.get(4)?,
        data: r.get(5)?,
        metadata: r.get(6)?,
    })
}

const COLUMNS: &str = "position, stream, revision, type, id, data, metadata";

fn append_on(conn: &mut Connection, stream: &str, expected: Option<u64>, events: &[Ev]) -> u64 {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .expect("begin");
    let current: Option<i64> = tx
        .prepare_cached("SELECT MAX(revision) FROM events WHERE stream = ?1")
        .expect("prepare")
        .query_row([stream], |r| r.get(0))
        .expect("current revision");
    assert_eq!(
        current.map(|r| r as u64),
        expected,
        "wrong expected revision for {stream}"
    );
    let first = expected.map_or(0, |r| r + 1);
    {
        let mut insert = tx
            .prepare_cached(
                "INSERT INTO events(stream, revision, type, id, data, metadata) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )
            .expect("prepare");
        for (k, e) in events.iter().enumerate() {
            let id = uuid::Uuid::new_v4();
            insert
                .execute(params![
                    stream,
                    (first + k as u64) as i64,
                    e.ty,
                    &id.as_bytes()[..],
                    &e.data[..],
                    &[][..] as &[u8],
                ])
                .expect("insert");
        }
    }
    tx.commit().expect("commit");
    first + events.len() as u64 - 1
}

/// One connection, guarded by a mutex.
pub struct Sqlite {
    conn: Mutex<Connection>,
    _dir: TempDir,
}

impl Sqlite {
    pub fn durable() -> Sqlite {
        let dir = temp_dir("sqlite");
        let conn = connect(&dir.path().join("events.db"));
        conn.execute_batch(SCHEMA).expect("schema");
        Sqlite {
            conn: Mutex::new(conn),
            _dir: dir,
        }
    }

    /// A database filled with `d`, loaded with `synchronous=OFF` in transactions of 100,000
    /// rows, then checkpointed; reads run with the durable settings.
    pub fn build(d: Dataset) -> Sqlite {
        let started = Instant::now();
        let dir = temp_dir("sqlite-read");
        let path = dir.path().join("events.db");
        let mut conn = connect(&path);
        conn.pragma_update(None, "synchronous", "OFF")
            .expect("synchronous=OFF");
        conn.execute_batch(SCHEMA).expect("schema");
        let data = super::payload(d.size);
        let types: Vec<String> = (0..d.types).map(Dataset::type_name).collect();
        let streams: Vec<String> = (0..d.streams).map(Dataset::stream_name).collect();
        const BATCH: u64 = 100_000;
        let mut k = 0;
        while k < d.events {
            let end = (k + BATCH).min(d.events);
            let tx = conn.transaction().expect("begin");
            {
                let mut insert = tx
                    .prepare_cached(
                        "INSERT INTO events(position, stream, revision, type, id, data, metadata) \
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                    )
                    .expect("prepare");
                for k in k..end {
                    let (s, t) = d.event(k);
                    let id =
                        uuid::Uuid::from_u128(u128::from(super::splitmix(k)) << 64 | u128::from(k));
                    insert
                        .execute(params![
                            (k + 1) as i64,
                            streams[s as usize],
                            (k / d.streams) as i64,
                            types[t as usize],
                            &id.as_bytes()[..],
                            &data[..],
                            &[][..] as &[u8],
                        ])
                        .expect("insert");
                }
            }
            tx.commit().expect("commit");
            k = end;
        }
        conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE); ANALYZE;")
            .expect("checkpoint");
        drop(conn);
        let conn = connect(&path);
        eprintln!(
            "built sqlite dataset {d:?} in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        Sqlite {
            conn: Mutex::new(conn),
            _dir: dir,
        }
    }
}

impl Engine for Sqlite {
    fn append(&self, stream: &str, expected: Option<u64>, events: &[Ev]) -> u64 {
        append_on(&mut self.conn.lock().unwrap(), stream, expected, events)
    }

    fn read_all_page(&self, after: u64, max: usize) -> (usize, u64, bool) {
        let conn = self.conn.lock().unwrap();
        let mut stmt = conn
            .prepare_cached(&format!(
                "SELECT {COLUMNS} FROM events WHERE position > ?1 ORDER BY position LIMIT ?2"
            ))
            .expect("prepare");
        let rows: Vec<Row> = stmt
            .query_map(params![after as i64, max as i64], row)
            .expect("query")
            .collect::<rusqlite::Result<_>>()
            .expect("rows");
        let last = rows.last().map_or(after, |r| r.position as u64);
        std::hint::black_box(rows.iter().map(|r| r.data.len()).sum::<usize>());
        (rows.len(), last, rows.len() < max)
    }

    fn read_stream(&self, stream: &str, max: usize) -> usize {
        let conn = self.conn.lock().unwrap();
        let mut stmt = conn
            .prepare_cached(&format!(
                "SELECT {COLUMNS} FROM events WHERE stream = ?1 AND revision >= ?2 \
                 ORDER BY revision LIMIT ?3"
            ))
            .expect("prepare");
        let rows: Vec<Row> = stmt
            .query_map(params![stream, 0i64, max as i64], row)
            .expect("query")
            .collect::<rusqlite::Result<_>>()
            .expect("rows");
        std::hint::black_box(rows.iter().map(|r| r.data.len()).sum::<usize>());
        rows.len()
    }

    fn read_by_type(&self, ty: &str, from: u64, max: usize) -> usize {
        let conn = self.conn.lock().unwrap();
        let mut stmt = conn
            .prepare_cached(&format!(
                "SELECT {COLUMNS} FROM events WHERE type = ?1 AND position >= ?2 \
                 ORDER BY position LIMIT ?3"
            ))
            .expect("prepare");
        let rows: Vec<Row> = stmt
            .query_map(params![ty, from as i64, max as i64], row)
            .expect("query")
            .collect::<rusqlite::Result<_>>()
            .expect("rows");
        std::hint::black_box(rows.iter().map(|r| r.data.len()).sum::<usize>());
        rows.len()
    }
}

/// A connection per writer thread (64-thread appends only).
pub struct SqlitePerThread {
    path: std::path::PathBuf,
    _dir: TempDir,
}

thread_local! {
    static CONN: std::cell::RefCell<Option<(std::path::PathBuf, Connection)>> =
        const { std::cell::RefCell::new(None) };
}

impl SqlitePerThread {
    pub fn durable() -> SqlitePerThread {
        let dir = temp_dir("sqlite-mt");
        let path = dir.path().join("events.db");
        connect(&path).execute_batch(SCHEMA).expect("schema");
        SqlitePerThread { path, _dir: dir }
    }
}

impl Engine for SqlitePerThread {
    fn append(&self, stream: &str, expected: Option<u64>, events: &[Ev]) -> u64 {
        CONN.with(|cell| {
            let mut slot = cell.borrow_mut();
            if slot.as_ref().is_none_or(|(p, _)| *p != self.path) {
                *slot = Some((self.path.clone(), connect(&self.path)));
            }
            let (_, conn) = slot.as_mut().expect("connection");
            append_on(conn, stream, expected, events)
        })
    }

    fn read_all_page(&self, _: u64, _: usize) -> (usize, u64, bool) {
        unimplemented!("append-only variant")
    }

    fn read_stream(&self, _: &str, _: usize) -> usize {
        unimplemented!("append-only variant")
    }

    fn read_by_type(&self, _: &str, _: u64, _: usize) -> usize {
        unimplemented!("append-only variant")
    }
}
