"""The worker process (`python -m shoal._worker`) against a fake engine: a socketpair, the
engine's side of docs/protocol.md written here from the spec, and real worker processes.
No extension needed. The codecs on both sides are checked against the hex examples of
docs/protocol.md first, so the fake engine is itself checked against the spec.
"""

from __future__ import annotations

import os
import pickle
import select
import socket
import struct
import subprocess
import sys
import threading
import time

import cloudpickle
import pytest

import shoal
import tasks
from shoal import _payload, _worker
from shoal.errors import PicklingError, RemoteError


def unhex(text: str) -> bytes:
    return bytes.fromhex(text.replace("\n", " "))


# The examples of docs/protocol.md, byte for byte.
GOLDEN = {
    "hello": "1a 00 00 00 01 01 00 00 00 92 10 00 00 0d 00 00 00 70 79 74 68 6f 6e 20 33 2e 31 31 2e 37",
    "welcome": "15 00 00 00 81 01 00 00 00 07 00 00 00 00 00 00 00 e8 03 00 00 00 00 00 00",
    "init": "09 00 00 00 82 04 00 00 00 69 6e 69 74",
    "init_done_ok": "0a 00 00 00 02 01 00 00 00 00 00 00 00 00",
    "init_done_err": "1d 00 00 00 02 00 01 00 00 00 45 12 00 00 00 4f 53 45 72 72 6f 72 3a 20 6e 6f 20 6d 6f 64 65 6c 0a",
    "run": "15 00 00 00 83 2a 00 00 00 00 00 00 00 01 00 00 00 04 00 00 00 70 69 6e 67",
    "result_ok": "1a 00 00 00 03 2a 00 00 00 00 00 00 00 01 00 00 00 01 04 00 00 00 70 6f 6e 67 00 00 00 00",
    "result_err": "27 00 00 00 03 2a 00 00 00 00 00 00 00 02 00 00 00 00 01 00 00 00 45 10 00 00 00 56 61 6c 75 65 45 72 72 6f 72 3a 20 62 61 64 0a",
    "heartbeat": "09 00 00 00 04 00 00 20 03 00 00 00 00",
    "shutdown": "01 00 00 00 84",
    "bye": "01 00 00 00 05",
}


# ---------------------------------------------------------------------------------------
# The engine's side, from the spec.


def blob(data: bytes) -> bytes:
    return struct.pack("<I", len(data)) + data


def eframe(kind: int, body: bytes = b"") -> bytes:
    return struct.pack("<IB", len(body) + 1, kind) + body


def welcome(worker_id=7, heartbeat_ms=1000, config=b"", version=1) -> bytes:
    return eframe(0x81, struct.pack("<IQI", version, worker_id, heartbeat_ms) + blob(config))


def init(payload: bytes) -> bytes:
    return eframe(0x82, blob(payload))


def run(task: int, attempt: int, payload: bytes) -> bytes:
    return eframe(0x83, struct.pack("<QI", task, attempt) + blob(payload))


SHUTDOWN = eframe(0x84)


def parse_worker_frame(kind: int, body: bytes) -> tuple:
    """Decodes a worker's message strictly, as the engine would."""

    def field(offset):
        (n,) = struct.unpack_from("<I", body, offset)
        assert offset + 4 + n <= len(body), "a field runs past the end of the frame"
        return body[offset + 4 : offset + 4 + n], offset + 4 + n

    if kind == 0x01:
        version, pid = struct.unpack_from("<II", body)
        runtime, end = field(8)
        assert end == len(body)
        return ("hello", version, pid, runtime.decode())
    if kind == 0x02:
        assert body[0] in (0, 1)
        payload, end = field(1)
        tb, end = field(end)
        assert end == len(body)
        return ("init_done", bool(body[0]), payload, tb.decode())
    if kind == 0x03:
        task, attempt, ok = struct.unpack_from("<QIB", body)
        assert ok in (0, 1)
        payload, end = field(13)
        tb, end = field(end)
        assert end == len(body)
        return ("result", task, attempt, bool(ok), payload, tb.decode())
    if kind == 0x04:
        assert len(body) == 8
        return ("heartbeat", struct.unpack("<Q", body)[0])
    if kind == 0x05:
        assert body == b""
        return ("bye",)
    raise AssertionError(f"a worker sent kind {kind:#x}")


