"""Every outcome is true, arrives, and arrives promptly: the store records each call of a
map with its own status, a crash costs a retry and never a map, a dead worker is
reported by its signal, a result that cannot be delivered still settles, a finished
result leaves its worker without waiting for the tasks behind it, and where the standard
library defines the behaviour (an input that raises, a dropped pool), shoal does as it
does."""

from __future__ import annotations

import concurrent.futures
import functools
import gc
import json
import multiprocessing
import os
import signal
import sqlite3
import time
import warnings

import delivery_tasks
import pytest
import tasks
from conftest import FAST, shoal_cli, wait_gone, worker_pids

import shoal

# ---------------------------------------------------------------------------------------
# The store: every call of a map with its own outcome.

BAD = (3, 13)  # where delivery_tasks.fail_3_and_13 raises


def stored(path) -> dict:
    """{call as shown: (status, attempts)} of the store's only run."""
    with sqlite3.connect(path) as db:
        found = db.execute("SELECT command, status, attempts FROM tasks").fetchall()
    return {command.rsplit(" #", 1)[0]: (status, attempts) for command, status, attempts in found}


def shown(x) -> str:
    return f"delivery_tasks.fail_3_and_13({x})"


@pytest.mark.parametrize("chunksize", [None, 1, 5])
@pytest.mark.parametrize("api", ["map", "imap", "executor_map"])
def test_every_item_of_a_map_is_stored_with_its_own_outcome(tmp_path, api, chunksize):
    path = str(tmp_path / "results.db")
    work = delivery_tasks.fail_3_and_13
    if api == "executor_map":
        with shoal.ProcessPoolExecutor(2, store=path) as executor:
            outcomes = []
            for x in range(20):  # one map per item: the stdlib's map stops at a failure
                try:
                    outcomes += list(executor.map(work, [x], chunksize=chunksize or 1))
                except ValueError:
                    outcomes.append("failed")
    else:
        with shoal.Pool(2, store=path) as pool:
            if api == "map":
                with pytest.raises(ValueError, match="item 3 is bad"):
                    pool.map(work, range(20), chunksize=chunksize)
            else:
                outcomes = []
                results = pool.imap(work, range(20), chunksize=chunksize)
                for _ in range(20):
                    try:
                        outcomes.append(next(results))
                    except ValueError:
                        outcomes.append("failed")
    if api != "map":
        assert outcomes == ["failed" if x in BAD else x for x in range(20)]

    assert stored(path) == {
        shown(x): ("failed" if x in BAD else "succeeded", 1) for x in range(20)
    }
    failed = shoal_cli("results", "--status", "failed", "--json", "--store", path)
    assert failed.returncode == 0, failed.stderr
    calls = [json.loads(line)["command"].rsplit(" #", 1)[0] for line in failed.stdout.splitlines()]
    assert sorted(calls) == sorted([shown(3), shown(13)])
    stats = json.loads(shoal_cli("stats", "--json", "--store", path).stdout)
    counts = {status: n for status, n in stats["counts"].items() if n}
    assert counts == {"succeeded": 18, "failed": 2}, stats
    assert stats["success_rate"] == pytest.approx(0.9)


# ---------------------------------------------------------------------------------------
# A crash costs a retry, never the map.


@pytest.mark.parametrize(
    "api, items, bad",
    [
        ("map", range(5), 0),  # adaptive: the first chunks hold one item
        ("imap_unordered", range(5), 0),
        ("map_chunks", range(7), 6),  # chunksize 3: the last chunk holds one item
        ("executor_map", [1, 2, 0], 0),  # chunksize 2: likewise
    ],
)
def test_a_crash_in_a_chunk_of_one_item_costs_a_retry_not_the_map(tmp_path, api, items, bad):
    marker = str(tmp_path / "died")
    work = functools.partial(delivery_tasks.die_once_on, marker, bad)
    if api == "executor_map":
        with shoal.ProcessPoolExecutor(2, **FAST) as executor:
            assert list(executor.map(work, items, chunksize=2)) == list(items)
    else:
        with shoal.Pool(2, **FAST) as pool:
            if api == "map":
                assert pool.map(work, items) == list(items)
            elif api == "map_chunks":
                assert pool.map(work, items, chunksize=3) == list(items)
            else:
                assert sorted(pool.imap_unordered(work, items)) == list(items)
    assert os.path.exists(marker), "the item did kill its worker once"


def test_a_chunk_of_one_item_keeps_its_retries_of_zero(tmp_path):
    work = functools.partial(delivery_tasks.die_once_on, str(tmp_path / "died"), 0)
    with shoal.Pool(1, retries=0, **FAST) as pool:
        with pytest.raises(shoal.WorkerCrashed) as caught:
            pool.map(work, range(3))
    assert caught.value.attempts == 1


# ---------------------------------------------------------------------------------------
# A dead worker is reported by its signal.


