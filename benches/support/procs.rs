//! Child processes that cannot outlive the benchmark, commands with time limits, and readings
//! from `/proc` (peak memory, CPU time per process).

use std::collections::HashMap;
use std::fs;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

/// Bench errors are plain text: they are printed, never matched.
pub type Res<T> = Result<T, String>;

fn registry() -> &'static Mutex<Vec<i32>> {
    static PIDS: OnceLock<Mutex<Vec<i32>>> = OnceLock::new();
    PIDS.get_or_init(Default::default)
}

/// Kills (SIGKILL) every guarded child still running; for the signal handler.
pub fn kill_all_children() {
    let pids: Vec<i32> = registry()
        .lock()
        .map(|mut p| std::mem::take(&mut *p))
        .unwrap_or_default();
    for pid in pids {
        // SAFETY: kill has no memory-safety preconditions.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
}

/// A child process that is stopped (SIGTERM, then SIGKILL) when the guard drops, also when
/// the benchmark panics.
pub struct ChildGuard {
    child: Option<Child>,
    name: String,
}

impl ChildGuard {
    /// Spawns `cmd` (its stdin closed).
    pub fn spawn(mut cmd: Command, name: &str) -> Res<ChildGuard> {
        cmd.stdin(Stdio::null());
        let child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {name}: {e}"))?;
        if let Ok(mut p) = registry().lock() {
            p.push(child.id() as i32);
        }
        Ok(ChildGuard {
            child: Some(child),
            name: name.to_string(),
        })
    }

    /// The process id.
    pub fn pid(&self) -> Option<i32> {
        self.child.as_ref().map(|c| c.id() as i32)
    }

    /// Whether it still runs; `Err` with its exit status when it has ended.
    pub fn check_running(&mut self) -> Res<()> {
        match self.child.as_mut().map(|c| c.try_wait()) {
            Some(Ok(None)) => Ok(()),
            Some(Ok(Some(status))) => Err(format!("{} exited: {status}", self.name)),
            Some(Err(e)) => Err(format!("{}: {e}", self.name)),
            None => Err(format!("{} was stopped", self.name)),
        }
    }

    /// SIGTERM, then waits up to `grace` for it to exit, then SIGKILL. Returns whether it
    /// exited by itself.
    pub fn stop(&mut self, grace: Duration) -> bool {
        let Some(mut child) = self.child.take() else {
            return true;
        };
        let pid = child.id() as i32;
        if let Ok(mut p) = registry().lock() {
            p.retain(|x| *x != pid);
        }
        if let Ok(Some(_)) = child.try_wait() {
            return true;
        }
        // SAFETY: kill has no memory-safety preconditions; `pid` is our unreaped child.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return true;
            }
            thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        false
    }

    /// Waits for it to exit by itself, up to `limit`; kills it then.
    pub fn wait(&mut self, limit: Duration) -> Res<std::process::ExitStatus> {
        let name = self.name.clone();
        let Some(child) = self.child.as_mut() else {
            return Err(format!("{name} was stopped"));
        };
        let deadline = Instant::now() + limit;
        loop {
            match child.try_wait() {
                Ok(Some(status)) => {
                    let pid = child.id() as i32;
                    if let Ok(mut p) = registry().lock() {
                        p.retain(|x| *x != pid);
                    }
                    self.child = None;
                    return Ok(status);
                }
                Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(20)),
                Ok(None) => {
                    self.stop(Duration::from_secs(2));
                    return Err(format!("{name} still running after {limit:?}: killed"));
                }
                Err(e) => return Err(format!("{name}: {e}")),
            }
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(10));
    }
}

/// Runs `cmd` to completion with its output captured, killing it after `limit`.
pub fn run_limited(mut cmd: Command, what: &str, limit: Duration) -> Res<Output> {
    let dir = std::env::temp_dir();
    let n = std::process::id();
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let k = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let out_path = dir.join(format!("tandem-bench-{n}-{k}.out"));
    let err_path = dir.join(format!("tandem-bench-{n}-{k}.err"));
    let files = (fs::File::create(&out_path), fs::File::create(&err_path));
    let (Ok(out), Ok(err)) = files else {
        return Err(format!(
            "{what}: cannot create output files in {}",
            dir.display()
        ));
    };
    cmd.stdout(out).stderr(err);
    let mut guard = ChildGuard::spawn(cmd, what)?;
    let status = guard.wait(limit);
    let stdout = fs::read(&out_path).unwrap_or_default();
    let stderr = fs::read(&err_path).unwrap_or_default();
    let _ = fs::remove_file(&out_path);
    let _ = fs::remove_file(&err_path);
    let status = status.map_err(|e| format!("{e}\n{}", String::from_utf8_lossy(&stderr)))?;
    Ok(Output {
        status,
        stdout,
        stderr,
    })
}

