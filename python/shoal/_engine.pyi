"""Type stubs of `shoal._engine`, the Rust extension (crates/shoal-py): the engine that
starts, supervises and feeds the worker processes. Payloads are opaque bytes to it."""

from typing import Callable, Final

PROTOCOL_VERSION: Final[int]
__version__: Final[str]  # the crate's version, which is the package's

def cli_main(argv: list[str]) -> int:
    """Runs the `shoal` command line (argv[0] names the program) and returns its exit
    status, as the `shoal` binary would exit with; never exits itself."""

# (task, status, payload, message, attempts, worker, duration_seconds); status is the
# task's ("succeeded", "crashed", "timed_out", "memory_exceeded", "cancelled") or, for a
# failed task, what failed ("raised", "init_failed", "refused").
# `shoal.errors.from_event` maps each but "succeeded" to an exception.
Event = tuple[int, str, bytes, str, int, int, float]

class Engine:
    def __init__(
        self,
        argv: list[str],
        workers: int,
        *,
        min_workers: int | None = None,
        idle_timeout: float | None = None,
        env: dict[str, str] | None = None,
        worker_config: bytes = b"",
        init: bytes | None = None,
        pass_fds: list[int] = [],
        max_tasks_per_worker: int | None = None,
        recycle_memory: int | None = None,
        memory_limit: int | None = None,
        cpus: list[int] | None = None,
        nice: int | None = None,
        heartbeat: float = 1.0,
        heartbeat_timeout: float = 30.0,
        kill_grace: float = 1.0,
        retry_delay: float = 0.05,
        prefetch: int = 32,
        store: str | None = None,
        run_name: list[str] | None = None,
        threads: Callable[[int, int], None] | None = None,
    ) -> None:
        """Starts the engine thread and the workers. `pass_fds`: descriptors every worker
        inherits at the same number (the caller keeps them open until the engine ended).
        ValueError for bad arguments, OSError if the worker program cannot be started at
        all, shoal.errors.StoreError (an OSError) if the store cannot be used. With
        `min_workers` or `idle_timeout` the pool is elastic: it starts `min_workers`
        (default 1), adds workers while tasks wait, up to `workers`, and retires workers
        idle for `idle_timeout` seconds, down to `min_workers`."""
    def submit(
        self,
        payload: bytes,
        priority: int = 0,
        timeout: float | None = None,
        retries: int = 1,
        cost: float | None = None,
        key: str | None = None,
        label: str = "",
    ) -> int:
        """Queues one task; returns its id (>= 1, increasing). Never blocks; RuntimeError
        after close() or terminate()."""
    def submit_many(
        self,
        payloads: list[bytes],
        priority: int = 0,
        timeout: float | None = None,
        retries: int = 1,
        cost: float | None = None,
        key: str | None = None,
        labels: list[str] | None = None,
    ) -> int:
        """Queues tasks with the same options; returns the first id (they are consecutive)."""
    def cancel(self, task: int) -> bool:
        """A task no worker has yet ends "cancelled" (True); otherwise nothing happens
        (False: a worker has it, or it has ended)."""
    def events(self, timeout: float | None = None, max: int = 4096) -> list[Event]:
        """Final events in completion order, waiting (GIL released) up to `timeout` for
        the first; [] at once when the engine has ended and everything was delivered."""
    def close(self) -> None:
        """No more submits; queued tasks still run, then the workers exit."""
    def terminate(self) -> None:
        """Kills every worker now; unfinished tasks end "cancelled"."""
    def join(self, timeout: float | None = None) -> bool:
        """True once the engine has ended (after close/terminate and all tasks done)."""
    def resize(self, workers: int) -> str:
        """Resizes the pool to `workers` now (an elastic pool: its maximum) and says
        what it did. ValueError: 0, past the memory limit's cgroups, or closed."""
    def stats(self) -> dict:
        """{"workers": [{"slot", "pid", "tasks", "busy", "mean", "p95", "restarts",
        "rss"}, ...], "submitted", "finished", "running", "queued"}."""
    def refused(self, task: int, reason: str) -> None:
        """The caller could not take `task`'s result (it does not unpickle): the store
        records the task failed with `reason` (no keyed call reuses it)."""
    def close_record(self) -> None:
        """Once the engine has ended and every event was handled: ends the run in the
        store and waits until everything is written (nothing to do without a store).
        Called earlier, it first waits for the engine to end (after close or terminate);
        a refusal after it is not recorded."""
    def store_failure(self) -> str | None:
        """Why the store stopped taking writes, if it did."""
    @property
    def pending(self) -> int:
        """Submitted tasks whose event events() has not returned yet."""

class Store:
    def __init__(self, path: str) -> None:
        """Opens an existing store (shoal.errors.StoreError if it does not exist or
        cannot be used)."""
    def request(
        self, run: int, requests: list[tuple[str, int | None]], wait: float = 5.0
    ) -> list[str]:
        """Asks the live run to apply each (action, number): ("cancel", None | task),
        ("pause", None), ("unpause", None), ("jobs", slots); waits up to `wait` s for
        the run to take them and returns what it made of each.
        shoal.errors.ControlRefused (a ValueError) for a request that cannot apply,
        shoal.errors.ControlNotTaken (a TimeoutError) if the run did not take it."""
