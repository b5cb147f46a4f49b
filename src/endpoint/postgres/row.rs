//! Reading columns of a result row without panicking: `Row::get` panics when a column's type
//! is not the one asked for (a schema changed under tandem, a statement edited by hand); these
//! report it as an error that names the statement and the column.

use tokio_postgres::types::FromSql;
use tokio_postgres::Row;

use crate::endpoint::EndpointError;

/// Column `idx` (named `name` in messages) of a row `what` returned, as `T`.
pub fn col<'a, T: FromSql<'a>>(
    row: &'a Row,
    idx: usize,
    name: &str,
    what: &str,
) -> Result<T, EndpointError> {
    row.try_get(idx).map_err(|e| {
        EndpointError::Config(format!(
            "internal: {what}: column {idx} ({name}) cannot be read: {e}"
        ))
    })
}

/// The same on the apply path, where a failure stops the change: column `idx` (named `name`)
/// as `T`, or the change fails (and the batch falls back to one change at a time) with an
/// internal error that names the column, never a panic.
pub(super) fn cell<'a, T: FromSql<'a>>(
    row: &'a Row,
    idx: usize,
    name: &str,
) -> Result<T, super::error::Stop> {
    row.try_get(idx).map_err(|e| {
        super::error::Stop::AfterWrite(crate::endpoint::ApplyError::Rejected {
            context: "internal".into(),
            message: format!("column {idx} ({name}) of tandem's own query cannot be read: {e}"),
            code: None,
        })
    })
}
