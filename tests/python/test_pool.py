"""shoal.Pool against multiprocessing.Pool's API and behaviour."""

from __future__ import annotations

import functools
import itertools
import multiprocessing
import os
import threading
import time

import pytest

import shoal
import tasks
from conftest import FAST, run_script, wait_gone, worker_children, worker_pids


def test_apply_and_apply_async(pool):
    assert pool.apply(tasks.add, (1,), {"b": 2}) == 3
    result = pool.apply_async(tasks.add, (2, 3))
    assert result.get(timeout=10) == 5
    assert result.ready() and result.successful()


def test_callbacks_run_before_get_returns(pool):
    got, errors = [], []
    ok = pool.apply_async(tasks.inc, (1,), callback=got.append, error_callback=errors.append)
    bad = pool.apply_async(tasks.boom, callback=got.append, error_callback=errors.append)
    assert ok.get(10) == 2
    with pytest.raises(ValueError):
        bad.get(10)
    assert got == [2]
    assert len(errors) == 1 and isinstance(errors[0], ValueError)


def test_a_callback_that_raises_does_not_stop_the_pool(pool, capfd):
    def broken(_):
        raise RuntimeError("callback bug")

    result = pool.apply_async(tasks.inc, (1,), callback=broken)
    assert result.get(10) == 2
    assert pool.apply(tasks.inc, (2,)) == 3
    assert "callback bug" in capfd.readouterr().err


def test_async_result_states(pool):
    result = pool.apply_async(tasks.sleep_then, (0.5, "late"))
    assert not result.ready()
    with pytest.raises(ValueError, match="not ready"):
        result.successful()
    with pytest.raises(multiprocessing.TimeoutError):
        result.get(timeout=0.05)
    result.wait(0.05)
    assert not result.ready()
    result.wait()
    assert result.ready() and result.successful() and result.get() == "late"
    failed = pool.apply_async(tasks.boom)
    failed.wait(10)
    assert not failed.successful()


def test_results_wait_for_their_own_call_while_others_end(pool):
    # A pool's results share one condition: other results' ends wake a waiter, which
    # must go on waiting for its own.
    assert pool.apply(tasks.inc, (0,)) == 1  # both workers up: the times below hold
    slow = pool.apply_async(tasks.sleep_then, (1.0, "slow"))
    quick = [pool.apply_async(tasks.sleep_then, (0.05 * n, n)) for n in range(1, 4)]
    with pytest.raises(multiprocessing.TimeoutError):
        slow.get(timeout=0.7)  # the quick ones end meanwhile (0.3 s on the other worker)
    assert all(result.ready() for result in quick)
    slow.wait(timeout=0.05)
    assert not slow.ready()
    assert slow.get(timeout=10) == "slow"


def test_map_and_starmap_keep_order(pool):
    assert pool.map(tasks.square, range(100)) == [x * x for x in range(100)]
    assert pool.map(tasks.square, (x for x in range(10))) == [x * x for x in range(10)]
    assert pool.map(tasks.square, []) == []
    assert pool.map(tasks.square, range(50), chunksize=7) == [x * x for x in range(50)]
    assert pool.starmap(tasks.add, [(1, 2), (3, 4)]) == [3, 7]
    assert pool.starmap(tasks.add, [(x, x) for x in range(30)], chunksize=4) == [
        2 * x for x in range(30)
    ]


def test_map_async_and_starmap_async(pool):
    seen = []
    result = pool.map_async(tasks.inc, range(20), callback=seen.append)
    assert result.get(10) == list(range(1, 21))
    assert seen == [list(range(1, 21))]
    assert pool.starmap_async(tasks.add, [(1, 1)] * 5).get(10) == [2] * 5
    empty = []
    assert pool.map_async(tasks.inc, [], callback=empty.append).get(1) == [] and empty == [[]]


def test_map_raises_the_first_failed_items_exception(pool):
    errors = []
    starred = pool.starmap_async(
        tasks.fail_on, [(x, {3, 7}) for x in range(10)], error_callback=errors.append
    )
    with pytest.raises(ValueError, match="item 3 is bad"):
        starred.get(10)
    assert isinstance(errors[-1], ValueError)
    with pytest.raises(ValueError, match="item 3 is bad"):
        pool.starmap(tasks.fail_on, [(x, {3, 7}) for x in range(10)], chunksize=3)


def test_imap_and_imap_unordered(pool):
    assert list(pool.imap(tasks.square, range(30))) == [x * x for x in range(30)]
    assert list(pool.imap(tasks.square, range(30), chunksize=1)) == [x * x for x in range(30)]
    assert list(pool.imap(tasks.square, iter(range(30)), chunksize=4)) == [x * x for x in range(30)]
    assert sorted(pool.imap_unordered(tasks.square, range(30))) == sorted(x * x for x in range(30))
    assert sorted(pool.imap_unordered(tasks.square, range(30), chunksize=1)) == sorted(
        x * x for x in range(30)
    )
    assert list(pool.imap(tasks.square, [])) == []


