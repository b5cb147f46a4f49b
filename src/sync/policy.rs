//! The one retry policy: given an error's [`ErrorKind`], how often it has failed and which
//! job met it, decide — retry the batch, retry the change, suspend the change, or stop —
//! and how long to wait. The service loop, `run --once`, backfill's own applying and the
//! settling of each batch all ask here, so the caps and delays live in one table (quoted in
//! README.md, "Retries"). Commands that only read or install (verify, check, status) do not
//! retry at all: an error ends them.
//!
//! | job | error | decision |
//! |---|---|---|
//! | `run` (service) | any batch error | retry the batch after backoff(failures, `retry_min_ms`, `retry_max_ms`), forever; a non-transient error also logs a hint for the operator |
//! | `run --once` | transient batch error (unreachable, busy) | retry the batch after backoff(failures, `retry_min_ms`, 5 s), at most 6 tries in all |
//! | `backfill` | transient batch error | retry the batch after backoff(failures, `retry_min_ms`, 5 s), at most 30 retries |
//! | `run --once`, `backfill` | any other batch error | stop: the command fails (exit code 2) |
//! | `verify`, `check`, `status`, `install`, … | any error | stop: no retry; these run once, for an operator who runs them again |
//! | one change (every job) | rejected, undecodable, waiting for a parent | retry the change after backoff(attempts, `retry_min_ms`, `retry_max_ms`); suspend it at `max_attempts`, except a child whose parent is on its way, or a change refused by a unique key whose holder's own changes are on their way, which waits |
//!
//! A batch error (the whole batch rolled back) never counts against a change's attempts: no
//! change is suspended for a problem it did not cause.

use std::time::Duration;

use crate::config::SyncConfig;
use crate::endpoint::ErrorKind;
use crate::sync::retry::backoff;

/// The job that met an error: who waits for the outcome decides how long retrying is worth it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Job {
    /// `tandem run`: the service, which outlives any outage.
    Service,
    /// `tandem run --once`: drains and exits; an operator or a script waits.
    Once,
    /// `tandem backfill`: applying its own queued rows while it leads.
    Backfill,
}

/// What to do about an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Run the whole batch again after `delay` (nothing of it was committed).
    RetryBatch { delay: Duration },
    /// Leave the change pending; it becomes eligible again after `delay`.
    RetryChange { delay: Duration },
    /// Set the change aside for an operator (`tandem suspended`).
    Suspend,
    /// Give up: the error ends the job.
    Stop,
}

impl Decision {
    /// How long to wait before the retry; `None` when there is none.
    pub fn delay(self) -> Option<Duration> {
        match self {
            Decision::RetryBatch { delay } | Decision::RetryChange { delay } => Some(delay),
            Decision::Suspend | Decision::Stop => None,
        }
    }
}

/// How many tries `run --once` makes of a batch that fails transiently.
const ONCE_TRIES: u32 = 6;
/// How many times backfill retries a batch that fails transiently.
const BACKFILL_RETRIES: u32 = 30;
/// The longest wait between retries of a job someone waits for (`--once`, backfill).
const INTERACTIVE_MAX_MS: u64 = 5_000;

/// The retry policy, with the bounds from `[sync]`.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    retry_min_ms: u64,
    retry_max_ms: u64,
    max_attempts: u32,
}

impl Policy {
    /// The policy for the config's `[sync]` section.
    pub fn new(sync: &SyncConfig) -> Policy {
        Policy {
            retry_min_ms: sync.retry_min_ms,
            retry_max_ms: sync.retry_max_ms,
            max_attempts: sync.max_attempts,
        }
    }

    /// A batch (or a whole operation) failed with `kind` in `job`, after `failures` earlier
    /// failures in a row.
    pub fn on_batch_error(&self, job: Job, kind: ErrorKind, failures: u32) -> Decision {
        let transient = kind.is_transient();
        let retry = |max_ms| Decision::RetryBatch {
            delay: backoff(failures, self.retry_min_ms, max_ms),
        };
        match job {
            Job::Service => retry(self.retry_max_ms),
            Job::Once if transient && failures + 1 < ONCE_TRIES => retry(INTERACTIVE_MAX_MS),
            Job::Backfill if transient && failures < BACKFILL_RETRIES => retry(INTERACTIVE_MAX_MS),
            Job::Once | Job::Backfill => Decision::Stop,
        }
    }

