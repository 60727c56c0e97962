"""Fixtures of the Python suite: small pools with short heartbeats, and checks through
/proc that no worker process outlives its pool."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

import pytest

import shoal

HERE = os.path.dirname(os.path.abspath(__file__))

# Short heartbeats so that hung workers are noticed in a test's time.
FAST = dict(heartbeat=0.1, heartbeat_timeout=2.0)


def alive(pid: int) -> bool:
    """Whether `pid` is a live process (a zombie counts as gone: it runs nothing)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def wait_gone(pids, timeout: float = 5.0) -> list[int]:
    """Waits until none of `pids` is alive; returns those still alive at the deadline."""
    deadline = time.monotonic() + timeout
    left = [pid for pid in pids if pid]
    while left and time.monotonic() < deadline:
        left = [pid for pid in left if alive(pid)]
        if left:
            time.sleep(0.02)
    return left


def worker_children() -> list[int]:
    """This process's children that run shoal's worker (found through /proc)."""
    me = str(os.getpid())
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
            if fields[1] != me or fields[0] == "Z":
                continue
            with open(f"/proc/{entry}/cmdline", "rb") as cmdline:
                if b"shoal._worker" in cmdline.read():
                    found.append(int(entry))
        except OSError:
            continue
    return found


def worker_pids(pool) -> list[int]:
    """The pids of a pool's current workers, once they all have one."""
    deadline = time.monotonic() + 10
    while True:
        pids = [w.pid for w in pool.stats().workers]
        if all(pids) or time.monotonic() > deadline:
            return [pid for pid in pids if pid]
        time.sleep(0.01)


def run_script(
    source: str, *args, timeout: float = 30, prefix=(), **kwargs
) -> subprocess.CompletedProcess:
    """Runs `source` as a script (its functions live in its own __main__), with this
    suite's directory on its path; `prefix` is a command to run it under."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [HERE, env.get("PYTHONPATH")]))
    return subprocess.run(
        [*prefix, sys.executable, "-c", textwrap.dedent(source), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        **kwargs,
    )


def popen_script(source: str) -> subprocess.Popen:
    """Starts `source` as a script, as `run_script` does, with text pipes for its
    stdout and stderr, and returns at once."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [HERE, env.get("PYTHONPATH")]))
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(source)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def shoal_cli(*args: str) -> subprocess.CompletedProcess:
    """Runs the `shoal` command line (`$SHOAL_BIN`, else the workspace's build)."""
    binary = os.environ.get("SHOAL_BIN")
    if not binary:
        root = os.path.dirname(os.path.dirname(HERE))
        builds = [os.path.join(root, "target", kind, "shoal") for kind in ("debug", "release")]
        binary = next((b for b in builds if os.path.exists(b)), None)
    assert binary, "no shoal binary: build it (cargo build -p shoal-cli) or set SHOAL_BIN"
    return subprocess.run([binary, *args], capture_output=True, text=True, timeout=30)


@pytest.fixture(autouse=True)
def no_worker_left():
    """Every test ends with no worker process of this process alive."""
    yield
    left = wait_gone(worker_children(), timeout=5)
    assert not left, f"worker processes left running: {left}"


@pytest.fixture
def pool():
    with shoal.Pool(2, **FAST) as p:
        yield p
        p.terminate()
        p.join()


@pytest.fixture
def pool1():
    """One worker: the order in which tasks run is the scheduler's alone."""
    with shoal.Pool(1, **FAST) as p:
        yield p
        p.terminate()
        p.join()


@pytest.fixture
def executor():
    ex = shoal.ProcessPoolExecutor(2, **FAST)
    yield ex
    ex.shutdown(wait=True, cancel_futures=True)


@pytest.fixture(scope="session")
def postgres_cluster():
    """A throwaway PostgreSQL cluster for the session (initdb and pg_ctl of Debian's
    `postgresql`, which scripts/test.sh installs; as the `postgres` user when root),
    on a private socket directory and port; yields a maker of fresh databases' URLs."""
    import glob
    import pathlib
    import shutil
    import socket
    import tempfile

    bins = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    assert bins, "install Debian's postgresql package (scripts/test.sh does)"
    bin_dir = os.path.dirname(bins[-1])
    # Not under pytest's temporary directory, which the postgres user cannot enter.
    work = pathlib.Path(tempfile.mkdtemp(prefix="shoal-pg-py-"))
    as_pg = []
    if os.geteuid() == 0:
        shutil.chown(work, "postgres", "postgres")
        as_pg = ["runuser", "-u", "postgres", "--"]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    data = str(work / "data")

    def pg(program, *args):
        subprocess.run([*as_pg, f"{bin_dir}/{program}", *args], check=True,
                       capture_output=True, cwd=work)

    pg("initdb", "-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
    pg("pg_ctl", "-D", data, "-l", str(work / "log"), "-w", "start", "-o",
       f"-p {port} -k {work} -c listen_addresses=127.0.0.1 -c fsync=off")
    made = iter(range(1_000_000))

    def database():
        name = f"t{next(made)}"
        pg("createdb", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", name)
        return f"postgresql://postgres@127.0.0.1:{port}/{name}"

    try:
        yield database
    finally:
        pg("pg_ctl", "-D", data, "-m", "immediate", "-w", "stop")
        shutil.rmtree(work, ignore_errors=True)


@pytest.fixture(params=["sqlite", "postgresql"])
def store_address(request, tmp_path):
    """A fresh store of each backend: a SQLite file, then a PostgreSQL database."""
    if request.param == "sqlite":
        return tmp_path / "results.db"
    return request.getfixturevalue("postgres_cluster")()
