"""Options of shoal's pools, checked once, with messages naming what was wrong.

`TaskOptions` holds what the engine takes per task (priority, timeout, retries, cost,
affinity key): the pool's defaults, overridden per call through `options(...)`.
`PoolSettings` holds what the engine takes per pool: worker count, initializer,
recycling, memory limit, CPU pinning, heartbeats, progress. Both front ends
(`shoal.pool`, `shoal.futures`) build these and hand them to `_client.Core`.
"""

from __future__ import annotations

import numbers
import os
import re

_UNSET = object()


def default_workers() -> int:
    """The CPUs this process may run on (a container or taskset may allow fewer than
    the machine has)."""
    counter = getattr(os, "process_cpu_count", None)
    if counter is not None:
        return counter() or 1
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):
        return os.cpu_count() or 1


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b)?\s*$", re.IGNORECASE)
_SHIFTS = {"": 0, "k": 10, "m": 20, "g": 30, "t": 40}


def parse_size(name: str, value) -> int | None:
    """A byte size: an int, or a string with a binary suffix ("512M", "1.5G", "100KiB"),
    as the command line reads them. None stays None."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise TypeError(f"{name} must be a number of bytes or a size like '512M', not {value!r}")
    if isinstance(value, numbers.Integral):
        size = int(value)
    elif isinstance(value, str):
        match = _SIZE.match(value)
        if not match or (match.group(3) and match.group(3).lower() == "ib" and not match.group(2)):
            raise ValueError(
                f"{name}={value!r} is not a size: use bytes (4096) or a unit: 100K, 512M, 1.5G, 2T"
            )
        number, unit = match.group(1), match.group(2).lower()
        if "." in number and not unit:
            raise ValueError(f"{name}={value!r}: a byte count must be a whole number")
        size = int(float(number) * (1 << _SHIFTS[unit]))
    else:
        raise TypeError(
            f"{name} must be a number of bytes or a size like '512M', not {type(value).__name__}"
        )
    if size <= 0:
        raise ValueError(f"{name} must be more than 0 bytes, not {value!r}")
    if size >= 1 << 63:
        raise ValueError(f"{name} must be less than 8 EiB, not {value!r}")
    return size


# The least memory_limit taken: a worker is a Python interpreter, which started with
# 8 MiB under a memory cgroup but needed 24 MiB of address space under RLIMIT_AS (its
# threads' stacks count); below this no worker could start, and the pool would break.
MIN_WORKER_MEMORY = 32 << 20


def _int(name: str, value) -> int:
    """An int that is not a bool (True is no count), or TypeError naming `name`."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, not {value!r}")
    return int(value)


# The longest duration taken (about 31 years): the engine adds durations to its clock,
# and "no limit" is written None, not a huge number.
MAX_SECONDS = 1e9


