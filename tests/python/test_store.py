"""store=: every task recorded in the SQLite store the CLI reads, and keyed results
reused, so an interrupted job resumes where it stopped."""

import collections
import functools
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest
import tasks
from conftest import FAST, HERE, run_script, shoal_cli, wait_gone, worker_children, worker_pids

import shoal


def rows(path):
    with sqlite3.connect(path) as db:
        return db.execute(
            "SELECT command, status, attempts, key FROM tasks ORDER BY run_id, task"
        ).fetchall()


def runs_of(directory):
    return sorted(name for name in os.listdir(directory) if not name.startswith("fail-"))


def test_every_task_is_recorded_with_its_outcome(tmp_path):
    path = tmp_path / "results.db"
    with shoal.Pool(2, store=path) as pool:
        assert pool.map(tasks.inc, range(5), chunksize=1) == [1, 2, 3, 4, 5]
        with pytest.raises(ValueError):
            pool.apply(tasks.boom, ("bad",))
        pool.close()
        pool.join()
    recorded = rows(path)
    assert len(recorded) == 6
    # The call as shown, then a digest of its payload (what reuse by key compares).
    shown = [r[0].rsplit(" #", 1) for r in recorded]
    assert [r[0] for r in shown[:5]] == [f"tasks.inc({i})" for i in range(5)]
    assert all(len(r[1]) == 16 for r in shown), recorded
    assert {r[1] for r in recorded[:5]} == {"succeeded"}
    assert (shown[5][0], *recorded[5][1:3]) == ("tasks.boom('bad')", "failed", 1)
    with sqlite3.connect(path) as db:
        (traceback,) = db.execute("SELECT stderr FROM tasks WHERE status = 'failed'").fetchone()
        (status,) = db.execute("SELECT status FROM runs").fetchone()
    assert b"ValueError: bad" in traceback
    assert status == "finished"


def test_a_keyed_job_resumes_running_only_what_did_not_succeed(tmp_path, store_address):
    path, marks = store_address, tmp_path / "marks"
    marks.mkdir()
    (marks / "fail-3").touch()  # the first run: item 3 raises
    work = functools.partial(tasks.counted, str(marks))

    with shoal.Pool(2, store=path) as pool:
        first = pool.options(key="job-1").map_async(work, range(6))
        pool.close()
        pool.join()  # every item ran (map_async is ready at the first failure)
        assert not first.successful()
    assert len(runs_of(marks)) == 6

    (marks / "fail-3").unlink()
    with shoal.Pool(2, store=path) as pool:
        assert pool.options(key="job-1").map(work, range(6)) == [0, 10, 20, 30, 40, 50]
    ran_again = [name.split("-")[0] for name in runs_of(marks)]
    assert sorted(ran_again) == ["0", "1", "2", "3", "3", "4", "5"], "only item 3 ran again"

    # Another key is another job: it runs everything.
    with shoal.ProcessPoolExecutor(2, store=path) as executor:
        assert executor.options(key="job-2").submit(work, 4).result() == 40
    assert len(runs_of(marks)) == 8
    assert worker_children() == []


def test_a_stored_result_is_reused_only_for_the_very_same_call(tmp_path):
    path = tmp_path / "results.db"
    short, long = list(range(10)), list(range(10)) + [1000]  # shown alike: [0, 1, 2, ...]
    with shoal.Pool(1, store=path) as pool:
        keyed = pool.options(key="job")
        assert keyed.apply(sum, (short,)) == 45
        assert keyed.apply(sum, (long,)) == 1045
        assert keyed.apply(lambda x: x * 1, (2,)) == 2
        assert keyed.apply(lambda x: x * 100, (2,)) == 200
    with shoal.Pool(1, store=path) as pool:
        # The very same calls: their stored results, without running again.
        assert pool.options(key="job").apply(sum, (long,)) == 1045
    assert [r[1] for r in rows(path)] == ["succeeded"] * 5


