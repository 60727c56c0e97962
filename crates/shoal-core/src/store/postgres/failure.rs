//! PostgreSQL's errors in the store's terms: the kind of each failure, which the
//! writer's outage protocol decides on, and the error that carries it.

use postgres::error::SqlState;

use crate::error::{BackendError, Error, FailureKind};
use crate::store::StoreAddress;

/// What kind of failure a PostgreSQL error is: a lost connection or a server that
/// shut down is `Io`; an error of the request (a bad value, a broken constraint) is
/// `Invalid`.
pub(super) fn kind(e: &postgres::Error) -> FailureKind {
    let Some(code) = e.code() else {
        return if e.is_closed() || e.as_db_error().is_none() {
            FailureKind::Io
        } else {
            FailureKind::Other
        };
    };
    let class = &code.code()[..2];
    if *code == SqlState::DISK_FULL || class == "53" {
        FailureKind::Full
    } else if *code == SqlState::INSUFFICIENT_PRIVILEGE
        || *code == SqlState::READ_ONLY_SQL_TRANSACTION
    {
        FailureKind::ReadOnly
    } else if *code == SqlState::DATA_CORRUPTED || *code == SqlState::INDEX_CORRUPTED {
        FailureKind::Damaged
    } else if *code == SqlState::T_R_SERIALIZATION_FAILURE
        || *code == SqlState::T_R_DEADLOCK_DETECTED
        || *code == SqlState::LOCK_NOT_AVAILABLE
    {
        FailureKind::Busy
    } else if matches!(class, "08" | "57" | "58") {
        FailureKind::Io
    } else if matches!(class, "22" | "23") {
        FailureKind::Invalid
    } else {
        FailureKind::Other
    }
}

/// Wraps a PostgreSQL error met on the store at `store` with the operation that failed.
pub(super) fn db<'a>(
    store: &'a StoreAddress,
    operation: &'static str,
) -> impl Fn(postgres::Error) -> Error + 'a {
    move |e| Error::Store {
        operation,
        store: store.clone(),
        source: BackendError::new(kind(&e), e),
    }
}

/// A value read back that means nothing (a status no shoal writes).
pub(super) fn invalid(store: &StoreAddress, operation: &'static str, what: String) -> Error {
    Error::Store {
        operation,
        store: store.clone(),
        source: BackendError::new(FailureKind::Invalid, what),
    }
}

/// An error with its causes on one line: the client's own text names only the kind
/// ("error connecting to server"), its cause says why ("Connection refused").
pub(super) fn said(e: &postgres::Error) -> String {
    let mut text = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        let more = c.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        cause = c.source();
    }
    text
}
