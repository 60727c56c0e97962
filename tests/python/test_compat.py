"""Drop-in means drop-in: what the standard library's pools do, shoal's do, checked side
by side with the real thing (multiprocessing's spawn pools, concurrent.futures):
sharing state through initargs and Manager proxies, the exception types code catches,
tracebacks of functions defined in `__main__`, and no object kept alive past its task."""

from __future__ import annotations

import concurrent.futures
import functools
import gc
import multiprocessing
import os
import subprocess
import sys
import textwrap
import threading
import time
import weakref
from concurrent.futures.process import BrokenProcessPool

import pytest

import compat_tasks
import shoal
from conftest import FAST

SPAWN = multiprocessing.get_context("spawn")


def collected(refs, timeout: float = 5.0) -> list[bool]:
    """Whether each weakly referenced object was collected, waiting up to `timeout` for
    a result thread that may still hold the last reference in its locals."""
    deadline = time.monotonic() + timeout
    while True:
        gc.collect()
        dead = [ref() is None for ref in refs]
        if all(dead) or time.monotonic() > deadline:
            return dead
        time.sleep(0.01)


# ---------------------------------------------------------------------------------------
# A callable and its arguments are collectable once their task ended.


def test_a_callable_and_its_arguments_die_with_their_task_not_with_the_pool(pool, executor):
    submitters = {
        "executor": lambda fn, *args, **kwargs: executor.submit(fn, *args, **kwargs).result(10),
        "pool": lambda fn, *args, **kwargs: pool.apply_async(fn, args, kwargs).get(10),
    }
    for name, call in submitters.items():
        holder = compat_tasks.Holder(1)
        arg, kwarg = compat_tasks.Token(2), compat_tasks.Token(3)
        bound, enclosed = compat_tasks.Token(4), compat_tasks.Token(5)
        closure = compat_tasks.adder(enclosed)
        assert call(holder.add, 1) == 2
        assert call(compat_tasks.value_of, arg, other=kwarg) == 5
        assert call(functools.partial(compat_tasks.value_of, bound)) == 4
        assert call(closure, 1) == 6
        refs = {
            "bound method's instance": weakref.ref(holder),
            "argument": weakref.ref(arg),
            "keyword argument": weakref.ref(kwarg),
            "partial's argument": weakref.ref(bound),
            "closure": weakref.ref(closure),
            "closure's variable": weakref.ref(enclosed),
        }
        del holder, arg, kwarg, bound, enclosed, closure
        gc.collect()
        # A single call's outcome reaches its caller only after the dispatcher let go of
        # the call: nothing may hold these now, while the pool lives on.
        alive = [what for what, ref in refs.items() if ref() is not None]
        assert not alive, f"{name}: kept alive after the task ended: {alive}"

    holder = compat_tasks.Holder(1)
    refs = [weakref.ref(holder)]
    assert pool.map(holder.add, range(3)) == [1, 2, 3]
    assert list(executor.map(holder.add, range(3))) == [1, 2, 3]
    assert sorted(pool.imap_unordered(holder.add, range(3), chunksize=1)) == [1, 2, 3]
    del holder
    assert collected(refs) == [True]


def test_the_function_cache_still_serves_a_function_submitted_again(executor):
    core = executor._core
    assert executor.submit(compat_tasks.identity, 1).result(10) == 1
    head = core.call_head(compat_tasks.identity)
    assert core.call_head(compat_tasks.identity) is head  # cached: not pickled again
    holder = compat_tasks.Holder(1)
    method = holder.add
    assert core.call_head(method) is core.call_head(method)
    del holder, method
    gc.collect()
    assert len(core._functions) == 1  # the method's entry left with it


# ---------------------------------------------------------------------------------------
# The exception types code written for the standard library catches.


def test_a_dead_worker_is_a_broken_process_pool_as_in_the_stdlib():
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=SPAWN) as stdlib:
        with pytest.raises(BrokenProcessPool):
            stdlib.submit(compat_tasks.kill_self).result(30)
    with shoal.ProcessPoolExecutor(1, retries=0, **FAST) as executor:
        try:
            executor.submit(compat_tasks.kill_self).result(30)
        except BrokenProcessPool as error:  # as code written for the stdlib catches it
            assert isinstance(error, shoal.WorkerCrashed)
        else:
            pytest.fail("no error for a killed worker")
        assert executor.submit(compat_tasks.identity, 1).result(10) == 1  # still usable


