"""Unit tests of the pure-Python pieces, without worker processes: option checks, the
mapping of engine events to exceptions, adaptive chunking, payload decoding, progress."""

from __future__ import annotations

import concurrent.futures
import os
import pickle
import subprocess
import sys

import pytest

import shoal
from shoal import _client, _options, _outcomes, _payload, _progress, _stream, errors


@pytest.mark.parametrize(
    "text, size",
    [
        (4096, 4096),
        ("4096", 4096),
        ("100K", 100 << 10),
        ("512M", 512 << 20),
        ("1.5G", 3 << 29),
        ("2T", 2 << 40),
        ("512MiB", 512 << 20),
        ("512mb", 512 << 20),
        (" 64 m ", 64 << 20),
    ],
)
def test_sizes(text, size):
    assert _options.parse_size("memory_limit", text) == size


@pytest.mark.parametrize("text", ["", "lots", "5iB", "1.5", "-1M", "0", "12X"])
def test_bad_sizes_name_the_option_and_the_text(text):
    with pytest.raises(ValueError, match="memory_limit"):
        _options.parse_size("memory_limit", text)


def test_task_options_check_their_values():
    options = _options.TaskOptions(priority=3, timeout=2, retries=0, cost=1, key="k")
    assert (options.priority, options.timeout, options.retries, options.cost, options.key) == (
        3,
        2.0,
        0,
        1.0,
        "k",
    )
    changed = options.replace(priority=5, timeout=None)
    assert (changed.priority, changed.timeout, changed.retries) == (5, None, 0)
    for bad, error in [
        (dict(priority=1.5), TypeError),
        (dict(priority=2**40), ValueError),
        (dict(timeout=0), ValueError),
        (dict(timeout="1"), TypeError),
        (dict(retries=-1), ValueError),
        (dict(cost=-1), ValueError),
        (dict(key=5), TypeError),
        (dict(timeout=float("inf")), ValueError),
    ]:
        with pytest.raises(error):
            _options.TaskOptions(**bad)


def test_cpu_affinity_forms():
    assert _options._cpus(None) is None and _options._cpus(False) is None
    assert _options._cpus(True) == sorted(os.sched_getaffinity(0))
    assert _options._cpus([0, 1]) == [0, 1]
    with pytest.raises(ValueError):
        _options._cpus([])
    with pytest.raises(TypeError):
        _options._cpus(3)


def test_each_status_maps_to_its_exception():
    raised = errors.from_event(
        "raised", pickle.dumps(KeyError("k")), "Traceback...\nKeyError: 'k'\n", 1
    )
    assert type(raised) is KeyError and "KeyError" in str(raised.__cause__)

    crashed = errors.from_event("crashed", b"", "the worker was killed by signal 9 (SIGKILL)", 2)
    assert isinstance(crashed, shoal.WorkerCrashed)
    assert (crashed.signal, crashed.exit_status, crashed.attempts) == (9, None, 2)
    assert "SIGKILL" in str(crashed) and "2 attempts" in str(crashed)
    exited = errors.from_event("crashed", b"", "the worker exited with status 3", 1)
    assert (exited.signal, exited.exit_status) == (None, 3)

    timed_out = errors.from_event("timed_out", b"", "ran past its timeout of 2 s", 1)
    assert isinstance(timed_out, shoal.TaskTimeout) and isinstance(timed_out, TimeoutError)
    memory = errors.from_event("memory_exceeded", b"", "it used more than 512 MiB", 1)
    assert isinstance(memory, shoal.MemoryLimitExceeded) and isinstance(memory, MemoryError)
    cancelled = errors.from_event("cancelled", b"", "", 0)
    assert isinstance(cancelled, concurrent.futures.CancelledError)
    init = errors.from_event(
        "init_failed", pickle.dumps(OSError("no model")), "OSError: no model\n", 1
    )
    assert isinstance(init, shoal.InitializerError) and isinstance(init.__cause__, OSError)
    assert isinstance(errors.from_event("refused", b"", "payload too large", 0), shoal.EngineError)
    assert "unknown status 'odd'" in str(errors.from_event("odd", b"", "", 0))
    for error in (crashed, timed_out, memory, cancelled, init):
        assert isinstance(error, shoal.ShoalError)
        assert type(pickle.loads(pickle.dumps(error))) is type(error)


