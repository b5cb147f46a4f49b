//! An in-memory database with tandem installed: tables, capture, outbox, id map, and the
//! same apply rules as the SQL dialects (sequence guard, tombstones, conflicts, moved keys,
//! keys given by values, parents through links). It implements the endpoint roles, so the
//! real pipeline (`sync`) runs against it unchanged: the deterministic simulation
//! (`tests/simulation.rs`) drives it with racing writers, crashes and lost replies.
//!
//! It is a model **beside** the real databases, never instead of them: each rule here mirrors
//! `postgres/apply.rs` (`apply_one`, `resolve_conflict`, `put_link`, `write_back`) and the
//! statements in `sql/postgres/statements.sql`; when one changes, the other must too. A call
//! is one transaction: it commits whole or not at all. Time is a [`Clock`] the driver moves.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use chrono::{DateTime, TimeZone, Utc};
use serde_json::Value;

use super::{
    done, stale, with_moot, won, Admin, ApplyError, Done, Endpoint, EndpointError, EntityStatus,
    InstallState, Link, Outcome, ParentState, SchemaProblem, Source, SuspendedChange, Target,
    WriteBack,
};
use crate::config::{Config, Entity, Side};
use crate::model::{Image, Key, Op, OutboxRow, TargetChange};

/// Simulated time, in milliseconds, shared by both sides.
#[derive(Debug, Clone, Default)]
pub struct Clock(Arc<AtomicI64>);

impl Clock {
    /// Now, as a timestamp (2026-01-01 plus the simulated milliseconds).
    pub fn now(&self) -> DateTime<Utc> {
        let base = Utc
            .with_ymd_and_hms(2026, 1, 1, 0, 0, 0)
            .single()
            .unwrap_or_default();
        base + chrono::Duration::milliseconds(self.ms())
    }
    /// Milliseconds since the start.
    pub fn ms(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
    /// Moves time on.
    pub fn advance(&self, ms: i64) {
        self.0.fetch_add(ms, Ordering::SeqCst);
    }
}

/// What a foreign key from a child's `ref` column does at one side when its parent goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fk {
    /// `ON DELETE CASCADE`; a child needs its parent.
    Cascade,
    /// No foreign key at all (many legacy schemas): children may outlive their parent.
    None,
}

/// One outbox row.
#[derive(Debug, Clone)]
pub struct OutRow {
    pub seq: i64,
    pub entity: String,
    pub op: Op,
    pub key: Key,
    pub image: Image,
    pub captured_at: DateTime<Utc>,
    pub attempts: i32,
    pub next_attempt_ms: Option<i64>,
    pub last_error: Option<String>,
    pub suspended: bool,
    /// Captured while tandem applied a change here.
    pub derived: bool,
}

/// One id map row: keys as this side calls them (`own`) and as the other side does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapRow {
    pub entity: String,
    pub own: Option<Key>,
    pub peer: Option<Key>,
    pub applied_seq: i64,
    pub deleted: bool,
    /// When the row was last written (`id_map.updated_at`).
    pub updated_at: DateTime<Utc>,
}

/// A failure the driver arms for the next call of a kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    Claim,
    Apply,
    WriteBack,
}

/// Faults the driver sets on a side.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// Every call fails: the database is away.
    pub down: bool,
    /// The next call of this kind fails: before doing anything (`false`), or after its
    /// transaction committed, so the caller never learns that it did (`true`).
    pub fail: Option<(Call, bool)>,
}

/// The database of one side.
#[derive(Debug, Clone)]
pub struct MemDb {
    pub side: Side,
    config: Arc<Config>,
    /// Rows per entity's table, by their key here.
    pub rows: BTreeMap<String, BTreeMap<Key, Image>>,
    /// Next generated key per entity (a sequence: never reused).
    next_id: BTreeMap<String, i64>,
    pub outbox: BTreeMap<i64, OutRow>,
    next_seq: i64,
    pub id_map: Vec<MapRow>,
    /// The newest sequence of this outbox tandem has begun to apply at the other side
    /// (`Source::mark_sent`).
    pub sent_mark: i64,
    /// Foreign key behaviour per child entity here.
    pub fk: BTreeMap<String, Fk>,
    /// Unique constraints per entity here: the columns that give the other side its key
    /// (the other side's primary key, so this side must keep them unique too).
    pub unique: BTreeMap<String, Vec<String>>,
    /// Conflicts resolved here.
    pub conflicts: u64,
    /// Set while tandem writes an entity's table (the trigger skips that table's captures).
    applying: Option<String>,
    /// Cascade depth of the write under way (0: the statement itself).
    depth: u32,
    /// The database's clock (`clock_timestamp()`), for `id_map.updated_at`.
    clock: Clock,
}

/// Why a write was refused (a constraint): becomes a row error.
#[derive(Debug, Clone)]
pub struct Refused(pub String);

impl MemDb {
    /// An empty database with tandem installed for `config`'s entities.
    pub fn new(config: Arc<Config>, side: Side, fk: Fk, clock: Clock) -> MemDb {
        let mut rows = BTreeMap::new();
        let mut fks = BTreeMap::new();
        let mut unique = BTreeMap::new();
        for e in &config.entities {
            if e.key_is_given(side.other()) {
                let cols: Vec<String> = e
                    .side(side.other())
                    .key
                    .iter()
                    .filter_map(|k| e.columns.iter().find(|c| c.name(side.other()) == k))
                    .map(|c| c.name(side).to_string())
                    .collect();
                unique.insert(e.name.clone(), cols);
            }
            rows.insert(e.name.clone(), BTreeMap::new());
            if e.columns.iter().any(|c| c.parent.is_some()) {
                fks.insert(e.name.clone(), fk);
            }
        }
        MemDb {
            side,
            config,
            rows,
            next_id: BTreeMap::new(),
            outbox: BTreeMap::new(),
            next_seq: 1,
            id_map: Vec::new(),
            sent_mark: 0,
            fk: fks,
            unique,
            conflicts: 0,
            applying: None,
            depth: 0,
            clock,
        }
    }

    fn entity(&self, name: &str) -> Option<&Entity> {
        self.config.entity(name)
    }

    /// The next generated key value of `entity` here.
    pub fn next_id(&mut self, entity: &str) -> i64 {
        let n = self.next_id.entry(entity.to_string()).or_insert(0);
        *n += 1;
        *n
    }

    /// Rolls back to `before`, as a transaction or savepoint does: sequences (generated keys,
    /// outbox sequence numbers) keep their values, as they do in the databases.
    pub fn rollback_to(&mut self, before: MemDb) {
        let (ids, seq) = (std::mem::take(&mut self.next_id), self.next_seq);
        *self = before;
        self.next_id = ids;
        self.next_seq = seq;
    }

    /// Makes sure a generated key never collides with a key a user typed.
    pub fn bump_id(&mut self, entity: &str, at_least: i64) {
        let n = self.next_id.entry(entity.to_string()).or_insert(0);
        *n = (*n).max(at_least);
    }

    /// The capture trigger: one outbox row per change of a synchronised table, except
    /// tandem's own writes to the table it is applying; what those cause in other tables (a
    /// cascade) is captured `derived`.
    fn capture(&mut self, entity: &str, op: Op, key: &Key, image: &Image, now: DateTime<Utc>) {
        if self.applying.as_deref() == Some(entity) && self.depth == 0 {
            return;
        }
        let derived = self.applying.is_some();
        self.queue(entity, op, key, image, now, derived);
    }

