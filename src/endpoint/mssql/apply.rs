//! Guarded apply at the target and write-back at the source, for SQL Server: each is one
//! T-SQL batch (`sql/mssql/apply.sql`, `write_back.sql`) sent with the whole batch as one JSON
//! parameter — one round trip. The per-change semantics are the PostgreSQL endpoint's (see
//! `endpoint/postgres/apply.rs`); this module prepares the JSON (values converted to the
//! target's column types) and turns the result rows into outcomes.

use serde::Serialize;
use serde_json::Value;

use super::pool::run;
use super::row::get;
use super::sql::{EntityPlan, Plan};
use super::MsEndpoint;
use crate::config::ConflictPolicy;
use crate::endpoint::{
    ApplyError, Done, EndpointError, ErrorKind, Outcome, ParentState, WriteBack,
};
use crate::model::{Image, Key, TargetChange};

/// One change as the apply batch reads it.
#[derive(Debug, Serialize)]
pub struct ChangeIn {
    pub i: usize,
    pub entity: String,
    /// The table, quoted: the session-context value that marks tandem's writes.
    pub tbl: String,
    pub op: String,
    pub seq: i64,
    pub source_key: String,
    pub peer_hint: Option<String>,
    /// `TargetChange::hint_predates`.
    pub hint_predates: bool,
    /// The oldest source sequence the change carries (`TargetChange::delete_hint_holds`).
    pub first_seq: i64,
    pub peer_applied_seq: i64,
    pub captured_at: String,
    pub key_given: bool,
    /// Why the given key cannot be formed (a key column NULL or missing), raised where
    /// PostgreSQL would raise it.
    pub key_problem: Option<String>,
    /// A value that could not be converted for its column.
    pub row_problem: Option<String>,
    pub policy: &'static str,
    /// Caused by tandem's own apply at the source: loses every conflict against a user's
    /// change (see `endpoint::conflict_winner`).
    pub derived: bool,
    /// The record's changes carried here begin with its insert (`TargetChange::born`).
    pub born: bool,
    /// The source's keys are given by values (a key can be taken by a new record there).
    pub source_key_given: bool,
    /// Values in the order of the entity's row columns; ref columns hold a marker.
    pub row: Vec<Value>,
    /// The mapped row as an object (for the conflict log).
    pub image: Image,
    pub refs: Vec<RefIn>,
}

/// A column to fill with a parent's key at the target.
#[derive(Debug, Serialize)]
pub struct RefIn {
    /// Ref number `n` stands in `row` and `image` as the token [`marker`]`(n)`, which the
    /// apply batch builds itself (a JSON string holding it would need escapes, which not every
    /// T-SQL engine's OPENJSON undoes).
    pub n: usize,
    pub parent: String,
    pub key: String,
    pub hint: Option<String>,
}

/// What the batch needs besides the JSON, to report on a change.
pub struct Prepared {
    pub change: ChangeIn,
    /// The column a data error most likely concerns.
    pub suspect: Option<String>,
}

/// SQL Server errors about a value (as opposed to a key or a constraint): the message gains
/// the column tandem suspects, since most of them do not name it.
const VALUE_ERRORS: &[u32] = &[
    8152, 2628, 245, 8114, 8115, 220, 232, 236, 241, 242, 244, 248, 293, 235, 515, 8169, 517,
];

fn policy_name(p: ConflictPolicy) -> &'static str {
    match p {
        ConflictPolicy::AWins => "a_wins",
        ConflictPolicy::BWins => "b_wins",
        ConflictPolicy::NewestWins => "newest_wins",
    }
}

/// The marker token of ref number `n`: a JSON string no real value is (its JSON text is
/// `"\u0001tandem-ref-N\u0001"`; apply.sql builds the same text to replace it).
pub fn marker(n: usize) -> Value {
    Value::String(format!("\u{1}tandem-ref-{n}\u{1}"))
}

