//! Throwaway local PostgreSQL clusters, used by `tandem demo` and by the tests.
//!
//! A [`Cluster`] is a private PostgreSQL instance living in a fresh directory under
//! `std::env::temp_dir()/tandem-clusters/<label>-<pid>-<n>`: `data/` holds the data directory,
//! `log` the server log, and the directory itself the Unix socket. It listens on
//! `127.0.0.1:<free port>`, accepts `postgres` without a password (`trust`), and is tuned for
//! speed rather than durability. Dropping it stops the server immediately and removes the
//! directory.
//!
//! Everything here is blocking (`std::process`); call it from `spawn_blocking` when it matters.
//!
//! PostgreSQL refuses to run as root, so when the current process is root the server programs
//! (`initdb`, `pg_ctl`, `postgres`) run as the `postgres` user through `runuser`, on a directory
//! owned by that user. Client programs (`psql`, `pg_isready`) always run as the current user.

use std::collections::hash_map::RandomState;
use std::collections::HashSet;
use std::ffi::{CString, OsStr};
use std::fs;
use std::hash::{BuildHasher, Hasher};
use std::io::{self, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, Once, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

/// Name of the directory under `std::env::temp_dir()` that holds all clusters.
pub const CLUSTERS_DIR: &str = "tandem-clusters";

/// How long to wait for a server to start or to accept connections.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// Number of server log lines quoted in a start error.
const LOG_TAIL_LINES: usize = 40;

/// Environment variables that would change what the PostgreSQL programs do.
const PG_ENV: &[&str] = &[
    "PGDATA",
    "PGHOST",
    "PGHOSTADDR",
    "PGPORT",
    "PGUSER",
    "PGDATABASE",
    "PGPASSWORD",
    "PGPASSFILE",
    "PGSERVICE",
    "PGSERVICEFILE",
    "PGOPTIONS",
    "PGSSLMODE",
    "PGTARGETSESSIONATTRS",
    "PSQLRC",
];

/// What can go wrong while managing a local cluster.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// No directory with `initdb` and `pg_ctl` was found.
    #[error(
        "PostgreSQL server binaries (initdb, pg_ctl) not found (looked in: {searched}); \
         install them with `bash deploy/install-postgres.sh` or `apt-get install postgresql`"
    )]
    BinariesNotFound {
        /// The places that were searched, for the message.
        searched: String,
    },
    /// Running as root, but there is no `postgres` user to run the server as.
    #[error(
        "running as root, and PostgreSQL refuses to run as root, but there is no `postgres` user \
         to run it as; create it with `bash deploy/install-postgres.sh` \
         (or `useradd --system --create-home postgres`)"
    )]
    NoPostgresUser,
    /// A file-system or process operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// An external command ran but failed.
    #[error("command `{command}` failed ({status}){output}")]
    Command {
        /// The command line.
        command: String,
        /// Its exit status.
        status: String,
        /// Its stderr and stdout, prefixed with a newline when not empty.
        output: String,
    },
    /// The server did not start or did not become ready.
    #[error(
        "PostgreSQL in {dir} did not start: {reason}\n--- last lines of {log} ---\n{log_tail}"
    )]
    Start {
        /// The cluster directory.
        dir: PathBuf,
        /// Why starting was given up.
        reason: String,
        /// The server log.
        log: PathBuf,
        /// The end of the server log.
        log_tail: String,
    },
    /// No free TCP port could be found on 127.0.0.1.
    #[error("no free TCP port on 127.0.0.1: {0}")]
    NoFreePort(String),
}

/// Result type of this module.
pub type Result<T, E = ClusterError> = std::result::Result<T, E>;

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> ClusterError {
    let what = what.into();
    move |source| ClusterError::Io { what, source }
}

// ---------------------------------------------------------------------------------------------
// Finding the binaries
// ---------------------------------------------------------------------------------------------

fn has_server_bins(dir: &Path) -> bool {
    dir.join("initdb").is_file() && dir.join("pg_ctl").is_file()
}

/// Parses the major version out of `/usr/lib/postgresql/<version>/bin`-style names.
fn version_key(name: &OsStr) -> Vec<u64> {
    name.to_string_lossy()
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap_or(0))
        .collect()
}