def _seconds(name: str, value) -> float:
    """A number of seconds above 0 and at most MAX_SECONDS, or an error naming `name`."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number of seconds, not {value!r}")
    seconds = float(value)
    if not 0 < seconds <= MAX_SECONDS:
        raise ValueError(
            f"{name} must be a number of seconds above 0 and at most {MAX_SECONDS:g}, "
            f"not {value!r}"
        )
    return seconds


class TaskOptions:
    """What the engine takes per task. Immutable; `replace` makes a changed copy.

    - priority: higher runs first (FIFO within a priority; aging keeps low ones moving).
    - timeout: seconds a task may run before its worker is killed (TaskTimeout); None
      for no limit.
    - retries: extra attempts after the worker crashed, hung or went past its memory
      limit (an exception raised by the task is never retried, nor is a timeout).
    - cost: a hint of the task's duration in seconds; longer tasks start first within a
      priority, which shortens the whole run.
    - key: an affinity key; tasks with the same key prefer the worker that ran it last.
    """

    __slots__ = ("priority", "timeout", "retries", "cost", "key")

    def __init__(self, priority=0, timeout=None, retries=1, cost=None, key=None) -> None:
        priority = _int("priority", priority)
        if not -(2**31) <= priority < 2**31:
            raise ValueError(f"priority must fit in 32 bits, not {priority}")
        retries = _int("retries", retries)
        if not 0 <= retries < 2**32:
            raise ValueError(f"retries must be 0 or more, not {retries}")
        if cost is not None:
            if isinstance(cost, bool) or not isinstance(cost, numbers.Real):
                raise TypeError(f"cost must be a number of seconds, not {cost!r}")
            cost = float(cost)
            if not 0 <= cost <= MAX_SECONDS:
                raise ValueError(
                    f"cost must be a number of seconds from 0 to {MAX_SECONDS:g}, not {cost:g}"
                )
        if key is not None and not isinstance(key, str):
            raise TypeError(f"key must be a str, not {type(key).__name__}")
        self.priority: int = priority
        self.timeout: float | None = None if timeout is None else _seconds("timeout", timeout)
        self.retries: int = retries
        self.cost: float | None = cost
        self.key: str | None = key

    def replace(self, priority=_UNSET, timeout=_UNSET, retries=_UNSET, cost=_UNSET, key=_UNSET):
        """A copy with the given options changed (the others kept)."""
        keep = lambda new, old: old if new is _UNSET else new  # noqa: E731
        return TaskOptions(
            keep(priority, self.priority),
            keep(timeout, self.timeout),
            keep(retries, self.retries),
            keep(cost, self.cost),
            keep(key, self.key),
        )

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__slots__)
        return f"TaskOptions({fields})"


def resize_count(n) -> int:
    """The worker count `pool.resize(n)` takes: an int from 1 (ValueError naming `n`
    otherwise; the engine refuses a count past the memory limit's cgroups)."""
    if isinstance(n, bool) or not isinstance(n, numbers.Integral):
        raise ValueError(f"resize: n must be an int (a worker count), not {n!r}")
    if n < 1:
        raise ValueError(f"resize: n must be at least 1 worker, not {n}")
    if n >= 2**32:
        raise ValueError(f"resize: n={n} is more workers than a pool can have")
    return int(n)


class PoolSettings:
    """What the engine takes per pool, checked. `workers` is the process count (an
    elastic pool's maximum); `min_workers` and `idle_timeout` make it elastic."""

    def __init__(
        self,
        *,
        workers,
        workers_name: str,
        min_workers=None,
        min_workers_name: str = "min_workers",
        idle_timeout=None,
        initializer,
        initargs,
        max_tasks,
        max_tasks_name: str,
        defaults: TaskOptions,
        memory_limit,
        cpu_affinity,
        max_memory_per_child,
        heartbeat,
        heartbeat_timeout,
        progress,
        store,
        threads: bool = False,
    ) -> None:
        self.threads = threads  # thread workers (see _threads), not processes
        workers = default_workers() if workers is None else _int(workers_name, workers)
        if workers < 1:
            raise ValueError(f"{workers_name} must be at least 1, not {workers}")
        if min_workers is not None:
            min_workers = _int(min_workers_name, min_workers)
            if not 1 <= min_workers <= workers:
                raise ValueError(
                    f"{min_workers_name} must be from 1 to {workers_name} ({workers}), "
                    f"not {min_workers}"
                )
        self.min_workers: int | None = min_workers
        self.idle_timeout: float | None = (
            None if idle_timeout is None else _seconds("idle_timeout", idle_timeout)
        )
        if initializer is not None and not callable(initializer):
            raise TypeError("initializer must be a callable")
        if max_tasks is not None:
            max_tasks = _int(max_tasks_name, max_tasks)
            if max_tasks < 1:
                raise ValueError(
                    f"{max_tasks_name} must be a positive int or None, not {max_tasks}"
                )
        if store is not None and not isinstance(store, (str, bytes, os.PathLike)):
            raise TypeError(f"store must be a path to a SQLite file, not {store!r}")
        self.store = None if store is None else os.fsdecode(store)
        self.workers: int = workers
        self.initializer = initializer
        self.initargs = tuple(initargs)
        self.max_tasks: int | None = max_tasks
        self.defaults = defaults
        self.memory_limit = parse_size("memory_limit", memory_limit)
        if self.memory_limit is not None and self.memory_limit < MIN_WORKER_MEMORY:
            raise ValueError(
                f"memory_limit must be at least {MIN_WORKER_MEMORY >> 20}M (no worker, a Python "
                f"interpreter, can start with less), not {memory_limit!r}"
            )
        self.recycle_memory = parse_size("max_memory_per_child", max_memory_per_child)
        self.cpus = _cpus(cpu_affinity)
        self.heartbeat = _seconds("heartbeat", heartbeat)
        self.heartbeat_timeout = _seconds("heartbeat_timeout", heartbeat_timeout)
        if self.heartbeat_timeout <= self.heartbeat:
            raise ValueError(
                f"heartbeat_timeout ({heartbeat_timeout} s) must be longer than heartbeat "
                f"({heartbeat} s), or every worker would be declared hung"
            )
        self.progress = bool(progress)


def _cpus(affinity) -> list[int] | None:
    """cpu_affinity: False/None (no pinning), True (one allowed CPU per worker, in turn),
    or a list of CPU numbers (worker k is pinned to cpus[k % len(cpus)])."""
    if affinity is None or affinity is False:
        return None
    if affinity is True:
        try:
            return sorted(os.sched_getaffinity(0))
        except (AttributeError, OSError):
            return list(range(os.cpu_count() or 1))
    try:
        cpus = list(affinity)
    except TypeError:
        raise TypeError(
            f"cpu_affinity must be True, False or a list of CPU numbers, not {affinity!r}"
        ) from None
    if not cpus or not all(
        isinstance(c, numbers.Integral) and not isinstance(c, bool) for c in cpus
    ):
        raise ValueError(f"cpu_affinity must list CPU numbers (ints >= 0), not {affinity!r}")
    chosen = [int(c) for c in cpus]
    if min(chosen) < 0:
        raise ValueError(f"cpu_affinity must list CPU numbers (ints >= 0), not {affinity!r}")
    try:
        allowed = os.sched_getaffinity(0)
    except (AttributeError, OSError):
        allowed = set(range(os.cpu_count() or 1))
    if not set(chosen) <= allowed:
        wrong = sorted(set(chosen) - allowed)
        raise ValueError(
            f"cpu_affinity lists CPU {wrong[0]}, which this process may not run on "
            f"(allowed: {sorted(allowed)})"
        )
    return chosen


def thread_settings(workers, workers_name: str, min_workers_name: str, **kwargs) -> PoolSettings:
    """PoolSettings of a thread pool: what `ThreadPool` and `ThreadPoolExecutor` take
    (min_workers, idle_timeout, initializer, initargs, defaults, progress, store); the
    process options are not theirs."""
    return PoolSettings(
        workers=workers,
        workers_name=workers_name,
        min_workers_name=min_workers_name,
        max_tasks=None,
        max_tasks_name="",
        memory_limit=None,
        cpu_affinity=None,
        max_memory_per_child=None,
        heartbeat=1.0,
        heartbeat_timeout=30.0,
        threads=True,
        **kwargs,
    )