class FakeEngine:
    """One worker process and the engine's end of its socketpair."""

    def __init__(self, env_extra=None, pass_fd=True):
        self.sock, theirs = socket.socketpair()
        env = dict(os.environ)
        # The worker must find this very shoal package before its Welcome sets sys.path.
        package_root = os.path.dirname(os.path.dirname(shoal.__file__))
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
        env.pop("SHOAL_WORKER_FD", None)
        if pass_fd:
            env["SHOAL_WORKER_FD"] = str(theirs.fileno())
        env.update(env_extra or {})
        self.worker_fd = theirs.fileno()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "shoal._worker"],
            env=env,
            pass_fds=[theirs.fileno()],
            stdin=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        theirs.close()
        self._buf = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def recv(self, timeout=10.0, skip_heartbeats=True) -> tuple:
        while True:
            message = self._recv_one(timeout)
            if not (skip_heartbeats and message[0] == "heartbeat"):
                return message

    def _recv_exact(self, n, deadline):
        while len(self._buf) < n:
            left = deadline - time.monotonic()
            assert left > 0, "the worker sent nothing in time"
            ready, _, _ = select.select([self.sock], [], [], left)
            if ready:
                chunk = self.sock.recv(1 << 16)
                if not chunk:
                    raise EOFError("the worker closed the channel")
                self._buf += chunk
        data, self._buf = self._buf[:n], self._buf[n:]
        return data

    def _recv_one(self, timeout):
        deadline = time.monotonic() + timeout
        length, kind = struct.unpack("<IB", self._recv_exact(5, deadline))
        assert 1 <= length <= 1 << 30
        return parse_worker_frame(kind, self._recv_exact(length - 1, deadline))

    def start(self, heartbeat_ms=0, config=None) -> tuple:
        hello = self.recv()
        if config is None:
            config = pickle.dumps({"sys_path": sys.path})
        self.send(welcome(heartbeat_ms=heartbeat_ms, config=config))
        return hello

    def finish(self, timeout=10.0) -> tuple[int, str]:
        status = self.proc.wait(timeout)
        err = self.proc.stderr.read().decode() if not self.proc.stderr.closed else ""
        self.proc.stderr.close()
        self.sock.close()
        return status, err

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.finish()


@pytest.fixture
def engine():
    fake = FakeEngine()
    yield fake
    fake.kill()


def call_payload(fn, *args, **kwargs) -> bytes:
    return _payload.encode_run(
        _payload.CALL, cloudpickle.dumps(fn), pickle.dumps((args, kwargs or None))
    )


def chunk_payload(fn, items, star=False) -> bytes:
    mode = _payload.STARMAP if star else _payload.MAP
    return _payload.encode_run(mode, cloudpickle.dumps(fn), pickle.dumps(list(items)))


# ---------------------------------------------------------------------------------------
# Codecs against the spec's examples.


def test_worker_messages_encode_as_the_spec_examples():
    assert _worker.hello(4242, "python 3.11.7") == unhex(GOLDEN["hello"])
    assert _worker.init_done(True, b"", "") == unhex(GOLDEN["init_done_ok"])
    assert _worker.init_done(False, b"E", "OSError: no model\n") == unhex(GOLDEN["init_done_err"])
    assert _worker.result(42, 1, True, b"pong", "") == unhex(GOLDEN["result_ok"])
    assert _worker.result(42, 2, False, b"E", "ValueError: bad\n") == unhex(GOLDEN["result_err"])
    assert _worker.heartbeat(52428800) == unhex(GOLDEN["heartbeat"])
    assert _worker.bye() == unhex(GOLDEN["bye"])


def test_engine_messages_decode_as_the_spec_examples():
    def decoded(name):
        data = unhex(GOLDEN[name])
        (length,) = struct.unpack_from("<I", data)
        assert length == len(data) - 4
        fields = _worker.decode(data[4], memoryview(data)[5:])
        return tuple(bytes(f) if isinstance(f, memoryview) else f for f in fields)

    assert decoded("welcome") == (_worker.WELCOME, 1, 7, 1000, b"")
    assert decoded("init") == (_worker.INIT, b"init")
    assert decoded("run") == (_worker.RUN, 42, 1, b"ping")
    assert decoded("shutdown") == (_worker.SHUTDOWN,)


