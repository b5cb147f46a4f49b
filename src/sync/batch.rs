//! One batch of one direction: claim → decode → coalesce → map → order parents first →
//! apply → write back. Knows no SQL; the endpoints do the database work.

use std::collections::{BTreeMap, HashMap, HashSet};

use tracing::{debug, info, warn};

use crate::config::{Config, Side};
use crate::endpoint::{
    ApplyError, Done, Endpoint, EndpointError, Failure, Link, LinkWrite, Outcome, ParentState,
    WriteBack,
};
use crate::mapping::{coalesce, folded_op, map_change, visible_op, MappingError};
use crate::model::{Change, Image, Key, Op, OutboxRow, TargetChange};
use crate::sync::policy::{Decision, Policy};

/// What one batch did.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct BatchReport {
    /// Outbox rows claimed.
    pub claimed: usize,
    /// Changes written at the target.
    pub written: usize,
    /// Changes whose image the target already held.
    pub unchanged: usize,
    /// Duplicates and old images discarded by the sequence guard.
    pub stale: usize,
    /// Updates of records deleted at the target, discarded.
    pub deleted: usize,
    /// Changes that failed and will be retried.
    pub failed: usize,
    /// Changes suspended for an operator.
    pub suspended: usize,
    /// Records that had changed on both sides (resolved by the entity's `on_conflict`).
    pub conflicts: usize,
    /// Seconds from capture to commit at the target, per change written (for the latency
    /// histogram; `add` does not keep them).
    pub latencies_s: Vec<f64>,
    /// Changes written, per entity (for the status page's rates; `add` keeps them).
    pub written_by_entity: BTreeMap<String, usize>,
}

impl BatchReport {
    /// Adds another report's counts.
    pub fn add(&mut self, o: &BatchReport) {
        self.claimed += o.claimed;
        self.written += o.written;
        self.unchanged += o.unchanged;
        self.stale += o.stale;
        self.deleted += o.deleted;
        self.failed += o.failed;
        self.suspended += o.suspended;
        self.conflicts += o.conflicts;
        for (e, n) in &o.written_by_entity {
            *self.written_by_entity.entry(e.clone()).or_default() += n;
        }
    }
}

/// A change that could not be applied, with what its report needs.
struct Failed {
    seqs: Vec<i64>,
    attempts: i32,
    error: ApplyError,
    entity: Option<String>,
    key: Option<Key>,
}

/// A change on its way, with everything needed to report on it.
struct Pending {
    change: Change,
    seqs: Vec<i64>,
}

/// A batch between its stages: claimed, decoded and mapped at the source ([`stage`]),
/// applied at the target ([`apply_staged`]), then settled at the source ([`finish`]).
pub struct Staged {
    report: BatchReport,
    wb: WriteBack,
    failures: Vec<Failed>,
    batch: Vec<TargetChange>,
    attempts: Vec<i32>,
    /// Every outbox sequence the batch claimed.
    pub seqs: Vec<i64>,
    /// How many of the oldest pending rows the claim returned (0: nothing is pending), counting
    /// rows left out because an earlier batch of the burst still holds them.
    pub head_rows: usize,
    /// The highest sequence among those: the next batch of a burst claims after it.
    pub head_max: i64,
    /// Claimed with `claim_batch`: the next batch may be claimed before this one is settled.
    pub pipelined: bool,
    /// Records of the batches of the burst still in flight when this one was claimed: their
    /// write-backs may land after this claim read the links, so its hints of those records
    /// prove nothing about the id map at settling time (see [`LinkWrite::known`]).
    untrusted: HashSet<(String, Key)>,
}

impl Staged {
    /// Outbox rows this batch claimed.
    pub fn claimed(&self) -> usize {
        self.report.claimed
    }

    /// The changes to apply, in order (for traces and tests).
    pub fn changes(&self) -> &[TargetChange] {
        &self.batch
    }

    /// Marks the records of the burst's batches still in flight when this one was claimed:
    /// their write-backs may land after this claim read the links, so its hints of them prove
    /// nothing about the id map at settling time ([`LinkWrite::known`]), nor that they predate
    /// a change ([`TargetChange::hint_predates`]: the in-flight batch may be re-linking the
    /// key to another record right now).
    pub fn distrust(&mut self, records: HashSet<(String, Key)>) {
        for c in self.batch.iter_mut().filter(|c| c.hint_predates) {
            if records.contains(&(c.entity.clone(), c.source_key.clone())) {
                c.hint_predates = false;
            }
        }
        self.untrusted = records;
    }
}

/// Runs one batch from `from` to `to`.
pub async fn run_batch(
    config: &Config,
    from: &dyn Endpoint,
    to: &dyn Endpoint,
) -> Result<BatchReport, EndpointError> {
    let staged = stage(config, from, 0, &HashSet::new(), &[]).await?;
    complete(config, from, to, staged).await
}

