//! The PostgreSQL backend's answers to [`ReadApi`]: an HTTP front's reads, the same
//! as the SQLite backend's `read_api.rs`.

use super::blocking;
use super::failure::db;
use super::read::{slot_stats, status_counts, task_row, task_status, TASK_COLUMNS};
use super::store::{require_run, PgStore};
use crate::error::{Error, Result};
use crate::store::read_api::{
    bucket_sums, page_bounds, status_condition, Histogram, PageStart, ReadApi, RunOverview,
    StoreMetrics, TaskFilter,
};
use crate::store::records::{zero_counts, AttemptRecord, TaskRecord};
use crate::task::{TaskId, TaskStatus};

impl ReadApi for PgStore {
    fn task_page(
        &self,
        run: i64,
        filter: &TaskFilter,
        start: PageStart,
        limit: usize,
    ) -> Result<Vec<TaskRecord>> {
        blocking(|| {
            let a = &self.address;
            let mut client = self.client();
            require_run(a, &mut client.0, run)?;
            let sql = format!(
                "SELECT {TASK_COLUMNS} FROM tasks
                 WHERE run_id = $1 AND task > $2 {}
                   AND ($3::bigint IS NULL OR slot = $3) AND ($4::int IS NULL OR exit_code = $4)
                   AND ($5::text IS NULL OR strpos(lower(command), lower($5)) > 0
                                         OR strpos(lower(args), lower($5)) > 0)
                 ORDER BY task LIMIT $6 OFFSET $7",
                status_condition(&filter.statuses)
            );
            let (offset, after) = page_bounds(start);
            let limit = i64::try_from(limit).unwrap_or(i64::MAX);
            let slot = filter.slot.map(|s| s as i64);
            let rows = client
                .0
                .query(
                    &sql,
                    &[&run, &after, &slot, &filter.exit_code, &filter.text, &limit, &offset],
                )
                .map_err(db(a, "read tasks"))?;
            rows.iter().map(|r| task_row(a, r)).collect()
        })
    }

    fn overview(&self, run: i64) -> Result<RunOverview> {
        blocking(|| {
            let a = &self.address;
            let mut client = self.client();
            require_run(a, &mut client.0, run)?;
            let row = client
                .0
                .query_one("SELECT input_open FROM runs WHERE id = $1", &[&run])
                .map_err(db(a, "read a run"))?;
            Ok(RunOverview {
                counts: status_counts(a, &mut client.0, run)?,
                per_slot: slot_stats(a, &mut client.0, run)?,
                input_open: row.get(0),
            })
        })
    }

    fn task(&self, run: i64, task: TaskId) -> Result<TaskRecord> {
        blocking(|| {
            let a = &self.address;
            let mut client = self.client();
            require_run(a, &mut client.0, run)?;
            let sql = format!("SELECT {TASK_COLUMNS} FROM tasks WHERE run_id = $1 AND task = $2");
            let row =
                client.0.query_opt(&sql, &[&run, &(task as i64)]).map_err(db(a, "read a task"))?;
            row.map(|r| task_row(a, &r)).transpose()?.ok_or(Error::NoSuchTask { run, task })
        })
    }

    fn task_attempts(&self, run: i64, task: TaskId) -> Result<Vec<AttemptRecord>> {
        blocking(|| self.attempts_of(run, Some(task)))
    }

    fn metrics(&self, bounds: &[f64]) -> Result<StoreMetrics> {
        blocking(|| {
            let a = &self.address;
            let mut client = self.client();
            let mut tasks = zero_counts();
            for r in client
                .0
                .query("SELECT status, count(*) FROM tasks GROUP BY status", &[])
                .map_err(db(a, "count tasks"))?
            {
                tasks.insert(task_status(a, &r, 0)?, r.get::<_, i64>(1) as u64);
            }
            let attempts = client
                .0
                .query(
                    "SELECT coalesce(outcome, 'running'), count(*) FROM attempts GROUP BY 1",
                    &[],
                )
                .map_err(db(a, "count attempts"))?
                .iter()
                .map(|r| (r.get(0), r.get::<_, i64>(1) as u64))
                .collect();
            let sql = format!(
                "SELECT count(*), coalesce(sum(duration), 0) {} FROM tasks
                 WHERE status NOT IN ($1, $2, $3) AND duration IS NOT NULL",
                bucket_sums(bounds)
            );
            let r = client
                .0
                .query_one(
                    &sql,
                    &[
                        &TaskStatus::Queued.as_str(),
                        &TaskStatus::Running.as_str(),
                        &TaskStatus::Cancelled.as_str(),
                    ],
                )
                .map_err(db(a, "read durations"))?;
            let cumulative = (0..bounds.len())
                .map(|i| r.get::<_, Option<i64>>(i + 2).unwrap_or_default() as u64)
                .collect();
            let durations = Histogram {
                bounds: bounds.to_vec(),
                cumulative,
                count: r.get::<_, i64>(0) as u64,
                sum: r.get(1),
            };
            Ok(StoreMetrics { tasks, attempts, durations })
        })
    }
}