def test_the_fake_engine_encodes_as_the_spec_examples():
    assert welcome(worker_id=7, heartbeat_ms=1000) == unhex(GOLDEN["welcome"])
    assert init(b"init") == unhex(GOLDEN["init"])
    assert run(42, 1, b"ping") == unhex(GOLDEN["run"])
    assert SHUTDOWN == unhex(GOLDEN["shutdown"])
    assert parse_worker_frame(0x01, unhex(GOLDEN["hello"])[5:]) == (
        "hello",
        1,
        4242,
        "python 3.11.7",
    )


@pytest.mark.parametrize(
    "kind, body, message",
    [
        (0x81, b"\x01\x00\x00\x00", "ends inside its fixed fields"),
        (
            0x81,
            unhex(GOLDEN["welcome"])[5:] + b"\x00",
            "1 bytes left after the last field, at byte 25",
        ),
        (0x82, b"\x05\x00\x00\x00abc", "field payload at byte 5 is 5 bytes long and runs past"),
        (0x83, unhex(GOLDEN["run"])[5:-1], "runs past the end of the frame"),
        (0x84, b"\x00", "1 bytes left after the last field"),
        (0x03, b"", "the engine sent Result (kind 0x03), which only workers send"),
        (0x99, b"", "unknown message kind 0x99"),
        (0x00, b"", "unknown message kind 0x00"),
    ],
)
def test_bad_engine_frames_are_refused_with_the_reason(kind, body, message):
    with pytest.raises(
        _worker.ProtocolError, match=message.replace("(", r"\(").replace(")", r"\)")
    ):
        _worker.decode(kind, memoryview(body))


def test_frame_lengths_are_checked_before_the_body():
    with pytest.raises(_worker.ProtocolError, match="length 0"):
        _worker.check_length(0)
    with pytest.raises(_worker.ProtocolError, match="over the limit"):
        _worker.check_length((1 << 30) + 1)
    _worker.check_length(1 << 30)


def test_run_payloads_round_trip():
    payload = call_payload(tasks.add, 1, b=2)
    mode, fn_bytes, args = _payload.decode_run(memoryview(payload))
    assert mode == _payload.CALL
    assert pickle.loads(fn_bytes) is tasks.add
    assert pickle.loads(args) == ((1,), {"b": 2})
    with pytest.raises(ValueError, match="shorter than its header"):
        _payload.decode_run(memoryview(b"\x01"))
    with pytest.raises(ValueError, match="unknown mode 9"):
        _payload.decode_run(memoryview(b"\x09\x00\x00\x00\x00"))
    with pytest.raises(ValueError, match="runs past its end"):
        _payload.decode_run(memoryview(b"\x01\xff\x00\x00\x00ab"))


# ---------------------------------------------------------------------------------------
# Real worker processes.


def test_a_conversation_from_hello_to_bye(engine):
    hello = engine.start()
    assert hello[:3] == ("hello", 1, engine.proc.pid)
    assert hello[3] == "python %d.%d.%d" % sys.version_info[:3]
    engine.send(run(1, 1, call_payload(tasks.add, 2, b=3)))
    assert engine.recv() == ("result", 1, 1, True, pickle.dumps(5, 5), "")
    engine.send(run(2, 3, call_payload(tasks.boom, "no good")))
    _, task, attempt, ok, payload, tb = engine.recv()
    assert (task, attempt, ok) == (2, 3, False)
    exc = pickle.loads(payload)
    assert isinstance(exc, ValueError) and str(exc) == "no good"
    assert tb.startswith("Traceback (most recent call last):")
    assert "in boom" in tb and tb.endswith("ValueError: no good\n")
    assert "_worker.py" not in tb  # the worker's own frame is left out
    engine.send(SHUTDOWN)
    assert engine.recv() == ("bye",)
    with pytest.raises(EOFError):
        engine.recv()
    assert engine.finish() == (0, "")


