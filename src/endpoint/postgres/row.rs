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
