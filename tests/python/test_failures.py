"""Every failure of the issue's list, with real kills, hangs and memory hogs: each one
reaches only its own task, carries its reason, and leaves the pool usable."""

from __future__ import annotations

import collections
import concurrent.futures
import functools
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

import shoal
import tasks
from conftest import FAST, HERE, popen_script, run_script, wait_gone, worker_pids


def test_an_exception_is_re_raised_with_the_workers_traceback(pool):
    with pytest.raises(ValueError, match="bad") as caught:
        pool.apply(tasks.boom)
    cause = caught.value.__cause__
    assert isinstance(cause, shoal.errors.RemoteTraceback)
    assert "tasks.py" in str(cause) and "in boom" in str(cause)
    assert "raise ValueError(message)" in str(cause)


def test_a_worker_killed_by_sigkill_is_retried_then_reported(pool):
    started = time.monotonic()
    with pytest.raises(shoal.WorkerCrashed) as caught:
        pool.apply(tasks.kill_self)
    error = caught.value
    assert error.signal == signal.SIGKILL and error.attempts == 2
    assert "SIGKILL" in str(error) and "2 attempts" in str(error)
    assert time.monotonic() - started < 5
    assert pool.apply(tasks.inc, (1,)) == 2  # the pool goes on


def test_a_crash_that_a_retry_cures(pool, tmp_path):
    marker = str(tmp_path / "crashed-once")
    assert pool.apply(tasks.kill_self_once, (marker, "second try")) == "second try"


def test_no_retry_when_retries_is_zero(pool, tmp_path):
    marker = str(tmp_path / "crashed-once")
    with pytest.raises(shoal.WorkerCrashed) as caught:
        pool.options(retries=0).apply(tasks.kill_self_once, (marker, "never"))
    assert caught.value.attempts == 1


def test_a_segfault_names_its_signal(pool):
    with pytest.raises(shoal.WorkerCrashed, match="SIGSEGV") as caught:
        pool.apply(tasks.segfault)
    assert caught.value.signal == signal.SIGSEGV
    assert caught.value.attempts == 2, "retried once, by default"
    assert pool.apply(tasks.inc, (1,)) == 2


def test_a_worker_exiting_names_its_status(pool):
    with pytest.raises(shoal.WorkerCrashed, match="status 3") as caught:
        pool.apply(os._exit, (3,))
    assert caught.value.exit_status == 3


@pytest.mark.parametrize("kind, error", [("exit", SystemExit), ("interrupt", KeyboardInterrupt)])
def test_systemexit_and_keyboardinterrupt_in_a_task_are_its_answer(tmp_path, kind, error):
    # As concurrent.futures does: the exception is the task's outcome, raised in the
    # caller; the worker lives on and the task runs once.
    with shoal.ProcessPoolExecutor(1, **FAST) as executor:
        future = executor.submit(tasks.raise_base, str(tmp_path), kind)
        with pytest.raises(error):
            future.result(20)
        assert executor.submit(tasks.inc, 1).result(20) == 2
        assert executor.stats().workers[0].restarts == 0
    assert len(os.listdir(tmp_path)) == 1


def test_a_long_call_holding_the_gil_is_busy_not_hung():
    # sum(range(10**8)) keeps the GIL for about 1.7 s here: the worker's heartbeat
    # thread cannot run, but its CPU time grows, so it is not taken for hung.
    with shoal.ProcessPoolExecutor(1, heartbeat=0.05, heartbeat_timeout=0.4) as executor:
        assert executor.submit(sum, range(10**8)).result(60) == 4999999950000000
        assert executor.stats().workers[0].restarts == 0


def test_a_result_too_large_to_carry_back_fails_that_task_clearly(tmp_path):
    with shoal.ProcessPoolExecutor(1) as executor:
        with pytest.raises(shoal.PicklingError, match="bytes pickled, over the"):
            executor.submit(tasks.big_bytes, 1 << 30).result(60)
        assert executor.submit(tasks.inc, 1).result(20) == 2
        assert executor.stats().workers[0].restarts == 0


