//! `shoal._engine`: the Python face of the engine's worker pool
//! ([`shoal_core::workers`]), and of the `shoal` command line ([`cli_main`], which the
//! package installs as its `shoal` command). It converts arguments and results and
//! maps errors to Python exceptions, in one place; it decides nothing. Payloads cross
//! as bytes: the Python package pickles, the engine never looks inside. Waits release
//! the GIL.

use std::collections::HashMap;
use std::ffi::OsString;
use std::io;
use std::os::fd::{AsRawFd, IntoRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use pyo3::exceptions::{PyOSError, PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};
use shoal_core::store::{requester, ControlAction, Store, StoreAddress};
use shoal_core::workers::{
    PoolClosed, PoolConfig, PoolStore, TaskEvent, TaskSpec, ThreadStarter, WorkerPool,
};
use shoal_core::{Error, TaskMeta};

/// A final task event as Python sees it:
/// `(task, status, payload, message, attempts, worker, duration_seconds)`, where
/// `status` is the task's (`succeeded`, `crashed`, ...) or, for a failed one, what
/// failed (`raised`, `init_failed`, `refused`): [`TaskEvent::name`].
type PyEvent = (u64, &'static str, Py<PyBytes>, String, u32, usize, f64);

/// A pool of worker processes run by the Rust engine.
#[pyclass(frozen, module = "shoal._engine")]
struct Engine {
    pool: WorkerPool,
}

#[pymethods]
impl Engine {
    #[new]
    #[pyo3(signature = (
        argv, workers, *, min_workers=None, idle_timeout=None, env=None, worker_config=Vec::new(), init=None, pass_fds=Vec::new(),
        max_tasks_per_worker=None, recycle_memory=None, memory_limit=None, cpus=None,
        nice=None, heartbeat=1.0, heartbeat_timeout=30.0, kill_grace=1.0,
        retry_delay=0.05, prefetch=32, store=None, run_name=None, threads=None,
    ))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        argv: Vec<OsString>,
        workers: usize,
        min_workers: Option<usize>,
        idle_timeout: Option<f64>,
        env: Option<HashMap<OsString, OsString>>,
        worker_config: Vec<u8>,
        init: Option<Vec<u8>>,
        pass_fds: Vec<i32>,
        max_tasks_per_worker: Option<u64>,
        recycle_memory: Option<u64>,
        memory_limit: Option<u64>,
        cpus: Option<Vec<usize>>,
        nice: Option<i32>,
        heartbeat: f64,
        heartbeat_timeout: f64,
        kill_grace: f64,
        retry_delay: f64,
        prefetch: usize,
        store: Option<PathBuf>,
        run_name: Option<Vec<String>>,
        threads: Option<Py<PyAny>>,
    ) -> PyResult<Self> {
        if max_tasks_per_worker == Some(0) {
            return Err(PyValueError::new_err("max_tasks_per_worker must be at least 1"));
        }
        let mut config = PoolConfig::new(argv, workers);
        config.min_workers = min_workers;
        config.idle_timeout = idle_timeout.map(|t| seconds("idle_timeout", t)).transpose()?;
        config.env = env.unwrap_or_default().into_iter().collect();
        config.worker_config = worker_config;
        config.init = init;
        config.pass_fds = pass_fds;
        config.max_tasks_per_worker = max_tasks_per_worker;
        config.recycle_memory = recycle_memory;
        config.memory_limit = memory_limit;
        config.cpus = cpus;
        config.nice = nice;
        config.heartbeat = seconds("heartbeat", heartbeat)?;
        config.heartbeat_timeout = seconds("heartbeat_timeout", heartbeat_timeout)?;
        config.kill_grace = seconds("kill_grace", kill_grace)?;
        config.retry_delay = seconds("retry_delay", retry_delay)?;
        config.prefetch = prefetch.max(1);
        config.store = store.map(|path| PoolStore {
            address: StoreAddress::parse(path),
            command: run_name.unwrap_or_else(|| vec!["python".into()]),
            // Results are unpickled after they are read: one may yet be refused.
            refusals: true,
        });
        config.threads = threads.map(thread_starter);
        let pool = WorkerPool::start(config).map_err(engine_error)?;
        Ok(Engine { pool })
    }

    /// Queues one task; returns its id.
    #[pyo3(signature = (payload, priority=0, timeout=None, retries=1, cost=None, key=None, label=String::new()))]
    #[allow(clippy::too_many_arguments)]
    fn submit(
        &self,
        payload: Vec<u8>,
        priority: i32,
        timeout: Option<f64>,
        retries: u32,
        cost: Option<f64>,
        key: Option<String>,
        label: String,
    ) -> PyResult<u64> {
        let meta = meta(priority, timeout, retries, cost, key)?;
        self.pool.submit(vec![TaskSpec { payload, label, meta }]).map_err(closed)
    }

    /// Queues tasks with the same options; returns the first id (they are consecutive).
    #[pyo3(signature = (payloads, priority=0, timeout=None, retries=1, cost=None, key=None, labels=None))]
    #[allow(clippy::too_many_arguments)]
    fn submit_many(
        &self,
        payloads: Vec<Vec<u8>>,
        priority: i32,
        timeout: Option<f64>,
        retries: u32,
        cost: Option<f64>,
        key: Option<String>,
        labels: Option<Vec<String>>,
    ) -> PyResult<u64> {
        let meta = meta(priority, timeout, retries, cost, key)?;
        if labels.as_ref().is_some_and(|l| l.len() != payloads.len()) {
            return Err(PyValueError::new_err("labels must be as many as payloads"));
        }
        let mut labels = labels.unwrap_or_default().into_iter();
        let specs = payloads
            .into_iter()
            .map(|payload| TaskSpec {
                payload,
                label: labels.next().unwrap_or_default(),
                meta: meta.clone(),
            })
            .collect();
        self.pool.submit(specs).map_err(closed)
    }

    /// A task no worker has yet ends cancelled (True); otherwise nothing happens (False).
    fn cancel(&self, py: Python<'_>, task: u64) -> bool {
        py.detach(|| self.pool.cancel(task))
    }

    /// Final events, waiting (without the GIL) up to `timeout` seconds for the first.
    #[pyo3(signature = (timeout=None, max=4096))]
    fn events(&self, py: Python<'_>, timeout: Option<f64>, max: usize) -> PyResult<Vec<PyEvent>> {
        let timeout = timeout.map(|t| seconds("timeout", t)).transpose()?;
        let events = py.detach(|| self.pool.next_events(timeout, max));
        Ok(events.into_iter().map(|e| to_python(py, e)).collect())
    }

    /// No more submits; queued tasks still run, then the workers exit.
    fn close(&self) {
        self.pool.close();
    }

    /// Kills every worker now; unfinished tasks end cancelled.
    fn terminate(&self) {
        self.pool.terminate();
    }

    /// Waits for the pool to end; false if `timeout` seconds passed first.
    #[pyo3(signature = (timeout=None))]
    fn join(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<bool> {
        let timeout = timeout.map(|t| seconds("timeout", t)).transpose()?;
        Ok(py.detach(|| self.pool.join(timeout)))
    }

    /// Resizes the pool to `workers` now (an elastic pool: its maximum); returns what
    /// it did once applied. ValueError: 0, past the memory limit's cgroups, or the
    /// pool is closed.
    fn resize(&self, py: Python<'_>, workers: usize) -> PyResult<String> {
        py.detach(|| self.pool.resize(workers)).map_err(|e| PyValueError::new_err(e.to_string()))
    }

    /// Per-worker figures and task counts.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let stats = py.detach(|| self.pool.stats());
        let workers = stats
            .workers
            .iter()
            .map(|w| {
                let d = PyDict::new(py);
                d.set_item("slot", w.slot)?;
                d.set_item("pid", w.pid)?;
                d.set_item("tasks", w.tasks)?;
                d.set_item("busy", w.busy.as_secs_f64())?;
                d.set_item("mean", w.mean.as_secs_f64())?;
                d.set_item("p95", w.p95.as_secs_f64())?;
                d.set_item("restarts", w.restarts)?;
                d.set_item("rss", w.rss)?;
                Ok(d)
            })
            .collect::<PyResult<Vec<_>>>()?;
        let d = PyDict::new(py);
        d.set_item("workers", workers)?;
        d.set_item("submitted", stats.submitted)?;
        d.set_item("finished", stats.finished)?;
        d.set_item("running", stats.running)?;
        d.set_item("queued", stats.queued)?;
        Ok(d)
    }

    /// The caller could not take `task`'s result (it does not unpickle): the store
    /// records the task failed with `reason`, so that no keyed call reuses it.
    fn refused(&self, task: u64, reason: String) {
        self.pool.refused(task, reason);
    }

    /// Once the pool has ended and every event was handled: ends the run in the store
    /// and waits until everything is written. Without a store, nothing to do.
    fn close_record(&self, py: Python<'_>) {
        py.detach(|| self.pool.close_record());
    }

    /// Why the store stopped taking writes, if it did (None while it takes them).
    fn store_failure(&self) -> Option<String> {
        self.pool.store_failure()
    }

    /// Submitted tasks whose event has not been returned by `events` yet.
    #[getter]
    fn pending(&self) -> u64 {
        self.pool.pending()
    }
}

