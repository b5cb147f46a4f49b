//! The `tandem` command line: one file per command; exit codes per the contract
//! (0 success, 1 the job ran and found a problem, 2 usage, configuration or connection error).

mod backfill;
mod check;
mod demo;
mod init;
mod install;
mod run;
mod status;
mod suspended;
mod verify;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand, ValueEnum};

use crate::config::{self, Config, Side};
use crate::endpoint::{self, EndpointError};
use crate::sync::Sides;

/// Re-exported: the option `--log-format` takes it, `logging` owns it.
pub use crate::logging::LogFormat;

/// Two-way, real-time sync between two SQL databases with different schemas.
#[derive(Debug, Parser)]
#[command(name = "tandem", version, about)]
pub struct Cli {
    /// Config file (default: $TANDEM_CONFIG, else ./tandem.toml).
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Log format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Human)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

/// Which side(s) a command acts on.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum SideArg {
    A,
    B,
    Both,
}

impl SideArg {
    fn sides(self) -> Vec<Side> {
        match self {
            SideArg::A => vec![Side::A],
            SideArg::B => vec![Side::B],
            SideArg::Both => vec![Side::A, Side::B],
        }
    }
}

/// Where the demo's side A runs.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum DemoEngine {
    /// A throwaway local PostgreSQL cluster.
    Postgres,
    /// A fresh database on a SQL Server (or Babelfish) named by --mssql-url.
    Mssql,
}

/// A database kind, for `init` when the connection string does not say.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum KindArg {
    Postgres,
    Mssql,
}

impl From<KindArg> for config::DbKind {
    fn from(k: KindArg) -> Self {
        match k {
            KindArg::Postgres => config::DbKind::Postgres,
            KindArg::Mssql => config::DbKind::Mssql,
        }
    }
}

fn secret(s: &str) -> Result<config::Secret, String> {
    Ok(config::Secret::new(s.to_string()))
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Read both schemas and write a draft config (matched tables, columns, keys, refs, codes;
    /// a TODO over every uncertain choice); `--diff`: compare the config with the schemas.
    Init {
        /// Side A's connection string (postgres://… or an ADO.NET string); not written to the
        /// draft, which says ${TANDEM_A_URL}.
        #[arg(long, env = "TANDEM_A_URL", hide_env_values = true, value_name = "URL", value_parser = secret)]
        a: Option<config::Secret>,
        /// Side B's connection string.
        #[arg(long, env = "TANDEM_B_URL", hide_env_values = true, value_name = "URL", value_parser = secret)]
        b: Option<config::Secret>,
        /// Side A's kind, when the connection string does not tell.
        #[arg(long, value_enum)]
        a_kind: Option<KindArg>,
        /// Side B's kind, when the connection string does not tell.
        #[arg(long, value_enum)]
        b_kind: Option<KindArg>,
        /// Where to write the draft (`-`: standard output).
        #[arg(long, value_name = "FILE", default_value = "tandem.toml")]
        out: PathBuf,
        /// Overwrite --out if it exists.
        #[arg(long)]
        force: bool,
        /// Compare the config (--config) with the live schemas instead: exit 1 when they differ.
        #[arg(long, conflicts_with = "force")]
        diff: bool,
    },
    /// Validate the config, connect to both databases, check tables, columns and keys.
    Check,
    /// Create or upgrade tandem's objects and capture triggers (idempotent).
    Install {
        #[arg(long, value_enum, default_value_t = SideArg::Both)]
        side: SideArg,
        /// Print the SQL only; connect to nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Remove tandem's objects and triggers.
    Uninstall {
        #[arg(long, value_enum, default_value_t = SideArg::Both)]
        side: SideArg,
        #[arg(long)]
        dry_run: bool,
    },
    /// Run the sync service.
    Run {
        /// Apply every eligible pending change, then exit (1 if some failed).
        #[arg(long)]
        once: bool,
        /// Serve /metrics, /healthz and /readyz on this address.
        #[arg(long, value_name = "ADDR")]
        listen: Option<String>,
    },
    /// Pending, suspended and linked counts per entity and side.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Two throwaway local PostgreSQL clusters, a sample schema on each, live sync
    /// (`--a mssql`: A on SQL Server instead).
    Demo {
        /// Where A, the legacy system, runs.
        #[arg(long, value_enum, default_value_t = DemoEngine::Postgres)]
        a: DemoEngine,
        /// With `--a mssql`: the SQL Server, as an ADO.NET connection string
        /// (server=tcp:host,1433;user=…;password=…;TrustServerCertificate=true). The demo
        /// creates a database of its own there and drops it at the end.
        #[arg(long, env = "TANDEM_DEMO_MSSQL_URL", hide_env_values = true, value_name = "ADO",
              value_parser = |s: &str| Ok::<_, String>(config::Secret::new(s.to_string())))]
        mssql_url: Option<config::Secret>,
    },
    /// Copy rows that exist already, linking records present on both sides; resumable.
    Backfill {
        #[arg(long)]
        entity: String,
        #[arg(long, value_enum)]
        from: Option<SideArg>,
        #[arg(long)]
        chunk: Option<usize>,
        #[arg(long)]
        rate: Option<f64>,
        #[arg(long)]
        restart: bool,
    },
    /// Compare both sides; exit 1 and list the differences when they differ.
    Verify {
        #[arg(long)]
        entity: Option<String>,
        #[arg(long)]
        json: bool,
        #[arg(long)]
        repair: bool,
        #[arg(long, value_enum)]
        from: Option<SideArg>,
    },
    /// Operate on suspended changes (ids like A-123: the side and its outbox sequence).
    #[command(subcommand)]
    Suspended(SuspendedCmd),
}