    /// One new outbox row (a capture, or a change tandem sends again: `children_resend`,
    /// `local_redelete`).
    fn queue(
        &mut self,
        entity: &str,
        op: Op,
        key: &Key,
        image: &Image,
        captured_at: DateTime<Utc>,
        derived: bool,
    ) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.outbox.insert(
            seq,
            OutRow {
                seq,
                entity: entity.to_string(),
                op,
                key: key.clone(),
                image: image.clone(),
                captured_at,
                attempts: 0,
                next_attempt_ms: None,
                last_error: None,
                suspended: false,
                derived,
            },
        );
    }

    fn key_of(&self, entity: &str, image: &Image) -> Result<Key, Refused> {
        let e = self
            .entity(entity)
            .ok_or_else(|| Refused(format!("no entity {entity}")))?;
        Key::from_image(image, &e.side(self.side).key).map_err(Refused)
    }

    /// Children of `entity`'s row `key` here: (child entity, child key).
    fn children(&self, entity: &str, key: &Key) -> Vec<(String, Key)> {
        let value = key.values().into_iter().next().unwrap_or(Value::Null);
        let mut out = Vec::new();
        for e in &self.config.entities {
            for c in e
                .columns
                .iter()
                .filter(|c| c.parent.as_deref() == Some(entity))
            {
                let col = c.name(self.side);
                if let Some(rows) = self.rows.get(&e.name) {
                    for (k, row) in rows {
                        if row.get(col) == Some(&value) {
                            out.push((e.name.clone(), k.clone()));
                        }
                    }
                }
            }
        }
        out
    }

    /// Foreign keys of a row about to be written: its parents must exist here.
    fn check_parents(&self, entity: &str, image: &Image) -> Result<(), Refused> {
        let Some(e) = self.entity(entity) else {
            return Ok(());
        };
        if self.fk.get(entity).copied().unwrap_or(Fk::None) == Fk::None {
            return Ok(());
        }
        for c in e.columns.iter() {
            let Some(parent) = &c.parent else { continue };
            let Some(v) = image.get(c.name(self.side)).filter(|v| !v.is_null()) else {
                continue;
            };
            let pk = Key::from_values(std::slice::from_ref(v));
            if !self.rows.get(parent).is_some_and(|r| r.contains_key(&pk)) {
                return Err(Refused(format!(
                    "foreign key: {entity} row refers to {parent} {pk}, which does not exist"
                )));
            }
        }
        Ok(())
    }

    /// The unique constraint besides the key: refused when another row holds the same values.
    fn check_unique_values(&self, entity: &str, key: &Key, image: &Image) -> Result<(), Refused> {
        let Some(cols) = self.unique.get(entity) else {
            return Ok(());
        };
        let values: Vec<Option<&Value>> = cols.iter().map(|c| image.get(c)).collect();
        let clash = self.rows.get(entity).is_some_and(|t| {
            t.iter().any(|(k, r)| {
                k != key && cols.iter().map(|c| r.get(c)).collect::<Vec<_>>() == values
            })
        });
        if clash {
            return Err(Refused(format!(
                "unique constraint on {entity} ({}) violated",
                cols.join(", ")
            )));
        }
        Ok(())
    }

    /// Inserts a row (its key read from the image); a duplicate key is refused.
    pub fn insert(
        &mut self,
        entity: &str,
        image: Image,
        now: DateTime<Utc>,
    ) -> Result<Key, Refused> {
        let key = self.key_of(entity, &image)?;
        self.check_parents(entity, &image)?;
        self.check_unique_values(entity, &key, &image)?;
        let table = self.rows.entry(entity.to_string()).or_default();
        if table.contains_key(&key) {
            return Err(Refused(format!("duplicate key {key} in {entity}")));
        }
        table.insert(key.clone(), image.clone());
        self.capture(entity, Op::Insert, &key, &image, now);
        Ok(key)
    }

    /// Sets columns of the row at `key` (a key column among them moves the row: captured as
    /// a delete and an insert). Returns whether a byte changed; `None` when there is no row.
    pub fn update(
        &mut self,
        entity: &str,
        key: &Key,
        set: &Image,
        now: DateTime<Utc>,
    ) -> Result<Option<bool>, Refused> {
        let Some(old) = self.rows.get(entity).and_then(|t| t.get(key)).cloned() else {
            return Ok(None);
        };
        let mut new = old.clone();
        for (c, v) in set {
            new.insert(c.clone(), v.clone());
        }
        if new == old {
            return Ok(Some(false));
        }
        let new_key = self.key_of(entity, &new)?;
        self.check_parents(entity, &new)?;
        self.check_unique_values(entity, key, &new)?;
        if new_key != *key {
            if !self.children(entity, key).is_empty() && self.fk_on_children(entity) {
                return Err(Refused(format!(
                    "foreign key: {entity} {key} still has children (no ON UPDATE CASCADE)"
                )));
            }
            let table = self.rows.entry(entity.to_string()).or_default();
            if table.contains_key(&new_key) {
                return Err(Refused(format!("duplicate key {new_key} in {entity}")));
            }
            table.remove(key);
            table.insert(new_key.clone(), new.clone());
            self.capture(entity, Op::Delete, key, &old, now);
            self.capture(entity, Op::Insert, &new_key, &new, now);
        } else {
            self.rows
                .entry(entity.to_string())
                .or_default()
                .insert(key.clone(), new.clone());
            self.capture(entity, Op::Update, key, &new, now);
        }
        Ok(Some(true))
    }

    fn fk_on_children(&self, parent: &str) -> bool {
        self.config.entities.iter().any(|e| {
            e.columns
                .iter()
                .any(|c| c.parent.as_deref() == Some(parent))
                && self.fk.get(&e.name).copied().unwrap_or(Fk::None) != Fk::None
        })
    }

    /// Deletes the row at `key`, cascading to children with a cascading foreign key.
    /// Returns whether there was a row.
    pub fn delete(&mut self, entity: &str, key: &Key, now: DateTime<Utc>) -> bool {
        let Some(old) = self.rows.get_mut(entity).and_then(|t| t.remove(key)) else {
            return false;
        };
        self.capture(entity, Op::Delete, key, &old, now);
        for (child, ck) in self.children(entity, key) {
            if self.fk.get(&child).copied().unwrap_or(Fk::None) == Fk::Cascade {
                self.depth += 1;
                self.delete(&child, &ck, now);
                self.depth -= 1;
            }
        }
        true
    }

    /// Whether a delete of the row at `key` was captured here and is not settled yet: the
    /// record a live link names at that key was deleted here (its delete is on its way), and
    /// a row at the key now is another record (`deleted_here` in statements.sql).
    fn deleted_here(&self, entity: &str, key: &Key) -> bool {
        self.outbox
            .values()
            .any(|o| o.entity == entity && o.key == *key && o.op == Op::Delete && !o.suspended)
    }

    fn row(&self, entity: &str, key: &Key) -> Option<&Image> {
        self.rows.get(entity).and_then(|t| t.get(key))
    }

    // --- the id map -------------------------------------------------------------------

    fn by_peer(&self, entity: &str, peer: &Key) -> Option<usize> {
        self.id_map
            .iter()
            .position(|m| m.entity == entity && m.peer.as_ref() == Some(peer))
    }

    fn by_own(&self, entity: &str, own: &Key) -> Option<usize> {
        self.id_map
            .iter()
            .position(|m| m.entity == entity && m.own.as_ref() == Some(own))
    }

    /// `unlink_own`: a link naming `own` for another peer record is stale; that record
    /// becomes a tombstone here (its guard stays).
    fn unlink_own(&mut self, entity: &str, peer: &Key, own: &Key) {
        self.id_map
            .retain(|m| !(m.entity == entity && m.own.as_ref() == Some(own) && m.peer.is_none()));
        for m in &mut self.id_map {
            if m.entity == entity
                && m.own.as_ref() == Some(own)
                && m.peer.as_ref().is_some_and(|p| p != peer)
            {
                m.own = None;
                m.deleted = true;
                m.updated_at = self.clock.now();
            }
        }
    }

    /// `repoint`: a live link of a record gone here whose peer the other side has replaced
    /// (a stale report names the record the target holds now) names that record, unless a link
    /// here already holds it. Neither revives the link nor takes the peer from another one.
    fn repoint(&mut self, entity: &str, own: &Key, peer: &Key) {
        if self.by_peer(entity, peer).is_some() {
            return;
        }
        if let Some(i) = self.by_own(entity, own) {
            let m = &mut self.id_map[i];
            if !m.deleted && m.peer.is_some() {
                // `peer_tombstone`: the old peer keeps the link's guard (seed 44713).
                let old = m.peer.replace(peer.clone());
                m.updated_at = self.clock.now();
                let guard = m.applied_seq;
                self.id_map.push(MapRow {
                    updated_at: self.clock.now(),
                    entity: entity.to_string(),
                    own: None,
                    peer: old,
                    applied_seq: guard,
                    deleted: true,
                });
                self.check_unique(entity);
            }
        }
    }

    /// Whether another record here, not deleted, is linked to `peer`.
    fn held_by_live(&self, entity: &str, own: &Key, peer: &Key) -> bool {
        self.id_map.iter().any(|m| {
            m.entity == entity
                && m.peer.as_ref() == Some(peer)
                && m.own.as_ref().is_some_and(|o| o != own)
                && !m.deleted
        })
    }

    /// `unlink_peer`: the same, the other way round (the peer's guard row, with no record
    /// here, is merged into the new link by `link_written_back`).
    fn unlink_peer(&mut self, entity: &str, own: &Key, peer: &Key) -> Vec<Key> {
        let mut stolen = Vec::new();
        for m in &mut self.id_map {
            if m.entity == entity
                && m.own.as_ref() == Some(own)
                && m.peer.as_ref().is_some_and(|p| p != peer)
            {
                // Retired: the other side replaced that record; its guard stays.
                m.own = None;
                m.deleted = true;
                m.updated_at = self.clock.now();
            }
        }
        for m in &mut self.id_map {
            if m.entity == entity
                && m.peer.as_ref() == Some(peer)
                && m.own.as_ref().is_some_and(|o| o != own)
            {
                if !m.deleted {
                    stolen.extend(m.own.clone());
                }
                m.peer = None;
                m.updated_at = self.clock.now();
            }
        }
        stolen
    }

    /// `drop_duplicate`: a live record here that lost its peer to another record here (see
    /// `unlink_peer`) is a second copy of the peer's record. Tandem created it from the peer's
    /// change, that reply was lost, and the other side then took this side's other record for
    /// the peer (both sides created the record key given there: it landed on the local one).
    /// The copy goes, uncaptured (the other side never knew it), and its link becomes a
    /// tombstone; unless the record has changes of its own here (a user's, which travel; where
    /// its own change settled by the write-back lost its conflict there, the write-back calls
    /// this again once that change left the outbox), children here, or a soft delete here:
    /// then it stays, as before (found by the simulation's full workload, seeds 5930, 8567 and
    /// five more; a parent without children by the fault suite's full workload, seed 6030).
    fn drop_duplicate(&mut self, entity: &str, own: &Key, now: DateTime<Utc>) {
        let soft = self
            .entity(entity)
            .is_some_and(|e| e.soft_delete_at(self.side).is_some());
        let own_changes = self
            .outbox
            .values()
            .any(|o| o.entity == entity && o.key == *own);
        if soft
            || own_changes
            || self.row(entity, own).is_none()
            || !self.children(entity, own).is_empty()
        {
            return;
        }
        self.applying = Some(entity.to_string());
        self.delete(entity, own, now);
        self.applying = None;
        if let Some(i) = self.by_own(entity, own) {
            self.id_map[i].deleted = true;
            self.id_map[i].updated_at = self.clock.now();
        }
    }

    /// `link_applied`: upsert by peer key.
    #[track_caller]
    fn link_applied(
        &mut self,
        entity: &str,
        peer: &Key,
        own: Option<&Key>,
        seq: i64,
        deleted: bool,
    ) {
        match self.by_peer(entity, peer) {
            Some(i) => {
                let m = &mut self.id_map[i];
                if own.is_some() {
                    m.own = own.cloned();
                }
                m.applied_seq = m.applied_seq.max(seq);
                m.deleted = deleted;
                m.updated_at = self.clock.now();
            }
            None => self.id_map.push(MapRow {
                updated_at: self.clock.now(),
                entity: entity.to_string(),
                own: own.cloned(),
                peer: Some(peer.clone()),
                applied_seq: seq,
                deleted,
            }),
        }
        self.check_unique(entity);
    }

    /// `link_seen`: a change that lost a conflict is settled.
    #[track_caller]
    fn link_seen(
        &mut self,
        entity: &str,
        peer: &Key,
        own: Option<&Key>,
        seq: i64,
        deleted: bool,
        moved: bool,
    ) {
        match self.by_peer(entity, peer) {
            Some(i) => {
                let m = &mut self.id_map[i];
                m.applied_seq = m.applied_seq.max(seq);
                if m.own.is_none() || moved {
                    m.own = own.cloned();
                }
                m.deleted |= deleted;
                m.updated_at = self.clock.now();
            }
            None => self.id_map.push(MapRow {
                updated_at: self.clock.now(),
                entity: entity.to_string(),
                own: own.cloned(),
                peer: Some(peer.clone()),
                applied_seq: seq,
                deleted,
            }),
        }
        self.check_unique(entity);
    }

    /// `link_written_back`: upsert by own key.
    #[track_caller]
    fn link_written_back(
        &mut self,
        entity: &str,
        own: &Key,
        peer: Option<&Key>,
        deleted: bool,
        peer_guard: Option<i64>,
    ) {
        let mut guard = peer_guard.unwrap_or(0);
        if let Some(p) = peer {
            self.id_map.retain(|m| {
                let gone = m.entity == entity && m.peer.as_ref() == Some(p) && m.own.is_none();
                if gone {
                    guard = guard.max(m.applied_seq);
                }
                !gone
            });
        }
        match self.by_own(entity, own) {
            Some(i) => {
                let m = &mut self.id_map[i];
                if peer.is_some() {
                    m.peer = peer.cloned();
                }
                m.deleted = deleted;
                m.applied_seq = m.applied_seq.max(guard);
                m.updated_at = self.clock.now();
            }
            None => self.id_map.push(MapRow {
                updated_at: self.clock.now(),
                entity: entity.to_string(),
                own: Some(own.clone()),
                peer: peer.cloned(),
                applied_seq: guard,
                deleted,
            }),
        }
        self.check_unique(entity);
    }

    /// The id map's two unique indexes. A violation is a bug of the rules (the SQL would
    /// refuse the statement): the model panics so the simulation reports it with its seed.
    #[track_caller]
    fn check_unique(&self, entity: &str) {
        let mut own = HashSet::new();
        let mut peer = HashSet::new();
        let clash = self
            .id_map
            .iter()
            .filter(|m| m.entity == entity)
            .find_map(|m| {
                let o = m.own.as_ref().filter(|o| !own.insert((*o).clone()));
                let p = m.peer.as_ref().filter(|p| !peer.insert((*p).clone()));
                o.map(|o| format!("own key {o}"))
                    .or_else(|| p.map(|p| format!("peer key {p}")))
            });
        if let Some(what) = clash {
            // The whole map, only when it is needed for the report.
            let map: Vec<String> = self
                .id_map
                .iter()
                .filter(|m| m.entity == entity)
                .map(|m| format!("{m:?}"))
                .collect();
            panic!(
                "id_map: two links with {what} ({entity}, side {}):\n{}",
                self.side,
                map.join("\n")
            );
        }
    }
}

