//! The indexes: position -> location, stream -> revisions -> positions, event type -> positions,
//! event id -> positions. Derived from the log; persisted as checkpoints so that opening a store
//! replays only the log after the newest one.
//!
//! The index is a stack of layers over consecutive position ranges, oldest first:
//!
//! - **runs** ([`run::Run`]): immutable, memory-mapped files written by checkpoints and merges,
//!   covering positions `first..=runs_end` without gap or overlap (`first` is the log's first
//!   position: 1 unless the log was written starting after a gap);
//! - the **frozen** memtable: the events of a checkpoint being written, still answered from
//!   memory until its run replaces it;
//! - the **active** memtable: every event since, where the writer inserts.
//!
//! A lookup asks the layers and joins their answers; a stream's revisions continue from one
//! layer to the next. Freezing the active memtable and installing a run are O(1) swaps under
//! the store's index lock, so writers never wait for a checkpoint and readers always see one
//! consistent stack.
//!
//! Architecture invariant: the index may hold entries past the visible position (the writer
//! inserts a commit before its fdatasync returns); every read method takes the visible position
//! and never returns anything past it. Runs hold only positions that were visible when written.
//!
//! **Holes.** A log rewritten without some events (compaction) keeps the positions of the
//! others, so positions have gaps. The position → location array stays dense: a removed
//! position is a hole, the location [`HOLE`] (offset 0 of segment 0, inside a segment header,
//! where no frame can be). [`Index::skip_to`] announces a gap; the holes are added only when the
//! next event is inserted, so every layer ends with an event (a run's fingerprint names a real
//! frame). Lookups by position answer nothing for a hole; [`Index::next_event`] and
//! [`Index::prev_event`] step over them. A stream may begin at a revision above 0 (its first
//! events were removed); its later revisions still follow one another.

pub mod run;

use std::collections::hash_map::Entry;

/// Keys come from clients (stream names, types, ids), so the hasher is seeded per process;
/// foldhash is several times faster than the standard SipHash on these short keys.
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::quality::RandomState>;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::log::Location;
use crate::types::Direction;
use run::{Fingerprint, Posting, Run, RunContents, Table};

/// The location of a hole: a position the log does not hold (removed by a rewrite, or before
/// a gap the log was written with). Offset 0 is inside a segment header, so no frame has it;
/// packed, it is 0.
pub const HOLE: Location = Location {
    segment: 0,
    offset: 0,
};

/// The in-memory layer: events from `first_position` on, in hash maps and vectors.
pub struct Memtable {
    first_position: u64,
    /// The location of position `p` is at `locations[p - first_position]`; [`HOLE`] for a
    /// position the log does not hold.
    locations: Vec<Location>,
    /// How many of `locations` are holes.
    holes: u64,
    streams: HashMap<Arc<str>, StreamEntry>,
    types: HashMap<Arc<str>, Vec<u64>>,
    /// Event id -> position of the first event with that id in this layer.
    ids: HashMap<u128, u64>,
    /// Event id -> positions of later events with the same id. Ids are unique within a stream,
    /// so this holds only ids reused across streams: rare, and kept apart so that the common
    /// case costs one map entry per event.
    id_repeats: HashMap<u128, Vec<u64>>,
}

struct StreamEntry {
    /// Revision of `positions[0]`: the stream's revisions continue from older layers.
    first_revision: u64,
    /// Increasing positions of consecutive revisions.
    positions: Vec<u64>,
}

impl Memtable {
    fn starting_at(first_position: u64) -> Memtable {
        Memtable {
            first_position,
            locations: Vec::new(),
            holes: 0,
            streams: HashMap::default(),
            types: HashMap::default(),
            ids: HashMap::default(),
            id_repeats: HashMap::default(),
        }
    }

    pub fn first_position(&self) -> u64 {
        self.first_position
    }

    /// The last position held, or `first_position - 1` when empty.
    pub fn last_position(&self) -> u64 {
        self.first_position + self.locations.len() as u64 - 1
    }

    /// Events held (holes not counted).
    pub fn len(&self) -> u64 {
        self.locations.len() as u64 - self.holes
    }

    /// Whether the layer holds no position at all.
    pub fn is_empty(&self) -> bool {
        self.locations.is_empty()
    }

