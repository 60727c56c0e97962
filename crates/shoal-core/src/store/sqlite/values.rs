//! How the store's statuses are written into SQLite columns and read back.

use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSql, ToSqlOutput, ValueRef};

use crate::store::records::RunStatus;
use crate::task::TaskStatus;

/// A status name in a column that names no status: the file was edited by hand or
/// written by a newer shoal.
#[derive(Debug)]
struct UnknownName(String);

impl std::fmt::Display for UnknownName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "unknown status {:?}", self.0)
    }
}

impl std::error::Error for UnknownName {}

fn parse_name<T>(value: ValueRef<'_>, parse: fn(&str) -> Option<T>) -> FromSqlResult<T> {
    let name = value.as_str()?;
    parse(name).ok_or_else(|| FromSqlError::Other(Box::new(UnknownName(name.to_owned()))))
}

impl ToSql for TaskStatus {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(self.as_str().into())
    }
}

impl FromSql for TaskStatus {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        parse_name(value, TaskStatus::parse)
    }
}

impl ToSql for RunStatus {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(self.as_str().into())
    }
}

impl FromSql for RunStatus {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        parse_name(value, RunStatus::parse)
    }
}