/// Finds the directory holding the PostgreSQL server programs: `pg_config --bindir` when it
/// has `initdb` and `pg_ctl`, else the newest `/usr/lib/postgresql/*/bin` that has them.
pub fn find_bindir() -> Result<PathBuf> {
    let mut searched = Vec::new();
    if let Ok(out) = Command::new("pg_config")
        .arg("--bindir")
        .stdin(Stdio::null())
        .output()
    {
        if out.status.success() {
            let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
            if has_server_bins(&dir) {
                return Ok(dir);
            }
            searched.push(format!("{} (from pg_config --bindir)", dir.display()));
        }
    } else {
        searched.push("pg_config (not on PATH)".to_string());
    }
    let root = Path::new("/usr/lib/postgresql");
    let mut candidates: Vec<(Vec<u64>, PathBuf)> = fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| (version_key(&e.file_name()), e.path().join("bin")))
        .filter(|(_, bin)| has_server_bins(bin))
        .collect();
    candidates.sort();
    if let Some((_, bin)) = candidates.pop() {
        return Ok(bin);
    }
    searched.push("/usr/lib/postgresql/*/bin".to_string());
    Err(ClusterError::BinariesNotFound {
        searched: searched.join(", "),
    })
}

// ---------------------------------------------------------------------------------------------
// Running programs, as `postgres` when root
// ---------------------------------------------------------------------------------------------

/// How to run the server programs of one installation.
#[derive(Debug, Clone)]
struct Runner {
    bindir: PathBuf,
    /// `Some((uid, gid))` of the `postgres` user when running as root.
    as_postgres: Option<(u32, u32)>,
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Looks up the uid and gid of a user.
fn lookup_user(name: &str) -> Option<(u32, u32)> {
    let cname = CString::new(name).ok()?;
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    // SAFETY: an all-zero passwd is a valid value for getpwnam_r to overwrite.
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the duration of the call and `buf.len()` is its size.
    let rc = unsafe {
        libc::getpwnam_r(
            cname.as_ptr(),
            &mut pwd,
            buf.as_mut_ptr(),
            buf.len(),
            &mut result,
        )
    };
    if rc != 0 || result.is_null() {
        return None;
    }
    Some((pwd.pw_uid, pwd.pw_gid))
}

fn clean_env(cmd: &mut Command) {
    for var in PG_ENV {
        cmd.env_remove(var);
    }
    cmd.stdin(Stdio::null());
}

impl Runner {
    fn new() -> Result<Runner> {
        let bindir = find_bindir()?;
        let as_postgres = if is_root() {
            Some(lookup_user("postgres").ok_or(ClusterError::NoPostgresUser)?)
        } else {
            None
        };
        Ok(Runner {
            bindir,
            as_postgres,
        })
    }

    /// A server program (`initdb`, `pg_ctl`), run as `postgres` when root, in `cwd`.
    fn server(&self, program: &str, cwd: &Path) -> Command {
        let path = self.bindir.join(program);
        let mut cmd = if self.as_postgres.is_some() {
            let mut c = Command::new("runuser");
            c.args([OsStr::new("-u"), OsStr::new("postgres"), OsStr::new("--")])
                .arg(path);
            c
        } else {
            Command::new(path)
        };
        cmd.current_dir(cwd);
        clean_env(&mut cmd);
        cmd
    }

    /// A client program (`psql`, `pg_isready`), run as the current user.
    fn client(&self, program: &str) -> Command {
        let mut cmd = Command::new(self.bindir.join(program));
        clean_env(&mut cmd);
        cmd.env("PGCONNECT_TIMEOUT", "10");
        cmd
    }

    /// Hands a path to the `postgres` user when running as root.
    fn give(&self, path: &Path) -> Result<()> {
        if let Some((uid, gid)) = self.as_postgres {
            std::os::unix::fs::chown(path, Some(uid), Some(gid))
                .map_err(io_err(format!("chown postgres {}", path.display())))?;
        }
        Ok(())
    }
}

fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        let arg = arg.to_string_lossy();
        s.push(' ');
        if arg.is_empty() || arg.contains(|c: char| c.is_whitespace() || "'\"$;&|".contains(c)) {
            s.push('\'');
            s.push_str(&arg.replace('\'', "'\\''"));
            s.push('\'');
        } else {
            s.push_str(&arg);
        }
    }
    s
}

