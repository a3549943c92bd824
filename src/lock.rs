//! The data directory lock: one process at a time.
//!
//! An advisory `flock` on `LOCK`, held for as long as the store is open and released by the
//! kernel if the process dies. The holder writes its pid into the file so that a second opener
//! can say who holds it.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::Path;

use crate::error::{Error, Result};

pub const LOCK_FILE_NAME: &str = "LOCK";

pub struct DirLock {
    _file: File,
}

impl DirLock {
    pub fn acquire(dir: &Path) -> Result<DirLock> {
        let path = dir.join(LOCK_FILE_NAME);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        let mut attempts = 0;
        loop {
            match file.try_lock() {
                Ok(()) => break,
                Err(TryLockError::WouldBlock) => {}
                Err(TryLockError::Error(e)) => return Err(Error::io(&path, e)),
            }
            let mut pid = String::new();
            let _ = file.rewind();
            let _ = file.read_to_string(&mut pid);
            let pid = pid.trim();
            // Held under our own pid right after we released it: a child this process is
            // spawning (on another thread) still shares the descriptor until its exec closes
            // it. That lasts microseconds; anything longer is a real second opener.
            if pid == std::process::id().to_string() && attempts < 40 {
                attempts += 1;
                std::thread::sleep(std::time::Duration::from_millis(25));
                continue;
            }
            return Err(Error::Locked {
                dir: dir.to_path_buf(),
                pid: if pid.is_empty() {
                    "unknown".into()
                } else {
                    pid.into()
                },
            });
        }
        file.set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| writeln!(file, "{}", std::process::id()))
            .map_err(|e| Error::io(&path, e))?;
        Ok(DirLock { _file: file })
    }
}