def test_prefetched_runs_are_answered_in_order(engine):
    engine.start()
    engine.send(
        b"".join(run(task, 1, call_payload(tasks.inc, task)) for task in range(1, 201)) + SHUTDOWN
    )
    for task in range(1, 201):
        message = engine.recv()
        assert message[:4] == ("result", task, 1, True)
        assert pickle.loads(message[4]) == task + 1
    assert engine.recv() == ("bye",)
    assert engine.finish()[0] == 0


def test_buffered_runs_of_every_kind_are_answered_in_order(engine):
    # Buffered Runs of a known function take the worker's fast path; everything else in
    # between must fall back to the general one, each answered in turn.
    engine.start()
    bad_args = _payload.encode_run(_payload.CALL, cloudpickle.dumps(tasks.inc), b"not a pickle")
    frames = [
        call_payload(tasks.inc, 1),  # the first: unpickles inc
        call_payload(tasks.inc, 2),
        bad_args,
        b"\x07",
        call_payload(tasks.boom, "no"),
        call_payload(tasks.add, 1, b=5),
        call_payload(tasks.unpicklable_result),
        chunk_payload(tasks.inc, range(2)),  # a chunk of a known function
        call_payload(tasks.inc, 3),
        call_payload(tasks.boom, "again"),
        call_payload(tasks.add, 2, b=5),
    ]
    engine.send(b"".join(run(task, 1, body) for task, body in enumerate(frames, 1)) + SHUTDOWN)
    answers = [engine.recv() for _ in frames]
    assert [a[1] for a in answers] == list(range(1, len(frames) + 1))
    oks = [True, True, False, False, False, True, False, True, True, False, True]
    assert [a[3] for a in answers] == oks
    outcomes = [pickle.loads(a[4]) for a in answers]
    assert outcomes[0:2] == [2, 3] and outcomes[5] == 6 and outcomes[8] == 4 and outcomes[10] == 7
    assert isinstance(outcomes[2], pickle.UnpicklingError)
    assert "shorter than its header" in str(outcomes[3])
    assert str(outcomes[4]) == "no" and str(outcomes[9]) == "again"
    assert "in boom" in answers[9][5]
    assert isinstance(outcomes[6], PicklingError)
    assert outcomes[7][1:] == ([1, 2], {})
    assert engine.recv() == ("bye",)
    assert engine.finish()[0] == 0


def test_lambdas_closures_and_keyword_arguments(engine):
    engine.start()
    offset = 10
    engine.send(run(1, 1, call_payload(lambda x, *, k: x + k + offset, 1, k=2)))
    assert pickle.loads(engine.recv()[4]) == 13


def test_a_chunk_answers_each_item(engine):
    engine.start()
    engine.send(run(5, 1, chunk_payload(tasks.fail_on, [(1, [2]), (2, [2]), (3, [2])], star=True)))
    _, task, _, ok, payload, tb = engine.recv()
    assert ok and tb == ""
    elapsed, values, errors = pickle.loads(payload)
    assert elapsed >= 0
    assert values == [1, None, 3]
    assert set(errors) == {1}
    exc_bytes, item_tb = errors[1]
    assert str(pickle.loads(exc_bytes)) == "item 2 is bad"
    assert item_tb.endswith("ValueError: item 2 is bad\n")
    engine.send(run(6, 1, chunk_payload(tasks.square, range(5))))
    assert pickle.loads(engine.recv()[4])[1:] == ([0, 1, 4, 9, 16], {})


def test_an_unpicklable_value_fails_only_its_item(engine):
    engine.start()
    engine.send(run(1, 1, call_payload(tasks.unpicklable_result)))
    _, _, _, ok, payload, tb = engine.recv()
    assert not ok
    exc = pickle.loads(payload)
    assert isinstance(exc, PicklingError)
    assert "return value (of type lock) could not be pickled" in str(exc)
    assert "PicklingError" in tb
    engine.send(
        run(2, 1, chunk_payload(lambda x: tasks.unpicklable_result() if x == 1 else x, range(3)))
    )
    _, _, _, ok, payload, _ = engine.recv()
    assert ok
    _, values, errors = pickle.loads(payload)
    assert values == [0, None, 2]
    assert isinstance(pickle.loads(errors[1][0]), PicklingError)