/// Prepares change number `i` for the apply batch.
pub fn prepare(plan: &EntityPlan, policy: ConflictPolicy, i: usize, c: &TargetChange) -> Prepared {
    let mut row = Vec::with_capacity(plan.row_cols.len());
    let mut row_problem = None;
    let mut suspect = None;
    let mut image = c.row.clone();
    let mut refs = Vec::new();
    for col in &plan.row_cols {
        if let Some((n, r)) = c
            .refs
            .iter()
            .enumerate()
            .find(|(_, r)| r.column == col.name)
        {
            let mark = marker(n);
            image.insert(col.name.clone(), mark.clone());
            row.push(mark.clone());
            refs.push(RefIn {
                n,
                parent: r.parent.clone(),
                key: r.source_key.to_string(),
                hint: r.hint.as_ref().map(|k| k.to_string()),
            });
            continue;
        }
        let v = c.row.get(&col.name).cloned().unwrap_or(Value::Null);
        if suspect.is_none() && c.row.contains_key(&col.name) {
            if let Some(why) = col.ty.suspect(&v, col.nullable) {
                suspect = Some(format!("{} ({why})", col.name));
            }
        }
        match col.ty.encode(&v) {
            Ok(e) => row.push(e),
            Err(m) => {
                row_problem.get_or_insert_with(|| format!("column {}: {m}", col.name));
                row.push(Value::Null);
            }
        }
    }
    let key_problem = if plan.key_given {
        plan.key.iter().find_map(|k| {
            if c.refs.iter().any(|r| &r.column == k) {
                return None;
            }
            match c.row.get(k) {
                None => Some(format!(
                    "target key: key column {k} is missing from the row"
                )),
                Some(Value::Null) => Some(format!("target key: key column {k} is NULL")),
                Some(_) => None,
            }
        })
    } else {
        None
    };
    Prepared {
        change: ChangeIn {
            i,
            entity: c.entity.clone(),
            tbl: plan.table_sql.clone(),
            op: c.op.code().to_string(),
            seq: c.seq,
            source_key: c.source_key.to_string(),
            peer_hint: c.peer_hint.as_ref().map(|k| k.to_string()),
            hint_predates: c.hint_predates,
            first_seq: c.seqs.iter().copied().min().unwrap_or(c.seq).min(c.seq),
            peer_applied_seq: c.peer_applied_seq,
            captured_at: c
                .captured_at
                .to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            key_given: plan.key_given,
            key_problem,
            row_problem,
            policy: policy_name(policy),
            derived: c.derived,
            born: c.born,
            source_key_given: false,
            row,
            image,
            refs,
        },
        suspect,
    }
}

fn context(ep: &MsEndpoint, plan: Option<&EntityPlan>, c: &TargetChange) -> String {
    format!(
        "entity {}, side {} table {}, {} of source key {}",
        c.entity,
        ep.side,
        plan.map(|p| p.table.as_str()).unwrap_or(""),
        c.op,
        c.source_key
    )
}

/// One result row of the apply batch.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OutRow {
    pub i: usize,
    pub how: Option<String>,
    pub target_key: Option<String>,
    pub conflict: bool,
    pub fail: Option<String>,
    pub err_number: Option<i32>,
    pub err_message: Option<String>,
    pub parent: Option<String>,
    pub parent_key: Option<String>,
    /// `Outcome::Done::superseded`.
    pub superseded: Option<i64>,
    /// `Outcome::Done::moot`: the sequences, as FOR JSON PATH gives them (`[{"seq":7}]`).
    pub moot: Option<String>,
}