/// Applies a staged batch and settles it, one after the other.
pub async fn complete(
    config: &Config,
    from: &dyn Endpoint,
    to: &dyn Endpoint,
    staged: Staged,
) -> Result<BatchReport, EndpointError> {
    if staged.claimed() == 0 {
        return Ok(staged.report);
    }
    let mut staged = staged;
    let outcomes = apply_staged(config, to, &mut staged, &mut Held::new()).await?;
    finish(config, from, staged, outcomes, chrono::Utc::now()).await
}

/// Raises the sent mark to the batch's newest change of a record whose key this side gives by
/// values, before the batch is applied (`Source::mark_sent`; one statement, none for a batch
/// without such changes), and marks those that failed before as sent again: the other side's
/// new record meeting one of those inserts under its key waits for its reply instead of
/// merging with it. So it does for an update after a pending insert: it travels as that
/// insert where the insert failed earlier in the burst (found by the simulation's variant
/// without key changes at A, seed 62166). A delete at or below the mark went with the record's
/// insert (one change that created nothing) or after it (and reached the copy); one above it
/// has not left yet, and the other side's new record waits for that too.
async fn mark_sent(
    config: &Config,
    from: &dyn Endpoint,
    rows: &[OutboxRow],
) -> Result<(), EndpointError> {
    let side = from.side();
    let marked: Vec<&OutboxRow> = rows
        .iter()
        .filter(|r| {
            Op::from_code(&r.op).is_some()
                && config
                    .entity(&r.entity)
                    .is_some_and(|e| e.key_is_given(side))
        })
        .collect();
    let resent: Vec<i64> = marked
        .iter()
        .filter(|r| r.attempts > 0)
        .map(|r| r.seq)
        .collect();
    match marked.iter().map(|r| r.seq).max() {
        Some(seq) => from.mark_sent(seq, &resent).await,
        None => Ok(()),
    }
}

/// Entities whose later plain updates a batch may fold in: they flow from `side` and refer
/// to no parent (an update of a child may name a parent created after the batch's rows).
fn foldable(config: &Config, side: Side) -> Vec<String> {
    config
        .entities
        .iter()
        .filter(|e| e.direction.flows(side) && e.columns.iter().all(|c| c.parent.is_none()))
        .map(|e| e.name.clone())
        .collect()
}