def test_a_worker_killed_with_its_shutdown_unread_names_the_signal():
    # Recycled after each task, the worker is sent Shutdown with its Run; a Run over
    # 64 KiB is read to its end alone, so the Shutdown is still in the socket when the
    # task kills its worker: the channel is reset, which is the death, not a protocol
    # error.
    with shoal.Pool(1, maxtasksperchild=1, retries=0, **FAST) as pool:
        with pytest.raises(shoal.WorkerCrashed) as caught:
            pool.apply(delivery_tasks.kill_self, (b"x" * (1 << 17),))
        assert caught.value.signal == signal.SIGKILL, caught.value
        assert "SIGKILL" in str(caught.value)
        assert pool.apply(tasks.inc, (1,)) == 2


# ---------------------------------------------------------------------------------------
# A result that cannot be delivered still settles.


@pytest.mark.parametrize("kind", ["exit", "interrupt"])
def test_a_result_that_raises_systemexit_as_it_arrives_settles_its_future(executor, kind):
    future = executor.submit(delivery_tasks.returns_exploding, kind)
    with pytest.raises(shoal.PicklingError, match="could not be unpickled") as caught:
        future.result(20)
    assert type(caught.value.__cause__) is {"exit": SystemExit, "interrupt": KeyboardInterrupt}[kind]
    with pytest.raises(shoal.PicklingError, match="exception could not be unpickled"):
        executor.submit(delivery_tasks.raises_exploding).result(20)
    assert executor.submit(tasks.inc, 1).result(20) == 2


def test_a_result_that_raises_systemexit_as_it_arrives_settles_apply_and_maps(pool):
    result = pool.apply_async(delivery_tasks.returns_exploding)
    with pytest.raises(shoal.PicklingError):
        result.get(20)
    assert result.ready() and not result.successful()
    with pytest.raises(shoal.PicklingError):
        pool.apply_async(delivery_tasks.raises_exploding).get(20)
    # In a chunk: its items fail, the map ends.
    work = functools.partial(delivery_tasks.exploding_on, 2)
    with pytest.raises(shoal.PicklingError):
        pool.map_async(work, range(6), chunksize=3).get(20)
    results = pool.imap(work, range(4), chunksize=1)
    assert [next(results), next(results)] == [0, 1]
    with pytest.raises(shoal.PicklingError):
        next(results)
    assert next(results) == 3


def test_a_map_callback_that_raises_does_not_keep_join_waiting(capfd):
    def raising(_):
        raise RuntimeError("the callback fails")

    with shoal.Pool(2, **FAST) as pool:
        result = pool.map_async(tasks.inc, range(10), callback=raising)
        pool.close()
        with pool._core.interruptible():
            assert pool._core.join(20), "join waited on a map whose callback raised"
        assert result.ready()
    assert "the callback fails" in capfd.readouterr().err


# ---------------------------------------------------------------------------------------
# A finished result leaves its worker promptly, whatever runs after it.


def _started(path) -> None:
    """Waits until the task that creates `path` runs."""
    for _ in range(3000):
        if os.path.exists(path):
            return
        time.sleep(0.01)
    raise AssertionError("the first task never started")


@pytest.mark.parametrize("way", ["as_completed", "wait", "map"])
def test_a_result_is_not_held_behind_a_long_task(tmp_path, way):
    # One worker, prefetching (tiny tasks before), runs a first task that returns only
    # once two more Runs wait whole in its socket: a tiny call, and a long one that
    # waits for the caller to have the tiny call's result. The worker reads both at
    # once; held back until the long one ends, the tiny result would come too late.
    started, ready, seen = (str(tmp_path / name) for name in ("started", "ready", "seen"))
    open(ready, "w").close()
    with shoal.ProcessPoolExecutor(1) as executor:
        assert sum(executor.map(tasks.inc, range(300))) == sum(range(1, 301))
        first = executor.submit(delivery_tasks.wait_for_runs, started, 2)
        _started(started)
        if way == "map":
            results = executor.map(delivery_tasks.wait_for, [ready, seen], [30, 10], timeout=60)
        else:
            tiny = executor.submit(delivery_tasks.wait_for, ready, 30)
            long = executor.submit(delivery_tasks.wait_for, seen, 10)
        assert first.result(60) is True, "the worker was not handed the two Runs at once"
        if way == "as_completed":
            done = next(concurrent.futures.as_completed([tiny, long], timeout=30))
            assert done is tiny and tiny.result() is True
        elif way == "wait":
            done, _ = concurrent.futures.wait(
                [tiny, long], timeout=30, return_when=concurrent.futures.FIRST_COMPLETED
            )
            assert done == {tiny}
        else:
            assert next(results) is True
        open(seen, "w").close()
        last = next(results) if way == "map" else long.result(30)
        assert last is True, "the long task never saw the tiny result arrive"


