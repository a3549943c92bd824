//! Aggregate snapshots: the durable snapshot log and its in-memory directory.
//! (Being written: see issue 4.)

use std::path::Path;

use crate::config::Config;
use crate::error::Result;

pub(crate) struct SnapshotStore {}

impl SnapshotStore {
    pub(crate) fn open(_dir: &Path, _config: &Config) -> Result<SnapshotStore> {
        Ok(SnapshotStore {})
    }
}