def test_a_crash_in_a_chunk_splits_it_at_once(tmp_path):
    # The chunk is not retried whole: its items run again alone at once, each with its
    # own retry, so an innocent item runs twice at most and the culprit three times
    # (once in the chunk, then its two attempts alone).
    work = functools.partial(tasks.counted_die_on, str(tmp_path))
    with shoal.Pool(1, **FAST) as pool:
        with pytest.raises(shoal.WorkerCrashed):
            pool.map(work, range(10), chunksize=10)
    runs = collections.Counter(int(name.split("-")[0]) for name in os.listdir(tmp_path))
    assert runs[5] == 3, runs
    assert all(runs[x] <= 2 for x in range(10) if x != 5), runs
    assert all(runs[x] >= 1 for x in range(10)), runs


def test_a_crash_in_a_map_fails_only_its_item(pool):
    results = pool.imap(tasks.die_on, range(6), chunksize=1)
    outcomes = []
    while True:
        try:
            outcomes.append(next(results))
        except StopIteration:
            break
        except shoal.WorkerCrashed as error:
            outcomes.append(error)
    assert outcomes[:3] + outcomes[4:] == [0, 1, 2, 4, 5]
    assert isinstance(outcomes[3], shoal.WorkerCrashed)


@pytest.mark.parametrize("chunksize", [None, 10])
def test_a_crash_in_a_chunk_fails_only_the_culprit(pool, chunksize):
    # Chunks (adaptive, or given) hold many items: the chunk whose worker dies is run
    # again item by item, so only the item that kills its worker fails.
    outcomes = []
    bad = 250  # late enough for adaptive chunks to have grown
    results = pool.imap(functools.partial(tasks.die_on, bad=bad), range(300), chunksize=chunksize)
    while True:
        try:
            outcomes.append(next(results))
        except StopIteration:
            break
        except shoal.WorkerCrashed as error:
            outcomes.append(error)
    assert len(outcomes) == 300
    assert [o for i, o in enumerate(outcomes) if i != bad] == [i for i in range(300) if i != bad]
    assert isinstance(outcomes[bad], shoal.WorkerCrashed) and outcomes[bad].signal == signal.SIGKILL
    assert pool.stats().calls_done == 300


def test_a_timeout_in_a_chunk_fails_only_the_culprit(pool):
    results = pool.options(timeout=0.5).imap(tasks.sleep_then, [0.01, 60, 0.01, 0.01], chunksize=2)
    assert next(results) is None
    with pytest.raises(shoal.TaskTimeout):
        next(results)
    assert list(results) == [None, None]


def test_sigkill_of_a_worker_from_outside_loses_nothing():
    with shoal.Pool(2, **FAST) as p:
        results = p.map_async(tasks.sleep_pid, [0.5] * 6, chunksize=1)
        pids = worker_pids(p)
        time.sleep(0.25)
        os.kill(pids[0], signal.SIGKILL)
        ran_on = results.get(20)
        assert len(ran_on) == 6
        assert pids[0] not in ran_on  # its task was retried elsewhere
        assert max(w.restarts for w in p.stats().workers) >= 1


def test_sigkill_from_outside_with_the_executor():
    with shoal.ProcessPoolExecutor(2, **FAST) as ex:
        futures = [ex.submit(tasks.sleep_pid, 0.5) for _ in range(4)]
        time.sleep(0.25)
        os.kill(worker_pids(ex)[1], signal.SIGKILL)
        assert len([f.result(20) for f in futures]) == 4
        assert ex.submit(tasks.inc, 1).result(10) == 2


