//! The on-disk format: the DDL of schema version 4, the migrations from older
//! versions, how a file is recognised as a shoal store and checked, and how a
//! connection is opened (read-write, or read-only for the reports) and configured.
//!
//! A file is a shoal store when its `application_id` is [`APPLICATION_ID`]; its
//! `user_version` is the schema version. Both are written in the same transaction
//! as the tables, so a crash during creation leaves either an empty file or a
//! complete store.
//!
//! Checks on open: the write-ahead log is read for commits SQLite would drop
//! (`wal.rs`), and SQLite's `quick_check` runs before anything is written into
//! an existing store, and on a read-only open of a store up to [`READ_CHECK_LIMIT`].

use std::fs::{File, OpenOptions};
use std::io::ErrorKind;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, ErrorCode, OpenFlags, TransactionBehavior};

use super::{failure, space, wal};
use crate::error::{Error, Result};

/// The schema version this shoal reads and writes (`PRAGMA user_version`).
pub const SCHEMA_VERSION: i64 = 5;

/// Marks a SQLite file as a shoal store (`PRAGMA application_id`): "shoa" in ASCII.
pub const APPLICATION_ID: i64 = 0x7368_6f61;

/// How long a connection waits for another writer (a second shoal on the same file)
/// before giving up with "database is locked".
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The control table (version 4 on), in the schema and in the migration to it alike.
macro_rules! control_ddl {
    () => {
        "
CREATE TABLE control (
    id           INTEGER PRIMARY KEY,
    run_id       INTEGER NOT NULL REFERENCES runs(id),
    requested_at REAL NOT NULL,
    requested_by TEXT NOT NULL,
    action       TEXT NOT NULL,
    task         INTEGER,
    slots        INTEGER,
    applied_at   REAL,
    result       TEXT
);
CREATE INDEX control_pending ON control(run_id, id) WHERE applied_at IS NULL;
"
    };
}

const DDL: &str = concat!(
    "
CREATE TABLE runs (
    id                INTEGER PRIMARY KEY,
    started_at        REAL NOT NULL,
    ended_at          REAL,
    status            TEXT NOT NULL,
    command           TEXT NOT NULL,
    options           TEXT NOT NULL,
    cwd               TEXT NOT NULL,
    memory_limit_mode TEXT,
    input_open        INTEGER NOT NULL DEFAULT 0
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
    stdout           BLOB,
    stderr           BLOB,
    stdout_truncated INTEGER NOT NULL DEFAULT 0,
    stderr_truncated INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (run_id, task, attempt),
    FOREIGN KEY (run_id, task) REFERENCES tasks(run_id, task)
);
",
    control_ddl!()
);

/// Version 1 to 2: a task's result (the return value of a call run by a worker
/// pool, as its front end encoded it), and finding tasks by key.
const MIGRATE_1_TO_2: &str = "
ALTER TABLE tasks ADD COLUMN result BLOB;
CREATE INDEX tasks_by_key ON tasks(key, status) WHERE key IS NOT NULL;
PRAGMA user_version = 2;
";

/// Version 2 to 3: the output of an attempt that was not its task's last (the task
/// row keeps the last one's), so a retried task keeps every attempt's output.
const MIGRATE_2_TO_3: &str = "
ALTER TABLE attempts ADD COLUMN stdout BLOB;
ALTER TABLE attempts ADD COLUMN stderr BLOB;
ALTER TABLE attempts ADD COLUMN stdout_truncated INTEGER NOT NULL DEFAULT 0;
ALTER TABLE attempts ADD COLUMN stderr_truncated INTEGER NOT NULL DEFAULT 0;
PRAGMA user_version = 3;
";

/// Version 3 to 4: control requests, how a live run is steered from outside (who
/// asked, when, what; when the run applied it and what it made of it).
const MIGRATE_3_TO_4: &str = concat!(control_ddl!(), "PRAGMA user_version = 4;\n");

/// Version 4 to 5: whether a run's input is still being read (its tasks are recorded
/// as they are read, so its total is not known until then).
const MIGRATE_4_TO_5: &str = "
ALTER TABLE runs ADD COLUMN input_open INTEGER NOT NULL DEFAULT 0;
PRAGMA user_version = 5;
";

/// The first schema version with `runs.input_open`.
pub(super) const INPUT_OPEN_VERSION: i64 = 5;

/// The migration from version `n` is `MIGRATIONS[n - 1]`.
const MIGRATIONS: [&str; 4] = [MIGRATE_1_TO_2, MIGRATE_2_TO_3, MIGRATE_3_TO_4, MIGRATE_4_TO_5];

/// A read-only open runs SQLite's quick check on stores up to this size (database
/// and log): it reads every page, about 0.1 s for a store of 100,000 tasks (22 MB).
/// Larger stores are checked before every write instead.
pub const READ_CHECK_LIMIT: u64 = 32 << 20;

