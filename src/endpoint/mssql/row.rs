//! Reading columns of a result row without panicking: `Row::get` panics when a column's type
//! is not the one asked for (a schema changed under tandem, a statement edited by hand). Rows
//! are read by column name, so the statements name the columns read.

use tiberius::{FromSql, Row};

use crate::endpoint::EndpointError;

/// Column `name` of a row `what` returned (None for NULL), or an internal error naming it.
pub fn get<'a, T: FromSql<'a>>(
    row: &'a Row,
    name: &str,
    what: &str,
) -> Result<Option<T>, EndpointError> {
    row.try_get(name).map_err(|e| {
        EndpointError::Config(format!(
            "internal: {what}: column {name} cannot be read: {e}"
        ))
    })
}
