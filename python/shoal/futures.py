"""`shoal.ProcessPoolExecutor`: a drop-in for `concurrent.futures.ProcessPoolExecutor` on
shoal's engine.

`submit` returns a real `concurrent.futures.Future`, so `as_completed`, `wait` and
asyncio's `run_in_executor`/`wrap_future` work as usual. Unlike the standard executor it
never breaks: a dead worker fails (or retries) its own task only, the executor stays
usable, and a hung task can be given a timeout. `map` consumes its input lazily, a
bounded window ahead of its reader. Per-task priority, timeout, retries, cost and
affinity key come from the executor's defaults or from `executor.options(...)`.
`submit_async` is the asyncio-native submit: awaited without a thread per call (see
`_aio`).

`ThreadPoolExecutor` is the same executor on worker threads of this process (see
`_threads`), for `concurrent.futures.ThreadPoolExecutor`.

This module owns the executor's semantics and the futures' states; `_client` does the
work.
"""

from __future__ import annotations

import concurrent.futures
import os
import threading
import time
import weakref
from concurrent.futures import _base
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import asyncio

from shoal import _client, _stream, errors
from shoal._options import PoolSettings, TaskOptions, thread_settings

__all__ = ["ProcessPoolExecutor", "ThreadPoolExecutor", "ExecutorOptions"]

_DONE = (_base.CANCELLED, _base.CANCELLED_AND_NOTIFIED, _base.FINISHED)


class _Future(concurrent.futures.Future):
    """A Future whose `cancel()` also withdraws its task from the engine, and whose
    `result()`/`exception()` terminate the executor on Ctrl-C while they wait.

    The engine does not tell when a task starts, so the future stays PENDING until its
    outcome arrives; `cancel()` succeeds until then. A task that a worker had already
    taken still runs to its end, and its outcome is dropped."""

    def __init__(self, condition: threading.Condition) -> None:
        # What Future.__init__ sets, with the executor's one condition instead of a new
        # Condition (a lock, a deque and five bound methods) per future: that halved the
        # cost of a future's life and much of the cycle collector's work on a loop of
        # submits. Other futures' ends wake a waiter too, so result() and exception()
        # wait for their own (tests/python check these are Future's attributes).
        self._condition = condition
        self._state = _base.PENDING
        self._result = None
        self._exception = None
        self._waiters: list = []
        self._done_callbacks: list = []
        self._shoal_core: _client.Core | None = None
        self._shoal_task: int | None = None

    def _shoal_outcome(self, ok: bool, value) -> None:
        """The task's outcome (the submitter's thread, when it failed to pickle): a batch
        of one."""
        _Future._shoal_outcomes([(self, ok, value)])

    @staticmethod
    def _shoal_outcomes(outcomes: list) -> None:
        """The outcomes of a batch of one executor's futures, [(future, ok, value)]
        (dispatcher thread; a core serves one executor, whose futures share its
        condition). What set_running_or_notify_cancel and set_result (or set_exception)
        do, for all of them in one hold of that condition with one notify, so no
        cancel() slips in between and the dispatcher spends a third of the time per
        result; then the done callbacks, in order."""
        condition = outcomes[0][0]._condition
        called = []
        with condition:
            for future, ok, value in outcomes:
                try:
                    if future._settle(ok, value) and future._done_callbacks:
                        called.append(future)
                except BaseException:  # never leave the rest of the batch unsettled
                    _client.report_handler_error()
            condition.notify_all()
        for future in called:
            try:
                future._invoke_callbacks()
            except BaseException:  # (the stdlib lets SystemExit out) the rest still run
                _client.report_handler_error()

    def _settle(self, ok: bool, value) -> bool:
        """Sets the outcome, the condition held; False when a cancel() came first."""
        state = self._state
        if state == _base.CANCELLED:
            self.set_running_or_notify_cancel()  # tells the waiters of the cancel
            return False
        if state != _base.PENDING and state != _base.RUNNING:
            return False  # cancel() won: this is the engine's word that it dropped the task
        # (RUNNING already when a cancel() found a worker had it.)
        if ok:
            self._result = value
        else:
            self._exception = value
        self._state = _base.FINISHED
        for waiter in self._waiters:  # as_completed and wait
            if ok:
                waiter.add_result(self)
            else:
                waiter.add_exception(self)
        return True

    def _wait_done(self, timeout: float | None) -> None:
        """Waits until this future is done, or the timeout passes."""
        with self._condition:
            self._condition.wait_for(lambda: self._state in _DONE, timeout)

    def result(self, timeout: float | None = None):
        try:
            self._wait_done(timeout)
            return super().result(0)
        except KeyboardInterrupt as interrupt:
            if interrupt is not self._exception:  # Ctrl-C, not the task's own answer
                self._interrupted()
            raise

    def exception(self, timeout: float | None = None):
        try:
            self._wait_done(timeout)
            return super().exception(0)
        except KeyboardInterrupt:
            self._interrupted()
            raise

    def _interrupted(self) -> None:
        # Ctrl-C while waiting: stop every worker, so that nothing is left running.
        if self._shoal_core is not None:
            self._shoal_core.terminate()

    def cancel(self) -> bool:
        """As the stdlib: False once a worker has the task (it runs to its end and the
        future then shows RUNNING), True if it was cancelled in time."""
        with self._condition:
            if self._state != _base.PENDING:
                return super().cancel()
        core, task = self._shoal_core, self._shoal_task
        if task is not None and core is not None and not core.cancel(task):
            with self._condition:
                if self._state == _base.PENDING:
                    self._state = _base.RUNNING  # what set_running_or_notify_cancel does
                    return False
            return super().cancel()
        if not super().cancel():
            return False
        with self._condition:
            # Waiters (as_completed, wait) learn of a cancel only from this call.
            if self._state == _base.CANCELLED:
                self.set_running_or_notify_cancel()
        return True


