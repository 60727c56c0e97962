//! The SQLite backend's answers to [`ReadApi`]: an HTTP front's reads.

use rusqlite::{params, OptionalExtension};

use super::db::require_run;
use super::failure::db;
use super::read::{slot_stats, status_counts, task_row, TASK_COLUMNS};
use super::schema::INPUT_OPEN_VERSION;
use super::store::SqliteStore;
use crate::error::{Error, Result};
use crate::store::read_api::{
    bucket_sums, page_bounds, status_condition, Histogram, PageStart, ReadApi, RunOverview,
    StoreMetrics, TaskFilter,
};
use crate::store::records::{zero_counts, AttemptRecord, TaskRecord};
use crate::task::{TaskId, TaskStatus};

impl ReadApi for SqliteStore {
    fn task_page(
        &self,
        run: i64,
        filter: &TaskFilter,
        start: PageStart,
        limit: usize,
    ) -> Result<Vec<TaskRecord>> {
        let conn = self.conn();
        require_run(&self.path, &conn, run)?;
        let sql = format!(
            "SELECT {TASK_COLUMNS} FROM tasks
             WHERE run_id = ?1 AND task > ?2 {}
               AND (?3 IS NULL OR slot = ?3) AND (?4 IS NULL OR exit_code = ?4)
               AND (?5 IS NULL OR instr(lower(command), lower(?5)) > 0
                               OR instr(lower(args), lower(?5)) > 0)
             ORDER BY task LIMIT ?6 OFFSET ?7",
            status_condition(&filter.statuses)
        );
        let (offset, after) = page_bounds(start);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let slot = filter.slot.map(|s| s as i64);
        let mut stmt = conn.prepare_cached(&sql).map_err(db(&self.path, "read tasks"))?;
        stmt.query_map(
            params![run, after, slot, filter.exit_code, filter.text, limit, offset],
            task_row,
        )
        .and_then(Iterator::collect)
        .map_err(db(&self.path, "read tasks"))
    }

    fn overview(&self, run: i64) -> Result<RunOverview> {
        let conn = self.conn();
        require_run(&self.path, &conn, run)?;
        let input_open = self.version() >= INPUT_OPEN_VERSION
            && conn
                .query_row("SELECT input_open FROM runs WHERE id = ?1", [run], |r| r.get(0))
                .map_err(db(&self.path, "read a run"))?;
        Ok(RunOverview {
            counts: status_counts(&self.path, &conn, run)?,
            per_slot: slot_stats(&self.path, &conn, run)?,
            input_open,
        })
    }

    fn task(&self, run: i64, task: TaskId) -> Result<TaskRecord> {
        let conn = self.conn();
        require_run(&self.path, &conn, run)?;
        conn.query_row(
            &format!("SELECT {TASK_COLUMNS} FROM tasks WHERE run_id = ?1 AND task = ?2"),
            params![run, task],
            task_row,
        )
        .optional()
        .map_err(db(&self.path, "read a task"))?
        .ok_or(Error::NoSuchTask { run, task })
    }

    fn task_attempts(&self, run: i64, task: TaskId) -> Result<Vec<AttemptRecord>> {
        self.attempts_of(run, Some(task))
    }

    fn metrics(&self, bounds: &[f64]) -> Result<StoreMetrics> {
        let conn = self.conn();
        let mut tasks = zero_counts();
        let mut stmt = conn
            .prepare("SELECT status, count(*) FROM tasks GROUP BY status")
            .map_err(db(&self.path, "count tasks"))?;
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, TaskStatus>(0)?, r.get::<_, u64>(1)?)))
            .and_then(Iterator::collect::<rusqlite::Result<Vec<_>>>)
            .map_err(db(&self.path, "count tasks"))?;
        tasks.extend(rows);

        let mut stmt = conn
            .prepare("SELECT coalesce(outcome, 'running'), count(*) FROM attempts GROUP BY 1")
            .map_err(db(&self.path, "count attempts"))?;
        let attempts = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .and_then(Iterator::collect)
            .map_err(db(&self.path, "count attempts"))?;

        let sql = format!(
            "SELECT count(*), total(duration) {} FROM tasks
             WHERE status NOT IN (?1, ?2, ?3) AND duration IS NOT NULL",
            bucket_sums(bounds)
        );
        let durations = conn
            .query_row(
                &sql,
                params![TaskStatus::Queued, TaskStatus::Running, TaskStatus::Cancelled],
                |r| {
                    let cumulative = (0..bounds.len())
                        .map(|i| r.get::<_, Option<u64>>(i + 2).map(Option::unwrap_or_default))
                        .collect::<rusqlite::Result<_>>()?;
                    Ok(Histogram {
                        bounds: bounds.to_vec(),
                        cumulative,
                        count: r.get(0)?,
                        sum: r.get(1)?,
                    })
                },
            )
            .map_err(db(&self.path, "read durations"))?;
        Ok(StoreMetrics { tasks, attempts, durations })
    }
}