/// Turns a result row into the outcome of its change.
pub fn outcome(row: &OutRow, context: String, suspect: Option<&str>) -> Outcome {
    let key = row.target_key.as_deref().and_then(|k| Key::parse(k).ok());
    match (row.fail.as_deref(), row.how.as_deref()) {
        // P: the parent is not linked here yet; G: it was deleted here.
        (Some(f @ ("P" | "G")), _) => Outcome::Failed(ApplyError::WaitingForParent {
            context,
            parent: row.parent.clone().unwrap_or_default(),
            key: row.parent_key.clone().unwrap_or_default(),
            state: ParentState::at_target(f == "G"),
        }),
        (Some(_), _) => {
            let n = row.err_number.unwrap_or(0);
            let text = row.err_message.clone().unwrap_or_default();
            let ours = matches!(n, 51000 | 51001 | 51003 | 51004);
            let mut message = if ours {
                text
            } else {
                format!("{text} (SQL Server error {n})")
            };
            if let Some(col) =
                suspect.filter(|_| VALUE_ERRORS.contains(&u32::try_from(n).unwrap_or(0)))
            {
                message = format!("column {col}: {message}");
            }
            // H: a unique key whose holder here still has changes on their way.
            if row.fail.as_deref() == Some("H") {
                return Outcome::Failed(ApplyError::KeyHeld {
                    context,
                    message,
                    holder: row.parent_key.clone().unwrap_or_default(),
                });
            }
            Outcome::Failed(ApplyError::Rejected {
                context,
                message,
                code: (!ours).then(|| n.to_string()),
            })
        }
        (None, how) => {
            let how = match how {
                Some("W") => Done::Written,
                Some("U") => Done::Unchanged,
                Some("S") => Done::Stale,
                Some("T") => Done::StaleDeleted,
                Some("D") => Done::Deleted,
                Some("C") => Done::ConflictLost,
                other => {
                    return Outcome::Failed(ApplyError::Rejected {
                        context,
                        message: format!("internal: unknown apply result {other:?}"),
                        code: None,
                    })
                }
            };
            Outcome::Done {
                target_key: key,
                how,
                conflict: row.conflict,
                superseded: row.superseded,
                moot: moot_seqs(row.moot.as_deref()),
            }
        }
    }
}

/// None for a row without its change's number.
fn out_row(r: &tiberius::Row) -> Result<Option<OutRow>, EndpointError> {
    const WHAT: &str = "apply";
    let text = |n: &str| -> Result<Option<String>, EndpointError> {
        Ok(get::<&str>(r, n, WHAT)?.map(str::to_string))
    };
    let Some(i) = get::<i32>(r, "i", WHAT)?.and_then(|i| usize::try_from(i).ok()) else {
        return Ok(None);
    };
    Ok(Some(OutRow {
        i,
        how: text("how")?,
        target_key: text("target_key")?,
        conflict: get::<bool>(r, "conflict", WHAT)?.unwrap_or(false),
        fail: text("fail")?,
        err_number: get::<i32>(r, "err_number", WHAT)?,
        err_message: text("err_message")?,
        parent: text("parent")?,
        parent_key: text("parent_key")?,
        superseded: get::<i64>(r, "superseded", WHAT)?,
        moot: text("moot")?,
    }))
}

/// The sequences of `[{"seq":7},{"seq":9}]`.
fn moot_seqs(json: Option<&str>) -> Vec<i64> {
    #[derive(serde::Deserialize)]
    struct Seq {
        seq: i64,
    }
    json.and_then(|j| serde_json::from_str::<Vec<Seq>>(j).ok())
        .map(|v| v.into_iter().map(|s| s.seq).collect())
        .unwrap_or_default()
}

