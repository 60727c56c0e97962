"""shoal's Python front against the process pools people use today, side by side.

Every library runs on the same machine in the same run, with REPS repetitions
interleaved round-robin (A, B, C, A, B, C, ...), each repetition in a fresh Python
process (so one library's leftovers cannot slow the next, and a hang is cut by a
timeout instead of stopping the benchmark). Medians, min, max and ratios are printed
as one markdown table per section:

  1. dispatch  one-at-a-time dispatch of f(x)=x+1, TASKS tasks, 2 workers (us/task):
               multiprocessing.Pool.imap_unordered(chunksize=1),
               ProcessPoolExecutor.submit + wait, loky submit, pebble schedule,
               shoal.Pool.imap_unordered(chunksize=1), shoal.ProcessPoolExecutor.submit
  2. map       map with default settings on the same tiny tasks (us/task):
               multiprocessing.Pool.map against shoal.Pool.map
  3. skew      190 x sleep(5 ms) then 10 x sleep(200 ms), map with default settings,
               every library: makespan against the lower bound
               max(total / 2, longest) = 1.475 s
  4. startup   from Pool(2) construction to the first result of apply(f, (1,))
               (submit(f, 1).result() for executors)
  5. kill      8 x sleep(1 s) on shoal.ProcessPoolExecutor(2), with and without a
               SIGKILL of one worker 0.3 s in: extra time, and whether all 8 came back
               (shoal only: multiprocessing.Pool hangs and ProcessPoolExecutor breaks)
  6. async     TASKS tiny calls awaited from one asyncio loop (us/task):
               shoal.ProcessPoolExecutor.submit_async (each awaited in order, and
               through asyncio.gather), shoal.Pool.imap_unordered_async(chunksize=1),
               against the same executor's submit + .result() and
               asyncio.wrap_future(submit(...)) in the same run, and the standard
               ProcessPoolExecutor through wrap_future
  7. threads   1,000 x time.sleep(0.05) on 100 threads (s): shoal.ThreadPoolExecutor.map
               and shoal.ThreadPool.map against concurrent.futures.ThreadPoolExecutor
               and multiprocessing.pool.ThreadPool, and a 2-process multiprocessing.Pool

In sections 1-3 the pool is started and warmed before the clock starts (one f task,
then one 50 ms sleep per worker, so that pools starting workers lazily have both up).
The worker functions live in bench/_pyfuncs.py so that fork and spawn pools can all
import them. loky and pebble are optional: a peer that is missing or raises is
reported in its row and the rest still runs.

Run it (from the repository root):

    python3.11 -m venv .venv-bench
    .venv-bench/bin/pip install loky pebble cloudpickle maturin
    VIRTUAL_ENV=$PWD/.venv-bench .venv-bench/bin/maturin develop --release  # builds shoal
    .venv-bench/bin/python bench/py_overhead.py   # about 2 minutes, 3 with shoal

(maturin develop needs VIRTUAL_ENV, or an activated venv, or one named .venv;
`.venv-bench/bin/pip install .` builds and installs shoal as well.)

    bench/py_overhead.py [--reps N] [--tasks N] [--only SECTION[,SECTION]]
                         [--json PATH] [--timeout SECONDS]

SECTION is a name above or its number. Without shoal installed the peers still run
and shoal's rows say why they were skipped.
"""

import argparse
import json
import os
import shlex
import signal
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
WORKERS = 2
WARM_SLEEP = 0.05
SKEW = [0.005] * 190 + [0.2] * 10
SKEW_BOUND = max(sum(SKEW) / WORKERS, max(SKEW))
KILL_TASKS, KILL_SECONDS, KILL_AT = 8, 1.0, 0.3
KILL_WAIT = 60.0  # the kill trial gives up waiting for results after this long
RESULT_MARK = "@@py_overhead@@ "

# ---------------------------------------------------------------------------------
# Libraries: how to start each pool, and one adapter so that the trials read alike.
# ---------------------------------------------------------------------------------

# name -> (label, optional module it needs, what start-up imports before its clock
# starts, as "module:attribute": the attribute is looked up too, so lazily imported
# names (multiprocessing.Pool, concurrent.futures.ProcessPoolExecutor, shoal's) are
# resolved outside the clock)
LIBS = {
    "mp": ("multiprocessing.Pool", None, "multiprocessing.pool:Pool"),
    "mp_spawn": ("multiprocessing.Pool (spawn)", None, "multiprocessing.pool:Pool"),
    "ppe": ("concurrent.futures.ProcessPoolExecutor", None,
            "concurrent.futures.process:ProcessPoolExecutor"),
    "loky": ("loky.get_reusable_executor", "loky", "loky:get_reusable_executor"),
    "pebble": ("pebble.ProcessPool", "pebble", "pebble:ProcessPool"),
    "shoal_pool": ("shoal.Pool", "shoal", "shoal:Pool"),
    "shoal_ppe": ("shoal.ProcessPoolExecutor", "shoal", "shoal:ProcessPoolExecutor"),
}


