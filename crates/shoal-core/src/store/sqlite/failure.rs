//! SQLite's errors in the store's terms: the kind of each failure, which the writer's
//! outage protocol decides on, and the error that carries it with its operation.

use std::path::Path;

use rusqlite::ErrorCode;

use crate::error::{BackendError, Error, FailureKind};
use crate::store::StoreAddress;

/// What kind of failure a SQLite error is. An error SQLite gives no code for (a value
/// rusqlite cannot convert, a query that found no row) is the request's, not the
/// store's.
pub(super) fn kind(e: &rusqlite::Error) -> FailureKind {
    match e.sqlite_error_code() {
        None => FailureKind::Invalid,
        Some(ErrorCode::DiskFull) => FailureKind::Full,
        Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase) => FailureKind::Damaged,
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => FailureKind::Busy,
        Some(ErrorCode::ReadOnly | ErrorCode::PermissionDenied) => FailureKind::ReadOnly,
        Some(ErrorCode::SystemIoFailure) => FailureKind::Io,
        Some(
            ErrorCode::ConstraintViolation
            | ErrorCode::TypeMismatch
            | ErrorCode::TooBig
            | ErrorCode::ParameterOutOfRange,
        ) => FailureKind::Invalid,
        Some(_) => FailureKind::Other,
    }
}

/// Wraps a SQLite error met on the store at `path` with the operation that failed.
pub(super) fn db<'a>(
    path: &'a Path,
    operation: &'static str,
) -> impl Fn(rusqlite::Error) -> Error + 'a {
    move |e| Error::Store {
        operation,
        store: StoreAddress::Sqlite(path.to_owned()),
        source: BackendError::new(kind(&e), e),
    }
}
