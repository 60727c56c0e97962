"""The core shared by shoal's two front ends (`shoal.pool`, `shoal.futures`).

It owns one `shoal._engine.Engine` and everything between the front ends and it:
- encoding: a task's function is cloudpickled once and its bytes reused (cached by
  identity for single calls, once per call for map-like calls); arguments go through
  plain pickle protocol 5 (`_payload` defines the bytes); the initializer and its
  arguments as spawn pickles them, with the descriptors the workers inherit
  (`_sharing`);
- the dispatcher thread, which waits on `engine.events` (the GIL released) and hands
  each task's final event to the handler registered when it was submitted: futures are
  resolved and callbacks run there (asyncio futures are handed to their loop, `_aio`);
- the registry of streams (`_stream.Stream`: map-like calls fed in chunks by threads of
  their own);
- the lifecycle: close (deferred until every stream has seen its last chunk done),
  terminate, join, Ctrl-C while waiting (terminate, then re-raise), and interpreter
  exit (an executor's work runs to its end, then every live core is terminated).

Threads and locks:
- `Core._lock` guards `_pending` and the close state. It is held around `engine.submit`
  so the dispatcher cannot meet an event whose handler is not registered yet. A
  stream's condition may be held while taking it, never the other way round (see
  `_stream`).
- Handlers run in the dispatcher thread without any lock of the core held; a stream's
  chunks of one batch of events are handed over together.

Never hang: every submitted task gets exactly one event from the engine (cancelled ones
included); when the engine has ended, the dispatcher drains the last events and fails
whatever handler is left. Items a stream never submitted are failed by the stream
itself when it stops.
"""

from __future__ import annotations

import atexit
import itertools
import os
import pickle
import sys
import threading
import time
import traceback
import warnings
import weakref
from collections.abc import Callable

from shoal import _payload, _sharing, errors
from shoal._options import PoolSettings, TaskOptions, resize_count
from shoal._outcomes import call_outcome, describe, label, stored_label
from shoal._progress import ProgressBar
from shoal._stream import Stream, ChunkHandler
from shoal._threads import ThreadWorkers

# A worker is `python -c WORKER_CODE`: not `-m shoal._worker`, whose runpy imports
# (importlib.util, contextlib, warnings) cost a worker 3 ms of its start.
WORKER_CODE = "from shoal._worker import main; main()"

# Functions pickled per core, cached by identity. An entry holds only a weak reference
# to its function (a bound method holds its instance, a partial its arguments: they must
# be collectable once their tasks ended), and leaves the cache when the function dies,
# before its id can be given to another object.
FUNCTION_CACHE_SIZE = 256

# The dispatcher wakes at least this often (to notice the engine's end, and to redraw
# the progress bar).
IDLE_TICK = 0.5

# After terminate() the engine ends at once (it kills); past this many seconds the
# dispatcher stops waiting for it and fails what is left, so that no caller hangs on an
# engine that cannot end.
TERMINATE_GRACE = 10.0

_live_cores: weakref.WeakSet = weakref.WeakSet()


def worker_config(fds: list[int] | tuple = ()) -> bytes:
    """Welcome.config for every worker: the caller's import path, with relative entries
    made absolute (a worker's cwd is the caller's at spawn time, which may change); its
    multiprocessing authkey and the descriptors the workers inherit (see `_sharing`)."""
    cwd = os.getcwd()
    sys_path = [
        entry if os.path.isabs(entry) else os.path.abspath(os.path.join(cwd, entry))
        for entry in sys.path
    ]
    config = {"sys_path": sys_path, "authkey": _sharing.caller_authkey(), "fds": list(fds)}
    return pickle.dumps(config, _payload.PROTOCOL)


def _forgetter(functions: dict, key: int) -> Callable[[weakref.ref], None]:
    """The callback that drops a dead function's entry from a core's cache (see
    FUNCTION_CACHE_SIZE). It holds the cache, never the core."""

    def forget(ref: weakref.ref) -> None:
        entry = functions.get(key)
        if entry is not None and entry[0] is ref:
            functions.pop(key, None)

    return forget


def report_handler_error() -> None:
    """A callback of the user's raised in the dispatcher thread: say so, keep going."""
    try:
        sys.stderr.write("shoal: a callback raised in the result thread (ignored):\n")
        traceback.print_exc()
    except Exception:
        pass


# ---------------------------------------------------------------------------------------
# Statistics.


