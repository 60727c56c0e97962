//! Control requests in the SQLite backend: the `control` table written by an asker,
//! and the feed a live run polls. The feed reads `PRAGMA data_version` on its own
//! connection, which changes only when another connection commits, and reads the
//! table only then: an idle run costs one cheap pragma per poll.

use std::path::{Path, PathBuf};

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use super::failure::db;
use super::schema;
use super::store::SqliteStore;
use crate::error::Result;
use crate::store::control::{
    refuse_what_cannot_apply, ControlAction, ControlFeed, ControlRecord, ControlRequest,
};
use crate::store::records::unix_now;
use crate::task::{TaskId, TaskStatus};

/// The first schema version with the `control` table.
const CONTROL_VERSION: i64 = 4;

impl SqliteStore {
    /// Records `actions` for the live run `run`, in one transaction, and returns
    /// their ids. Refused for a run that is not live, and for a task that the run
    /// does not have or that has ended.
    pub(super) fn request(
        &self,
        run: i64,
        actions: &[ControlAction],
        by: &str,
    ) -> Result<Vec<i64>> {
        let status = self.run(run)?.status;
        refuse_what_cannot_apply(run, status, actions, |task| self.task_status(run, task))?;
        let fail = db(&self.path, "record a control request");
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(&fail)?;
        let mut ids = Vec::with_capacity(actions.len());
        {
            let mut insert = tx
                .prepare_cached(
                    "INSERT INTO control (run_id, requested_at, requested_by, action, task, slots)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )
                .map_err(&fail)?;
            for action in actions {
                insert
                    .execute(params![
                        run,
                        unix_now(),
                        by,
                        action.as_str(),
                        action.task(),
                        action.slots()
                    ])
                    .map_err(&fail)?;
                ids.push(tx.last_insert_rowid());
            }
        }
        tx.commit().map_err(&fail)?;
        Ok(ids)
    }

    /// The status of one task, `None` if the run has no such task.
    fn task_status(&self, run: i64, task: TaskId) -> Result<Option<TaskStatus>> {
        self.conn()
            .query_row(
                "SELECT status FROM tasks WHERE run_id = ?1 AND task = ?2",
                params![run, task],
                |r| r.get(0),
            )
            .optional()
            .map_err(db(&self.path, "look up a task"))
    }

    /// Every control request of a run, oldest first (none in a store older than the
    /// table, read as it is).
    pub(super) fn control_records(&self, run: i64) -> Result<Vec<ControlRecord>> {
        if self.version() < CONTROL_VERSION {
            return Ok(Vec::new());
        }
        let conn = self.conn();
        let mut stmt = conn
            .prepare(
                "SELECT id, run_id, action, task, slots, requested_at, requested_by,
                 applied_at, result FROM control WHERE run_id = ?1 ORDER BY id",
            )
            .map_err(db(&self.path, "read control requests"))?;
        let rows = stmt
            .query_map([run], |r| {
                let (name, task, slots): (String, Option<i64>, Option<i64>) =
                    (r.get(2)?, r.get(3)?, r.get(4)?);
                Ok((
                    ControlAction::from_columns(&name, task, slots),
                    ControlRecord {
                        id: r.get(0)?,
                        run: r.get(1)?,
                        action: ControlAction::Pause,
                        requested_at: r.get(5)?,
                        requested_by: r.get(6)?,
                        applied_at: r.get(7)?,
                        result: r.get(8)?,
                    },
                ))
            })
            .and_then(Iterator::collect::<rusqlite::Result<Vec<_>>>)
            .map_err(db(&self.path, "read control requests"))?;
        // A request of an action this shoal does not know (a newer one's) is left out.
        Ok(rows
            .into_iter()
            .filter_map(|(action, record)| Some(ControlRecord { action: action?, ..record }))
            .collect())
    }
}

/// A live run's look for new requests, on a connection of its own.
#[derive(Debug)]
pub(crate) struct SqliteFeed {
    conn: Connection,
    path: PathBuf,
    run: i64,
    /// Requests up to this id were handed over.
    last: i64,
    /// `PRAGMA data_version` when the table was last read.
    seen: Option<i64>,
    /// Polls that read the table (an idle poll must not).
    reads: u64,
}

impl SqliteFeed {
    pub(super) fn open(path: &Path, run: i64) -> Result<SqliteFeed> {
        let conn = schema::connect(path)?;
        Ok(SqliteFeed { conn, path: path.to_owned(), run, last: 0, seen: None, reads: 0 })
    }

    /// How many polls read the table.
    #[cfg(test)]
    pub(super) fn reads(&self) -> u64 {
        self.reads
    }
}

impl ControlFeed for SqliteFeed {
    fn poll(&mut self) -> Result<Vec<ControlRequest>> {
        let fail = db(&self.path, "read control requests");
        // Prepared once: this runs 20 times a second for the run's whole life.
        let version: i64 = self
            .conn
            .prepare_cached("PRAGMA data_version")
            .and_then(|mut s| s.query_row([], |r| r.get(0)))
            .map_err(&fail)?;
        if self.seen == Some(version) {
            return Ok(Vec::new());
        }
        self.seen = Some(version);
        self.reads += 1;
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT id, action, task, slots FROM control
                 WHERE run_id = ?1 AND applied_at IS NULL AND id > ?2 ORDER BY id",
            )
            .map_err(&fail)?;
        let rows = stmt
            .query_map(params![self.run, self.last], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?, r.get(2)?, r.get(3)?))
            })
            .and_then(Iterator::collect::<rusqlite::Result<Vec<_>>>)
            .map_err(&fail)?;
        let mut found = Vec::with_capacity(rows.len());
        for (id, name, task, slots) in rows {
            self.last = id;
            match ControlAction::from_columns(&name, task, slots) {
                Some(action) => found.push(ControlRequest { id, run: self.run, action }),
                None => tracing::warn!(id, action = name, "unknown control request left alone"),
            }
        }
        Ok(found)
    }
}
