//! The on-disk format: the DDL of schema version 2, the migration from version 1, how
//! a file is recognised as a shoal store, and how a connection is opened and
//! configured.
//!
//! A file is a shoal store when its `application_id` is [`APPLICATION_ID`]; its
//! `user_version` is the schema version. Both are written in the same transaction
//! as the tables, so a crash during creation leaves either an empty file or a
//! complete store.

use std::fs::OpenOptions;
use std::io::ErrorKind;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, ErrorCode, OpenFlags, TransactionBehavior};

use crate::error::{Error, Result};

/// The schema version this shoal reads and writes (`PRAGMA user_version`).
pub const SCHEMA_VERSION: i64 = 2;

/// Marks a SQLite file as a shoal store (`PRAGMA application_id`): "shoa" in ASCII.
pub const APPLICATION_ID: i64 = 0x7368_6f61;

/// How long a connection waits for another writer (a second shoal on the same file)
/// before giving up with "database is locked".
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

const DDL: &str = "
CREATE TABLE runs (
    id                INTEGER PRIMARY KEY,
    started_at        REAL NOT NULL,
    ended_at          REAL,
    status            TEXT NOT NULL,
    command           TEXT NOT NULL,
    options           TEXT NOT NULL,
    cwd               TEXT NOT NULL,
    memory_limit_mode TEXT
);
CREATE TABLE tasks (
    run_id           INTEGER NOT NULL REFERENCES runs(id),
    task             INTEGER NOT NULL,
    args             TEXT NOT NULL,
    command          TEXT NOT NULL,
    priority         INTEGER NOT NULL,
    cost             REAL,
    key              TEXT,
    timeout          REAL,
    retries          INTEGER NOT NULL,
    status           TEXT NOT NULL,
    attempts         INTEGER NOT NULL DEFAULT 0,
    exit_code        INTEGER,
    signal           INTEGER,
    slot             INTEGER,
    pid              INTEGER,
    started_at       REAL,
    ended_at         REAL,
    duration         REAL,
    stdout           BLOB NOT NULL DEFAULT x'',
    stderr           BLOB NOT NULL DEFAULT x'',
    stdout_truncated INTEGER NOT NULL DEFAULT 0,
    stderr_truncated INTEGER NOT NULL DEFAULT 0,
    result           BLOB,
    PRIMARY KEY (run_id, task)
);
CREATE INDEX tasks_by_status ON tasks(run_id, status);
CREATE INDEX tasks_by_key ON tasks(key, status) WHERE key IS NOT NULL;
CREATE TABLE attempts (
    run_id     INTEGER NOT NULL,
    task       INTEGER NOT NULL,
    attempt    INTEGER NOT NULL,
    slot       INTEGER NOT NULL,
    pid        INTEGER NOT NULL,
    started_at REAL NOT NULL,
    ended_at   REAL,
    duration   REAL,
    outcome    TEXT,
    exit_code  INTEGER,
    signal     INTEGER,
    max_rss_kb INTEGER,
    PRIMARY KEY (run_id, task, attempt),
    FOREIGN KEY (run_id, task) REFERENCES tasks(run_id, task)
);
";

/// Version 1 to 2: a task's result (the return value of a call run by a worker
/// pool, as its front end encoded it), and finding tasks by key.
const MIGRATE_1_TO_2: &str = "
ALTER TABLE tasks ADD COLUMN result BLOB;
CREATE INDEX tasks_by_key ON tasks(key, status) WHERE key IS NOT NULL;
PRAGMA user_version = 2;
";

