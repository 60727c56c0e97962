"""Sharing multiprocessing's objects with shoal's workers, as its spawn start method does.

Workers are fresh interpreters started by the engine, as spawn's children are. What
spawn gives a child, they get here:
- the caller's authentication key (`multiprocessing.current_process().authkey`), which
  a Manager's proxies (and multiprocessing's resource sharer) authenticate with. It
  travels in Welcome.config; a worker adopts it when it first imports multiprocessing
  (`adopt_authkey`), so a worker that never uses multiprocessing does not pay for it.
- an inheritance context for the initializer and its arguments, where a Queue, Lock,
  Value or Array may be pickled (elsewhere they refuse: "should only be shared between
  processes through inheritance"). `dumps_initializer` pickles them as spawn pickles a
  Process: with multiprocessing's reducers and a spawning "popen" of ours. Semaphores
  travel by name; a descriptor (a Queue's pipe, a Value's shared memory) is duplicated
  here, kept open by the caller while the engine runs, and inherited by every worker at
  the same number (the engine's `pass_fds`), where the object is rebuilt on it.
Task arguments get no such context, as with multiprocessing's pools: a Queue passed to
a task is refused (a Manager's queue works).

Workers import this module at start: it imports nothing but `sys` at its top.
"""

from __future__ import annotations

import sys


class InheritedFd:
    """A descriptor a worker inherited at the number it has in the caller: what
    multiprocessing's reducers pickle for a descriptor while spawning (`DupFd`)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def detach(self) -> int:
        return self.fd


class _Spawning:
    """What multiprocessing's reducers ask of the process being spawned (its Popen):
    descriptors to hand to the child. Each is duplicated (close-on-exec, above the
    standard streams) and kept for the engine to pass to every worker."""

    def __init__(self) -> None:
        self.fds: list[int] = []

    def duplicate_for_child(self, fd: int) -> int:
        import fcntl

        duplicate = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 3)
        self.fds.append(duplicate)
        return duplicate

    def DupFd(self, fd: int) -> InheritedFd:  # (multiprocessing's name)
        return InheritedFd(fd)


_PICKLER: type | None = None


def _pickler() -> type:
    """shoal's cloudpickle Pickler with multiprocessing's reducers as well (a
    Connection, a socket, shared memory, shared ctypes), as spawn's ForkingPickler has;
    cloudpickle's own come first."""
    global _PICKLER
    if _PICKLER is None:
        from collections import ChainMap
        from multiprocessing.reduction import ForkingPickler

        from shoal import _payload

        base = _payload.pickler_class()

        class Pickler(base):
            # _extra_reducers: the reducers multiprocessing registers, some as objects
            # are made (shared ctypes); the ChainMap sees them as they come.
            dispatch_table = ChainMap(base.dispatch_table, ForkingPickler._extra_reducers)

        _PICKLER = Pickler
    return _PICKLER


def dumps_initializer(initializer, initargs) -> tuple[bytes, list[int]]:
    """Pickles `(initializer, initargs)` in an inheritance context; returns the bytes and
    the descriptors every worker must inherit (the caller owns them: close them once no
    worker can start any more). Raises the pickler's error."""
    from multiprocessing import context

    from shoal import _payload

    spawning = _Spawning()
    previous = context.get_spawning_popen()
    context.set_spawning_popen(spawning)
    try:
        data = _payload.cloudpickle_dumps((initializer, initargs), _pickler())
    except BaseException:
        close_fds(spawning.fds)
        raise
    finally:
        context.set_spawning_popen(previous)
    return data, spawning.fds


def close_fds(fds: list[int]) -> None:
    import os

    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass
    fds.clear()


def caller_authkey() -> bytes:
    """This process's multiprocessing authkey, for its workers."""
    import multiprocessing

    return bytes(multiprocessing.current_process().authkey)


def adopt_authkey(key: bytes) -> None:
    """Makes `key` this process's multiprocessing authkey: now if multiprocessing is
    loaded, else right after `multiprocessing.process` is, before anything can use it."""
    process = sys.modules.get("multiprocessing.process")
    if process is not None:
        process.current_process().authkey = key
    else:
        sys.meta_path.insert(0, _AuthkeyOnImport(key))


class _AuthkeyOnImport:
    """A meta path finder that sets the authkey once `multiprocessing.process` has been
    executed (it makes the process object, with a random key), then steps aside."""

    def __init__(self, key: bytes) -> None:
        self.key = key

    def find_spec(self, name, path=None, target=None):
        if name != "multiprocessing.process":
            return None
        sys.meta_path.remove(self)
        for finder in sys.meta_path:
            find = getattr(finder, "find_spec", None)
            spec = find(name, path, target) if find is not None else None
            if spec is not None:
                break
        else:
            return None
        loader = spec.loader
        execute = getattr(loader, "exec_module", None)
        if execute is None:
            return spec
        key = self.key

        def exec_module(module) -> None:
            del loader.exec_module  # this loader's own method again
            execute(module)
            module.current_process().authkey = key

        loader.exec_module = exec_module
        return spec