def test_a_failing_initializer_is_a_broken_executor_as_in_the_stdlib():
    with concurrent.futures.ProcessPoolExecutor(
        1, mp_context=SPAWN, initializer=compat_tasks.failing_initializer
    ) as stdlib:
        with pytest.raises(BrokenProcessPool):
            stdlib.submit(compat_tasks.identity, 1).result(30)
    with shoal.ProcessPoolExecutor(
        1, initializer=compat_tasks.failing_initializer, **FAST
    ) as executor:
        error = executor.submit(compat_tasks.identity, 1).exception(30)
    assert isinstance(error, shoal.InitializerError)
    assert isinstance(error, BrokenProcessPool)
    assert isinstance(error, concurrent.futures.BrokenExecutor)
    assert "no model here" in str(error.__cause__)


def test_a_picklers_own_exception_reaches_the_caller_as_in_the_stdlib(pool, executor):
    refuses = compat_tasks.RefusesPickling()
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=SPAWN) as stdlib:
        expected = stdlib.submit(compat_tasks.identity, refuses).exception(30)
    with SPAWN.Pool(1) as spawn_pool:
        with pytest.raises(compat_tasks.NotShareable):
            spawn_pool.apply(compat_tasks.identity, (refuses,))
    assert type(expected) is compat_tasks.NotShareable
    got = executor.submit(compat_tasks.identity, refuses).exception(10)
    assert type(got) is compat_tasks.NotShareable and str(got) == str(expected)
    with pytest.raises(compat_tasks.NotShareable, match="stays in its process"):
        pool.apply(compat_tasks.identity, (refuses,))
    with pytest.raises(compat_tasks.NotShareable):
        pool.map(compat_tasks.identity, [1, refuses, 3], chunksize=1)
    with pytest.raises(compat_tasks.NotShareable):
        shoal.Pool(1, compat_tasks.identity, (refuses,))
    # What picklers raise themselves (a TypeError for a lock) is a shoal.PicklingError
    # too, which names the call.
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=SPAWN) as stdlib:
        expected = stdlib.submit(compat_tasks.identity, threading.Lock()).exception(30)
    got = executor.submit(compat_tasks.identity, threading.Lock()).exception(10)
    assert type(expected) is TypeError and isinstance(got, TypeError), (expected, got)
    assert isinstance(got, shoal.PicklingError) and str(expected) in str(got)


# ---------------------------------------------------------------------------------------
# Tracebacks of functions pickled by value show their file, line and source line.

_SCRIPT = """
import multiprocessing, sys, shoal

def boom(x):
    y = x + 1
    raise ValueError(f"bad {y}")

def frames(error):
    tb = str(error.__cause__)
    return [line for line in tb.splitlines() if "boom" in line or "raise ValueError" in line]

if __name__ == "__main__":
    kind = sys.argv[1]
    if kind == "deleted":
        import os
        os.unlink(__file__)  # the workers cannot read the source any more
    context = multiprocessing.get_context("fork" if kind == "deleted" else "spawn")
    for name, make in (("stdlib", context.Pool), ("shoal", shoal.Pool)):
        with make(1) as pool:
            try:
                pool.apply(boom, (1,))
            except ValueError as error:
                print(name, frames(error))
            try:
                pool.apply(lambda x: [][x], (1,))
            except IndexError as error:
                lines = str(error.__cause__).splitlines()
                print(name + "-lambda", [line for line in lines if "lambda" in line][:2])
            except Exception as error:  # the stdlib cannot pickle a lambda
                print(name + "-lambda", type(error).__name__)
"""