/// Claims the next batch at the source (after sequence `after`, leaving out the rows in
/// `in_flight` and every change of a `paused` entity), decodes, coalesces and maps it.
pub async fn stage(
    config: &Config,
    from: &dyn Endpoint,
    after: i64,
    in_flight: &HashSet<i64>,
    paused: &[String],
) -> Result<Staged, EndpointError> {
    let side = from.side();
    let limit = config.sync.batch_size;
    let (rows, pipelined) = match from
        .claim_batch(limit, after, &foldable(config, side), paused)
        .await?
    {
        Some(rows) => (rows, true),
        None if after == 0 => (from.claim(limit, paused).await?, false),
        None => (Vec::new(), false),
    };
    let head: Vec<i64> = rows.iter().filter(|r| !r.pulled).map(|r| r.seq).collect();
    let head_rows = head.len();
    let head_max = head.iter().copied().max().unwrap_or(after);
    // A row may come twice (a record's older waiting change, pulled along by two of its
    // newer ones): once is enough.
    let mut seen = HashSet::new();
    let rows: Vec<OutboxRow> = rows
        .into_iter()
        .filter(|r| !in_flight.contains(&r.seq) && seen.insert(r.seq))
        .collect();
    mark_sent(config, from, &rows).await?;
    let mut staged = Staged {
        report: BatchReport {
            claimed: rows.len(),
            ..Default::default()
        },
        wb: WriteBack::default(),
        failures: Vec::new(),
        batch: Vec::new(),
        attempts: Vec::new(),
        seqs: rows.iter().map(|r| r.seq).collect(),
        head_rows,
        head_max,
        pipelined,
        untrusted: HashSet::new(),
    };
    if rows.is_empty() {
        return Ok(staged);
    }
    let wb = &mut staged.wb;
    let failures = &mut staged.failures;

    // Group the rows of each record. Rows the claim names a record for (its outbox key) are
    // grouped unread: only the newest of a group carries an image, and is decoded.
    let mut groups: BTreeMap<(String, String), Vec<OutboxRow>> = BTreeMap::new();
    let mut loose: Vec<OutboxRow> = Vec::new();
    for row in rows {
        match &row.key {
            Some(k) => groups
                .entry((row.entity.clone(), k.clone()))
                .or_default()
                .push(row),
            None => loose.push(row),
        }
    }
    // Each record's changes, each with the outbox rows it stands for.
    let mut runs: BTreeMap<(String, Key), Vec<Pending>> = BTreeMap::new();
    for mut group in groups.into_values() {
        group.sort_by_key(|r| r.seq);
        let ops: Vec<Op> = group.iter().filter_map(|r| Op::from_code(&r.op)).collect();
        let seqs: Vec<i64> = group.iter().map(|r| r.seq).collect();
        let attempts = group.iter().map(|r| r.attempts).max().unwrap_or(0);
        let derived = group.iter().all(|r| r.derived);
        let Some(newest) = group.pop() else {
            continue;
        };
        let folded = (ops.len() == seqs.len()).then(|| folded_op(&ops)).flatten();
        match decode(config, side, &newest) {
            Ok(Some(mut c)) => {
                c.op = folded.unwrap_or(c.op);
                c.attempts = attempts;
                c.derived = derived;
                c.born = ops.len() == seqs.len() && ops.first() == Some(&Op::Insert);
                runs.entry((c.entity.clone(), c.key.clone()))
                    .or_default()
                    .push(Pending { change: c, seqs });
            }
            Ok(None) => wb.done.extend(seqs),
            Err(error) => failures.push(Failed {
                seqs,
                attempts,
                error,
                entity: None,
                key: None,
            }),
        }
    }
    for row in loose {
        let (seq, attempts) = (row.seq, row.attempts);
        match decode(config, side, &row) {
            Ok(Some(c)) => runs
                .entry((c.entity.clone(), c.key.clone()))
                .or_default()
                .push(Pending {
                    change: c,
                    seqs: vec![seq],
                }),
            Ok(None) => wb.done.push(seq),
            Err(error) => failures.push(Failed {
                seqs: vec![seq],
                attempts,
                error,
                entity: None,
                key: None,
            }),
        }
    }
    let pending: Vec<Pending> = runs
        .into_values()
        .filter_map(|mut run| {
            if run.len() == 1 {
                return run.pop();
            }
            let mut seqs: Vec<i64> = run.iter().flat_map(|p| p.seqs.iter().copied()).collect();
            seqs.sort_unstable();
            let changes: Vec<Change> = run.into_iter().map(|p| p.change).collect();
            let (change, _) = coalesce(&changes)?;
            Some(Pending { change, seqs })
        })
        .collect();

    // Links the source already knows (made by changes from the target whose write-back to
    // the target may not have happened yet): the record's own, and its parents'.
    let hints = source_links(config, from, &pending).await?;

    // Map, then order: parents before children for upserts, children before parents for deletes.
    let order: HashMap<&str, usize> = config
        .entities_parents_first()
        .iter()
        .enumerate()
        .map(|(i, e)| (e.name.as_str(), i))
        .collect();
    let mut mapped: Vec<(TargetChange, i32)> = Vec::new();
    for p in pending {
        let Some(entity) = config.entity(&p.change.entity) else {
            continue;
        };
        let link = hints.get(&(p.change.entity.clone(), p.change.key.clone()));
        // Soft deletes and row filters at the source: a hidden row travels as a delete, one
        // that came back as an insert (decided here, from the full image the trigger wrote).
        let mut change = p.change;
        change.op = visible_op(entity, side, &change, link.is_some_and(|l| l.deleted));
        let p = Pending {
            change,
            seqs: p.seqs,
        };
        match map_change(
            entity,
            side,
            &p.change,
            p.seqs.clone(),
            link.and_then(live_peer),
        ) {
            Ok(mut tc) => {
                tc.peer_applied_seq = link.map_or(0, |l| l.applied_seq);
                // Only a delete asks (`TargetChange::delete_hint_holds`).
                tc.hint_predates = tc.op == Op::Delete
                    && tc.peer_hint.is_some()
                    && link.is_some_and(|l| l.updated_at < p.change.captured_at);
                for r in &mut tc.refs {
                    r.hint = hints
                        .get(&(r.parent.clone(), r.source_key.clone()))
                        .and_then(live_peer);
                }
                mapped.push((tc, p.change.attempts));
            }
            Err(e) => failures.push(Failed {
                seqs: p.seqs,
                attempts: p.change.attempts,
                error: e.into(),
                entity: Some(p.change.entity.clone()),
                key: Some(p.change.key.clone()),
            }),
        }
    }
    // Look-ups whose reference table is here, at the source (B → A: B's id → A's code, with
    // the table on B): one read per reference table and column pair for the batch.
    let mut refs_here: Vec<&mut TargetChange> = mapped.iter_mut().map(|(c, _)| c).collect();
    let errors = resolve_lookups(config, from, side.other(), &mut refs_here).await?;
    if !errors.is_empty() {
        let mut errors = errors;
        let mut kept = Vec::with_capacity(mapped.len());
        for (i, (c, attempts)) in mapped.into_iter().enumerate() {
            match errors.remove(&i) {
                Some(error) => failures.push(Failed {
                    seqs: c.seqs,
                    attempts,
                    error,
                    entity: Some(c.entity),
                    key: Some(c.source_key),
                }),
                None => kept.push((c, attempts)),
            }
        }
        mapped = kept;
    }
    // Upserts go parents first. Deletes of an entity that is nobody's parent go just before
    // its upserts: a record deleted and another created with the same values in one batch
    // (an application that saves an order by replacing its lines) frees the key first, where
    // keys are given by values. Deletes of parents go last, children first, after every
    // child was moved away or deleted.
    let parents: HashSet<&str> = config
        .entities
        .iter()
        .flat_map(|e| e.columns.iter().filter_map(|c| c.parent.as_deref()))
        .collect();
    mapped.sort_by_key(|(c, _)| {
        let rank = order.get(c.entity.as_str()).copied().unwrap_or(0) as i64;
        match c.op {
            Op::Delete if parents.contains(c.entity.as_str()) => (1, -rank, 0, c.seq),
            Op::Delete => (0, rank, 0, c.seq),
            _ => (0, rank, 1, c.seq),
        }
    });
    // Within an entity that references itself: parents first, cycles broken.
    let mapped = super::order::order_self_references(config, mapped);
    (staged.batch, staged.attempts) = mapped.into_iter().unzip();
    Ok(staged)
}