def test_an_exception_that_cannot_be_unpickled_becomes_a_remote_error():
    error = errors.remote_exception(b"garbage", "Traceback...\nCustomError: boom\n")
    assert isinstance(error, shoal.RemoteError) and "CustomError: boom" in str(error)
    assert "CustomError: boom" in str(error.__cause__)


def test_call_and_chunk_outcomes():
    assert _outcomes.call_outcome((1, "succeeded", pickle.dumps(5), "", 1, 1, 0.0)) == (True, 5)
    ok, error = _outcomes.call_outcome((1, "succeeded", b"garbage", "", 1, 1, 0.0))
    assert not ok and isinstance(error, shoal.PicklingError)
    failures = {1: (pickle.dumps(ValueError("x")), "ValueError: x\n")}
    payload = pickle.dumps((0.5, [10, None, 30], failures))
    elapsed, values, failed = _outcomes.chunk_outcomes((1, "succeeded", payload, "", 1, 1, 0.0), 3)
    assert elapsed == 0.5 and values == [10, None, 30]
    assert list(failed) == [1] and isinstance(failed[1], ValueError)
    elapsed, values, failed = _outcomes.chunk_outcomes(
        (1, "crashed", b"", "the worker was killed by signal 9", 2, 1, 0.0), 2
    )
    assert elapsed is None and values == [None, None]
    assert all(isinstance(v, shoal.WorkerCrashed) for v in failed.values())
    assert failed[0] is not failed[1]
    _, _, failed = _outcomes.chunk_outcomes((1, "succeeded", payload, "", 1, 1, 0.0), 4)
    assert len(failed) == 4 and all(isinstance(v, shoal.PicklingError) for v in failed.values())


def test_adaptive_chunks_grow_for_tiny_items():
    chunker = _stream.Chunker(None, limit=2500)
    assert chunker.next_size() == 1
    chunker.observe(1, 0.002)  # a slow first call (a cold cache)
    sizes = []
    size = 1
    for _ in range(12):
        chunker.observe(size, size * 1e-6)
        size = chunker.next_size()
        sizes.append(size)
    assert sizes == sorted(sizes)
    assert sizes[-1] == 2500
    assert all(b <= _stream.GROWTH * a for a, b in zip([1] + sizes, sizes))


def test_adaptive_chunks_never_batch_long_items():
    chunker = _stream.Chunker(None, limit=25)
    for _ in range(50):
        chunker.observe(1, 0.005)
        assert chunker.next_size() == 1
    chunker.observe(1, 0.2)
    assert chunker.next_size() == 1


def test_a_map_whose_first_item_is_tiny_goes_straight_to_full_chunks():
    chunker = _stream.Chunker(None, limit=2500, probes=2)
    # One single item per worker until the first is done.
    assert chunker.next_size() == 1
    assert (chunker.room(0), chunker.room(1), chunker.room(2)) == (2, 1, 0)
    chunker.observe(1, 20e-6)  # mostly the chunk's fixed cost
    assert chunker.room(1) is None  # the stream's window bounds it again
    assert chunker.next_size() == 2500
    chunker.observe(1, 30e-6)  # the other worker's
    assert chunker.next_size() == 2500
    chunker.observe(2500, 2500 * 0.2e-6)
    assert chunker.next_size() == 2500
    for _ in range(8):  # the items turn slow: the sizes follow them down
        chunker.observe(10, 10 * 0.002)
    assert chunker.next_size() == 2


def test_a_map_whose_first_item_is_not_tiny_earns_its_chunks():
    chunker = _stream.Chunker(None, limit=25, probes=2)
    chunker.observe(1, 0.005)  # a skewed map's: never batched
    assert chunker.next_size() == 1
    chunker = _stream.Chunker(None, limit=2500, probes=2)
    chunker.observe(1, 0.0002)  # over TINY_SECONDS
    assert chunker.next_size() == _stream.GROWTH
    chunker = _stream.Chunker(None, limit=2500)  # no probes (imap): always the ramp
    assert chunker.room(0) is None
    chunker.observe(1, 20e-6)
    assert chunker.next_size() == _stream.GROWTH


def test_explicit_chunk_sizes_are_kept():
    chunker = _stream.Chunker(7, limit=2)
    chunker.observe(7, 1e-6)
    assert chunker.next_size() == 7 and not chunker.adaptive