    /// Whether `position` is in the layer's range (an event or a hole).
    fn contains(&self, position: u64) -> bool {
        position >= self.first_position && position <= self.last_position()
    }

    /// The location of the event at `position`; `None` for a hole or a position outside.
    pub fn location(&self, position: u64) -> Option<Location> {
        let i = usize::try_from(position.checked_sub(self.first_position)?).ok()?;
        self.locations.get(i).copied().filter(|&l| l != HOLE)
    }

    /// The first (forwards) or last (backwards) event at a position in `from..=to`.
    fn find_event(&self, from: u64, to: u64, direction: Direction) -> Option<(u64, Location)> {
        let from = from.max(self.first_position);
        let to = to.min(self.last_position());
        if from > to {
            return None;
        }
        let i = usize::try_from(from - self.first_position).ok()?;
        let j = usize::try_from(to - self.first_position).ok()?;
        let slice = self.locations.get(i..=j)?;
        let at = |k: usize| (from + k as u64, slice.get(k).copied().unwrap_or(HOLE));
        let found = match direction {
            Direction::Forwards => slice.iter().position(|&l| l != HOLE),
            Direction::Backwards => slice.iter().rposition(|&l| l != HOLE),
        };
        found.map(at)
    }

    /// The first revision and positions of `name` in this layer (types start at 0).
    fn list(&self, table: Table, name: &str) -> Option<(u64, &[u64])> {
        match table {
            Table::Streams => self
                .streams
                .get(name)
                .map(|s| (s.first_revision, s.positions.as_slice())),
            Table::Types => self.types.get(name).map(|t| (0, t.as_slice())),
        }
    }

    fn positions_of_id(&self, id: u128) -> Vec<u64> {
        let mut out: Vec<u64> = self.ids.get(&id).copied().into_iter().collect();
        if let Some(r) = self.id_repeats.get(&id) {
            out.extend_from_slice(r);
        }
        out
    }

    /// The layer's contents as a run: names and ids sorted.
    fn contents(&self) -> RunContents<'_> {
        let mut streams: Vec<(&Arc<str>, &StreamEntry)> = self.streams.iter().collect();
        streams.sort_unstable_by(|a, b| a.0.cmp(b.0));
        let mut types: Vec<(&Arc<str>, &Vec<u64>)> = self.types.iter().collect();
        types.sort_unstable_by(|a, b| a.0.cmp(b.0));
        let mut ids: Vec<(u128, u64)> = self.ids.iter().map(|(&i, &p)| (i, p)).collect();
        for (&id, ps) in &self.id_repeats {
            ids.extend(ps.iter().map(|&p| (id, p)));
        }
        ids.sort_unstable();
        RunContents {
            first_position: self.first_position,
            last_position: self.last_position(),
            streams_total: 0,
            types_total: 0,
            fingerprint: Fingerprint {
                location: self.locations.last().copied().unwrap_or(Location {
                    segment: 0,
                    offset: 0,
                }),
                frame_crc: 0,
            },
            locations: Box::new(self.locations.iter().map(|&l| Ok(run::pack_location(l)))),
            streams: Box::new(streams.into_iter().map(|(name, s)| {
                Ok(Posting {
                    name: name.as_ref().into(),
                    first_revision: s.first_revision,
                    positions: s.positions.clone(),
                })
            })),
            types: Box::new(types.into_iter().map(|(name, ps)| {
                Ok(Posting {
                    name: name.as_ref().into(),
                    first_revision: 0,
                    positions: ps.clone(),
                })
            })),
            ids: Box::new(ids.into_iter().map(Ok)),
        }
    }
}

/// A stream's (or type's) events within one layer.
#[derive(Debug, Clone, Copy)]
struct Extent {
    first_revision: u64,
    /// Events in the layer (visible ones only, for a memtable).
    count: u64,
    /// Index of the first posting in a run's postings section; 0 for a memtable.
    base: u64,
}