class PoolLike:
    """multiprocessing.Pool and shoal.Pool: apply, imap_unordered, map, close/join."""

    def __init__(self, pool):
        self.pool = pool

    def first(self, fn, arg):
        return self.pool.apply(fn, (arg,))

    def warm(self, fn_inc, fn_sleep):
        self.pool.apply(fn_inc, (0,))
        for r in [self.pool.apply_async(fn_sleep, (WARM_SLEEP,)) for _ in range(WORKERS)]:
            r.get()

    def one_at_a_time(self, fn, xs):
        total = 0
        for r in self.pool.imap_unordered(fn, xs, chunksize=1):
            total += r
        return total

    def map(self, fn, xs):
        return self.pool.map(fn, xs)

    def close(self):
        self.pool.close()
        self.pool.join()


class ExecutorLike:
    """concurrent.futures executors (stdlib, loky, shoal): submit returns a Future."""

    def __init__(self, executor):
        self.ex = executor

    def submit(self, fn, arg):
        return self.ex.submit(fn, arg)

    def first(self, fn, arg):
        return self.submit(fn, arg).result()

    def warm(self, fn_inc, fn_sleep):
        self.first(fn_inc, 0)
        for f in [self.submit(fn_sleep, WARM_SLEEP) for _ in range(WORKERS)]:
            f.result()

    def one_at_a_time(self, fn, xs):
        from concurrent.futures import wait

        futures = [self.submit(fn, x) for x in xs]
        wait(futures)
        return futures  # summed by the caller once the clock has stopped

    def map(self, fn, xs):
        return list(self.ex.map(fn, xs))

    def close(self):
        self.ex.shutdown(wait=True)


class PebbleLike(ExecutorLike):
    """pebble.ProcessPool: schedule() returns a Future, map() a future of an iterator."""

    def submit(self, fn, arg):
        return self.ex.schedule(fn, args=(arg,))

    def map(self, fn, xs):
        return list(self.ex.map(fn, xs).result())

    def close(self):
        self.ex.close()
        self.ex.join()


def open_lib(lib):
    """Start a 2-worker pool of library `lib` (the start-up clock covers this call)."""
    if lib == "mp":
        import multiprocessing

        return PoolLike(multiprocessing.Pool(WORKERS))
    if lib == "mp_spawn":
        import multiprocessing

        return PoolLike(multiprocessing.get_context("spawn").Pool(WORKERS))
    if lib == "ppe":
        import concurrent.futures

        return ExecutorLike(concurrent.futures.ProcessPoolExecutor(WORKERS))
    if lib == "loky":
        import loky

        return ExecutorLike(loky.get_reusable_executor(max_workers=WORKERS))
    if lib == "pebble":
        import pebble

        return PebbleLike(pebble.ProcessPool(max_workers=WORKERS))
    if lib == "shoal_pool":
        import shoal

        return PoolLike(shoal.Pool(WORKERS))
    if lib == "shoal_ppe":
        import shoal

        return ExecutorLike(shoal.ProcessPoolExecutor(WORKERS))
    raise ValueError(f"unknown library {lib!r}")


# ---------------------------------------------------------------------------------
# /proc: the pool's worker processes (section 5) and clean-up after a timeout.
# ---------------------------------------------------------------------------------


def _children_from_proc_files(pid):
    kids = set()
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return kids
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                kids.update(int(k) for k in f.read().split())
        except OSError:
            pass
    return kids