class WorkerStats:
    """One worker slot: `slot` (1..workers), `pid` of its current process (None if none),
    `tasks` run, `busy` seconds, `mean` and `p95` task seconds, `restarts` (processes
    started after the first: recycling, crashes, timeouts), `rss` bytes at the last
    heartbeat. A chunk of a map counts as one task."""

    __slots__ = ("slot", "pid", "tasks", "busy", "mean", "p95", "restarts", "rss")

    def __init__(self, slot, pid, tasks, busy, mean, p95, restarts, rss) -> None:
        self.slot, self.pid, self.tasks, self.busy = slot, pid, tasks, busy
        self.mean, self.p95, self.restarts, self.rss = mean, p95, restarts, rss

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__slots__)
        return f"WorkerStats({fields})"


class Stats:
    """A snapshot of a pool: `workers` (a list of WorkerStats); `calls` submitted and
    `calls_done` (function calls, each item of a map counting once); the engine's
    `tasks` submitted, `finished`, `running`, `queued` (a chunk is one task); for a
    thread pool, `stragglers`: threads still running a call that timed out (a thread
    cannot be killed; its slot has a fresh thread already)."""

    __slots__ = (
        "workers", "calls", "calls_done", "tasks", "finished", "running", "queued", "stragglers"
    )

    def __init__(self, raw: dict, calls: int, calls_done: int, stragglers: int = 0) -> None:
        self.workers = [
            WorkerStats(
                w["slot"],
                w["pid"] or None,
                w["tasks"],
                w["busy"],
                w["mean"],
                w["p95"],
                w["restarts"],
                w["rss"],
            )
            for w in raw["workers"]
        ]
        self.calls, self.calls_done = calls, calls_done
        self.tasks, self.finished = raw["submitted"], raw["finished"]
        self.running, self.queued = raw["running"], raw["queued"]
        self.stragglers = stragglers

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__slots__)
        return f"Stats({fields})"

    def __str__(self) -> str:
        lines = [
            f"calls: {self.calls_done}/{self.calls} done; engine tasks: {self.finished} "
            f"finished, {self.running} running, {self.queued} queued",
            f"{'slot':>4} {'pid':>8} {'tasks':>7} {'busy s':>8} {'mean ms':>8} "
            f"{'p95 ms':>8} {'restarts':>8} {'rss MiB':>8}",
        ]
        for w in self.workers:
            lines.append(
                f"{w.slot:>4} {w.pid or '-':>8} {w.tasks:>7} {w.busy:>8.2f} {w.mean * 1e3:>8.2f} "
                f"{w.p95 * 1e3:>8.2f} {w.restarts:>8} {w.rss / (1 << 20):>8.1f}"
            )
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------
# The core.


