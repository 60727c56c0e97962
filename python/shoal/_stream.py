"""Streams: map-like calls (`map`, `imap`, `starmap`, `Executor.map`) fed to the engine.

A `Stream` takes its items in chunks sized by a `Chunker` (fixed, or adaptive from the
workers' timings), keeps a bounded window of them in flight from a feeder thread of its
own, runs the items of a chunk whose worker died again one by one, and hands outcomes
to a sink: `pool.MapResult` for a whole map, `Results` for an iterator.

Locks: a stream's `_cond` guards its window and tasks in flight; the feeder holds it
while it submits (so that neither `stop` nor the chunk's own event comes between the
submission and its registration), then takes `Core._lock` inside: a stream's condition
comes before the core's lock, and the core never takes a stream's condition while it
holds its own. `Results._cond` may be held while taking its stream's condition, never
the other way round: streams deliver to sinks outside their condition.
"""

from __future__ import annotations

import collections
import itertools
import threading
import time
from typing import TYPE_CHECKING, Any

from shoal import _payload, errors
from shoal._options import TaskOptions
from shoal._outcomes import call_outcome, chunk_outcomes, describe, label, stored_label

if TYPE_CHECKING:
    from shoal._client import Core

# Adaptive chunking aims at chunks of about this many seconds: long enough that the
# per-chunk cost vanishes, short enough that load balance holds (an item that takes as
# long as this alone is never batched with another).
CHUNK_SECONDS = 0.004

# Chunk outcomes that say more about one item than about the others: the chunk's items
# run again alone.
_SPLIT = frozenset({"crashed", "memory_exceeded", "timed_out"})

# An adaptive chunk holds at most this many times the items of the largest chunk done so
# far: sizes follow measurements of sizes not far below them.
GROWTH = 16

# A map whose first item took at most this long (a chunk of one: mostly the chunk's own
# fixed cost) goes straight to chunks of its limit, the standard library's size, rather
# than earn them 16x per round trip (1 -> 16 -> 256 -> 2500 was most of the gap to
# multiprocessing's map of 20,000 tiny calls). Slower first items keep the ramp, so skewed
# maps still balance.
TINY_SECONDS = 0.0001


# The pickled payloads one stream keeps in flight, at most (beyond its first chunk): a
# window counted in chunks must not hold gigabytes when the items are large.
WINDOW_BYTES = 64 << 20


def window(workers: int, chunksize: int | None) -> int:
    """Chunks a stream keeps in flight. Single calls: enough to keep every worker and its
    prefetch busy and to hand the engine and the workers batches, not single tasks (64
    measured 12.5 us per call of imap_unordered, 256 measured 9.8). Chunks (given or
    adaptive): two per worker and two more, so adaptive sizes follow fresh measurements
    and no chunk waits long in the queue."""
    return max(256, 16 * workers) if chunksize == 1 else 2 * workers + 2