/// Records whose change failed earlier in a burst, with that change's op; and records of an
/// entity that shows only some rows at the source (`soft_delete`, `filter`) whose delete was
/// settled earlier in the burst (`Op::Delete`): their link hints, read while that delete was
/// still being written back, may not show its tombstone yet.
pub type Held = HashMap<(String, Key), Op>;

/// Applies a staged batch at the target (in one transaction there). A change of a record in
/// `held` (its change in an earlier batch of the same burst failed: a batch is claimed while
/// the one before is still being applied) carries that change along, its op folded with it
/// as if both had been claimed together (an update after a failed insert is that insert);
/// records whose change fails here are added to `held`.
pub async fn apply_staged(
    config: &Config,
    to: &dyn Endpoint,
    staged: &mut Staged,
    held: &mut Held,
) -> Result<Vec<Outcome>, EndpointError> {
    if staged.batch.is_empty() {
        return Ok(Vec::new());
    }
    let from = to.side().other();
    let restricted = |entity: &str| config.entity(entity).is_some_and(|e| e.restricted_at(from));
    for c in &mut staged.batch {
        if let Some(earlier) = held.get(&(c.entity.clone(), c.source_key.clone())) {
            // A row that left (hidden: a delete) and came back in one burst re-creates the
            // record, as `visible_op` decides from a tombstone: an update would be discarded
            // as an update after a delete, and the record lost at the target.
            c.op = if *earlier == Op::Delete && c.op == Op::Update && restricted(&c.entity) {
                Op::Insert
            } else {
                folded_op(&[*earlier, c.op]).unwrap_or(c.op)
            };
        }
    }
    // Look-ups whose reference table is at the target (A → B: A's code → B's id, with the
    // table on B); a change with a value the table does not have fails alone.
    let mut changes: Vec<&mut TargetChange> = staged.batch.iter_mut().collect();
    let mut errors = resolve_lookups(config, to, to.side(), &mut changes).await?;
    for (i, c) in staged.batch.iter().enumerate() {
        // Never applied with a look-up unresolved (its column would be written NULL).
        if let Some(l) = c.lookups.first() {
            errors.entry(i).or_insert_with(|| {
                ApplyError::Mapping(Box::new(MappingError {
                    entity: c.entity.clone(),
                    side: to.side().other(),
                    table: String::new(),
                    column: l.source_column.clone(),
                    key: c.source_key.to_string(),
                    message: "internal: look-up not resolved".into(),
                }))
            });
        }
    }
    keep_detail(config, to, &mut staged.batch).await?;
    let outcomes = if errors.is_empty() {
        to.apply(&staged.batch).await?
    } else {
        let rest: Vec<TargetChange> = staged
            .batch
            .iter()
            .enumerate()
            .filter(|(i, _)| !errors.contains_key(i))
            .map(|(_, c)| c.clone())
            .collect();
        let mut applied = if rest.is_empty() {
            Vec::new()
        } else {
            to.apply(&rest).await?
        }
        .into_iter();
        let mut outcomes = Vec::with_capacity(staged.batch.len());
        for i in 0..staged.batch.len() {
            match errors.remove(&i) {
                Some(e) => outcomes.push(Outcome::Failed(e)),
                None => outcomes.push(applied.next().ok_or_else(|| {
                    EndpointError::Config("internal: the target returned too few outcomes".into())
                })?),
            }
        }
        outcomes
    };
    for (c, o) in staged.batch.iter().zip(&outcomes) {
        let record = (c.entity.clone(), c.source_key.clone());
        if matches!(o, Outcome::Failed(_))
            || (c.op == Op::Delete && !super::order::is_pre_step(c) && restricted(&c.entity))
        {
            held.insert(record, c.op);
        } else {
            held.remove(&record);
        }
    }
    Ok(outcomes)
}