def test_a_keyed_map_with_a_chunksize_resumes_its_failed_items_too(tmp_path):
    # Each call is stored on its own, whatever the chunksize: a failed item is run
    # again on resume, not replayed from a chunk stored as a whole.
    path, marks = tmp_path / "results.db", tmp_path / "marks"
    marks.mkdir()
    (marks / "fail-3").touch()
    work = functools.partial(tasks.counted, str(marks))
    with shoal.Pool(2, store=path) as pool:
        with pytest.raises(ValueError):
            pool.options(key="job").map(work, range(6), chunksize=3)
    (marks / "fail-3").unlink()
    with shoal.Pool(2, store=path) as pool:
        assert pool.options(key="job").map(work, range(6), chunksize=3) == [0, 10, 20, 30, 40, 50]
    assert sorted(name.split("-")[0] for name in runs_of(marks)) == [
        "0", "1", "2", "3", "3", "4", "5"
    ]


def test_the_run_is_finished_unless_terminate_cut_tasks_short(tmp_path):
    path = tmp_path / "results.db"
    with shoal.Pool(1, store=path) as pool:  # __exit__ terminates, with nothing left
        assert pool.map(tasks.inc, range(3)) == [1, 2, 3]
    with shoal.Pool(1, store=path) as pool:
        pool.apply_async(tasks.sleep_then, (30,))
        time.sleep(0.3)
    with sqlite3.connect(path) as db:
        statuses = [r[0] for r in db.execute("SELECT status FROM runs ORDER BY id")]
    assert statuses == ["finished", "interrupted"]


def test_a_crashed_or_timed_out_task_is_stored_with_the_time_it_ran(tmp_path):
    path = tmp_path / "results.db"
    with shoal.Pool(1, store=path, retries=0, **FAST) as pool:
        with pytest.raises(shoal.TaskTimeout):
            pool.options(timeout=0.5).apply(tasks.sleep_then, (30,))
        with pytest.raises(shoal.WorkerCrashed):
            pool.apply(tasks.sleep_then_die, (0.3,))
        pool.close()
        pool.join()
    with sqlite3.connect(path) as db:
        durations = dict(db.execute("SELECT status, duration FROM tasks"))
    assert durations["timed_out"] >= 0.5, durations
    assert durations["crashed"] >= 0.3, durations


def test_a_store_that_cannot_be_opened_is_a_clear_error(tmp_path):
    with pytest.raises(OSError, match="does not exist"):
        shoal.Pool(1, store=tmp_path / "missing" / "results.db")
    (tmp_path / "junk.db").write_bytes(b"this is not a database" * 100)
    with pytest.raises(OSError, match="not a shoal database or is corrupt"):
        shoal.Pool(1, store=tmp_path / "junk.db")
    assert worker_children() == []


def test_a_killed_caller_loses_nothing_and_the_cli_reads_its_store(tmp_path):
    # kill -9 of the caller in the middle of a keyed map; the CLI shows the run died
    # and what it finished; the same job run again runs only what had not succeeded.
    path, marks = tmp_path / "results.db", tmp_path / "marks"
    marks.mkdir()
    script = f"""
import functools, shoal, tasks
work = functools.partial(tasks.counted_slowly, {str(marks)!r}, 0.05)
with shoal.Pool(2, store={str(path)!r}) as pool:
    print(pool.options(key="job").map(work, range(40)))
"""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [HERE, os.environ.get("PYTHONPATH")])))
    first = subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while len(succeeded(path)) < 10 and time.monotonic() < deadline:
            time.sleep(0.02)
        live = json.loads(shoal_cli("runs", "--json", "--store", str(path)).stdout)
        assert live["status"] == "running", live
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    finally:
        if first.poll() is None:
            first.kill()
        first.stdout.close()
    assert first.returncode == -signal.SIGKILL
    done_before = succeeded(path)
    assert 10 <= len(done_before) < 40, "the kill came too late to prove anything"

    runs = shoal_cli("runs", "--json", "--store", str(path))
    assert runs.returncode == 0, runs.stderr
    (died,) = [json.loads(line) for line in runs.stdout.splitlines()]
    assert died["status"] == "died", died
    results = shoal_cli("results", "--json", "--status", "succeeded", "--store", str(path))
    shown = {json.loads(line)["command"] for line in results.stdout.splitlines()}
    assert shown == done_before

    again = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60
    )
    assert again.stdout.strip() == str([x * 10 for x in range(40)]), again.stderr
    starts = collections.Counter(name.split("-")[0] for name in os.listdir(marks))
    for label in done_before:
        item = label.split("(")[-1].split(")")[0]
        assert starts[item] == 1, f"{label} succeeded before the kill and ran again"
    assert set(starts) == {str(x) for x in range(40)}

    stats = json.loads(shoal_cli("stats", "--json", "--run", "2", "--store", str(path)).stdout)
    assert stats["counts"]["succeeded"] == 40, stats
    statuses = [json.loads(line)["status"] for line in shoal_cli("runs", "--json", "--store", str(path)).stdout.splitlines()]
    assert statuses == ["died", "finished"]


