//! Errors of an endpoint, classified: a transient error is worth retrying as it is (the
//! network, a restart, a lock); a permanent one needs the data or the config to change.

use crate::config::{redact, Side};
use crate::mapping::MappingError;

/// An error that stops a whole operation on one side.
#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    /// Cannot reach the database (refused, lost, timed out, shutting down).
    #[error("side {side}: cannot reach the database at {target}: {message}")]
    Unreachable {
        side: Side,
        target: String,
        message: String,
    },
    /// The database refused a statement.
    #[error("side {side}: {context}: {message}")]
    Database {
        side: Side,
        context: String,
        message: String,
        sqlstate: Option<String>,
        transient: bool,
    },
    /// The configuration does not fit this endpoint.
    #[error("{0}")]
    Config(String),
}

impl EndpointError {
    /// Worth retrying unchanged?
    pub fn is_transient(&self) -> bool {
        match self {
            EndpointError::Unreachable { .. } => true,
            EndpointError::Database { transient, .. } => *transient,
            EndpointError::Config(_) => false,
        }
    }
}

/// Why one change could not be applied (the rest of its batch was).
#[derive(Debug, Clone, thiserror::Error)]
pub enum ApplyError {
    /// The target refused the row (constraint, type, size).
    #[error("{context}: {message}")]
    Rejected {
        context: String,
        message: String,
        sqlstate: Option<String>,
    },
    /// A referenced parent has no link at the target yet.
    #[error(
        "{context}: waiting for parent {parent} {key}, which is not linked at the target yet; \
         if it never arrives, run `tandem backfill --entity {parent}`"
    )]
    WaitingForParent {
        context: String,
        parent: String,
        key: String,
    },
    /// The row cannot be mapped.
    #[error(transparent)]
    Mapping(#[from] Box<MappingError>),
    /// The outbox row cannot be decoded.
    #[error("outbox row {seq}: {message}")]
    Decode { seq: i64, message: String },
}

/// PostgreSQL SQLSTATE classes that a retry can cure.
pub fn sqlstate_is_transient(code: &str) -> bool {
    matches!(
        &code[..code.len().min(2)],
        "08" // connection exception
            | "53" // insufficient resources
            | "57" // operator intervention: shutdown, cancel
            | "58" // system error (I/O)
    ) || matches!(
        code,
        "40001" // serialization failure
            | "40P01" // deadlock
            | "55P03" // lock not available
            | "55006" // object in use
    )
}

/// Strips credentials from a message before it is logged or shown.
pub fn clean(message: &str) -> String {
    redact(message)
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
    }
}