def _parent_of(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return None
    return int(stat[stat.rindex(")") + 2 :].split()[1])


def children(pid):
    """Direct children of `pid`, from /proc/<pid>/task/*/children, or by scanning
    /proc/*/stat where the kernel lacks those files (CONFIG_PROC_CHILDREN)."""
    if os.path.exists(f"/proc/{os.getpid()}/task/{os.getpid()}/children"):
        return _children_from_proc_files(pid)
    return {int(p) for p in os.listdir("/proc") if p.isdigit() and _parent_of(int(p)) == pid}


def descendants(pid):
    found, todo = [], [pid]
    while todo:
        for kid in sorted(children(todo.pop())):
            if kid not in found:
                found.append(kid)
                todo.append(kid)
    return found


def _proc_text(pid, name):
    try:
        with open(f"/proc/{pid}/{name}", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def pick_busy_worker(root):
    """A worker process of the pool under `root`: a leaf of its process tree,
    preferably one asleep in time.sleep (its wchan names a sleep), else the lowest pid."""
    procs = descendants(root)
    leaves = [p for p in procs if not children(p)]
    if not leaves:
        return None
    asleep = [p for p in leaves if "sleep" in _proc_text(p, "wchan")]
    return min(asleep or leaves)


# ---------------------------------------------------------------------------------
# Trials: each runs in a fresh interpreter and prints one JSON line.
# ---------------------------------------------------------------------------------


def _check(got, want, what):
    if got != want:
        raise AssertionError(f"{what}: wrong results (got {got!r}, want {want!r})")


def trial_dispatch(lib, tasks):
    from _pyfuncs import inc, sleep

    pool = open_lib(lib)
    try:
        pool.warm(inc, sleep)
        xs = list(range(tasks))
        t0 = time.perf_counter()
        out = pool.one_at_a_time(inc, xs)
        seconds = time.perf_counter() - t0
        total = out if isinstance(out, int) else sum(f.result() for f in out)
        _check(total, sum(xs) + tasks, "sum of f(x)")
    finally:
        pool.close()
    return {"seconds": seconds, "value": seconds / tasks * 1e6}


def trial_map(lib, tasks):
    from _pyfuncs import inc, sleep

    pool = open_lib(lib)
    try:
        pool.warm(inc, sleep)
        xs = list(range(tasks))
        t0 = time.perf_counter()
        out = pool.map(inc, xs)
        seconds = time.perf_counter() - t0
        _check(out, [x + 1 for x in xs], "map(f, xs)")
    finally:
        pool.close()
    return {"seconds": seconds, "value": seconds / tasks * 1e6}


def trial_skew(lib, _tasks):
    from _pyfuncs import inc, sleep

    pool = open_lib(lib)
    try:
        pool.warm(inc, sleep)
        t0 = time.perf_counter()
        out = pool.map(sleep, SKEW)
        seconds = time.perf_counter() - t0
        _check(out, SKEW, "map(sleep, durations)")
    finally:
        pool.close()
    return {"seconds": seconds, "value": seconds}


def trial_startup(lib, _tasks):
    import importlib

    from _pyfuncs import inc

    module, attr = LIBS[lib][2].split(":")
    t0 = time.perf_counter()
    getattr(importlib.import_module(module), attr)  # importing is not start-up...
    import_ms = (time.perf_counter() - t0) * 1e3  # ...but is shown beside it
    t0 = time.perf_counter()
    pool = open_lib(lib)
    got = pool.first(inc, 1)
    seconds = time.perf_counter() - t0
    try:
        _check(got, 2, "f(1)")
    finally:
        pool.close()
    return {"seconds": seconds, "value": seconds * 1e3, "import_ms": import_ms}


def trial_kill(variant, _tasks):
    import concurrent.futures

    from _pyfuncs import inc, sleep

    kill = variant == "shoal_ppe_kill"
    pool = open_lib("shoal_ppe")
    me = os.getpid()
    info = {}
    try:
        pool.warm(inc, sleep)
        info["workers_before"] = descendants(me)
        t0 = time.perf_counter()
        futures = [pool.submit(sleep, KILL_SECONDS) for _ in range(KILL_TASKS)]
        if kill:
            time.sleep(max(0.0, t0 + KILL_AT - time.perf_counter()))
            victim = pick_busy_worker(me)
            if victim is None:
                raise RuntimeError(f"no worker process found under pid {me}")
            info["killed"] = {
                "pid": victim,
                "at": time.perf_counter() - t0,
                "cmdline": _proc_text(victim, "cmdline")[:200],
                "wchan": _proc_text(victim, "wchan"),
            }
            os.kill(victim, signal.SIGKILL)
        done, not_done = concurrent.futures.wait(futures, timeout=KILL_WAIT)
        seconds = time.perf_counter() - t0
        ok = sum(1 for f in done if f.exception() is None and f.result() == KILL_SECONDS)
        info["errors"] = [repr(f.exception()) for f in done if f.exception() is not None]
        info["workers_after"] = descendants(me)
    except BaseException:
        pool.ex.shutdown(wait=False, cancel_futures=True)
        raise
    if not_done:
        pool.ex.shutdown(wait=False, cancel_futures=True)
    else:
        pool.close()
    return {"seconds": seconds, "value": seconds, "ok": ok, "missing": len(not_done), **info}




def trial_async(variant, tasks):
    """Section 6: `tasks` calls of f(x)=x+1 awaited from one event loop (or, for the
    sync baseline, submitted and then each .result()-ed)."""
    import asyncio

    from _pyfuncs import inc, sleep

    lib = VARIANTS["async"][variant][1]
    pool = open_lib(lib)
    xs = list(range(tasks))
    inner = pool.ex if isinstance(pool, ExecutorLike) else pool.pool

    async def awaited():
        if variant == "shoal_pool_aiter":
            total = 0
            async for r in inner.imap_unordered_async(inc, xs, chunksize=1):
                total += r
            return total
        if variant == "shoal_ppe_gather":
            return sum(await asyncio.gather(*[inner.submit_async(inc, x) for x in xs]))
        if variant == "shoal_ppe_async":
            calls = [inner.submit_async(inc, x) for x in xs]
        else:  # the standard bridge: a callback per concurrent future
            calls = [asyncio.wrap_future(inner.submit(inc, x)) for x in xs]
        total = 0
        for call in calls:  # awaited in order, as the baseline takes .result()
            total += await call
        return total

    try:
        pool.warm(inc, sleep)
        t0 = time.perf_counter()
        if variant == "shoal_ppe_sync":
            total = sum(f.result() for f in [inner.submit(inc, x) for x in xs])
        else:
            total = asyncio.run(awaited())
        seconds = time.perf_counter() - t0
        _check(total, sum(xs) + tasks, "sum of f(x)")
    finally:
        pool.close()
    return {"seconds": seconds, "value": seconds / tasks * 1e6}


IO_CALLS, IO_SECONDS, IO_THREADS = 1000, 0.05, 100


def trial_threads(variant, _tasks):
    """Section 7: IO_CALLS sleeps of IO_SECONDS, mapped over IO_THREADS threads (or 2
    processes); the pool is started before the clock."""
    from _pyfuncs import sleep

    if variant == "std_threads":
        from concurrent.futures import ThreadPoolExecutor as pool_class
    elif variant == "mp_threads":
        from multiprocessing.pool import ThreadPool as pool_class
    elif variant == "shoal_threads":
        from shoal import ThreadPoolExecutor as pool_class
    elif variant == "shoal_thread_pool":
        from shoal import ThreadPool as pool_class
    else:  # mp: the 2-process pool
        import multiprocessing

        pool_class = multiprocessing.Pool
    pool = pool_class(WORKERS if variant == "mp" else IO_THREADS)
    durations = [IO_SECONDS] * IO_CALLS
    try:
        pool.map(sleep, [0.0] * (WORKERS if variant == "mp" else IO_THREADS))  # warm
        t0 = time.perf_counter()
        out = list(pool.map(sleep, durations))
        seconds = time.perf_counter() - t0
        _check(out, durations, "map(sleep, durations)")
    finally:
        if hasattr(pool, "shutdown"):
            pool.shutdown(wait=True)
        else:
            pool.close()
            pool.join()
    return {"seconds": seconds, "value": seconds}


TRIALS = {
    "dispatch": trial_dispatch,
    "map": trial_map,
    "skew": trial_skew,
    "startup": trial_startup,
    "kill": trial_kill,
    "async": trial_async,
    "threads": trial_threads,
}


def trial_main():
    """Entry point of one trial process: argv = [section, variant, tasks]."""
    section, variant, tasks = sys.argv[1], sys.argv[2], int(sys.argv[3])
    lib = VARIANTS[section][variant][1]
    try:
        result = TRIALS[section](variant if section in ("kill", "async", "threads") else lib, tasks)
    except BaseException as e:  # reported in the table, never fatal to the run
        import traceback

        result = {"error": f"{type(e).__name__}: {e}".strip()[:300],
                  "traceback": traceback.format_exc()}
    sys.stdout.flush()
    print(RESULT_MARK + json.dumps(result), flush=True)


# ---------------------------------------------------------------------------------
# Sections: which variants each runs, how its numbers read, and what they are held to.
# ---------------------------------------------------------------------------------

# section -> {variant: (row label, library)}; the order is the round-robin order.
VARIANTS = {
    "dispatch": {
        "mp": ("`multiprocessing.Pool.imap_unordered(chunksize=1)`", "mp"),
        "ppe": ("`ProcessPoolExecutor.submit` + `wait`", "ppe"),
        "loky": ("loky `get_reusable_executor().submit`", "loky"),
        "pebble": ("pebble `ProcessPool.schedule`", "pebble"),
        "shoal_pool": ("`shoal.Pool.imap_unordered(chunksize=1)`", "shoal_pool"),
        "shoal_ppe": ("`shoal.ProcessPoolExecutor.submit` + `wait`", "shoal_ppe"),
    },
    "map": {
        "mp": ("`multiprocessing.Pool.map(f, xs)`", "mp"),
        "shoal_pool": ("`shoal.Pool.map(f, xs)`", "shoal_pool"),
    },
    "skew": {
        "mp": ("`multiprocessing.Pool.map`", "mp"),
        "ppe": ("`ProcessPoolExecutor.map`", "ppe"),
        "loky": ("loky `executor.map`", "loky"),
        "pebble": ("pebble `ProcessPool.map`", "pebble"),
        "shoal_pool": ("`shoal.Pool.map`", "shoal_pool"),
        "shoal_ppe": ("`shoal.ProcessPoolExecutor.map`", "shoal_ppe"),
    },
    "startup": {
        "mp": ("`multiprocessing.Pool(2)` (default context)", "mp"),
        "mp_spawn": ("`multiprocessing.get_context('spawn').Pool(2)`", "mp_spawn"),
        "ppe": ("`ProcessPoolExecutor(2)` (default context)", "ppe"),
        "loky": ("loky `get_reusable_executor(max_workers=2)`", "loky"),
        "pebble": ("pebble `ProcessPool(max_workers=2)`", "pebble"),
        "shoal_pool": ("`shoal.Pool(2)`", "shoal_pool"),
        "shoal_ppe": ("`shoal.ProcessPoolExecutor(2)`", "shoal_ppe"),
    },
    "kill": {
        "shoal_ppe_plain": ("`shoal.ProcessPoolExecutor(2)`, no kill", "shoal_ppe"),
        "shoal_ppe_kill": (f"the same, SIGKILL of one worker {KILL_AT} s in", "shoal_ppe"),
    },
    "async": {
        "shoal_ppe_sync": ("`shoal.ProcessPoolExecutor.submit` + `.result()` (no loop)",
                           "shoal_ppe"),
        "shoal_ppe_async": ("shoal `executor.submit_async(f, x)`, each awaited", "shoal_ppe"),
        "shoal_ppe_gather": ("`await gather(*(shoal executor.submit_async(f, x) ...))`",
                             "shoal_ppe"),
        "shoal_ppe_wrap": ("`wrap_future(shoal executor.submit(f, x))`, each awaited",
                           "shoal_ppe"),
        "shoal_pool_aiter": ("`async for` over `shoal.Pool.imap_unordered_async`, chunksize=1",
                             "shoal_pool"),
        "ppe_wrap": ("`wrap_future(ProcessPoolExecutor.submit(f, x))`, each awaited", "ppe"),
    },
    "threads": {
        "std_threads": ("`concurrent.futures.ThreadPoolExecutor(100).map`", "mp"),
        "mp_threads": ("`multiprocessing.pool.ThreadPool(100).map`", "mp"),
        "shoal_threads": ("`shoal.ThreadPoolExecutor(100).map`", "shoal_ppe"),
        "shoal_thread_pool": ("`shoal.ThreadPool(100).map`", "shoal_pool"),
        "mp": ("`multiprocessing.Pool(2).map` (2 processes)", "mp"),
    },
}

SECTION_ORDER = ["dispatch", "map", "skew", "startup", "kill", "async", "threads"]

# section -> (title, unit, digits, ratio columns as (header, variant or None = bound))
SECTIONS = {
    "dispatch": ("1. One-at-a-time dispatch of f(x)=x+1, {tasks} tasks, 2 workers",
                 "us/task", 1,
                 [("÷ shoal Pool", "shoal_pool"), ("÷ shoal PPE", "shoal_ppe")]),
    "map": ("2. `map` with default settings, f(x)=x+1, {tasks} tasks, 2 workers",
            "us/task", 2, [("÷ shoal Pool.map", "shoal_pool")]),
    "skew": ("3. Skewed work: 190 x 5 ms then 10 x 200 ms, `map` with default settings",
             "s", 3, [("÷ lower bound", None), ("÷ shoal Pool.map", "shoal_pool")]),
    "startup": ("4. Start-up: from `Pool(2)` to the first result of `apply(f, (1,))`",
                "ms", 1, [("÷ shoal Pool", "shoal_pool")]),
    "kill": ("5. Kill recovery: 8 x sleep(1 s) on 2 workers, one worker SIGKILLed 0.3 s in",
             "s", 3, []),
    "async": ("6. asyncio: {tasks} tiny calls f(x)=x+1 awaited from one event loop, 2 workers",
              "us/task", 1, [("÷ shoal submit + result", "shoal_ppe_sync")]),
    "threads": ("7. I/O-bound: 1,000 x sleep(50 ms) on 100 threads (bound 0.5 s)", "s", 3,
                [("÷ stdlib threads", "std_threads"), ("÷ shoal ThreadPoolExecutor", "shoal_threads")]),
}

NOTES = {
    "dispatch": "Wall time of the dispatch loop divided by the number of tasks; the pool is "
                "started and warmed before the clock starts. \"÷ shoal X\" is the row's "
                "median over shoal X's median: above 1, shoal is that many times faster.",
    "map": "Default chunksize for both: multiprocessing splits the input into about "
           "4 chunks per worker.",
    "skew": f"Makespan of one `map` call, pool warmed. Lower bound "
            f"max(total / 2, longest) = {SKEW_BOUND:.3f} s.",
    "startup": "Each start-up in a fresh interpreter, the library already imported (its "
               "import time, in the same fresh interpreter after the benchmark's own "
               "stdlib imports, is the last number column); the clock stops at the first "
               "result.",
    "kill": "shoal only. Not run: `multiprocessing.Pool` loses the killed worker's task and "
            "its `map`/`get` hang forever (cpython #66587); `ProcessPoolExecutor` fails "
            "every pending future with `BrokenProcessPool` and stays broken.",
    "async": "Wall time from the first submit to the last result (for the loops: "
             "`asyncio.run` of the whole, loop start included), pool warmed first. "
             "\"÷ shoal submit + result\" under 1: faster per call than the synchronous path.",
    "threads": "Makespan of one `map` call, the pool started and warmed first (one empty "
               "sleep per worker). The 2-process pool is the process pool's answer to "
               "the same I/O-bound work.",
}

GOALS = [  # (section, shoal variant, peer variant or None = bound/absolute, op, limit, text)
    ("dispatch", "shoal_pool", "mp", ">=", 3.0,
     "shoal.Pool.imap_unordered at least 3x faster than Pool.imap_unordered"),
    ("dispatch", "shoal_ppe", "mp", ">=", 3.0,
     "shoal.ProcessPoolExecutor.submit at least 3x faster than Pool.imap_unordered"),
    ("dispatch", "shoal_pool", "ppe", ">=", 10.0,
     "shoal.Pool.imap_unordered at least 10x faster than ProcessPoolExecutor.submit"),
    ("dispatch", "shoal_ppe", "ppe", ">=", 10.0,
     "shoal.ProcessPoolExecutor.submit at least 10x faster than ProcessPoolExecutor.submit"),
    ("map", "shoal_pool", "mp", "<=", 2.0, "shoal.Pool.map within 2x of Pool.map"),
    ("skew", "shoal_pool", None, "<=", 1.05, "shoal.Pool.map within 1.05x of the lower bound"),
    ("skew", "shoal_ppe", None, "<=", 1.05,
     "shoal.ProcessPoolExecutor.map within 1.05x of the lower bound"),
    ("startup", "shoal_pool", None, "<", 100.0, "shoal.Pool(2) to first result under 100 ms"),
    ("startup", "shoal_ppe", None, "<", 100.0,
     "shoal.ProcessPoolExecutor(2) to first result under 100 ms"),
    ("async", "shoal_ppe_async", "shoal_ppe_sync", "<=", 1.0,
     "submit_async awaited at least as fast per call as submit + result (issue 14)"),
    ("async", "shoal_pool_aiter", "shoal_ppe_sync", "<=", 1.0,
     "imap_unordered_async at least as fast per call as submit + result (issue 14)"),
    ("threads", "shoal_threads", "std_threads", "<=", 1.2,
     "shoal.ThreadPoolExecutor within 1.2x of the stdlib's threads (issue 14)"),
    ("threads", "shoal_thread_pool", "std_threads", "<=", 1.2,
     "shoal.ThreadPool within 1.2x of the stdlib's threads (issue 14)"),
    ("threads", "shoal_threads", "mp", ">=", 30.0,
     "shoal.ThreadPoolExecutor at least 30x faster than 2 processes (issue 14)"),
]

# ---------------------------------------------------------------------------------
# The driver: probes the libraries, runs the trials round-robin, prints the tables.
# ---------------------------------------------------------------------------------


def trial_env():
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([HERE] + [p for p in [env.get("PYTHONPATH")] if p])
    return env


PROBE = r"""
import json, sys
out = {"python": sys.version.split()[0]}
for name in ["loky", "pebble", "cloudpickle", "shoal"]:
    try:
        m = __import__(name)
        try:
            from importlib.metadata import version
            v = version(name)
        except Exception:
            v = getattr(m, "__version__", "?")
        out[name] = {"ok": True, "version": v,
                     "file": getattr(m, "__file__", None), "has": [], "missing": {}}
    except BaseException as e:
        out[name] = {"ok": False, "error": f"{type(e).__name__}: {e}"}
        continue
    if name == "shoal":
        # Compiled as `pip install` compiles them: an editable install (maturin develop)
        # under PYTHONDONTWRITEBYTECODE would compile them again in every worker started.
        import compileall, os
        compileall.compile_dir(os.path.dirname(m.__file__), quiet=1)
        for attr in ("Pool", "ProcessPoolExecutor"):  # shoal imports these lazily
            try:
                getattr(m, attr)
                out[name]["has"].append(attr)
            except BaseException as e:
                out[name]["missing"][attr] = f"{type(e).__name__}: {e}"
import multiprocessing
out["start_method"] = multiprocessing.get_start_method()
print(json.dumps(out))
"""


def probe():
    p = subprocess.run([sys.executable, "-c", PROBE], env=trial_env(), cwd=HERE,
                       capture_output=True, text=True, timeout=120)
    if p.returncode != 0:
        sys.exit(f"py_overhead: cannot probe the libraries:\n{p.stderr}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def skip_reason(lib, libs):
    need = LIBS[lib][1]
    if need is None:
        return None
    info = libs[need]
    if not info["ok"]:
        return f"skipped: `import {need}` failed (see Libraries above)"
    if need == "shoal":
        attr = "Pool" if lib == "shoal_pool" else "ProcessPoolExecutor"
        if attr not in info["has"]:
            return f"skipped: `shoal.{attr}` failed ({info['missing'].get(attr, '?')})"[:300]
    return None


def kill_tree(pid):
    """SIGKILL a timed-out trial and everything under it, by pid."""
    tree = descendants(pid)
    for p in [pid] + tree:
        try:
            os.kill(p, signal.SIGKILL)
        except OSError:
            pass
    try:
        os.killpg(pid, signal.SIGKILL)  # the trial leads its own session
    except OSError:
        pass


def run_trial(section, variant, tasks, timeout):
    cmd = [sys.executable, "-c", "import py_overhead; py_overhead.trial_main()",
           section, variant, str(tasks)]
    p = subprocess.Popen(cmd, env=trial_env(), cwd=HERE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_tree(p.pid)
        p.communicate()
        return {"error": f"timed out after {timeout:g} s (killed)", "timeout": True}
    for line in reversed(out.splitlines()):
        if line.startswith(RESULT_MARK):
            return json.loads(line[len(RESULT_MARK):])
    tail = (err.strip().splitlines() or [""])[-1]
    return {"error": f"trial exited {p.returncode} without a result: {tail}"[:300],
            "stderr": err[-4000:]}


def median(xs):
    xs = sorted(xs)
    n = len(xs)
    return (xs[(n - 1) // 2] + xs[n // 2]) / 2


def fmt(v, digits):
    return "—" if v is None else f"{v:,.{digits}f}"


def summarize(samples):
    values = [s["value"] for s in samples if "error" not in s]
    errors = [s["error"] for s in samples if "error" in s]
    return {"median": median(values) if values else None,
            "min": min(values) if values else None,
            "max": max(values) if values else None,
            "n": len(values), "errors": errors}


def note_for(summary, skipped, reps):
    if skipped:
        return skipped
    errs = summary["errors"]
    if not errs:
        return ""
    first = errs[0].replace("|", "\\|").replace("\n", " ")
    return f"{len(errs)}/{reps} reps failed: {first}"


def print_section(section, results, tasks, reps):
    title, unit, digits, ratio_cols = SECTIONS[section]
    print(f"\n### {title.format(tasks=f'{tasks:,}')}\n")
    print(NOTES[section] + "\n")
    stats = {v: summarize(r["samples"]) for v, r in results.items()}
    if section == "kill":
        print_kill(results, stats, reps)
        return
    extra = ["import ms (not in start-up)"] if section == "startup" else []
    head = (["variant", f"median {unit}", "min", "max"] + [h for h, _ in ratio_cols] + extra
            + ["note"])
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for v, r in results.items():
        s = stats[v]
        row = [r["label"], fmt(s["median"], digits), fmt(s["min"], digits), fmt(s["max"], digits)]
        for _, ref in ratio_cols:
            base = (SKEW_BOUND if ref is None else
                    stats.get(ref, {}).get("median") if ref in stats else None)
            row.append("—" if s["median"] is None or not base else f"{s['median'] / base:.2f}")
        if extra:
            imports = [x["import_ms"] for x in r["samples"] if "import_ms" in x]
            row.append(fmt(median(imports), 1) if imports else "—")
        row.append(note_for(s, r.get("skipped"), reps))
        print("| " + " | ".join(row) + " |")


def print_kill(results, stats, reps):
    print("| variant | median s | min | max | all 8 results back | note |")
    print("|---|---|---|---|---|---|")
    for v, r in results.items():
        s = stats[v]
        good = [x for x in r["samples"] if "error" not in x]
        full = sum(1 for x in good if x.get("ok") == KILL_TASKS)
        back = "—"
        if good:
            counts = ", ".join(str(x.get("ok")) for x in good)
            back = f"{full}/{len(r['samples'])} reps (results per rep: {counts})"
        print(f"| {r['label']} | {fmt(s['median'], 3)} | {fmt(s['min'], 3)} | "
              f"{fmt(s['max'], 3)} | {back} | {note_for(s, r.get('skipped'), reps)} |")
    plain, kill = stats.get("shoal_ppe_plain"), stats.get("shoal_ppe_kill")
    if plain and kill and plain["median"] is not None and kill["median"] is not None:
        plain_s, kill_s = (results[v]["samples"] for v in ("shoal_ppe_plain", "shoal_ppe_kill"))
        pairs = [k["value"] - p["value"] for p, k in zip(plain_s, kill_s, strict=False)
                 if "error" not in p and "error" not in k]
        line = f"\nExtra time with the kill: {kill['median'] - plain['median']:+.3f} s " \
               "(difference of the medians)"
        if pairs:
            line += (f"; per interleaved pair: median {median(pairs):+.3f} s, "
                     f"min {min(pairs):+.3f}, max {max(pairs):+.3f}")
        print(line + ".")
        errs = sorted({e for x in results["shoal_ppe_kill"]["samples"]
                       for e in x.get("errors", [])})
        if errs:
            print("Errors seen in the kill variant: " + "; ".join(errs)[:500])


def goals(all_results, libs):
    if not libs["shoal"]["ok"]:
        print("\n### Goals\n\nNot checked: shoal is not importable.")
        return
    lines = []
    for section, shoal_v, peer_v, op, limit, text in GOALS:
        res = all_results.get(section)
        if not res or shoal_v not in res:
            continue
        s = summarize(res[shoal_v]["samples"])["median"]
        if s is None:
            lines.append(f"- {text}: no shoal result")
            continue
        if peer_v is None:
            value = s / SKEW_BOUND if section == "skew" else s
        else:
            p = summarize(res[peer_v]["samples"])["median"] if peer_v in res else None
            if p is None:
                lines.append(f"- {text}: no result for the peer")
                continue
            value = p / s if op == ">=" else s / p
        met = {">=": value >= limit, "<=": value <= limit, "<": value < limit}[op]
        lines.append(f"- {text}: {value:.2f} ({'met' if met else 'NOT met'})")
    kill = all_results.get("kill")
    if kill and "shoal_ppe_kill" in kill:
        plain = summarize(kill["shoal_ppe_plain"]["samples"])["median"]
        killed = summarize(kill["shoal_ppe_kill"]["samples"])["median"]
        samples = kill["shoal_ppe_kill"]["samples"]
        all_back = bool(samples) and all(x.get("ok") == KILL_TASKS for x in samples)
        if plain is None or killed is None:
            lines.append("- SIGKILL during 8 x 1 s: no shoal result")
        else:
            extra = killed - plain
            met = all_back and extra < 0.5
            lines.append(f"- SIGKILL during 8 x 1 s: all 8 back in every rep: "
                         f"{'yes' if all_back else 'no'}, {extra:+.3f} s over no kill, "
                         f"goal < 0.5 s ({'met' if met else 'NOT met'})")
    if lines:
        print("\n### Goals (medians)\n")
        print("\n".join(lines))


def machine():
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            model = next((ln.split(":", 1)[1].strip() for ln in f
                          if ln.startswith("model name")), "")
    except OSError:
        pass
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:
        cpus = os.cpu_count()
    rev = subprocess.run(["git", "-C", HERE, "rev-parse", "--short", "HEAD"],
                         capture_output=True, text=True).stdout.strip()
    import platform

    return {"platform": platform.platform(), "cpu": model, "cpus": cpus, "git": rev,
            "date": time.strftime("%Y-%m-%d %H:%M:%S %z")}


def parse_sections(text):
    if not text:
        return list(SECTION_ORDER)
    chosen = []
    for part in text.split(","):
        part = part.strip().lower()
        if part.isdigit() and 1 <= int(part) <= len(SECTION_ORDER):
            part = SECTION_ORDER[int(part) - 1]
        if part not in SECTION_ORDER:
            sys.exit(f"py_overhead: --only: unknown section {part!r} "
                     f"(one of {', '.join(SECTION_ORDER)} or 1-{len(SECTION_ORDER)})")
        chosen.append(part)
    return [s for s in SECTION_ORDER if s in chosen]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=5, help="repetitions of each variant (5)")
    ap.add_argument("--tasks", type=int, default=20000,
                    help="tasks in the dispatch, map and async sections (20000)")
    ap.add_argument("--only", metavar="SECTION[,SECTION]",
                    help="run only these: " + ", ".join(SECTION_ORDER) + " (or 1-7)")
    ap.add_argument("--json", metavar="PATH", help="also write the raw numbers here")
    ap.add_argument("--timeout", type=float, default=120.0,
                    help="seconds before one trial is killed and reported (120)")
    args = ap.parse_args()
    if args.reps < 1 or args.tasks < 1:
        sys.exit("py_overhead: --reps and --tasks must be at least 1")
    sections = parse_sections(args.only)

    libs = probe()
    meta = {"machine": machine(), "libraries": libs, "reps": args.reps, "tasks": args.tasks,
            "workers": WORKERS, "command": shlex.join(["python3", "bench/py_overhead.py"]
                                                      + sys.argv[1:])}
    m = meta["machine"]
    print(f"## shoal's Python front against the process pools (`{meta['command']}`)\n")
    print(f"{m['date']}, git {m['git'] or '?'}, {m['cpus']} CPUs ({m['cpu']}), "
          f"{m['platform']}, Python {libs['python']} (multiprocessing default context: "
          f"{libs['start_method']}); {args.reps} reps of each variant, interleaved "
          f"round-robin, each in a fresh interpreter.\n")
    versions = []
    for name in ["shoal", "loky", "pebble", "cloudpickle"]:
        info = libs[name]
        if not info["ok"]:
            versions.append(f"{name} not importable ({info['error']})")
        elif name == "shoal":
            versions.append(f"shoal {info['version']} from {info['file']}")
        else:
            versions.append(f"{name} {info['version']}")
    print("Libraries: " + ", ".join(versions) + ".")
    load_start = os.getloadavg()[0]

    all_results = {}
    for section in sections:
        results = {}
        for v, (label, lib) in VARIANTS[section].items():
            results[v] = {"label": label, "library": lib, "samples": [],
                          "skipped": skip_reason(lib, libs)}
        live = [v for v, r in results.items() if not r["skipped"]]
        for rep in range(args.reps):
            for v in live:
                r = results[v]
                if any(s.get("timeout") for s in r["samples"]):
                    continue  # one timeout is enough: do not wait it out REPS times
                s = run_trial(section, v, args.tasks, args.timeout)
                r["samples"].append(s)
                shown = s["error"] if "error" in s else f"{s['value']:.3f} {SECTIONS[section][1]}"
                print(f"  [{section} {rep + 1}/{args.reps}] {v}: {shown}", file=sys.stderr,
                      flush=True)
        all_results[section] = results
        print_section(section, results, args.tasks, args.reps)
        sys.stdout.flush()

    goals(all_results, libs)
    load_end = os.getloadavg()[0]
    meta["loadavg_1min"] = [load_start, load_end]
    busy = ""
    if max(load_start, load_end) > 0.5:
        busy = " (other work was running: the numbers are noisier)"
    print(f"\nLoad average (1 min) before the run {load_start:.2f}, after {load_end:.2f}{busy}.")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "bound_skew_s": SKEW_BOUND, "sections": all_results}, f,
                      indent=1)
        print(f"\nRaw numbers: {args.json}")


if __name__ == "__main__":
    main()
