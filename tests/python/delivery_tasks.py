"""Functions the delivery tests (test_delivery.py) run in worker processes: workers
that die at a chosen moment, results that fail to arrive, tasks that wait for the
caller to have seen another result. (A module apart from tasks.py, for the same
reason: workers import it by name.)"""

from __future__ import annotations

import os
import signal
import time


def kill_self_once(marker_path, value):
    """Kills its worker the first time (the marker file does not exist yet), then
    returns `value`."""
    if not os.path.exists(marker_path):
        open(marker_path, "w").close()
        os.kill(os.getpid(), signal.SIGKILL)
    return value


def die_once_on(marker_path, bad, x):
    """x; item `bad` kills its worker the first time it runs."""
    if x == bad:
        kill_self_once(marker_path, None)
    return x


def fail_on(bad, x):
    """x; the items in `bad` raise ValueError."""
    if x in bad:
        raise ValueError(f"item {x} is bad")
    return x


def fail_3_and_13(x):
    """x; items 3 and 13 raise ValueError."""
    return fail_on((3, 13), x)


def kill_self(_data=None):
    os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(10)


def _explode(kind):
    raise {"exit": SystemExit(4), "interrupt": KeyboardInterrupt("on arrival")}[kind]


class ExplodesOnArrival:
    """Pickles in the worker; unpickling it (in the caller) raises SystemExit or
    KeyboardInterrupt, as any `__reduce__` may."""

    def __init__(self, kind):
        self.kind = kind

    def __reduce__(self):
        return _explode, (self.kind,)


class ExplodingError(Exception):
    """An exception whose unpickling in the caller raises SystemExit."""

    def __reduce__(self):
        return _explode, ("exit",)


def returns_exploding(kind="exit"):
    return ExplodesOnArrival(kind)


def raises_exploding():
    raise ExplodingError("never arrives whole")


def exploding_on(bad, x):
    """x; item `bad` returns a value that cannot arrive."""
    return ExplodesOnArrival("exit") if x == bad else x


def items_then_raise(items, bad_at):
    """Yields `items`, raising ValueError in place of the one at index `bad_at`."""
    for index, item in enumerate(items):
        if index == bad_at:
            raise ValueError(f"the input failed at {index}")
        yield item
