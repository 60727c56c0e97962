"""Functions and classes for test_compat: importable by name, so that the standard
library's spawn pools, which pickle by reference, run the very same code as shoal's."""

from __future__ import annotations

import multiprocessing
import os
import signal


def identity(x=None, **kwargs):
    return x


class Holder:
    """An object whose bound method is submitted as a task's function."""

    def __init__(self, offset: int) -> None:
        self.offset = offset

    def add(self, x):
        return x + self.offset


class Token:
    """An argument that can be watched with a weak reference."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __reduce__(self):
        return (Token, (self.n,))


def value_of(token, other=None):
    return token.n + (other.n if other is not None else 0)


def adder(token):
    """A closure over `token`: a function pickled by value."""
    return lambda x: x + token.n


def kill_self(_=None):
    os.kill(os.getpid(), signal.SIGKILL)


def failing_initializer():
    raise OSError("no model here")


class NotShareable(Exception):
    """What RefusesPickling's pickling raises: no pickler knows this type."""


class RefusesPickling:
    def __reduce__(self):
        raise NotShareable("this object stays in its process")


# What the initializer was given, in each worker.
SHARED: dict = {}


def share(queue, lock, value, array, event):
    SHARED.update(queue=queue, lock=lock, value=value, array=array, event=event)


def use_shared(x):
    """Uses each object the initializer was given; returns the event's state."""
    with SHARED["lock"]:
        SHARED["value"].value += x
    with SHARED["array"].get_lock():
        SHARED["array"][x] = x * 10
    SHARED["queue"].put(x)
    return SHARED["event"].is_set()


def share_proxy(mapping):
    SHARED["mapping"] = mapping


def put_in_shared_proxy(key):
    SHARED["mapping"][key] = os.getpid()
    return key


def put_in_proxies(mapping, queue, key):
    """Writes through two Manager proxies passed as arguments."""
    mapping[key] = key * 2
    queue.put(key)
    return len(mapping) >= 1


def authkey(_=None) -> bytes:
    return bytes(multiprocessing.current_process().authkey)


def import_multiprocessing_first():
    """An initializer that loads multiprocessing before any task does."""
    import multiprocessing.managers  # noqa: F401