/// [`run_limited`], failing with its output when it exits non-zero.
pub fn run_ok(cmd: Command, what: &str, limit: Duration) -> Res<String> {
    let out = run_limited(cmd, what, limit)?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.success() {
        Ok(text)
    } else {
        Err(format!(
            "{what} failed ({}):\n{}{}",
            out.status,
            text,
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// A `kB` field of `/proc/PID/status` (`VmHWM`, `VmRSS`).
pub fn status_kb(pid: i32, field: &str) -> Option<u64> {
    let text = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// (parent pid, user ticks, system ticks) of a process.
fn stat(pid: i32) -> Option<(i32, u64, u64)> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces: fields start after the last ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest[0] is field 3 (state): ppid is field 4, utime 14, stime 15.
    Some((
        f.get(1)?.parse().ok()?,
        f.get(11)?.parse().ok()?,
        f.get(12)?.parse().ok()?,
    ))
}

fn ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// CPU seconds (user, system) per process of a group: a process and its children.
#[derive(Debug, Clone, Default)]
pub struct CpuSnapshot {
    /// pid → (parent pid, user ticks, system ticks).
    ticks: HashMap<i32, (i32, u64, u64)>,
    /// Whole machine: busy ticks (everything but idle and iowait), from /proc/stat.
    machine_busy: u64,
    at: Option<Instant>,
}

/// The postmaster pid of a cluster (its data directory holds `postmaster.pid`).
pub fn postmaster_pid(cluster_dir: &Path) -> Option<i32> {
    let text = fs::read_to_string(cluster_dir.join("data").join("postmaster.pid")).ok()?;
    text.lines().next()?.trim().parse().ok()
}

fn machine_busy() -> u64 {
    let Ok(text) = fs::read_to_string("/proc/stat") else {
        return 0;
    };
    let Some(line) = text.lines().next() else {
        return 0;
    };
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal ...
    v.iter().sum::<u64>() - v.get(3).copied().unwrap_or(0) - v.get(4).copied().unwrap_or(0)
}

impl CpuSnapshot {
    /// Reads every process whose pid, or whose parent's pid, is in `roots`.
    pub fn take(roots: &[i32]) -> CpuSnapshot {
        let mut ticks = HashMap::new();
        if let Ok(entries) = fs::read_dir("/proc") {
            for e in entries.flatten() {
                let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
                    continue;
                };
                if let Some((ppid, u, s)) = stat(pid) {
                    if roots.contains(&pid) || roots.contains(&ppid) {
                        ticks.insert(pid, (ppid, u, s));
                    }
                }
            }
        }
        CpuSnapshot {
            ticks,
            machine_busy: machine_busy(),
            at: Some(Instant::now()),
        }
    }

    /// CPU seconds used since `before` by the processes of `root` (it and its children
    /// alive now: a backend that ended in between is not counted).
    pub fn seconds_since(&self, before: &CpuSnapshot, root: i32) -> f64 {
        let mut total = 0u64;
        for (pid, (ppid, u, s)) in &self.ticks {
            if *pid != root && *ppid != root {
                continue;
            }
            let (u0, s0) = before
                .ticks
                .get(pid)
                .map(|(_, u, s)| (*u, *s))
                .unwrap_or((0, 0));
            total += (u + s).saturating_sub(u0 + s0);
        }
        total as f64 / ticks_per_second()
    }

    /// Busy CPU seconds of the whole machine since `before` (every process, all cores).
    pub fn machine_seconds_since(&self, before: &CpuSnapshot) -> f64 {
        self.machine_busy.saturating_sub(before.machine_busy) as f64 / ticks_per_second()
    }

    /// Wall seconds since `before`.
    pub fn wall_since(&self, before: &CpuSnapshot) -> f64 {
        match (self.at, before.at) {
            (Some(a), Some(b)) => a.duration_since(b).as_secs_f64(),
            _ => 0.0,
        }
    }
}