/// Thread workers: `start(worker_id, fd)` starts a thread of this process serving the
/// worker protocol on `fd`, which it then owns.
fn thread_starter(start: Py<PyAny>) -> ThreadStarter {
    ThreadStarter(Arc::new(move |id, channel: OwnedFd| {
        Python::attach(|py| {
            start
                .bind(py)
                .call1((id, channel.as_raw_fd()))
                .map_err(|e| io::Error::other(format!("cannot start a thread worker: {e}")))?;
            let _ = channel.into_raw_fd(); // the thread owns it now
            Ok(())
        })
    }))
}

fn meta(
    priority: i32,
    timeout: Option<f64>,
    retries: u32,
    cost: Option<f64>,
    key: Option<String>,
) -> PyResult<TaskMeta> {
    let timeout = timeout.map(|t| seconds("timeout", t)).transpose()?;
    if timeout.is_some_and(|t| t.is_zero()) {
        return Err(PyValueError::new_err("timeout must be more than 0 seconds"));
    }
    Ok(TaskMeta {
        priority,
        cost: cost.map(|c| seconds("cost", c)).transpose()?,
        key,
        timeout,
        retries,
    })
}

/// A duration in seconds from Python, refused when negative or not finite.
fn seconds(name: &str, value: f64) -> PyResult<Duration> {
    Duration::try_from_secs_f64(value).map_err(|_| {
        PyValueError::new_err(format!(
            "{name} must be a finite number of seconds >= 0, not {value}"
        ))
    })
}