/// One side's database as an endpoint.
#[derive(Clone)]
pub struct MemEndpoint {
    side: Side,
    config: Arc<Config>,
    /// The database (shared with the driver, which writes to it as the users).
    pub db: Arc<Mutex<MemDb>>,
    pub faults: Arc<Mutex<Faults>>,
    pub clock: Clock,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl MemEndpoint {
    pub fn new(config: Arc<Config>, side: Side, fk: Fk, clock: Clock) -> MemEndpoint {
        MemEndpoint {
            side,
            db: Arc::new(Mutex::new(MemDb::new(
                config.clone(),
                side,
                fk,
                clock.clone(),
            ))),
            config,
            faults: Arc::new(Mutex::new(Faults::default())),
            clock,
        }
    }

    fn unreachable(&self, what: &str) -> EndpointError {
        EndpointError::Unreachable {
            side: self.side,
            target: "memory".into(),
            message: format!("{what}: connection lost (simulated)"),
        }
    }

    /// Before a call: fails it when the side is down or a failure before it is armed.
    /// Returns whether the reply must be lost after the call commits.
    fn enter(&self, call: Call) -> Result<bool, EndpointError> {
        let mut f = lock(&self.faults);
        if f.down {
            return Err(self.unreachable("down"));
        }
        match f.fail {
            Some((c, after)) if c == call => {
                f.fail = None;
                if after {
                    Ok(true)
                } else {
                    Err(self.unreachable("before commit"))
                }
            }
            _ => Ok(false),
        }
    }

    fn leave<T>(&self, lost: bool, value: T) -> Result<T, EndpointError> {
        if lost {
            Err(self.unreachable("reply lost after commit"))
        } else {
            Ok(value)
        }
    }
}

fn context(side: Side, c: &TargetChange) -> String {
    format!(
        "entity {}, side {side}, {} of source key {}",
        c.entity, c.op, c.source_key
    )
}

enum Resolution {
    None,
    /// The incoming change won over these local changes (discarded by the caller once the
    /// change wins at every key it is pending under).
    IncomingWins(Vec<i64>),
    LocalWins,
}

/// Changes of the record under `key` here that a delete from the other side has just removed
/// here, and that can decide nothing any more: suspended ones (it was gone there already),
/// pending updates the other side's guard counts as seen (`after`) before it deleted the
/// record, and creations and updates older than a delete pending here (deleted at both sides;
/// travelling without that delete, they created it again there: seed 2496 of the variant
/// without key changes at A). Moot, so settled instead of left to fail there until they are
/// parked, or to come back (`settle_moot` of `sql/postgres/statements.sql`). Their sequences,
/// for the log line.
fn settle_moot(db: &mut MemDb, entity: &str, key: &Key, after: i64) -> Vec<i64> {
    let deleted_here = db
        .outbox
        .values()
        .filter(|o| o.entity == entity && o.key == *key && o.op == Op::Delete && !o.suspended)
        .map(|o| o.seq)
        .max()
        .unwrap_or(0);
    let seqs: Vec<i64> = db
        .outbox
        .iter()
        .filter(|(_, o)| {
            (o.suspended
                || (o.op == Op::Update && o.seq <= after)
                || (o.op != Op::Delete && o.seq < deleted_here))
                && o.entity == entity
                && o.key == *key
        })
        .map(|(s, _)| *s)
        .collect();
    for s in &seqs {
        db.outbox.remove(s);
    }
    seqs
}

/// Whether this side deleted the record under `key` and created another one under it, both
/// still pending (an insert after its last pending delete, the new record's updates after it;
/// `endpoint::created_anew`).
fn replaced_here(db: &MemDb, entity: &str, key: &Key) -> bool {
    super::created_anew(
        db.outbox
            .values()
            .filter(|o| o.entity == entity && o.key == *key && !o.suspended)
            .map(|o| (o.seq, o.op)),
        0,
    )
}

/// Whether the record under `key` here stays there whatever its peer's changes say: its
/// pending changes here beat a user's change captured at the source when `c` was (under
/// `newest_wins`: they are newer), so they beat any move of its peer away from the key, which
/// the source made before `c` took it.
fn holder_stays(db: &MemDb, entity: &Entity, key: &Key, c: &TargetChange) -> bool {
    if db.row(&entity.name, key).is_none() {
        return false;
    }
    let mut pending: Vec<&OutRow> = db
        .outbox
        .values()
        .filter(|o| o.entity == entity.name && o.key == *key && !o.suspended)
        .collect();
    pending.sort_by_key(|o| o.seq);
    let Some(newest) = pending.last() else {
        return false;
    };
    if newest.op == Op::Delete {
        return false;
    }
    let derived = pending.iter().all(|o| o.derived);
    super::conflict_winner(
        entity.on_conflict,
        db.side,
        (c.captured_at, false),
        (newest.captured_at, derived),
    ) == db.side
}

/// `new_since` of `postgres/apply.rs`: the row under `key` here is a new record of this side
/// the source has not seen (its insert the oldest change of it pending here after
/// `peer_applied_seq`).
fn new_since(db: &MemDb, c: &TargetChange, key: &Key) -> bool {
    db.outbox
        .range(c.peer_applied_seq + 1..)
        .map(|(_, p)| p)
        .find(|p| p.entity == c.entity && p.key == *key && !p.suspended)
        .is_some_and(|p| p.op == Op::Insert)
}

/// `own_insert_unconfirmed` of `postgres/apply.rs`: whether `key` here holds (`row_here`), or
/// held, this side's new record, linked to nothing, that a creation from the other side waits
/// for (`endpoint::own_insert_waits`; sent: at or below `MemDb::sent_mark`, never failed or
/// sent again since: `mark_sent` clears the retry time a failure set).
fn own_insert_unconfirmed(db: &MemDb, entity: &str, key: &Key, row_here: bool) -> bool {
    let linked = db
        .by_own(entity, key)
        .is_some_and(|i| !db.id_map[i].deleted);
    let changes = db
        .outbox
        .values()
        .filter(|o| o.entity == entity && o.key == *key && !o.suspended)
        .map(|o| {
            let sent = o.attempts == 0 || o.next_attempt_ms.is_none();
            (o.op, sent && o.seq <= db.sent_mark)
        });
    !linked && super::own_insert_waits(row_here, changes)
}

/// `hint_newer` of `postgres/apply.rs`: an update whose hint names another record here than
/// the live link's `own`, which no longer holds the key's values (`row`) here, while the hinted
/// record is here with a change the source has applied (`endpoint::hint_newer_than_link`):
/// this side's move of the linked record and the hinted record's creation under the freed key
/// both reached the source, and both replies were lost (variant seed 52926).
fn hint_newer(db: &MemDb, c: &TargetChange, own: Option<&Key>, row: &Image) -> bool {
    let moved = |o: &Key| {
        db.row(&c.entity, o).is_some_and(|r| {
            db.unique
                .get(&c.entity)
                .is_some_and(|cols| cols.iter().any(|col| r.get(col) != row.get(col)))
        })
    };
    c.op == Op::Update
        && own.is_some_and(moved)
        && c.peer_hint.as_ref().is_some_and(|h| {
            db.row(&c.entity, h).is_some()
                && super::hint_newer_than_link(
                    db.outbox
                        .values()
                        .filter(|o| o.entity == c.entity && o.key == *h && !o.suspended)
                        .map(|o| (o.seq, o.op == Op::Delete)),
                    c.peer_applied_seq,
                )
        })
}

/// `apply_one` of `postgres/apply.rs`, on the model.
fn apply_one(db: &mut MemDb, c: &TargetChange, now: DateTime<Utc>) -> Result<Outcome, ApplyError> {
    let side = db.side;
    let reject = |m: String| ApplyError::Rejected {
        context: context(side, c),
        message: m,
        code: None,
    };
    let Some(entity) = db.entity(&c.entity).cloned() else {
        return Err(reject("entity is not in the config".into()));
    };
    let ts = entity.side(side);
    let key_given = entity.key_is_given(side);
    let link = db
        .by_peer(&c.entity, &c.source_key)
        .map(|i| db.id_map[i].clone());
    let reused = entity.key_is_given(side.other());
    // The guard protects the record this link names; where the source already links its key
    // to another live record here (keys given by values, reused), that record has not seen
    // this delete yet (only a delete: an older update must not overwrite the newer record).
    let moved_on = |l: &MapRow| {
        c.op == Op::Delete
            && reused
            && c.peer_hint.is_some()
            && c.peer_hint != l.own
            && c.peer_hint
                .as_ref()
                .is_some_and(|h| db.row(&c.entity, h).is_some())
            && l.own
                .as_ref()
                .is_none_or(|o| l.deleted || db.row(&c.entity, o).is_none())
    };
    if let Some(l) = &link {
        if l.applied_seq >= c.seq && !moved_on(l) {
            return Ok(stale(l.own.clone(), l.deleted));
        }
    }
    let mut row = c.row.clone();
    let refs = resolve_refs(db, c, &mut row);
    // A creation at the source under a key given by values, which the source links to nothing,
    // where the link here names a record of this side that no longer holds those values: the
    // link was written back before this side's move of the record reached the source (whose
    // reply was lost), so the source's record under that key is another, new one. Taking the
    // linked record would undo the move here and leave the moved copy at the source unlinked
    // (found by the simulation's full workload, seed 12653).
    let moved_away = |l: &MapRow| {
        ((c.op == Op::Insert && c.born) || c.op == Op::Delete)
            && reused
            && !key_given
            && c.peer_hint.is_none()
            && refs.is_ok()
            && !l.deleted
            && l.own
                .as_ref()
                .and_then(|o| db.row(&c.entity, o))
                .is_some_and(|r| {
                    db.unique
                        .get(&c.entity)
                        .is_some_and(|cols| cols.iter().any(|col| r.get(col) != row.get(col)))
                })
    };
    // A delete of such a key, where the linked record has changes pending here captured before
    // the delete: the delete waits until they have settled (as in `postgres/apply.rs`; found by
    // the simulation's full workload, seed 68782). A move here newer than the delete cannot
    // have freed the key at the source before it: the delete is of this record.
    if let Some(o) = link
        .as_ref()
        .filter(|l| c.op == Op::Delete && moved_away(l))
        .and_then(|l| l.own.as_ref())
    {
        let older = db.outbox.values().any(|p| {
            p.entity == c.entity && p.key == *o && !p.suspended && p.captured_at < c.captured_at
        });
        if older {
            return Err(ApplyError::KeyHeld {
                context: context(side, c),
                message: super::moved_with_changes_pending(o, side),
                holder: o.to_string(),
            });
        }
    }
    // No link here, and the source's hint names a key here that a live link gives another
    // record of the source: the hint is older than that link, and this side knows nothing of
    // this record (as in `postgres/apply.rs`; simulation's full workload, seed 76215). Only
    // where the source draws its keys: a key given by values may be this very record's old one.
    // Unless the hint is the newer one (as in `postgres/apply.rs`; fault suite, seed 1002).
    let hint_taken = link.is_none()
        && !reused
        && c.peer_hint.as_ref().is_some_and(|h| {
            db.id_map.iter().any(|m| {
                m.entity == c.entity
                    && m.own.as_ref() == Some(h)
                    && !m.deleted
                    && m.peer.as_ref().is_some_and(|p| *p != c.source_key)
            }) && !super::hint_newer_than_link(
                db.outbox
                    .values()
                    .filter(|o| o.entity == c.entity && o.key == *h && !o.suspended)
                    .map(|o| (o.seq, o.op == Op::Delete)),
                c.peer_applied_seq,
            )
        });
    // A tombstone, or a live link whose row is gone here, of another record than the one the
    // source now links this key to: the source's link wins (as in `postgres/apply.rs`). So
    // does a link the source wrote before its delete (seed 52926).
    let (known, linked_live, tombstone) = match &link {
        None if hint_taken => (None, false, false),
        Some(l) if c.op != Op::Delete && moved_away(l) => (None, false, false),
        Some(l)
            if reused
                && c.peer_hint.is_some()
                && c.peer_hint != l.own
                && (l.deleted
                    || c.delete_hint_holds(l.applied_seq)
                    || l.own
                        .as_ref()
                        // No record named (taken by another): only the guard is left.
                        .is_none_or(|o| db.row(&c.entity, o).is_none())
                    || (!key_given && hint_newer(db, c, l.own.as_ref(), &row))) =>
        {
            (c.peer_hint.clone(), true, false)
        }
        // A record the source created after its delete of the one this tombstone names (a
        // number its application reused): another record, created anew here, whatever this
        // side still has pending of the old one (its delete lost its conflict here, and the
        // winner's creation again at the source is still on its way, where it draws a new key).
        // The same where that delete's reply was lost, so the link here still names the number:
        // the record under it is this side's new one (its insert pending here, after all that
        // the source has applied of this side's changes of the record). Likewise a delete
        // arriving at a tombstone here: the record it names was deleted here already, and that
        // new record must stay (simulation's full workload, seed 50143: the delete removed it,
        // while its copy lived on at the source).
        Some(l)
            if ((c.op == Op::Insert && c.born && !l.deleted)
                || (c.op == Op::Delete && l.deleted))
                && !key_given
                && l.own.as_ref().is_some_and(|o| new_since(db, c, o)) =>
        {
            (None, false, false)
        }
        // A delete arriving at a live link whose record this side deleted and created anew
        // under the same number (an insert pending after its last pending delete; the reply
        // of that delete lost, so the link still names the number): both sides deleted the
        // record the link names, and the new record must stay (as in `postgres/apply.rs`;
        // found by the fault suite's full workload, seed 6655: the delete met the new
        // record's insert as a conflict, won, and removed it, while its copy lived on at the
        // source).
        Some(l)
            if c.op == Op::Delete
                && !l.deleted
                && !key_given
                && l.own.as_ref().is_some_and(|o| {
                    super::created_anew(
                        db.outbox
                            .values()
                            .filter(|p| p.entity == c.entity && p.key == *o && !p.suspended)
                            .map(|p| (p.seq, p.op)),
                        c.peer_applied_seq,
                    )
                }) =>
        {
            (None, false, false)
        }
        // A live link whose key given here a new record of this side holds now (its insert the
        // oldest change of the key pending here after all that the source has applied of this
        // side's changes of the record): this side deleted the record the link names, and the
        // change, which the source sent after that delete lost there, creates it again here
        // under its own key, leaving the new record alone (simulation's variant without key
        // changes at A, seed 110294: it moved the new record's row away as the old record's; as
        // in `postgres/apply.rs`).
        Some(l)
            if c.op == Op::Insert
                && key_given
                && !l.deleted
                && l.own.as_ref().is_some_and(|o| new_since(db, c, o)) =>
        {
            (None, false, false)
        }
        Some(l) if c.op == Op::Insert && c.born && l.deleted && !key_given => (None, false, false),
        Some(l) => (l.own.clone(), l.own.is_some() && !l.deleted, l.deleted),
        None => (c.peer_hint.clone(), c.peer_hint.is_some(), false),
    };
    let given = if key_given && refs.is_ok() {
        match Key::from_image(&row, &ts.key) {
            Ok(k) => Some(k),
            Err(m) if c.op != Op::Delete => return Err(reject(format!("target key: {m}"))),
            Err(_) => None,
        }
    } else {
        None
    };
    if c.op != Op::Delete {
        refs?;
    }
    let moved_from = match (&given, &known) {
        (Some(g), Some(k)) if linked_live && g != k => Some(k.clone()),
        _ => None,
    };
    let here = if key_given && !(c.op == Op::Delete && moved_from.is_some()) {
        given.clone().or_else(|| known.clone())
    } else {
        known.clone()
    };
    // A delete of a record this side has no link of, nor the source: nothing of it reached
    // here (its insert never came, or waits below for this side's own one). A row under its key
    // given here that is a new record of this side (its insert pending here) is another record,
    // and stays (as in `postgres/apply.rs`; found by the simulation's full workload, seed 2673:
    // it was deleted here, while the other side kept its copy).
    if c.op == Op::Delete && link.is_none() && c.peer_hint.is_none() && key_given {
        let new_here = here.as_ref().is_some_and(|k| {
            db.outbox
                .values()
                .any(|o| o.entity == c.entity && o.key == *k && o.op == Op::Insert && !o.suspended)
        });
        if new_here {
            put_link(db, c, None, true);
            return Ok(done(None, Done::Unchanged, false));
        }
    }
    // A delete arriving at a tombstone here, under a key given here by values that a new
    // record of this side holds now (its insert the oldest change of it pending here after all
    // that the source has applied of this side's changes of the record): the record it names
    // was deleted here already, and the new one under the reused key stays (as in
    // `postgres/apply.rs`, and as for keys drawn here, seed 50143; found by the simulation's
    // million-seed run of the default workload, seed 484427: it removed the new record here,
    // whose copy lived on at the other side).
    if let (Op::Delete, true, Some(l), Some(k)) = (c.op, key_given, &link, &here) {
        if l.deleted && l.own.as_ref() == Some(k) && new_since(db, c, k) {
            put_link(db, c, None, true);
            return Ok(done(None, Done::Unchanged, false));
        }
    }
    // A key held by a record this side deleted and created anew under it (its newest pending
    // change an insert after a pending delete) is not held for an upsert: the link names the
    // deleted record, whose delete has not come back confirmed (its reply was lost); the new
    // record is not linked yet, so the upsert meets it as a conflict instead of waiting for a
    // delete whose retries may run out first (found by the simulation's full workload, seed
    // 13671 and 2 more).
    let probe = if c.op == Op::Delete { &here } else { &given };
    // A record moving onto a key another linked record holds here, which stays there whatever
    // its peer's changes say (`holder_stays`), does not wait for it to move: its peer's move
    // away, if any, loses here. The move meets it as a conflict at once, and loses; the record
    // is put back under its old key at its side (found by the simulation's full workload, seed
    // 87994 and 8 more: the move waited, and the holder's change was refused at the other side
    // by the natural unique key, both until their retries ran out).
    let mut held = false;
    if let (Some(k), true) = (probe, key_given) {
        let holder = db
            .by_own(&c.entity, k)
            .map(|i| &db.id_map[i])
            .filter(|m| !m.deleted)
            .and_then(|m| m.peer.clone())
            .filter(|p| *p != c.source_key)
            .filter(|_| c.op == Op::Delete || !replaced_here(db, &c.entity, k));
        if let Some(p) = holder {
            if c.op == Op::Delete {
                put_link(db, c, None, true);
                return Ok(done(None, Done::Unchanged, false));
            }
            held = moved_from.is_some() && holder_stays(db, &entity, k, c);
            if !held {
                return Err(reject(format!("key {k} belongs to another record ({p})")));
            }
        }
    }

    // A creation at the source under a key given here by values, where this side's own new
    // record under that key, linked to nothing, was sent to the source already (its insert at
    // or below the sent mark, never failed): the reply may have been lost, its copy may be
    // there, and then the source's record is another one. Merging the two here would leave that
    // copy linked to nothing at the source. The change waits until this side's insert is
    // confirmed (linked) or failed (as in `postgres/apply.rs`; found by the simulation's full
    // workload, seeds 8082 and 21577), also where that record was deleted here since, that
    // delete not sent yet (seed 91390). A linked record moving onto that key waits the same
    // (seed 57548 of the variant without key changes at A).
    let creates = c.op == Op::Insert && c.born && link.is_none() && c.peer_hint.is_none();
    if (creates || (c.op != Op::Delete && moved_from.is_some())) && key_given {
        if let Some(k) = &here {
            let row_here = db.row(&c.entity, k).is_some();
            if own_insert_unconfirmed(db, &c.entity, k, row_here) {
                return Err(ApplyError::KeyHeld {
                    context: context(side, c),
                    message: if row_here {
                        super::sent_unconfirmed(k, side)
                    } else {
                        super::sent_then_deleted(k, side)
                    },
                    holder: k.to_string(),
                });
            }
        }
    }
    let mut conflict = Resolution::None;
    let mut superseded: Option<i64> = None;
    let mut lost_at: Option<Key> = None;
    let mut beaten: Vec<i64> = Vec::new();
    let old_key = moved_from.as_ref().filter(|_| c.op != Op::Delete);
    for k in old_key.into_iter().chain(here.as_ref()) {
        let after = super::guard_at(c, known.as_ref(), k);
        match resolve_conflict(db, &entity, c, k, after, now) {
            Resolution::None => {}
            Resolution::IncomingWins(seqs) => {
                superseded = superseded.max(seqs.iter().copied().max());
                beaten.extend(seqs);
                conflict = Resolution::IncomingWins(Vec::new());
            }
            Resolution::LocalWins => {
                conflict = Resolution::LocalWins;
                lost_at = Some(k.clone());
                break;
            }
        }
    }
    // The local changes a change beat go only if it wins throughout: a move that beat this
    // side's changes under its old key and lost under its new one is not applied, so they
    // still travel (as in `postgres/apply.rs`; found by the simulation's full workload, seed
    // 12476: a local delete was discarded, and the record stayed at the other side only).
    if !matches!(conflict, Resolution::LocalWins) {
        for s in &beaten {
            db.outbox.remove(s);
        }
    }
    let force = match conflict {
        Resolution::None => false,
        Resolution::IncomingWins(_) => true,
        Resolution::LocalWins => {
            // A move that lost to the local record holding its new key lands on it, as a new
            // record with that key does: one record now, the winner's values, linked both ways
            // (as in `postgres/apply.rs`). Its old row here goes, unless this side changed it
            // meanwhile or other records refer to it.
            let lands = c.op != Op::Delete
                && lost_at == here
                && here
                    .as_ref()
                    .is_some_and(|k| db.row(&c.entity, k).is_some());
            let old_row = moved_from
                .as_ref()
                .filter(|k| db.row(&c.entity, k).is_some());
            let leaves =
                old_row.is_some() && superseded.is_none() && !db.config.is_referenced(&c.entity);
            // Not onto a record linked to another one (`held`): that is two records.
            let merged = lands && moved_from.is_some() && (old_row.is_none() || leaves) && !held;
            if merged && leaves {
                if let Some(k) = &moved_from {
                    db.applying = Some(c.entity.clone());
                    db.delete(&c.entity, k, now);
                    db.applying = None;
                }
            }
            // Otherwise it stays under its old key, and nothing pending here would put it back
            // at the loser's side: its row travels as an update.
            let put_back = old_row
                .filter(|_| !merged && c.op != Op::Delete && lost_at == here)
                .cloned();
            let here = if merged {
                here
            } else {
                moved_from.clone().or(here)
            };
            if let Some(k) = &here {
                db.unlink_own(&c.entity, &c.source_key, k);
            }
            if let Some(k) = put_back {
                if let Some(image) = db.row(&c.entity, &k).cloned() {
                    db.capture(&c.entity, Op::Update, &k, &image, now);
                }
            }
            db.link_seen(
                &c.entity,
                &c.source_key,
                here.as_ref(),
                c.seq,
                c.op == Op::Delete && !reused,
                merged,
            );
            return Ok(done(here, Done::ConflictLost, true));
        }
    };

    db.applying = Some(c.entity.clone());
    if c.op == Op::Delete {
        let mut how = Done::Unchanged;
        let mut moot = Vec::new();
        if let Some(k) = &here {
            if db.delete(&c.entity, k, now) {
                how = Done::Written;
            }
            moot = settle_moot(db, &c.entity, k, super::guard_at(c, known.as_ref(), k));
        }
        put_link(db, c, here.as_ref(), true);
        return Ok(with_moot(won(here, how, superseded), moot));
    }
    if tombstone && c.op == Op::Update && !force {
        put_link(db, c, known.as_ref(), true);
        return Ok(done(known, Done::Deleted, false));
    }
    let mut moved = false;
    if let Some(old) = &moved_from {
        moved = db.delete(&c.entity, old, now);
    }
    // After a tombstone the record is created anew, unless the incoming change won a conflict
    // against this side's changes of the record here: then it is that record (its values
    // become the winner's; creating another left it behind unlinked: found by the fault suite).
    let candidate = if key_given {
        given
    } else if tombstone && !force {
        None
    } else {
        known.clone()
    };
    let (target, how) = match candidate {
        Some(k) => {
            let mut obj = row.clone();
            obj.extend(k.to_object(&ts.key));
            if db.row(&c.entity, &k).is_some() {
                let changed = match db.update(&c.entity, &k, &obj, now) {
                    Err(r) if !key_given => {
                        match lands_on_new_local(db, c, Some(&k), &obj, superseded, now) {
                            Some(out) => return Ok(out),
                            None => return Err(refused(db, c, r, &obj, Some(&k))),
                        }
                    }
                    other => other
                        .map_err(|r| refused(db, c, r, &obj, Some(&k)))?
                        .unwrap_or(false),
                };
                (
                    k,
                    if changed {
                        Done::Written
                    } else {
                        Done::Unchanged
                    },
                )
            } else if linked_live && !force && !moved && c.op == Op::Update {
                put_link(db, c, Some(&k), true);
                return Ok(done(Some(k), Done::Deleted, false));
            } else {
                let mut obj = obj;
                if !key_given && !force {
                    // A generated key is drawn anew, never the old one again.
                    let id = db.next_id(&c.entity);
                    obj.extend(Key::from_values(&[Value::from(id)]).to_object(&ts.key));
                }
                let k = match db.insert(&c.entity, obj.clone(), now) {
                    Ok(k) => k,
                    Err(r) => return Err(refused(db, c, r, &obj, None)),
                };
                (k, Done::Written)
            }
        }
        None => {
            let mut obj = row.clone();
            if !key_given {
                // A generated key: the table's sequence.
                let id = db.next_id(&c.entity);
                obj.extend(Key::from_values(&[Value::from(id)]).to_object(&ts.key));
            }
            match db.insert(&c.entity, obj.clone(), now) {
                Ok(k) => (k, Done::Written),
                // Two records created under one key at once (the incoming one new here, or
                // created anew after a tombstone): one record, as at the side that is given the
                // key (simulation, full workload, seed 1739).
                Err(r) if !key_given => {
                    return lands_on_new_local(db, c, None, &obj, superseded, now)
                        .ok_or_else(|| refused(db, c, r, &obj, None));
                }
                Err(r) => return Err(refused(db, c, r, &obj, None)),
            }
        }
    };
    put_link(db, c, Some(&target), false);
    Ok(won(Some(target), how, superseded))
}

/// A linked record whose new values the natural unique key refuses here, because a new record
/// of this side (not linked, its insert pending here) holds them: two records claimed one key
/// at once, so they end as one, as two created under one key do. The change lands on that
/// record (the policy decides against its pending changes), and the linked record's old row
/// goes, uncaptured: nothing of it is pending here (a conflict it lost is settled, one it won
/// beat them), so it is a copy of the incoming record. Not where other entities may refer to
/// it or deletes are soft: then it is refused, as before (`lands_on_new_local` in
/// `postgres/apply.rs`; found by the simulation's full workload, seed 471 and 17 more).
fn lands_on_new_local(
    db: &mut MemDb,
    c: &TargetChange,
    old: Option<&Key>,
    obj: &Image,
    beaten: Option<i64>,
    now: DateTime<Utc>,
) -> Option<Outcome> {
    let entity = db.entity(&c.entity).cloned()?;
    let cols = db.unique.get(&c.entity)?.clone();
    if let Some(old) = old {
        if db.config.is_referenced(&c.entity) || entity.soft_delete_at(db.side).is_some() {
            return None;
        }
        let pending_old = db
            .outbox
            .values()
            .any(|o| o.entity == c.entity && o.key == *old && !o.suspended);
        if pending_old {
            return None;
        }
    }
    let holder = natural_holder(db, &c.entity, &cols, obj, old)?;
    let linked = db
        .by_own(&c.entity, &holder)
        .is_some_and(|i| !db.id_map[i].deleted && db.id_map[i].peer.is_some());
    let new_here = db
        .outbox
        .values()
        .any(|o| o.entity == c.entity && o.key == holder && o.op == Op::Insert && !o.suspended);
    // An incoming creation lands only on a record created under this key: one moved here
    // meanwhile still travels as a move from its old values (simulation, full workload, seed
    // 760).
    let moved_here = old.is_none()
        && db
            .outbox
            .values()
            .any(|o| o.entity == c.entity && o.key == holder && !o.suspended && o.op != Op::Insert);
    if linked || !new_here || moved_here {
        return None;
    }
    if let Some(old) = old {
        db.delete(&c.entity, old, now);
    }
    match resolve_conflict(db, &entity, c, &holder, 0, now) {
        Resolution::LocalWins => {
            db.unlink_own(&c.entity, &c.source_key, &holder);
            db.link_seen(&c.entity, &c.source_key, Some(&holder), c.seq, false, true);
            Some(done(Some(holder), Done::ConflictLost, true))
        }
        r => {
            let mut superseded = beaten;
            if let Resolution::IncomingWins(seqs) = r {
                superseded = superseded.max(seqs.iter().copied().max());
                for s in &seqs {
                    db.outbox.remove(s);
                }
            }
            let mut obj = obj.clone();
            obj.extend(holder.to_object(&entity.side(db.side).key));
            db.update(&c.entity, &holder, &obj, now).ok()?;
            put_link(db, c, Some(&holder), false);
            Some(won(Some(holder), Done::Written, superseded))
        }
    }
}

/// The row here, other than `except`, holding `obj`'s values of the natural unique key `cols`
/// (`natural_holder` in `sql/postgres/statements.sql`).
fn natural_holder(
    db: &MemDb,
    entity: &str,
    cols: &[String],
    obj: &Image,
    except: Option<&Key>,
) -> Option<Key> {
    let values: Vec<Option<&Value>> = cols.iter().map(|col| obj.get(col)).collect();
    db.rows.get(entity).and_then(|t| {
        t.iter()
            .find(|(k, r)| {
                Some(*k) != except
                    && cols.iter().map(|col| r.get(col)).collect::<Vec<_>>() == values
            })
            .map(|(k, _)| k.clone())
    })
}

/// A write the database refused. After a foreign key: a parent linked here whose row is gone
/// makes the change wait (`parent_gone` in `postgres/apply.rs`); after the natural unique key,
/// a holder with changes on their way makes it wait too (`held_by_coming`); anything else
/// rejects it.
fn refused(db: &MemDb, c: &TargetChange, r: Refused, row: &Image, own: Option<&Key>) -> ApplyError {
    if r.0.starts_with("foreign key:") && !r.0.contains("still has children") {
        for rf in &c.refs {
            let own = match db
                .by_peer(&rf.parent, &rf.source_key)
                .map(|i| &db.id_map[i])
            {
                Some(m) => m.own.clone().filter(|_| !m.deleted),
                None => rf.hint.clone(),
            };
            if own.is_some_and(|k| db.row(&rf.parent, &k).is_none()) {
                return ApplyError::WaitingForParent {
                    context: context(db.side, c),
                    parent: rf.parent.clone(),
                    key: rf.source_key.to_string(),
                    state: ParentState::DeletedAtTarget,
                };
            }
        }
    }
    // A unique key whose holder here still has changes on their way to the source: they
    // decide the clash there, so the change waits for them (`ApplyError::KeyHeld`).
    if r.0.starts_with("unique constraint") {
        let cols = db.unique.get(&c.entity).cloned().unwrap_or_default();
        let holder = natural_holder(db, &c.entity, &cols, row, own);
        let coming = holder.as_ref().filter(|h| {
            db.outbox
                .values()
                .any(|o| o.entity == c.entity && o.key == **h && !o.suspended)
        });
        if let Some(h) = coming {
            return ApplyError::KeyHeld {
                context: context(db.side, c),
                message: r.0,
                holder: h.to_string(),
            };
        }
    }
    ApplyError::Rejected {
        context: context(db.side, c),
        message: r.0,
        code: None,
    }
}

fn resolve_refs(db: &MemDb, c: &TargetChange, row: &mut Image) -> Result<(), ApplyError> {
    for r in &c.refs {
        let (found, gone) = match db.by_peer(&r.parent, &r.source_key).map(|i| &db.id_map[i]) {
            Some(m) => {
                let gone = (m.deleted
                    || m.own
                        .as_ref()
                        .is_some_and(|o| db.deleted_here(&r.parent, o)))
                    && c.op != Op::Delete;
                (m.own.clone().filter(|_| !gone), gone)
            }
            // The source's hint, where this side has no link yet: a delete of that key pending
            // here makes it deleted too (simulation's full workload, seed 73430: the child
            // joined a new record under the key here, and stayed in the deleted one there).
            None => {
                let gone = r
                    .hint
                    .as_ref()
                    .is_some_and(|h| db.deleted_here(&r.parent, h))
                    && c.op != Op::Delete;
                (r.hint.clone().filter(|_| !gone), gone)
            }
        };
        let Some(parent_key) = found else {
            return Err(ApplyError::WaitingForParent {
                context: context(db.side, c),
                parent: r.parent.clone(),
                key: r.source_key.to_string(),
                state: ParentState::at_target(gone),
            });
        };
        let value = parent_key
            .values()
            .into_iter()
            .next()
            .unwrap_or(Value::Null);
        row.insert(r.column.clone(), value);
    }
    Ok(())
}

fn resolve_conflict(
    db: &mut MemDb,
    entity: &Entity,
    c: &TargetChange,
    here: &Key,
    after: i64,
    now: DateTime<Utc>,
) -> Resolution {
    let mut pending: Vec<&OutRow> = db
        .outbox
        .values()
        .filter(|o| o.entity == c.entity && o.key == *here && !o.suspended && o.seq > after)
        .collect();
    pending.sort_by_key(|o| std::cmp::Reverse(o.seq));
    let Some(newest) = pending.first() else {
        return Resolution::None;
    };
    // Changes of a row that is gone here without a captured delete: tandem deleted it,
    // applying the other side's delete, which could pass only once they had been applied
    // there (their replies lost): they decide nothing any more (found by the simulation: such
    // a change won against a new record with the same key and overwrote it there).
    if newest.op != Op::Delete && db.row(&c.entity, here).is_none() {
        let seqs: Vec<i64> = pending.iter().map(|o| o.seq).collect();
        for s in seqs {
            db.outbox.remove(&s);
        }
        return Resolution::None;
    }
    // Both sides deleted the record: they agree, there is nothing to decide. The local delete
    // travels and settles on nothing there; were one to lose, its write-back would take the
    // link for the winner coming back (keys given here), and revive the tombstone the other
    // side's delete wrote meanwhile (found by the fault suite's full workload, seed 5359).
    if c.op == Op::Delete && newest.op == Op::Delete {
        return Resolution::None;
    }
    let incoming = db.side.other();
    let local_derived = pending.iter().all(|o| o.derived);
    let winner = super::conflict_winner(
        entity.on_conflict,
        db.side,
        (c.captured_at, c.derived),
        (newest.captured_at, local_derived),
    );
    let newest_op = newest.op;
    let seqs: Vec<i64> = pending.iter().map(|o| o.seq).collect();
    db.conflicts += 1;
    if winner == incoming {
        Resolution::IncomingWins(seqs)
    } else {
        // All of them: an older one arriving there as an update would be discarded as an
        // update after that delete, and unlink the record (found by the simulation).
        if c.op == Op::Delete && newest_op != Op::Delete {
            // As new changes, in their order: a copy of one claimed before this conflict may
            // be on its way as an update still, and its reply must find its row gone (a late
            // reply changes nothing) instead of settling the insert it has become (found by the
            // fault suite's full workload, seed 5517; `local_reinsert` in statements.sql).
            let mut old: Vec<i64> = seqs.clone();
            old.sort_unstable();
            for s in old {
                if let Some(o) = db.outbox.remove(&s) {
                    let op = if o.op == Op::Update { Op::Insert } else { o.op };
                    let seq = db.next_seq;
                    db.next_seq += 1;
                    // Their retry state stays theirs; a new change, not sent yet (its new
                    // sequence is above the sent mark).
                    db.outbox.insert(seq, OutRow { seq, op, ..o });
                }
            }
            // The other side creates the record again, under a new key where its keys are
            // generated; its children there that outlived the delete (no foreign key) still
            // name the old one. Its children here travel again, ranked below any user change,
            // and move there under it (found by the simulation).
            for (child, k) in db.children(&c.entity, here) {
                // Where this side gives the child's key by values, a child whose newest change
                // pending here is an insert or an update travels again as an update: an insert
                // from here onto a live link there would name a new record under a reused key,
                // and its pending changes may have reached the other side already, their
                // replies lost, and settle there as stale, which left it under the old parent
                // there (simulation's full workload, seeds 76362 and 117946). Not one whose
                // newest is a delete: the row is here, so that delete lost there and its reply
                // was lost (full workload without key changes at A, seed 1264); it travels as
                // an insert. Where its key is generated, it travels again as an insert all the
                // same (seed 8748 and three more).
                let pending = db
                    .outbox
                    .values()
                    .rev()
                    .find(|o| o.entity == child && o.key == k && !o.suspended)
                    .is_some_and(|o| o.op != Op::Delete);
                let given = db.entity(&child).is_some_and(|e| e.key_is_given(db.side));
                let travels = db
                    .entity(&child)
                    .is_some_and(|e| e.direction.flows(db.side));
                let op = if pending && given {
                    Op::Update
                } else {
                    Op::Insert
                };
                if let Some(image) = db.row(&child, &k).cloned().filter(|_| travels) {
                    db.queue(&child, op, &k, &image, now, true);
                }
            }
        }
        // A local delete that beats the other side's change of a record not linked here (it
        // landed on this key) travels again, as a new change: a copy of it may have reached
        // the other side before that record was linked to this key there, and settled on
        // nothing, so its sequence is covered there already (found by the simulation's full
        // workload, seed 3053).
        let linked_here = db
            .by_peer(&c.entity, &c.source_key)
            .is_some_and(|i| db.id_map[i].own.as_ref() == Some(here) && !db.id_map[i].deleted);
        if c.op != Op::Delete && newest_op == Op::Delete && !linked_here {
            if let Some(o) = seqs.first().and_then(|s| db.outbox.get(s)).cloned() {
                db.queue(&o.entity, o.op, &o.key, &o.image, o.captured_at, o.derived);
            }
        }
        Resolution::LocalWins
    }
}

fn put_link(db: &mut MemDb, c: &TargetChange, target: Option<&Key>, deleted: bool) {
    if let Some(t) = target {
        db.unlink_own(&c.entity, &c.source_key, t);
    }
    db.link_applied(&c.entity, &c.source_key, target, c.seq, deleted);
}

#[async_trait]
impl Source for MemEndpoint {
    async fn claim(&self, limit: usize, skip: &[String]) -> Result<Vec<OutboxRow>, EndpointError> {
        Ok(self
            .claim_batch(limit, 0, &[], skip)
            .await?
            .unwrap_or_default())
    }