/// The shoal markers of an open database: application id, schema version, and the
/// number of schema objects (none in a new, empty file).
fn header(conn: &Connection) -> rusqlite::Result<(i64, i64, i64)> {
    let app: i64 = conn.query_row("PRAGMA application_id", [], |r| r.get(0))?;
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    let tables: i64 = conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))?;
    Ok((app, version, tables))
}

/// Opens `path` as a shoal store to write into, creating it (mode 0600) if absent.
/// An existing file must be a store of this schema version or an older one, which is
/// migrated in place; it is checked first (its log, then SQLite's quick check), so
/// nothing is ever written into a damaged store. Switches it to WAL.
pub(super) fn open_store(path: &Path) -> Result<Connection> {
    check_directory(path)?;
    wal::check(path)?;
    let made = create_file(path)?;
    let opened = open_existing(path).map_err(|e| match e {
        Error::StoreFull { path, free, .. } if made => {
            Error::StoreFull { path, operation: "create", free }
        }
        e => e,
    });
    if opened.is_err() && made {
        // Nothing of a store that could not be created (a full disk) is left behind:
        // a file of ours still empty, which no other shoal has written into.
        if std::fs::metadata(path).is_ok_and(|m| m.len() == 0) {
            let _ = std::fs::remove_file(path);
        }
    }
    opened
}

/// [`open_store`] once the file exists.
fn open_existing(path: &Path) -> Result<Connection> {
    let mut conn = connect(path)?;
    let io = |e: rusqlite::Error| open_error(path, e);
    // The first read of the header is where SQLite notices a file that is not a
    // database, so it happens here and not at the first query of a caller.
    let (mut app, mut version, tables) = header(&conn).map_err(io)?;
    let mut created = false;
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
            (app, version, created) = (APPLICATION_ID, SCHEMA_VERSION, true);
        }
        tx.commit().map_err(io)?;
    }
    check_markers(path, app, version)?;
    if !created {
        quick_check(&conn, path)?;
    }
    if version < SCHEMA_VERSION {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(io)?;
        // Re-read under the write lock: another shoal may have migrated it meanwhile.
        (_, version, _) = header(&tx).map_err(io)?;
        while version < SCHEMA_VERSION {
            tx.execute_batch(MIGRATIONS[version as usize - 1]).map_err(io)?;
            version += 1;
        }
        tx.commit().map_err(io)?;
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

/// How a report reads a store's write-ahead log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LogAccess {
    /// The log holds nothing to replay and no shoal is writing: the file alone is
    /// read, as immutable, with no `-shm` file.
    None,
    /// Through the `-shm` file, opened read-only (`readonly_shm`): a live writer's
    /// index is read as it is; without one SQLite replays the log into its own memory
    /// under the locks that keep a writer that starts meanwhile from checkpointing.
    ReadOnlyIndex,
    /// Left to SQLite: a log with commits and no `-shm` beside it (a copied store),
    /// whose index SQLite builds where it may.
    Default,
}

/// Opens an existing store read-only, for the reports, and returns its schema
/// version (older versions are read as they are, never migrated). Needs no write
/// access to the file or its directory and writes nothing: see [`LogAccess`] for how
/// the log is read. Without a log (or with one that holds no commit and no `-shm`
/// file, which a live writer always has) no shoal is writing the file: a shoal that
/// starts writing meanwhile is not seen, as if the report had come first. A `-shm`
/// file that is short or stale (a shoal that failed to open the store on a full disk
/// leaves one of 3 bytes) is never used without a live writer, and never written.
pub(super) fn open_read_only(path: &Path) -> Result<(Connection, i64)> {
    let (conn, version, size) = connect_read_only(path)?;
    if size <= READ_CHECK_LIMIT {
        quick_check(&conn, path)?;
    }
    Ok((conn, version))
}

/// [`open_read_only`] without SQLite's page check, for a second connection to a store
/// this process has just opened (and checked): a watcher's (`follow.rs`).
pub(super) fn reopen_read_only(path: &Path) -> Result<(Connection, i64)> {
    connect_read_only(path).map(|(conn, version, _)| (conn, version))
}

