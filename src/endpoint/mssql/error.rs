//! SQL Server errors classified once: error number → [`ErrorKind`]. The same lists fill the
//! apply batch's `CATCH` (`{{row_errors}}`, `{{transient_errors}}` in `sql/mssql/apply.sql`),
//! so the batch and tandem agree on which errors are the row's own.

use crate::endpoint::error::ErrorKind;

/// SQL Server errors caused by the row itself: the target refuses these values (a key or
/// constraint, a value that does not fit or does not convert, NULL into NOT NULL, a trigger
/// that raises or rolls back). Such a change fails alone; every other error fails the batch,
/// which is retried without counting attempts. Errors 50000 and above (RAISERROR/THROW in a
/// trigger, and tandem's own 51000/51001) count as the row's too.
pub const ROW_ERRORS: &[u32] = &[
    2627, // violation of PRIMARY KEY or UNIQUE constraint
    2601, // duplicate key row in a unique index
    547,  // FOREIGN KEY or CHECK constraint
    515,  // NULL into a NOT NULL column
    8152, // string or binary data would be truncated
    2628, // the same, naming table and column (2019+)
    245,  // conversion failed (e.g. 'abc' to int)
    8114, // error converting data type
    8115, // arithmetic overflow converting
    220,  // arithmetic overflow for a data type
    232,  // arithmetic overflow for type ..., value = ...
    236,  // conversion from a type to another failed
    241,  // conversion failed converting date and/or time from a string
    242,  // a string converted to datetime is out of range
    244,  // value overflowed an int column
    248,  // value overflowed an int column
    293,  // cannot convert char value to smallmoney
    235,  // cannot convert a char value to money
    517,  // adding a value to a date column caused an overflow
    8134, // divide by zero (in a trigger)
    8169, // conversion failed from a string to uniqueidentifier
    9455, // XML parsing: illegal qualified name character
    9400, // XML parsing: unexpected end of input
    512,  // a trigger's subquery returned more than one value
    3609, // the transaction ended in the trigger
];

/// SQL Server errors a retry can cure: deadlock, lock timeout, resources, a database that is
/// restarting or failing over, Azure throttling.
pub const TRANSIENT_ERRORS: &[u32] = &[
    1205, 1222, 1204, 701, 802, 8645, 8651, 3960, 3961, 4060, 976, 978, 983, 6005, 17142, 40197,
    40501, 40613, 49918, 49919, 49920, 10928, 10929, 233, 10053, 10054, 10060, 64,
];

/// Is a SQL Server error caused by the row (see [`ROW_ERRORS`])?
pub fn is_row_error(code: u32) -> bool {
    code >= 50000 || ROW_ERRORS.contains(&code)
}

/// Is a SQL Server error worth retrying unchanged?
pub fn is_transient(code: u32) -> bool {
    TRANSIENT_ERRORS.contains(&code)
}

/// SQL Server errors that mean the database cannot be reached (among [`TRANSIENT_ERRORS`]):
/// it cannot be opened, is failing over or restarting, or the connection broke.
const UNREACHABLE_ERRORS: &[u32] = &[4060, 976, 978, 983, 40613, 233, 10053, 10054, 10060, 64];

/// SQL Server errors that mean the database's objects or rights do not fit the config:
/// invalid object or column name, permission denied, a missing procedure.
const SCHEMA_ERRORS: &[u32] = &[208, 207, 229, 230, 262, 2812, 4902];

/// The kind of a SQL Server error number.
pub fn classify(code: u32) -> ErrorKind {
    if UNREACHABLE_ERRORS.contains(&code) {
        ErrorKind::Unreachable
    } else if is_transient(code) {
        ErrorKind::Busy
    } else if is_row_error(code) {
        ErrorKind::RowRejected
    } else if SCHEMA_ERRORS.contains(&code) {
        ErrorKind::Schema
    } else {
        ErrorKind::Internal
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_classes_do_not_overlap() {
        for c in TRANSIENT_ERRORS {
            assert!(!is_row_error(*c), "{c}");
        }
        assert!(is_row_error(2627) && is_row_error(50000) && is_row_error(51001));
        assert!(is_transient(1205) && is_transient(1222));
        assert!(!is_row_error(208) && !is_transient(208));
    }

    #[test]
    fn classify_agrees_with_the_lists() {
        for c in TRANSIENT_ERRORS {
            assert!(classify(*c).is_transient(), "{c}");
        }
        for c in UNREACHABLE_ERRORS {
            assert!(is_transient(*c), "{c}");
        }
        assert_eq!(classify(1205), ErrorKind::Busy);
        assert_eq!(classify(4060), ErrorKind::Unreachable);
        assert_eq!(classify(2627), ErrorKind::RowRejected);
        assert_eq!(classify(51001), ErrorKind::RowRejected);
        assert_eq!(classify(208), ErrorKind::Schema);
        assert_eq!(classify(1), ErrorKind::Internal);
    }
}