    async fn claim_batch(
        &self,
        limit: usize,
        after: i64,
        fold: &[String],
        skip: &[String],
    ) -> Result<Option<Vec<OutboxRow>>, EndpointError> {
        let lost = self.enter(Call::Claim)?;
        let now = self.clock.ms();
        let db = lock(&self.db);
        let head: Vec<&OutRow> = db
            .outbox
            .values()
            .filter(|o| {
                !o.suspended
                    && o.next_attempt_ms.is_none_or(|t| t <= now)
                    && o.seq > after
                    && !skip.contains(&o.entity)
            })
            .take(limit)
            .collect();
        let row = |o: &OutRow, pulled: bool| OutboxRow {
            seq: o.seq,
            entity: o.entity.clone(),
            op: o.op.code().to_string(),
            image: Some(serde_json::to_string(&o.image).unwrap_or_default()),
            captured_at: o.captured_at,
            attempts: o.attempts,
            pulled,
            key: Some(o.key.to_string()),
            derived: o.derived,
        };
        let mut out: Vec<OutboxRow> = head.iter().map(|o| row(o, false)).collect();
        // A head record's older changes still waiting for a retry come along (pulled).
        let mut first: BTreeMap<(&str, &Key), i64> = BTreeMap::new();
        for o in &head {
            first.entry((o.entity.as_str(), &o.key)).or_insert(o.seq);
        }
        out.extend(
            db.outbox
                .values()
                .filter(|w| {
                    !w.suspended
                        && w.next_attempt_ms.is_some_and(|t| t > now)
                        && first
                            .get(&(w.entity.as_str(), &w.key))
                            .is_some_and(|f| w.seq < *f)
                })
                .map(|w| row(w, true)),
        );
        if let Some(max) = head.iter().map(|o| o.seq).max() {
            let records: BTreeSet<(String, Key)> = head
                .iter()
                .filter(|o| fold.contains(&o.entity))
                .map(|o| (o.entity.clone(), o.key.clone()))
                .collect();
            let mut pulled = Vec::new();
            for (entity, key) in records {
                let run = db
                    .outbox
                    .values()
                    .filter(|o| o.entity == entity && o.key == key && o.seq > max)
                    .take(16)
                    .take_while(|o| o.op == Op::Update && !o.suspended && o.attempts == 0);
                pulled.extend(run.map(|o| row(o, true)));
            }
            pulled.sort_by_key(|r| r.seq);
            pulled.truncate(4 * limit);
            out.extend(pulled);
        }
        drop(db);
        self.leave(lost, Some(out))
    }