/// A read-only connection to the store at `path`, its schema version, and the size of
/// the file and its log.
fn connect_read_only(path: &Path) -> Result<(Connection, i64, u64)> {
    let fail = |reason: String| Error::StoreOpen { path: path.to_owned(), reason };
    let file = File::open(path).map_err(|e| fail(e.to_string()))?;
    let meta = file.metadata().map_err(|e| fail(e.to_string()))?;
    if meta.is_dir() {
        return Err(fail("it is a directory".into()));
    }
    wal::check(path)?;
    let log = std::fs::metadata(wal::wal_path(path)).ok();
    // SQLite only says "unable to open database file" when it may not read it.
    let mut shm = path.as_os_str().to_owned();
    shm.push("-shm");
    let has_shm = match File::open(&shm) {
        Ok(_) => true,
        Err(e) if log.is_some() && e.kind() != ErrorKind::NotFound => {
            let shm = Path::new(&shm).display();
            return Err(fail(format!("cannot read its shared-memory file {shm}: {e}")));
        }
        Err(_) => false,
    };
    let access = match &log {
        None => LogAccess::None,
        Some(_) if has_shm => LogAccess::ReadOnlyIndex,
        Some(log) if log.len() < wal::HEADER as u64 => LogAccess::None,
        Some(_) => LogAccess::Default,
    };
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY
        | OpenFlags::SQLITE_OPEN_URI
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(read_only_uri(path, access), flags)
        .map_err(|e| open_error(path, e))?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(|e| open_error(path, e))?;
    let (app, version, tables) = header(&conn).map_err(|e| open_error(path, e))?;
    if app == 0 && tables == 0 {
        return Err(fail("it is empty: no run was ever recorded in it".into()));
    }
    check_markers(path, app, version)?;
    Ok((conn, version, meta.len() + log.map_or(0, |l| l.len())))
}

/// A `file:` URI naming `path` for a read-only connection that reads its log as
/// `access` says; bytes that mean something in a URI are percent-encoded.
fn read_only_uri(path: &Path, access: LogAccess) -> String {
    // An absolute path gets an empty authority, so that "//x" stays a path.
    let mut uri = String::from(if path.is_absolute() { "file://" } else { "file:" });
    for &b in path.as_os_str().as_bytes() {
        if b.is_ascii_graphic() && !matches!(b, b'%' | b'?' | b'#') {
            uri.push(b as char);
        } else {
            uri.push_str(&format!("%{b:02X}"));
        }
    }
    uri.push_str(match access {
        LogAccess::None => "?mode=ro&immutable=1",
        LogAccess::ReadOnlyIndex => "?mode=ro&readonly_shm=1",
        LogAccess::Default => "?mode=ro",
    });
    uri
}

/// Refuses a database that is not a shoal store, or one of a version this shoal
/// cannot read.
fn check_markers(path: &Path, app: i64, version: i64) -> Result<()> {
    if app != APPLICATION_ID {
        return Err(Error::StoreCorrupt {
            path: path.to_owned(),
            reason: format!("not a shoal database (application_id {app:#x})"),
        });
    }
    if !(1..=SCHEMA_VERSION).contains(&version) {
        return Err(Error::StoreSchema {
            path: path.to_owned(),
            found: version,
            expected: SCHEMA_VERSION,
        });
    }
    Ok(())
}

/// SQLite's quick check (every page, not the indexes against their tables): fails
/// with [`Error::StoreDamaged`] naming the first problems it found.
fn quick_check(conn: &Connection, path: &Path) -> Result<()> {
    let damaged = |reason: String| Error::StoreDamaged { path: path.to_owned(), reason };
    let found: Vec<String> = conn
        .prepare("PRAGMA quick_check(3)")
        .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
        .map_err(|e| match e.sqlite_error_code() {
            Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase) => {
                damaged(format!("SQLite's quick check stopped: {e}"))
            }
            _ => open_error(path, e),
        })?;
    if found.len() == 1 && found[0] == "ok" {
        return Ok(());
    }
    let found: Vec<String> = found
        .iter()
        .map(|f| f.replace("*** in database main ***", "").replace('\n', " ").trim().to_owned())
        .collect();
    Err(damaged(format!("SQLite's quick check found: {}", found.join("; "))))
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

/// Creates the file with mode 0600 if it does not exist (results may hold secrets
/// printed by the tasks); true if it did.
fn create_file(path: &Path) -> Result<bool> {
    match OpenOptions::new().write(true).create_new(true).mode(0o600).open(path) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {
            if path.is_dir() {
                Err(Error::StoreOpen { path: path.to_owned(), reason: "it is a directory".into() })
            } else {
                Ok(false)
            }
        }
        Err(e) if space::no_room(&e) => Err(Error::StoreFull {
            path: path.to_owned(),
            operation: "create",
            free: space::free_bytes(path),
        }),
        Err(e) => Err(Error::StoreOpen { path: path.to_owned(), reason: e.to_string() }),
    }
}

/// Maps a SQLite error met while opening: a full file system says so, a file that is
/// not a database is corrupt, anything else means it could not be opened.
fn open_error(path: &Path, e: rusqlite::Error) -> Error {
    if let Some(free) = space::full(path, failure::kind(&e)) {
        return Error::StoreFull { path: path.to_owned(), operation: "open", free };
    }
    let path = path.to_owned();
    match e.sqlite_error_code() {
        Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt) => {
            Error::StoreCorrupt { path, reason: e.to_string() }
        }
        _ => Error::StoreOpen { path, reason: e.to_string() },
    }
}