def test_a_hung_task_times_out_and_only_it(pool):
    before = set(worker_pids(pool))
    started = time.monotonic()
    hung = pool.options(timeout=0.5).apply_async(tasks.sleep_then, (60,))
    fine = pool.options(timeout=5).apply_async(tasks.sleep_then, (0.2, "fine"))
    with pytest.raises(shoal.TaskTimeout) as caught:
        hung.get(10)
    assert isinstance(caught.value, TimeoutError)
    assert time.monotonic() - started < 3
    assert "timeout" in str(caught.value)
    assert fine.get(10) == "fine"
    assert pool.apply(tasks.inc, (1,)) == 2
    assert set(worker_pids(pool)) != before  # the hung worker was replaced


def test_a_timeout_kills_the_processes_the_task_started_too(pool, tmp_path):
    # The worker's whole process group goes: a child the task started does not outlive it.
    pid_path = str(tmp_path / "sleeper")
    with pytest.raises(shoal.TaskTimeout):
        pool.options(timeout=1).apply(tasks.start_sleeper, (pid_path,))
    sleeper = int(open(pid_path).read())
    assert wait_gone([sleeper]) == [], "the task's child outlived its timeout"


def test_a_pool_wide_timeout(tmp_path):
    with shoal.ProcessPoolExecutor(2, timeout=0.5, **FAST) as ex:
        with pytest.raises(shoal.TaskTimeout):
            ex.submit(time.sleep, 60).result(10)
        assert ex.submit(tasks.inc, 1).result(10) == 2
        # Adaptive map chunks hold one item each under a timeout: one hang fails one item.
        results = ex.map(tasks.sleep_then, [0.01, 60, 0.01])
        assert next(results) is None
        with pytest.raises(shoal.TaskTimeout):
            next(results)


def test_a_task_that_keeps_crashing_workers_has_its_last_try_alone_in_a_fresh_worker(tmp_path):
    # Quarantine: the last of its 3 tries waits for a worker that has run nothing (the
    # one that served other tasks during the retry's backoff is replaced first), then
    # the task fails with the reason; every other task succeeds.
    log = str(tmp_path / "log")
    with shoal.Pool(1, retries=2, **FAST) as p:
        before = [p.apply_async(tasks.log_pid, (log, f"small{i}", 0.01)) for i in range(5)]
        crasher = p.apply_async(tasks.log_pid_then_die, (log, "crasher"))
        after = [p.apply_async(tasks.log_pid, (log, f"small{i}", 0.01)) for i in range(5, 60)]
        with pytest.raises(shoal.WorkerCrashed, match="signal 9") as caught:
            crasher.get(60)
        assert caught.value.attempts == 3
        assert caught.value.signal == signal.SIGKILL
        assert [r.get(60) for r in before + after] == [f"small{i}" for i in range(60)]
    lines = [line.split() for line in open(log).read().splitlines()]
    tries = [int(pid) for pid, who in lines if who == "crasher"]
    assert len(tries) == 3 and len(set(tries)) == 3, lines
    # The first ran after small tasks in its worker; the last alone, in a worker that
    # ran nothing else.
    assert [who for p, who in lines if int(p) == tries[0]][-2:] == ["small4", "crasher"]
    assert [who for p, who in lines if int(p) == tries[2]] == ["crasher"], lines


def test_a_stopped_worker_is_declared_hung(pool):
    # SIGSTOP freezes the heartbeat thread too: the engine hears nothing and kills it.
    started = time.monotonic()
    with pytest.raises(shoal.WorkerCrashed, match="answer|heartbeat") as caught:
        pool.options(retries=0).apply(tasks.kill_self, (signal.SIGSTOP,))
    assert caught.value.attempts == 1
    assert time.monotonic() - started < 10
    assert pool.apply(tasks.inc, (1,)) == 2


def test_a_memory_hog_hits_the_limit():
    # By a memory cgroup where the machine allows it (the OOM killer), else RLIMIT_AS.
    with shoal.Pool(1, memory_limit="300M", retries=0, **FAST) as p:
        with pytest.raises(shoal.MemoryLimitExceeded) as caught:
            p.apply(tasks.hog, (1500,))
        assert isinstance(caught.value, MemoryError)
        assert p.apply(tasks.hog, (20,)) == 20
        assert p.stats().workers[0].restarts == 1, "the hog's worker was replaced"


