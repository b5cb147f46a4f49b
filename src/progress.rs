//! Progress of long jobs (backfill, verify): a bar with rate and ETA on a terminal, plain
//! log lines every few seconds otherwise (so CI logs and journald stay readable).

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use tracing::info;

/// Reports how far a job got.
pub struct Progress {
    bar: Option<ProgressBar>,
    what: String,
    total: u64,
    done: u64,
    started: Instant,
    last_line: Instant,
}

/// How often the plain variant logs.
const LINE_EVERY: Duration = Duration::from_secs(5);

impl Progress {
    /// Starts reporting `what` (e.g. "backfill order A→B") out of `total` units.
    pub fn new(what: &str, total: u64, unit: &str) -> Progress {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new(total);
            let style = ProgressStyle::with_template(&format!(
                "{{msg}} [{{bar:30}}] {{pos}}/{{len}} {unit} ({{per_sec}}, ETA {{eta}})"
            ))
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
            bar.set_style(style);
            bar.set_message(what.to_string());
            bar
        });
        Progress {
            bar,
            what: what.to_string(),
            total,
            done: 0,
            started: Instant::now(),
            last_line: Instant::now(),
        }
    }

    /// Sets the units done so far (e.g. when resuming).
    pub fn set(&mut self, done: u64) {
        self.done = done;
        self.total = self.total.max(done);
        if let Some(bar) = &self.bar {
            bar.set_length(self.total);
            bar.set_position(done);
        } else if self.last_line.elapsed() >= LINE_EVERY {
            self.last_line = Instant::now();
            let secs = self.started.elapsed().as_secs_f64().max(0.001);
            info!(
                "{}: {}/{} ({:.0}/s)",
                self.what,
                self.done,
                self.total,
                self.done as f64 / secs
            );
        }
    }

    /// Adds `n` units.
    pub fn add(&mut self, n: u64) {
        self.set(self.done + n);
    }

    /// Ends the bar.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