class Core:
    """One engine, its dispatcher, and the bookkeeping of the tasks in flight."""

    def __init__(self, settings: PoolSettings) -> None:
        from shoal._engine import Engine  # the extension: loaded by the caller only

        if not sys.executable:
            raise RuntimeError("sys.executable is empty: shoal cannot start Python workers")
        init = None
        # Descriptors of the initargs' multiprocessing objects, which every worker
        # inherits: open until the engine has ended (see _close_inherited).
        self._inherited: list[int] = []
        # Thread workers (see _threads) take the initializer as it is, not pickled:
        # Init only tells them when to run it.
        self.threads = None
        if settings.threads:
            self.threads = ThreadWorkers(settings.initializer, settings.initargs)
            if settings.initializer is not None:
                init = b""
        elif settings.initializer is not None:
            try:
                init, self._inherited = _sharing.dumps_initializer(
                    settings.initializer, settings.initargs
                )
            except Exception as exc:
                raise errors.pickling_error(
                    f"the initializer {describe(settings.initializer)} or its initargs", exc
                )
        self.workers = settings.workers
        try:
            self.engine = Engine(
                [sys.executable, "-c", WORKER_CODE],
                settings.workers,
                min_workers=settings.min_workers,
                idle_timeout=settings.idle_timeout,
                worker_config=b"" if self.threads else worker_config(self._inherited),
                init=init,
                pass_fds=self._inherited,
                max_tasks_per_worker=settings.max_tasks,
                recycle_memory=settings.recycle_memory,
                memory_limit=settings.memory_limit,
                cpus=settings.cpus,
                # A thread worker's silence says nothing of it (it is this process).
                heartbeat=0.0 if self.threads else settings.heartbeat,
                heartbeat_timeout=settings.heartbeat_timeout,
                store=settings.store,
                run_name=[os.path.basename(sys.executable), *sys.argv][:8],
                threads=self.threads.start if self.threads else None,
            )
        except BaseException:
            _sharing.close_fds(self._inherited)
            raise
        # With a store every task carries a label: how it is shown there, and (with
        # its key) how a stored result is found again.
        self.recording = settings.store is not None
        # What tells the store that a result the caller could not unpickle failed.
        self.refuse = self.engine.refused if self.recording else None
        self._store_path = settings.store
        # A child forked from the caller inherits this object (and its finalizers) but
        # neither the engine's thread nor the workers: only this process may stop them.
        self.owner_pid = os.getpid()
        # At interpreter exit: run what was submitted to its end (an executor, as the
        # standard library's does) rather than terminate (a Pool, as multiprocessing's).
        self.finish_at_exit = False
        # The error an interactive session last printed: only a newer KeyboardInterrupt
        # means that a Ctrl-C ended the script (see _end_live_cores).
        self.last_error_at_start = getattr(sys, "last_value", None)
        self._lock = threading.Lock()
        self._pending: dict[int, Callable[[tuple], None]] = {}
        self._streams: set[Stream] = set()
        self._closing = False  # the front end was closed: the engine closes after the streams
        self._engine_closed = False
        self._terminated_at: float | None = None
        self._functions: dict[int, tuple[weakref.ref, bytes]] = {}
        self.calls = 0  # written under _lock
        self.calls_done = 0  # written by the dispatcher only
        self._progress = ProgressBar() if settings.progress else None
        self._leftover_reason = "the engine ended without reporting this task"
        self._dispatcher = threading.Thread(
            target=self._dispatch, name="shoal-dispatcher", daemon=True
        )
        self._dispatcher.start()
        _live_cores.add(self)

    # ----- encoding -----

    def call_head(self, fn) -> bytes:
        """The start of a CALL payload of `fn` (`_payload.run_head`), made once per
        function object. Raises as `function_bytes_once`."""
        entry = self._functions.get(id(fn))
        if entry is not None and entry[0]() is fn:
            return entry[1]
        data = _payload.run_head(_payload.CALL, self.function_bytes_once(fn))
        functions = self._functions
        key = id(fn)
        try:
            ref = weakref.ref(fn, _forgetter(functions, key))
        except TypeError:
            return data  # not weakly referenceable (a __slots__ class): pickled every time
        if len(functions) >= FUNCTION_CACHE_SIZE:
            functions.pop(next(iter(functions)), None)
        functions[key] = (ref, data)
        return data

    @staticmethod
    def function_bytes_once(fn) -> bytes:
        """The function's pickle, not cached: for a map-like call, which pickles its
        function once for all its items. Raises `errors.pickling_error`'s exception."""
        try:
            return _payload.dumps_function(fn)
        except Exception as exc:
            raise errors.pickling_error(f"the function {describe(fn)}", exc)

    def encode_call(self, fn, args: tuple, kwargs: dict | None) -> bytes:
        """The Run payload of fn(*args, **kwargs). Raises `errors.pickling_error`'s
        exception."""
        head = self.call_head(fn)
        try:
            return head + _payload.dumps((args, kwargs or None))
        except Exception as exc:
            raise errors.pickling_error(f"the arguments of {describe(fn)}", exc)

    # ----- submitting -----

    def submit_call(
        self, fn, args: tuple, kwargs: dict | None, options: TaskOptions, target
    ) -> int | None:
        """Submits fn(*args, **kwargs); `target._shoal_outcome(ok, value)` gets its
        outcome, in the dispatcher thread. A call that cannot be pickled is delivered
        failed at once, in this thread, and None is returned instead of a task id.

        The target itself is what waits in `_pending` (a Future, an AsyncResult): no
        handler object or bound method per call, which the cycle collector would visit
        again and again on a loop of submits."""
        try:
            payload = self.encode_call(fn, args, kwargs)
        except Exception as exc:  # it cannot be pickled (see encode_call)
            target._shoal_outcome(False, exc)
            return None
        name = stored_label(label(fn, args, kwargs), payload) if self.recording else ""
        with self._lock:
            task = self.engine.submit(
                payload,
                options.priority,
                options.timeout,
                options.retries,
                options.cost,
                options.key,
                name,
            )
            self._pending[task] = target
            self.calls += 1
        return task

    def submit_tasks(
        self, payloads: list, options: TaskOptions, handlers: list, calls: int, labels=None
    ) -> int:
        """Submits tasks made elsewhere (a stream's chunks), each with its handler and,
        with a store, its label; returns the first id (they are consecutive)."""
        with self._lock:
            first = self.engine.submit_many(
                payloads,
                options.priority,
                options.timeout,
                options.retries,
                options.cost,
                options.key,
                labels if self.recording else None,
            )
            pending = self._pending
            for task, handler in zip(itertools.count(first), handlers):
                pending[task] = handler
            self.calls += calls
        return first

    def waiting_calls(self) -> list:
        """The targets of single calls not yet answered (see submit_call)."""
        with self._lock:
            return [t for t in self._pending.values() if type(t) is not ChunkHandler]

    def cancel(self, task: int) -> bool:
        """Cancels a task that no worker has yet (it then ends "cancelled") and says
        True; False when a worker has it (it runs to its end) or it has ended."""
        return self.engine.cancel(task)

    # ----- streams -----

    def add_stream(self, stream: Stream, calls: int) -> None:
        """Registers a stream, counting `calls` it will submit (for the progress bar)."""
        with self._lock:
            self._streams.add(stream)
            self.calls += calls

    def stream_done(self, stream: Stream, uncounted: int) -> None:
        """A stream has nothing more to submit (`uncounted` of the calls it was counted
        for never were): the engine may close if the front end is."""
        with self._lock:
            self.calls -= uncounted
            self._streams.discard(stream)
            if self._closing and not self._streams:
                self._close_engine()

    # ----- lifecycle -----

    def close(self) -> None:
        """No more calls from the front end. The engine closes (runs what is queued, then
        its workers exit) once every stream has nothing more to submit; streams stop
        waiting for their consumers, so that a join cannot wait on a reader."""
        if os.getpid() != self.owner_pid:
            return  # a forked child's copy: the workers are its parent's (see owner_pid)
        with self._lock:
            self._closing = True
            streams = list(self._streams)
            if not streams:
                self._close_engine()
        for stream in streams:
            stream.drain()

    def stop_streams(self) -> None:
        """Stops every map-like call: no more input is read, and what no worker has yet
        ends cancelled."""
        with self._lock:
            streams = list(self._streams)
        for stream in streams:
            stream.stop()

    def _close_engine(self) -> None:
        if not self._engine_closed:
            self._engine_closed = True
            self.engine.close()

    def terminate(self) -> None:
        """Kills every worker now; unfinished tasks end cancelled, streams stop."""
        if os.getpid() != self.owner_pid:
            return  # a forked child's copy: the workers are its parent's (see owner_pid)
        with self._lock:
            self._closing = self._engine_closed = True
            streams = list(self._streams)
            if self._terminated_at is None:
                self._terminated_at = time.monotonic()
        self.engine.terminate()
        for stream in streams:
            stream.stop()

    def join(self, timeout: float | None = None) -> bool:
        """Waits until the engine ended and every event was handled. From a callback (the
        dispatcher thread itself) it cannot wait for its own end: it returns False."""
        if threading.current_thread() is self._dispatcher:
            return False
        self._dispatcher.join(timeout)
        return not self._dispatcher.is_alive()

    def interruptible(self) -> _Interruptible:
        """`with core.interruptible(): wait...`: Ctrl-C while waiting terminates the pool,
        so that nothing is left running, and propagates."""
        return _Interruptible(self)

    def resize(self, n: int) -> None:
        """Resizes the pool to `n` workers (an elastic pool: its maximum); returns once
        the engine applied it. ValueError: a bad `n`, or the engine refused it."""
        n = resize_count(n)
        try:
            self.engine.resize(n)
        except ValueError as exc:
            raise ValueError(f"resize: n={n}: {exc}") from None
        self.workers = n

    def stats(self) -> Stats:
        stragglers = self.threads.stragglers() if self.threads else 0
        return Stats(self.engine.stats(), self.calls, self.calls_done, stragglers)

    # ----- the dispatcher thread -----

    def _dispatch(self) -> None:
        engine = self.engine
        progress = self._progress
        tick = min(IDLE_TICK, 0.2) if progress else IDLE_TICK
        store_ok = self.recording
        try:
            while True:
                events = engine.events(tick)
                if store_ok and (failure := engine.store_failure()) is not None:
                    store_ok = False
                    self._warn_store_failed(failure)
                if events:
                    self._handle(events)
                elif engine.join(0):
                    # Ended: what is left comes at once, then [] for good.
                    while events := engine.events(0):
                        self._handle(events)
                    break
                elif (
                    self._terminated_at is not None
                    and time.monotonic() - self._terminated_at > TERMINATE_GRACE
                ):
                    self._leftover_reason = (
                        f"the engine did not end within {TERMINATE_GRACE:g} s of terminate(); "
                        "this task's outcome is unknown"
                    )
                    break
                if progress is not None:
                    progress.update(self.calls_done, self.calls)
        finally:
            self._fail_leftovers()
            if engine.join(0):
                # Every outcome was handled (refusals included): the run's record ends.
                engine.close_record()
                if store_ok and (failure := engine.store_failure()) is not None:
                    self._warn_store_failed(failure)  # the writer fell behind, then failed
            self._close_inherited()
            if progress is not None:
                progress.update(self.calls_done, self.calls, final=True)

    def _warn_store_failed(self, failure: str) -> None:
        message = (
            f"shoal: the store {self._store_path} takes no more writes ({failure}); the "
            "pool goes on and every result reaches you, but the store records nothing more "
            "unless it takes writes again by the time the pool ends (its run is then left "
            "interrupted, never finished)"
        )
        try:
            warnings.warn(message, errors.StoreWarning, stacklevel=1)
        except Exception:
            # Warnings made errors (-W error): nothing here can raise to the caller, and
            # the dispatcher must go on, so it is said on stderr instead.
            try:
                sys.stderr.write(f"{message}\n")
            except Exception:
                pass

    def _close_inherited(self) -> None:
        """Closes the descriptors the workers inherit once no worker can start any more
        (left open if the engine has not ended: a worker might yet be started)."""
        if self._inherited and self.engine.join(0):
            _sharing.close_fds(self._inherited)

    def _handle(self, events: list) -> None:
        with self._lock:
            pop = self._pending.pop
            handlers = [pop(event[0], None) for event in events]
        # A stream's chunks are handed over together: one lock and one delivery per
        # stream and batch of events, not per event; so are single calls whose targets
        # take a batch (`_shoal_outcomes`: an executor's futures).
        streams: dict[Stream, list] = {}
        batches: dict[type, list] = {}
        refuse = self.refuse
        calls = 0
        for handler, event in zip(handlers, events):
            kind = type(handler)
            if kind is ChunkHandler:
                streams.setdefault(handler.stream, []).append((handler, event))
            elif handler is not None:  # a single call's target (see submit_call)
                calls += 1
                try:
                    if hasattr(kind, "_shoal_outcomes"):
                        batches.setdefault(kind, []).append((handler, *call_outcome(event, refuse)))
                    else:
                        handler._shoal_outcome(*call_outcome(event, refuse))
                except BaseException:
                    report_handler_error()
        for kind, outcomes in batches.items():
            try:
                kind._shoal_outcomes(outcomes)
            except BaseException:
                report_handler_error()
        self.calls_done += calls
        for stream, done in streams.items():
            try:
                stream.chunks_done(done)
            except BaseException:
                report_handler_error()

    def _fail_leftovers(self) -> None:
        """Whatever the engine never reported fails rather than waits forever."""
        with self._lock:
            leftovers = list(self._pending)
        message = self._leftover_reason
        self._handle([(task, "refused", b"", message, 0, 0, 0.0) for task in leftovers])


