//! High availability: any number of `tandem run` with the same config, exactly one applying.
//!
//! The lead is a lock in database A held on a dedicated connection ([`Endpoint::try_lead`]):
//! it goes the moment the holder's session ends (process killed, host gone, database lost).
//! A standby tries to take it every [`TRY_EVERY`]. The active instance checks it every
//! [`CHECK_EVERY`] and, on the first failed check, stops applying at once: the sync loop is
//! cut (a batch in flight rolls back, or committed and is found stale when applied again).
//!
//! The window. Between the lock going (its session ended on the server) and the holder
//! noticing, the holder may still apply: at most [`VALID_FOR`] after its last good check it
//! starts no new batch, and a failed or hung check cuts the batch in flight within
//! `CHECK_EVERY + CHECK_TIMEOUT`. An instance that takes over from another one it saw holding
//! the lock therefore waits [`TAKEOVER_GRACE`] (longer than both) before applying, so the two
//! do not overlap. What remains is a holder frozen in the middle of a batch (a paused VM) for
//! longer than that: when it wakes it may finish that one batch. Such a late repeat is
//! harmless for a record already linked (the apply locks the link and checks the sequence in
//! the target transaction, so the same or an older change is discarded as stale); two first
//! inserts of one record at a key-generating side running at the very same instant could each
//! create it, which the apply would prevent only by locking the link before reading it.
//!
//! [`Endpoint::try_lead`]: crate::endpoint::Endpoint::try_lead

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tracing::{error, info, warn};

use super::{Role, ServiceError};
use crate::config::Config;
use crate::endpoint::Lease;
use crate::sync::{self, Gate, Sides};

/// How often a standby tries to take the lead.
pub const TRY_EVERY: Duration = Duration::from_secs(1);
/// How often the active instance checks that it still holds the lead.
pub const CHECK_EVERY: Duration = Duration::from_millis(500);
/// A check that has not answered in this time counts as failed. (The PostgreSQL lease
/// has its own, shorter timeout; this one guards against any lease that hangs.)
pub const CHECK_TIMEOUT: Duration = Duration::from_millis(1500);
/// A batch may start only this long after the start of the last good check.
pub const VALID_FOR: Duration = Duration::from_millis(1500);
/// How long a new leader waits before applying, when it took over from another instance.
pub const TAKEOVER_GRACE: Duration = Duration::from_millis(2500);

/// Opens for batches until the lease's last good check is too old.
#[derive(Debug)]
pub struct LeaseGate {
    valid_until: Mutex<Instant>,
}

impl LeaseGate {
    fn new() -> LeaseGate {
        LeaseGate {
            valid_until: Mutex::new(Instant::now() + VALID_FOR),
        }
    }

    fn renew(&self, check_started: Instant) {
        if let Ok(mut v) = self.valid_until.lock() {
            *v = check_started + VALID_FOR;
        }
    }

    fn close(&self) {
        if let Ok(mut v) = self.valid_until.lock() {
            *v = Instant::now();
        }
    }
}

impl Gate for LeaseGate {
    fn open(&self) -> bool {
        self.valid_until
            .lock()
            .map(|v| Instant::now() < *v)
            .unwrap_or(false)
    }
}

/// How a term as the active instance ended.
enum Ended {
    /// Asked to stop.
    Shutdown,
    /// The lease check failed.
    Lost,
    /// The sync loop ended by itself (a panic): the lead is given up so another can try.
    Crashed,
}