class Chunker:
    """Chunk sizes for a stream: fixed when the caller gave one, else adaptive.

    Adaptive: the first chunks hold one item; each completed chunk reports the worker's
    seconds for it, and the next chunks hold as many items as fit in CHUNK_SECONDS at the
    recent per-item time, at most GROWTH times the largest chunk seen done (growth is earned),
    and at most `limit` (about len/(4*workers), like multiprocessing's default, so every
    worker gets several chunks). Items that take CHUNK_SECONDS or more always go alone.
    With `probes` (a map of known length: one per worker), only that many single items
    go out until the first is done, and if it was done within TINY_SECONDS the next
    chunks hold `limit` items at once; after that only the CHUNK_SECONDS fit and `limit`
    bound them.

    The per-item time is a decaying ratio of seconds to items: each observation halves
    the weight of the past, and a chunk weighs as many items as it holds, so a slow first
    call is forgotten as soon as larger chunks report.
    """

    def __init__(self, chunksize: int | None, limit: int, probes: int | None = None) -> None:
        self.fixed = chunksize
        self.limit = max(1, limit)
        self.probes = probes
        self._jumped = False
        self.per_item: float | None = None
        self.largest_done = 0
        self._seconds = 0.0
        self._items = 0.0

    @property
    def adaptive(self) -> bool:
        return self.fixed is None

    def room(self, in_flight: int) -> int | None:
        """How many chunks may go out now with `in_flight` out, if the chunker bounds it
        (while its probes are out); None if only the stream's window does."""
        if self.probes is None or self.per_item is not None or self.fixed is not None:
            return None
        return self.probes - in_flight

    def next_size(self) -> int:
        if self.fixed is not None:
            return self.fixed
        if self.per_item is None:
            return 1
        if self._jumped:
            if self.largest_done == 1:
                return self.limit  # a lone item's time is mostly fixed cost: not a fit
            earned = self.limit
        else:
            earned = GROWTH * self.largest_done
        fit = int(CHUNK_SECONDS / self.per_item) if self.per_item > 0 else self.limit
        return max(1, min(fit, self.limit, earned))

    def observe(self, items: int, elapsed: float) -> None:
        if self.probes and self.per_item is None and elapsed <= TINY_SECONDS:
            self._jumped = True
        self._seconds = self._seconds / 2 + elapsed
        self._items = self._items / 2 + items
        self.per_item = self._seconds / self._items
        self.largest_done = max(self.largest_done, items)