/// Resolves the look-ups (`lookup`) of `changes` (travelling into `to`) whose reference table
/// is on `ep`'s side: one read per reference table and column pair for all of them
/// (`Reference::look_up`), nothing cached across batches (a row added to the reference table
/// is found by the next batch). A resolved value replaces the column's NULL placeholder; a
/// value the table does not have, or has more than once, is the change's error (by index in
/// `changes`), which the retry policy retries and then suspends: never dropped, never written
/// as NULL.
async fn resolve_lookups(
    config: &Config,
    ep: &dyn Endpoint,
    to: Side,
    changes: &mut [&mut TargetChange],
) -> Result<HashMap<usize, ApplyError>, EndpointError> {
    let here = ep.side();
    let from = to.other();
    // (table, by, out) → every (change, look-up index, value as text) that needs it.
    type Wanted =
        BTreeMap<(String, String, String), (crate::config::Lookup, Vec<(usize, usize, String)>)>;
    let mut wanted: Wanted = BTreeMap::new();
    for (i, c) in changes.iter().enumerate() {
        let Some(entity) = config.entity(&c.entity) else {
            continue;
        };
        for (j, l) in c.lookups.iter().enumerate() {
            let Some(lookup) = entity
                .columns
                .iter()
                .find(|col| col.name(to) == l.column)
                .and_then(|col| col.lookup.as_ref())
                .filter(|lk| lk.side == here)
            else {
                continue;
            };
            let (by, out) = lookup.by_and_out(to);
            let text = crate::model::value_text(&l.value).unwrap_or_default();
            wanted
                .entry((lookup.table.to_string(), by.to_string(), out.to_string()))
                .or_insert_with(|| (lookup.clone(), Vec::new()))
                .1
                .push((i, j, text));
        }
    }
    let mut errors = HashMap::new();
    if wanted.is_empty() {
        return Ok(errors);
    }
    let reference = crate::endpoint::reference(ep)?;
    let mut resolved: Vec<(usize, usize)> = Vec::new();
    for ((_, by, out), (lookup, needs)) in wanted {
        let mut values: Vec<String> = needs.iter().map(|(_, _, v)| v.clone()).collect();
        values.sort();
        values.dedup();
        let mut found: HashMap<String, Vec<serde_json::Value>> = HashMap::new();
        for (asked, v) in reference.look_up(&lookup.table, &by, &out, &values).await? {
            found.entry(asked).or_default().push(v);
        }
        for (i, j, text) in needs {
            let c = &mut changes[i];
            let problem = match found.get(&text).map(Vec::as_slice) {
                Some([v]) => {
                    let column = c.lookups[j].column.clone();
                    c.row.insert(column, v.clone());
                    resolved.push((i, j));
                    continue;
                }
                Some(several) => format!(
                    "value {} matches {} rows of reference table {} (side {here}) by its column {by}: a look-up needs {by} unique there",
                    c.lookups[j].value,
                    several.len(),
                    lookup.table
                ),
                None => format!(
                    "value {} has no match in reference table {} (side {here}): no row whose {by} is {}; add that row there (or correct the value): the change is retried, then suspended for `tandem suspended resubmit`",
                    c.lookups[j].value, lookup.table, c.lookups[j].value
                ),
            };
            let entity = config.entity(&c.entity);
            errors.entry(i).or_insert_with(|| {
                ApplyError::Mapping(Box::new(MappingError {
                    entity: c.entity.clone(),
                    side: from,
                    table: entity.map_or(String::new(), |e| e.side(from).table.to_string()),
                    column: c.lookups[j].source_column.clone(),
                    key: c.source_key.to_string(),
                    message: problem,
                }))
            });
        }
    }
    // Resolved look-ups leave the change (highest index first, so the others stay in place).
    resolved.sort_unstable_by(|x, y| y.cmp(x));
    for (i, j) in resolved {
        changes[i].lookups.remove(j);
    }
    Ok(errors)
}

/// The lossy rule before applying (`mapping::keep_detail`): the records with converted
/// columns that exist at the target are read there, one set-based read per entity per batch
/// (`Bulk::fetch_images`), and a column whose value is equal to the incoming one keeps it. Read
/// outside the apply's transaction: should the row change in between, the writer's change is
/// pending at the target and the apply meets it as a conflict, and the value kept is still one
/// equal to the incoming value. An endpoint that cannot read rows (the simulation's) applies
/// the converted values as they are.
async fn keep_detail(
    config: &Config,
    to: &dyn Endpoint,
    batch: &mut [TargetChange],
) -> Result<(), EndpointError> {
    let Some(bulk) = to.bulk() else {
        return Ok(());
    };
    let here = to.side();
    // Each change that needs the read, with the target key it is read by, per entity.
    let mut wanted: BTreeMap<String, Vec<(usize, Key)>> = BTreeMap::new();
    for (i, c) in batch.iter().enumerate() {
        if c.incoming.is_empty() || c.op == Op::Delete {
            continue;
        }
        let Some(entity) = config.entity(&c.entity) else {
            continue;
        };
        let key = c.peer_hint.clone().or_else(|| {
            (entity.key_is_given(here) && c.refs.is_empty())
                .then(|| Key::from_image(&c.row, &entity.side(here).key).ok())
                .flatten()
        });
        if let Some(key) = key {
            wanted.entry(c.entity.clone()).or_default().push((i, key));
        }
    }
    for (name, changes) in wanted {
        let Some(entity) = config.entity(&name) else {
            continue;
        };
        let mut keys: Vec<Key> = changes.iter().map(|(_, k)| k.clone()).collect();
        keys.sort();
        keys.dedup();
        let current = bulk.fetch_images(&name, &keys).await?;
        for (i, key) in changes {
            if let (Some(now), Some(c)) = (current.get(&key), batch.get_mut(i)) {
                crate::mapping::keep_detail(entity, here, c, now);
            }
        }
    }
    Ok(())
}

