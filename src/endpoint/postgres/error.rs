//! PostgreSQL errors classified once: SQLSTATE → [`ErrorKind`]. The apply path asks the
//! same table whether an error is the row's own (fails that change alone) or the batch's.

use crate::endpoint::error::ErrorKind;
use crate::endpoint::ApplyError;

/// The kind of a SQLSTATE.
pub fn classify(code: &str) -> ErrorKind {
    match code {
        // serialization failure, deadlock, lock not available, object in use
        "40001" | "40P01" | "55P03" | "55006" => return ErrorKind::Busy,
        _ => {}
    }
    match code.get(..2).unwrap_or(code) {
        // connection exception; operator intervention (shutdown, cancel); system error (I/O)
        "08" | "57" | "58" => ErrorKind::Unreachable,
        // insufficient resources
        "53" => ErrorKind::Busy,
        // data exception, integrity constraint, a trigger raising (PL/pgSQL), check option
        "22" | "23" | "P0" | "44" => ErrorKind::RowRejected,
        // syntax or access rule (undefined table or column, permission), invalid schema or
        // catalog name
        "42" | "3F" | "3D" => ErrorKind::Schema,
        _ => ErrorKind::Internal,
    }
}

/// SQLSTATE classes that a retry can cure.
pub fn sqlstate_is_transient(code: &str) -> bool {
    classify(code).is_transient()
}

/// Worth retrying the batch unchanged? An error without a SQLSTATE is the connection's.
pub fn is_transient(e: &tokio_postgres::Error) -> bool {
    match e.as_db_error() {
        Some(db) => sqlstate_is_transient(db.code().code()),
        None => true,
    }
}

/// Errors caused by the row itself: the target refuses these values (data exception,
/// integrity constraint, a trigger raising, a view's check option). Anything else — a missing
/// table, a permission — is the environment's fault: it fails the whole batch, which is retried
/// without counting attempts, so no change is suspended for a problem it did not cause.
pub fn caused_by_row(e: &tokio_postgres::Error) -> bool {
    e.as_db_error()
        .is_some_and(|db| classify(db.code().code()) == ErrorKind::RowRejected)
}

/// 25P02: a statement sent after another one failed in the same transaction.
pub fn aborted_by_sibling(e: &tokio_postgres::Error) -> bool {
    e.as_db_error()
        .is_some_and(|db| db.code().code() == "25P02")
}

/// Why a single change stopped.
pub(super) enum Stop {
    /// A driver or database error; transient ones abort the whole batch.
    Db(tokio_postgres::Error),
    /// The change cannot be applied as it is.
    Apply(ApplyError),
    /// The change cannot be applied, and it may have written already: only the careful path
    /// (savepoints) can undo it alone.
    AfterWrite(ApplyError),
}

impl From<tokio_postgres::Error> for Stop {
    fn from(e: tokio_postgres::Error) -> Self {
        Stop::Db(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_sqlstates() {
        for t in ["08006", "40001", "40P01", "57P01", "53300", "55P03"] {
            assert!(sqlstate_is_transient(t), "{t}");
        }
        for p in ["23505", "22001", "42703", "23503"] {
            assert!(!sqlstate_is_transient(p), "{p}");
        }
        assert_eq!(classify("08006"), ErrorKind::Unreachable);
        assert_eq!(classify("40P01"), ErrorKind::Busy);
        assert_eq!(classify("23505"), ErrorKind::RowRejected);
        assert_eq!(classify("P0001"), ErrorKind::RowRejected);
        assert_eq!(classify("42P01"), ErrorKind::Schema);
        assert_eq!(classify("XX000"), ErrorKind::Internal);
    }
}
