//! `tandem demo` (being written).

use super::CliError;

/// Runs the demo.
pub async fn run() -> Result<(), CliError> {
    super::later::unavailable("demo")
}