/// Settles an applied batch at the source: outcomes counted and logged, id pairs written
/// back, done rows removed, failures noted for their retry or suspended. `applied_at`: when
/// the target committed (the end of each written change's latency).
pub async fn finish(
    config: &Config,
    from: &dyn Endpoint,
    staged: Staged,
    outcomes: Vec<Outcome>,
    applied_at: chrono::DateTime<chrono::Utc>,
) -> Result<BatchReport, EndpointError> {
    let side = from.side();
    let Staged {
        mut report,
        mut wb,
        mut failures,
        batch,
        attempts,
        untrusted,
        ..
    } = staged;
    if report.claimed == 0 {
        return Ok(report);
    }
    for ((change, attempts), outcome) in batch.iter().zip(attempts).zip(outcomes) {
        // A pre-step stands for no outbox row: its change, later in the batch, settles.
        if super::order::is_pre_step(change) {
            continue;
        }
        match outcome {
            Outcome::Done {
                target_key,
                how,
                conflict,
                superseded,
                moot,
            } => {
                if conflict {
                    report.conflicts += 1;
                }
                match how {
                    Done::Written => {
                        report.written += 1;
                        *report
                            .written_by_entity
                            .entry(change.entity.clone())
                            .or_default() += 1;
                        let lag = applied_at - change.captured_at;
                        report
                            .latencies_s
                            .push(lag.num_microseconds().unwrap_or(0).max(0) as f64 / 1e6);
                    }
                    Done::Unchanged => report.unchanged += 1,
                    Done::Stale | Done::StaleDeleted => report.stale += 1,
                    Done::Deleted => report.deleted += 1,
                    Done::ConflictLost => {}
                }
                debug!(entity = %change.entity, from = %side, key = %change.source_key,
                       target_key = ?target_key.as_ref().map(Key::as_str), ?how, op = %change.op, "settled");
                if how == Done::Deleted {
                    info!(entity = %change.entity, from = %side, key = %change.source_key,
                          "{} discarded: the record was deleted at side {}", change.op, side.other());
                }
                // Moot: the record is gone at the target too (a child created while its
                // parent was deleted there, and removed here by the cascade; an old copy).
                if (target_key.is_none() && (how == Done::Stale || change.op == Op::Delete))
                    || how == Done::StaleDeleted
                {
                    info!(entity = %change.entity, from = %side, key = %change.source_key,
                          "{} settled without effect: the record is gone at side {} too",
                          change.op, side.other());
                }
                if !moot.is_empty() {
                    info!(entity = %change.entity, side = %side.other(),
                          key = ?target_key.as_ref().map(Key::as_str), seqs = ?moot,
                          "{} change(s) at side {} settled without effect (suspended, or seen at \
                           side {side} already): this delete from side {side} removed the record \
                           there, and it is gone at side {side} too",
                          moot.len(), side.other());
                }
                wb.done.extend(&change.seqs);
                // A stale change (applied already, or older than what was) reports the record
                // as the target holds it now: without a target key, or as `StaleDeleted` (the
                // key it had there), it is gone there (its link stays a tombstone here too,
                // naming the peer), with one it lives there, whatever this copy's op
                // (the copy of a delete that lost a conflict must not tombstone the record the
                // winner created again: found by the simulation).
                // A delete that lost a conflict where this side's keys are given by values:
                // the winner comes back here under the same key, so the link stays live.
                let lost_reused = how == Done::ConflictLost
                    && config
                        .entity(&change.entity)
                        .is_some_and(|e| e.key_is_given(side));
                let deleted = match how {
                    Done::Stale => target_key.is_none(),
                    Done::StaleDeleted => true,
                    _ => (change.op == Op::Delete && !lost_reused) || how == Done::Deleted,
                };
                // `peer_hint` is the live link the source held when the batch was claimed. Only
                // an update may trust it: batches of the same burst still being settled may
                // change the link of a record deleted or re-created in them, but a record's
                // update comes after such changes and leaves a live link to the same key.
                // A hint read while an earlier batch of the burst still wrote this record's
                // link back may be older than that write: a record moved at a target whose
                // keys are given by values (there and back) kept the middle key (found by the
                // simulation's full workload, seed 1365).
                let known = change.op == Op::Update
                    && !untrusted.contains(&(change.entity.clone(), change.source_key.clone()))
                    && superseded.is_none()
                    && !deleted
                    && target_key.is_some()
                    && change.peer_hint == target_key;
                let only_if_row = how == Done::Stale && !deleted;
                wb.links.push(LinkWrite {
                    entity: change.entity.clone(),
                    own_key: change.source_key.clone(),
                    peer_key: target_key,
                    deleted,
                    seq: change.seq,
                    known,
                    only_if_row,
                    peer_guard: superseded,
                    gone_there: deleted && change.op != Op::Delete,
                    lost: how == Done::ConflictLost,
                });
            }
            Outcome::Failed(error) => failures.push(Failed {
                seqs: change.seqs.clone(),
                attempts,
                error,
                entity: Some(change.entity.clone()),
                key: Some(change.source_key.clone()),
            }),
        }
    }

    parents_deleted_at_source(from, &mut failures).await?;
    let waiting = parents_in_flight(from, &failures).await?;
    let policy = Policy::new(&config.sync);
    for Failed {
        seqs,
        attempts,
        error,
        entity,
        key,
    } in failures
    {
        let attempt = u32::try_from(attempts).unwrap_or(0);
        // A child whose parent is still on its way (pending, or suspended for an operator),
        // or whose parent's delete at the target is still on its way here, waits for it
        // however long that takes, instead of being suspended itself.
        // Likewise a change refused by a unique key whose holder at the target still has
        // changes on their way here: they decide the clash (`ApplyError::KeyHeld`).
        let coming = match &error {
            ApplyError::WaitingForParent { parent, key, .. } => {
                waiting.contains(&(parent.clone(), key.clone()))
            }
            ApplyError::KeyHeld { .. } => true,
            _ => false,
        };
        let (suspend, retry_in_ms) = match policy.on_change_error(error.kind(), attempt, coming) {
            Decision::RetryChange { delay } | Decision::RetryBatch { delay } => {
                (false, u64::try_from(delay.as_millis()).unwrap_or(u64::MAX))
            }
            // The retry time of a suspended change is never used: resubmitting resets it.
            Decision::Suspend | Decision::Stop => (true, 0),
        };
        if suspend {
            report.suspended += 1;
        } else {
            report.failed += 1;
        }
        // What the operator runs once the cause is fixed (a retried change needs nothing).
        let then = match seqs.iter().max() {
            Some(seq) if suspend => format!(
                "; suspended: fix the cause, then run `tandem suspended resubmit {side}-{seq}`"
            ),
            _ => String::new(),
        };
        warn!(
            entity = entity.as_deref().unwrap_or("?"),
            from = %side,
            key = key.as_ref().map(Key::as_str).unwrap_or("?"),
            attempt = attempt + 1,
            suspended = suspend,
            "change not applied: {error}{then}"
        );
        wb.failed.push(Failure {
            seqs,
            error: error.to_string(),
            retry_in_ms,
            suspend,
        });
    }
    from.write_back(&wb).await?;
    Ok(report)
}

