"""Thread workers: the workers of `shoal.ThreadPool` and `shoal.ThreadPoolExecutor`.

The engine schedules a thread pool exactly as a process pool (one policy: priorities,
cost, keys, timeouts, retries, the store, resize), over the same protocol: only a
worker "place" starts differently. Where it would spawn a process, it makes a
socketpair and calls `ThreadWorkers.start(worker_id, fd)`, which starts a daemon thread
of this process serving the worker protocol on `fd` (`_worker.serve_thread`).

A thread cannot be killed. When the engine kills a thread worker (its task's timeout,
terminate) it cuts the channel: the task's future fails at once (`TaskTimeout`), the
slot gets a fresh thread, and the old thread runs its call to its end, then finds the
channel gone and ends. Until then it is a straggler: `stragglers()` counts them (a live
thread whose channel the engine shut down).

Lock: `_lock` guards `_live` and is held while a thread closes its descriptor, so that
`stragglers()` never polls a descriptor number that was closed and reused.
"""

from __future__ import annotations

import os
import select
import threading

from shoal import _worker

# A channel the engine shut down: the peer hung up (or shut its side down).
_CUT = select.POLLHUP | getattr(select, "POLLRDHUP", 0)


class ThreadWorkers:
    """The thread workers of one pool, and what each runs first (the initializer)."""

    def __init__(self, initializer=None, initargs: tuple = ()) -> None:
        self._initializer = None
        if initializer is not None:
            self._initializer = lambda: initializer(*initargs)
        self._lock = threading.Lock()
        self._live: dict[int, int] = {}  # worker id -> its channel's descriptor

    def start(self, worker_id: int, fd: int) -> None:
        """Starts worker `worker_id` on `fd`, which it owns (the engine's driver thread
        calls this)."""
        thread = threading.Thread(
            target=self._serve,
            args=(worker_id, fd),
            name=f"shoal-thread-worker-{worker_id}",
            daemon=True,
        )
        with self._lock:
            self._live[worker_id] = fd
        try:
            thread.start()
        except BaseException:
            with self._lock:
                self._live.pop(worker_id, None)
                os.close(fd)
            raise

    def _serve(self, worker_id: int, fd: int) -> None:
        try:
            _worker.serve_thread(fd, self._initializer)
        finally:
            with self._lock:
                self._live.pop(worker_id, None)
                os.close(fd)

    def stragglers(self) -> int:
        """Threads still running a call whose channel the engine cut (a timeout)."""
        poller = select.poll()
        with self._lock:
            for fd in self._live.values():
                poller.register(fd, _CUT)
            return len(poller.poll(0))