/// Opens `path` as a shoal store, creating it (mode 0600) if absent, checking that
/// an existing file is a store of this schema version, and switching it to WAL.
pub(super) fn open_store(path: &Path) -> Result<Connection> {
    check_directory(path)?;
    create_file(path)?;
    let mut conn = connect(path)?;
    let io = |e: rusqlite::Error| open_error(path, e);
    let header = |conn: &Connection| -> rusqlite::Result<(i64, i64, i64)> {
        let app: i64 = conn.query_row("PRAGMA application_id", [], |r| r.get(0))?;
        let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        let tables: i64 = conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))?;
        Ok((app, version, tables))
    };
    // The first read of the header is where SQLite notices a file that is not a
    // database, so it happens here and not at the first query of a caller.
    let (mut app, mut version, tables) = header(&conn).map_err(io)?;
    if app == 0 && tables == 0 {
        // Looks empty: create the schema, re-checking under the write lock in case
        // another shoal is creating the same file right now.
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(io)?;
        (app, version, _) = header(&tx).map_err(io)?;
        if app == 0 && version == 0 {
            tx.execute_batch(DDL).map_err(io)?;
            tx.execute_batch(&format!(
                "PRAGMA application_id = {APPLICATION_ID}; PRAGMA user_version = {SCHEMA_VERSION};"
            ))
            .map_err(io)?;
            (app, version) = (APPLICATION_ID, SCHEMA_VERSION);
        }
        tx.commit().map_err(io)?;
    }
    if app != APPLICATION_ID {
        return Err(Error::StoreCorrupt {
            path: path.to_owned(),
            reason: format!("not a shoal database (application_id {app:#x})"),
        });
    }
    if app == APPLICATION_ID && version == 1 {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(io)?;
        // Re-read under the write lock: another shoal may have migrated it meanwhile.
        (_, version, _) = header(&tx).map_err(io)?;
        if version == 1 {
            tx.execute_batch(MIGRATE_1_TO_2).map_err(io)?;
            version = 2;
        }
        tx.commit().map_err(io)?;
    }
    if version != SCHEMA_VERSION {
        return Err(Error::StoreSchema {
            path: path.to_owned(),
            found: version,
            expected: SCHEMA_VERSION,
        });
    }
    let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0)).map_err(io)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(Error::StoreOpen {
            path: path.to_owned(),
            reason: format!("cannot switch to WAL mode (journal mode stays {mode})"),
        });
    }
    Ok(conn)
}

/// Opens a connection to an existing store with the per-connection settings every
/// connection needs; used for the writer thread and by [`open_store`].
pub(super) fn connect(path: &Path) -> Result<Connection> {
    // No CREATE flag: the file was made by `create_file` with the right mode.
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags).map_err(|e| open_error(path, e))?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(|e| open_error(path, e))?;
    // synchronous=NORMAL in WAL mode survives a process crash; only a power loss
    // can drop the last commits. Foreign keys catch events for unknown tasks.
    conn.execute_batch("PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;")
        .map_err(|e| open_error(path, e))?;
    Ok(conn)
}

/// The directory must exist and be writable (WAL needs its `-wal` and `-shm` files
/// beside the database); shoal never creates it, a typo should not grow a tree.
fn check_directory(path: &Path) -> Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let fail = |reason: String| Err(Error::StoreOpen { path: path.to_owned(), reason });
    match std::fs::metadata(dir) {
        Err(e) if e.kind() == ErrorKind::NotFound => {
            fail(format!("directory {} does not exist", dir.display()))
        }
        // ENOTDIR rather than ErrorKind::NotADirectory, which needs Rust 1.83.
        Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => {
            fail(format!("{} is not a directory", nearest_file(dir).display()))
        }
        Err(e) => fail(format!("cannot read directory {}: {e}", dir.display())),
        Ok(m) if !m.is_dir() => fail(format!("{} is not a directory", dir.display())),
        Ok(_) => match rustix::fs::access(dir, rustix::fs::Access::WRITE_OK) {
            Ok(()) => Ok(()),
            Err(_) => fail(format!("directory {} is not writable", dir.display())),
        },
    }
}

/// The first ancestor of `dir` that exists, to name the file standing in its way.
fn nearest_file(dir: &Path) -> PathBuf {
    dir.ancestors().find(|p| p.exists()).unwrap_or(dir).to_owned()
}

/// Creates the file with mode 0600 if it does not exist: results may hold secrets
/// printed by the tasks.
fn create_file(path: &Path) -> Result<()> {
    match OpenOptions::new().write(true).create_new(true).mode(0o600).open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {
            if path.is_dir() {
                Err(Error::StoreOpen { path: path.to_owned(), reason: "it is a directory".into() })
            } else {
                Ok(())
            }
        }
        Err(e) => Err(Error::StoreOpen { path: path.to_owned(), reason: e.to_string() }),
    }
}

/// Maps a SQLite error met while opening: a file that is not a database is corrupt,
/// anything else means it could not be opened.
fn open_error(path: &Path, e: rusqlite::Error) -> Error {
    let path = path.to_owned();
    match e.sqlite_error_code() {
        Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt) => {
            Error::StoreCorrupt { path, reason: e.to_string() }
        }
        _ => Error::StoreOpen { path, reason: e.to_string() },
    }
}