@pytest.mark.parametrize("kind", ["readable", "deleted"])
def test_a_main_functions_traceback_shows_its_file_and_line_as_multiprocessing_does(
    kind, tmp_path
):
    source = textwrap.dedent(_SCRIPT)
    script = tmp_path / "script.py"
    script.write_text(source)
    done = subprocess.run(
        [sys.executable, str(script), kind], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    lines = dict(line.split(" ", 1) for line in done.stdout.splitlines())
    stdlib, ours = eval(lines["stdlib"]), eval(lines["shoal"])  # our own script's output
    # Where multiprocessing's worker shows the frame (it imports __main__ by name, or
    # was forked), shoal's shows it too (the function travels by value): the same file,
    # line and source line, or only file and line where the source cannot be read.
    assert ours == stdlib, done.stdout
    assert ours[0].strip() == f'File "{script}", line 6, in boom', ours
    if kind == "readable":
        assert ours[1:] == ['    raise ValueError(f"bad {y}")'], ours
    else:
        assert len(ours) == 1, ours
    # A lambda, which only shoal can send, likewise.
    line = 1 + source.splitlines().index("                pool.apply(lambda x: [][x], (1,))")
    lambda_frame = eval(lines["shoal-lambda"])
    assert lambda_frame[0].strip() == f'File "{script}", line {line}, in <lambda>', lambda_frame
    if kind == "readable":
        assert lambda_frame[1].strip() == "pool.apply(lambda x: [][x], (1,))"
    else:
        assert len(lambda_frame) == 1, lambda_frame


# ---------------------------------------------------------------------------------------
# Sharing state: multiprocessing objects in initargs, Manager proxies anywhere.


def _fds_on(target_fd: int) -> int:
    """How many descriptors of this process refer to the same file as `target_fd`."""
    target = os.readlink(f"/proc/self/fd/{target_fd}")
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            count += os.readlink(f"/proc/self/fd/{fd}") == target
        except OSError:
            pass
    return count


@pytest.mark.parametrize("front", ["Pool", "ProcessPoolExecutor"])
def test_queue_lock_value_array_event_in_initargs_as_spawn_pools_take_them(front):
    outcomes = {}
    for name in ("spawn", "shoal"):
        queue, lock = SPAWN.Queue(), SPAWN.Lock()
        value, array, event = SPAWN.Value("i", 0), SPAWN.Array("i", 4), SPAWN.Event()
        event.set()
        shared = (queue, lock, value, array, event)
        pipe_fds = _fds_on(queue._reader.fileno())
        if front == "Pool":
            make = SPAWN.Pool if name == "spawn" else functools.partial(shoal.Pool, **FAST)
            # Workers replaced after each task inherit the objects as the first ones did.
            with make(2, compat_tasks.share, shared, maxtasksperchild=1) as pool:
                results = pool.map(compat_tasks.use_shared, range(4), chunksize=1)
                pool.close()
                pool.join()
        else:
            make = (
                functools.partial(concurrent.futures.ProcessPoolExecutor, mp_context=SPAWN)
                if name == "spawn"
                else functools.partial(shoal.ProcessPoolExecutor, **FAST)
            )
            with make(
                2, initializer=compat_tasks.share, initargs=shared, max_tasks_per_child=1
            ) as executor:
                results = list(executor.map(compat_tasks.use_shared, range(4)))
        queued = sorted(queue.get(timeout=10) for _ in range(4))
        outcomes[name] = (results, queued, value.value, list(array))
        # The descriptors handed to the workers are closed once the pool ended.
        assert _fds_on(queue._reader.fileno()) == pipe_fds, name
    assert outcomes["shoal"] == outcomes["spawn"] == (
        [True] * 4,
        [0, 1, 2, 3],
        6,
        [0, 10, 20, 30],
    )


def test_objects_of_the_fork_context_are_refused_as_spawn_pools_refuse_them():
    lock = multiprocessing.get_context("fork").Lock()
    if not hasattr(lock, "_is_fork_ctx"):
        pytest.skip("this Python's multiprocessing lets fork-context locks reach spawn children")
    with pytest.raises(RuntimeError, match="fork context") as stdlib:
        SPAWN.Pool(1, compat_tasks.identity, (lock,))
    with pytest.raises(RuntimeError, match="fork context") as ours:
        shoal.Pool(1, compat_tasks.identity, (lock,), **FAST)
    assert str(ours.value) == str(stdlib.value)


def test_multiprocessing_objects_as_task_arguments_are_refused_as_by_the_stdlib(pool, executor):
    queue = SPAWN.Queue()
    with SPAWN.Pool(1) as spawn_pool:
        with pytest.raises(RuntimeError, match="Queue objects should only be shared") as stdlib:
            spawn_pool.apply(compat_tasks.identity, (queue,))
    with pytest.raises(RuntimeError, match="Queue objects should only be shared") as ours:
        pool.apply(compat_tasks.identity, (queue,))
    assert str(ours.value).startswith(str(stdlib.value))
    assert isinstance(executor.submit(compat_tasks.identity, queue).exception(10), RuntimeError)


def test_manager_proxies_as_arguments_and_in_initargs_as_spawn_pools_take_them():
    with multiprocessing.Manager() as manager:
        outcomes = {}
        for name in ("spawn", "shoal"):
            mapping, queue = manager.dict(), manager.Queue()
            make = SPAWN.Pool if name == "spawn" else functools.partial(shoal.Pool, **FAST)
            with make(2) as pool:
                results = pool.starmap(
                    compat_tasks.put_in_proxies, [(mapping, queue, k) for k in range(4)]
                )
            with make(2, compat_tasks.share_proxy, (mapping,)) as pool:
                keys = pool.map(compat_tasks.put_in_shared_proxy, [10, 11])
            outcomes[name] = (
                results,
                keys,
                sorted(queue.get(timeout=10) for _ in range(4)),
                sorted(mapping.keys()),
            )
            with shoal.ProcessPoolExecutor(2, **FAST) as executor:
                assert executor.submit(compat_tasks.put_in_proxies, mapping, queue, 20).result(10)
        assert outcomes["shoal"] == outcomes["spawn"]
        assert outcomes["shoal"][3] == [0, 1, 2, 3, 10, 11]


def test_workers_hold_the_callers_authkey_whenever_they_load_multiprocessing():
    mine = bytes(multiprocessing.current_process().authkey)
    # Loaded by the first task (the worker adopts the key on import) ...
    with shoal.Pool(1, **FAST) as pool:
        assert pool.apply(compat_tasks.authkey) == mine
    # ... or already loaded by the initializer.
    with shoal.Pool(1, compat_tasks.import_multiprocessing_first, **FAST) as pool:
        assert pool.apply(compat_tasks.authkey) == mine


# ---------------------------------------------------------------------------------------
# Functions defined in __main__ share their module's globals in a worker.

_GLOBALS_SCRIPT = """
import multiprocessing, sys, shoal

PLACEHOLDER = None
LIMIT = 10


def init(value):
    global PLACEHOLDER, UNDECLARED, CALLS
    PLACEHOLDER, UNDECLARED, CALLS = value, value + 1, 0


def helper(x):
    return min(x, LIMIT)


def task(x):
    global CALLS
    CALLS += 1
    return (PLACEHOLDER, UNDECLARED, CALLS, helper(x))


def clip(x):
    return helper(x)


STATE = {}
SEEN = []


class Cache:
    def __init__(self):
        self.found = {}


CACHE = Cache()
FUNCS = {"double": lambda x: 2 * x}  # a value plain pickle cannot take


def init_in_place(value):
    STATE["model"] = value  # no `global`: the module's objects are filled in place
    CACHE.found["model"] = value
    FUNCS["model"] = value


def use_state(x):
    return (STATE.get("model"), CACHE.found.get("model"), FUNCS.get("model"))


def remember(x):
    hit = x in SEEN
    SEEN.append(x)
    return hit


def peek(_):
    return sorted(SEEN)


if __name__ == "__main__":
    for name, make in (("stdlib", multiprocessing.get_context("spawn").Pool), ("shoal", shoal.Pool)):
        LIMIT = 10
        with make(1, init, (41,)) as pool:
            print(name, pool.map(task, [5, 50], chunksize=1) + [pool.apply(task, (7,))])
            # State a task built in place stays when other functions arrive.
            print(name + "-cache", [pool.apply(remember, (1,)), pool.apply(remember, (2,)),
                                    pool.apply(peek, (0,)), pool.apply(remember, (1,))])
            # A global the worker has keeps its value there, as in a spawn pool's worker.
            LIMIT = 20
            print(name + "-later", pool.apply(clip, (50,)))
        with make(1, init_in_place, ("M",)) as pool:
            first = pool.map(use_state, range(2))
            STATE["note"] = 1  # the caller's own copy changes: not the worker's
            print(name + "-in-place", first + pool.map(use_state, range(2)))
"""


def test_main_functions_share_their_globals_in_a_worker_as_in_a_spawn_pool(tmp_path):
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(_GLOBALS_SCRIPT))
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    lines = dict(line.split(" ", 1) for line in done.stdout.splitlines())
    # The initializer's globals (one the caller has as a placeholder, one it lacks),
    # a task's own global, a helper: what the spawn pool's worker module shows.
    assert lines["shoal"] == lines["stdlib"] == "[(41, 42, 1, 5), (41, 42, 2, 10), (41, 42, 3, 7)]"
    # What the worker's code put into module-level objects in place (a dict, an
    # instance of a script's class, a dict plain pickle cannot take): an initializer's
    # state, a task's cache. Another function's arrival, or the caller changing its own
    # copy, must not replace it; nor does a global the caller rebinds later.
    assert lines["shoal-in-place"] == lines["stdlib-in-place"] == str([("M", "M", "M")] * 4)
    assert lines["shoal-cache"] == lines["stdlib-cache"] == "[False, False, [1, 2], True]"
    assert lines["shoal-later"] == lines["stdlib-later"] == "10"