# Hides every cgroup hierarchy from the command it runs (a private mount namespace
# without them), so that shoal has to fall back to RLIMIT_AS.
WITHOUT_CGROUPS = [
    "unshare", "--mount", "--propagation", "private",
    "sh", "-c", 'umount -R /sys/fs/cgroup 2>/dev/null; exec "$@"', "sh",
]


def _private_mounts() -> bool:
    """Whether this process may make a private mount namespace and unmount in it."""
    probe = subprocess.run([*WITHOUT_CGROUPS, "true"], capture_output=True)
    return probe.returncode == 0


@pytest.mark.skipif(
    os.geteuid() != 0 or not _private_mounts(),
    reason="needs a private mount namespace (root with CAP_SYS_ADMIN)",
)
def test_a_memory_hog_hits_an_rlimit_as_limit_where_no_cgroup_can_be_had():
    # Under RLIMIT_AS the limit shows only as a MemoryError inside the task: the engine
    # makes it the limit's (MemoryLimitExceeded, retried as a memory kill would be) and
    # replaces the worker; the other tasks are untouched.
    done = run_script(
        """
        import shoal, tasks
        with shoal.Pool(1, memory_limit="300M", retries=1, heartbeat=0.1) as p:
            with open("/proc/mounts") as mounts:
                print("cgroups", sum(" cgroup" in line for line in mounts))
            try:
                p.apply(tasks.hog, (1500,))
            except shoal.MemoryLimitExceeded as exc:
                print("exceeded", isinstance(exc, MemoryError), exc)
            print("small", p.apply(tasks.hog, (20,)))
            print("restarts", p.stats().workers[0].restarts)
        """,
        prefix=WITHOUT_CGROUPS,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    lines = dict(line.split(" ", 1) for line in done.stdout.splitlines())
    if lines["cgroups"] != "0":
        pytest.skip(f"cgroups stay mounted in a private mount namespace: {lines['cgroups']}")
    assert lines["exceeded"].startswith("True "), done.stdout
    assert "RLIMIT_AS" in lines["exceeded"] and "MemoryError" in lines["exceeded"], done.stdout
    assert "attempt 2 of 2" in lines["exceeded"], done.stdout
    assert lines["small"] == "20"
    # The first try's worker and the retry's were each replaced.
    assert lines["restarts"] == "2", done.stdout


def test_an_unpicklable_argument_fails_only_its_task(pool, executor):
    lock = threading.Lock()
    result = pool.apply_async(tasks.add, (lock,))
    with pytest.raises(shoal.PicklingError, match="arguments of tasks.add could not be pickled"):
        result.get(5)
    assert isinstance(result._value, pickle.PicklingError)
    future = executor.submit(tasks.add, lock)
    # A TypeError too, as the standard library's executor raises: code written for it
    # (`except TypeError`) catches shoal's.
    with pytest.raises(TypeError):
        future.result(5)
    assert isinstance(future.exception(), shoal.PicklingError)
    assert executor.submit(tasks.add, 1).result(10) == 1
    items = pool.imap(tasks.inc, [1, lock, 3], chunksize=1)
    assert next(items) == 2
    with pytest.raises(shoal.PicklingError):
        next(items)
    assert next(items) == 4
    with pytest.raises(shoal.PicklingError):
        pool.map(tasks.inc, [1, lock, 3], chunksize=2)
    assert pool.apply(tasks.inc, (1,)) == 2


def test_an_unpicklable_function(pool, executor):
    class Local:
        lock = threading.Lock()

        def __call__(self, x):
            return x

    with pytest.raises(shoal.PicklingError, match="could not be pickled"):
        pool.apply(Local(), (1,))
    with pytest.raises(shoal.PicklingError):
        pool.map(Local(), range(3))
    with pytest.raises(shoal.PicklingError):
        next(executor.map(Local(), range(3)))


def test_an_unpicklable_result_fails_only_its_task(pool):
    with pytest.raises(shoal.PicklingError, match="return value .* could not be pickled"):
        pool.apply(tasks.unpicklable_result)
    results = pool.map_async(tasks.unpicklable_result, range(3))
    with pytest.raises(shoal.PicklingError):
        results.get(10)
    assert pool.apply(tasks.inc, (1,)) == 2


def test_exceptions_that_cannot_travel(pool):
    with pytest.raises(shoal.RemoteError, match="Unpicklable: holds a lock"):
        pool.apply(tasks.raise_unpicklable)
    with pytest.raises(shoal.RemoteError, match="NeedsTwoArgs: 1-2") as caught:
        pool.apply(tasks.raise_needs_two)
    assert "raise_needs_two" in str(caught.value.__cause__)


def test_an_initializer_that_raises_fails_the_tasks_without_a_respawn_loop():
    started = time.monotonic()
    with shoal.Pool(2, initializer=tasks.failing_initializer, **FAST) as p:
        results = [p.apply_async(tasks.inc, (i,)) for i in range(5)]
        for result in results:
            with pytest.raises(shoal.InitializerError) as caught:
                result.get(10)
        cause = caught.value.__cause__
        assert isinstance(cause, OSError) and str(cause) == "no model"
        assert "failing_initializer" in str(cause.__cause__)
        with pytest.raises(shoal.InitializerError):
            p.apply(tasks.inc, (1,))
        assert sum(w.restarts for w in p.stats().workers) <= 2
    assert time.monotonic() - started < 10


def test_an_initializer_that_raises_with_the_executor():
    with shoal.ProcessPoolExecutor(1, initializer=tasks.failing_initializer, **FAST) as ex:
        with pytest.raises(shoal.InitializerError):
            ex.submit(tasks.inc, 1).result(10)


@pytest.mark.parametrize(
    "wait",
    [
        "shoal.Pool(2, **FAST).map(tasks.sleep_then, [30] * 4, chunksize=1)",
        "list(shoal.Pool(2, **FAST).imap_unordered(tasks.sleep_then, [30] * 4))",
        "shoal.ProcessPoolExecutor(2, **FAST).submit(tasks.sleep_then, 30).result()",
        "list(shoal.ProcessPoolExecutor(2, **FAST).map(tasks.sleep_then, [30] * 4))",
    ],
)
def test_ctrl_c_while_waiting_stops_every_worker(wait):
    script = f"""
        import shoal, tasks
        FAST = dict(heartbeat=0.1, heartbeat_timeout=2.0)
        print("waiting", flush=True)
        try:
            {wait}
        except KeyboardInterrupt:
            print("interrupted", flush=True)
            raise
        """
    out, err = _interrupt(script)
    assert "interrupted" in out, err


@pytest.mark.parametrize(
    "script",
    [
        # In an executor's block, but not waiting on it: leaving the block does not
        # wait for the work either.
        """
        with shoal.ProcessPoolExecutor(2, **FAST) as ex:
            futures = [ex.submit(tasks.sleep_then, 30) for _ in range(4)]
            print("waiting", flush=True)
            time.sleep(60)
        """,
        # The script ends by the Ctrl-C: its submitted work is not run to its end.
        """
        ex = shoal.ProcessPoolExecutor(2, **FAST)
        futures = [ex.submit(tasks.sleep_then, 30) for _ in range(4)]
        print("waiting", flush=True)
        time.sleep(60)
        """,
    ],
    ids=["with-block", "script-end"],
)
def test_ctrl_c_anywhere_in_the_caller_stops_every_worker(script):
    started = time.monotonic()
    prelude = "import shoal, tasks, time\nFAST = dict(heartbeat=0.1, heartbeat_timeout=2.0)\n"
    _interrupt(prelude + textwrap.dedent(script))
    assert time.monotonic() - started < 15, "the caller waited for the work after Ctrl-C"


def _interrupt(script: str) -> tuple[str, str]:
    """Runs `script` until it prints "waiting" with 2 workers busy, sends it SIGINT and
    checks that it ends by the KeyboardInterrupt with no worker left; returns its
    stdout and stderr."""
    proc = popen_script(script)
    try:
        assert proc.stdout.readline().strip() == "waiting"
        deadline = time.monotonic() + 10
        while len(pids := _worker_pids_of(proc.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(pids) == 2
        time.sleep(0.3)  # the tasks are running
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "KeyboardInterrupt" in err
    assert proc.returncode != 0
    assert wait_gone(pids) == [], f"workers left after Ctrl-C: {pids}"
    return out, err


def _worker_pids_of(parent: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    fields = stat.read().rsplit(")", 1)[1].split()
                with open(f"/proc/{entry}/cmdline", "rb") as cmdline:
                    if fields[1] == str(parent) and b"shoal._worker" in cmdline.read():
                        found.append(int(entry))
            except OSError:
                pass
    return found


@pytest.mark.parametrize("shutdown", ["", "p.shutdown(wait=False)"])
def test_interpreter_exit_runs_an_executors_submitted_work_to_its_end(shutdown):
    # As concurrent.futures does: work submitted and never waited for still runs, and
    # its callbacks fire, before the interpreter exits.
    done = run_script(
        f"""
        import shoal, tasks
        p = shoal.ProcessPoolExecutor(2)
        for i in range(3):
            p.submit(tasks.sleep_then, 0.3, i).add_done_callback(
                lambda f: print("done", f.result(), flush=True))
        {shutdown}
        print(" ".join(str(w.pid) for w in p.stats().workers if w.pid), flush=True)
        """,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.split("\n")
    assert sorted(line for line in lines if line.startswith("done")) == ["done 0", "done 1", "done 2"]
    pids = [int(pid) for pid in lines[0].split()]
    assert wait_gone(pids) == []


@pytest.mark.parametrize("front", ["pool", "pool-closed"])
def test_interpreter_exit_with_a_live_pool_stops_every_worker(front):
    make = {
        "pool": "p = shoal.Pool(2); r = p.apply_async(tasks.sleep_then, (60,))",
        "pool-closed": "p = shoal.Pool(2); r = p.apply_async(tasks.sleep_then, (60,)); p.close()",
    }[front]
    done = run_script(
        f"""
        import os, time, shoal, tasks
        {make}
        time.sleep(0.5)
        print(" ".join(str(w.pid) for w in p.stats().workers if w.pid), flush=True)
        """,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    pids = [int(pid) for pid in done.stdout.split()]
    assert pids
    assert wait_gone(pids) == []


def test_a_killed_caller_leaves_no_worker_and_no_process_of_a_task(tmp_path):
    # SIGKILL of the caller: no atexit, no finalizer. The workers see the channel close,
    # and take the processes their tasks started with them.
    script = textwrap.dedent(
        f"""
        import os, time, shoal, tasks
        p = shoal.Pool(2, heartbeat=0.1)
        paths = [{str(tmp_path)!r} + "/a", {str(tmp_path)!r} + "/b"]
        r = p.map_async(tasks.start_sleeper, paths, chunksize=1)
        while not all(os.path.exists(path) for path in paths):
            time.sleep(0.02)
        workers = [w.pid for w in p.stats().workers if w.pid]
        sleepers = [int(open(path).read()) for path in paths]
        print(" ".join(str(pid) for pid in workers + sleepers), flush=True)
        time.sleep(60)
        """
    )
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join(filter(None, [HERE, os.environ.get("PYTHONPATH")]))
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script], env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        pids = [int(pid) for pid in proc.stdout.readline().split()]
        assert len(pids) == 4
        proc.kill()
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert wait_gone(pids, timeout=5) == []


def test_terminate_join_and_close_leave_no_worker():
    for finish in ("terminate", "close"):
        p = shoal.Pool(2, **FAST)
        p.map(tasks.inc, range(10))
        pids = worker_pids(p)
        getattr(p, finish)()
        p.join()
        assert wait_gone(pids, timeout=3) == []
    ex = shoal.ProcessPoolExecutor(2, **FAST)
    ex.submit(tasks.inc, 1).result(10)
    pids = worker_pids(ex)
    ex.shutdown()
    assert wait_gone(pids, timeout=3) == []


def test_cancelled_futures_are_concurrent_futures_cancelled_errors(executor):
    blockers = [executor.submit(tasks.sleep_then, 0.3) for _ in range(2)]
    queued = executor.submit(tasks.inc, 1)
    queued.cancel()
    with pytest.raises(concurrent.futures.CancelledError):
        queued.result()
    for future in blockers:
        future.result(10)


def test_a_forked_child_does_not_stop_its_parents_pool(pool):
    pids = worker_pids(pool)
    child = os.fork()
    if child == 0:
        # What the child's interpreter exit would run: the atexit hooks and the
        # finalizers it inherited (then leave at once, out of pytest's hands).
        import atexit

        atexit._run_exitfuncs()
        os._exit(0)
    os.waitpid(child, 0)
    assert wait_gone(pids, timeout=0.5) == pids  # still alive
    assert pool.apply(tasks.inc, (1,)) == 2


def test_killing_a_worker_full_of_prefetched_tiny_tasks_loses_and_blames_nothing(pool):
    # Tiny tasks are prefetched and their results sent in batches, so a worker killed
    # from outside dies with several tasks unanswered: none of them is to blame, and
    # every one must still come back with its result (they run again, each alone).
    results = pool.imap_unordered(tasks.inc, range(20000), chunksize=1)
    got = [next(results) for _ in range(2000)]
    os.kill(worker_pids(pool)[0], signal.SIGKILL)
    got += list(results)
    assert sorted(got) == list(range(1, 20001))
    assert sum(w.restarts for w in pool.stats().workers) == 1


def test_a_memory_limit_no_worker_can_start_with_is_refused_and_the_floor_runs():
    # Below the floor every worker failed to start and the pool broke; now it is
    # refused up front. At the floor a worker runs, under a cgroup or RLIMIT_AS.
    with pytest.raises(ValueError, match="memory_limit must be at least 32M"):
        shoal.ProcessPoolExecutor(1, memory_limit="4M")
    script = """
        import shoal, tasks
        with shoal.Pool(1, memory_limit="32M", retries=0) as p:
            print(p.apply(tasks.inc, (1,)))
        """
    prefixes = [[]]
    if os.geteuid() == 0 and _private_mounts():
        prefixes.append(WITHOUT_CGROUPS)
    for prefix in prefixes:
        done = run_script(script, prefix=prefix, timeout=60)
        assert (done.returncode, done.stdout) == (0, "2\n"), (prefix, done.stderr)


def test_a_host_that_forks_while_workers_start_never_stalls_the_pool():
    # Another thread forks (without exec) all the while, as a multiprocessing fork pool
    # or os.fork() does, and each child lives on; the pool starts a worker per call.
    # A child forked while a worker was being started held the spawn's close-on-exec
    # pipe, and the spawn waited as long as the child lived (here: longer than the test).
    stop = threading.Event()
    children: list[int] = []

    def fork_often():
        while not stop.is_set():
            pid = os.fork()
            if pid == 0:
                time.sleep(300)
                os._exit(0)
            children.append(pid)
            time.sleep(0.01)

    forker = threading.Thread(target=fork_often, daemon=True)
    try:
        with shoal.Pool(1, maxtasksperchild=1, **FAST) as pool:
            forker.start()
            for x in range(40):
                assert pool.apply_async(tasks.inc, (x,)).get(timeout=30) == x + 1
    finally:
        stop.set()
        forker.join()
        for pid in children:
            os.kill(pid, signal.SIGKILL)
        for pid in children:
            os.waitpid(pid, 0)
