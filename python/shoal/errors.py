"""The exceptions of shoal's Python package, and the one place that maps a task's final
event from the engine to the exception its caller sees (`from_event`).

Every kind of failure has its own class under `ShoalError`, which also derives from the
standard exception a caller may already catch: `TaskTimeout` is a `TimeoutError`,
`MemoryLimitExceeded` a `MemoryError`, `TaskCancelled` a
`concurrent.futures.CancelledError`, `PicklingError` a `pickle.PicklingError`,
`ControlRefused` a `ValueError`, `ControlNotTaken` a `TimeoutError`,
`WorkerCrashed` and `InitializerError` a `concurrent.futures.process.BrokenProcessPool`
(what the standard executor raises when a worker dies or its initializer fails). An
exception raised by the task itself is re-raised as its own type, with the worker's
formatted traceback attached as its `__cause__` (a `RemoteTraceback`), as
`concurrent.futures` does; so is an exception a pickler raised for an argument, unless
`PicklingError` is already of its type (`pickling_error`).

Workers import this module only when a task fails in a way they must describe (an
unpicklable result or exception), never at start.
"""

from __future__ import annotations

import pickle
import re
from concurrent.futures import CancelledError
from concurrent.futures.process import BrokenProcessPool

__all__ = [
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
    "ControlRefused",
    "ControlNotTaken",
    "RemoteTraceback",
    "from_event",
    "pickling_error",
    "remote_exception",
]


class ShoalError(Exception):
    """Base class of every error shoal raises for a task or a pool."""


class TaskTimeout(ShoalError, TimeoutError):
    """The task ran past its timeout. Its worker (and the worker's process group) was
    killed and replaced; the pool stays usable. Timeouts are never retried."""


class WorkerCrashed(ShoalError, BrokenProcessPool):
    """The task's worker died (killed by a signal, the OOM killer, a segfault, an exit)
    or stopped answering, on every attempt the task's `retries` allowed. A
    `BrokenProcessPool`, as the standard executor raises then (though only this task
    failed: the pool stays usable).

    Attributes: `reason` (the engine's words), `signal` (the signal number when a signal
    killed the worker, else None), `exit_status` (when the worker exited, else None),
    `attempts`."""

    def __init__(
        self,
        message: str,
        *,
        reason: str = "",
        signal: int | None = None,
        exit_status: int | None = None,
        attempts: int = 0,
    ) -> None:
        super().__init__(message)
        self.reason = reason
        self.signal = signal
        self.exit_status = exit_status
        self.attempts = attempts


class MemoryLimitExceeded(ShoalError, MemoryError):
    """The task went past the pool's per-worker `memory_limit`: its worker was killed
    by the OOM killer (a memory cgroup), or an allocation failed in it (RLIMIT_AS, where
    no cgroup can be had); either way the worker is replaced."""


class InitializerError(ShoalError, BrokenProcessPool):
    """The pool's initializer raised in a worker. The pool does not respawn workers that
    would fail the same way: every task not yet finished fails with this error. The
    initializer's own exception is the `__cause__`. A `BrokenProcessPool` (so a
    `concurrent.futures.BrokenExecutor`), as the standard executor raises then."""


class TaskCancelled(ShoalError, CancelledError):
    """The task was cancelled before it ran, or the pool was terminated first."""


class PicklingError(ShoalError, pickle.PicklingError, TypeError):
    """A task's function, arguments or return value could not be pickled (or its return
    value could not be unpickled). Only that task fails. A TypeError too, as the
    standard library's executor raises for what it cannot pickle."""


class RemoteError(ShoalError):
    """A task raised an exception that could not travel as itself (it cannot be pickled
    or unpickled); the message names its type and text, the `__cause__` holds the
    worker's traceback."""


class EngineError(ShoalError):
    """The engine could not run the task for a reason of its own: a payload too large for
    a frame, a worker program that keeps failing to start, a broken protocol. The message
    says which."""


class StoreError(ShoalError, OSError):
    """The store given as `store=` cannot be used: its directory is missing, the file is
    not a shoal store or is of another schema version, it is damaged, or a write to it
    failed. Raised when the pool is made; nothing has run."""


