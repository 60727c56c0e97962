"""Elastic pools: pool.resize(n), and min/idle_timeout bounds that grow a pool while
calls wait and retire idle workers (real processes, generous timeouts)."""

from __future__ import annotations

import os
import threading
import time

import pytest

import shoal
import tasks
from conftest import worker_children


def wait_until(what: str, check, limit: float = 30.0) -> None:
    deadline = time.monotonic() + limit
    while not check():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.01)


def live_pids(pool) -> set[int]:
    """The pids of the pool's workers that are alive now (its stats, checked in /proc)."""
    children = set(worker_children())
    return {w.pid for w in pool.stats().workers if w.pid and w.pid in children}


def running(pool) -> int:
    return pool.stats().running


@pytest.mark.parametrize("front", ["pool", "executor"])
def test_resize_up_and_down_runs_calls_in_that_many_workers_at_once(front):
    if front == "pool":
        pool = shoal.Pool(1)
        submit = lambda fn, *args: pool.apply_async(fn, args).get  # noqa: E731
    else:
        pool = shoal.ProcessPoolExecutor(1)
        submit = lambda fn, *args: pool.submit(fn, *args).result  # noqa: E731
    try:
        assert len(live_pids(pool)) <= 1
        pool.resize(3)
        # Three calls run at once, each in its own worker.
        slow = [submit(tasks.sleep_pid, 2) for _ in range(3)]
        wait_until("three calls at once", lambda: running(pool) == 3)
        assert len(live_pids(pool)) == 3
        # Down while they run: none is killed, and the one worker left runs the rest.
        pool.resize(1)
        pids = {result(timeout=30) for result in slow}
        assert len(pids) == 3, f"three calls ran in {len(pids)} workers"
        wait_until("the workers taken away to exit", lambda: len(live_pids(pool)) == 1)
        after = {submit(os.getpid)(timeout=30) for _ in range(20)}
        assert after == live_pids(pool), f"calls ran in {after} after resize(1)"
        # And up again.
        pool.resize(2)
        both = [submit(tasks.sleep_pid, 2) for _ in range(2)]
        wait_until("two calls at once", lambda: running(pool) == 2)
        assert len({result(timeout=30) for result in both}) == 2
    finally:
        if front == "pool":
            pool.terminate()
        else:
            pool.shutdown(cancel_futures=True)


@pytest.mark.parametrize("bad", [0, -1, 1.5, "2", True, None, 2**40])
def test_resize_refuses_a_bad_count_naming_it(pool, bad):
    with pytest.raises(ValueError, match=r"resize: n"):
        pool.resize(bad)
    assert pool.apply(tasks.add, (1, 2)) == 3


def test_resize_refuses_a_closed_pool_and_executor():
    pool = shoal.Pool(1)
    pool.close()
    with pytest.raises(ValueError, match="Pool not running"):
        pool.resize(2)
    pool.join()
    executor = shoal.ProcessPoolExecutor(1)
    executor.shutdown()
    with pytest.raises(ValueError, match="after shutdown"):
        executor.resize(2)


def test_resize_stays_within_the_memory_limits_cgroups():
    with shoal.Pool(2, memory_limit="256M") as pool:
        try:
            pool.resize(3)
        except ValueError as exc:
            # Under cgroups: one per worker, made at the start.
            assert "n=3" in str(exc) and "cgroups" in str(exc), exc
            assert len(pool.stats().workers) == 2
        else:
            # Under RLIMIT_AS each worker has its own limit: no budget to exceed.
            assert len(pool.stats().workers) == 3
        pool.resize(1)
        assert pool.apply(tasks.add, (1, 2)) == 3


@pytest.mark.parametrize("front", ["pool", "executor"])
def test_an_elastic_pool_grows_under_a_burst_and_falls_back_to_its_minimum_when_idle(front):
    if front == "pool":
        pool = shoal.Pool(3, min_processes=1, idle_timeout=0.5)
        run = lambda items: [  # noqa: E731
            r.get(timeout=60) for r in [pool.apply_async(tasks.sleep_then, (1.0, i)) for i in items]
        ]
    else:
        pool = shoal.ProcessPoolExecutor(3, min_workers=1, idle_timeout=0.5)
        run = lambda items: list(  # noqa: E731
            pool.map(tasks.sleep_then, [1.0] * len(items), items, timeout=60)
        )
    try:
        wait_until("the first worker", lambda: len(live_pids(pool)) == 1)
        time.sleep(1)
        assert len(live_pids(pool)) == 1, "an elastic pool starts its minimum"
        results = {}
        burst = threading.Thread(target=lambda: results.update(out=run(list(range(9)))))
        burst.start()
        wait_until("three workers under the burst", lambda: len(live_pids(pool)) == 3)
        burst.join(60)
        assert results["out"] == list(range(9)), "a call was lost"
        # Idle: back to one worker, and it still works.
        wait_until("the idle workers to be retired", lambda: len(live_pids(pool)) == 1)
        time.sleep(1)
        assert len(live_pids(pool)) == 1, "retired down to the minimum, not below"
        assert run([7]) == [7]
    finally:
        if front == "pool":
            pool.terminate()
        else:
            pool.shutdown()


def test_without_bounds_a_pool_starts_every_worker_and_keeps_them():
    with shoal.Pool(3) as pool:
        wait_until("three workers", lambda: len(live_pids(pool)) == 3)
        before = live_pids(pool)
        time.sleep(1.5)
        assert live_pids(pool) == before


@pytest.mark.parametrize(
    "kwargs, named",
    [
        ({"processes": 2, "min_processes": 3}, "min_processes"),
        ({"processes": 2, "min_processes": -1}, "min_processes"),
        ({"processes": 2, "min_processes": 0}, "min_processes"),
        ({"processes": 2, "idle_timeout": 0}, "idle_timeout"),
        ({"processes": 2, "idle_timeout": -1.5}, "idle_timeout"),
    ],
)
def test_elastic_bounds_are_checked_naming_the_argument(kwargs, named):
    with pytest.raises(ValueError, match=named):
        shoal.Pool(**kwargs)
    kwargs = {
        {"processes": "max_workers", "min_processes": "min_workers"}.get(k, k): v
        for k, v in kwargs.items()
    }
    with pytest.raises(ValueError, match=named.replace("processes", "workers")):
        shoal.ProcessPoolExecutor(**kwargs)


def test_an_elastic_executor_shut_down_with_calls_waiting_still_grows_to_run_them():
    executor = shoal.ProcessPoolExecutor(3, min_workers=1)
    try:
        futures = [executor.submit(tasks.sleep_then, 1.0, i) for i in range(6)]
        executor.shutdown(wait=False)
        wait_until("three workers for the calls left", lambda: len(live_pids(executor)) == 3)
        assert [f.result(timeout=60) for f in futures] == list(range(6))
    finally:
        executor.shutdown(wait=True)