#[derive(Debug, Subcommand)]
pub enum SuspendedCmd {
    /// Every suspended change: id, entity, key, attempts, first and last error time, error.
    List,
    /// One change in full: image and error.
    Show { id: String },
    /// Back to pending, attempts reset.
    Resubmit {
        id: Option<String>,
        /// Every suspended change.
        #[arg(long)]
        all: bool,
    },
    /// Remove it for good (it is logged).
    Discard { id: String },
}

/// A command's failure, mapped to an exit code.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Exit 2: usage, configuration or connection.
    #[error("{0}")]
    Setup(String),
    /// Exit 1: the job ran and found a problem (already reported).
    #[error("{0}")]
    Found(String),
}

impl From<config::ConfigError> for CliError {
    fn from(e: config::ConfigError) -> Self {
        CliError::Setup(format!("{e}\nfix the config, then run `tandem check`"))
    }
}

impl From<EndpointError> for CliError {
    fn from(e: EndpointError) -> Self {
        CliError::Setup(format!(
            "{}{}",
            crate::secret::redact(&e.to_string()),
            endpoint_hint(e.kind())
        ))
    }
}

/// What an operator runs about a failed command, by the kind of its database error.
pub fn endpoint_hint(kind: crate::endpoint::ErrorKind) -> &'static str {
    use crate::endpoint::ErrorKind;
    match kind {
        ErrorKind::Unreachable => {
            "\nis the database up, and the url in tandem.toml right? `tandem check` tries both sides"
        }
        ErrorKind::Busy => "\nthe database is busy: run the command again",
        ErrorKind::Schema => {
            "\nrun `tandem check`; if tandem's objects are missing or old, run `tandem install`"
        }
        _ => "",
    }
}

/// Parses arguments, runs the command, returns the exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // The demo prints its own story; the service's batch log would drown it.
    let level = if matches!(cli.command, Command::Demo { .. }) {
        "warn"
    } else {
        "info"
    };
    crate::logging::init(cli.log_format, level);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(dispatch(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(CliError::Found(m)) => {
            if !m.is_empty() {
                eprintln!("{m}");
            }
            ExitCode::from(1)
        }
        Err(CliError::Setup(m)) => {
            eprintln!("error: {m}");
            ExitCode::from(2)
        }
    }
}

async fn dispatch(cli: Cli) -> Result<(), CliError> {
    let path = config::resolve_path(cli.config.as_deref());
    match cli.command {
        Command::Demo { a, mssql_url } => demo::run(a, mssql_url).await,
        Command::Check => check::run(&path).await,
        Command::Init { diff: true, .. } => init::diff(&path).await,
        Command::Init {
            a,
            b,
            a_kind,
            b_kind,
            out,
            force,
            diff: false,
        } => {
            init::run(init::InitArgs {
                a,
                b,
                a_kind: a_kind.map(Into::into),
                b_kind: b_kind.map(Into::into),
                out,
                force,
            })
            .await
        }
        Command::Install { side, dry_run } => install::install(&load(&path)?, side, dry_run).await,
        Command::Uninstall { side, dry_run } => {
            install::uninstall(&load(&path)?, side, dry_run).await
        }
        Command::Run { once, listen } => run::run(load(&path)?, once, listen).await,
        Command::Status { json } => status::run(&load(&path)?, json).await,
        Command::Backfill {
            entity,
            from,
            chunk,
            rate,
            restart,
        } => backfill::run(&load(&path)?, entity, from, chunk, rate, restart).await,
        Command::Verify {
            entity,
            json,
            repair,
            from,
        } => verify::run(&load(&path)?, entity, json, repair, from).await,
        Command::Suspended(cmd) => suspended::run(&load(&path)?, cmd).await,
    }
}

fn load(path: &std::path::Path) -> Result<Arc<Config>, CliError> {
    Ok(Arc::new(config::load(path)?))
}

/// Both endpoints (no connection is made yet).
pub fn open_sides(config: &Arc<Config>) -> Result<Sides, CliError> {
    Ok(Sides {
        a: endpoint::open(config.clone(), Side::A)?,
        b: endpoint::open(config.clone(), Side::B)?,
    })
}