fn to_python(py: Python<'_>, e: TaskEvent) -> PyEvent {
    (
        e.task,
        e.name(),
        PyBytes::new(py, &e.payload).unbind(),
        e.message,
        e.attempts,
        e.worker,
        e.duration.as_secs_f64(),
    )
}

/// An exception of `shoal.errors`, by its class name.
fn shoal_error(class: &str, message: String) -> PyErr {
    Python::attach(|py| match py.import("shoal.errors").and_then(|m| m.getattr(class)) {
        Ok(class) => PyErr::from_value(match class.call1((message,)) {
            Ok(error) => error,
            Err(e) => return e,
        }),
        Err(e) => e,
    })
}

/// The one place engine errors become Python exceptions. A store that cannot be used
/// (missing directory, not a shoal store, damaged, on a full disk, another schema, a
/// backend this shoal does not have, a failed write, its run's lock) is
/// `shoal.errors.StoreError`, an `OSError`.
/// A control request that cannot apply is `ControlRefused` (a `ValueError`); one the
/// run did not take, `ControlNotTaken` (a `TimeoutError`).
fn engine_error(error: Error) -> PyErr {
    let message = error.to_string();
    match error {
        Error::InvalidConfig { .. } => PyValueError::new_err(message),
        Error::StoreOpen { .. }
        | Error::StoreCorrupt { .. }
        | Error::StoreDamaged { .. }
        | Error::StoreFull { .. }
        | Error::StoreSchema { .. }
        | Error::StoreBackend { .. }
        | Error::StoreConnect { .. }
        | Error::StoreNoSchema { .. }
        | Error::StoreVersion { .. }
        | Error::Store { .. }
        | Error::LockFile { .. }
        | Error::RunBusy { .. } => shoal_error("StoreError", message),
        Error::NoSuchRun { .. }
        | Error::NoSuchTask { .. }
        | Error::RunEnded { .. }
        | Error::TaskEnded { .. } => shoal_error("ControlRefused", message),
        Error::ControlNotTaken { .. } => shoal_error("ControlNotTaken", message),
        Error::WorkerProgram { .. } | Error::Os { .. } => PyOSError::new_err(message),
        _ => PyRuntimeError::new_err(message),
    }
}