def test_exceptions_that_cannot_travel_become_remote_errors(engine):
    engine.start()
    engine.send(run(1, 1, call_payload(tasks.raise_unpicklable)))
    _, _, _, ok, payload, tb = engine.recv()
    exc = pickle.loads(payload)
    assert not ok and isinstance(exc, RemoteError)
    assert "Unpicklable: holds a lock" in str(exc)
    assert "raise_unpicklable" in tb


def test_a_payload_that_cannot_be_unpickled_fails_its_task(engine):
    engine.start()
    bad_args = _payload.encode_run(_payload.CALL, cloudpickle.dumps(tasks.inc), b"not a pickle")
    engine.send(run(1, 1, bad_args))
    _, _, _, ok, payload, tb = engine.recv()
    assert not ok and isinstance(pickle.loads(payload), pickle.UnpicklingError)
    engine.send(run(2, 1, b"\x07"))
    _, _, _, ok, payload, tb = engine.recv()
    assert not ok and "shorter than its header" in str(pickle.loads(payload))
    engine.send(run(3, 1, call_payload(tasks.inc, 1)))
    assert pickle.loads(engine.recv()[4]) == 2


def test_functions_are_unpickled_once_per_worker(engine):
    engine.start()
    counting = tasks.CountingCallable()
    same = call_payload(counting)
    for task in range(1, 4):
        engine.send(run(task, 1, same))
        assert pickle.loads(engine.recv()[4]) == 1
    # Other bytes (another pickle of an equal object) are another cache entry.
    other = _payload.encode_run(_payload.CALL, pickle.dumps(counting, 4), pickle.dumps(((), None)))
    engine.send(run(9, 1, other))
    assert pickle.loads(engine.recv()[4]) == 2


def test_the_channel_is_hidden_from_the_tasks_code(engine):
    engine.start()
    engine.send(run(1, 1, call_payload(tasks.environ_and_fd, engine.worker_fd)))
    assert pickle.loads(engine.recv()[4]) == (None, False)


def test_sys_path_comes_from_welcome(engine, tmp_path):
    (tmp_path / "only_here.py").write_text("VALUE = 'found'\n")
    engine.start(config=pickle.dumps({"sys_path": [str(tmp_path)] + sys.path}))
    engine.send(run(1, 1, call_payload(eval, "__import__('only_here').VALUE")))
    assert pickle.loads(engine.recv()[4]) == "found"


def test_initializer_runs_once_before_the_tasks(engine):
    engine.start()
    engine.send(init(cloudpickle.dumps((tasks.initializer, ("loaded",)))))
    assert engine.recv() == ("init_done", True, b"", "")
    engine.send(run(1, 1, call_payload(tasks.read_state)))
    assert pickle.loads(engine.recv()[4]) == "loaded"


def test_a_failing_initializer_reports_its_error(engine):
    engine.start()
    engine.send(init(cloudpickle.dumps((tasks.failing_initializer, ()))))
    _, ok, payload, tb = engine.recv()
    assert not ok
    assert isinstance(pickle.loads(payload), OSError)
    assert tb.endswith("OSError: no model\n") and "failing_initializer" in tb
    engine.send(SHUTDOWN)
    assert engine.recv() == ("bye",)
    assert engine.finish()[0] == 0


def test_heartbeats_flow_while_a_task_runs(engine):
    engine.start(heartbeat_ms=50)
    engine.send(run(1, 1, call_payload(tasks.sleep_then, 0.5, "done")))
    beats = []
    while True:
        message = engine.recv(skip_heartbeats=False)
        if message[0] == "result":
            break
        beats.append(message[1])
    assert len(beats) >= 4
    assert all(rss > 1 << 20 for rss in beats)
    assert pickle.loads(message[4]) == "done"


def test_no_heartbeats_when_heartbeat_ms_is_zero(engine):
    engine.start(heartbeat_ms=0)
    engine.send(run(1, 1, call_payload(tasks.sleep_then, 0.3, "done")))
    assert engine.recv(skip_heartbeats=False)[0] == "result"


