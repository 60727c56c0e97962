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


def wait_for(path, limit=10.0):
    """Waits until `path` exists (the caller made it), `limit` seconds at most: True
    if it came."""
    deadline = time.monotonic() + limit
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


def wait_for_runs(started_path, count, limit=30.0):
    """Marks that it started (creates `started_path`), then waits until `count` Runs
    wait whole in its worker's socket, behind it (seen by peeking: they stay there):
    True if they came within `limit` seconds."""
    import socket
    import struct

    open(started_path, "w").close()
    channels = []
    for name in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{name}").startswith("socket:"):
                channels.append(int(name))
        except OSError:
            continue  # the listing's own descriptor, gone
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        for fd in channels:
            with socket.socket(fileno=os.dup(fd)) as sock:
                try:
                    data = sock.recv(1 << 16, socket.MSG_PEEK | socket.MSG_DONTWAIT)
                except BlockingIOError:
                    data = b""
            runs, at = 0, 0
            while at + 5 <= len(data):
                (length,) = struct.unpack_from("<I", data, at)
                if at + 4 + length > len(data):
                    break
                runs += data[at + 4] == 0x83  # a whole Run frame (docs/protocol.md)
                at += 4 + length
            if runs >= count:
                return True
        time.sleep(0.005)
    return False


def inc_or_nap(x):
    """x + 1; every 50th call takes 3 ms first (long enough to have held Results sent
    by the worker's flusher)."""
    if x % 50 == 0:
        time.sleep(0.003)
    return x + 1


def items_then_raise(items, bad_at):
    """Yields `items`, raising ValueError in place of the one at index `bad_at`."""
    for index, item in enumerate(items):
        if index == bad_at:
            raise ValueError(f"the input failed at {index}")
        yield item


def items_then_mark_and_raise(items, bad_at, marker):
    """As items_then_raise, creating `marker` just before it raises."""
    for index, item in enumerate(items):
        if index == bad_at:
            open(marker, "w").close()
            raise ValueError(f"the input failed at {index}")
        yield item


def once_file_exists(path, x):
    """x, once `path` exists (10 s at most)."""
    wait_for(path)
    return x


def _arrive_unless(marker, value):
    if os.path.exists(marker):
        raise ValueError("this result's format is no longer understood here")
    return value


class ArrivesUnless:
    """A result that unpickles in the caller only while `marker` does not exist (a
    stored result whose format the caller no longer reads)."""

    def __init__(self, marker, value):
        self.marker, self.value = marker, value

    def __reduce__(self):
        return _arrive_unless, (self.marker, self.value)


def result_unless(marker, x):
    return ArrivesUnless(marker, x * 10)
