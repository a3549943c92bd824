//! Aggregate snapshots through the store: save, load, read a stream from its latest snapshot.