/// Applies a batch in one round trip; see the module comment.
pub async fn apply_batch(
    ep: &MsEndpoint,
    plan: &Plan,
    batch: &[TargetChange],
) -> Result<Vec<Outcome>, EndpointError> {
    let mut prepared: Vec<Option<Prepared>> = Vec::with_capacity(batch.len());
    let mut early: Vec<Option<Outcome>> = Vec::with_capacity(batch.len());
    for (i, c) in batch.iter().enumerate() {
        let (Some(p), Some(e)) = (plan.entities.get(&c.entity), ep.config.entity(&c.entity)) else {
            prepared.push(None);
            early.push(Some(Outcome::Failed(ApplyError::Rejected {
                context: context(ep, None, c),
                message: "entity is not in the config".into(),
                code: None,
            })));
            continue;
        };
        let mut one = prepare(p, e.on_conflict, i, c);
        one.change.source_key_given = e.key_is_given(ep.side.other());
        prepared.push(Some(one));
        early.push(None);
    }
    let changes: Vec<&ChangeIn> = prepared.iter().flatten().map(|p| &p.change).collect();
    let mut rows: Vec<Option<OutRow>> = vec![None; batch.len()];
    if !changes.is_empty() {
        let payload = serde_json::to_string(&changes).map_err(|e| {
            EndpointError::Config(format!("internal: cannot encode the batch: {e}"))
        })?;
        let mut conn = ep.pool.get().await?;
        let sets = run(
            &mut conn,
            ep.pool.rollback_sql(),
            true,
            &plan.apply,
            &[&payload.as_str()],
        )
        .await
        .map_err(|e| ep.pool.error("apply", e))?;
        for r in sets.last().into_iter().flatten() {
            if let Some(o) = out_row(r)? {
                if let Some(slot) = rows.get_mut(o.i) {
                    *slot = Some(o);
                }
            }
        }
    }
    let mut outcomes = Vec::with_capacity(batch.len());
    for (i, c) in batch.iter().enumerate() {
        if let Some(o) = early[i].take() {
            outcomes.push(o);
            continue;
        }
        let entity_plan = plan.entities.get(&c.entity);
        let ctx = context(ep, entity_plan, c);
        let Some(row) = &rows[i] else {
            // Every change gets a row; none means the batch did not run to its end.
            return Err(EndpointError::Database {
                side: ep.side,
                context: "apply".into(),
                message: format!("the apply batch returned no result for change {i} ({ctx})"),
                code: None,
                // The batch's results were cut short: as a lost connection, retried whole.
                kind: ErrorKind::Unreachable,
                source: None,
            });
        };
        let suspect = prepared[i].as_ref().and_then(|p| p.suspect.as_deref());
        let o = outcome(row, ctx, suspect);
        if let Outcome::Done {
            conflict: true,
            target_key,
            ..
        } = &o
        {
            tracing::info!(
                entity = %c.entity, key = %c.source_key,
                local_key = target_key.as_ref().map(Key::as_str).unwrap_or("?"),
                "conflict: the record changed on both sides; resolved by the entity's on_conflict"
            );
        }
        outcomes.push(o);
    }
    Ok(outcomes)
}

/// One link as the write-back batch reads it.
#[derive(Debug, Serialize)]
struct LinkIn {
    n: usize,
    entity: String,
    own: String,
    peer: Option<String>,
    deleted: bool,
    /// `LinkWrite::only_if_row`.
    only_if_row: bool,
    seq: i64,
    /// `LinkWrite::peer_guard`.
    peer_guard: Option<i64>,
    /// `LinkWrite::gone_there`.
    gone_there: bool,
    /// `LinkWrite::lost`.
    lost: bool,
    /// `[value]` for the peer_id_column, converted to its type.
    peer_value: Option<Value>,
}

#[derive(Debug, Serialize)]
struct FailedIn<'a> {
    seqs: &'a [i64],
    delay_ms: i32,
    error: &'a str,
    suspend: bool,
}