def succeeded(path) -> set:
    """The calls of run 1 that succeeded, as stored (their label)."""
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
            found = db.execute("SELECT command FROM tasks WHERE run_id = 1 AND status = 'succeeded'")
            return {row[0] for row in found}
    except sqlite3.OperationalError:
        return set()  # not created yet


# ---------------------------------------------------------------------------------------
# The store's truth when the caller, the store or the disk fails.


def test_a_result_the_caller_cannot_unpickle_is_stored_failed_and_never_reused(tmp_path):
    import delivery_tasks

    path = tmp_path / "results.db"
    with shoal.Pool(1, store=path, **FAST) as pool:
        with pytest.raises(shoal.PicklingError):
            pool.options(key="job").apply(delivery_tasks.returns_exploding, ("exit",))
        # The last item of a map, refused when the pool may have ended already.
        work = functools.partial(delivery_tasks.exploding_on, 3)
        result = pool.map_async(work, range(4))
        pool.close()
        pool.join()
    with pytest.raises(shoal.PicklingError):
        result.get(10)
    with sqlite3.connect(path) as db:
        found = db.execute(
            "SELECT command, status, result IS NULL, CAST(stderr AS TEXT) FROM tasks ORDER BY task"
        ).fetchall()
        (run_status,) = db.execute("SELECT status FROM runs").fetchone()
    refused = [row for row in found if row[1] == "failed"]
    assert [row[0].split(" #")[0] for row in refused] == [
        "delivery_tasks.returns_exploding('exit')",
        "functools.partial(delivery_tasks.exploding_on, 3)(3)",
    ], found
    assert all(row[2] and "could not be unpickled here: SystemExit" in row[3] for row in refused)
    assert [row[1] for row in found].count("succeeded") == 3, found
    assert run_status == "finished"
    # A keyed call finds no stored success to reuse: it runs again (and fails again).
    with shoal.Pool(1, store=path, **FAST) as pool:
        with pytest.raises(shoal.PicklingError):
            pool.options(key="job").apply(delivery_tasks.returns_exploding, ("exit",))
    with sqlite3.connect(path) as db:
        (attempts,) = db.execute("SELECT attempts FROM tasks WHERE run_id = 2").fetchone()
    assert attempts == 1, "it ran, instead of a stored result being reused"


def test_an_executor_run_with_cancelled_calls_is_interrupted_not_finished(tmp_path):
    path = tmp_path / "results.db"
    with shoal.ProcessPoolExecutor(1, store=path, **FAST) as ex:
        first = ex.submit(tasks.sleep_then, 0.5, "done")
        queued = [ex.submit(tasks.inc, x) for x in range(3)]
        assert all(f.cancel() for f in queued)
        assert first.result(10) == "done"
    (run,) = [json.loads(line) for line in shoal_cli("runs", "--json", "--store", str(path)).stdout.splitlines()]
    assert (run["status"], run["total"], run["counts"]["succeeded"], run["unfinished"]) == (
        "interrupted", 4, 1, 3
    ), run


def test_a_damaged_store_is_a_store_error_and_nothing_runs(tmp_path):
    path = tmp_path / "results.db"
    with shoal.Pool(1, store=path) as pool:
        pool.map(tasks.inc, range(200), chunksize=1)
        pool.close()
        pool.join()
    with sqlite3.connect(path) as db:
        (page_size,) = db.execute("PRAGMA page_size").fetchone()
        (pages,) = db.execute("PRAGMA page_count").fetchone()
    assert pages > 3
    with open(path, "r+b") as f:  # a page past the schema's, overwritten with garbage
        f.seek(page_size * (pages - 1))
        f.write(b"\xa5" * page_size)
    with pytest.raises(shoal.StoreError, match="is damaged") as caught:
        shoal.Pool(1, store=path)
    assert isinstance(caught.value, OSError)
    assert worker_children() == []