fn command_failed(cmd: &Command, out: &Output) -> ClusterError {
    let mut output = String::new();
    for part in [&out.stderr, &out.stdout] {
        let text = String::from_utf8_lossy(part);
        let text = text.trim_end();
        if !text.is_empty() {
            output.push('\n');
            output.push_str(text);
        }
    }
    ClusterError::Command {
        command: describe(cmd),
        status: out.status.to_string(),
        output,
    }
}

/// Runs a command to completion, failing when it exits non-zero.
fn run(cmd: &mut Command) -> Result<Output> {
    let out = cmd
        .output()
        .map_err(io_err(format!("could not run `{}`", describe(cmd))))?;
    if out.status.success() {
        Ok(out)
    } else {
        Err(command_failed(cmd, &out))
    }
}

/// Runs a command feeding `input` on its stdin, failing when it exits non-zero.
fn run_with_input(cmd: &mut Command, input: &str) -> Result<Output> {
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .map_err(io_err(format!("could not run `{}`", describe(cmd))))?;
    let writer = child.stdin.take().map(|mut stdin| {
        let input = input.to_owned();
        // A thread, so a large output cannot block us while we are still writing.
        thread::spawn(move || {
            // psql may exit early on error; a broken pipe is reported through its status.
            let _ = stdin.write_all(input.as_bytes());
        })
    });
    let out = child
        .wait_with_output()
        .map_err(io_err(format!("waiting for `{}`", describe(cmd))))?;
    if let Some(w) = writer {
        let _ = w.join();
    }
    if out.status.success() {
        Ok(out)
    } else {
        Err(command_failed(cmd, &out))
    }
}

// ---------------------------------------------------------------------------------------------
// Ports
// ---------------------------------------------------------------------------------------------

fn used_ports() -> MutexGuard<'static, HashSet<u16>> {
    static USED: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    USED.get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner())
}

fn random_u64() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.write_u32(std::process::id());
    h.finish()
}

fn port_is_free(port: u16) -> bool {
    TcpListener::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port)).is_ok()
}

/// Lowest port the kernel hands out for outgoing connections.
fn ephemeral_low() -> Option<u16> {
    let text = fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    text.split_whitespace().next()?.parse().ok()
}

/// Picks a free TCP port on 127.0.0.1 that this process has not handed out before.
///
/// It prefers ports below the kernel's ephemeral range, so that a client connection elsewhere
/// can never occupy the port while the server is stopped (see [`Cluster::start_again`]); when
/// that fails it binds port 0 and takes what the kernel gives.
fn pick_port() -> Result<u16> {
    let mut used = used_ports();
    if let Some(low) = ephemeral_low() {
        if low > 11_000 {
            let span = u64::from(low - 10_000);
            for _ in 0..50 {
                let port = 10_000 + (random_u64() % span) as u16;
                if !used.contains(&port) && port_is_free(port) {
                    used.insert(port);
                    return Ok(port);
                }
            }
        }
    }
    let mut last = String::from("every port offered was already used by this process");
    for _ in 0..50 {
        match TcpListener::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0))
            .and_then(|l| l.local_addr())
        {
            Ok(addr) if !used.contains(&addr.port()) => {
                used.insert(addr.port());
                return Ok(addr.port());
            }
            Ok(_) => {}
            Err(e) => last = e.to_string(),
        }
    }
    Err(ClusterError::NoFreePort(last))
}

// ---------------------------------------------------------------------------------------------
// Process-wide registry, for the atexit hook
// ---------------------------------------------------------------------------------------------

/// What is needed to tear a cluster down without its `Cluster` value.
#[derive(Debug, Clone)]
struct Teardown {
    runner: Runner,
    dir: PathBuf,
}

impl Teardown {
    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// Stops the server (immediate mode) if it runs, then removes the directory.
    fn run(&self) {
        let data = self.data();
        if postmaster_pid(&data).is_some_and(pid_alive) {
            let mut cmd = self.runner.server("pg_ctl", &self.dir);
            cmd.arg("stop")
                .arg("-D")
                .arg(&data)
                .args(["-m", "immediate", "-w", "-t", "30"]);
            let _ = cmd.output();
            // pg_ctl could not do it (e.g. a data directory it cannot read): signal directly.
            if let Some(pid) = postmaster_pid(&data).filter(|p| pid_alive(*p)) {
                // SAFETY: kill has no memory-safety preconditions.
                unsafe { libc::kill(pid, libc::SIGQUIT) };
                let deadline = Instant::now() + Duration::from_secs(10);
                while pid_alive(pid) && Instant::now() < deadline {
                    thread::sleep(Duration::from_millis(50));
                }
            }
        }
        remove_dir(&self.dir);
    }
}