class _MapIterator:
    """The iterator `Executor.map` returns: results in order; raises TimeoutError when
    the map's deadline passes and the exception of a call that raised, which ends it.
    Closing it (or dropping it) stops the map and cancels what has not started."""

    def __init__(
        self, core: _client.Core, results: _stream.Results, deadline: float | None
    ) -> None:
        self._core = core
        self._results = results
        self._deadline = deadline
        self._closed = False

    def __iter__(self) -> _MapIterator:
        return self

    def __next__(self):
        if self._closed:
            raise StopIteration
        try:
            outcome = self._results.take(self._deadline)
        except StopIteration:
            self._closed = True
            raise
        except KeyboardInterrupt:
            self._core.terminate()  # as core.interruptible() does, without its cost per item
            raise
        if outcome is None:
            self.close()
            raise concurrent.futures.TimeoutError()
        ok, value = outcome
        if ok:
            return value
        self.close()
        raise value

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            if self._results.stream is not None:
                self._results.stream.stop()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass


class _Submitting:
    """The submitting half of the API, shared by the executor and its `options` views."""

    _core: _client.Core
    _options: TaskOptions

    @property
    def _owner(self) -> ProcessPoolExecutor:
        """The executor these calls go to: itself, or the one a view was made from. (A
        property: an attribute holding itself would keep a dropped executor alive until
        the cycle collector runs, and its workers with it.)"""
        return self  # type: ignore[return-value]

    def options(
        self, *, priority=..., timeout=..., retries=..., cost=..., key=...
    ) -> ExecutorOptions:
        """A view of this executor whose tasks use other task options; the others are
        kept. It is an Executor too (for run_in_executor):

            executor.options(timeout=5).submit(fn, x)
            loop.run_in_executor(executor.options(priority=10), fn, x)

        - priority (int): higher runs first; FIFO within a priority.
        - timeout (seconds or None): a task running longer is killed with its worker and
          raises shoal.TaskTimeout (a TimeoutError); the executor stays usable.
        - retries (int): extra attempts after a worker crash, hang or memory kill.
        - cost (seconds or None): a duration hint; longer tasks start first.
        - key (str or None): affinity; tasks with the same key prefer the same worker.
        Shutting down a view does nothing: shut down the executor itself."""
        changes = {
            name: value
            for name, value in dict(
                priority=priority, timeout=timeout, retries=retries, cost=cost, key=key
            ).items()
            if value is not ...
        }
        return ExecutorOptions(self._owner, self._options.replace(**changes))

    def submit(self, fn: Callable, /, *args, **kwargs) -> concurrent.futures.Future:
        """Schedules fn(*args, **kwargs); returns its Future. Arguments that cannot be
        pickled fail that future only (shoal.PicklingError)."""
        owner = self._owner
        if owner._shutdown:
            raise RuntimeError("cannot schedule new futures after shutdown")
        future = _Future(owner._condition)
        core = self._core
        try:
            task = core.submit_call(fn, args, kwargs, self._options, future)
        except RuntimeError:  # the engine closed between the check above and now
            raise RuntimeError("cannot schedule new futures after shutdown") from None
        future._shoal_core = core
        future._shoal_task = task
        return future

    def submit_async(self, fn: Callable, /, *args, **kwargs) -> asyncio.Future:
        """Schedules fn(*args, **kwargs) from a coroutine: `await
        executor.submit_async(fn, x)` gives its result or raises its exception (with the
        remote traceback, as `submit(...).result()`). No thread waits for it: the
        result reaches the running event loop from the executor's result thread.
        Cancelling the awaiting task (or the returned future) withdraws the call if no
        worker has it yet; one that started runs to its end, its outcome dropped.
        RuntimeError outside a running event loop, or after shutdown."""
        owner = self._owner
        if owner._shutdown:
            raise RuntimeError("cannot schedule new futures after shutdown")
        from shoal import _aio

        loop = _aio.running_loop()
        try:
            return _aio.submit(loop, self._core, fn, args, kwargs, self._options)
        except RuntimeError:  # the engine closed between the check above and now
            raise RuntimeError("cannot schedule new futures after shutdown") from None

    def map(
        self, fn: Callable, *iterables: Iterable, timeout: float | None = None, chunksize: int = 1
    ) -> Iterator:
        """fn(*args) for args in zip(*iterables), in order. The input is consumed lazily,
        a bounded window ahead of the reader; `timeout` is a deadline for the whole map,
        counted from this call (TimeoutError); `chunksize` batches that many calls per
        task (with a store, every call is a task of its own, see shoal.Pool)."""
        owner = self._owner
        if owner._shutdown:
            raise RuntimeError("cannot schedule new futures after shutdown")
        if not isinstance(chunksize, int) or chunksize < 1:
            raise ValueError("chunksize must be >= 1.")
        deadline = None if timeout is None else time.monotonic() + timeout
        core = self._core
        if core.recording:
            chunksize = 1  # each call stored, and found again, on its own (see shoal.Pool)
        results = _stream.Results(ordered=True)
        stream = _stream.Stream(
            core,
            fn,
            zip(*iterables),
            star=True,
            chunker=_stream.Chunker(chunksize, chunksize),
            options=self._options,
            sink=results,
            window=_stream.window(core.workers, chunksize),
            backpressure=True,
        )
        results.stream = stream
        try:
            stream.start()
        except Exception as exc:  # the function cannot be pickled: the first result says so
            _stream.fail_items(results, (0,), exc)
            results.end(1)
        return _MapIterator(core, results, deadline)