def test_a_postgresql_store_that_cannot_be_reached_is_a_store_error_naming_it(
    tmp_path, monkeypatch
):
    # Taken for a file path before, it failed on a directory "postgresql:/ann:s3cret@h"
    # that does not exist, password shown.
    monkeypatch.chdir(tmp_path)
    url = "postgresql://ann:s3cret@127.0.0.1:1/jobs"
    for make in (lambda: shoal.Pool(1, store=url),
                 lambda: shoal.ProcessPoolExecutor(1, store=url)):
        with pytest.raises(shoal.StoreError) as caught:
            make()
        assert str(caught.value) == (
            "cannot connect to the store postgresql://ann:***@127.0.0.1:1/jobs: "
            "error connecting to server: Connection refused (os error 111)")
        assert isinstance(caught.value, OSError)
    assert os.listdir(tmp_path) == []
    assert worker_children() == []


def _can_mount_tmpfs() -> bool:
    probe = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c",
         "mount -t tmpfs -o size=1m tmpfs /mnt"],
        capture_output=True,
    )
    return probe.returncode == 0


@pytest.mark.skipif(
    os.geteuid() != 0 or not _can_mount_tmpfs(),
    reason="needs a private mount namespace to mount a small tmpfs (root with CAP_SYS_ADMIN)",
)
def test_a_full_disk_under_a_pool_warns_once_and_every_result_still_arrives(tmp_path):
    # The store on a 2 MiB tmpfs that its own records fill: the pool goes on (every
    # result reaches the caller), says so once with a StoreWarning naming the store, and
    # leaves the run honest: never "finished" with results missing.
    script = """
import sqlite3, warnings, shoal, tasks
warnings.simplefilter("always")
store = "/mnt/results.db"
with warnings.catch_warnings(record=True) as caught:
    with shoal.Pool(2, store=store) as pool:
        got = pool.map(tasks.big_bytes, [4096] * 2000, chunksize=1)
        pool.close()
        pool.join()
print("results", len(got), all(len(g) == 4096 for g in got))
found = [w for w in caught if issubclass(w.category, shoal.StoreWarning)]
print("warnings", len(found))
print("message", str(found[0].message) if found else "")
with sqlite3.connect(f"file:{store}?mode=ro", uri=True) as db:
    print("run", db.execute("SELECT status FROM runs").fetchone()[0])
    print("succeeded", db.execute("SELECT count(*) FROM tasks WHERE status = 'succeeded'").fetchone()[0])
# Warnings made errors: the warning cannot raise where it is noticed (the result
# thread), so it goes to stderr, and the pool goes on.
import glob, os, time
db.close()  # (sqlite3's `with` commits but does not close)
del pool, got
for leftover in glob.glob("/mnt/results.db*"):
    os.remove(leftover)
warnings.simplefilter("error")
with shoal.Pool(2, store="/mnt/strict.db") as pool:
    strict = pool.map(tasks.big_bytes, [4096] * 2000, chunksize=1)
    # Calls after the store has failed (its writer catches up within a second), while
    # the result thread notices it: each still gets its result.
    after = []
    for x in range(40):
        after.append(pool.apply_async(tasks.inc, (x,)).get(10))
        time.sleep(0.05)
    print("strict", len(strict), after == list(range(1, 41)))
warnings.simplefilter("always")
with open("/mnt/filler", "wb") as filler:  # whatever room is left
    try:
        while True:
            filler.write(bytes(1 << 16))
            filler.flush()
    except OSError:
        pass
try:
    shoal.Pool(1, store="/mnt/new.db")
except shoal.StoreError as exc:
    print("new", isinstance(exc, OSError), exc)
"""
    done = run_script(
        script,
        prefix=["unshare", "--mount", "--propagation", "private", "sh", "-c",
                'mount -t tmpfs -o size=2m tmpfs /mnt && exec "$@"', "sh"],
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    lines = dict(line.split(" ", 1) for line in done.stdout.splitlines())
    assert lines["results"] == "2000 True", done.stdout
    assert lines["warnings"] == "1", done.stdout + done.stderr
    assert "the store /mnt/results.db takes no more writes" in lines["message"], lines
    assert "full" in lines["message"], lines
    assert lines["run"] == "interrupted", done.stdout
    assert int(lines["succeeded"]) < 2000, "the disk filled before the records were whole"
    assert lines["strict"] == "2000 True", done.stdout + done.stderr
    assert done.stderr.count("the store /mnt/strict.db takes no more writes") == 1, done.stderr
    # A new pool's store on the full disk: a StoreError (an OSError) that says so.
    assert lines["new"].startswith("True ") and "is full" in lines["new"], lines


def test_a_stored_result_the_caller_can_no_longer_unpickle_is_not_reused_again(tmp_path):
    import delivery_tasks

    path, marker = tmp_path / "results.db", str(tmp_path / "unreadable")
    work = functools.partial(delivery_tasks.result_unless, marker)

    def keyed_call():
        with shoal.Pool(1, store=path, **FAST) as pool:
            try:
                return pool.options(key="job").apply(work, (4,))
            except shoal.PicklingError as exc:
                return type(exc).__name__

    assert keyed_call() == 40  # run 1: it runs, and its result is stored
    open(marker, "w").close()
    assert keyed_call() == "PicklingError"  # run 2: the stored result no longer unpickles
    os.remove(marker)
    assert keyed_call() == 40  # run 3: so the call runs again, instead of failing for ever
    with sqlite3.connect(path) as db:
        found = db.execute("SELECT run_id, status, attempts FROM tasks ORDER BY run_id").fetchall()
    assert found == [(1, "succeeded", 1), (2, "failed", 0), (3, "succeeded", 1)], found
    assert keyed_call() == 40
    with sqlite3.connect(path) as db:
        (attempts,) = db.execute("SELECT attempts FROM tasks WHERE run_id = 4").fetchone()
    assert attempts == 0, "a success is reused again once it is the latest outcome"


def test_a_run_ended_at_interpreter_exit_is_recorded_finished_even_behind_a_slow_callback(
    tmp_path,
):
    # The script ends with its pool still open while a callback holds the result thread
    # past the exit's wait for it: the run's record is ended all the same (it showed
    # `died`, with every call succeeded).
    path, started = tmp_path / "results.db", tmp_path / "callback-started"
    done = run_script(
        f"""
        import os, time, shoal, tasks

        def slow(_):
            open({str(started)!r}, "w").close()
            time.sleep(5)

        pool = shoal.Pool(1, store={str(path)!r})
        for x in range(100):
            pool.apply_async(tasks.inc, (x,))
        pool.apply_async(tasks.inc, (100,), callback=slow)
        while not os.path.exists({str(started)!r}):
            time.sleep(0.01)
        """,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    with sqlite3.connect(path) as db:
        (status,) = db.execute("SELECT status FROM runs").fetchone()
        (succeeded,) = db.execute("SELECT count(*) FROM tasks WHERE status = 'succeeded'").fetchone()
    assert (status, succeeded) == ("finished", 101)


def marked_processes(marker):
    """The processes whose environment holds `SHOAL_RUN=<marker>` exactly."""
    entry = b"SHOAL_RUN=" + marker.encode()
    found = set()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/environ", "rb") as environ:
                if entry in environ.read().split(b"\0"):
                    found.add(int(pid))
        except OSError:
            continue
    return found


def test_the_workers_of_a_pool_with_a_store_carry_the_run_s_marker(tmp_path):
    # As every task of a CLI run: SHOAL_RUN=<run>@<the store's real path>, so that a
    # resume's cleanup and ps-based tools find them.
    path = tmp_path / "results.db"
    link = tmp_path / "link.db"
    link.symlink_to(path)
    real = os.path.realpath(path)
    with shoal.Pool(2, store=path) as pool:
        marker = pool.apply(tasks.environ, ("SHOAL_RUN",))
        assert marker == f"1@{real}"
        assert set(pool.map(tasks.environ, ["SHOAL_RUN"] * 4, chunksize=1)) == {marker}
        assert marked_processes(marker) == set(worker_pids(pool))
    # However the store is named (here by a symlink), the marker names its real path.
    with shoal.ProcessPoolExecutor(1, store=link) as executor:
        assert executor.submit(tasks.environ, "SHOAL_RUN").result() == f"2@{real}"
    # The CLI's tasks carry the same form.
    cli = shoal_cli("--store", str(link), "run", 'printf %s "$SHOAL_RUN" && : {}', ":::", "x")
    assert (cli.returncode, cli.stdout) == (0, f"3@{real}"), cli.stderr
    # Without a store there is no run: the workers carry only what the caller had.
    with shoal.Pool(1) as pool:
        assert pool.apply(tasks.environ, ("SHOAL_RUN",)) == os.environ.get("SHOAL_RUN")
