"""shoal.ProcessPoolExecutor against concurrent.futures' API and behaviour."""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import os
import time

import pytest

import shoal
from shoal import _client
import tasks
from conftest import FAST, wait_gone, worker_pids


def test_submit_returns_a_real_future(executor):
    future = executor.submit(tasks.add, 1, b=2)
    assert isinstance(future, concurrent.futures.Future)
    assert future.result(timeout=10) == 3
    assert future.done() and not future.cancelled() and future.exception() is None


def test_futures_have_what_future_init_sets():
    # shoal's futures skip Future.__init__ (they share their executor's condition): a
    # Python whose Future sets more must not go unnoticed.
    with shoal.ProcessPoolExecutor(1) as executor:
        future = executor.submit(tasks.inc, 1)
        assert set(vars(concurrent.futures.Future())) <= set(vars(future))
        assert future.result(timeout=10) == 2


def test_result_and_exception_wait_for_their_own_future(executor):
    # The executor's futures share one condition: the others' ends wake a waiter, which
    # must go on waiting for its own instead of timing out at the first wake-up.
    for ask in ("result", "exception"):
        slow = executor.submit(tasks.sleep_then, 0.6, "slow")
        quick = [executor.submit(tasks.sleep_then, 0.05 * n, n) for n in range(1, 4)]
        outcome = getattr(slow, ask)(timeout=10)
        assert outcome == ("slow" if ask == "result" else None)
        assert all(future.done() for future in quick)
    slow = executor.submit(tasks.sleep_then, 0.6, "slow")
    executor.submit(tasks.inc, 1).result(timeout=10)
    with pytest.raises(concurrent.futures.TimeoutError):
        slow.result(timeout=0.1)  # others ending meanwhile do not end its wait
    assert slow.result(timeout=10) == "slow"


def test_keyword_arguments_named_like_options_reach_the_function(executor):
    def takes(priority, timeout, retries, key, fn=None):
        return priority, timeout, retries, key, fn

    future = executor.submit(takes, 1, timeout=2, retries=3, key=4, fn=5)
    assert future.result(10) == (1, 2, 3, 4, 5)


def test_exceptions_carry_the_remote_traceback(executor):
    future = executor.submit(tasks.boom, "broken")
    error = future.exception(timeout=10)
    assert isinstance(error, ValueError) and str(error) == "broken"
    assert isinstance(error.__cause__, shoal.errors.RemoteTraceback)
    assert "in boom" in str(error.__cause__)
    with pytest.raises(ValueError, match="broken"):
        future.result()


def test_as_completed_and_wait(executor):
    # Two workers: 0.6 on one, 0.1 then 0.3 on the other (done at 0.4).
    futures = [executor.submit(tasks.sleep_then, d, d) for d in (0.6, 0.1, 0.3)]
    assert [f.result() for f in concurrent.futures.as_completed(futures, timeout=10)] == [
        0.1,
        0.3,
        0.6,
    ]
    futures = [executor.submit(tasks.sleep_then, d, d) for d in (0.05, 5)]
    done, not_done = concurrent.futures.wait(
        futures, timeout=10, return_when=concurrent.futures.FIRST_COMPLETED
    )
    assert [f.result() for f in done] == [0.05] and len(not_done) == 1
    futures[1].cancel()


def test_waiters_and_callbacks_learn_of_exceptions(executor):
    # Outcomes reach wait()'s and as_completed()'s waiters, and done callbacks, as the
    # stdlib's set_result/set_exception would: raised ones as exceptions.
    seen = []
    slow = executor.submit(tasks.sleep_then, 1.5)  # holds one worker
    executor.submit(tasks.sleep_then, 0.2)  # the other worker, then:
    failing = executor.submit(tasks.boom, "late")
    failing.add_done_callback(lambda f: seen.append(type(f.exception()).__name__))
    done, not_done = concurrent.futures.wait(
        [slow, failing], timeout=10, return_when=concurrent.futures.FIRST_EXCEPTION
    )
    assert done == {failing} and not_done == {slow}
    assert seen == ["ValueError"]
    ok = executor.submit(tasks.sleep_then, 0.2, "ok")
    bad = executor.submit(tasks.boom, "bad")
    finished = list(concurrent.futures.as_completed([ok, bad], timeout=10))
    assert set(finished) == {ok, bad}
    assert isinstance(bad.exception(), ValueError) and ok.result() == "ok"


def test_asyncio_run_in_executor_and_wrap_future(executor):
    async def main():
        loop = asyncio.get_running_loop()
        first = await loop.run_in_executor(executor, tasks.add, 2, 3)
        second = await asyncio.wrap_future(executor.submit(tasks.square, 4))
        third = await loop.run_in_executor(executor.options(priority=5), tasks.inc, 9)
        gathered = await asyncio.gather(
            *(loop.run_in_executor(executor, tasks.square, x) for x in range(5))
        )
        return first, second, third, gathered

    assert asyncio.run(main()) == (5, 16, 10, [0, 1, 4, 9, 16])


def quiet_dispatcher(err: str) -> bool:
    """Whether the dispatcher thread reported no error of its own (stderr of a test)."""
    return "raised in the result thread" not in err and "unexpected state" not in err


