//! Errors of an endpoint, classified once: every error carries an [`ErrorKind`], which each
//! dialect derives from its own codes (`postgres/error.rs`: SQLSTATEs, `mssql/error.rs`:
//! SQL Server error numbers). What to do about a kind — retry the batch, retry the change,
//! suspend it, stop — is decided in one place, `sync::policy`.

use crate::config::Side;
use crate::mapping::MappingError;

/// What went wrong, in the terms the retry policy decides on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The database cannot be reached: refused, lost, timed out, shutting down, failing over.
    Unreachable,
    /// The database is there but cannot serve now: deadlock, lock timeout, serialization
    /// failure, out of resources, throttled.
    Busy,
    /// The target refuses this row's values (key, constraint, type, size, a trigger raising).
    RowRejected,
    /// A referenced parent is not linked at the target yet.
    WaitingForParent,
    /// A captured change cannot be read or mapped into the other side's shape.
    Undecodable,
    /// The database's objects or rights do not fit the config (missing table or column,
    /// permission, tandem's objects not installed).
    Schema,
    /// Anything else: a state tandem does not expect.
    Internal,
}

impl ErrorKind {
    /// Worth retrying unchanged: the cause is passing and lies outside the data.
    pub fn is_transient(self) -> bool {
        matches!(self, ErrorKind::Unreachable | ErrorKind::Busy)
    }

    /// Short lower-case name, for logs and metrics labels.
    pub fn name(self) -> &'static str {
        match self {
            ErrorKind::Unreachable => "unreachable",
            ErrorKind::Busy => "busy",
            ErrorKind::RowRejected => "row_rejected",
            ErrorKind::WaitingForParent => "waiting_for_parent",
            ErrorKind::Undecodable => "undecodable",
            ErrorKind::Schema => "schema",
            ErrorKind::Internal => "internal",
        }
    }
}

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
        /// The dialect's own error code: a SQLSTATE on PostgreSQL, an error number on SQL
        /// Server.
        code: Option<String>,
        /// What the dialect's classification made of `code`.
        kind: ErrorKind,
        /// The driver's error, kept for callers that want more than the message (which is
        /// already in `message`, without credentials).
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// The configuration does not fit this endpoint.
    #[error("{0}")]
    Config(String),
}

impl EndpointError {
    /// The error's kind, for the retry policy.
    pub fn kind(&self) -> ErrorKind {
        match self {
            EndpointError::Unreachable { .. } => ErrorKind::Unreachable,
            EndpointError::Database { kind, .. } => *kind,
            EndpointError::Config(_) => ErrorKind::Schema,
        }
    }

    /// Worth retrying unchanged?
    pub fn is_transient(&self) -> bool {
        self.kind().is_transient()
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
        /// The dialect's error code (SQLSTATE or SQL Server error number), when the database
        /// gave one.
        code: Option<String>,
    },
    /// The target refused the row by a unique key whose values another record holds there,
    /// one with changes of its own still on their way to the source (pending or suspended in
    /// the target's outbox). Those changes decide the clash at the source (the two records
    /// meet there under one key, or the holder moves away), so the change waits for them as
    /// a child waits for its parent, instead of being suspended first.
    #[error(
        "{context}: {message}; the record {holder} holding these values at the target has \
         changes still on their way to the source, and this change waits for them"
    )]
    KeyHeld {
        context: String,
        message: String,
        /// The holder's key at the target.
        holder: String,
    },
    /// A referenced parent has no live link at the target: not linked yet, or deleted.
    #[error("{}", waiting_text(context, parent, key, *state))]
    WaitingForParent {
        context: String,
        parent: String,
        key: String,
        /// What is known of the parent.
        state: ParentState,
    },
    /// The row cannot be mapped.
    #[error(transparent)]
    Mapping(#[from] Box<MappingError>),
    /// The outbox row cannot be decoded.
    #[error("outbox row {seq}: {message}")]
    Decode { seq: i64, message: String },
}

/// What is known of a parent a child waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParentState {
    /// Not linked at the target: still to come (or never captured).
    NotLinked,
    /// Deleted at the target (its link is a tombstone there); the delete may still be on its
    /// way to the source.
    DeletedAtTarget,
    /// Not linked at the target, and gone at the source (its link there is a tombstone, or it
    /// has no row there): nothing is on its way, the child stays at the source without it.
    DeletedAtSource,
}

impl ParentState {
    /// `DeletedAtTarget` when `gone`, else `NotLinked`: what a target's own id map tells.
    pub fn at_target(gone: bool) -> Self {
        if gone {
            ParentState::DeletedAtTarget
        } else {
            ParentState::NotLinked
        }
    }
}

fn waiting_text(context: &str, parent: &str, key: &str, state: ParentState) -> String {
    match state {
        ParentState::DeletedAtTarget => format!(
            "{context}: its parent {parent} {key} was deleted at the target; the change waits \
             while that delete travels to the source (where a cascade or the application removes \
             this record, and the change is settled); if the record stays at the source without \
             its parent, delete it there or create the parent again, then run \
             `tandem suspended resubmit`"
        ),
        ParentState::DeletedAtSource => format!(
            "{context}: its parent {parent} {key} is not at the source (deleted there, or never \
             created: the record stays at the source without it, as nothing there enforces the \
             reference); delete the record at the source or create the parent again, then run \
             `tandem suspended resubmit`"
        ),
        ParentState::NotLinked => format!(
            "{context}: waiting for parent {parent} {key}, which is not linked at the target yet; \
             if it never arrives, run `tandem backfill --entity {parent}`"
        ),
    }
}

impl ApplyError {
    /// The error's kind, for the retry policy.
    pub fn kind(&self) -> ErrorKind {
        match self {
            ApplyError::Rejected { .. } | ApplyError::KeyHeld { .. } => ErrorKind::RowRejected,
            ApplyError::WaitingForParent { .. } => ErrorKind::WaitingForParent,
            ApplyError::Mapping(_) | ApplyError::Decode { .. } => ErrorKind::Undecodable,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_unreachable_and_busy_are_transient() {
        use ErrorKind::*;
        for k in [Unreachable, Busy] {
            assert!(k.is_transient(), "{k:?}");
        }
        for k in [RowRejected, WaitingForParent, Undecodable, Schema, Internal] {
            assert!(!k.is_transient(), "{k:?}");
        }
        assert_eq!(EndpointError::Config("x".into()).kind(), Schema);
    }
}