fn registry() -> MutexGuard<'static, Vec<(u64, Teardown)>> {
    static REGISTRY: OnceLock<Mutex<Vec<(u64, Teardown)>>> = OnceLock::new();
    REGISTRY
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner())
}

extern "C" fn stop_all_hook() {
    let _ = std::panic::catch_unwind(|| {
        let all: Vec<Teardown> = registry().drain(..).map(|(_, t)| t).collect();
        for t in all {
            t.run();
        }
    });
}

/// Registers (once per process) an `atexit` hook that stops and removes every cluster created
/// by this process that is still alive when the process exits.
///
/// Meant for clusters kept in a `static`, whose `Drop` never runs. The hook runs on a normal
/// return from `main` and on `std::process::exit` (which the test harness uses), not when the
/// process is killed; killed runs are cleaned up by the next [`Cluster::start`].
pub fn stop_all_at_exit() {
    static REGISTER: Once = Once::new();
    REGISTER.call_once(|| {
        // SAFETY: `stop_all_hook` is an `extern "C" fn()` that never unwinds.
        unsafe {
            libc::atexit(stop_all_hook);
        }
    });
}

// ---------------------------------------------------------------------------------------------
// Stale clusters
// ---------------------------------------------------------------------------------------------

fn pid_alive(pid: i32) -> bool {
    if pid <= 0 {
        return false;
    }
    // SAFETY: signal 0 only checks that the process exists.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// The postmaster pid recorded in a data directory, if any.
fn postmaster_pid(data: &Path) -> Option<i32> {
    let text = fs::read_to_string(data.join("postmaster.pid")).ok()?;
    text.lines().next()?.trim().parse().ok()
}

fn remove_dir(dir: &Path) {
    for _ in 0..5 {
        match fs::remove_dir_all(dir) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                thread::sleep(Duration::from_millis(100))
            }
            _ => return,
        }
    }
}

/// The pid in a `<label>-<pid>-<n>` directory name.
fn owner_pid(name: &str) -> Option<i32> {
    let mut parts = name.rsplitn(3, '-');
    let n = parts.next()?;
    let pid = parts.next()?;
    parts.next()?;
    n.parse::<u64>().ok()?;
    pid.parse().ok()
}

/// Stops and removes clusters left behind by processes that no longer exist.
fn sweep(root: &Path, runner: &Runner) {
    let me = std::process::id() as i32;
    let Ok(entries) = fs::read_dir(root) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = owner_pid(&name.to_string_lossy()) else {
            continue;
        };
        if pid == me || pid_alive(pid) {
            continue;
        }
        Teardown {
            runner: runner.clone(),
            dir: entry.path(),
        }
        .run();
    }
}

// ---------------------------------------------------------------------------------------------
// The cluster
// ---------------------------------------------------------------------------------------------

/// What a cluster needs beyond the defaults, for [`Cluster::start_with`]: TLS and
/// authentication rules (the tests of TLS, client certificates and passwords).
#[derive(Debug, Clone, Default)]
pub struct ServerSetup {
    /// With it the server runs with `ssl = on`.
    pub tls: Option<ServerTls>,
    /// `pg_hba.conf` lines put before initdb's (`trust` for everyone), so they decide first:
    /// e.g. `hostssl all alice 127.0.0.1/32 cert` or `host all bob 127.0.0.1/32 scram-sha-256`.
    pub hba: Vec<String>,
}

/// The server's TLS files, as PEM text.
#[derive(Debug, Clone)]
pub struct ServerTls {
    /// The server's certificate (and any intermediates).
    pub cert_pem: String,
    /// Its private key.
    pub key_pem: String,
    /// The authority whose client certificates the server accepts (`ssl_ca_file`), for
    /// `cert` rules in `pg_hba.conf`.
    pub client_ca_pem: Option<String>,
}

/// A throwaway local PostgreSQL cluster; see the module documentation.
///
/// All methods take `&self`, so a cluster can be shared between threads (e.g. in a `static`).
#[derive(Debug)]
pub struct Cluster {
    id: u64,
    teardown: Teardown,
    port: u16,
    /// Lines added to `tandem.conf` (TLS).
    extra_settings: String,
}