    async fn mark_sent(&self, seq: i64, resent: &[i64]) -> Result<(), EndpointError> {
        let lost = self.enter(Call::Claim)?;
        let mut db = lock(&self.db);
        db.sent_mark = db.sent_mark.max(seq);
        for s in resent {
            if let Some(o) = db.outbox.get_mut(s) {
                o.next_attempt_ms = None;
            }
        }
        drop(db);
        self.leave(lost, ())
    }

    async fn links(&self, entity: &str, keys: &[Key]) -> Result<HashMap<Key, Link>, EndpointError> {
        let lost = self.enter(Call::Claim)?;
        let db = lock(&self.db);
        let mut out = HashMap::new();
        for k in keys {
            if let Some(i) = db.by_own(entity, k) {
                let m = &db.id_map[i];
                out.insert(
                    k.clone(),
                    Link {
                        peer_key: m.peer.clone(),
                        deleted: m.deleted,
                        applied_seq: m.applied_seq,
                        updated_at: m.updated_at,
                    },
                );
            }
        }
        drop(db);
        self.leave(lost, out)
    }

    async fn rows_present(
        &self,
        entity: &str,
        keys: &[Key],
    ) -> Result<HashSet<Key>, EndpointError> {
        let lost = self.enter(Call::Claim)?;
        let db = lock(&self.db);
        let out = keys
            .iter()
            .filter(|k| db.row(entity, k).is_some())
            .cloned()
            .collect();
        drop(db);
        self.leave(lost, out)
    }