class _Interruptible:
    __slots__ = ("core",)

    def __init__(self, core: Core) -> None:
        self.core = core

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind, value, tb) -> None:
        if kind is not None and issubclass(kind, KeyboardInterrupt):
            self.core.terminate()


@atexit.register
def _end_live_cores() -> None:
    """At interpreter exit no worker outlives the caller. An executor's submitted work
    runs to its end first, as the standard library's executor does, unless a Ctrl-C
    ended the script (an unhandled KeyboardInterrupt, left in sys.last_value) or cuts
    the wait short; a Pool is terminated, as multiprocessing's is. The dispatchers,
    daemon threads, deliver the outcomes meanwhile."""
    cores = list(_live_cores)
    last = getattr(sys, "last_value", None)
    finishing = [
        core
        for core in cores
        if core.finish_at_exit
        and not (isinstance(last, KeyboardInterrupt) and last is not core.last_error_at_start)
    ]
    try:
        for core in finishing:
            core.close()
        for core in finishing:
            core.join()
    except KeyboardInterrupt:
        pass
    finally:
        for core in cores:
            core.terminate()
        for core in cores:
            if not core.join(2.0) and core.engine.join(1.0):
                # The result thread is still busy (a slow callback): its run's record
                # ends here, before the interpreter goes, or it would show `died`.
                core.engine.close_record()