fn sanitize_label(label: &str) -> String {
    let s: String = label
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(32)
        .collect();
    if s.is_empty() {
        "cluster".to_string()
    } else {
        s
    }
}

/// Quotes an SQL identifier.
fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Quotes an SQL / configuration-file string literal.
fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// Percent-encodes a URL path segment.
fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn tail(path: &Path, lines: usize) -> String {
    match fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(e) => format!("(could not read the log: {e})"),
    }
}

impl Cluster {
    /// Creates, configures and starts a fresh cluster, and waits until it accepts connections.
    ///
    /// `label` names the directory (`<label>-<pid>-<n>`; characters other than ASCII letters,
    /// digits and `_` become `_`). Also removes clusters left behind by dead processes.
    pub fn start(label: &str) -> Result<Cluster> {
        Cluster::start_with(label, &ServerSetup::default())
    }

    /// [`start`](Self::start), with TLS files and `pg_hba.conf` rules installed before the
    /// server starts.
    pub fn start_with(label: &str, setup: &ServerSetup) -> Result<Cluster> {
        static SWEEP: Once = Once::new();
        static NEXT: AtomicU64 = AtomicU64::new(0);

        let runner = Runner::new()?;
        let root = std::env::temp_dir().join(CLUSTERS_DIR);
        if !root.exists() {
            fs::create_dir_all(&root).map_err(io_err(format!("mkdir {}", root.display())))?;
            // Shared like /tmp, so other users (and `postgres`) can use it too.
            use std::os::unix::fs::PermissionsExt;
            let _ = fs::set_permissions(&root, fs::Permissions::from_mode(0o1777));
        }
        SWEEP.call_once(|| sweep(&root, &runner));

        let id = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = root.join(format!(
            "{}-{}-{}",
            sanitize_label(label),
            std::process::id(),
            id
        ));
        let teardown = Teardown {
            runner: runner.clone(),
            dir: dir.clone(),
        };
        if dir.exists() {
            // Left by an earlier process that had the same pid.
            teardown.run();
        }
        fs::create_dir(&dir).map_err(io_err(format!("mkdir {}", dir.display())))?;
        registry().push((id, teardown.clone()));
        // From here on, Drop (or the atexit hook) cleans up whatever happens.
        let mut cluster = Cluster {
            id,
            teardown,
            port: 0,
            extra_settings: String::new(),
        };
        runner.give(&dir)?;

        let data = cluster.data_dir();
        run(runner.server("initdb", &dir).arg("-D").arg(&data).args([
            "-A",
            "trust",
            "-U",
            "postgres",
            "--no-sync",
            "-E",
            "UTF8",
            "--locale=C",
        ]))?;
        let conf = data.join("postgresql.conf");
        fs::OpenOptions::new()
            .append(true)
            .open(&conf)
            .and_then(|mut f| f.write_all(b"\n# tandem cluster settings\ninclude 'tandem.conf'\n"))
            .map_err(io_err(format!("appending to {}", conf.display())))?;
        cluster.apply_setup(setup)?;

        let mut attempts = 0;
        loop {
            attempts += 1;
            cluster.port = pick_port()?;
            cluster.write_settings()?;
            match cluster.pg_ctl_start() {
                Ok(()) => break,
                // Someone took the port between our check and the server's bind: retry.
                Err(_) if attempts < 5 && cluster.port_collision() => continue,
                Err(e) => return Err(e),
            }
        }
        cluster.wait_ready()?;
        Ok(cluster)
    }

    fn data_dir(&self) -> PathBuf {
        self.teardown.data()
    }