    async fn in_flight(&self, entity: &str, keys: &[Key]) -> Result<HashSet<Key>, EndpointError> {
        let lost = self.enter(Call::Claim)?;
        let db = lock(&self.db);
        let out = db
            .outbox
            .values()
            .filter(|o| o.entity == entity && keys.contains(&o.key))
            .map(|o| o.key.clone())
            .collect();
        drop(db);
        self.leave(lost, out)
    }

    async fn write_back(&self, wb: &WriteBack) -> Result<(), EndpointError> {
        let lost = self.enter(Call::WriteBack)?;
        let now_ms = self.clock.ms();
        let now = self.clock.now();
        let mut db = lock(&self.db);
        // A change whose outbox row is gone was settled by another instance's write-back
        // meanwhile (this one lost its lease): its reply is late and changes nothing
        // (`settled_now` in statements.sql).
        let settled: HashSet<i64> = wb
            .done
            .iter()
            .copied()
            .filter(|s| db.outbox.contains_key(s))
            .collect();
        // A stale report of a creation or update older than a creation of its key still
        // pending here, with no delete of the key pending between them, is of a record that
        // left the key before (moved by the other side's change): the row there now is another
        // record, whose link and peer id are its own (`born_again` in statements.sql;
        // simulation, variant without key changes at A, seed 111365). A delete pending between
        // them still needs the link to reach that record there, and a stale delete names the
        // record its side applied after it (default workload, seed 635583).
        let born_again = |l: &super::LinkWrite| {
            if !l.only_if_row || db.outbox.get(&l.seq).is_some_and(|o| o.op == Op::Delete) {
                return false;
            }
            let next = db
                .outbox
                .range(l.seq + 1..)
                .map(|(_, o)| o)
                .find(|o| o.entity == l.entity && o.key == l.own_key && o.op != Op::Update);
            next.is_some_and(|o| o.op == Op::Insert)
        };
        let links: Vec<&super::LinkWrite> = wb
            .links
            .iter()
            .filter(|l| settled.contains(&l.seq))
            .filter(|l| !born_again(l))
            .collect();
        let mut unpeered: Vec<(String, Key)> = Vec::new();
        for l in links.iter().filter(|l| !l.known) {
            if l.only_if_row && db.row(&l.entity, &l.own_key).is_none() {
                if let Some(p) = &l.peer_key {
                    db.repoint(&l.entity, &l.own_key, p);
                }
                continue;
            }
            // A late reply of a creation or an update leaves a tombstone of a record gone here
            // as it is: the record's delete came first (`gone_here` in postgres/apply.rs).
            if !l.deleted
                && db.row(&l.entity, &l.own_key).is_none()
                && db
                    .by_own(&l.entity, &l.own_key)
                    .is_some_and(|i| db.id_map[i].deleted)
            {
                continue;
            }
            // A delete's write-back leaves the peer to a live record here that holds it: the
            // other side re-created the record under that given key, and its creation already
            // reached this side (`unlink_peer` in statements.sql).
            let peer = l
                .peer_key
                .as_ref()
                .filter(|p| !(l.deleted && db.held_by_live(&l.entity, &l.own_key, p)));
            if let Some(p) = peer {
                for dup in db.unlink_peer(&l.entity, &l.own_key, p) {
                    db.drop_duplicate(&l.entity, &dup, now);
                    unpeered.push((l.entity.clone(), dup));
                }
            }
            db.link_written_back(&l.entity, &l.own_key, peer, l.deleted, l.peer_guard);
        }
        for l in links.iter().filter(|l| !l.deleted) {
            let (Some(peer), Some(col)) = (
                &l.peer_key,
                self.config
                    .entity(&l.entity)
                    .and_then(|e| e.side(self.side).peer_id_column.clone()),
            ) else {
                continue;
            };
            let mut set = Image::new();
            set.insert(col, peer.values().into_iter().next().unwrap_or(Value::Null));
            db.applying = Some(l.entity.clone());
            // A row that is gone has nothing to fill.
            let _ = db.update(&l.entity, &l.own_key, &set, now);
        }
        db.applying = None;
        for s in &wb.done {
            db.outbox.remove(s);
        }
        // A record that lost its peer, whose own change settled here lost its conflict there
        // (`LinkWrite::lost`), goes now that the settled changes left the outbox.
        for (entity, dup) in &unpeered {
            if links
                .iter()
                .any(|l| l.lost && l.entity == *entity && l.own_key == *dup)
            {
                db.drop_duplicate(entity, dup, now);
            }
        }
        for l in &links {
            db.outbox
                .retain(|_, o| !(o.entity == l.entity && o.key == l.own_key && o.seq < l.seq));
        }
        // A copy of a record gone at the other side, which its delete never reaches
        // (`LinkWrite::gone_there`): it goes, as a second copy does.
        for l in links.iter().filter(|l| l.gone_there) {
            db.drop_duplicate(&l.entity, &l.own_key, now);
        }
        // `retire_unpeered`: a link that lost its peer here, whose row is gone and that has no
        // change pending here, is a tombstone (simulation, full workload, seed 38559).
        for (entity, own) in &unpeered {
            let pending = db
                .outbox
                .values()
                .any(|o| o.entity == *entity && o.key == *own);
            if db.row(entity, own).is_some() || pending {
                continue;
            }
            if let Some(i) = db.by_own(entity, own) {
                let now = db.clock.now();
                let m = &mut db.id_map[i];
                if m.peer.is_none() {
                    m.deleted = true;
                    m.updated_at = now;
                }
            }
        }
        for f in &wb.failed {
            for s in &f.seqs {
                if let Some(o) = db.outbox.get_mut(s) {
                    o.attempts += 1;
                    o.next_attempt_ms =
                        Some(now_ms + i64::try_from(f.retry_in_ms).unwrap_or(i64::MAX / 4));
                    o.last_error = Some(f.error.clone());
                    o.suspended = f.suspend;
                }
            }
        }
        drop(db);
        self.leave(lost, ())
    }
}

#[async_trait]
impl Target for MemEndpoint {
    async fn apply(&self, batch: &[TargetChange]) -> Result<Vec<Outcome>, EndpointError> {
        let lost = self.enter(Call::Apply)?;
        let now = self.clock.now();
        let mut db = lock(&self.db);
        let mut outcomes = Vec::with_capacity(batch.len());
        for c in batch {
            // A savepoint per change: a refused change is rolled back alone.
            let savepoint = db.clone();
            match apply_one(&mut db, c, now) {
                Ok(o) => outcomes.push(o),
                Err(e) => {
                    db.rollback_to(savepoint);
                    outcomes.push(Outcome::Failed(e));
                }
            }
            db.applying = None;
        }
        drop(db);
        self.leave(lost, outcomes)
    }
}

#[async_trait]
impl Admin for MemEndpoint {
    fn side(&self) -> Side {
        self.side
    }
    fn install_script(&self) -> String {
        String::new()
    }
    fn uninstall_script(&self) -> String {
        String::new()
    }
    async fn install(&self) -> Result<(), EndpointError> {
        Ok(())
    }
    async fn uninstall(&self) -> Result<(), EndpointError> {
        Ok(())
    }
    async fn ping(&self) -> Result<(), EndpointError> {
        self.enter(Call::Claim).map(|_| ())
    }
    async fn check(&self) -> Result<Vec<SchemaProblem>, EndpointError> {
        Ok(Vec::new())
    }
    async fn describe(
        &self,
        _entity: &str,
    ) -> Result<Option<super::desc::TableDesc>, EndpointError> {
        Ok(None)
    }
    async fn install_state(&self) -> Result<InstallState, EndpointError> {
        let n = self.config.entities.len();
        Ok(InstallState::Installed {
            triggers: n,
            expected: n,
            format: Some(super::INSTALL_FORMAT),
        })
    }
    async fn status(&self) -> Result<Vec<EntityStatus>, EndpointError> {
        let db = lock(&self.db);
        Ok(self
            .config
            .entities
            .iter()
            .map(|e| EntityStatus {
                entity: e.name.clone(),
                pending: db
                    .outbox
                    .values()
                    .filter(|o| o.entity == e.name && !o.suspended)
                    .count() as i64,
                suspended: db
                    .outbox
                    .values()
                    .filter(|o| o.entity == e.name && o.suspended)
                    .count() as i64,
                oldest_pending: None,
                linked: db.id_map.iter().filter(|m| m.entity == e.name).count() as i64,
                conflicts: 0,
            })
            .collect())
    }
    async fn suspended(
        &self,
        seq: Option<i64>,
        limit: i64,
    ) -> Result<Vec<SuspendedChange>, EndpointError> {
        let db = lock(&self.db);
        Ok(db
            .outbox
            .values()
            .filter(|o| o.suspended && seq.is_none_or(|s| s == o.seq))
            .take(usize::try_from(limit).unwrap_or(0))
            .map(|o| SuspendedChange {
                side: self.side,
                seq: o.seq,
                entity: o.entity.clone(),
                op: o.op.code().to_string(),
                key: o.key.to_string(),
                attempts: o.attempts,
                captured_at: o.captured_at,
                first_failed_at: None,
                last_failed_at: None,
                last_error: o.last_error.clone(),
                image: serde_json::to_string(&o.image).unwrap_or_default(),
            })
            .collect())
    }
    async fn resubmit(&self, seq: Option<i64>) -> Result<u64, EndpointError> {
        let mut db = lock(&self.db);
        let mut n = 0;
        for o in db.outbox.values_mut() {
            if o.suspended && seq.is_none_or(|s| s == o.seq) {
                o.suspended = false;
                o.attempts = 0;
                o.next_attempt_ms = None;
                n += 1;
            }
        }
        Ok(n)
    }
    async fn discard(&self, seq: i64) -> Result<Option<SuspendedChange>, EndpointError> {
        let found = self.suspended(Some(seq), 1).await?.into_iter().next();
        if found.is_some() {
            lock(&self.db).outbox.remove(&seq);
        }
        Ok(found)
    }
}

impl Endpoint for MemEndpoint {
    fn bulk(&self) -> Option<&dyn super::Bulk> {
        None
    }

    fn reference(&self) -> Option<&dyn super::Reference> {
        None
    }
}