#[derive(Clone, Copy)]
enum Layer<'a> {
    Mem(&'a Memtable),
    Run(&'a Run),
}

impl<'a> Layer<'a> {
    fn first_position(&self) -> u64 {
        match self {
            Layer::Mem(m) => m.first_position,
            Layer::Run(r) => r.first_position(),
        }
    }

    fn last_position(&self) -> u64 {
        match self {
            Layer::Mem(m) => m.last_position(),
            Layer::Run(r) => r.last_position(),
        }
    }

    fn extent(&self, table: Table, name: &str, visible: u64) -> Result<Option<Extent>> {
        Ok(match self {
            Layer::Mem(m) => {
                let Some((first_revision, positions)) = m.list(table, name) else {
                    return Ok(None);
                };
                let count = visible_len(positions, visible) as u64;
                (count > 0).then_some(Extent {
                    first_revision,
                    count,
                    base: 0,
                })
            }
            Layer::Run(r) => r
                .find(table, name)?
                .map(|(first_revision, start, end)| Extent {
                    first_revision,
                    count: end - start,
                    base: start,
                }),
        })
    }

    /// Postings `from..to` (relative to the extent) of `name`.
    fn postings(
        &self,
        table: Table,
        name: &str,
        e: Extent,
        from: u64,
        to: u64,
    ) -> Result<Vec<u64>> {
        let to = to.min(e.count);
        if from >= to {
            return Ok(Vec::new());
        }
        match self {
            Layer::Mem(m) => {
                let list = m.list(table, name).map(|(_, l)| l);
                Ok(list
                    .unwrap_or_default()
                    .get(from as usize..to as usize)
                    .unwrap_or_default()
                    .to_vec())
            }
            Layer::Run(r) => r.postings(table, e.base + from, e.base + to),
        }
    }

    /// How many postings of the extent are below `position`.
    fn partition(&self, table: Table, name: &str, e: Extent, position: u64) -> Result<u64> {
        match self {
            Layer::Mem(m) => {
                let list = m
                    .list(table, name)
                    .map(|(_, l)| l)
                    .unwrap_or_default()
                    .get(..e.count as usize)
                    .unwrap_or_default();
                Ok(list.partition_point(|&p| p < position) as u64)
            }
            Layer::Run(r) => {
                Ok(r.posting_partition(table, e.base, e.base + e.count, position)? - e.base)
            }
        }
    }

    fn location(&self, position: u64) -> Result<Option<Location>> {
        match self {
            Layer::Mem(m) => Ok(m.location(position)),
            Layer::Run(r) => r.location(position),
        }
    }

    fn find_event(
        &self,
        from: u64,
        to: u64,
        direction: Direction,
    ) -> Result<Option<(u64, Location)>> {
        match self {
            Layer::Mem(m) => Ok(m.find_event(from, to, direction)),
            Layer::Run(r) => r.find_event(from, to, direction),
        }
    }

    fn positions_of_id(&self, id: u128) -> Result<Vec<u64>> {
        match self {
            Layer::Mem(m) => Ok(m.positions_of_id(id)),
            Layer::Run(r) => r.positions_of_id(id),
        }
    }

    fn contents(&self) -> RunContents<'a> {
        match *self {
            Layer::Mem(m) => m.contents(),
            Layer::Run(r) => RunContents {
                first_position: r.first_position(),
                last_position: r.last_position(),
                streams_total: r.trailer().streams_total,
                types_total: r.trailer().types_total,
                fingerprint: r.trailer().fingerprint,
                locations: Box::new(r.iter_locations()),
                streams: Box::new(r.iter_postings(Table::Streams)),
                types: Box::new(r.iter_postings(Table::Types)),
                ids: Box::new(r.iter_ids()),
            },
        }
    }
}

/// The contents of consecutive layers (oldest first) as one run.
fn merged_contents<'a>(layers: &[Layer<'a>]) -> Option<RunContents<'a>> {
    let mut parts: Vec<RunContents<'a>> = layers.iter().map(Layer::contents).collect();
    let last = parts.last()?;
    let (last_position, streams_total, types_total, fingerprint) = (
        last.last_position,
        last.streams_total,
        last.types_total,
        last.fingerprint,
    );
    let first_position = parts.first()?.first_position;
    if parts.len() == 1 {
        return parts.pop();
    }
    let mut locations = Vec::new();
    let mut streams = Vec::new();
    let mut types = Vec::new();
    let mut ids = Vec::new();
    for p in parts {
        locations.push(p.locations);
        streams.push(p.streams);
        types.push(p.types);
        ids.push(p.ids);
    }
    Some(RunContents {
        first_position,
        last_position,
        streams_total,
        types_total,
        fingerprint,
        locations: Box::new(locations.into_iter().flatten()),
        streams: Box::new(run::merge_postings(streams)),
        types: Box::new(run::merge_postings(types)),
        ids: Box::new(run::merge_ids(ids)),
    })
}