class ProcessPoolExecutor(_Submitting, concurrent.futures.Executor):
    """An Executor running calls in worker processes, with the API of
    concurrent.futures.ProcessPoolExecutor.

    ProcessPoolExecutor(max_workers=None, mp_context=None, initializer=None,
                        initargs=(), *, max_tasks_per_child=None,
                        min_workers=None, idle_timeout=None, priority=0,
                        timeout=None, retries=1, cost=None, key=None,
                        memory_limit=None, cpu_affinity=None,
                        max_memory_per_child=None, heartbeat=1.0,
                        heartbeat_timeout=30.0, progress=False, store=None)

    - max_workers: worker count (default: the CPUs this process may use).
    - mp_context: accepted for compatibility and ignored: workers are always fresh
      interpreters (no fork of this process).
    - initializer(*initargs) runs once in each worker. If it raises, every task fails
      with shoal.InitializerError (workers are not respawned in a loop).
    - max_tasks_per_child: a worker is replaced after this many tasks.
    - min_workers, idle_timeout: an elastic pool of at most max_workers (see
      shoal.Pool's min_processes); neither given, a fixed pool of max_workers.
    The other keywords are as for shoal.Pool (see its doc): task defaults (priority,
    timeout, retries, cost, key), memory_limit,
    cpu_affinity, max_memory_per_child, heartbeats, progress, store.
    """

    def __init__(
        self,
        max_workers: int | None = None,
        mp_context: Any = None,
        initializer: Callable | None = None,
        initargs: Iterable = (),
        *,
        max_tasks_per_child: int | None = None,
        min_workers: int | None = None,
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
        settings = PoolSettings(
            workers=max_workers,
            workers_name="max_workers",
            min_workers=min_workers,
            idle_timeout=idle_timeout,
            initializer=initializer,
            initargs=initargs,
            max_tasks=max_tasks_per_child,
            max_tasks_name="max_tasks_per_child",
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
        self._max_workers = settings.workers
        self._core = _client.Core(settings)
        self._core.finish_at_exit = True
        self._options = settings.defaults
        self._shutdown = False
        self._condition = threading.Condition()  # shared by its futures (see _Future)
        # Dropped without shutdown: its queued work still runs, then the workers exit,
        # like the standard executor (interpreter exit terminates, see _client).
        weakref.finalize(self, self._core.close).atexit = False

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """No more tasks. `cancel_futures` cancels those not started; `wait` waits until
        every other one is done and the workers have exited."""
        self._shutdown = True
        if cancel_futures:
            for future in self._core.waiting_calls():
                if isinstance(future, _Future):
                    future.cancel()
                else:  # submit_async's: cancelled in its loop's thread
                    future._shoal_cancel_soon()
            # And the items of maps no worker has yet: they end cancelled, as the
            # standard library's map futures would.
            self._core.stop_streams()
        self._core.close()
        if wait:
            with self._core.interruptible():
                self._core.join()

    def __exit__(self, kind, value, tb) -> bool:
        ctrl_c = kind is not None and issubclass(kind, KeyboardInterrupt)
        if ctrl_c and not isinstance(value.__cause__, errors.RemoteTraceback):  # not a task's
            # Ctrl-C in the block: stop every worker rather than wait for the work
            # (the standard executor's workers get the SIGINT too, in its terminal).
            self._shutdown = True
            self._core.terminate()
            self._core.join()
        else:
            self.shutdown(wait=True)
        return False

    def resize(self, n: int) -> None:
        """Resizes the pool to `n` workers now (see shoal.Pool.resize). ValueError for a
        bad `n` or an executor that was shut down."""
        if self._shutdown:
            raise ValueError("cannot resize an executor after shutdown")
        self._core.resize(n)
        self._max_workers = self._core.workers

    def stats(self) -> _client.Stats:
        """Per-worker statistics and call counts (see shoal.Pool.stats)."""
        return self._core.stats()

    def __repr__(self) -> str:
        state = "shutdown" if self._shutdown else "running"
        return f"<shoal.{type(self).__name__} {state} max_workers={self._max_workers}>"


class ThreadPoolExecutor(ProcessPoolExecutor):
    """An Executor running calls in worker threads of this process, with the API of
    concurrent.futures.ThreadPoolExecutor, scheduled by shoal's engine as the process
    executor is (priorities, cost, keys, `options(...)`, timeouts, progress, stats(), a
    store with keyed resume, resize and elastic size).

    ThreadPoolExecutor(max_workers=None, thread_name_prefix="", initializer=None,
                       initargs=(), *, min_workers=None, idle_timeout=None,
                       priority=0, timeout=None, retries=1, cost=None, key=None,
                       progress=False, store=None)

    - max_workers: thread count (default: min(32, os.cpu_count() + 4), as the stdlib's).
    - thread_name_prefix: accepted for compatibility; the threads are named
      shoal-thread-worker-N.
    - initializer(*initargs) runs once in each worker thread (not pickled).
    Functions, arguments and results are pickled as for processes (the workers speak
    the same protocol): an argument that cannot be pickled fails its future with
    PicklingError. A call past its `timeout` fails with TaskTimeout at the deadline
    and frees its slot, while its thread, which cannot be killed, runs on to the end of
    the call (`stats().stragglers` counts those still running).
    """

    def __init__(
        self,
        max_workers: int | None = None,
        thread_name_prefix: str = "",
        initializer: Callable | None = None,
        initargs: Iterable = (),
        *,
        min_workers: int | None = None,
        idle_timeout: float | None = None,
        priority: int = 0,
        timeout: float | None = None,
        retries: int = 1,
        cost: float | None = None,
        key: str | None = None,
        progress: bool = False,
        store: str | None = None,
    ) -> None:
        self._start(
            thread_settings(
                min(32, (os.cpu_count() or 1) + 4) if max_workers is None else max_workers,
                "max_workers",
                "min_workers",
                min_workers=min_workers,
                idle_timeout=idle_timeout,
                initializer=initializer,
                initargs=initargs,
                defaults=TaskOptions(priority, timeout, retries, cost, key),
                progress=progress,
                store=store,
            )
        )


class ExecutorOptions(_Submitting, concurrent.futures.Executor):
    """A view of a ProcessPoolExecutor with other task options (made by `options`)."""

    def __init__(self, executor: ProcessPoolExecutor, options: TaskOptions) -> None:
        self._of = executor
        self._core = executor._core
        self._options = options

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Does nothing: the view does not own the workers."""

    @property
    def _owner(self) -> ProcessPoolExecutor:
        return self._of

    def __repr__(self) -> str:
        return f"<shoal.ExecutorOptions of {self._owner!r}: {self._options!r}>"