    /// Writes the TLS files (the key readable by the server's user only, as PostgreSQL
    /// demands) and the `pg_hba.conf` rules of `setup`.
    fn apply_setup(&mut self, setup: &ServerSetup) -> Result<()> {
        use std::os::unix::fs::PermissionsExt;
        let data = self.data_dir();
        let runner = self.runner().clone();
        let write = |name: &str, text: &str, mode: u32| -> Result<()> {
            let path = data.join(name);
            fs::write(&path, text).map_err(io_err(format!("writing {}", path.display())))?;
            fs::set_permissions(&path, fs::Permissions::from_mode(mode))
                .map_err(io_err(format!("chmod {}", path.display())))?;
            runner.give(&path)
        };
        if let Some(tls) = &setup.tls {
            write("server.crt", &tls.cert_pem, 0o644)?;
            write("server.key", &tls.key_pem, 0o600)?;
            self.extra_settings = "ssl = on\n\
                 ssl_cert_file = 'server.crt'\n\
                 ssl_key_file = 'server.key'\n"
                .to_string();
            if let Some(ca) = &tls.client_ca_pem {
                write("client_ca.crt", ca, 0o644)?;
                self.extra_settings
                    .push_str("ssl_ca_file = 'client_ca.crt'\n");
            }
        }
        if !setup.hba.is_empty() {
            let path = data.join("pg_hba.conf");
            let old =
                fs::read_to_string(&path).map_err(io_err(format!("reading {}", path.display())))?;
            let text = format!("{}\n{old}", setup.hba.join("\n"));
            fs::write(&path, text).map_err(io_err(format!("writing {}", path.display())))?;
        }
        Ok(())
    }

    fn runner(&self) -> &Runner {
        &self.teardown.runner
    }

    /// Writes `data/tandem.conf`, included from `postgresql.conf`.
    fn write_settings(&self) -> Result<()> {
        let dir = self.dir();
        // The socket path (dir + "/.s.PGSQL.<port>") must fit in sun_path (108 bytes).
        let socket_dir = if dir.as_os_str().len() + 20 < 108 {
            quote_literal(&dir.to_string_lossy())
        } else {
            "''".to_string()
        };
        // fsync = off only skips flushing to disk, which a stopped server (even stopped with
        // `-m immediate`) does not need; synchronous_commit stays on, or an immediate stop
        // would lose commits PostgreSQL already acknowledged and crash tests would mean nothing.
        let text = format!(
            "listen_addresses = '127.0.0.1'\n\
             port = {port}\n\
             unix_socket_directories = {socket_dir}\n\
             fsync = off\n\
             synchronous_commit = on\n\
             full_page_writes = off\n\
             max_connections = 100\n\
             shared_buffers = 32MB\n\
             {extra}",
            port = self.port,
            extra = self.extra_settings,
        );
        let path = self.data_dir().join("tandem.conf");
        fs::write(&path, text).map_err(io_err(format!("writing {}", path.display())))?;
        self.runner().give(&path)
    }

    fn start_error(&self, reason: String) -> ClusterError {
        ClusterError::Start {
            dir: self.dir().to_path_buf(),
            reason,
            log: self.log_path(),
            log_tail: tail(&self.log_path(), LOG_TAIL_LINES),
        }
    }

    /// Whether the last start failed because the port was taken.
    fn port_collision(&self) -> bool {
        let log = tail(&self.log_path(), 10);
        log.contains("could not bind") || log.contains("could not create any TCP/IP sockets")
    }

    fn pg_ctl_start(&self) -> Result<()> {
        let mut cmd = self.runner().server("pg_ctl", self.dir());
        cmd.arg("start")
            .arg("-D")
            .arg(self.data_dir())
            .arg("-l")
            .arg(self.log_path())
            .args(["-w", "-t", &READY_TIMEOUT.as_secs().to_string()]);
        run(&mut cmd)
            .map(|_| ())
            .map_err(|e| self.start_error(e.to_string()))
    }

    fn pg_ctl_stop(&self, mode: &str) -> Result<()> {
        let mut cmd = self.runner().server("pg_ctl", self.dir());
        cmd.arg("stop")
            .arg("-D")
            .arg(self.data_dir())
            .args(["-m", mode, "-w", "-t", "60"]);
        run(&mut cmd).map(|_| ())
    }

