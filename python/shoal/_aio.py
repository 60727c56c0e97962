"""asyncio fronts of the pools: awaitable single calls (`submit_async` of the executor
and of the pool) and async iterators of map-like calls (`Pool.imap_async`,
`Pool.imap_unordered_async`).

No thread waits for an asyncio caller. The dispatcher thread, which receives every
task's outcome (see `_client`), hands a batch of them to each event loop with one
`loop.call_soon_threadsafe`; the loop's own thread then sets the asyncio futures (or
wakes the iterator's reader). Everything that touches an asyncio future happens in its
loop's thread.

Cancellation: cancelling an `AsyncFuture` (as cancelling the task that awaits it does)
withdraws its task from the engine if no worker has it yet; a task a worker has runs
to its end and its outcome is dropped. An async iterator that is cancelled while it
waits, closed (`aclose`) or dropped stops its stream: what no worker has is cancelled.

A loop that closed while outcomes were on their way is no error: nobody awaits them.
"""

from __future__ import annotations

import asyncio
import collections

from shoal import _stream

# The outcomes an async iterator takes in one hold of its sink's lock.
POLL_MAX = 256

__all__ = ["AsyncFuture", "running_loop", "submit", "AsyncResults", "AsyncMapIterator"]


class AsyncFuture(asyncio.Future):
    """The asyncio Future of a single call. As a single call's concurrent Future, it is
    itself what waits in the core's pending map (`_shoal_outcome`)."""

    __slots__ = ("_shoal_core", "_shoal_task")

    def cancel(self, msg=None) -> bool:
        """Cancels this future, and its task if no worker has it yet (loop thread)."""
        if self.done():
            return False
        task = self._shoal_task
        if task is not None:
            self._shoal_core.cancel(task)
        return super().cancel(msg)

    def _shoal_outcome(self, ok: bool, value) -> None:
        """The outcome (in the loop's thread, when the call failed to pickle)."""
        AsyncFuture._shoal_outcomes([(self, ok, value)])

    @staticmethod
    def _shoal_outcomes(outcomes: list) -> None:
        """A batch of outcomes, [(future, ok, value)] (dispatcher thread): one
        call_soon_threadsafe per event loop."""
        loop = outcomes[0][0].get_loop()
        by_loop = {loop: outcomes}
        for outcome in outcomes:
            if outcome[0].get_loop() is not loop:  # several loops: rare, group them
                by_loop = {}
                for item in outcomes:
                    by_loop.setdefault(item[0].get_loop(), []).append(item)
                break
        for loop, batch in by_loop.items():
            try:
                loop.call_soon_threadsafe(_settle, batch)
            except RuntimeError:
                pass  # the loop is closed: nobody awaits these any more

    def _shoal_cancel_soon(self) -> None:
        """Cancels the future from another thread (an executor's shutdown with
        cancel_futures), in its loop's thread, if the engine withdrew its task."""
        task = self._shoal_task
        if task is not None and self._shoal_core.cancel(task):
            try:
                self.get_loop().call_soon_threadsafe(self.cancel)
            except RuntimeError:
                pass


def _settle(outcomes: list) -> None:
    """Sets the futures of a batch of outcomes (loop thread)."""
    for future, ok, value in outcomes:
        if future.done():
            continue  # cancelled while its outcome was on its way
        if ok:
            future.set_result(value)
            continue
        try:
            future.set_exception(value)
        except TypeError:  # StopIteration cannot be raised into a Future
            error = RuntimeError(f"the call raised {value!r}")
            error.__cause__ = value
            future.set_exception(error)


def running_loop() -> asyncio.AbstractEventLoop:
    """The running event loop; RuntimeError saying so when there is none."""
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        raise RuntimeError(
            "shoal's asyncio calls need a running event loop: call them from a coroutine"
        ) from None


def submit(loop, core, fn, args: tuple, kwargs: dict | None, options) -> AsyncFuture:
    """Submits fn(*args, **kwargs) and returns its AsyncFuture, on `loop` (the running
    one). RuntimeError if the engine is closed."""
    future = AsyncFuture(loop=loop)
    future._shoal_core = core
    future._shoal_task = None
    # An outcome reaches the future only through this thread's loop: after this line.
    future._shoal_task = core.submit_call(fn, args, kwargs, options, future)
    return future


class AsyncResults(_stream.Results):
    """The sink of a stream read by an async iterator: as `Results`, and a reader
    waiting on its loop is woken by one call_soon_threadsafe per delivery."""

    def __init__(self, ordered: bool, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(ordered)
        self._loop = loop
        self._waiter: asyncio.Future | None = None  # guarded by _cond

    def deliver(self, indices, values: list, failures: dict) -> None:
        super().deliver(indices, values, failures)
        self._wake()

    def end(self, count: int) -> None:
        super().end(count)
        self._wake()

    def _wake(self) -> None:
        with self._cond:
            waiter, self._waiter = self._waiter, None
        if waiter is not None:
            try:
                self._loop.call_soon_threadsafe(_release, waiter)
            except RuntimeError:
                pass  # the loop is closed: nobody reads any more

    def poll(self, into: collections.deque) -> asyncio.Future | None:
        """Moves the outcomes ready now into `into` (at most POLL_MAX, in one hold of
        the lock); if there were none, returns a waiter: an asyncio future done once
        there may be some. Raises StopIteration after the last item (loop thread)."""
        with self._cond:
            pop = self._pop
            for _ in range(POLL_MAX):
                try:
                    outcome = pop()
                except StopIteration:
                    if into:
                        return None
                    raise
                if outcome is None:
                    break
                into.append(outcome)
            if into:
                return None
            self._waiter = self._loop.create_future()
            return self._waiter


def _release(waiter: asyncio.Future) -> None:
    if not waiter.done():
        waiter.set_result(None)


class AsyncMapIterator:
    """The async iterator of `imap_async` and `imap_unordered_async`: an item whose call
    raised raises that exception, and iteration goes on after it."""

    def __init__(self, results: AsyncResults) -> None:
        self._results = results
        self._ready: collections.deque = collections.deque()  # taken, not yet returned

    def __aiter__(self) -> AsyncMapIterator:
        return self

    async def __anext__(self):
        ready = self._ready
        while not ready:
            try:
                waiter = self._results.poll(ready)
            except StopIteration:
                raise StopAsyncIteration from None
            if waiter is not None:
                try:
                    await waiter
                except asyncio.CancelledError:
                    self._stop()
                    raise
        ok, value = ready.popleft()
        if ok:
            return value
        raise value

    async def aclose(self) -> None:
        """Stops the map: no more input is read, what no worker has is cancelled."""
        self._stop()

    def _stop(self) -> None:
        results = self._results
        if results.stream is not None and not results.finished:
            results.stream.stop()

    def __del__(self) -> None:
        try:
            self._stop()
        except Exception:
            pass
