//! The comparison table: absolute figures per tool, tandem's ratio to the best peer, and the
//! issue's target for each row with a verdict.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::peers::Tool;

/// A column of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Column {
    NoCapture,
    Tool(Tool),
}

impl Column {
    pub const ALL: [Column; 5] = [
        Column::NoCapture,
        Column::Tool(Tool::Tandem),
        Column::Tool(Tool::Native),
        Column::Tool(Tool::Pglogical),
        Column::Tool(Tool::Bucardo),
    ];

    fn label(self) -> &'static str {
        match self {
            Column::NoCapture => "no capture",
            Column::Tool(t) => t.label(),
        }
    }
}

/// One figure.
#[derive(Debug, Clone)]
pub enum Cell {
    Value(f64),
    /// The tool is not installed on this machine.
    NotInstalled,
    /// The tool cannot do this (e.g. a mapped schema), or the column does not apply.
    NotApplicable,
    /// Not run (left out by `TANDEM_BENCH_TOOLS` / `TANDEM_BENCH_WORKLOADS`).
    Skipped,
    /// It ran and failed.
    Failed(String),
    /// More than this (it was given up on at this point).
    Over(f64),
}

/// Which way is better.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Better {
    Higher,
    Lower,
}

/// The bar for tandem on a row.
#[derive(Debug, Clone, Copy)]
pub enum Target {
    /// tandem ≥ factor × the best peer in the run.
    TimesBestPeer(f64),
    /// tandem ≥ factor × the given column.
    TimesColumn(Column, f64),
    /// tandem ≤ value (in the row's unit).
    AtMost(f64),
}

/// A row.
#[derive(Debug, Clone)]
pub struct Row {
    pub name: String,
    pub unit: &'static str,
    pub better: Better,
    pub cells: BTreeMap<Column, Cell>,
    pub target: Option<Target>,
}

impl Row {
    pub fn new(name: &str, unit: &'static str, better: Better, target: Option<Target>) -> Row {
        Row {
            name: name.to_string(),
            unit,
            better,
            cells: BTreeMap::new(),
            target,
        }
    }

    fn value(&self, c: Column) -> Option<f64> {
        match self.cells.get(&c) {
            Some(Cell::Value(v)) => Some(*v),
            _ => None,
        }
    }

    /// The best peer's value and name.
    fn best_peer(&self) -> Option<(f64, Tool)> {
        let mut best: Option<(f64, Tool)> = None;
        for t in Tool::PEERS {
            if let Some(v) = self.value(Column::Tool(t)) {
                let better = match (best, self.better) {
                    (None, _) => true,
                    (Some((b, _)), Better::Higher) => v > b,
                    (Some((b, _)), Better::Lower) => v < b,
                };
                if better {
                    best = Some((v, t));
                }
            }
        }
        best
    }

    fn ratio_text(&self) -> String {
        match (self.value(Column::Tool(Tool::Tandem)), self.best_peer()) {
            (Some(t), Some((b, peer))) if b > 0.0 => {
                let r = t / b;
                let r = if r >= 100.0 {
                    fmt_num(r)
                } else {
                    format!("{r:.2}")
                };
                format!("{r}× ({})", peer.label())
            }
            _ => "—".into(),
        }
    }

    fn target_text(&self) -> (String, String) {
        let Some(target) = self.target else {
            return ("—".into(), "—".into());
        };
        let tandem = self.value(Column::Tool(Tool::Tandem));
        let (text, verdict) = match target {
            Target::TimesBestPeer(f) => {
                let text = format!("≥ {f}× best peer");
                match (tandem, self.best_peer()) {
                    (Some(t), Some((b, _))) => (text, verdict(t, f * b, true)),
                    _ => (text, "not measured".into()),
                }
            }
            Target::TimesColumn(c, f) => {
                let text = format!("≥ {f}× {}", c.label());
                match (tandem, self.value(c)) {
                    (Some(t), Some(b)) => (text, verdict(t, f * b, true)),
                    _ => (text, "not measured".into()),
                }
            }
            Target::AtMost(limit) => {
                let text = format!("≤ {} {}", fmt_num(limit), self.unit);
                match (tandem, self.cells.get(&Column::Tool(Tool::Tandem))) {
                    (Some(t), _) => (text, verdict(t, limit, false)),
                    (None, Some(Cell::Over(v))) => {
                        (text, format!("missed: > {:.0}× over", v / limit.max(1e-9)))
                    }
                    _ => (text, "not measured".into()),
                }
            }
        };
        (text, verdict)
    }
}