    /// One change failed with `kind` (the rest of its batch was applied) after `attempts`
    /// earlier attempts. `coming`: it waits for a parent that is still on its way (pending or
    /// suspended at the source, or being backfilled), or for the changes of the record holding
    /// its unique key at the target (`ApplyError::KeyHeld`), so it waits however long that
    /// takes instead of being suspended itself.
    pub fn on_change_error(&self, _kind: ErrorKind, attempts: u32, coming: bool) -> Decision {
        // Every kind of change error is treated alike today: the row, its mapping or its
        // parent may be fixed while it waits, and suspension hands it to an operator.
        if attempts + 1 >= self.max_attempts && !coming {
            Decision::Suspend
        } else {
            Decision::RetryChange {
                delay: backoff(attempts, self.retry_min_ms, self.retry_max_ms),
            }
        }
    }

    /// What to tell the operator about a batch error of `kind`, appended to its log line.
    pub fn hint(kind: ErrorKind) -> &'static str {
        if kind.is_transient() {
            ""
        } else {
            " (not a passing fault: check the databases and run `tandem check`)"
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ErrorKind::*;

    const ALL: [ErrorKind; 7] = [
        Unreachable,
        Busy,
        RowRejected,
        WaitingForParent,
        Undecodable,
        Schema,
        Internal,
    ];

    fn policy() -> Policy {
        Policy {
            retry_min_ms: 200,
            retry_max_ms: 60_000,
            max_attempts: 10,
        }
    }

    fn delay(d: Decision) -> Duration {
        d.delay()
            .unwrap_or_else(|| panic!("expected a retry, got {d:?}"))
    }

    #[test]
    fn the_service_retries_every_batch_error_forever() {
        for k in ALL {
            for failures in [0, 5, 100, u32::MAX] {
                let d = policy().on_batch_error(Job::Service, k, failures);
                assert!(matches!(d, Decision::RetryBatch { .. }), "{k:?} {failures}");
                assert!(delay(d) <= Duration::from_millis(60_000));
            }
        }
        assert!(delay(policy().on_batch_error(Job::Service, Busy, 20)) >= Duration::from_secs(30));
    }

    #[test]
    fn once_retries_transient_errors_six_tries_in_all() {
        for k in [Unreachable, Busy] {
            for failures in 0..5 {
                let d = policy().on_batch_error(Job::Once, k, failures);
                assert!(delay(d) <= Duration::from_millis(5_000), "{k:?} {failures}");
            }
            assert_eq!(policy().on_batch_error(Job::Once, k, 5), Decision::Stop);
        }
        for k in [RowRejected, WaitingForParent, Undecodable, Schema, Internal] {
            assert_eq!(
                policy().on_batch_error(Job::Once, k, 0),
                Decision::Stop,
                "{k:?}"
            );
        }
    }

    #[test]
    fn backfill_retries_transient_errors_thirty_times() {
        for k in [Unreachable, Busy] {
            for failures in 0..30 {
                let d = policy().on_batch_error(Job::Backfill, k, failures);
                assert!(delay(d) <= Duration::from_millis(5_000), "{k:?} {failures}");
            }
            assert_eq!(
                policy().on_batch_error(Job::Backfill, k, 30),
                Decision::Stop
            );
        }
        assert_eq!(
            policy().on_batch_error(Job::Backfill, Schema, 0),
            Decision::Stop
        );
    }

    #[test]
    fn a_change_is_retried_until_max_attempts_then_suspended() {
        for k in [RowRejected, WaitingForParent, Undecodable] {
            for attempts in 0..9 {
                let d = policy().on_change_error(k, attempts, false);
                assert!(
                    matches!(d, Decision::RetryChange { .. }),
                    "{k:?} {attempts}"
                );
            }
            assert_eq!(policy().on_change_error(k, 9, false), Decision::Suspend);
            assert_eq!(policy().on_change_error(k, 50, false), Decision::Suspend);
        }
    }

    #[test]
    fn a_child_whose_parent_is_coming_waits_without_end() {
        let d = policy().on_change_error(WaitingForParent, 1_000, true);
        assert!(delay(d) <= Duration::from_millis(60_000));
    }

    #[test]
    fn only_lasting_faults_get_a_hint() {
        assert_eq!(Policy::hint(Unreachable), "");
        assert_eq!(Policy::hint(Busy), "");
        assert!(Policy::hint(Schema).contains("tandem check"));
    }
}