class Stream:
    """Feeds one map-like call to the engine from a thread of its own.

    It takes items from `items` in chunks (`Chunker`), keeps at most `window` chunks in
    flight (None: no bound), and with `backpressure` also waits while the items submitted
    but not yet consumed fill the window, so an unread iterator never runs ahead of its
    reader (`consumed` tells it a reader took items; `drain` lifts this when the pool is
    closing). Items' outcomes go to `sink.deliver(indices, values, failures)` (the return
    values, None where an item failed, and {position in indices: exception}), chunks at
    a time from the dispatcher thread, or from the feeder for items that fail before
    they are sent (`fail_items`); `sink.end(count)` tells how many items there are, once
    the input is exhausted or the stream stopped.

    A chunk of one item in a fixed-size stream is sent as a single CALL (the fastest
    path); otherwise chunks go as MAP/STARMAP so the worker times them.
    """

    def __init__(
        self,
        core: Core,
        fn,
        items,
        *,
        star: bool,
        chunker: Chunker,
        options: TaskOptions,
        sink,
        window: int | None,
        backpressure: bool,
        total: int | None = None,
    ) -> None:
        self.core = core
        self._total = total
        self.fn = fn
        self._items = iter(items)
        self._star = star
        self._chunker = chunker
        self._options = options
        self._sink = sink
        self._window = window
        self._backpressure = backpressure
        self._cond = threading.Condition(threading.Lock())
        self._in_flight: dict[int, int] = {}  # task id -> its payload's size
        self._bytes_in_flight = 0
        self._bytes_submitted = 0  # over the stream's life, for the mean payload size
        self._tasks_submitted = 0
        self._submitted_items = 0
        self._consumed = 0
        self._stopped = False
        self._fed = False  # the feeder has taken its last item
        self._released = False
        self._fn_bytes = b""
        self._call_head = b""
        self._thread = threading.Thread(target=self._feed, name="shoal-feeder", daemon=True)

    def start(self) -> None:
        """Starts feeding. Raises PicklingError (before any item is taken) if the function
        cannot be pickled."""
        self._fn_bytes = self.core.function_bytes_once(self.fn)
        self._call_head = _payload.run_head(_payload.CALL, self._fn_bytes)
        self.core.add_stream(self, self._total or 0)
        self._thread.start()

    # ----- called by the reader, the dispatcher, the core -----

    def consumed(self, count: int = 1) -> None:
        with self._cond:
            self._consumed += count
            self._cond.notify()

    def drain(self) -> None:
        with self._cond:
            self._backpressure = False
            self._cond.notify()

    def stop(self) -> None:
        """Stops feeding and cancels the chunks no worker has yet; their items still get
        an outcome (cancelled) from the engine."""
        with self._cond:
            self._stopped = True
            in_flight = list(self._in_flight)
            self._cond.notify()
        for task in in_flight:
            self.core.cancel(task)

    # ----- the feeder thread -----

    def _feed(self) -> None:
        index = 0
        exhausted = False
        input_error: BaseException | None = None
        try:
            while not exhausted and input_error is None:
                with self._cond:
                    while not self._stopped and not self._has_room():
                        self._cond.wait()
                    if self._stopped:
                        break
                    size = self._chunker.next_size()
                    count = self._free_chunks(size)
                batch = []
                try:
                    for _ in range(count):
                        chunk: list = []
                        batch.append(chunk)
                        # extend keeps the items taken before the input raises.
                        chunk.extend(itertools.islice(self._items, size))
                        if len(chunk) < size:
                            exhausted = True
                            break
                except Exception as exc:  # the caller's iterator raised: its item fails
                    input_error = exc
                    if (self._chunker.fixed or 1) > 1:
                        # As multiprocessing's imap: the chunk the input cut short is not
                        # run, and the error takes its place. (Adaptive chunks are ours,
                        # not the caller's: every item taken runs, as with chunksize=1.)
                        batch.pop()
                index = self._submit([chunk for chunk in batch if chunk], index)
            if input_error is not None:
                input_failed = getattr(self._sink, "input_failed", None)
                if input_failed is not None:
                    input_failed(index, input_error)
                else:
                    fail_items(self._sink, (index,), input_error)
                index += 1
            elif self._stopped and not exhausted and (self._total is None or index < self._total):
                # Items never taken: say so rather than end an iteration silently. (A known
                # total tells the last item was taken even before an empty chunk did.)
                fail_items(self._sink, (index,), self._cancelled_error())
                index += 1
        finally:
            self._sink.end(index)
            with self._cond:
                self._fed = True
            self._release_if_done()

    @staticmethod
    def _cancelled_error() -> errors.TaskCancelled:
        return errors.TaskCancelled("the pool was terminated before this item was submitted")

    def _has_room(self) -> bool:
        """Whether a chunk may be submitted now. Called with `_cond` held."""
        window = self._window
        if window is None:
            return True
        if len(self._in_flight) >= window:
            return False
        probing = self._chunker.room(len(self._in_flight))
        if probing is not None and probing <= 0:
            return False
        if self._bytes_in_flight >= WINDOW_BYTES and self._in_flight:
            return False
        if self._backpressure:
            return self._submitted_items - self._consumed < window * self._chunker.next_size()
        return True

    def _free_chunks(self, size: int) -> int:
        """How many chunks of `size` to submit in one go. Called with `_cond` held."""
        window = self._window
        if window is None:
            return 256  # one engine call per 256 chunks
        free = window - len(self._in_flight)
        probing = self._chunker.room(len(self._in_flight))
        if probing is not None:
            free = min(free, probing)
        if self._tasks_submitted:
            # As many as fit in WINDOW_BYTES at the mean payload size so far.
            mean = self._bytes_submitted / self._tasks_submitted
            free = min(free, int((WINDOW_BYTES - self._bytes_in_flight) / mean))
        else:
            free = 1  # the first chunk tells the size of a payload
        if self._backpressure:
            unread = self._submitted_items - self._consumed
            free = min(free, -(-(window * size - unread) // size))
        return max(1, free)

    def _submit(self, batch: list[list], index: int) -> int:
        """Encodes and submits chunks (items that cannot be pickled fail on their own;
        after a stop, the rest fail as cancelled). Returns the index after the batch."""
        single = self._chunker.fixed == 1
        mode = _payload.STARMAP if self._star else _payload.MAP
        payloads, handlers = [], []
        for chunk in batch:
            indices = range(index, index + len(chunk))
            index += len(chunk)
            encoded = self._encode(chunk, indices, single, mode)
            if encoded is not None:
                payload, indices, items = encoded
                payloads.append(payload)
                handlers.append(ChunkHandler(self, indices, items, single))
        if not payloads:
            return index
        options = self._options
        if options.timeout is not None and len(batch[0]) > 1:
            # A chunk is one engine task: it may take as long as its items together.
            options = options.replace(timeout=options.timeout * len(batch[0]))
        unsent = len(handlers)
        with self._cond:
            if not self._stopped:
                try:
                    for start, stop, group_options in self._groups(handlers, options):
                        group = handlers[start:stop]
                        calls = sum(len(handler.indices) for handler in group)
                        counted = 0 if self._total is not None else calls
                        labels = self._labels(group, payloads[start:stop])
                        first = self.core.submit_tasks(
                            payloads[start:stop], group_options, group, counted, labels
                        )
                        self._register(first, payloads[start:stop])
                        self._submitted_items += calls
                        unsent = len(handlers) - stop
                except RuntimeError:  # the engine was closed under us: terminated
                    self._stopped = True
        for handler in handlers[len(handlers) - unsent :]:
            fail_items(self._sink, handler.indices, self._cancelled_error())
        return index

    @staticmethod
    def _groups(handlers: list, options: TaskOptions) -> list:
        """[(start, stop, options)]: the runs of consecutive chunks submitted with the
        same options. A chunk of several items whose worker crashed is not retried
        whole: it is split at once, and its items run again alone, each with its own
        retries (chunks_done), so it goes with none. A chunk of one item is that item:
        it keeps its retries, as a single call does."""
        none = options.replace(retries=0) if options.retries else options
        groups: list = []
        for position, handler in enumerate(handlers):
            wanted = none if len(handler.indices) > 1 else options
            if groups and groups[-1][2] is wanted:
                groups[-1][1] = position + 1
            else:
                groups.append([position, position + 1, wanted])
        return groups

    def _encode(self, chunk: list, indices, single: bool, mode: int):
        """(payload, indices, items) for a chunk, or None if none of its items can be
        pickled; the items that cannot are failed here."""
        fn_bytes = self._fn_bytes
        if single:
            item = chunk[0]
            try:
                args = tuple(item) if self._star else (item,)
            except TypeError:
                # What calling fn(*item) would raise, as it does in a chunk's worker.
                error = TypeError(
                    f"{describe(self.fn)}() argument after * must be an iterable, "
                    f"not {type(item).__name__}"
                )
                fail_items(self._sink, indices, error)
                return None
            try:
                return self._call_head + _payload.dumps((args, None)), indices, chunk
            except Exception as exc:
                fail_items(self._sink, indices, self._pickling_error(exc))
                return None
        try:
            return _payload.encode_run(mode, fn_bytes, _payload.dumps(chunk)), indices, chunk
        except Exception:
            pass
        good, good_indices = [], []
        for item, item_index in zip(chunk, indices):
            try:
                _payload.dumps(item)
            except Exception as exc:
                fail_items(self._sink, (item_index,), self._pickling_error(exc))
                continue
            good.append(item)
            good_indices.append(item_index)
        if not good:
            return None
        return _payload.encode_run(mode, fn_bytes, _payload.dumps(good)), good_indices, good

    def _pickling_error(self, exc: Exception) -> Exception:
        return errors.pickling_error(f"the arguments of {describe(self.fn)}", exc)

    # ----- the dispatcher thread -----

    def chunks_done(self, done: list) -> None:
        """Chunks ended: [(handler, event), ...] (dispatcher thread). A chunk of several
        items whose worker crashed, ran out of memory or timed out is not failed whole:
        its items run again one by one, so that only the culprit fails."""
        indices: list = []
        values: list = []
        failures: dict = {}
        timings = []
        split = []
        for handler, event in done:
            if handler.single:
                ok, value = call_outcome(event, self.core.refuse)
                if not ok:
                    failures[len(values)] = value
                    value = None
                values.append(value)
            elif event[1] in _SPLIT and len(handler.indices) > 1 and not self._stopped:
                # (A chunk of one item had its item's retries: its outcome is final.)
                split.append((handler, event))
                continue
            else:
                elapsed, chunk_values, chunk_failures = chunk_outcomes(event, len(handler.indices))
                if elapsed is not None:
                    timings.append((len(handler.indices), elapsed))
                offset = len(values)
                for position, error in chunk_failures.items():
                    failures[offset + position] = error
                values.extend(chunk_values)
            indices.extend(handler.indices)
        unsent = self._resubmit(split) if split else []
        with self._cond:
            in_flight = self._in_flight
            for _, event in done:
                self._bytes_in_flight -= in_flight.pop(event[0], 0)
            if self._chunker.adaptive:
                for items, elapsed in timings:
                    self._chunker.observe(items, elapsed)
            self._cond.notify()
        for handler, event in unsent:
            _, chunk_values, chunk_failures = chunk_outcomes(event, len(handler.indices))
            offset = len(values)
            for position, error in chunk_failures.items():
                failures[offset + position] = error
            values.extend(chunk_values)
            indices.extend(handler.indices)
        self.core.calls_done += len(indices)
        try:
            if indices:
                delivered: list | range = indices
                if not split and _contiguous(done):
                    start = done[0][0].indices.start
                    delivered = range(start, start + len(indices))  # a map stores one slice
                self._sink.deliver(delivered, values, failures)
        finally:
            # Even if a map's callback raised: the pool's close must not wait for us.
            self._release_if_done()

    def _labels(self, handlers: list, payloads: list) -> list[str] | None:
        """The labels the chunks are stored under (None without a store)."""
        if not self.core.recording:
            return None
        return [stored_label(self._label(h), p) for h, p in zip(handlers, payloads)]

    def _label(self, handler: ChunkHandler) -> str:
        """How a call is shown in the store. With a store a stream sends every item as
        a call of its own (the fronts give it chunks of one), so that each is recorded
        with its own outcome."""
        item = handler.items[0]
        return label(self.fn, tuple(item) if self._star else (item,))

    def _resubmit(self, split: list) -> list:
        """Submits the items of failed chunks as single calls; returns the chunks that
        could not be (the stream stopped, or the engine closed): they fail whole."""
        payloads, handlers = [], []
        for handler, _ in split:
            for index, item in zip(handler.indices, handler.items):
                args = tuple(item) if self._star else (item,)
                payloads.append(self._call_head + _payload.dumps((args, None)))
                handlers.append(ChunkHandler(self, (index,), [item], True))
        with self._cond:
            if self._stopped:
                return split
            try:
                labels = self._labels(handlers, payloads)
                first = self.core.submit_tasks(payloads, self._options, handlers, 0, labels)
            except RuntimeError:
                return split
            self._register(first, payloads)
        return []

    def _register(self, first: int, payloads: list) -> None:
        """Counts submitted tasks (ids from `first`) in flight. Called with `_cond` held."""
        in_flight = self._in_flight
        total = 0
        for task, payload in zip(itertools.count(first), payloads):
            in_flight[task] = len(payload)
            total += len(payload)
        self._bytes_in_flight += total
        self._bytes_submitted += total
        self._tasks_submitted += len(payloads)

    def _release_if_done(self) -> None:
        """Once the feeder is done and nothing is in flight, the core may close the
        engine (a chunk that fails may still need it to run its items again)."""
        with self._cond:
            if self._released or not self._fed or self._in_flight:
                return
            self._released = True
        # A known total was counted at start: take back what was never submitted.
        uncounted = self._total - self._submitted_items if self._total is not None else 0
        self.core.stream_done(self, uncounted)


def _contiguous(done: list) -> bool:
    """Whether the chunks of `done` follow each other, item after item."""
    stop = None
    for handler, _ in done:
        indices = handler.indices
        if type(indices) is not range or (stop is not None and indices.start != stop):
            return False
        stop = indices.stop
    return True


def fail_items(sink, indices, error: BaseException) -> None:
    """Delivers the same failure for every item of `indices` to a stream's sink."""
    sink.deliver(indices, [None] * len(indices), dict.fromkeys(range(len(indices)), error))


class ChunkHandler:
    """A stream's chunk in flight: its items' indices, the items (kept to run them again
    one by one if the chunk's worker dies), and whether it went as one CALL. The
    dispatcher hands these to `Stream.chunks_done` in batches."""

    __slots__ = ("stream", "indices", "items", "single")

    def __init__(self, stream: Stream, indices, items: list, single: bool) -> None:
        self.stream, self.indices, self.items, self.single = stream, indices, items, single


class Results:
    """The sink of a stream read by an iterator (imap, imap_unordered, executor.map):
    outcomes in item order, or in completion order. Its reader tells the stream what it
    took (every few items, and before it waits), which is what bounds a stream with
    backpressure."""

    _REPORT_EVERY = 8

    def __init__(self, ordered: bool) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._ordered = ordered
        # Ordered: index -> (ok, value); unordered: (ok, value) in completion order.
        self._ready: Any = {} if ordered else collections.deque()
        self._taken = 0
        self._unreported = 0
        self._count: int | None = None
        self._waiting = False
        # Unordered: outcomes delivered so far, and the input's error held until the
        # outcomes of every item taken before it were delivered.
        self._delivered = 0
        self._held: tuple[int, BaseException] | None = None
        self.stream: Stream | None = None

    def deliver(self, indices, values: list, failures: dict) -> None:
        outcomes = [(True, value) for value in values]
        for position, error in failures.items():
            outcomes[position] = (False, error)
        with self._cond:
            if self._ordered:
                self._ready.update(zip(indices, outcomes))
            else:
                self._ready.extend(outcomes)
                self._delivered += len(outcomes)
                if self._held is not None and self._delivered >= self._held[0]:
                    self._ready.append((False, self._held[1]))
                    self._held = None
            if self._waiting:
                self._cond.notify()

    def input_failed(self, index: int, error: BaseException) -> None:
        """The caller's input raised when item `index` was to be taken. As in
        multiprocessing, where the error is a task queued behind the items taken before
        it, it comes after their outcomes, in completion order too."""
        with self._cond:
            if not self._ordered and self._delivered < index:
                self._held = (index, error)
                return
        fail_items(self, (index,), error)

    def end(self, count: int) -> None:
        with self._cond:
            self._count = count
            self._cond.notify_all()

    @property
    def finished(self) -> bool:
        """Every item was taken."""
        return self._count is not None and self._taken >= self._count

    def take(self, deadline: float | None) -> tuple[bool, Any] | None:
        """The next outcome, waiting until `deadline` (time.monotonic()) at most: None
        if it passed. Raises StopIteration after the last item."""
        with self._cond:
            while (outcome := self._pop()) is None:
                self._waiting = True
                try:
                    if deadline is None:
                        self._cond.wait()
                    else:
                        left = deadline - time.monotonic()
                        if left <= 0:
                            return None
                        self._cond.wait(left)
                finally:
                    self._waiting = False
        return outcome

    def _pop(self) -> tuple[bool, Any] | None:
        """The next outcome if there is one, counted as taken; None (the stream told
        what was taken, so that it feeds more) if the reader must wait for it. Raises
        StopIteration after the last item. Called with `_cond` held."""
        ready = self._ready
        if self._ordered:
            outcome = ready.pop(self._taken, None)
        else:
            outcome = ready.popleft() if ready else None
        if outcome is None:
            if self._count is not None and self._taken >= self._count:
                raise StopIteration
            self._report()
            return None
        self._taken += 1
        self._unreported += 1
        if self._unreported >= self._REPORT_EVERY:
            self._report()
        return outcome

    def _report(self) -> None:
        # Called with _cond held; the stream's condition comes after it (see the doc).
        if self._unreported and self.stream is not None:
            self.stream.consumed(self._unreported)
        self._unreported = 0