/// The whole index: runs, then the frozen memtable, then the active one.
pub struct Index {
    /// The first position covered: the log's first position.
    first_position: u64,
    /// Set by [`Index::skip_to`]: the position the next insert must have, when it is past the
    /// active memtable's end (the positions in between become holes at that insert).
    skip_to: u64,
    runs: Vec<Arc<Run>>,
    frozen: Option<Arc<Memtable>>,
    active: Memtable,
    streams_total: u64,
    types_total: u64,
    /// The totals at the end of the frozen memtable.
    frozen_totals: (u64, u64),
}

impl Default for Index {
    fn default() -> Index {
        Index {
            first_position: 1,
            skip_to: 0,
            runs: Vec::new(),
            frozen: None,
            active: Memtable::starting_at(1),
            streams_total: 0,
            types_total: 0,
            frozen_totals: (0, 0),
        }
    }
}

/// One event's entry, as passed to [`Index::insert`].
pub struct IndexEntry<'a> {
    pub position: u64,
    pub location: Location,
    pub stream: &'a str,
    pub event_type: &'a str,
    pub revision: u64,
    pub id: u128,
}

impl Index {
    /// An index of the log starting at `first_position` (1 unless the log starts after a gap)
    /// over `runs`, which must cover positions `first_position..=n` in order without gap.
    pub fn from_runs(runs: Vec<Arc<Run>>, first_position: u64) -> Result<Index> {
        if first_position == 0 {
            return Err(Error::InvalidArgument(
                "an index starts at position 1 or later".into(),
            ));
        }
        let mut next = first_position;
        for r in &runs {
            if r.first_position() != next {
                return Err(Error::corruption(
                    r.path(),
                    0,
                    format!(
                        "index run starts at {}, expected {next}",
                        r.first_position()
                    ),
                ));
            }
            next = r.last_position() + 1;
        }
        let (streams_total, types_total) = runs.last().map_or((0, 0), |r| {
            (r.trailer().streams_total, r.trailer().types_total)
        });
        Ok(Index {
            first_position,
            skip_to: 0,
            runs,
            frozen: None,
            active: Memtable::starting_at(next),
            streams_total,
            types_total,
            frozen_totals: (0, 0),
        })
    }