def test_worker_config_has_absolute_paths(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", ["", "relative/dir", "/abs"])
    config = pickle.loads(_client.worker_config())
    assert config["sys_path"] == [str(tmp_path), str(tmp_path / "relative/dir"), "/abs"]


def test_objects_of_main_travel_by_value(monkeypatch):
    # A class the caller's __main__ holds pickles by reference with plain pickle, which a
    # worker (whose __main__ is not the caller's) could not resolve: it must go by value.
    namespace = {"__name__": "__main__"}
    exec("class Local:\n    def __init__(self):\n        self.x = 42\n", namespace)
    monkeypatch.setattr(sys.modules["__main__"], "Local", namespace["Local"], raising=False)
    data = _payload.dumps(namespace["Local"]())
    elsewhere = subprocess.run(
        [
            sys.executable,
            "-c",
            "import pickle, sys; print(pickle.loads(sys.stdin.buffer.read()).x)",
        ],
        input=data,
        capture_output=True,
        check=True,
    )
    assert elsewhere.stdout.strip() == b"42"


def _fresh_python(code: str) -> str:
    """What `code` prints in a new interpreter that finds this directory's modules."""
    here = os.path.dirname(os.path.abspath(__file__))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([here, os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_a_first_call_of_an_importable_function_needs_no_cloudpickle():
    # cloudpickle's import costs a first result tens of milliseconds; a function a
    # worker can import goes by reference with the standard pickler, as cloudpickle
    # would send it.
    code = (
        "import sys, shoal, tasks\n"
        "with shoal.Pool(1) as pool:\n"
        "    assert pool.apply(tasks.inc, (1,)) == 2\n"
        "print('cloudpickle' in sys.modules)"
    )
    assert _fresh_python(code) == "False"


def test_functions_only_cloudpickle_can_carry_still_go_by_value():
    import tasks

    assert b"cloudpickle" not in _payload.dumps_function(tasks.inc)
    for fn in (lambda x: x + 1, _make_closure(1)):
        assert b"cloudpickle" in _payload.dumps_function(fn)
    code = (
        "import shoal\n"
        "def double(x):\n    return 2 * x\n"
        "with shoal.Pool(1) as pool:\n"
        "    print(pool.apply(double, (21,)), pool.apply(lambda: 'lambda'))"
    )
    assert _fresh_python(code) == "42 lambda"


def _make_closure(n):
    return lambda x: x + n


def test_a_worker_starts_without_the_pickle_module():
    # pickle.py imports re and enum: the C pickler it re-exports is enough.
    assert _fresh_python("import sys, shoal._worker; print('pickle' in sys.modules)") == "False"


def test_progress_line():
    line = _progress.render(25, 100, 5.0)
    assert line.startswith("shoal [") and "25/100" in line and "25%" in line
    assert "5.00/s" in line and "ETA 0:15" in line
    assert "in 0:10" in _progress.render(100, 100, 10.0)


def test_progress_bar_is_throttled(tmp_path):
    out = open(tmp_path / "bar", "w")
    bar = _progress.ProgressBar(out)
    for done in range(100):
        bar.update(done, 100)
    bar.update(100, 100, final=True)
    out.close()
    lines = (tmp_path / "bar").read_text().splitlines()
    assert len(lines) == 2 and "100/100" in lines[-1]


def test_lazy_package_attributes():
    assert shoal.Pool.__module__ == "shoal.pool"
    assert "ProcessPoolExecutor" in dir(shoal)
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        shoal.Nope


class _Thing:
    def __call__(self, x):
        return x


def test_a_stored_label_is_the_same_in_every_process():
    # No memory address: a job resumed by a new process must find its stored results.
    import functools

    import tasks

    shown = _outcomes.label(functools.partial(tasks.counted, "/marks", x=1), (_Thing(),), {"y": 2})
    assert "0x" not in shown, shown
    assert shown == "functools.partial(tasks.counted, '/marks', x=1)(<test_client._Thing object>, y=2)"
    assert _outcomes.label(_Thing(), (1,)) == "<test_client._Thing object>(1)"
    assert _outcomes.label(tasks.inc, ([_Thing()],)) == "tasks.inc([<test_client._Thing object>])"
    assert _outcomes.label(tasks.inc, (41,)) == "tasks.inc(41)"