def test_output_of_a_task_is_flushed_at_once():
    fake = FakeEngine()
    try:
        fake.start()
        # stderr is a pipe here: block-buffered, so only the worker's flush delivers it.
        fake.send(run(1, 1, call_payload(lambda: print("to stderr", file=sys.stderr))))
        assert fake.recv()[3] is True
        ready, _, _ = select.select([fake.proc.stderr], [], [], 5)
        assert ready and fake.proc.stderr.read1(100) == b"to stderr\n"
    finally:
        fake.kill()


def test_end_of_file_between_frames_exits_at_once(engine):
    engine.start()
    engine.sock.shutdown(socket.SHUT_WR)
    status, err = engine.finish(timeout=5)
    assert status != 0


def test_end_of_file_before_welcome_exits_non_zero(engine):
    engine.recv()
    engine.sock.close()
    status, _ = engine.finish(timeout=5)
    assert status != 0


def test_the_engine_gone_during_a_long_task_ends_the_worker(engine):
    engine.start(heartbeat_ms=0)
    engine.send(run(1, 1, call_payload(tasks.sleep_then, 60)))
    time.sleep(0.2)
    started = time.monotonic()
    engine.sock.close()
    assert engine.proc.wait(5) != 0
    assert time.monotonic() - started < 2


@pytest.mark.parametrize(
    "frames, message",
    [
        (b"\x00\x00\x00\x00", "a frame has length 0"),
        (struct.pack("<I", (1 << 30) + 1), "over the limit"),
        (run(1, 1, b"x"), "expected Welcome as the engine's first frame, got Run"),
        (welcome(version=2), "Welcome names protocol version 2; this worker speaks version 1"),
        (welcome() + welcome(), "Welcome received twice"),
        (welcome() + eframe(0x99), "unknown message kind 0x99"),
        (welcome() + eframe(0x05), "the engine sent Bye (kind 0x05), which only workers send"),
        (welcome() + eframe(0x84, b"\x00"), "Shutdown: 1 bytes left after the last field"),
        (
            welcome() + run(1, 1, call_payload(tasks.inc, 1)) + init(b""),
            "Init received after a Run",
        ),
        (welcome()[:10], "end of file inside a frame"),
        (welcome(config=b"garbage"), "the worker configuration cannot be read"),
    ],
)
def test_protocol_errors_exit_non_zero_with_the_reason(frames, message):
    fake = FakeEngine()
    try:
        fake.recv()
        fake.send(frames)
        if "end of file" in message:
            fake.sock.shutdown(socket.SHUT_WR)
        # Results the worker owes before the error are read and dropped.
        deadline = time.monotonic() + 10
        while fake.proc.poll() is None and time.monotonic() < deadline:
            try:
                fake.recv(timeout=0.2)
            except (AssertionError, EOFError):
                pass
        status, err = fake.finish()
        assert status == 1
        assert "protocol error" in err and message in err, err
    finally:
        fake.kill()


def test_a_worker_started_without_the_variable_says_so():
    fake = FakeEngine(pass_fd=False)
    status, err = fake.finish()
    assert status == 1 and "SHOAL_WORKER_FD is not set" in err


def test_a_large_payload_crosses_whole(engine):
    engine.start()
    data = os.urandom(5 << 20)
    engine.send(run(1, 1, call_payload(len, data)))
    assert pickle.loads(engine.recv()[4]) == len(data)
    engine.send(run(2, 1, call_payload(bytes, 3 << 20)))
    assert pickle.loads(engine.recv(timeout=20)[4]) == bytes(3 << 20)


def test_heartbeats_and_results_never_interleave(engine):
    engine.start(heartbeat_ms=1)
    payloads = [run(t, 1, call_payload(bytes, 200_000)) for t in range(1, 41)]
    threading.Thread(target=lambda: engine.send(b"".join(payloads)), daemon=True).start()
    for task in range(1, 41):
        message = engine.recv(timeout=20)
        assert message[:4] == ("result", task, 1, True)


def test_a_worker_starts_without_the_modules_that_slow_its_start():
    # A worker's start is on the path of Pool(...) to its first result: threading (and
    # typing, cloudpickle, traceback) cost it milliseconds; each loads only when a task
    # needs it.
    heavy = ["threading", "typing", "cloudpickle", "traceback", "shoal.errors"]
    code = (
        "import sys; from shoal._worker import main; "
        f"print([m for m in {heavy!r} if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
