"""`shoal.Pool`: a drop-in for `multiprocessing.Pool` on shoal's engine.

It keeps the standard API and behaviour (`apply`, `apply_async`, `map`, `map_async`,
`imap`, `imap_unordered`, `starmap`, `starmap_async`, `close`, `join`, `terminate`, the
context manager that terminates on exit, and `AsyncResult`) and adds what the standard
pool lacks: per-task priority, timeout, retries, cost and affinity key (pool-wide
defaults, and per call through `pool.options(...)`), memory limits, CPU pinning, a
progress bar and statistics, and asyncio calls (`apply_awaitable`, `imap_async`,
`imap_unordered_async`, see `_aio`). It never hangs: a dead worker fails (or retries) its own
task only, and `terminate()` fails every unfinished result with `TaskCancelled`.

`ThreadPool` is the same pool on worker threads of this process (see `_threads`), a
drop-in for `multiprocessing.pool.ThreadPool`.

This module owns the standard pool's semantics; `_client` does the work.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import threading
import time
import warnings
import weakref
from collections.abc import Callable, Iterable
from typing import Any

from shoal import _client, _stream
from shoal._options import PoolSettings, TaskOptions, thread_settings
from shoal.errors import TaskCancelled

__all__ = ["Pool", "ThreadPool", "AsyncResult", "MapResult", "IMapIterator", "PoolOptions"]

INIT, RUN, CLOSE, TERMINATE = "INIT", "RUN", "CLOSE", "TERMINATE"


def _check_chunksize(chunksize) -> None:
    if chunksize is not None and (not isinstance(chunksize, int) or chunksize < 1):
        raise ValueError(f"chunksize must be an int of 1 or more, not {chunksize!r}")


class AsyncResult:
    """The result of `apply_async` (and base of `map_async`'s), as in multiprocessing."""

    def __init__(self, pool: Pool, callback=None, error_callback=None) -> None:
        self._pool: Pool | None = pool  # kept alive until the result is in, as the stdlib does
        self._core = pool._core
        # The pool's one condition, not an Event per result (a lock, a condition, a
        # deque and five bound methods: most of the cost of an apply_async, and of the
        # cycle collector's work on a loop of them).
        self._condition = pool._condition
        self._ready = False
        self._callback = callback
        self._error_callback = error_callback
        self._success = False
        self._value: Any = None

    def ready(self) -> bool:
        """Whether the call has completed."""
        return self._ready

    def successful(self) -> bool:
        """Whether the call completed without raising. ValueError if not ready."""
        if not self.ready():
            raise ValueError(f"{self!r} not ready")
        return self._success

    def wait(self, timeout: float | None = None) -> None:
        """Waits until the result is available or `timeout` seconds pass."""
        with self._core.interruptible(), self._condition:
            self._condition.wait_for(self.ready, timeout)

    def get(self, timeout: float | None = None):
        """The result, once it arrives; raises the call's exception if it raised, and
        multiprocessing.TimeoutError if `timeout` seconds pass first."""
        self.wait(timeout)
        if not self.ready():
            raise multiprocessing.TimeoutError
        if self._success:
            return self._value
        raise self._value

    def _shoal_outcome(self, ok: bool, value) -> None:
        """The outcome (dispatcher thread): callbacks first, then the waiters, like the
        stdlib; a callback that raises is reported and does not stop the waiters."""
        self._success, self._value = ok, value
        try:
            if ok and self._callback is not None:
                self._callback(value)
            elif not ok and self._error_callback is not None:
                self._error_callback(value)
        finally:
            with self._condition:
                self._ready = True
                self._condition.notify_all()
            self._pool = None

    def __repr__(self) -> str:
        state = "ready" if self.ready() else "pending"
        return f"<{type(self).__name__} {state}>"


class MapResult(AsyncResult):
    """The result of `map_async`/`starmap_async`: ready when every item is done; its
    value is the list of results, or the exception of the first failed item (lowest
    index)."""

    def __init__(self, pool: Pool, total: int, callback=None, error_callback=None) -> None:
        super().__init__(pool, callback, error_callback)
        self._lock = threading.Lock()
        self._values: list = [None] * total
        self._delivered = 0
        self._count: int | None = None
        self._error: tuple[int, BaseException] | None = None
        self._done = False

    def deliver(self, indices, values: list, failures: dict) -> None:
        with self._lock:
            if type(indices) is range:  # a chunk as it was cut: its items are contiguous
                self._values[indices.start : indices.stop] = values
            else:
                for index, value in zip(indices, values):
                    self._values[index] = value
            for position, error in failures.items():
                index = indices[position]
                if self._error is None or index < self._error[0]:
                    self._error = (index, error)
            self._delivered += len(values)
        self._finish_if_done()

    def end(self, count: int) -> None:
        with self._lock:
            self._count = count
        self._finish_if_done()

    def fail(self, error: BaseException) -> None:
        """The whole map failed before any item ran (its function cannot be pickled)."""
        with self._lock:
            self._error = (0, error)
            self._count = self._delivered
        self._finish_if_done()

    def _finish_if_done(self) -> None:
        with self._lock:
            total = len(self._values) if self._count is None else self._count
            if self._done or self._delivered < total:
                return
            self._done = True
            if self._error is None and self._delivered < len(self._values):
                self._error = (self._delivered, TaskCancelled("the map was stopped before its end"))
        if self._error is None:
            self._shoal_outcome(True, self._values)
        else:
            self._shoal_outcome(False, self._error[1])


class IMapIterator:
    """The iterator of `imap` (in order) and `imap_unordered` (in completion order).
    `next(timeout)` raises multiprocessing.TimeoutError when nothing came in time; an
    item whose call raised raises that exception, and iteration goes on after it."""

    def __init__(self, pool: Pool, results: _stream.Results) -> None:
        self._pool = pool
        self._core = pool._core
        self._results = results

    def __iter__(self) -> IMapIterator:
        return self

    def next(self, timeout: float | None = None):
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            outcome = self._results.take(deadline)
        except KeyboardInterrupt:
            self._core.terminate()  # as core.interruptible() does, without its cost per item
            raise
        if outcome is None:
            raise multiprocessing.TimeoutError
        ok, value = outcome
        if ok:
            return value
        raise value

    __next__ = next

    def __del__(self) -> None:
        # Nobody can read the rest: stop feeding and cancel what has not started.
        results = getattr(self, "_results", None)
        if results is not None and results.stream is not None and not results.finished:
            try:
                results.stream.stop()
            except Exception:
                pass


class _Submitting:
    """The submitting half of the API, shared by `Pool` and its `options(...)` views."""

    _core: _client.Core
    _options: TaskOptions

    @property
    def _owner(self) -> Pool:
        """The pool these calls go to: itself, or the one a view was made from. (A
        property: an attribute holding itself would keep a dropped pool alive until
        the cycle collector runs, and its workers with it.)"""
        return self  # type: ignore[return-value]

    def options(self, *, priority=..., timeout=..., retries=..., cost=..., key=...) -> PoolOptions:
        """A view of this pool whose calls use other task options; the others are kept.

            pool.options(priority=10, timeout=2.5).map(f, xs)
            urgent = pool.options(priority=10); urgent.apply_async(g, (x,))

        - priority (int): higher runs first; FIFO within a priority.
        - timeout (seconds or None): a call running longer is killed with its worker and
          raises TaskTimeout. Adaptive map chunks then hold one item each; with an
          explicit chunksize, a chunk may take timeout x its length.
        - retries (int): extra attempts after a worker crash, hang or memory kill.
        - cost (seconds or None): a duration hint; longer tasks start first.
        - key (str or None): affinity; calls with the same key prefer the same worker.
        The view shares the pool: closing or terminating is done on the pool itself."""
        changes = {
            name: value
            for name, value in dict(
                priority=priority, timeout=timeout, retries=retries, cost=cost, key=key
            ).items()
            if value is not ...
        }
        return PoolOptions(self._owner, self._options.replace(**changes))

    def apply(self, func: Callable, args: Iterable = (), kwds: dict | None = None):
        """func(*args, **kwds) in a worker; waits for and returns its result."""
        return self.apply_async(func, args, kwds).get()

    def apply_async(
        self,
        func: Callable,
        args: Iterable = (),
        kwds: dict | None = None,
        callback=None,
        error_callback=None,
    ) -> AsyncResult:
        """func(*args, **kwds) in a worker; returns an AsyncResult at once. `callback`
        gets the result, `error_callback` the exception, in the pool's result thread."""
        self._owner._check_running()
        result = AsyncResult(self._owner, callback, error_callback)
        try:
            self._core.submit_call(
                func, tuple(args), dict(kwds) if kwds else None, self._options, result
            )
        except RuntimeError:  # the engine closed between the check above and now
            raise ValueError("Pool not running") from None
        return result

    def map(self, func: Callable, iterable: Iterable, chunksize: int | None = None) -> list:
        """[func(x) for x in iterable], in order, computed in the workers. Without
        `chunksize`, items are batched adaptively: single items at first, then chunks
        sized from the measured time per item (a few ms each), so tiny calls cost little
        and long ones are never batched together."""
        return self._map_async(func, iterable, False, chunksize, None, None).get()

    def map_async(
        self,
        func: Callable,
        iterable: Iterable,
        chunksize: int | None = None,
        callback=None,
        error_callback=None,
    ) -> MapResult:
        """Like `map`, returning a MapResult at once."""
        return self._map_async(func, iterable, False, chunksize, callback, error_callback)

    def starmap(
        self, func: Callable, iterable: Iterable[Iterable], chunksize: int | None = None
    ) -> list:
        """[func(*args) for args in iterable], in order (chunking as in `map`)."""
        return self._map_async(func, iterable, True, chunksize, None, None).get()

    def starmap_async(
        self,
        func: Callable,
        iterable: Iterable[Iterable],
        chunksize: int | None = None,
        callback=None,
        error_callback=None,
    ) -> MapResult:
        """Like `starmap`, returning a MapResult at once."""
        return self._map_async(func, iterable, True, chunksize, callback, error_callback)

    def imap(
        self, func: Callable, iterable: Iterable, chunksize: int | None = None
    ) -> IMapIterator:
        """An iterator of func(x) for x in iterable, in order. The input is consumed
        lazily, a bounded window ahead of the reader (all of it once the pool is closed).
        Without `chunksize`, chunks adapt as in `map`; chunksize=1 sends single calls.
        An input that raises fails the item in its place and ends the iteration; with a
        chunksize over 1, the chunk it cut short does not run, as in multiprocessing."""
        return self._imap(func, iterable, chunksize, ordered=True)

    def imap_unordered(
        self, func: Callable, iterable: Iterable, chunksize: int | None = None
    ) -> IMapIterator:
        """Like `imap`, yielding results as they complete."""
        return self._imap(func, iterable, chunksize, ordered=False)

    # ----- asyncio -----

    def apply_awaitable(self, func: Callable, args: Iterable = (), kwds: dict | None = None):
        """func(*args, **kwds) in a worker, awaited from a coroutine:
        `await pool.apply_awaitable(f, (x,))` gives its result or raises its exception.
        No thread waits for it: the result reaches the running event loop from the
        pool's result thread. Cancelling the awaiting task (or the returned asyncio
        future) withdraws the call if no worker has it yet; one that started runs to
        its end, its outcome dropped. RuntimeError outside a running event loop."""
        from shoal import _aio

        loop = _aio.running_loop()
        self._owner._check_running()
        try:
            return _aio.submit(
                loop, self._core, func, tuple(args), dict(kwds) if kwds else None, self._options
            )
        except RuntimeError:  # the engine closed between the check above and now
            raise ValueError("Pool not running") from None

    def imap_async(self, func: Callable, iterable: Iterable, chunksize: int | None = None):
        """`imap` for asyncio: `async for result in pool.imap_async(f, xs)`, results in
        order, delivered to the running event loop without a waiting thread (chunks and
        the lazy input as in `imap`). An item whose call raised raises its exception, and
        iteration goes on after it. Cancelling the reading task, `await it.aclose()` or
        dropping the iterator stops the map: what no worker has is cancelled."""
        return self._imap_async(func, iterable, chunksize, ordered=True)

    def imap_unordered_async(
        self, func: Callable, iterable: Iterable, chunksize: int | None = None
    ):
        """Like `imap_async`, yielding results as they complete."""
        return self._imap_async(func, iterable, chunksize, ordered=False)

    def _imap_async(self, func, iterable, chunksize, ordered: bool):
        from shoal import _aio

        results = _aio.AsyncResults(ordered, _aio.running_loop())
        self._feed(func, iterable, chunksize, results)
        return _aio.AsyncMapIterator(results)

    # ----- the machinery -----

    def _chunker(
        self, chunksize: int | None, total: int | None, probe: bool = False
    ) -> _stream.Chunker:
        if chunksize is None and self._options.timeout is not None:
            chunksize = 1  # each call gets its own timeout
        if self._core.recording:
            # Each call is stored on its own, with its own status, attempts, result or
            # traceback, and found again on its own by key: a chunk stored as one task
            # would show its failed items as succeeded, and replay them on resume.
            chunksize = 1
        workers = self._core.workers
        limit = math.ceil(total / (4 * workers)) if total else 1024
        return _stream.Chunker(chunksize, limit, workers if probe else None)

    def _map_async(self, func, iterable, star, chunksize, callback, error_callback) -> MapResult:
        self._owner._check_running()
        _check_chunksize(chunksize)
        if not hasattr(iterable, "__len__"):
            iterable = list(iterable)
        total = len(iterable)
        result = MapResult(self._owner, total, callback, error_callback)
        if total == 0:
            result.end(0)
            return result
        chunker = self._chunker(chunksize, total, probe=True)
        stream = _stream.Stream(
            self._core,
            func,
            iterable,
            star=star,
            chunker=chunker,
            options=self._options,
            sink=result,
            window=None if chunker.fixed else _stream.window(self._core.workers, None),
            backpressure=False,
            total=total,
        )
        try:
            stream.start()
        except Exception as exc:  # the function cannot be pickled: the result says so
            result.fail(exc)
        return result

    def _imap(self, func, iterable, chunksize, ordered: bool) -> IMapIterator:
        results = _stream.Results(ordered)
        self._feed(func, iterable, chunksize, results)
        return IMapIterator(self._owner, results)

    def _feed(self, func, iterable, chunksize, results: _stream.Results) -> None:
        """Starts the stream of an imap-like call, whose outcomes go to `results`."""
        self._owner._check_running()
        _check_chunksize(chunksize)
        total = len(iterable) if hasattr(iterable, "__len__") else None
        chunker = self._chunker(chunksize, total)
        stream = _stream.Stream(
            self._core,
            func,
            iterable,
            star=False,
            chunker=chunker,
            options=self._options,
            sink=results,
            window=_stream.window(self._core.workers, chunker.fixed),
            backpressure=True,
            total=total,
        )
        results.stream = stream
        try:
            stream.start()
        except Exception as exc:
            _stream.fail_items(results, (0,), exc)
            results.end(1)


class Pool(_Submitting):
    """A pool of worker processes, with the API of multiprocessing.Pool.

    Pool(processes=None, initializer=None, initargs=(), maxtasksperchild=None,
         context=None, *, min_processes=None, idle_timeout=None, priority=0, timeout=None, retries=1, cost=None, key=None,
         memory_limit=None, cpu_affinity=None, max_memory_per_child=None,
         heartbeat=1.0, heartbeat_timeout=30.0, progress=False, store=None)

    - processes: worker count (default: the CPUs this process may use); with
      min_processes or idle_timeout, the most workers of an elastic pool.
    - initializer(*initargs) runs once in each worker before its tasks. If it raises,
      every task fails with InitializerError (workers are not respawned in a loop).
    - maxtasksperchild: a worker is replaced after this many tasks (a chunk is one).
    - context: accepted for compatibility and ignored: workers are always fresh
      interpreters (no fork of this process).
    Keyword-only extras:
    - min_processes, idle_timeout: an elastic pool. It starts min_processes workers
      (default 1 when only idle_timeout is given), adds one for each call waiting while
      fewer than `processes` run, and retires a worker idle for idle_timeout seconds,
      down to min_processes (never, without idle_timeout). Neither given: a fixed pool.
    - priority, timeout, retries, cost, key: defaults for every call (see `options`);
      with a store, a pool-wide key makes the whole job resumable.
    - memory_limit: bytes or a size like "512M" per worker; past it the task fails with
      MemoryLimitExceeded (after `retries`) and the worker is replaced.
    - cpu_affinity: True pins worker k to the k-th CPU this process may use; a list of
      CPU numbers pins worker k to cpus[k % len(cpus)].
    - max_memory_per_child: a worker whose resident memory grew past this (bytes or
      "1G") is replaced between two tasks.
    - heartbeat, heartbeat_timeout: seconds between worker heartbeats, and silence after
      which a worker that uses no CPU either is declared hung, killed, and its task
      retried.
    - progress: a progress bar on stderr (calls done/submitted, rate, time left).
    - store: a SQLite file (the CLI's store) where every call is recorded (a map then
      sends one call per task, whatever its chunksize); a call with a `key` that
      already succeeded there with the same function and arguments returns the stored
      result without running.

    Exiting the `with` block terminates the pool, as multiprocessing's does; call
    `close()` and `join()` first to wait for the work submitted. A pool dropped while
    running is terminated too, with a ResourceWarning, as multiprocessing's is.
    """

    def __init__(
        self,
        processes: int | None = None,
        initializer: Callable | None = None,
        initargs: Iterable = (),
        maxtasksperchild: int | None = None,
        context: Any = None,
        *,
        min_processes: int | None = None,
        idle_timeout: float | None = None,
        priority: int = 0,
        timeout: float | None = None,
        retries: int = 1,
        cost: float | None = None,
        key: str | None = None,
        memory_limit: int | str | None = None,
        cpu_affinity: bool | list[int] | None = None,
        max_memory_per_child: int | str | None = None,
        heartbeat: float = 1.0,
        heartbeat_timeout: float = 30.0,
        progress: bool = False,
        store: str | None = None,
    ) -> None:
        self._state = INIT
        settings = PoolSettings(
            workers=processes,
            workers_name="processes",
            min_workers=min_processes,
            min_workers_name="min_processes",
            idle_timeout=idle_timeout,
            initializer=initializer,
            initargs=initargs,
            max_tasks=maxtasksperchild,
            max_tasks_name="maxtasksperchild",
            defaults=TaskOptions(priority, timeout, retries, cost, key),
            memory_limit=memory_limit,
            cpu_affinity=cpu_affinity,
            max_memory_per_child=max_memory_per_child,
            heartbeat=heartbeat,
            heartbeat_timeout=heartbeat_timeout,
            progress=progress,
            store=store,
        )
        self._start(settings)

    def _start(self, settings: PoolSettings) -> None:
        self._processes = settings.workers
        self._core = _client.Core(settings)
        self._condition = threading.Condition()  # shared by its results (see AsyncResult)
        self._options = settings.defaults
        # Dropped without terminate(): terminate then (the stdlib's finalizer does too).
        self._finalizer = weakref.finalize(self, self._core.terminate)
        self._state = RUN

    def __del__(self, _warn=warnings.warn) -> None:
        # What multiprocessing's Pool says (CPython 3.11), so that filters written for
        # it match: a running pool dropped is a leak. It is terminated all the same.
        if getattr(self, "_state", None) == RUN:
            _warn(f"unclosed running multiprocessing pool {self!r}", ResourceWarning, source=self)

    def _check_running(self) -> None:
        if self._state != RUN:
            raise ValueError("Pool not running")

    def close(self) -> None:
        """No more tasks; the workers exit once the submitted ones are done."""
        if self._state == RUN:
            self._state = CLOSE
            self._core.close()

    def terminate(self) -> None:
        """Stops the workers at once; unfinished results fail with TaskCancelled. Returns
        once the workers are gone and the store (with `store=`) has every outcome, as
        multiprocessing's terminate() returns once its workers are joined (from a
        callback it cannot wait for its own thread, and returns at once)."""
        self._state = TERMINATE
        self._core.terminate()
        self._core.join(_client.TERMINATE_GRACE + 1)

    def join(self) -> None:
        """Waits for the workers to exit; call close() or terminate() first."""
        if self._state == RUN:
            raise ValueError("Pool is still running")
        with self._core.interruptible():
            self._core.join()

    def resize(self, n: int) -> None:
        """Resizes the pool to `n` workers now, as `shoal jobs` does (an elastic pool:
        `n` becomes its most, its min_processes no higher). Workers taken away finish
        the calls they have, then exit: no running call is killed. Returns once applied.
        ValueError for a bad `n` (not an int, below 1, past the memory limit's budget)
        or a pool that is not running."""
        self._check_running()
        self._core.resize(n)
        self._processes = self._core.workers

    def stats(self) -> _client.Stats:
        """Per-worker statistics (tasks, busy time, mean and p95 duration, restarts,
        memory) and call counts; `print(pool.stats())` shows a table."""
        return self._core.stats()

    def __enter__(self) -> Pool:
        self._check_running()
        return self

    def __exit__(self, *exc_info) -> None:
        self.terminate()

    def __reduce__(self):
        raise NotImplementedError("pool objects cannot be passed between processes or pickled")

    def __repr__(self) -> str:
        return f"<shoal.{type(self).__name__} state={self._state} processes={self._processes}>"


class ThreadPool(Pool):
    """A pool of worker threads of this process, with the API of
    multiprocessing.pool.ThreadPool, scheduled by shoal's engine as a process pool is:
    priorities, cost, keys, per-call options, timeouts, progress, stats(), a store with
    keyed resume, resize and elastic size.

    ThreadPool(processes=None, initializer=None, initargs=(), *, min_processes=None,
               idle_timeout=None, priority=0, timeout=None, retries=1, cost=None,
               key=None, progress=False, store=None)

    - processes: thread count (default: os.cpu_count(), as multiprocessing's).
    - initializer(*initargs) runs once in each worker thread (not pickled).
    The keyword-only extras are as for shoal.Pool. Functions, arguments and results
    are pickled as for processes (the workers speak the same protocol): an argument
    that cannot be pickled fails its call with PicklingError.

    A thread cannot be killed: a call past its `timeout` fails with TaskTimeout at the
    deadline and its slot gets a fresh thread, while the old thread runs the call to
    its end in the background (`stats().stragglers` counts those still running);
    terminate() likewise stops waiting for running calls rather than stopping them.
    """

    def __init__(
        self,
        processes: int | None = None,
        initializer: Callable | None = None,
        initargs: Iterable = (),
        *,
        min_processes: int | None = None,
        idle_timeout: float | None = None,
        priority: int = 0,
        timeout: float | None = None,
        retries: int = 1,
        cost: float | None = None,
        key: str | None = None,
        progress: bool = False,
        store: str | None = None,
    ) -> None:
        self._state = INIT
        self._start(
            thread_settings(
                (os.cpu_count() or 1) if processes is None else processes,
                "processes",
                "min_processes",
                min_workers=min_processes,
                idle_timeout=idle_timeout,
                initializer=initializer,
                initargs=initargs,
                defaults=TaskOptions(priority, timeout, retries, cost, key),
                progress=progress,
                store=store,
            )
        )


class PoolOptions(_Submitting):
    """A view of a Pool with other task options (made by `Pool.options`): it submits to
    the same workers; closing and joining are done on the pool."""

    def __init__(self, pool: Pool, options: TaskOptions) -> None:
        self._of = pool
        self._core = pool._core
        self._options = options

    @property
    def _owner(self) -> Pool:
        return self._of

    def __repr__(self) -> str:
        return f"<shoal.PoolOptions of {self._owner!r}: {self._options!r}>"