def test_imap_raises_at_the_failed_item_and_goes_on(pool):
    results = pool.imap(tasks.square, [1, "x", 3], chunksize=1)
    assert next(results) == 1
    with pytest.raises(TypeError):
        next(results)
    assert next(results) == 9
    with pytest.raises(StopIteration):
        next(results)


def test_imap_next_with_a_timeout(pool):
    results = pool.imap(tasks.sleep_then, [0.5], chunksize=1)
    with pytest.raises(multiprocessing.TimeoutError):
        results.next(timeout=0.05)
    assert results.next(timeout=10) is None


def test_imap_reads_its_input_lazily(pool):
    taken = []

    def numbers():
        for x in itertools.count():
            taken.append(x)
            yield x

    results = pool.imap(tasks.inc, numbers(), chunksize=1)
    assert [next(results) for _ in range(10)] == list(range(1, 11))
    time.sleep(0.3)
    # A bounded window ahead of the reader, never the whole (endless) input.
    assert len(taken) < 300
    del results


def test_imap_input_that_raises(pool):
    def numbers():
        yield 1
        yield 2
        raise LookupError("input broke")

    results = pool.imap(tasks.inc, numbers(), chunksize=1)
    assert next(results) == 2
    assert next(results) == 3
    with pytest.raises(LookupError, match="input broke"):
        next(results)
    with pytest.raises(StopIteration):
        next(results)


def test_close_then_join_finishes_the_work(pool):
    results = pool.map_async(tasks.sleep_then, [(0.1)] * 4)
    unread = pool.imap(tasks.inc, range(500), chunksize=1)
    pids = worker_pids(pool)
    pool.close()
    with pytest.raises(ValueError, match="Pool not running"):
        pool.apply(tasks.inc, (1,))
    pool.join()
    assert results.get(0) == [None] * 4
    assert list(unread) == list(range(1, 501))
    assert wait_gone(pids) == []


def test_join_before_close_is_an_error(pool):
    with pytest.raises(ValueError, match="still running"):
        pool.join()


def test_the_context_manager_terminates(pool):
    with shoal.Pool(2, **FAST) as p:
        pending = p.apply_async(tasks.sleep_then, (30,))
        pids = worker_pids(p)
    assert wait_gone(pids) == []
    with pytest.raises(shoal.TaskCancelled):
        pending.get(5)
    with pytest.raises(ValueError):
        p.apply_async(tasks.inc, (1,))


def test_terminate_fails_unfinished_results_and_stops_workers():
    p = shoal.Pool(2, **FAST)
    pids = worker_pids(p)
    running = [p.apply_async(tasks.sleep_then, (30,)) for _ in range(4)]
    mapped = p.map_async(tasks.sleep_then, [30] * 50)
    iterated = p.imap(tasks.sleep_then, [30] * 50, chunksize=1)
    time.sleep(0.2)
    started = time.monotonic()
    p.terminate()
    p.join()
    assert time.monotonic() - started < 3
    for result in running:
        with pytest.raises(shoal.TaskCancelled):
            result.get(1)
    with pytest.raises(shoal.TaskCancelled):
        mapped.get(1)
    with pytest.raises(shoal.TaskCancelled):
        iterated.next(1)
    assert wait_gone(pids) == []


def test_initializer_and_initargs():
    with shoal.Pool(2, initializer=tasks.initializer, initargs=("ready",), **FAST) as p:
        assert p.map(tasks.read_state, range(4)) == ["ready"] * 4


def test_maxtasksperchild_replaces_workers():
    with shoal.Pool(1, maxtasksperchild=2, **FAST) as p:
        pids = [p.apply(tasks.pid) for _ in range(6)]
    assert len(set(pids)) == 3


