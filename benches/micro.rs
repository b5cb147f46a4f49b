//! Micro-benchmarks of the database-free part of a batch: decode (outbox row text → `Change`),
//! map (coalesce per record, `map_change` into the target's shape) and encode (the mapped row
//! as the JSON parameter the PostgreSQL apply sends). No databases.
//!
//!     cargo bench --bench micro                 # all
//!     cargo bench --bench micro -- pipeline     # a group
//!
//! Under `cargo test` each benchmark runs once, as a smoke test.
//!
//! Decoding is `sync::batch::decode`, the function the pipeline runs per outbox row: parse the
//! image, read the key, build the `Change`.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::path::Path;

use chrono::{TimeZone, Utc};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use tandem::config::{self, Config, Side};
use tandem::mapping::{coalesce, map_change};
use tandem::model::{Change, Key, OutboxRow, TargetChange};
use tandem::sync::batch::decode;

const SAME: &str = r#"
[a]
kind = "postgres"
url = "postgres://u@127.0.0.1/a"
[b]
kind = "postgres"
url = "postgres://u@127.0.0.1/b"
[[entities]]
name = "item"
a = { table = "public.items", key = ["id"] }
b = { table = "public.items", key = ["id"] }
columns = [
  { a = "id", b = "id" },
  { a = "qty", b = "qty" },
  { a = "status", b = "status" },
  { a = "note", b = "note" },
  { a = "ts", b = "ts" },
]
"#;

const MAPPED: &str = r#"
[a]
kind = "postgres"
url = "postgres://u@127.0.0.1/a"
[b]
kind = "postgres"
url = "postgres://u@127.0.0.1/b"
[[entities]]
name = "item"
a = { table = "public.ITEMS", key = ["ITEM_NO"], peer_id_column = "NEW_ID" }
b = { table = "public.items", key = ["id"], peer_id_column = "legacy_no" }
columns = [
  { a = "QTY", b = "quantity" },
  { a = "STATUS", b = "status", values = { O = "open", C = "closed", X = "cancelled" } },
  { a = "NOTE", b = "note" },
  { a = "TS", b = "ts" },
]
"#;

fn config(text: &str) -> Config {
    config::parse(text, Path::new("bench.toml"), &|_| None)
        .unwrap_or_else(|e| panic!("bench config does not load: {e:?}"))
}

/// `n` outbox rows as PostgreSQL's `image::text` prints them; `distinct` records (so
/// `n / distinct` changes per record on average, in seq order).
fn outbox_rows(n: usize, distinct: usize, mapped: bool) -> Vec<OutboxRow> {
    let at = Utc
        .with_ymd_and_hms(2026, 1, 1, 0, 0, 0)
        .single()
        .unwrap_or_else(Utc::now);
    (0..n)
        .map(|i| {
            let id = (i * 7919) % distinct.max(1) + 1;
            let status = ["O", "C", "X"][i % 3];
            let image = if mapped {
                format!(
                    r#"{{"TS": "2026-11-21T09:40:00.{i:06}+00:00", "QTY": {i}, "NOTE": "item {id}", "NEW_ID": null, "STATUS": "{status}", "ITEM_NO": {id}}}"#
                )
            } else {
                format!(
                    r#"{{"id": {id}, "ts": "2026-11-21T09:40:00.{i:06}+00:00", "qty": {i}, "note": "item {id}", "status": "{status}"}}"#
                )
            };
            OutboxRow {
                seq: i as i64 + 1,
                entity: "item".into(),
                op: "U".into(),
                image: Some(image),
                captured_at: at,
                attempts: 0,
                pulled: false,
                key: None,
                derived: false,
            }
        })
        .collect()
}

fn decode_all(cfg: &Config, rows: &[OutboxRow]) -> Vec<Change> {
    rows.iter()
        .filter_map(|r| decode(cfg, Side::A, r).ok().flatten())
        .collect()
}

fn map_all(cfg: &Config, changes: Vec<Change>) -> Vec<TargetChange> {
    let mut runs: BTreeMap<(String, Key), Vec<Change>> = BTreeMap::new();
    for c in changes {
        runs.entry((c.entity.clone(), c.key.clone()))
            .or_default()
            .push(c);
    }
    runs.values()
        .filter_map(|run| {
            let (change, seqs) = coalesce(run)?;
            let entity = cfg.entity(&change.entity)?;
            map_change(entity, Side::A, &change, seqs, None).ok()
        })
        .collect()
}

fn encode_all(batch: &[TargetChange]) -> usize {
    batch
        .iter()
        .map(|c| serde_json::to_string(&c.row).map_or(0, |s| s.len()))
        .sum()
}

fn stages(c: &mut Criterion) {
    let same = config(SAME);
    let mut g = c.benchmark_group("stage");
    let n = 500;
    let rows = outbox_rows(n, n, false);
    g.throughput(Throughput::Elements(n as u64));
    g.bench_function("decode/500", |b| {
        b.iter(|| decode_all(&same, black_box(&rows)))
    });
    let decoded = decode_all(&same, &rows);
    g.bench_function("map/500", |b| {
        b.iter(|| map_all(&same, black_box(decoded.clone())))
    });
    let mapped = map_all(&same, decoded.clone());
    assert_eq!(mapped.len(), n, "every record of the batch maps");
    g.bench_function("encode/500", |b| b.iter(|| encode_all(black_box(&mapped))));
    g.finish();
}

fn pipeline(c: &mut Criterion) {
    let mut g = c.benchmark_group("pipeline");
    for (name, text, is_mapped) in [("same", SAME, false), ("mapped", MAPPED, true)] {
        let cfg = config(text);
        for (n, distinct) in [(500, 500), (5000, 5000), (5000, 1000)] {
            let rows = outbox_rows(n, distinct, is_mapped);
            let out = map_all(&cfg, decode_all(&cfg, &rows));
            assert_eq!(
                out.len(),
                distinct.min(n),
                "{name}: coalesced to one per record"
            );
            g.throughput(Throughput::Elements(n as u64));
            g.bench_with_input(
                BenchmarkId::new(name, format!("{n}_changes_{distinct}_records")),
                &rows,
                |b, rows| {
                    b.iter(|| {
                        let batch = map_all(&cfg, decode_all(&cfg, black_box(rows)));
                        encode_all(&batch)
                    })
                },
            );
        }
    }
    g.finish();
}

criterion_group!(benches, stages, pipeline);
criterion_main!(benches);