    /// Waits until the server accepts connections on its TCP port.
    fn wait_ready(&self) -> Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let port = self.port.to_string();
        loop {
            let mut cmd = self.runner().client("pg_isready");
            cmd.args(["-q", "-h", "127.0.0.1", "-p", &port, "-U", "postgres"])
                .args(["-d", "postgres", "-t", "5"]);
            let status = cmd
                .status()
                .map_err(io_err(format!("could not run `{}`", describe(&cmd))))?;
            if status.success() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(self.start_error(format!(
                    "not accepting connections on 127.0.0.1:{port} after {}s",
                    READY_TIMEOUT.as_secs()
                )));
            }
            if !self.is_running() {
                return Err(self.start_error("the server exited".to_string()));
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// The TCP port the server listens on (on 127.0.0.1); it stays the same across restarts.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Connection URL for database `db`: `postgres://postgres@127.0.0.1:PORT/DB`.
    pub fn url(&self, db: &str) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/{}",
            self.port,
            encode_segment(db)
        )
    }

    /// The server log file.
    pub fn log_path(&self) -> PathBuf {
        self.dir().join("log")
    }

    /// The cluster directory (data directory in `data/`, log in `log`, Unix socket here).
    pub fn dir(&self) -> &Path {
        &self.teardown.dir
    }

    /// Runs `sql` with `psql` against database `db` and returns its stdout.
    ///
    /// The SQL is fed on stdin, so it may hold several statements (each its own transaction
    /// unless it says otherwise), and stops at the first error (`ON_ERROR_STOP`). Output is
    /// unaligned and tuples-only (`-A -t`, `|` between columns), without command tags (`-q`).
    pub fn psql(&self, db: &str, sql: &str) -> Result<String> {
        let mut cmd = self.psql_command(db);
        cmd.args(["-A", "-t", "-f", "-"]);
        let out = run_with_input(&mut cmd, sql)?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn psql_command(&self, db: &str) -> Command {
        let mut cmd = self.runner().client("psql");
        cmd.args(["-X", "-q", "-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-U", "postgres", "-d", db, "-v", "ON_ERROR_STOP=1"]);
        cmd
    }

    fn psql_c(&self, sql: &str) -> Result<()> {
        let mut cmd = self.psql_command("postgres");
        cmd.arg("-c").arg(sql);
        run(&mut cmd).map(|_| ())
    }

    /// Creates database `name` (UTF8, owned by `postgres`).
    pub fn create_database(&self, name: &str) -> Result<()> {
        self.psql_c(&format!("CREATE DATABASE {}", quote_ident(name)))
    }

    /// Drops database `name` if it exists, disconnecting its sessions first.
    pub fn drop_database(&self, name: &str) -> Result<()> {
        self.psql_c(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            quote_ident(name)
        ))
    }

    /// Stops the server in immediate mode, which is what a crash looks like to clients and
    /// to the next start (it runs crash recovery).
    pub fn stop_immediate(&self) -> Result<()> {
        self.pg_ctl_stop("immediate")
    }

    /// Stops the server cleanly (fast mode: open sessions are disconnected).
    pub fn stop(&self) -> Result<()> {
        self.pg_ctl_stop("fast")
    }

    /// Starts a stopped server again, on the same directory and port, and waits until it
    /// accepts connections.
    pub fn start_again(&self) -> Result<()> {
        // The old port can be briefly busy (e.g. clients still closing): retry a few times.
        let mut attempts = 0;
        loop {
            attempts += 1;
            match self.pg_ctl_start() {
                Ok(()) => break,
                Err(_) if attempts < 10 && self.port_collision() => {
                    thread::sleep(Duration::from_millis(500));
                }
                Err(e) => return Err(e),
            }
        }
        self.wait_ready()
    }

    /// Whether the server process is running.
    pub fn is_running(&self) -> bool {
        postmaster_pid(&self.data_dir()).is_some_and(pid_alive)
    }
}

impl Drop for Cluster {
    /// Stops the server immediately and removes the directory.
    fn drop(&mut self) {
        registry().retain(|(id, _)| *id != self.id);
        self.teardown.run();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_directory_names() {
        assert_eq!(owner_pid("a-b-123-4"), Some(123));
        assert_eq!(owner_pid("x-123-4"), Some(123));
        assert_eq!(owner_pid("123-4"), None);
        assert_eq!(owner_pid("x-y-4"), None);
    }

    #[test]
    fn quoting() {
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(quote_literal("it's"), "'it''s'");
        assert_eq!(encode_segment("db 1/é"), "db%201%2F%C3%A9");
        assert_eq!(sanitize_label("a b-c"), "a_b_c");
    }

    #[test]
    fn versions_sort_numerically() {
        assert!(version_key(OsStr::new("9.6")) < version_key(OsStr::new("10")));
        assert!(version_key(OsStr::new("15")) < version_key(OsStr::new("16")));
    }
}