def test_functions_defined_in_main_lambdas_and_closures():
    done = run_script(
        """
        import shoal

        class Point:
            def __init__(self, x):
                self.x = x

        def double(p):
            return Point(p.x * 2)

        if __name__ == "__main__":
            k = 10
            with shoal.Pool(2) as pool:
                print(pool.apply(lambda x: x + k, (1,)))
                print([p.x for p in pool.map(double, [Point(1), Point(2)])])
                print(isinstance(pool.apply(double, (Point(3),)), Point))
        """
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["11", "[2,", "4]", "True"]


def test_stats_describe_each_worker(pool):
    pool.map(tasks.inc, range(10), chunksize=1)
    stats = pool.stats()
    assert len(stats.workers) == 2
    assert sum(w.tasks for w in stats.workers) == 10
    assert stats.calls == stats.calls_done == 10
    assert {w.slot for w in stats.workers} == {1, 2}
    assert all(w.pid for w in stats.workers)
    assert "slot" in str(stats)


def test_stats_measure_each_workers_time_and_size(pool1):
    for seconds in [0.05] * 4 + [0.2]:
        pool1.apply(tasks.sleep_then, (seconds,))
    time.sleep(0.3)  # a heartbeat (every 0.1 s) has told the worker's size since
    (worker,) = pool1.stats().workers
    assert worker.tasks == 5 and worker.restarts == 0
    assert 0.4 <= worker.busy < 1.0, worker
    assert 0.08 <= worker.mean < 0.2, worker  # (4 * 0.05 + 0.2) / 5
    assert 0.2 <= worker.p95 < 0.4, worker  # the slowest of 5
    assert 5 << 20 < worker.rss < 1 << 30, worker  # a Python interpreter's resident size


def test_a_pool_wide_key_makes_the_whole_job_resumable(tmp_path):
    path, marks = tmp_path / "results.db", tmp_path / "marks"
    marks.mkdir()
    work = functools.partial(tasks.counted, str(marks))
    for _ in range(2):
        with shoal.Pool(2, store=path, key="job") as p:
            assert p.map(work, range(5)) == [0, 10, 20, 30, 40]
            assert p.apply(work, (7,)) == 70
    assert len(os.listdir(marks)) == 6, "the second run reused every stored result"


def test_cost_hints_start_the_longest_first(pool1, tmp_path):
    log = str(tmp_path / "log")
    blocker = pool1.apply_async(tasks.sleep_then, (0.3,))
    time.sleep(0.1)  # the worker is busy: the others queue behind it
    hinted = [
        pool1.options(cost=cost).apply_async(tasks.log_pid, (log, f"cost{cost}"))
        for cost in [1, 5, 3, None]
    ]
    for result in [blocker, *hinted]:
        result.get(10)
    order = [line.split()[1] for line in open(log).read().splitlines()]
    assert order == ["cost5", "cost3", "cost1", "costNone"]


def test_a_worker_takes_the_key_it_ran_last_first(pool1, tmp_path):
    # The worker is busy with a task of key "a"; "b" and then "a" queue behind it. When
    # it asks for its next task it gets the "a" one, before the older "b".
    log = str(tmp_path / "log")
    busy = pool1.options(key="a").apply_async(tasks.log_pid, (log, "a0", 0.3))
    time.sleep(0.1)
    queued = [
        pool1.options(key=key).apply_async(tasks.log_pid, (log, f"{key}1"))
        for key in ("b", "a")
    ]
    for result in [busy, *queued]:
        result.get(10)
    assert [line.split()[1] for line in open(log).read().splitlines()] == ["a0", "a1", "b1"]


def test_options_view_sets_priority_per_call(pool1):
    order = []
    blocker = pool1.apply_async(tasks.sleep_then, (0.3,))
    low = [
        pool1.apply_async(tasks.inc, (i,), callback=lambda v: order.append(("low", v)))
        for i in range(3)
    ]
    urgent = pool1.options(priority=10)
    high = urgent.apply_async(tasks.inc, (100,), callback=lambda v: order.append(("high", v)))
    for result in [blocker, high, *low]:
        result.get(10)
    assert order[0] == ("high", 101)
    assert repr(urgent).startswith("<shoal.PoolOptions")
    assert urgent.options(priority=1)._options.priority == 1


def test_progress_bar(capfd):
    with shoal.Pool(2, progress=True, **FAST) as p:
        p.map(tasks.inc, range(50))
        p.close()
        p.join()
    err = capfd.readouterr().err
    assert "shoal [" in err and "50/50" in err


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(processes=0), ValueError, "processes must be at least 1"),
        (dict(processes="2"), TypeError, "processes must be an int"),
        (dict(initializer=5), TypeError, "initializer must be a callable"),
        (dict(maxtasksperchild=0), ValueError, "maxtasksperchild must be a positive int"),
        (dict(memory_limit="lots"), ValueError, "memory_limit='lots' is not a size"),
        (dict(timeout=-1), ValueError, "timeout must be a number of seconds above 0"),
        (dict(timeout=1e19), ValueError, "timeout must be a number of seconds .* at most 1e"),
        (dict(heartbeat_timeout=1e300), ValueError, "heartbeat_timeout must be .* at most"),
        (dict(cost=1e300), ValueError, "cost must be a number of seconds from 0 to"),
        (dict(memory_limit=2**64), ValueError, "memory_limit must be less than 8 EiB"),
        (dict(memory_limit="1k"), ValueError, "memory_limit must be at least 32M .*, not '1k'"),
        (dict(memory_limit=(32 << 20) - 1), ValueError, "memory_limit must be at least 32M"),
        (dict(cpu_affinity=[4000]), ValueError, "cpu_affinity lists CPU 4000, which this process"),
        (dict(retries=-1), ValueError, "retries must be 0 or more"),
        (dict(cpu_affinity=[-1]), ValueError, "cpu_affinity must list CPU numbers"),
        (dict(heartbeat=1, heartbeat_timeout=0.5), ValueError, "heartbeat_timeout"),
        (dict(store=5), TypeError, "store must be a path"),
    ],
)
def test_bad_arguments_are_refused_clearly(kwargs, error, message):
    with pytest.raises(error, match=message):
        shoal.Pool(**kwargs)
    assert worker_children() == []