/// Records, at the side the changes came from, what became of them (one round trip).
pub async fn write_back(ep: &MsEndpoint, plan: &Plan, wb: &WriteBack) -> Result<(), EndpointError> {
    let mut links = Vec::with_capacity(wb.links.len());
    for (n, l) in wb.links.iter().enumerate() {
        let peer_value = match (plan.entities.get(&l.entity), &l.peer_key, l.deleted) {
            (
                Some(EntityPlan {
                    peer: Some(col), ..
                }),
                Some(p),
                false,
            ) => {
                let v = p.values().into_iter().next().unwrap_or(Value::Null);
                match col.ty.encode(&v) {
                    Ok(e) => Some(Value::Array(vec![e])),
                    Err(m) => {
                        tracing::warn!(entity = %l.entity, side = %ep.side, key = %l.own_key,
                            "cannot fill peer_id_column {} with {p}: {m}", col.name);
                        None
                    }
                }
            }
            _ => None,
        };
        links.push(LinkIn {
            n,
            entity: l.entity.clone(),
            own: l.own_key.to_string(),
            peer: l.peer_key.as_ref().map(|k| k.to_string()),
            deleted: l.deleted,
            only_if_row: l.only_if_row,
            seq: l.seq,
            peer_guard: l.peer_guard,
            gone_there: l.gone_there,
            lost: l.lost,
            peer_value,
        });
    }
    let failed: Vec<FailedIn> = wb
        .failed
        .iter()
        .map(|f| FailedIn {
            seqs: &f.seqs,
            delay_ms: i32::try_from(f.retry_in_ms).unwrap_or(i32::MAX),
            error: &f.error,
            suspend: f.suspend,
        })
        .collect();
    let enc = |v: Result<String, serde_json::Error>| {
        v.map_err(|e| EndpointError::Config(format!("internal: cannot encode the write-back: {e}")))
    };
    let links_json = enc(serde_json::to_string(&links))?;
    let done_json = enc(serde_json::to_string(&wb.done))?;
    let failed_json = enc(serde_json::to_string(&failed))?;
    let mut conn = ep.pool.get().await?;
    let sets = run(
        &mut conn,
        ep.pool.rollback_sql(),
        true,
        &plan.write_back,
        &[
            &links_json.as_str(),
            &done_json.as_str(),
            &failed_json.as_str(),
        ],
    )
    .await
    .map_err(|e| ep.pool.error("write back", e))?;
    for r in sets.last().into_iter().flatten() {
        const WHAT: &str = "write back";
        let n = get::<i32>(r, "n", WHAT)?;
        let msg = get::<&str>(r, "err_message", WHAT)?;
        let link = n.and_then(|n| usize::try_from(n).ok().and_then(|n| wb.links.get(n)));
        if get::<&str>(r, "kind", WHAT)? == Some("D") {
            let dup = get::<&str>(r, "dup", WHAT)?.unwrap_or("?");
            let entity = link.map(|l| l.entity.as_str()).unwrap_or("?");
            let why = if link.is_some_and(|l| l.gone_there) {
                "the other side deleted the record, and its delete will not reach this copy"
            } else {
                "the other side took another record here for it"
            };
            match msg {
                None => tracing::info!(
                    side = %ep.side, %entity, key = %dup,
                    "a second copy of a record, left by a lost reply, removed: {why}"
                ),
                Some(m) => tracing::warn!(
                    side = %ep.side, %entity, key = %dup,
                    "a second copy of a record, left by a lost reply, stays: it cannot be removed: {}",
                    crate::config::redact(m)
                ),
            }
            continue;
        }
        let (Some(l), Some(msg)) = (link, msg) else {
            continue;
        };
        {
            let table = plan
                .entities
                .get(&l.entity)
                .map(|p| p.table.as_str())
                .unwrap_or("");
            tracing::warn!(
                entity = %l.entity, side = %ep.side, key = %l.own_key,
                "cannot fill peer_id_column of {table} with {}: {}",
                l.peer_key.as_ref().map(Key::as_str).unwrap_or("?"),
                crate::config::redact(msg)
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::endpoint::mssql::types::{Column, SqlType};
    use crate::model::{Op, RefValue};
    use serde_json::json;

    fn col(name: &str, ty: SqlType, identity: bool) -> Column {
        Column {
            name: name.into(),
            ty,
            nullable: true,
            identity,
            computed: false,
            has_default: false,
        }
    }

    fn items_plan() -> EntityPlan {
        let int = SqlType::new("int", 4, 10, 0);
        let row_cols = vec![
            col("ORDER_NO", int.clone(), false),
            col("LINE_NO", int.clone(), false),
            col("QTY", int, false),
        ];
        EntityPlan {
            name: "order_item".into(),
            table: "dbo.ORDER_ITEMS".into(),
            table_sql: "[dbo].[ORDER_ITEMS]".into(),
            key: vec!["ORDER_NO".into(), "LINE_NO".into()],
            key_given: true,
            by_name: row_cols
                .iter()
                .map(|c| (c.name.clone(), c.clone()))
                .collect(),
            row_cols,
            peer: None,
        }
    }

    fn change(row: Image, refs: Vec<RefValue>) -> TargetChange {
        TargetChange {
            entity: "order_item".into(),
            op: Op::Insert,
            seq: 7,
            seqs: vec![7],
            source_key: Key::from_values(&[json!(3)]),
            peer_hint: None,
            hint_predates: false,
            peer_applied_seq: 0,
            row,
            incoming: Image::new(),
            refs,
            lookups: Vec::new(),
            derived: false,
            born: true,
            captured_at: chrono::DateTime::from_timestamp_micros(1_700_000_000_123_456)
                .unwrap_or_default(),
        }
    }

    #[test]
    fn prepares_refs_as_markers_and_keys_in_order() {
        let row: Image = serde_json::from_str(r#"{"ORDER_NO":null,"LINE_NO":2,"QTY":5}"#).unwrap();
        let refs = vec![RefValue {
            column: "ORDER_NO".into(),
            parent: "order".into(),
            source_key: Key::from_values(&[json!(17)]),
            hint: None,
        }];
        let p = prepare(
            &items_plan(),
            ConflictPolicy::NewestWins,
            0,
            &change(row, refs),
        );
        let text = serde_json::to_string(&p.change).unwrap();
        assert!(
            text.contains(r#""row":["\u0001tandem-ref-0\u0001",2,5]"#),
            "{text}"
        );
        assert!(text.contains(r#""refs":[{"n":0,"parent""#), "{text}");
        assert!(
            text.contains(r#""captured_at":"2023-11-14T22:13:20.123456Z""#),
            "{text}"
        );
        assert_eq!(p.change.key_problem, None);
        assert_eq!(p.change.policy, "newest_wins");
    }

    #[test]
    fn a_null_given_key_is_a_key_problem_and_a_bad_value_a_row_problem() {
        let row: Image =
            serde_json::from_str(r#"{"ORDER_NO":null,"LINE_NO":null,"QTY":"x"}"#).unwrap();
        let p = prepare(
            &items_plan(),
            ConflictPolicy::AWins,
            0,
            &change(row, vec![]),
        );
        assert_eq!(
            p.change.key_problem.as_deref(),
            Some("target key: key column ORDER_NO is NULL")
        );
        assert!(
            p.suspect.as_deref().unwrap_or("").starts_with("QTY"),
            "{:?}",
            p.suspect
        );
        let mut plan = items_plan();
        plan.row_cols[2].ty = SqlType::new("varbinary", -1, 0, 0);
        let row: Image =
            serde_json::from_str(r#"{"ORDER_NO":1,"LINE_NO":1,"QTY":"AP8Q"}"#).unwrap();
        let p = prepare(&plan, ConflictPolicy::AWins, 0, &change(row, vec![]));
        assert!(
            p.change
                .row_problem
                .as_deref()
                .unwrap_or("")
                .starts_with("column QTY:"),
            "{:?}",
            p.change.row_problem
        );
    }

    #[test]
    fn result_rows_become_outcomes() {
        let ok = OutRow {
            how: Some("W".into()),
            target_key: Some("[1000]".into()),
            moot: Some(r#"[{"seq":7},{"seq":9}]"#.into()),
            ..Default::default()
        };
        match outcome(&ok, "ctx".into(), None) {
            Outcome::Done {
                target_key,
                how,
                conflict,
                superseded,
                moot,
            } => {
                assert_eq!(superseded, None);
                assert_eq!(moot, vec![7, 9]);
                assert_eq!(target_key.unwrap().as_str(), "[1000]");
                assert_eq!(how, Done::Written);
                assert!(!conflict);
            }
            o => panic!("{o:?}"),
        }
        let truncated = OutRow {
            fail: Some("R".into()),
            err_number: Some(8152),
            err_message: Some("String or binary data would be truncated.".into()),
            ..Default::default()
        };
        let Outcome::Failed(ApplyError::Rejected { message, code, .. }) = outcome(
            &truncated,
            "ctx".into(),
            Some("CUST_NAME (61 characters for varchar(60))"),
        ) else {
            panic!()
        };
        assert!(message.starts_with("column CUST_NAME (61"), "{message}");
        assert!(message.ends_with("(SQL Server error 8152)"), "{message}");
        assert_eq!(code.as_deref(), Some("8152"));
        let parent = OutRow {
            fail: Some("P".into()),
            parent: Some("order".into()),
            parent_key: Some("[17]".into()),
            ..Default::default()
        };
        let Outcome::Failed(e @ ApplyError::WaitingForParent { .. }) =
            outcome(&parent, "ctx".into(), None)
        else {
            panic!()
        };
        assert!(
            e.to_string().contains("tandem backfill --entity order"),
            "{e}"
        );
        let ours = OutRow {
            fail: Some("R".into()),
            err_number: Some(51001),
            err_message: Some("target key: key column X is NULL".into()),
            ..Default::default()
        };
        let Outcome::Failed(ApplyError::Rejected { message, code, .. }) =
            outcome(&ours, "ctx".into(), Some("X"))
        else {
            panic!()
        };
        assert_eq!(message, "target key: key column X is NULL");
        assert_eq!(code, None);
    }
}