def test_cancel_a_task_that_has_not_started(tmp_path, capfd):
    marker = tmp_path / "ran"
    with shoal.ProcessPoolExecutor(1, **FAST) as ex:
        blocker = ex.submit(tasks.sleep_then, 0.5)
        queued = ex.submit(open, str(marker), "w")
        time.sleep(0.1)
        assert queued.cancel()
        assert queued.cancelled() and queued.done()
        with pytest.raises(concurrent.futures.CancelledError):
            queued.result()
        assert blocker.result(10) is None
        # The engine dropped it: it never runs, even once the worker is free.
        assert ex.submit(tasks.inc, 1).result(10) == 2
    assert not marker.exists()
    # The engine's own word that it dropped the task changes nothing, silently.
    assert quiet_dispatcher(capfd.readouterr().err)


def test_cancelled_futures_wake_as_completed(executor):
    blocker = executor.submit(tasks.sleep_then, 0.3)
    blocker2 = executor.submit(tasks.sleep_then, 0.3)
    queued = executor.submit(tasks.sleep_then, 5)
    queued.cancel()
    finished = list(concurrent.futures.as_completed([blocker, blocker2, queued], timeout=10))
    assert queued in finished
    assert not queued.cancel() or queued.cancelled()  # cancelling twice is harmless


def test_a_running_task_cannot_be_cancelled_and_finishes(executor):
    future = executor.submit(tasks.sleep_then, 0.5, "done")
    time.sleep(0.2)
    assert not future.cancel()
    assert future.running() and not future.cancelled()
    assert future.result(10) == "done"


def test_a_finished_future_cannot_be_cancelled(executor):
    future = executor.submit(tasks.inc, 1)
    future.result(10)
    assert not future.cancel()


def test_shutdown_with_cancel_futures_cancels_what_a_map_has_not_started():
    ex = shoal.ProcessPoolExecutor(1, **FAST)
    results = ex.map(tasks.sleep_then, [0.2] * 50, [1] * 50)
    time.sleep(0.1)
    started = time.monotonic()
    ex.shutdown(wait=True, cancel_futures=True)
    assert time.monotonic() - started < 3, "it ran the whole map"
    done = []
    with pytest.raises(concurrent.futures.CancelledError):
        for value in results:
            done.append(value)
    assert len(done) < 50


def test_shutdown_with_cancel_futures(tmp_path, capfd):
    ex = shoal.ProcessPoolExecutor(1, **FAST)
    running = ex.submit(tasks.sleep_then, 0.5, "finished")
    time.sleep(0.2)
    queued = [ex.submit(tasks.sleep_then, 5) for _ in range(5)]
    pids = worker_pids(ex)
    started = time.monotonic()
    ex.shutdown(wait=True, cancel_futures=True)
    assert time.monotonic() - started < 3
    assert all(f.cancelled() for f in queued)
    assert wait_gone(pids) == []
    assert quiet_dispatcher(capfd.readouterr().err)
    with pytest.raises(RuntimeError, match="cannot schedule new futures after shutdown"):
        ex.submit(tasks.inc, 1)
    # As with the stdlib, what a worker already had runs to its end.
    assert running.result(0) == "finished"


def test_shutdown_waits_for_the_work():
    ex = shoal.ProcessPoolExecutor(2, **FAST)
    futures = [ex.submit(tasks.sleep_then, 0.2, i) for i in range(4)]
    ex.shutdown(wait=True)
    assert [f.result(0) for f in futures] == [0, 1, 2, 3]


def test_shutdown_without_waiting_still_finishes_the_work():
    ex = shoal.ProcessPoolExecutor(2, **FAST)
    futures = [ex.submit(tasks.sleep_then, 0.2, i) for i in range(4)]
    ex.shutdown(wait=False)
    assert [f.result(10) for f in futures] == [0, 1, 2, 3]


def test_context_manager_waits(tmp_path):
    with shoal.ProcessPoolExecutor(2, **FAST) as ex:
        future = ex.submit(tasks.sleep_then, 0.2, "done")
    assert future.done() and future.result() == "done"


def test_map_in_order_with_chunks(executor):
    assert list(executor.map(tasks.add, range(20), range(20))) == [2 * x for x in range(20)]
    assert list(executor.map(tasks.square, range(50), chunksize=7)) == [x * x for x in range(50)]
    assert list(executor.map(tasks.square, [])) == []


def test_map_reads_its_input_lazily(executor):
    taken = []

    def numbers():
        for x in itertools.count():
            taken.append(x)
            yield x

    for result in executor.map(tasks.inc, numbers()):
        if result == 20:
            break
    time.sleep(0.2)
    assert len(taken) < 500


def test_map_of_large_items_keeps_few_bytes_in_flight(executor, monkeypatch):
    # The window is counted in calls, and also in pickled bytes: 100 kB items with a
    # 1 MiB budget put about 10 in flight, not the window's hundreds.
    monkeypatch.setattr(shoal._stream, "WINDOW_BYTES", 1 << 20)
    taken = []

    def blobs():
        for x in itertools.count():
            taken.append(x)
            yield bytes(100_000)

    results = executor.map(tasks.sleep_then, itertools.repeat(1.0), blobs())
    time.sleep(0.4)  # no call has ended: every item taken is in flight
    assert 2 <= len(taken) <= 12
    results.close()