# pytest catches a thread's exception before it reaches stderr: fail on it instead.
@pytest.mark.filterwarnings("error::pytest.PytestUnhandledThreadExceptionWarning")
@pytest.mark.parametrize("chunksize", [1, 2, None])
def test_a_starmap_item_that_is_not_a_tuple_fails_as_a_typeerror(pool, chunksize, capfd):
    with pytest.raises(TypeError, match="after \\* must be an iterable"):
        pool.starmap(tasks.add, [(1,), 2, (3,)], chunksize=chunksize)
    assert pool.starmap(tasks.add, [(1,), (3,)], chunksize=chunksize) == [1, 3]
    assert "Exception in thread" not in capfd.readouterr().err


def test_chunksize_must_be_positive(pool):
    with pytest.raises(ValueError, match="chunksize"):
        pool.map(tasks.inc, range(3), chunksize=0)


def test_same_answers_as_multiprocessing(pool):
    with multiprocessing.get_context("fork").Pool(2) as std:
        for name, args in [
            ("map", (tasks.square, range(40))),
            ("starmap", (tasks.add, [(1, 2), (3, 4)])),
        ]:
            assert getattr(pool, name)(*args) == getattr(std, name)(*args)
        assert list(pool.imap(tasks.square, range(9))) == list(std.imap(tasks.square, range(9)))
        assert pool.apply(tasks.add, (1, 2)) == std.apply(tasks.add, (1, 2))


def test_a_dropped_pool_stops_its_workers():
    p = shoal.Pool(2, **FAST)
    pids = worker_pids(p)
    # Dropped running, it warns as multiprocessing's pool does (test_delivery has both).
    with pytest.warns(ResourceWarning, match="unclosed running multiprocessing pool") as caught:
        del p
    del caught  # its warning holds the pool
    assert wait_gone(pids) == []


def test_pools_cannot_be_pickled(pool):
    import pickle

    with pytest.raises(NotImplementedError):
        pickle.dumps(pool)


def test_calls_from_many_threads(pool):
    results = []

    def work(base):
        results.extend(pool.map(tasks.inc, range(base, base + 50)))

    threads = [threading.Thread(target=work, args=(i * 100,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == sorted(x + 1 for i in range(4) for x in range(i * 100, i * 100 + 50))


def test_workers_see_the_callers_sys_path(pool, tmp_path, monkeypatch):
    (tmp_path / "helper_mod_xyz.py").write_text("def f(x):\n    return x * 3\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import helper_mod_xyz

    with shoal.Pool(1, **FAST) as p:
        assert p.apply(helper_mod_xyz.f, (2,)) == 6


def test_cwd_is_the_callers(pool):
    assert pool.apply(os.getcwd) == os.getcwd()


def test_cpu_affinity_pins_workers():
    with shoal.Pool(2, cpu_affinity=[0], **FAST) as p:
        assert p.map(tasks.affinity, range(2), chunksize=1) == [[0], [0]]


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs 2 CPUs")
def test_cpu_affinity_true_gives_each_worker_a_cpu_of_its_own():
    cpus = sorted(os.sched_getaffinity(0))[:2]
    with shoal.Pool(2, cpu_affinity=True, **FAST) as p:
        seen = p.map(tasks.sleep_then_affinity, [0.1] * 6, chunksize=1)
    by_worker = dict(seen)
    assert len(by_worker) == 2, seen
    assert sorted(by_worker.values()) == [[cpus[0]], [cpus[1]]], seen


def test_a_worker_grown_past_max_memory_per_child_is_replaced_before_its_next_task():
    # No heartbeat in between (one per 10 s): the size is read as each task ends.
    with shoal.Pool(1, max_memory_per_child="60M", heartbeat=10, heartbeat_timeout=30) as p:
        pids = [p.apply(tasks.keep_then_pid, (100,)) for _ in range(3)]
    assert len(set(pids)) == 3, pids


def test_max_memory_per_child_recycles_workers():
    # Every worker is past 1 KiB: each one is replaced once a heartbeat has said so.
    with shoal.Pool(1, max_memory_per_child="1K", **FAST) as p:
        first = p.apply(tasks.pid)
        time.sleep(0.5)
        assert p.apply(tasks.pid) != first
        assert p.stats().workers[0].restarts >= 1
