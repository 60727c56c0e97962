"""`shoal.Store`: steer a live run from any process that can open its store, as the
`shoal cancel`, `pause`, `unpause` and `jobs` commands do.

Each call writes a request into the store and waits until the run has taken it (a live
`shoal run`, or a pool with a store, notices a request within about 100 ms); it returns
what the run made of it. A pool's run takes pause, unpause and cancel (a call a worker
already runs is left to finish; the run's cancel terminates the pool), and `set_jobs`
sets its number of workers (the ones taken away finish their calls, then exit).
A request that cannot apply raises `shoal.ControlRefused` (a `ValueError`) and writes
nothing; one the run does not take within `wait` seconds raises `shoal.ControlNotTaken`
(a `TimeoutError`). A store that cannot be opened raises `shoal.StoreError`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from shoal._engine import Store as _Store

__all__ = ["Store"]


class Store:
    """A shoal store (the SQLite file of `shoal run --store`, or of a pool's `store=`),
    opened to steer the runs recorded in it. It must exist: nothing is created."""

    def __init__(self, path: str | os.PathLike[str], *, wait: float = 5.0) -> None:
        self._store = _Store(os.fspath(path))
        self._wait = wait

    def cancel(self, run: int, tasks: Iterable[int] | None = None) -> list[str]:
        """Cancels the whole run (as a first Ctrl-C would: nothing more starts, running
        tasks are stopped, the run ends `interrupted`), or only `tasks`: a queued one
        never starts, a running one is stopped; either ends `cancelled` and the rest of
        the run goes on. Returns what the run made of each request."""
        requests = [("cancel", None)] if tasks is None else [("cancel", int(t)) for t in tasks]
        if not requests:
            raise ValueError("tasks is empty: name at least one task, or give None for the run")
        return self._store.request(run, requests, self._wait)

    def pause(self, run: int) -> str:
        """Starts no new task in the run until `unpause`; running tasks go on."""
        return self._store.request(run, [("pause", None)], self._wait)[0]

    def unpause(self, run: int) -> str:
        """Starts tasks again in a paused run."""
        return self._store.request(run, [("unpause", None)], self._wait)[0]

    def set_jobs(self, run: int, jobs: int) -> str:
        """Runs `jobs` tasks at once from now (1 to 4096): fewer lets the running ones
        finish and starts none on the slots taken away; more starts work at once."""
        return self._store.request(run, [("jobs", int(jobs))], self._wait)[0]
