"""Functions the tests run in worker processes.

They live in a module of their own, importable by the workers (the pool hands its
sys.path to them), so that they are pickled by reference and a worker imports only this
small module, not a test file with pytest behind it.
"""

from __future__ import annotations

import os
import signal
import threading
import time


def add(a, b=0):
    return a + b


def inc(x):
    return x + 1


def square(x):
    return x * x


def boom(message="bad"):
    raise ValueError(message)


def fail_on(x, bad):
    if x in bad:
        raise ValueError(f"item {x} is bad")
    return x


def sleep_then(seconds, value=None):
    time.sleep(seconds)
    return value


def pid(_=None):
    return os.getpid()


def affinity(_=None):
    return sorted(os.sched_getaffinity(0))


def segfault():
    """Reads address 0: a real segmentation fault, not a signal sent."""
    import ctypes

    ctypes.string_at(0)


def parent_mark():
    """This process's view of `tasks.MARK` and its command line."""
    with open("/proc/self/cmdline", "rb") as cmdline:
        return globals().get("MARK"), cmdline.read().split(b"\0")


def sleep_then_affinity(seconds):
    """(pid, the CPUs it may run on), after `seconds`."""
    time.sleep(seconds)
    return os.getpid(), affinity()


def sleep_pid(seconds):
    time.sleep(seconds)
    return os.getpid()


def kill_self(sig=signal.SIGKILL):
    os.kill(os.getpid(), sig)
    time.sleep(10)


def log_pid(path, who, seconds=0.0):
    """Appends "<pid> <who>" to `path` (one write: lines of concurrent tasks stay whole),
    then sleeps."""
    with open(path, "a") as log:
        log.write(f"{os.getpid()} {who}\n")
    time.sleep(seconds)
    return who


def log_pid_then_die(path, who):
    """As log_pid, then kills its own worker."""
    log_pid(path, who)
    os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(10)


def kill_self_once(marker_path, value):
    """Kills its worker the first time (the marker file does not exist yet), then
    returns `value`: a crash that a retry cures."""
    if not os.path.exists(marker_path):
        open(marker_path, "w").close()
        os.kill(os.getpid(), signal.SIGKILL)
    return value


def die_on(x, bad=3):
    """Returns x, except that item `bad` kills its worker."""
    if x == bad:
        os.kill(os.getpid(), signal.SIGKILL)
    return x


def hog(megabytes):
    blocks = []
    for _ in range(megabytes):
        blocks.append(bytearray(1 << 20))
    return len(blocks)


def unpicklable_result(_=None):
    return threading.Lock()


class Unpicklable(Exception):
    """An exception holding a lock: it cannot be pickled."""

    def __init__(self):
        super().__init__("holds a lock")
        self.lock = threading.Lock()


def raise_unpicklable():
    raise Unpicklable()


class NeedsTwoArgs(Exception):
    """An exception that pickles but cannot be unpickled (its __init__ wants 2 args)."""

    def __init__(self, a, b):
        super().__init__(f"{a}-{b}")


def raise_needs_two():
    raise NeedsTwoArgs(1, 2)


def environ_and_fd(fd):
    """What a task sees of the worker's channel: the variable, and whether the fd would
    be inherited by a process the task starts."""
    try:
        inheritable = os.get_inheritable(fd)
    except OSError:
        inheritable = None
    return os.environ.get("SHOAL_WORKER_FD"), inheritable


LOADS = 0


class CountingCallable:
    """A callable that counts how often it was unpickled in this process."""

    def __getstate__(self):
        return {}

    def __setstate__(self, state):
        global LOADS
        LOADS += 1

    def __call__(self, *args):
        return LOADS


STATE = {}


def initializer(value):
    STATE["value"] = value


def failing_initializer():
    raise OSError("no model")


def read_state(_=None):
    return STATE.get("value")


def print_and_return(x):
    print(f"task output {x}", flush=False)
    return x


def counted(directory, x):
    """x * 10, leaving a file per execution in `directory` (to count real runs)."""
    import os
    import uuid

    open(os.path.join(directory, f"{x}-{uuid.uuid4().hex}"), "w").close()
    if os.path.exists(os.path.join(directory, f"fail-{x}")):
        raise ValueError(f"item {x} fails this time")
    return x * 10


def counted_slowly(directory, seconds, x):
    """As counted (marked when it starts), taking `seconds`."""
    value = counted(directory, x)
    time.sleep(seconds)
    return value


def raise_base(directory, kind):
    """Marks that it ran (a file in `directory`), then raises SystemExit or
    KeyboardInterrupt: exceptions that are not Exceptions."""
    open(os.path.join(directory, f"ran-{len(os.listdir(directory))}"), "w").close()
    raise {"exit": SystemExit(3), "interrupt": KeyboardInterrupt("from the task")}[kind]


def start_sleeper(pid_path):
    """Starts `sleep 60` (a process of the task's own), writes its pid to `pid_path`,
    then waits."""
    import subprocess
    import time

    sleeper = subprocess.Popen(["sleep", "60"])
    with open(pid_path + ".tmp", "w") as out:
        out.write(str(sleeper.pid))
    os.rename(pid_path + ".tmp", pid_path)
    time.sleep(60)


def big_bytes(size):
    return bytes(size)


def counted_die_on(directory, x, bad=5):
    """x, leaving a file per execution in `directory`; item `bad` kills its worker."""
    import uuid

    open(os.path.join(directory, f"{x}-{uuid.uuid4().hex}"), "w").close()
    if x == bad:
        os.kill(os.getpid(), signal.SIGKILL)
    return x


_kept = []


def keep_then_pid(megabytes):
    """Keeps `megabytes` of memory in this worker for good; returns its pid."""
    _kept.append(bytearray(megabytes << 20))
    return os.getpid()


def sleep_then_die(seconds):
    """Sleeps, then kills its own worker."""
    import time

    time.sleep(seconds)
    os.kill(os.getpid(), signal.SIGKILL)


def environ(name):
    return os.environ.get(name)