fn live_peer(link: &Link) -> Option<Key> {
    link.peer_key.clone().filter(|_| !link.deleted)
}

/// A parent not linked at the target whose link at the source is a tombstone was deleted
/// (here, or there and the delete reached here): the child's error says so, and tells the
/// operator what to do, instead of promising that the parent is still to come (found by the
/// simulation's full workload, seed 867: an item added at a side without foreign keys while
/// the other side deleted its order).
async fn parents_deleted_at_source(
    from: &dyn Endpoint,
    failures: &mut [Failed],
) -> Result<(), EndpointError> {
    let mut deleted = parents_linked_so(from, failures, ParentState::NotLinked, true).await?;
    deleted.extend(parents_without_row_at_source(from, failures).await?);
    for f in failures.iter_mut() {
        if let ApplyError::WaitingForParent {
            parent, key, state, ..
        } = &mut f.error
        {
            if deleted.contains(&(parent.clone(), key.clone())) {
                *state = ParentState::DeletedAtSource;
            }
        }
    }
    Ok(())
}

/// The parents the failures wait for (in `state`, or in any), by entity: each entity's keys
/// sorted, once each.
fn parents_waited_for(
    failures: &[Failed],
    state: Option<ParentState>,
) -> BTreeMap<String, Vec<Key>> {
    let mut asked: BTreeMap<String, Vec<Key>> = BTreeMap::new();
    for f in failures {
        if let ApplyError::WaitingForParent {
            parent,
            key,
            state: s,
            ..
        } = &f.error
        {
            if let (Ok(k), true) = (Key::parse(key), state.is_none_or(|st| st == *s)) {
                asked.entry(parent.clone()).or_default().push(k);
            }
        }
    }
    for keys in asked.values_mut() {
        keys.sort();
        keys.dedup();
    }
    asked
}

/// The parents (entity, key) of failures waiting for a parent not linked at the target that
/// have no row at the source either: the child stays at the source without its parent, as
/// nothing there enforces the reference, whatever the source's id map still knows of it (a
/// legacy number reused for a new record takes over the old one's tombstone). Its error then
/// says so, instead of sending the operator to a backfill that has nothing to copy (found by
/// the simulation's full workload without key changes at A, seed 33719).
async fn parents_without_row_at_source(
    from: &dyn Endpoint,
    failures: &[Failed],
) -> Result<HashSet<(String, String)>, EndpointError> {
    let mut out = HashSet::new();
    for (parent, keys) in parents_waited_for(failures, Some(ParentState::NotLinked)) {
        let present = from.rows_present(&parent, &keys).await?;
        out.extend(
            keys.iter()
                .filter(|k| !present.contains(*k))
                .map(|k| (parent.clone(), k.to_string())),
        );
    }
    Ok(out)
}