def test_map_timeout(executor):
    results = executor.map(tasks.sleep_then, [0.01, 5])
    with pytest.raises(concurrent.futures.TimeoutError):
        list(executor.map(tasks.sleep_then, [0.01, 5], timeout=0.5))
    assert next(results) is None
    results.close()


def test_map_raises_the_failing_items_exception(executor):
    results = executor.map(tasks.fail_on, [1, 2, 3], [{2}] * 3)
    assert next(results) == 1
    with pytest.raises(ValueError, match="item 2 is bad"):
        next(results)
    with pytest.raises(StopIteration):
        next(results)


def test_options_view(executor):
    view = executor.options(timeout=0.5, retries=0)
    assert isinstance(view, concurrent.futures.Executor)
    with pytest.raises(shoal.TaskTimeout):
        view.submit(tasks.sleep_then, 30).result(10)
    assert view.submit(tasks.inc, 1).result(10) == 2
    view.shutdown()  # a view owns nothing
    assert executor.submit(tasks.inc, 2).result(10) == 3


def test_initializer_and_max_tasks_per_child():
    with shoal.ProcessPoolExecutor(
        1, initializer=tasks.initializer, initargs=(7,), max_tasks_per_child=2, **FAST
    ) as ex:
        assert [ex.submit(tasks.read_state).result(10) for _ in range(3)] == [7] * 3
        pids = {ex.submit(tasks.pid).result(10) for _ in range(4)}
    assert len(pids) >= 2


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(max_workers=0), ValueError, "max_workers must be at least 1"),
        (dict(max_tasks_per_child=0), ValueError, "max_tasks_per_child must be a positive int"),
        (dict(initializer="nope"), TypeError, "initializer must be a callable"),
    ],
)
def test_bad_arguments(kwargs, error, message):
    with pytest.raises(error, match=message):
        shoal.ProcessPoolExecutor(**kwargs)


def test_many_small_tasks(executor):
    futures = [executor.submit(tasks.inc, i) for i in range(2000)]
    assert [f.result(30) for f in futures] == list(range(1, 2001))


def test_a_dropped_executor_finishes_its_work_then_stops():
    ex = shoal.ProcessPoolExecutor(1, **FAST)
    future = ex.submit(tasks.sleep_then, 0.2, "kept")
    pids = worker_pids(ex)
    del ex
    assert future.result(10) == "kept"
    assert wait_gone(pids) == []


def test_submit_from_a_callback(executor):
    chained = concurrent.futures.Future()

    def again(future):
        chained.set_result(executor.submit(tasks.inc, future.result()))

    executor.submit(tasks.inc, 1).add_done_callback(again)
    assert chained.result(10).result(10) == 3


def test_worker_processes_are_fresh_interpreters(executor, monkeypatch):
    # Started by exec, not forked: what this process set is not there.
    monkeypatch.setattr(tasks, "MARK", "set in the caller", raising=False)
    mark, argv = executor.submit(tasks.parent_mark).result(10)
    assert mark is None
    assert argv[1:3] == [b"-c", _client.WORKER_CODE.encode()], argv
    assert executor.submit(os.getppid).result(10) == os.getpid()


def test_shutdown_from_a_callback_does_not_deadlock():
    ex = shoal.ProcessPoolExecutor(1, **FAST)
    done = concurrent.futures.Future()

    def stop(_):
        ex.shutdown(wait=True)
        done.set_result(True)

    ex.submit(tasks.inc, 1).add_done_callback(stop)
    assert done.result(10)
    ex.shutdown()


def test_a_batch_of_results_reaches_every_future_and_callback(executor):
    # Tiny calls come back in batches, settled together: every future ends, every done
    # callback runs once (in the dispatcher thread: they are added while the workers
    # are busy), even when one of them raises, SystemExit included.
    seen = []

    def note(future):
        seen.append(future.result())
        if future.result() == 500:
            raise SystemExit("a callback that exits")

    blockers = [executor.submit(tasks.sleep_then, 0.5) for _ in range(2)]
    time.sleep(0.1)
    futures = [executor.submit(tasks.inc, x) for x in range(2000)]
    cancelled = [f for f in futures[1000:1100] if f.cancel()]
    for future in futures:
        future.add_done_callback(note)
    assert not [f for f in futures if f.done() and not f.cancelled()], "the workers were busy"
    concurrent.futures.wait(blockers)
    done, pending = concurrent.futures.wait(futures, timeout=30)
    assert not pending
    kept = [(x, f) for x, f in enumerate(futures) if not f.cancelled()]
    assert all(f.result() == x + 1 for x, f in kept)
    kept = [f for _, f in kept]
    assert sorted(seen) == sorted(f.result() for f in kept)
    assert len(seen) == len(kept) == 2000 - len(cancelled)
    assert executor.submit(tasks.inc, 1).result(10) == 2
