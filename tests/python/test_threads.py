"""shoal.ThreadPool and shoal.ThreadPoolExecutor: the standard thread pools' behaviour,
on shoal's engine (priorities, options, the store), with timeouts that leave
stragglers."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import signal
import threading
import time

import pytest

import shoal
import tasks
from conftest import popen_script

# Shared with the worker threads: functions of this module are pickled by reference,
# so the threads see these very objects.
GATE = threading.Event()
RAN: list = []


def where(_=None):
    return os.getpid(), threading.current_thread().name


def wait_gate(value=None):
    assert GATE.wait(30)
    return value


def record(value):
    RAN.append(value)
    return value


def meet(barrier_name):
    globals()[barrier_name].wait(10)
    return True


BARRIER = threading.Barrier(8)
INIT_SEEN: list = []


def remember_init(lock, tag):
    with lock:  # a lock: the initializer's arguments are not pickled
        INIT_SEEN.append((tag, threading.current_thread().name))


@pytest.fixture(autouse=True)
def fresh_globals():
    GATE.clear()
    RAN.clear()
    BARRIER.reset()
    INIT_SEEN.clear()
    yield
    GATE.set()  # a straggler still waiting ends


def wait_until(condition, timeout=10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def test_executor_runs_calls_in_threads_of_this_process():
    with shoal.ThreadPoolExecutor(2) as ex:
        pid, name = ex.submit(where).result(10)
        assert pid == os.getpid() and name.startswith("shoal-thread-worker")
        assert ex.submit(tasks.add, 1, b=2).result(10) == 3
        assert list(ex.map(tasks.square, range(20))) == [x * x for x in range(20)]
        futures = [ex.submit(tasks.sleep_then, 0.05 * (n % 3), n) for n in range(6)]
        done = list(concurrent.futures.as_completed(futures, timeout=10))
        assert sorted(f.result() for f in done) == list(range(6))
        finished, pending = concurrent.futures.wait(futures, timeout=10)
        assert len(finished) == 6 and not pending


def test_calls_run_concurrently_on_as_many_threads():
    with shoal.ThreadPoolExecutor(8) as ex:
        futures = [ex.submit(meet, "BARRIER") for _ in range(8)]
        # Each waits for the 7 others: 8 at once, or the barrier breaks after 10 s.
        assert [f.result(30) for f in futures] == [True] * 8


def test_exceptions_carry_the_traceback(tmp_path):
    with shoal.ThreadPoolExecutor(1) as ex:
        error = ex.submit(tasks.boom, "broken").exception(10)
    assert isinstance(error, ValueError) and str(error) == "broken"
    assert isinstance(error.__cause__, shoal.errors.RemoteTraceback)
    assert "in boom" in str(error.__cause__)


def test_initializer_runs_once_per_thread_unpickled():
    lock = threading.Lock()
    with shoal.ThreadPoolExecutor(3, initializer=remember_init, initargs=(lock, "x")) as ex:
        assert [f.result(10) for f in [ex.submit(tasks.inc, n) for n in range(9)]]
    assert len(INIT_SEEN) == 3 and {tag for tag, _ in INIT_SEEN} == {"x"}
    assert len({name for _, name in INIT_SEEN}) == 3


def test_cancel_shutdown_and_context_manager():
    ex = shoal.ThreadPoolExecutor(1)
    blocker = ex.submit(wait_gate, "blocker")
    queued = ex.submit(record, "queued")
    assert wait_until(lambda: ex.stats().running == 1)
    assert queued.cancel() and queued.cancelled()
    GATE.set()
    assert blocker.result(10) == "blocker"
    ex.shutdown(wait=True)
    assert RAN == []
    with pytest.raises(RuntimeError, match="after shutdown"):
        ex.submit(tasks.inc, 1)
    with shoal.ThreadPoolExecutor(2) as ex:
        futures = [ex.submit(tasks.sleep_then, 0.1, n) for n in range(4)]
    assert all(f.done() for f in futures)  # the with block waited


def test_priorities_order_the_queue():
    with shoal.ThreadPoolExecutor(1) as ex:
        blocker = ex.submit(wait_gate)
        assert wait_until(lambda: ex.stats().running == 1)
        low = [ex.options(priority=0).submit(record, f"low{n}") for n in range(2)]
        high = ex.options(priority=5).submit(record, "high")
        GATE.set()
        for future in [blocker, high, *low]:
            future.result(10)
    assert RAN == ["high", "low0", "low1"]


def test_a_timeout_fails_the_call_at_once_and_leaves_a_straggler():
    with shoal.ThreadPoolExecutor(1) as ex:
        late = ex.options(timeout=0.3).submit(wait_gate, "late")
        with pytest.raises(shoal.TaskTimeout):
            late.result(10)
        # Its slot is free: the one worker place has a fresh thread.
        assert ex.submit(tasks.inc, 1).result(10) == 2
        assert ex.stats().stragglers == 1
        GATE.set()  # the old thread ends its call, finds its channel cut, ends
        assert wait_until(lambda: ex.stats().stragglers == 0)
        assert ex.submit(tasks.inc, 2).result(10) == 3


def test_thread_pool_is_a_drop_in_for_multiprocessing_thread_pool():
    with shoal.ThreadPool(3) as pool:
        assert pool.map(tasks.square, range(50)) == [x * x for x in range(50)]
        assert list(pool.imap(tasks.inc, range(10))) == list(range(1, 11))
        assert sorted(pool.imap_unordered(tasks.inc, range(10))) == list(range(1, 11))
        assert pool.starmap(tasks.add, [(1, 2), (3, 4)]) == [3, 7]
        got = []
        result = pool.apply_async(tasks.add, (2, 3), callback=got.append)
        assert result.get(10) == 5 and result.successful()
        assert wait_until(lambda: got == [5])
        assert pool.apply(where)[0] == os.getpid()
        with pytest.raises(ValueError, match="bad"):
            pool.apply(tasks.boom)
    pool = shoal.ThreadPool(2)
    results = pool.map_async(tasks.sleep_then, [0.05] * 6)
    pool.close()
    pool.join()
    assert results.ready() and results.get(0) == [None] * 6


def test_arguments_that_cannot_be_pickled_fail_their_call():
    with shoal.ThreadPoolExecutor(1) as ex:
        with pytest.raises(shoal.PicklingError):
            ex.submit(tasks.inc, threading.Lock()).result(10)
        assert ex.submit(tasks.inc, 1).result(10) == 2


def test_a_store_resumes_a_keyed_thread_job(tmp_path):
    store = str(tmp_path / "runs.db")
    with shoal.ThreadPool(2, store=store) as pool:
        assert pool.options(key="job").map(record, range(5)) == list(range(5))
    assert sorted(RAN) == list(range(5))
    RAN.clear()
    with shoal.ThreadPool(2, store=store) as pool:
        assert pool.options(key="job").map(record, range(5)) == list(range(5))
    assert RAN == []  # every call came from the store


def test_asyncio_and_resize_on_threads():
    async def main(ex):
        return await asyncio.gather(*(ex.submit_async(tasks.square, x) for x in range(10)))

    with shoal.ThreadPoolExecutor(2) as ex:
        assert asyncio.run(main(ex)) == [x * x for x in range(10)]
        ex.resize(4)
        assert len(ex.stats().workers) == 4
        assert ex.submit(tasks.inc, 1).result(10) == 2


def test_ctrl_c_in_a_thread_pool_map_ends_it():
    proc = popen_script(
        """
        import shoal, tasks
        with shoal.ThreadPool(2) as pool:
            print("waiting", flush=True)
            pool.map(tasks.sleep_then, [0.5] * 100, chunksize=1)
        """
    )
    try:
        assert proc.stdout.readline().strip() == "waiting"
        time.sleep(0.5)
        started = time.monotonic()
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "KeyboardInterrupt" in err
    assert proc.returncode != 0
    assert time.monotonic() - started < 10, "the map ran on after Ctrl-C"