/// A store opened to steer the live runs recorded in it (`shoal.Store`).
#[pyclass(frozen, module = "shoal._engine", name = "Store")]
struct PyStore {
    store: Store,
}

#[pymethods]
impl PyStore {
    /// Opens an existing store (a file, or a `postgresql://` URL); a file that does
    /// not exist is not created.
    #[new]
    fn new(py: Python<'_>, path: PathBuf) -> PyResult<Self> {
        let address = StoreAddress::parse(path);
        if let Some(path) = address.path().filter(|path| !path.exists()) {
            return Err(engine_error(Error::StoreOpen {
                path: path.to_owned(),
                reason: "no store here (a run creates it)".into(),
            }));
        }
        let store = py.detach(|| Store::open(address)).map_err(engine_error)?;
        Ok(PyStore { store })
    }

    /// Asks the live run `run` to apply requests, each `(action, number)`: action
    /// "cancel" (number: the task, or None for the whole run), "pause", "unpause",
    /// "jobs" (number: the slots). Waits up to `wait` seconds for the run to take
    /// them; returns what the run made of each.
    #[pyo3(signature = (run, requests, wait=5.0))]
    fn request(
        &self,
        py: Python<'_>,
        run: i64,
        requests: Vec<(String, Option<i64>)>,
        wait: f64,
    ) -> PyResult<Vec<String>> {
        let wait = seconds("wait", wait)?;
        let actions = requests
            .iter()
            .map(|(action, number)| control_action(action, *number))
            .collect::<PyResult<Vec<_>>>()?;
        let by = requester("python shoal.Store");
        let records =
            py.detach(|| self.store.request(run, &actions, &by, wait)).map_err(engine_error)?;
        Ok(records.into_iter().map(|r| r.result.unwrap_or_default()).collect())
    }
}

/// A request as the Python front names it.
fn control_action(action: &str, number: Option<i64>) -> PyResult<ControlAction> {
    let bad = |what: String| PyValueError::new_err(what);
    Ok(match (action, number) {
        ("cancel", None) => ControlAction::CancelRun,
        ("cancel", Some(task)) => ControlAction::CancelTask {
            task: u64::try_from(task)
                .map_err(|_| bad(format!("no task {task}: tasks count from 1")))?,
        },
        ("pause", _) => ControlAction::Pause,
        ("unpause", _) => ControlAction::Unpause,
        ("jobs", Some(slots)) => ControlAction::SetSlots {
            // Out of range either way: the store names the range.
            slots: u32::try_from(slots).unwrap_or(0),
        },
        (other, _) => return Err(bad(format!("unknown control request {other:?}"))),
    })
}

fn closed(error: PoolClosed) -> PyErr {
    PyRuntimeError::new_err(error.to_string())
}

/// Runs the `shoal` command line with `argv` (`argv[0]` names the program) and returns
/// its exit status: the very code of the `shoal` binary, which the package's `shoal`
/// command and `python -m shoal` run. The GIL is released meanwhile; signal handling
/// is the command's own (`shoal.__main__` leaves it the defaults first).
#[pyfunction]
fn cli_main(py: Python<'_>, argv: Vec<OsString>) -> u8 {
    py.detach(|| shoal_cli::main_from(argv))
}

#[pymodule]
fn _engine(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Engine>()?;
    m.add_class::<PyStore>()?;
    m.add_function(wrap_pyfunction!(cli_main, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add("PROTOCOL_VERSION", shoal_core::protocol::PROTOCOL_VERSION)?;
    Ok(())
}