def test_a_pool_result_is_not_held_behind_a_long_task(tmp_path):
    started, seen = str(tmp_path / "started"), str(tmp_path / "seen")
    with shoal.Pool(1) as pool:
        assert sum(pool.imap_unordered(tasks.inc, range(300), chunksize=1)) == sum(range(1, 301))
        first = pool.apply_async(delivery_tasks.wait_for_runs, (started, 2))
        _started(started)
        tiny = pool.apply_async(tasks.inc, (41,))
        long = pool.apply_async(delivery_tasks.wait_for, (seen, 10))
        assert first.get(60) is True, "the worker was not handed the two Runs at once"
        assert tiny.get(30) == 42
        open(seen, "w").close()
        assert long.get(30) is True, "the long task never saw the tiny result arrive"


def test_results_sent_by_the_flusher_stay_whole_and_in_order(pool):
    # Tiny calls with a slower one every 50: held Results go out from the flusher
    # thread and from the worker's main thread in turn. Each arrives once, whole, and
    # in the order of its Run (the engine kills a worker whose Result is out of order).
    got = sorted(pool.imap_unordered(delivery_tasks.inc_or_nap, range(3000), chunksize=1))
    assert got == list(range(1, 3001))
    assert sum(w.restarts for w in pool.stats().workers) == 0


# ---------------------------------------------------------------------------------------
# As the standard library: an input that raises, a dropped pool.


def outcomes(iterator) -> list:
    """What iterating gives: values, and the repr of each exception raised."""
    found = []
    for _ in range(100):
        try:
            found.append(next(iterator))
        except StopIteration:
            return found
        except Exception as error:
            found.append(repr(error))
    raise AssertionError(f"no end after {found}")


@pytest.mark.parametrize("chunksize", [1, 3])
def test_imap_whose_input_raises_does_as_multiprocessing(pool, chunksize):
    # With chunks, the chunk the input cut short never runs and the error takes its
    # place; item 13 of that chunk fails on its own in neither.
    work = functools.partial(delivery_tasks.fail_on, (13,))

    def items():
        return delivery_tasks.items_then_raise(list(range(10, 20)), 5)

    with multiprocessing.get_context("fork").Pool(2) as std:
        expected = outcomes(std.imap(work, items(), chunksize=chunksize))
    assert outcomes(pool.imap(work, items(), chunksize=chunksize)) == expected
    assert expected[-1] == "ValueError('the input failed at 5')"


@pytest.mark.parametrize("chunksize", [1, 2])
def test_imap_unordered_gives_the_inputs_error_after_the_items_taken_before_it(
    pool, chunksize, tmp_path
):
    # multiprocessing queues the input's error as a task behind the items taken before
    # it, so a loop over imap_unordered gets their results first. Here no item can end
    # before the input has raised: an error handed over at once would come first.
    marker = str(tmp_path / "raised")
    work = functools.partial(delivery_tasks.once_file_exists, marker)
    items = delivery_tasks.items_then_mark_and_raise(list(range(6)), 4, marker)
    got = outcomes(pool.imap_unordered(work, items, chunksize=chunksize))
    assert sorted(got[:-1]) == [0, 1, 2, 3]  # with chunks of 2, both whole before it
    assert got[-1] == "ValueError('the input failed at 4')"


def test_imap_with_adaptive_chunks_runs_every_item_taken_before_the_input_raised(pool):
    # Adaptive chunks are shoal's, not the caller's: as with the stdlib's default
    # chunksize of 1, every item before the error is run and given.
    work = functools.partial(delivery_tasks.fail_on, ())
    got = outcomes(pool.imap(work, delivery_tasks.items_then_raise(list(range(50)), 40)))
    assert got == [*range(40), "ValueError('the input failed at 40')"]


def test_a_dropped_running_pool_warns_as_multiprocessing_does():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        std = multiprocessing.get_context("fork").Pool(1)
        del std
        ours = shoal.Pool(1, **FAST)
        pids = worker_pids(ours)
        del ours
        gc.collect()
    messages = [str(w.message) for w in caught if w.category is ResourceWarning]
    assert [m.split(" <")[0] for m in messages] == ["unclosed running multiprocessing pool"] * 2
    assert "<shoal.Pool state=RUN processes=1>" in messages[1]
    del caught  # its warnings hold the pools (their `source`)
    gc.collect()
    assert wait_gone(pids) == [], "the dropped pool's workers were stopped all the same"


def test_a_closed_pool_or_a_dropped_executor_does_not_warn():
    # A pool closed (or terminated) is not leaked. An executor dropped with work still
    # runs it, then its workers exit: the standard library's does not warn either.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        closed = shoal.Pool(1, **FAST)
        closed.close()
        closed.join()
        del closed
        std = concurrent.futures.ProcessPoolExecutor(1)
        assert std.submit(tasks.inc, 1).result(20) == 2
        del std
        ours = shoal.ProcessPoolExecutor(1, **FAST)
        assert ours.submit(tasks.inc, 1).result(20) == 2
        del ours
        gc.collect()
    assert [w for w in caught if w.category is ResourceWarning] == []