    /// Newest layer first.
    fn layers(&self) -> impl Iterator<Item = Layer<'_>> {
        std::iter::once(Layer::Mem(&self.active))
            .chain(self.frozen.as_deref().map(Layer::Mem))
            .chain(self.runs.iter().rev().map(|r| Layer::Run(r)))
    }

    /// Oldest layer first.
    fn layers_ascending(&self) -> impl Iterator<Item = Layer<'_>> {
        self.runs
            .iter()
            .map(|r| Layer::Run(r))
            .chain(self.frozen.as_deref().map(Layer::Mem))
            .chain(std::iter::once(Layer::Mem(&self.active)))
    }

    fn layer_of(&self, position: u64) -> Option<Layer<'_>> {
        if position >= self.active.first_position {
            return Some(Layer::Mem(&self.active));
        }
        if let Some(f) = self.frozen.as_deref()
            && position >= f.first_position
        {
            return Some(Layer::Mem(f));
        }
        let i = self.runs.partition_point(|r| r.last_position() < position);
        self.runs
            .get(i)
            .filter(|r| r.contains(position))
            .map(|r| Layer::Run(r))
    }

    /// The extents of `name` in every layer that has it, oldest first.
    fn extents(&self, table: Table, name: &str, visible: u64) -> Result<Vec<(Layer<'_>, Extent)>> {
        let mut out = Vec::new();
        for layer in self.layers() {
            if let Some(e) = layer.extent(table, name, visible)? {
                out.push((layer, e));
            }
        }
        out.reverse();
        Ok(out)
    }

    /// The last position held: the newest event inserted, or the end of the layers below the
    /// active memtable when it is empty. Never a hole.
    pub fn last_position(&self) -> u64 {
        self.active.last_position()
    }

    /// The position the next [`Index::insert`] must have.
    pub fn next_position(&self) -> u64 {
        (self.active.last_position() + 1).max(self.skip_to)
    }

    /// Announces a gap: the next event inserted has `position`, and the positions between the
    /// last one held and it are holes (removed from the log, or never in it). The holes are
    /// added by that insert, not now, so no layer ever ends in a hole. `position` equal to
    /// [`Index::next_position`] changes nothing; below it is `InvalidArgument`.
    pub fn skip_to(&mut self, position: u64) -> Result<()> {
        let next = self.next_position();
        if position < next {
            return Err(Error::InvalidArgument(format!(
                "cannot skip back to position {position}: the index continues at {next}"
            )));
        }
        self.skip_to = position;
        Ok(())
    }

    /// Adds one event. Positions must come in order (the next one, or the one announced by
    /// [`Index::skip_to`]) and revisions must continue their stream (a stream new to the index
    /// may begin at any revision: its first events may have been removed from the log);
    /// otherwise nothing is changed and `InvalidArgument` says why.
    pub fn insert(&mut self, e: IndexEntry<'_>) -> Result<()> {
        let expected_position = self.next_position();
        if e.position != expected_position {
            return Err(Error::InvalidArgument(format!(
                "position {} does not follow {}",
                e.position,
                expected_position - 1
            )));
        }
        if e.location == HOLE {
            return Err(Error::InvalidArgument(format!(
                "position {} has no frame location",
                e.position
            )));
        }
        // Room for the holes of a gap, and the event, before anything changes: a gap too
        // large for memory (only a damaged or hostile log has one) is an error, not an abort.
        let holes = e.position - self.active.last_position() - 1;
        let holes_len = usize::try_from(holes)
            .ok()
            .filter(|&n| {
                self.active
                    .locations
                    .try_reserve(n.saturating_add(1))
                    .is_ok()
            })
            .ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "a gap of {holes} positions before position {} does not fit in memory",
                    e.position
                ))
            })?;
        let revision_follows = |next_revision: u64| {
            if e.revision == next_revision {
                return Ok(());
            }
            Err(Error::InvalidArgument(format!(
                "stream '{}' revision {} does not follow {}",
                e.stream,
                e.revision,
                i128::from(next_revision) - 1
            )))
        };
        // One lookup of the stream in the common case: this runs for every event appended and
        // every event replayed at open. Older layers are asked only for a stream's first event
        // in this memtable.
        let mut new_stream = false;
        match self.active.streams.get_mut(e.stream) {
            Some(s) => {
                revision_follows(s.first_revision + s.positions.len() as u64)?;
                s.positions.push(e.position);
            }
            None => {
                let older = self.older_revision(e.stream)?;
                if let Some(r) = older {
                    revision_follows(r + 1)?;
                }
                new_stream = older.is_none();
                self.active.streams.insert(
                    Arc::from(e.stream),
                    StreamEntry {
                        first_revision: e.revision,
                        positions: vec![e.position],
                    },
                );
            }
        }
        // The holes of a gap announced by `skip_to`, right before the event that ends it.
        if holes > 0 {
            self.active
                .locations
                .resize(self.active.locations.len() + holes_len, HOLE);
            self.active.holes += holes;
        }
        self.skip_to = 0;
        self.active.locations.push(e.location);
        self.streams_total += u64::from(new_stream);
        match self.active.types.get_mut(e.event_type) {
            Some(t) => t.push(e.position),
            None => {
                if !self.older_has_type(e.event_type)? {
                    self.types_total += 1;
                }
                self.active
                    .types
                    .insert(Arc::from(e.event_type), vec![e.position]);
            }
        }
        match self.active.ids.entry(e.id) {
            Entry::Vacant(v) => {
                v.insert(e.position);
            }
            Entry::Occupied(_) => {
                self.active
                    .id_repeats
                    .entry(e.id)
                    .or_default()
                    .push(e.position);
            }
        }
        Ok(())
    }

    /// The stream's current revision in the layers below the active memtable.
    fn older_revision(&self, stream: &str) -> Result<Option<u64>> {
        for layer in self.layers().skip(1) {
            if let Some(e) = layer.extent(Table::Streams, stream, u64::MAX)? {
                return Ok(Some(e.first_revision + e.count - 1));
            }
        }
        Ok(None)
    }

    fn older_has_type(&self, event_type: &str) -> Result<bool> {
        for layer in self.layers().skip(1) {
            if layer.extent(Table::Types, event_type, u64::MAX)?.is_some() {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// The locations of `positions` (skipping any the index does not hold, holes included), in
    /// the same order. Neighbouring positions in one layer are looked up together.
    pub fn locate(&self, positions: &[u64]) -> Result<Vec<(u64, Location)>> {
        let mut out = Vec::with_capacity(positions.len());
        let mut i = 0;
        while let Some(&p) = positions.get(i) {
            let taken = match self.layer_of(p) {
                Some(Layer::Run(r)) => {
                    r.locate_into(positions.get(i..).unwrap_or_default(), &mut out)?
                }
                Some(Layer::Mem(m)) => {
                    let mut n = 0;
                    for &q in positions.get(i..).unwrap_or_default() {
                        if !m.contains(q) {
                            break;
                        }
                        if let Some(l) = m.location(q) {
                            out.push((q, l));
                        }
                        n += 1;
                    }
                    n
                }
                None => 0,
            };
            i += taken.max(1);
        }
        Ok(out)
    }

    /// The location of the event at `position`; `None` for a hole or a position not held.
    pub fn location(&self, position: u64) -> Result<Option<Location>> {
        match self.layer_of(position) {
            Some(layer) => layer.location(position),
            None => Ok(None),
        }
    }

    /// The first event at a position in `from..=to`, stepping over holes, with its location.
    pub fn next_event(&self, from: u64, to: u64) -> Result<Option<(u64, Location)>> {
        for layer in self.layers_ascending() {
            if layer.last_position() < from {
                continue;
            }
            if layer.first_position() > to {
                break;
            }
            if let Some(found) = layer.find_event(from, to, Direction::Forwards)? {
                return Ok(Some(found));
            }
        }
        Ok(None)
    }

    /// The last event at a position at or below `at`, stepping over holes, with its location.
    pub fn prev_event(&self, at: u64) -> Result<Option<(u64, Location)>> {
        for layer in self.layers() {
            if layer.first_position() > at {
                continue;
            }
            if let Some(found) = layer.find_event(0, at, Direction::Backwards)? {
                return Ok(Some(found));
            }
        }
        Ok(None)
    }

    /// The stream's current revision counting only positions up to `visible`, or `None` when
    /// it has no such event.
    pub fn stream_revision(&self, stream: &str, visible: u64) -> Result<Option<u64>> {
        for layer in self.layers() {
            if let Some(e) = layer.extent(Table::Streams, stream, visible)? {
                return Ok(Some(e.first_revision + e.count - 1));
            }
        }
        Ok(None)
    }

    /// Up to `count` (revision, position) pairs of `stream` starting at revision `from`, in
    /// `direction`. `None` when the stream has no visible event.
    pub fn stream_positions(
        &self,
        stream: &str,
        from: u64,
        direction: Direction,
        count: usize,
        visible: u64,
    ) -> Result<Option<Vec<(u64, u64)>>> {
        let extents = self.extents(Table::Streams, stream, visible)?;
        let (Some((_, first)), Some((_, last))) = (extents.first(), extents.last()) else {
            return Ok(None);
        };
        // A stream whose first events were removed from the log begins above revision 0.
        let lowest = first.first_revision;
        let n = last.first_revision + last.count;
        let count = count as u64;
        let (lo, hi) = match direction {
            Direction::Forwards => {
                let start = from.max(lowest).min(n);
                (start, start.saturating_add(count).min(n))
            }
            Direction::Backwards => {
                let top = from.min(n - 1);
                ((top + 1).saturating_sub(count), top + 1)
            }
        };
        let mut out = Vec::with_capacity((hi - lo) as usize);
        for (layer, e) in &extents {
            let (a, b) = (lo.max(e.first_revision), hi.min(e.first_revision + e.count));
            if a >= b {
                continue;
            }
            let ps = layer.postings(
                Table::Streams,
                stream,
                *e,
                a - e.first_revision,
                b - e.first_revision,
            )?;
            out.extend(ps.into_iter().enumerate().map(|(k, p)| (a + k as u64, p)));
        }
        if direction == Direction::Backwards {
            out.reverse();
        }
        Ok(Some(out))
    }

    /// The revision of `position` within `stream`, if the event at that position is in it.
    pub fn revision_in_stream(&self, stream: &str, position: u64) -> Result<Option<u64>> {
        let Some(layer) = self.layer_of(position) else {
            return Ok(None);
        };
        let Some(e) = layer.extent(Table::Streams, stream, u64::MAX)? else {
            return Ok(None);
        };
        let k = layer.partition(Table::Streams, stream, e, position)?;
        let found = layer.postings(Table::Streams, stream, e, k, k + 1)?;
        Ok((found.first() == Some(&position)).then_some(e.first_revision + k))
    }

    /// The position of revision `revision` of `stream` (visible or not).
    pub fn position_of_revision(&self, stream: &str, revision: u64) -> Result<Option<u64>> {
        for layer in self.layers() {
            if let Some(e) = layer.extent(Table::Streams, stream, u64::MAX)?
                && revision >= e.first_revision
            {
                let k = revision - e.first_revision;
                return Ok(layer
                    .postings(Table::Streams, stream, e, k, k + 1)?
                    .first()
                    .copied());
            }
        }
        Ok(None)
    }

    /// Up to `count` positions of events of `event_type`, from position `from` (inclusive) in
    /// `direction`, none past `visible`.
    pub fn type_positions(
        &self,
        event_type: &str,
        from: u64,
        direction: Direction,
        count: usize,
        visible: u64,
    ) -> Result<Vec<u64>> {
        let mut extents = self.extents(Table::Types, event_type, visible)?;
        let mut out = Vec::new();
        let count = count as u64;
        match direction {
            Direction::Forwards => {
                for (layer, e) in &extents {
                    let want = count - out.len() as u64;
                    if want == 0 {
                        break;
                    }
                    if layer.last_position() < from {
                        continue;
                    }
                    let start = layer.partition(Table::Types, event_type, *e, from)?;
                    out.extend(layer.postings(
                        Table::Types,
                        event_type,
                        *e,
                        start,
                        start.saturating_add(want),
                    )?);
                }
            }
            Direction::Backwards => {
                extents.reverse();
                for (layer, e) in &extents {
                    let want = count - out.len() as u64;
                    if want == 0 {
                        break;
                    }
                    if layer.first_position() > from {
                        continue;
                    }
                    let end = match from.checked_add(1) {
                        Some(f) => layer.partition(Table::Types, event_type, *e, f)?,
                        None => e.count,
                    };
                    let mut ps = layer.postings(
                        Table::Types,
                        event_type,
                        *e,
                        end.saturating_sub(want),
                        end,
                    )?;
                    ps.reverse();
                    out.extend(ps);
                }
            }
        }
        Ok(out)
    }

    /// Position of the newest event with this id, visible or not.
    #[cfg(test)]
    pub fn position_of_id(&self, id: u128) -> Result<Option<u64>> {
        for layer in self.layers() {
            if let Some(&p) = layer.positions_of_id(id)?.last() {
                return Ok(Some(p));
            }
        }
        Ok(None)
    }

    /// The revision of the event with this id in `stream`, visible or not.
    #[cfg(test)]
    pub fn revision_of_id(&self, stream: &str, id: u128) -> Result<Option<u64>> {
        self.revision_of_id_from(stream, id, 0)
    }

    /// The revision, at or above `floor`, of the event with this id in `stream`, visible or
    /// not. (Ids are unique within a stream, except across a soft delete: the events before
    /// it no longer count, and the stream may reuse their ids.)
    pub fn revision_of_id_from(&self, stream: &str, id: u128, floor: u64) -> Result<Option<u64>> {
        for layer in self.layers() {
            for p in layer.positions_of_id(id)? {
                if let Some(r) = self.revision_in_stream(stream, p)?
                    && r >= floor
                {
                    return Ok(Some(r));
                }
            }
        }
        Ok(None)
    }

    /// Number of streams and of event types.
    pub fn counts(&self) -> (usize, usize) {
        (self.streams_total as usize, self.types_total as usize)
    }

    /// The position the last run covers (the one before the index's first position when
    /// there is none: 0 for a log starting at 1).
    pub fn runs_end(&self) -> u64 {
        self.runs
            .last()
            .map_or(self.first_position - 1, |r| r.last_position())
    }

    pub fn runs(&self) -> &[Arc<Run>] {
        &self.runs
    }

    /// Events held in memory (active and frozen memtables), holes not counted.
    pub fn memtable_events(&self) -> u64 {
        self.active.len() + self.frozen.as_ref().map_or(0, |f| f.len())
    }

    /// Hands the active memtable over to a checkpoint and starts an empty one: an O(1) swap.
    /// `None` when it is empty or a checkpoint is already in progress.
    pub fn freeze(&mut self) -> Option<Frozen> {
        if self.frozen.is_some() || self.active.is_empty() {
            return None;
        }
        let next = Memtable::starting_at(self.active.last_position() + 1);
        let frozen = Arc::new(std::mem::replace(&mut self.active, next));
        self.frozen = Some(frozen.clone());
        self.frozen_totals = (self.streams_total, self.types_total);
        Some(Frozen {
            memtable: frozen,
            streams_total: self.streams_total,
            types_total: self.types_total,
        })
    }

    /// The frozen memtable being checkpointed, if any, to retry a failed checkpoint.
    pub fn frozen(&self) -> Option<Frozen> {
        let memtable = self.frozen.clone()?;
        Some(Frozen {
            memtable,
            streams_total: self.frozen_totals.0,
            types_total: self.frozen_totals.1,
        })
    }

    /// Replaces the frozen memtable with the run written from it.
    pub fn install_run(&mut self, run: Arc<Run>) -> Result<()> {
        let matches = self.frozen.as_ref().is_some_and(|f| {
            f.first_position == run.first_position() && f.last_position() == run.last_position()
        });
        if !matches {
            return Err(Error::InvalidArgument(format!(
                "checkpoint {run:?} does not match the frozen memtable"
            )));
        }
        self.runs.push(run);
        self.frozen = None;
        Ok(())
    }

    /// Replaces the last `replaced` runs with `merged`, which covers the same positions.
    pub fn install_merge(&mut self, replaced: usize, merged: Arc<Run>) -> Result<()> {
        let start = self.runs.len().checked_sub(replaced);
        let covers = start.is_some_and(|s| {
            self.runs.get(s).map(|r| r.first_position()) == Some(merged.first_position())
                && self.runs.last().map(|r| r.last_position()) == Some(merged.last_position())
        });
        match start {
            Some(s) if covers => {
                self.runs.truncate(s);
                self.runs.push(merged);
                Ok(())
            }
            _ => Err(Error::InvalidArgument(format!(
                "merged run {merged:?} does not cover the last {replaced} runs"
            ))),
        }
    }
}

/// A memtable handed to a checkpoint, with the name totals at its end.
pub struct Frozen {
    pub memtable: Arc<Memtable>,
    pub streams_total: u64,
    pub types_total: u64,
}

impl Frozen {
    /// The run contents of the frozen memtable, tagged with `fingerprint`.
    pub fn contents(&self, fingerprint: Fingerprint) -> RunContents<'_> {
        let mut c = self.memtable.contents();
        c.streams_total = self.streams_total;
        c.types_total = self.types_total;
        c.fingerprint = fingerprint;
        c
    }
}

/// The contents of consecutive runs (oldest first) as one merged run.
pub fn merge_runs(runs: &[Arc<Run>]) -> Option<RunContents<'_>> {
    let layers: Vec<Layer<'_>> = runs.iter().map(|r| Layer::Run(r)).collect();
    merged_contents(&layers)
}

/// How many of the increasing `positions` are at or below `visible`.
fn visible_len(positions: &[u64], visible: u64) -> usize {
    match positions.last() {
        Some(&last) if last <= visible => positions.len(),
        _ => positions.partition_point(|&p| p <= visible),
    }
}

#[cfg(test)]
mod test;