/// The parents (entity, key) of the failures in `state` whose link at the source is a
/// tombstone (`deleted`) or live (`!deleted`).
async fn parents_linked_so(
    from: &dyn Endpoint,
    failures: &[Failed],
    state: ParentState,
    deleted: bool,
) -> Result<HashSet<(String, String)>, EndpointError> {
    let mut out = HashSet::new();
    for (parent, keys) in parents_waited_for(failures, Some(state)) {
        for (k, link) in from.links(&parent, &keys).await? {
            if link.deleted == deleted {
                out.insert((parent.clone(), k.to_string()));
            }
        }
    }
    Ok(out)
}

/// The parents that failed children wait for and that are on their way: still in the
/// source's outbox, or about to be (a backfill of their entity is under way); and parents
/// deleted at the target whose delete has not reached the source yet (the source's link is
/// still live), after which a cascade or the application settles the child here.
async fn parents_in_flight(
    from: &dyn Endpoint,
    failures: &[Failed],
) -> Result<HashSet<(String, String)>, EndpointError> {
    let mut out = parents_linked_so(from, failures, ParentState::DeletedAtTarget, false).await?;
    for (parent, keys) in parents_waited_for(failures, None) {
        // A backfill of the parent entity under way will bring the parent.
        let backfilling = match from.bulk() {
            Some(b) => b
                .backfill_progress(&parent)
                .await
                .map(|p| p.started && !p.finished)
                .unwrap_or(false),
            None => false,
        };
        if backfilling {
            out.extend(keys.iter().map(|k| (parent.clone(), k.to_string())));
            continue;
        }
        for k in from.in_flight(&parent, &keys).await? {
            out.insert((parent.clone(), k.to_string()));
        }
    }
    Ok(out)
}

/// Decodes an outbox row captured at `side` into a [`Change`]: its entity, op, image and key.
/// `Ok(None)`: nothing to do (the entity does not travel this way). Public so that
/// `benches/micro.rs` measures this very function.
pub fn decode(config: &Config, side: Side, row: &OutboxRow) -> Result<Option<Change>, ApplyError> {
    let seq = row.seq;
    let fail = |message: String| ApplyError::Decode { seq, message };
    let entity = config.entity(&row.entity).ok_or_else(|| {
        fail(format!(
            "entity {:?} is not in the config (was it renamed or removed? restore it, or discard the change)",
            row.entity
        ))
    })?;
    if !entity.direction.flows(side) {
        warn!(entity = %entity.name, from = %side, seq,
              "change captured for a direction the config no longer syncs; removing it (run `tandem install` to drop the trigger)");
        return Ok(None);
    }
    let op = Op::from_code(&row.op).ok_or_else(|| fail(format!("unknown op {:?}", row.op)))?;
    let text = row
        .image
        .as_deref()
        .ok_or_else(|| fail("the claim sent no image for the newest change of a record".into()))?;
    let image: Image = serde_json::from_str(text)
        .map_err(|e| fail(format!("row image is not a JSON object: {e}")))?;
    let table = &entity.side(side).table;
    let key = Key::from_image(&image, &entity.side(side).key).map_err(|m| {
        fail(format!(
            "entity {}, side {side} table {table}: {m}",
            entity.name
        ))
    })?;
    Ok(Some(Change {
        seq,
        entity: entity.name.clone(),
        op,
        key,
        image,
        captured_at: row.captured_at,
        attempts: row.attempts,
        derived: row.derived,
        born: op == Op::Insert,
    }))
}

/// Links the source side knows, for the records and their parents.
async fn source_links(
    config: &Config,
    from: &dyn Endpoint,
    pending: &[Pending],
) -> Result<HashMap<(String, Key), Link>, EndpointError> {
    let side = from.side();
    let mut wanted: BTreeMap<String, Vec<Key>> = BTreeMap::new();
    for p in pending {
        wanted
            .entry(p.change.entity.clone())
            .or_default()
            .push(p.change.key.clone());
        let Some(entity) = config.entity(&p.change.entity) else {
            continue;
        };
        for col in &entity.columns {
            let (Some(parent), Some(v)) = (&col.parent, p.change.image.get(col.name(side))) else {
                continue;
            };
            if !v.is_null() {
                wanted
                    .entry(parent.clone())
                    .or_default()
                    .push(Key::from_values(std::slice::from_ref(v)));
            }
        }
    }
    let mut out = HashMap::new();
    for (entity, mut keys) in wanted {
        keys.sort();
        keys.dedup();
        for (k, link) in from.links(&entity, &keys).await? {
            out.insert((entity.clone(), k), link);
        }
    }
    Ok(out)
}