/// Takes the lead when it can and applies changes while it holds it; returns when
/// `shutdown` turns true (after the batch in flight finished and the lead was released).
pub async fn run(
    config: Arc<Config>,
    sides: Sides,
    role: Arc<Role>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut standby_said = false;
    let mut saw_other = false;
    let mut last_error: Option<String> = None;
    while !*shutdown.borrow() {
        // Connecting may take a while when A is away: a stop must not wait for it.
        let attempt = tokio::select! {
            r = sides.a.try_lead() => r,
            _ = stopped(&mut shutdown) => break,
        };
        match attempt {
            Ok(Some(mut lease)) => {
                last_error = None;
                if saw_other {
                    // The previous holder may not have noticed yet that its lock went.
                    role.set_inactive("taking over from the previous active instance");
                    info!(
                        "taking over: the active instance stopped; applying in {:.1} s",
                        TAKEOVER_GRACE.as_secs_f64()
                    );
                    if sleep_or_stop(TAKEOVER_GRACE, &mut shutdown).await {
                        break;
                    }
                    if !checked(lease.as_mut()).await {
                        continue;
                    }
                }
                info!("active: this instance applies the changes");
                role.set_active();
                let ended = term(&config, &sides, lease, &mut shutdown, role.paused.clone()).await;
                match ended {
                    Ended::Shutdown => {
                        role.set_inactive("stopping");
                        break;
                    }
                    Ended::Lost => {
                        role.set_inactive("lost the lead; trying to take it again");
                        warn!("lost the lead (the lock connection to side A failed): stopped applying; standing by");
                        standby_said = false;
                        // Its own loop was cut already: no one else to wait for if it wins again.
                        saw_other = false;
                    }
                    Ended::Crashed => {
                        role.set_inactive("the sync loop ended unexpectedly");
                        error!(
                            "the sync loop ended unexpectedly; gave up the lead and will try again"
                        );
                        standby_said = false;
                        saw_other = false;
                    }
                }
            }
            Ok(None) => {
                saw_other = true;
                role.set_inactive("standby: another instance is active");
                if !standby_said {
                    info!("standby: another instance is active; taking over when it stops");
                    standby_said = true;
                }
            }
            Err(e) => {
                let message = e.to_string();
                role.set_inactive(format!("cannot take the lead: {message}"));
                // Once per distinct error: a database that stays away is not news every second.
                if last_error.as_deref() != Some(message.as_str()) {
                    warn!(
                        "cannot take the lead: {message}; trying again every {} s",
                        TRY_EVERY.as_secs()
                    );
                    last_error = Some(message);
                }
            }
        }
        if sleep_or_stop(TRY_EVERY, &mut shutdown).await {
            break;
        }
    }
}

/// How long `run --once` tries to take the lead: long enough for the session of an instance
/// that was just killed to end, short enough to tell an operator quickly that one is running.
pub const ONCE_WAIT: Duration = Duration::from_secs(5);

/// The lead for `run --once`: taken within [`ONCE_WAIT`], or an error saying who has it.
pub async fn take_for_once(sides: &Sides) -> Result<Box<dyn Lease>, ServiceError> {
    let deadline = Instant::now() + ONCE_WAIT;
    loop {
        let attempt = sides.a.try_lead().await;
        let last = match attempt {
            Ok(Some(lease)) => return Ok(lease),
            Ok(None) => ServiceError::LeadHeldElsewhere,
            Err(e) => ServiceError::Lead(e),
        };
        if Instant::now() >= deadline {
            return Err(last);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Runs the sync loop while the lease holds.
async fn term(
    config: &Arc<Config>,
    sides: &Sides,
    mut lease: Box<dyn Lease>,
    shutdown: &mut watch::Receiver<bool>,
    paused: Arc<sync::drift::Paused>,
) -> Ended {
    let gate = Arc::new(LeaseGate::new());
    let (stop, stop_rx) = watch::channel(false);
    let mut loop_task = tokio::spawn(sync::run_gated(
        config.clone(),
        sides.clone(),
        stop_rx,
        Some(gate.clone() as Arc<dyn Gate>),
        paused,
    ));
    loop {
        tokio::select! {
            _ = tokio::time::sleep(CHECK_EVERY) => {}
            _ = stopped(shutdown) => {
                let _ = stop.send(true);
                // The batch in flight finishes (or the hard stop timer ends the process).
                let _ = loop_task.await;
                drop(lease); // ends the lock's session: a standby can take over at once
                return Ended::Shutdown;
            }
            // The loop only ends when told to; if it ended by itself (a panic), stand down.
            _ = &mut loop_task => {
                gate.close();
                return Ended::Crashed;
            }
        }
        let started = Instant::now();
        if checked(lease.as_mut()).await {
            gate.renew(started);
        } else {
            gate.close();
            loop_task.abort();
            let _ = loop_task.await;
            return Ended::Lost;
        }
    }
}

/// One lease check, bounded in time.
async fn checked(lease: &mut dyn Lease) -> bool {
    tokio::time::timeout(CHECK_TIMEOUT, lease.still_held())
        .await
        .unwrap_or(false)
}

/// Sleeps; true when `shutdown` turned true (or its sender is gone) meanwhile.
async fn sleep_or_stop(d: Duration, shutdown: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => false,
        _ = stopped(shutdown) => true,
    }
}

/// Returns once `shutdown` is true or its sender is gone.
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    while !*shutdown.borrow() {
        if shutdown.changed().await.is_err() {
            return;
        }
    }
}
