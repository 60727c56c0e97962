"""Task outcomes: a final event of the engine turned into what the caller gets.

`call_outcome` reads a single call's event, `chunk_outcomes` a chunk's (the payloads of
`_payload`); every status but "succeeded" becomes its exception through `errors.from_event`.
Shared by the core (`_client`) and the streams (`_stream`).
"""

from __future__ import annotations

import functools
import hashlib
import pickle
import re
import reprlib

from shoal import errors


# A memory address in a repr ("<function f at 0x7f...>"): it differs from one process
# to the next, so it is left out of a stored label (see `label`).
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


class _Shown(reprlib.Repr):
    """reprlib's short reprs, with addresses left out before anything is cut."""

    def repr_instance(self, obj, level):
        try:
            text = _ADDRESS.sub("", repr(obj))
        except Exception:
            text = f"<{type(obj).__name__} instance>"
        if len(text) > self.maxother:
            head = max(0, (self.maxother - 3) // 2)
            tail = max(0, self.maxother - 3 - head)
            text = text[:head] + "..." + text[len(text) - tail :]
        return text


_shown = _Shown().repr


def describe(fn) -> str:
    """A function's name for messages."""
    if isinstance(fn, functools.partial):
        return f"functools.partial({_arguments(describe(fn.func), fn.args, fn.keywords)})"
    name = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None)
    if name is None:
        return repr(fn)
    module = getattr(fn, "__module__", None)
    return f"{module}.{name}" if module else name


def label(fn, args: tuple, kwargs: dict | None = None) -> str:
    """How a call is shown in the store, e.g. `tasks.inc(41)`: short (reprlib cuts long
    arguments), so two calls can look alike; see `stored_label`. The same call made by
    another process is shown the same: memory addresses are left out, or a job resumed
    in a new process would never find its stored results."""
    return f"{_ADDRESS.sub('', describe(fn))}({_arguments(None, args, kwargs)})"


def _arguments(first: str | None, args: tuple, kwargs: dict | None) -> str:
    parts = [] if first is None else [first]
    parts += [_shown(a) for a in args]
    parts += [f"{k}={_shown(v)}" for k, v in (kwargs or {}).items()]
    return ", ".join(parts)


def stored_label(shown: str, payload: bytes) -> str:
    """The label a task is stored under: how it is shown, then a digest of its payload
    (its function and arguments as pickled). A stored result is found by key and label,
    so it is reused only for the very same call, never for one that merely looks alike
    (`f([0, 1, ...])` of two different lists, or a lambda changed since)."""
    return f"{shown} #{hashlib.blake2b(payload, digest_size=8).hexdigest()}"


def _unpickling_error(exc: BaseException, what: str = "return value") -> errors.PicklingError:
    error = errors.PicklingError(
        f"the task's {what} could not be unpickled here: {type(exc).__name__}: {exc}"
    )
    error.__cause__ = exc
    return error


def call_outcome(event, refuse=None) -> tuple[bool, object]:
    """The outcome of a CALL task. Whatever unpickling it raises, SystemExit and
    KeyboardInterrupt included (a `__reduce__` may raise anything), is that task's
    failure: every result is settled, none is left pending. `refuse(task, reason)` (the
    engine's, with a store) then records the task as failed: the store must not say it
    succeeded, nor hand its result to a keyed call again."""
    status = event[1]
    if status == "succeeded":
        try:
            return True, pickle.loads(event[2])
        except BaseException as exc:
            error = _unpickling_error(exc)
            if refuse is not None:
                refuse(event[0], str(error))
            return False, error
    return False, _failure(status, event[2], event[3], event[4])


def chunk_outcomes(event, count: int) -> tuple[float | None, list, dict]:
    """A chunk task's outcome: the worker's seconds for it (None if it failed whole), the
    `count` return values (None where an item failed) and {position: exception} of the
    items that failed. As for a call, whatever unpickling raises fails the items it
    concerns."""
    _, status, payload, message, attempts = event[:5]
    if status == "succeeded":
        try:
            elapsed, values, failures = pickle.loads(payload)
            if len(values) != count:
                raise ValueError(f"{len(values)} results for a chunk of {count} calls")
        except BaseException as exc:
            return (
                None,
                [None] * count,
                {position: _unpickling_error(exc) for position in range(count)},
            )
        return elapsed, values, {
            position: _remote(exc_bytes, tb) for position, (exc_bytes, tb) in failures.items()
        }
    # One exception object per item: each is raised on its own and grows its own traceback.
    return (
        None,
        [None] * count,
        {position: _failure(status, payload, message, attempts) for position in range(count)},
    )


def _remote(exc_bytes: bytes, tb: str) -> BaseException:
    try:
        return errors.remote_exception(exc_bytes, tb)
    except BaseException as exc:
        return _unpickling_error(exc, "exception")


def _failure(status: str, payload: bytes, message: str, attempts: int) -> BaseException:
    try:
        return errors.from_event(status, payload, message, attempts)
    except BaseException as exc:
        return _unpickling_error(exc, "exception")
