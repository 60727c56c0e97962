"""Functions and classes for test_compat: importable by name, so that the standard
library's spawn pools, which pickle by reference, run the very same code as shoal's."""

from __future__ import annotations

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
