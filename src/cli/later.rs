//! Commands of the contract that this version does not have yet: they say so plainly and
//! exit 2, so scripts fail loudly instead of believing they ran.

use super::CliError;

/// Reports that `command` is not available in this version.
pub fn unavailable(command: &str) -> Result<(), CliError> {
    Err(CliError::Setup(format!(
        "`tandem {command}` is not available in this version of tandem yet"
    )))
}
