"""shoal: a fault-tolerant process pool with a Rust engine.

`shoal.Pool` is a drop-in for `multiprocessing.Pool` and `shoal.ProcessPoolExecutor`
for `concurrent.futures.ProcessPoolExecutor`; both run their tasks on long-lived worker
processes supervised by the engine (`shoal._engine`), which never hangs when a worker
dies, kills only the task that timed out, retries crashes, and prioritises.
`shoal.ThreadPool` and `shoal.ThreadPoolExecutor` are the same on worker threads, for
I/O-bound calls. The errors they raise are in `shoal.errors`.

`shoal.Store(path)` steers the live runs recorded in a store (cancel, pause, unpause,
set_jobs), from any process, as the `shoal cancel` family does.

The package also installs the `shoal` command line (`python -m shoal` runs it too),
and `shoal.__version__` is its version.

This module only names the public API. It imports nothing until a name is used,
because every worker process imports it first (to reach `shoal._worker`) and worker
start is on the path of `Pool(...)` to the first result.
"""

from __future__ import annotations

# Not `typing.TYPE_CHECKING`: importing typing alone costs a worker milliseconds at start.
TYPE_CHECKING = False

__all__ = [
    "Pool",
    "ThreadPool",
    "AsyncResult",
    "ProcessPoolExecutor",
    "ThreadPoolExecutor",
    "Stats",
    "WorkerStats",
    "ShoalError",
    "TaskTimeout",
    "WorkerCrashed",
    "MemoryLimitExceeded",
    "InitializerError",
    "TaskCancelled",
    "PicklingError",
    "RemoteError",
    "EngineError",
    "StoreError",
    "StoreWarning",
    "Store",
    "ControlRefused",
    "ControlNotTaken",
]

# Where each public name lives.
_HOMES = {
    "Pool": "shoal.pool",
    "ThreadPool": "shoal.pool",
    "AsyncResult": "shoal.pool",
    "ProcessPoolExecutor": "shoal.futures",
    "ThreadPoolExecutor": "shoal.futures",
    "Stats": "shoal._client",
    "WorkerStats": "shoal._client",
    "ShoalError": "shoal.errors",
    "TaskTimeout": "shoal.errors",
    "WorkerCrashed": "shoal.errors",
    "MemoryLimitExceeded": "shoal.errors",
    "InitializerError": "shoal.errors",
    "TaskCancelled": "shoal.errors",
    "PicklingError": "shoal.errors",
    "RemoteError": "shoal.errors",
    "EngineError": "shoal.errors",
    "StoreError": "shoal.errors",
    "StoreWarning": "shoal.errors",
    "Store": "shoal.store",
    "ControlRefused": "shoal.errors",
    "ControlNotTaken": "shoal.errors",
}

if TYPE_CHECKING:
    from shoal._client import Stats, WorkerStats
    from shoal.errors import (
        ControlNotTaken,
        ControlRefused,
        EngineError,
        InitializerError,
        MemoryLimitExceeded,
        PicklingError,
        RemoteError,
        ShoalError,
        StoreError,
        StoreWarning,
        TaskCancelled,
        TaskTimeout,
        WorkerCrashed,
    )
    from shoal.futures import ProcessPoolExecutor, ThreadPoolExecutor
    from shoal.pool import AsyncResult, Pool, ThreadPool
    from shoal.store import Store


def __getattr__(name: str):
    if name == "__version__":
        globals()[name] = value = _version()
        return value
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'shoal' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__) | {"__version__"})


def _version() -> str:
    """The installed package's version (its metadata), else the engine's: the same
    number, which maturin takes from the crate."""
    from importlib import metadata

    try:
        return metadata.version("shoal")
    except metadata.PackageNotFoundError:
        from shoal._engine import __version__

        return __version__