class ControlRefused(ShoalError, ValueError):
    """A request to steer a run (`shoal.Store`) that cannot apply: no such run or task,
    a run that is not live any more (finished, interrupted, died), a task that ended.
    Nothing was asked."""


class ControlNotTaken(ShoalError, TimeoutError):
    """The process running the run did not take a request within the wait: it takes no
    requests (an older shoal's run). The request stays in the store."""


class StoreWarning(RuntimeWarning):
    """The store stopped taking writes while the pool ran (a full disk, an I/O error).
    The pool goes on and every result still reaches its caller; what the store could not
    record is written when the pool ends if the store takes it then, and its run is left
    `interrupted` (or `died`) otherwise, never `finished`."""


class RemoteTraceback(Exception):
    """The worker's formatted traceback, attached as the `__cause__` of a task's exception
    so that it is printed with the caller's own traceback."""

    def __init__(self, tb: str) -> None:
        super().__init__(tb)
        self.tb = tb

    def __str__(self) -> str:
        return '\n"""\n' + self.tb + '"""'


def pickling_error(what: str, exc: Exception) -> Exception:
    """What the caller gets when `what` ("the arguments of f") could not be pickled and
    the pickler raised `exc`: a `PicklingError` naming both (`exc` its cause) when that
    is also of `exc`'s type, as it is for what picklers raise (a TypeError, a
    pickle.PicklingError); else `exc` itself, as the standard library's pools let it
    through, so that `except` clauses written for them (a RuntimeError of an object
    shared only through inheritance, a custom error of a `__reduce__`) still match."""
    if issubclass(PicklingError, type(exc)):
        error = PicklingError(f"{what} could not be pickled: {type(exc).__name__}: {exc}")
        error.__cause__ = exc
        return error
    if hasattr(exc, "add_note"):  # Python 3.11+
        exc.add_note(f"(shoal: {what} could not be pickled)")
    return exc


def remote_exception(payload: bytes, tb: str) -> BaseException:
    """The exception a worker sent (pickled in `payload`), with its traceback attached."""
    try:
        exc = pickle.loads(payload)
    except Exception as why:
        last = tb.strip().splitlines()[-1] if tb.strip() else "an exception"
        exc = RemoteError(f"{last} (it could not be unpickled here: {type(why).__name__}: {why})")
    if not isinstance(exc, BaseException):
        exc = RemoteError(f"the worker sent {exc!r} as an exception")
    if tb:
        exc.__cause__ = RemoteTraceback(tb)
    return exc


_SIGNAL = re.compile(r"signal (\d+)")
_STATUS = re.compile(r"exited with status (\d+)")


def from_event(status: str, payload: bytes, message: str, attempts: int) -> BaseException:
    """The exception for a task that ended with `status` (every status but "succeeded"; a
    failed task's is what failed: "raised", "init_failed" or "refused"), from its event's
    payload, message and number of attempts (`shoal._engine.Engine.events`)."""
    if status == "raised":
        return remote_exception(payload, message)
    if status == "crashed":
        signal = _SIGNAL.search(message)
        exit_status = _STATUS.search(message)
        tries = f"on each of its {attempts} attempts" if attempts > 1 else "and was not retried"
        return WorkerCrashed(
            f"the task's worker crashed {tries}: {message}",
            reason=message,
            signal=int(signal.group(1)) if signal else None,
            exit_status=int(exit_status.group(1)) if exit_status else None,
            attempts=attempts,
        )
    # The engine's messages are whole clauses ("the task ran past its timeout of 2 s"):
    # they are kept as they are and only given what the caller needs to know besides.
    if status == "timed_out":
        return TaskTimeout(
            f"{message or 'the task ran past its timeout'}; its worker was killed and replaced"
        )
    if status == "memory_exceeded":
        return MemoryLimitExceeded(
            f"{message or 'the worker went past its memory limit'} (the pool's memory_limit); "
            "the worker was replaced"
        )
    if status == "cancelled":
        return TaskCancelled(message or "the task was cancelled")
    if status == "init_failed":
        error = InitializerError(
            "the pool's initializer raised in a worker, so no task can run in this pool "
            "(the worker's traceback follows as the cause)"
        )
        error.__cause__ = remote_exception(payload, message)
        return error
    if status == "refused":
        return EngineError(message)
    return EngineError(f"the engine ended the task with an unknown status {status!r}: {message}")
