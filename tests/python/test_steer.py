"""`shoal.Store`: steering a live `shoal run` from Python through its store (cancel of
the run or of tasks, pause and unpause, set_jobs), and requests refused where they
cannot apply. Each test starts a real run of real tasks that mark themselves in files."""

from __future__ import annotations

import os
import subprocess
import time

import pytest

import shoal
from conftest import HERE

ROOT = os.path.dirname(os.path.dirname(HERE))
BINARY = os.environ.get("SHOAL_BIN") or os.path.join(ROOT, "target", "debug", "shoal")


def markers(directory, suffix: str) -> int:
    return sum(1 for name in os.listdir(directory) if name.endswith(suffix))


def wait_until(what: str, check, limit: float = 30.0) -> None:
    deadline = time.monotonic() + limit
    while not check():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.01)


def start_run(tmp_path, jobs: int, command: str, inputs: int, running: int):
    """`shoal run` of `command` over 1..=inputs, once `running` tasks have started."""
    store = tmp_path / "s.db"
    args = [BINARY, "--store", str(store), "run", "-j", str(jobs), "--no-progress", command]
    args += [":::"] + [str(n) for n in range(1, inputs + 1)]
    proc = subprocess.Popen(
        args, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        wait_until("tasks to start", lambda: markers(tmp_path, ".on") >= running)
    except BaseException:
        proc.kill()
        proc.communicate()
        raise
    return store, proc


def finish(proc, limit: float = 30.0) -> tuple[int, str]:
    try:
        _, err = proc.communicate(timeout=limit)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise
    return proc.returncode, err


def statuses(store) -> dict[str, int]:
    out = subprocess.run(
        [BINARY, "--store", str(store), "results", "--json"],
        capture_output=True, text=True, check=True,
    ).stdout
    import json

    counts: dict[str, int] = {}
    for line in out.splitlines():
        status = json.loads(line)["status"]
        counts[status] = counts.get(status, 0) + 1
    return counts


def test_cancel_of_the_whole_run_ends_it_as_interrupted(tmp_path):
    store, proc = start_run(tmp_path, 2, "touch {#}.on; exec sleep 30", 10, 2)
    asked = time.monotonic()
    said = shoal.Store(store).cancel(1)
    assert said == ["stopping the run: no new tasks, running ones get SIGTERM"]
    code, err = finish(proc)
    assert time.monotonic() - asked < 5, err
    assert code == 130, err
    assert statuses(store) == {"cancelled": 2, "queued": 8}


def test_cancel_of_tasks_pause_unpause_and_set_jobs(tmp_path):
    store, proc = start_run(tmp_path, 1, "touch {#}.on; sleep 0.3", 12, 1)
    steer = shoal.Store(store)
    assert steer.pause(1) == "paused: no new tasks until unpaused"
    time.sleep(0.6)
    started = markers(tmp_path, ".on")
    time.sleep(0.8)
    assert markers(tmp_path, ".on") == started, "a task started while paused"
    assert steer.cancel(1, tasks=[12]) == ["task 12 cancelled before it started"]
    assert steer.set_jobs(1, 3) == "slots 1 -> 3"
    assert steer.unpause(1) == "unpaused"
    code, err = finish(proc)
    assert code == 1, err  # a cancelled task counts against the run
    assert statuses(store) == {"succeeded": 11, "cancelled": 1}
    assert not (tmp_path / "12.on").exists()


def test_requests_that_cannot_apply_are_refused(tmp_path):
    with pytest.raises(shoal.StoreError, match="no store here"):
        shoal.Store(tmp_path / "missing.db")
    store, proc = start_run(tmp_path, 1, "touch {#}.on; exec sleep 30", 2, 1)
    steer = shoal.Store(store)
    with pytest.raises(shoal.ControlRefused, match="run 1 has no task 5"):
        steer.cancel(1, tasks=[5])
    with pytest.raises(ValueError, match="must be from 1 to 4096"):
        steer.set_jobs(1, 0)
    with pytest.raises(shoal.ControlRefused, match="no run 4 in the store"):
        steer.pause(4)
    steer.cancel(1)
    finish(proc)
    with pytest.raises(shoal.ControlRefused, match=r"run 1 has ended \(interrupted\)"):
        steer.unpause(1)
    # ControlRefused is a ValueError, for code that catches the standard one.
    assert issubclass(shoal.ControlRefused, ValueError)


def test_a_pool_with_a_store_takes_pause_unpause_and_cancel(tmp_path):
    store = tmp_path / "p.db"
    with shoal.Pool(1, store=str(store)) as pool:
        first = pool.apply_async(time.sleep, (0.5,))  # task 1
        wait_until("the first call to start", lambda: statuses(store).get("running") == 1)
        steer = shoal.Store(store)
        assert steer.pause(1) == "paused: no new calls until unpaused"
        later = [pool.apply_async(os.getpid) for _ in range(3)]  # tasks 2, 3, 4
        first.get(timeout=30)
        time.sleep(0.5)
        assert not any(r.ready() for r in later), "a call started while paused"
        assert steer.cancel(1, tasks=[3]) == ["task 3 cancelled before it started"]
        assert steer.unpause(1) == "unpaused"
        assert later[0].get(timeout=30) > 0
        with pytest.raises(shoal.TaskCancelled):
            later[1].get(timeout=30)
        assert later[2].get(timeout=30) > 0
    assert statuses(store) == {"succeeded": 3, "cancelled": 1}


def test_jobs_resizes_a_pool_while_it_runs(tmp_path):
    store = tmp_path / "p.db"
    with shoal.Pool(1, store=str(store)) as pool:
        steer = shoal.Store(store)
        assert steer.set_jobs(1, 2) == "workers 1 -> 2"
        # Two workers: two calls run at once.
        both = [pool.apply_async(time.sleep, (2,)) for _ in range(2)]
        wait_until("two calls at once", lambda: statuses(store).get("running") == 2)
        # Down while both run: they finish, and the one worker left runs the rest.
        assert steer.set_jobs(1, 1) == "workers 2 -> 1"
        for result in both:
            result.get(timeout=30)
        after = {pool.apply_async(os.getpid).get(timeout=30) for _ in range(20)}
        assert len(after) == 1, f"calls ran in {len(after)} workers after jobs 1"
        # The worker taken away exits and is not replaced.
        slots = lambda: [w.slot for w in pool.stats().workers]  # noqa: E731
        wait_until("the worker taken away to exit", lambda: slots() == [1])
        time.sleep(0.5)
        assert slots() == [1]
        assert steer.set_jobs(1, 3) == "workers 1 -> 3"
        assert slots() == [1, 2, 3]
        slow = [pool.apply_async(time.sleep, (2,)) for _ in range(3)]
        wait_until("three calls at once", lambda: statuses(store).get("running") == 3)
        for result in slow:
            result.get(timeout=30)
    assert statuses(store) == {"succeeded": 25}


def test_cancel_of_a_pools_run_terminates_it(tmp_path):
    store = tmp_path / "p.db"
    pool = shoal.Pool(1, store=str(store))
    try:
        running = pool.apply_async(time.sleep, (30,))
        waiting = pool.apply_async(os.getpid)
        wait_until("the first call to start", lambda: statuses(store).get("running") == 1)
        said = shoal.Store(store).cancel(1)
        assert said == ["the pool was terminated: its workers killed, its calls cancelled"]
        for result in (running, waiting):
            with pytest.raises(shoal.TaskCancelled):
                result.get(timeout=10)
    finally:
        pool.terminate()
        pool.join()
    out = subprocess.run(
        [BINARY, "--store", str(store), "runs", "--json"], capture_output=True, text=True
    ).stdout
    assert '"status":"interrupted"' in out.replace(" ", ""), out


def test_jobs_on_an_elastic_pool_sets_its_maximum(tmp_path):
    store = tmp_path / "p.db"
    with shoal.Pool(3, min_processes=1, idle_timeout=60, store=str(store)) as pool:
        said = shoal.Store(store).set_jobs(1, 2)
        assert "(elastic: 1 to 2)" in said, said
        # A burst grows the pool to its new maximum, never to the 3 it started with.
        burst = [pool.apply_async(time.sleep, (1.5,)) for _ in range(6)]
        seen = set()
        deadline = time.monotonic() + 30
        while not all(r.ready() for r in burst) and time.monotonic() < deadline:
            seen.add(statuses(store).get("running", 0))
            time.sleep(0.05)
        for result in burst:
            result.get(timeout=30)
        assert max(seen) == 2, f"calls running at once: {sorted(seen)}"
    assert statuses(store) == {"succeeded": 6}