/// "met", or "missed: needs N× more/less".
fn verdict(value: f64, bar: f64, at_least: bool) -> String {
    let met = if at_least { value >= bar } else { value <= bar };
    if met {
        "**met**".into()
    } else if at_least && value > 0.0 {
        format!("missed: {:.2}× short", bar / value)
    } else if !at_least && bar > 0.0 {
        format!("missed: {:.2}× over", value / bar)
    } else {
        "missed".into()
    }
}

/// A number for the table: thousands grouped above 1,000, else two significant decimals.
pub fn fmt_num(v: f64) -> String {
    if !v.is_finite() {
        return v.to_string();
    }
    if v.abs() >= 1000.0 {
        let n = v.round() as i64;
        let digits = n.unsigned_abs().to_string();
        let mut out = String::new();
        for (i, ch) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i) % 3 == 0 {
                out.push(',');
            }
            out.push(ch);
        }
        if n < 0 {
            out.insert(0, '-');
        }
        out
    } else if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else if v.abs() >= 1.0 || v == 0.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

fn cell_text(c: Option<&Cell>) -> String {
    match c {
        Some(Cell::Value(v)) => fmt_num(*v),
        Some(Cell::NotInstalled) => "not installed".into(),
        Some(Cell::NotApplicable) | None => "—".into(),
        Some(Cell::Skipped) => "skipped".into(),
        Some(Cell::Failed(_)) => "failed".into(),
        Some(Cell::Over(v)) => format!("> {}", fmt_num(*v)),
    }
}

/// Everything measured in one run.
#[derive(Debug, Default)]
pub struct Report {
    pub rows: Vec<Row>,
    /// Free-form findings printed under the table (one per line).
    pub notes: Vec<String>,
}

impl Report {
    /// The row named `name` (created by `make` when new).
    pub fn row(&mut self, name: &str, make: impl FnOnce() -> Row) -> &mut Row {
        if let Some(i) = self.rows.iter().position(|r| r.name == name) {
            return &mut self.rows[i];
        }
        self.rows.push(make());
        let last = self.rows.len() - 1;
        &mut self.rows[last]
    }

    /// The table in Markdown, then failures and notes.
    pub fn markdown(&self) -> String {
        let mut s = String::new();
        let _ = write!(s, "| workload | unit |");
        for c in Column::ALL {
            let _ = write!(s, " {} |", c.label());
        }
        let _ = writeln!(s, " tandem ÷ best peer | target | verdict |");
        let _ = write!(s, "|---|---|");
        for _ in Column::ALL {
            let _ = write!(s, "---:|");
        }
        let _ = writeln!(s, "---:|---|---|");
        for r in &self.rows {
            let unit = match r.better {
                Better::Higher => format!("{} ↑", r.unit),
                Better::Lower => format!("{} ↓", r.unit),
            };
            let _ = write!(s, "| {} | {unit} |", r.name);
            for c in Column::ALL {
                let _ = write!(s, " {} |", cell_text(r.cells.get(&c)));
            }
            let (target, verdict) = r.target_text();
            let _ = writeln!(s, " {} | {target} | {verdict} |", r.ratio_text());
        }
        let failures: Vec<String> = self
            .rows
            .iter()
            .flat_map(|r| {
                r.cells.iter().filter_map(move |(c, cell)| match cell {
                    Cell::Failed(e) => Some(format!("- {} / {}: {e}", r.name, c.label())),
                    _ => None,
                })
            })
            .collect();
        if !failures.is_empty() {
            let _ = writeln!(s, "\nFailures:\n{}", failures.join("\n"));
        }
        if !self.notes.is_empty() {
            let _ = writeln!(s, "\nNotes:");
            for n in &self.notes {
                let _ = writeln!(s, "{n}");
            }
        }
        s
    }
}
