"""The `shoal` command installed with the package, and `python -m shoal`: the same
command line as the `shoal` binary, side by side with it: output, exit statuses,
Ctrl-C, and what the tasks inherit."""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import signal
import struct
import subprocess
import sys
import time

import pytest

import shoal
import shoal._engine
from conftest import HERE, alive

ROOT = os.path.dirname(os.path.dirname(HERE))
BINARY = os.environ.get("SHOAL_BIN") or os.path.join(ROOT, "target", "debug", "shoal")
# What `pip install .` put next to this Python: its console script.
SCRIPT = os.path.join(os.path.dirname(sys.executable), "shoal")
FRONTS = {
    "binary": [BINARY],
    "script": [SCRIPT],
    "module": [sys.executable, "-m", "shoal"],
}


@pytest.fixture(autouse=True)
def fronts_exist():
    assert os.access(BINARY, os.X_OK), f"no shoal binary at {BINARY}: build it or set SHOAL_BIN"
    assert os.access(SCRIPT, os.X_OK), f"the package installed no shoal command at {SCRIPT}"


def run(front: str, cwd, *args: str) -> tuple[int, str, str]:
    done = subprocess.run(
        [*FRONTS[front], *args], cwd=cwd, capture_output=True, text=True, timeout=60
    )
    # A run's summary says how long it took.
    stderr = re.sub(r" in \d+\.\d+s", " in Ts", done.stderr)
    return done.returncode, done.stdout, stderr


CASES = {
    "outputs": ("run", "-k", "-j2", "echo", "x{}", ":::", "a", "b", "c"),
    "failed tasks": ("run", "-j2", "test", "{}", "=", "b", ":::", "a", "b", "c"),
    "usage error": ("run", "--jobs", "1.5", "true"),
    "version": ("--version",),
    "help": ("run", "--help"),
    "no store": ("--store", "missing/s.db", "results"),
    "bad tasks file": ("run", "--tasks", "missing.jsonl", "true"),
    # What a task inherits: Python ignores SIGXFSZ (and SIGPIPE, as Rust does), and
    # ignored signals survive exec.
    "task signals": ("run", "grep", "SigIgn", "{}", ":::", "/proc/self/status"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_the_installed_command_and_python_m_shoal_behave_as_the_binary(case, tmp_path):
    outcomes = {}
    for front in FRONTS:
        cwd = tmp_path / front
        cwd.mkdir()
        outcomes[front] = run(front, cwd, *CASES[case])
    assert outcomes["script"] == outcomes["binary"], outcomes
    assert outcomes["module"] == outcomes["binary"], outcomes
    status, stdout, stderr = outcomes["binary"]
    expected = {"outputs": 0, "failed tasks": 1, "usage error": 2, "version": 0, "no store": 2}
    assert status == expected.get(case, status), outcomes["binary"]
    if case == "outputs":
        assert stdout == "xa\nxb\nxc\n" and "3 succeeded" in stderr
    if case == "failed tasks":
        assert "1 succeeded, 2 failed" in stderr
    if case == "task signals":
        assert stdout.startswith("SigIgn:") and status == 0, outcomes["binary"]
    if case == "version":
        assert stdout == f"shoal {shoal.__version__}\n"


@pytest.mark.parametrize("front", list(FRONTS))
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_stops_a_run_as_it_stops_the_binarys(front, sig, tmp_path):
    task = tmp_path / "task.sh"
    task.write_text('#!/bin/sh\necho $$ > "pid.$1"\nexec sleep 60\n')
    task.chmod(0o755)
    process = subprocess.Popen(
        [*FRONTS[front], "run", "-j2", "./task.sh", ":::", "1", "2"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # Both tasks started (shoal's handlers are in place before any task starts).
        deadline = time.monotonic() + 30
        pids = []
        while len(pids) < 2 and time.monotonic() < deadline and process.poll() is None:
            pids = [
                int(text)
                for name in ("pid.1", "pid.2")
                if (tmp_path / name).exists() and (text := (tmp_path / name).read_text().strip())
            ]
            time.sleep(0.01)
        assert len(pids) == 2, "the tasks did not start"
        process.send_signal(sig)
        stdout, stderr = process.communicate(timeout=30)
    finally:
        process.kill()
        process.wait()
    assert process.returncode == 128 + sig, (process.returncode, stderr)
    assert "shoal: stopping: no new tasks" in stderr and "2 cancelled" in stderr, stderr
    assert "Traceback" not in stderr
    assert not [pid for pid in pids if alive(pid)]
    status, runs, _ = run(front, tmp_path, "runs")
    assert status == 0 and "interrupted" in runs, runs


def test_the_package_has_its_version():
    assert shoal.__version__ == importlib.metadata.version("shoal")
    assert "__version__" in dir(shoal)


def elf_sections(path: str) -> set[str]:
    """The section names of a 64-bit little-endian ELF file."""
    with open(path, "rb") as file:
        data = file.read()
    assert data[:6] == b"\x7fELF\x02\x01", f"{path} is not a 64-bit little-endian ELF file"
    shoff, shentsize, shnum, shstrndx = (
        struct.unpack_from("<Q", data, 0x28)[0],
        *struct.unpack_from("<HHH", data, 0x3A),
    )
    headers = [struct.unpack_from("<IIQQQQ", data, shoff + i * shentsize) for i in range(shnum)]
    names_at = headers[shstrndx][4]
    return {
        data[names_at + name : data.index(b"\0", names_at + name)].decode()
        for name, *_ in headers
    }


def test_the_installed_extension_is_stripped():
    direct = importlib.metadata.distribution("shoal").read_text("direct_url.json")
    if direct and json.loads(direct).get("dir_info", {}).get("editable"):
        pytest.skip("an editable install (maturin develop) is a debug build")
    sections = elf_sections(shoal._engine.__file__)
    assert ".text" in sections
    kept = sorted(name for name in sections if name.startswith(".debug") or name == ".symtab")
    assert not kept, f"the release extension keeps {kept}"
