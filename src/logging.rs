//! Logs via tracing to stderr: human-readable by default, JSON for machines. `RUST_LOG`
//! overrides the level.

use tracing_subscriber::EnvFilter;

/// How logs are written (to stderr); `--log-format` takes it (hence `ValueEnum`).
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum LogFormat {
    /// One readable line per event.
    Human,
    /// One JSON object per event, for log collectors.
    Json,
}

/// Installs the global subscriber (once; later calls do nothing). `default_level` applies
/// when `RUST_LOG` is not set.
pub fn init(format: LogFormat, default_level: &str) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(format!("tandem={default_level}")));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}
