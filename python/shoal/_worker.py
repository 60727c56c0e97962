"""The worker process of shoal's Python pool: `python -c "from shoal._worker import main;
main()"` (`python -m shoal._worker` works too).

The engine starts it with `SHOAL_WORKER_FD` naming its end of a socketpair and speaks
the worker protocol, version 1 (`docs/protocol.md`): Hello, Welcome, an optional Init,
then Runs answered in order by Results, Heartbeats from a thread, and Shutdown answered
by Bye. This module owns that conversation on the worker's side: framing, the strict
checks of every frame the engine sends, running calls and chunks (`_payload` defines
what they carry), and heartbeats.

What must hold:
- Start is on the critical path of `Pool(...)` to the first result: import only what
  the protocol needs; cloudpickle, traceback and shoal's errors load when a task needs
  them. `shoal/__init__.py` is lazy for the same reason. Threads and locks come from
  `_thread`: `threading` costs a worker a millisecond or more at start.
- Exactly one frame at a time on the socket: every send takes `_Channel.lock`, which the
  main thread (Results, InitDone, Bye) and the watcher thread (Heartbeats) share.
- The engine gone means exit at once: end of file between frames, a hang-up seen by the
  watcher while a task runs, or a failed send all end the process with `os._exit`, so
  that neither the user's threads nor a long task keep it alive.
- Any protocol error: the reason on stderr, exit status 1. Task failures are not protocol
  errors: they are Results with `ok` false.
- A finished Result never waits behind a long task: the Results of prefetched Runs are
  held to go out together only while the Runs after them are quick; the flusher
  thread (`_Held`) sends them once a Run has taken about FLUSH_TICK.
"""

from __future__ import annotations

import os
import select
import struct
import sys
import time
from _thread import allocate_lock, start_new_thread
from _signal import SIGKILL  # not `signal`, whose enums import `enum` at worker start

from shoal import _payload, _sharing
from shoal._payload import CALL, dumps, pickle

# Not `typing.TYPE_CHECKING`: typing costs a worker milliseconds at start.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import NoReturn

PROTOCOL_VERSION = 1
MAX_FRAME = 1 << 30

# Message kinds (docs/protocol.md, "Framing").
HELLO, INIT_DONE, RESULT, HEARTBEAT, BYE = 0x01, 0x02, 0x03, 0x04, 0x05
WELCOME, INIT, RUN, SHUTDOWN = 0x81, 0x82, 0x83, 0x84
NAMES = {
    HELLO: "Hello",
    INIT_DONE: "InitDone",
    RESULT: "Result",
    HEARTBEAT: "Heartbeat",
    BYE: "Bye",
    WELCOME: "Welcome",
    INIT: "Init",
    RUN: "Run",
    SHUTDOWN: "Shutdown",
}

_U32 = struct.Struct("<I")
_HEADER = struct.Struct("<IB")
_WELCOME_FIXED = struct.Struct("<IQI")  # protocol_version, worker_id, heartbeat_ms
_RUN_FIXED = struct.Struct("<QI")  # task, attempt
_RUN_HEAD = struct.Struct("<QII")  # task, attempt, payload length
_RESULT_HEAD = struct.Struct("<IBQIBI")  # length, kind, task, attempt, ok, payload length
# A Run frame up to its function's pickle: length, kind, task, attempt, payload length,
# then the payload's header (mode, function length; see _payload).
_CALL_HEAD = struct.Struct("<IBQIIBI")
_HEARTBEAT = struct.Struct("<Q")
_NO_TEXT = _U32.pack(0)  # an empty `string` field

# How many unpickled functions a worker keeps; a caller making a new closure per task
# would otherwise grow the cache without bound.
FUNCTION_CACHE_SIZE = 64
# Most Results held back to be written together.
HOLD = 32
# While Results are held, the flusher looks at them this often; one that no newer
# Result joined for a whole look waits behind a task that is not tiny, and goes now.
FLUSH_TICK = 0.001
# The flusher goes back to sleep after this many looks found nothing held.
IDLE_TICKS = 20
# The largest Result payload: a frame's limit, less room for its other fields.
MAX_RESULT = MAX_FRAME - (1 << 20)


class ProtocolError(Exception):
    """The engine sent something docs/protocol.md does not allow."""


class EngineGone(Exception):
    """End of file between two frames: the engine closed the channel."""


# ---------------------------------------------------------------------------------------
# Encoding of the worker's messages and decoding of the engine's (pure, tested against
# the hex examples of docs/protocol.md).


def frame(kind: int, body: bytes = b"") -> bytes:
    """One complete frame: length (kind byte and body), kind, body."""
    return _HEADER.pack(len(body) + 1, kind) + body


def blob(data: bytes) -> bytes:
    """A `bytes` field: u32 length, then the bytes."""
    return _U32.pack(len(data)) + data


def hello(pid: int, runtime: str) -> bytes:
    return frame(HELLO, struct.pack("<II", PROTOCOL_VERSION, pid) + blob(runtime.encode()))


def init_done(ok: bool, payload: bytes, traceback_text: str) -> bytes:
    return frame(INIT_DONE, bytes((ok,)) + blob(payload) + blob(traceback_text.encode()))


def result(task: int, attempt: int, ok: bool, payload: bytes, traceback_text: str) -> bytes:
    # Frame header, fixed fields and the payload's length in one pack: this is per task.
    size = len(payload)
    if not traceback_text:
        return _RESULT_HEAD.pack(size + 22, RESULT, task, attempt, ok, size) + payload + _NO_TEXT
    tb = traceback_text.encode()
    head = _RESULT_HEAD.pack(size + len(tb) + 22, RESULT, task, attempt, ok, size)
    return b"".join((head, payload, _U32.pack(len(tb)), tb))


def heartbeat(rss_bytes: int) -> bytes:
    return frame(HEARTBEAT, _HEARTBEAT.pack(rss_bytes))


def bye() -> bytes:
    return frame(BYE)


def check_length(length: int) -> None:
    """Refuses a frame length before anything of its body is read."""
    if length == 0:
        raise ProtocolError("a frame has length 0 (it must hold at least the kind byte)")
    if length > MAX_FRAME:
        raise ProtocolError(f"a frame has length {length}, over the limit of {MAX_FRAME} bytes")


def _field_bytes(name: str, body, offset: int, message: str) -> tuple[memoryview, int]:
    """Reads a `bytes` field at `offset` of `body`; returns it and the offset after it."""
    if offset + 4 > len(body):
        raise ProtocolError(
            f"{message}: the length of field {name} at byte {offset + 5} runs past the end "
            f"of the frame"
        )
    (n,) = _U32.unpack_from(body, offset)
    end = offset + 4 + n
    if end > len(body):
        raise ProtocolError(
            f"{message}: field {name} at byte {offset + 5} is {n} bytes long and runs past "
            f"the end of the frame ({len(body) + 5} bytes)"
        )
    return memoryview(body)[offset + 4 : end], end


def _fixed(body, layout: struct.Struct, message: str, fields: str) -> tuple:
    if len(body) < layout.size:
        raise ProtocolError(
            f"{message}: the frame ends inside its fixed fields ({fields}): the body is "
            f"{len(body)} bytes, they need {layout.size}"
        )
    return layout.unpack_from(body)


def _no_trailing(body, end: int, message: str) -> None:
    if end != len(body):
        raise ProtocolError(
            f"{message}: {len(body) - end} bytes left after the last field, at byte {end + 5}"
        )


def decode(kind: int, body) -> tuple:
    """Decodes a frame from the engine into (kind, fields...), checking its body exactly:
    Welcome -> (WELCOME, version, worker_id, heartbeat_ms, config), Init -> (INIT,
    payload), Run -> (RUN, task, attempt, payload), Shutdown -> (SHUTDOWN,). Payloads are
    memoryviews into `body`."""
    if kind == RUN:
        task, attempt = _fixed(body, _RUN_FIXED, "Run", "task, attempt")
        payload, end = _field_bytes("payload", body, _RUN_FIXED.size, "Run")
        _no_trailing(body, end, "Run")
        return RUN, task, attempt, payload
    if kind == WELCOME:
        version, worker_id, heartbeat_ms = _fixed(
            body, _WELCOME_FIXED, "Welcome", "protocol_version, worker_id, heartbeat_ms"
        )
        config, end = _field_bytes("config", body, _WELCOME_FIXED.size, "Welcome")
        _no_trailing(body, end, "Welcome")
        return WELCOME, version, worker_id, heartbeat_ms, config
    if kind == INIT:
        payload, end = _field_bytes("payload", body, 0, "Init")
        _no_trailing(body, end, "Init")
        return INIT, payload
    if kind == SHUTDOWN:
        _no_trailing(body, 0, "Shutdown")
        return (SHUTDOWN,)
    if kind in NAMES:
        raise ProtocolError(
            f"the engine sent {NAMES[kind]} (kind {kind:#04x}), which only workers send"
        )
    raise ProtocolError(f"unknown message kind {kind:#04x}")


# ---------------------------------------------------------------------------------------
# The channel: framed reads from the socket, locked writes.


class _Channel:
    """The worker's end of the socketpair. Reads are the main thread's alone; writes are
    serialised by `lock` and stop for good once `closed` is set (after Bye). A thread
    worker's (`in_thread`) failed write closes it instead of ending the process."""

    _READ_SIZE = 1 << 16

    def __init__(self, fd: int, in_thread: bool = False) -> None:
        self.fd = fd
        self.in_thread = in_thread
        self.lock = allocate_lock()
        self.closed = False
        self._buf = b""
        self._pos = 0

    def _read(self, n: int) -> bytes:
        try:
            return os.read(self.fd, n)
        except ConnectionResetError:
            return b""

    def _take(self, n: int, at_boundary: bool):
        """Exactly `n` bytes of the stream. End of file raises EngineGone when nothing of
        the frame was read yet, ProtocolError inside a frame."""
        avail = len(self._buf) - self._pos
        if avail >= n:
            data = self._buf[self._pos : self._pos + n]
            self._pos += n
            return data
        if n - avail > self._READ_SIZE:
            # A large body: read it in place rather than by repeated concatenation.
            body = bytearray(n)
            body[:avail] = self._buf[self._pos :]
            self._buf, self._pos = b"", 0
            view, got = memoryview(body), avail
            while got < n:
                try:
                    count = os.readv(self.fd, [view[got:]])
                except ConnectionResetError:
                    count = 0
                if count == 0:
                    raise ProtocolError(f"end of file inside a frame ({got} of {n} bytes read)")
                got += count
            return body
        rest = self._buf[self._pos :]
        while len(rest) < n:
            chunk = self._read(max(self._READ_SIZE, n - len(rest)))
            if not chunk:
                if at_boundary and not rest:
                    raise EngineGone()
                raise ProtocolError(f"end of file inside a frame ({len(rest)} of {n} bytes read)")
            rest += chunk
        self._buf, self._pos = rest, n
        return rest[:n]

    def has_frame(self) -> bool:
        """Whether a whole frame is already buffered (a Run the engine prefetched)."""
        buf, pos = self._buf, self._pos
        if len(buf) - pos < 4:
            return False
        (length,) = _U32.unpack_from(buf, pos)
        return pos + 4 + length <= len(buf)

    def recv(self) -> tuple:
        """The next frame from the engine, decoded and checked (see `decode`)."""
        buf, pos = self._buf, self._pos
        if len(buf) - pos >= 5:
            # Fast path, once per task: the whole frame is in the buffer already.
            (length,) = _U32.unpack_from(buf, pos)
            start, end = pos + 5, pos + 4 + length
            if length and end <= len(buf):
                self._pos = end
                kind = buf[pos + 4]
                if kind == RUN and length >= 17:
                    task, attempt, n = _RUN_HEAD.unpack_from(buf, start)
                    if start + 16 + n == end:
                        return RUN, task, attempt, buf[start + 16 : end]
                return decode(kind, memoryview(buf)[start:end])
        (length,) = _U32.unpack(self._take(4, at_boundary=True))
        check_length(length)
        data = self._take(length, at_boundary=False)
        return decode(data[0], memoryview(data)[1:])

    def send(self, data: bytes) -> None:
        with self.lock:
            if self.closed:
                return
            self._write(data)

    def send_last(self, data: bytes) -> None:
        """Sends Bye: the last frame; nothing is sent after it."""
        with self.lock:
            self._write(data)
            self.closed = True

    def _write(self, data: bytes) -> None:
        try:
            sent = os.write(self.fd, data)
            if sent < len(data):
                view = memoryview(data)
                while sent < len(data):
                    sent += os.write(self.fd, view[sent:])
        except OSError:
            # EPIPE, ECONNRESET: the engine is gone (or cut a thread worker's channel:
            # its next read ends it).
            if self.in_thread:
                self.closed = True
                return
            _exit_now(1)


def _exit_now(status: int, message: str | None = None, flush: bool = True) -> NoReturn:
    """Ends the process at once, whatever threads the user's code started."""
    if message:
        try:
            os.write(2, f"shoal worker {os.getpid()}: {message}\n".encode())
        except OSError:
            pass
    if flush:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
    os._exit(status)


# ---------------------------------------------------------------------------------------
# Heartbeats and the engine's hang-up, from a thread of their own.


def _rss_reader():
    """A function returning the resident set size in bytes, or 0 where unknown."""
    try:
        fd = os.open("/proc/self/statm", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return lambda: 0
    page = os.sysconf("SC_PAGE_SIZE")

    def rss() -> int:
        try:
            return int(os.pread(fd, 128, 0).split()[1]) * page
        except (OSError, ValueError, IndexError):
            return 0

    return rss


def _watch(channel: _Channel, heartbeat_ms: int) -> None:
    """Sends a Heartbeat every `heartbeat_ms` (none if 0) and exits the process as soon as
    the engine hangs up, even while a task runs in the main thread."""
    poller = select.poll()
    poller.register(channel.fd, getattr(select, "POLLRDHUP", 0))  # POLLHUP is implied
    rss = _rss_reader()
    # poll() takes at most a C int of milliseconds (24.8 days).
    timeout = min(heartbeat_ms, 2**31 - 1) if heartbeat_ms > 0 else None
    while True:
        if poller.poll(timeout):
            if channel.closed:
                return  # after Bye the engine may hang up: the main thread is exiting
            # The caller is gone: so are the processes our tasks started (they share our
            # process group, which the engine would otherwise have killed).
            if os.getpgrp() == os.getpid():
                os.killpg(os.getpid(), SIGKILL)
            # No flush: the main thread may hold stdout's lock in a blocked write.
            _exit_now(1, flush=False)
        channel.send(heartbeat(rss()))


# ---------------------------------------------------------------------------------------
# Running calls.


def _format_traceback(exc: BaseException) -> str:
    """The exception's traceback without the worker's own frame, which calls the task."""
    import traceback

    tb = exc.__traceback__
    return "".join(traceback.format_exception(type(exc), exc, tb.tb_next if tb else None))


def _pickle_exception(exc: BaseException) -> bytes:
    """The exception pickled for the client; one that cannot be pickled travels as a
    `shoal.errors.RemoteError` carrying its type and message."""
    try:
        return _payload.dumps(exc)
    except Exception:
        from shoal.errors import RemoteError

        return pickle.dumps(RemoteError(f"{type(exc).__qualname__}: {exc}"), _payload.PROTOCOL)


def _failure(exc: BaseException) -> tuple[bytes, str]:
    return _pickle_exception(exc), _format_traceback(exc)


class _Runner:
    """Runs calls and chunks, keeping unpickled functions keyed by their pickled bytes."""

    def __init__(self) -> None:
        self.functions: dict[bytes, object] = {}

    def _function(self, fn_bytes: bytes):
        functions = self.functions
        fn = functions.get(fn_bytes)
        if fn is None:
            fn = pickle.loads(fn_bytes)
            if len(functions) >= FUNCTION_CACHE_SIZE:
                del functions[next(iter(functions))]
            functions[fn_bytes] = fn
        return fn

    def run(self, payload) -> tuple[bool, bytes, str]:
        """One Run: (ok, Result payload, traceback). (A single call is the hot path of
        one-at-a-time dispatch: it is done here in the fewest steps.)"""
        try:
            mode, fn_bytes, args_bytes = _payload.decode_run(payload)
            fn = self._function(fn_bytes)
            if mode == CALL:
                positional, keywords = pickle.loads(args_bytes)
            else:
                # A chunk's time counts its items, not the one-off unpickling of its
                # function; a single call is not timed.
                start = time.perf_counter()
                items = pickle.loads(args_bytes)
        except Exception as exc:
            return (False, *_failure(exc))
        if mode != CALL:
            return True, self._chunk(fn, items, mode == _payload.STARMAP, start), ""
        return self.call(fn, positional, keywords)

    @staticmethod
    def call(fn, positional: tuple, keywords: dict | None) -> tuple[bool, bytes, str]:
        """One call: (ok, Result payload, traceback)."""
        try:
            value = fn(*positional, **keywords) if keywords else fn(*positional)
        except BaseException as exc:  # SystemExit, KeyboardInterrupt too: as the stdlib
            return (False, *_failure(exc))
        try:
            return True, dumps(value), ""
        except Exception as exc:
            return (False, *_payload.unpicklable_result(value, exc))

    @staticmethod
    def _chunk(fn, items: list, star: bool, start: float) -> bytes:
        values: list = []
        errors: dict = {}
        append = values.append
        for index, item in enumerate(items):
            try:
                append(fn(*item) if star else fn(item))
            except BaseException as exc:
                append(None)
                errors[index] = _failure(exc)
        return _payload.encode_chunk_result(time.perf_counter() - start, values, errors)


def _initialize(payload: memoryview) -> tuple[bool, bytes, str]:
    """Runs the pool's initializer: payload = cloudpickled (initializer, initargs)."""
    try:
        initializer, initargs = pickle.loads(payload)
        initializer(*initargs)
    except Exception as exc:
        return (False, *_failure(exc))
    return True, b"", ""


def _run_initializer(initializer) -> tuple[bool, bytes, str]:
    """A thread worker's initializer: given as an object, never pickled."""
    try:
        initializer()
    except Exception as exc:
        return (False, *_failure(exc))
    return True, b"", ""


def _configure(config: memoryview) -> None:
    """Applies Welcome.config: a pickled dict from the client (`_client.worker_config`)."""
    if not len(config):
        return
    try:
        settings = pickle.loads(config)
        sys_path, authkey = settings["sys_path"], settings.get("authkey")
        # Inherited for the initializer's arguments (see _sharing), not for the
        # processes the tasks start.
        for fd in settings.get("fds", ()):
            os.set_inheritable(fd, False)
    except Exception as exc:
        raise ProtocolError(f"Welcome: the worker configuration cannot be read: {exc!r}") from None
    sys.path[:] = sys_path
    if authkey:
        _sharing.adopt_authkey(authkey)


def _flush_output() -> None:
    # The user's prints reach the terminal now, not when the worker happens to exit
    # (or never, when it is killed).
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass


def _result_frame(task: int, attempt: int, ok: bool, data: bytes, tb: str) -> bytes:
    """The Result of a Run; a value too large to carry back fails it instead."""
    if len(data) > MAX_RESULT:
        ok, data, tb = False, *_payload.oversized_result(len(data), MAX_RESULT)
    return result(task, attempt, ok, data, tb)


class _Wake:
    """threading.Event's set, clear and wait, from one lock (threading is not imported
    at start): the lock is free while the flag is set. One thread waits and clears."""

    def __init__(self) -> None:
        self._lock = allocate_lock()
        self._lock.acquire()

    def set(self) -> None:
        try:
            self._lock.release()
        except RuntimeError:  # already set
            pass

    def clear(self) -> None:
        self._lock.acquire(False)

    def wait(self) -> None:
        self._lock.acquire()
        try:
            self._lock.release()  # still set after the wait, as an Event
        except RuntimeError:  # a `set` between the two freed it already
            pass


class _Held:
    """The Results of finished Runs not sent yet, and the flusher thread that sends them
    when the main thread has moved on to a Run that is not quick.

    The main thread appends to `held` (a list append is atomic) and calls `arm` before
    it starts a Run with Results held, unless `armed` says the flusher is awake; `send`
    (main thread or flusher) sends a prefix of `held`, one sender at a time, so Results
    go in order. The flusher starts with the first `arm`, looks every FLUSH_TICK while
    armed, and sleeps again when nothing was held for IDLE_TICKS looks (it clears
    `armed` first, then looks at both once more, so an `arm` in between is never
    missed)."""

    def __init__(self, channel: _Channel) -> None:
        self.channel = channel
        self.held: list[bytes] = []
        self.armed = False  # a plain flag: read before every Run, so kept cheap
        self._sending = allocate_lock()
        self._wake = _Wake()
        self._started = False

    def send(self) -> None:
        with self._sending:
            held = self.held
            count = len(held)
            if not count:
                return
            # The tasks' prints go out before their Results do.
            _flush_output()
            data = b"".join(held[:count]) if count > 1 else held[0]
            del held[:count]  # the main thread only appends: these are the ones joined
            self.channel.send(data)

    def arm(self) -> None:
        if not self._started:
            self._started = True
            start_new_thread(self._flush_late, ())
        self.armed = True
        self._wake.set()

    def _flush_late(self) -> None:
        held, wake, sleep = self.held, self._wake, time.sleep
        while True:
            wake.wait()
            seen = None
            idle = 0
            while True:
                sleep(FLUSH_TICK)
                try:
                    last = held[-1]
                except IndexError:  # (not `if held`: a send may empty it in between)
                    last = None
                if last is None:
                    seen = None  # (and no sent Result kept alive)
                    idle += 1
                    if idle < IDLE_TICKS:
                        continue
                    self.armed = False
                    wake.clear()
                    # Looked at after the clear: an `arm`, or a Result, may have come.
                    if not held and not self.armed:
                        break
                    self.armed = True
                elif last is seen:
                    # No newer Result for a whole look: the Run after it is not tiny.
                    self.send()
                    seen = None
                else:
                    seen = last
                idle = 0


def _answer_buffered_calls(channel: _Channel, runner: _Runner, results: _Held) -> None:
    """Answers the Runs already whole in the channel's buffer that are single calls of a
    function this worker has unpickled before: the hot path of one-at-a-time dispatch,
    in the fewest Python steps (no message tuple, no payload copy). It stops at anything
    else (another message, a chunk, a new function, a frame not yet whole, arguments that
    do not unpickle) and leaves it to the general path, which checks and reports."""
    buf, pos = channel._buf, channel._pos
    size = len(buf)
    functions, call, loads = runner.functions, runner.call, pickle.loads
    held = results.held
    while size - pos >= _CALL_HEAD.size:
        length, kind, task, attempt, payload_size, mode, fn_size = _CALL_HEAD.unpack_from(
            buf, pos
        )
        end = pos + 4 + length
        args_at = pos + _CALL_HEAD.size + fn_size
        if kind != RUN or mode != CALL or end > size or payload_size != length - 17:
            return
        if args_at > end or (fn := functions.get(buf[args_at - fn_size : args_at])) is None:
            return
        try:
            positional, keywords = loads(buf[args_at:end])
        except Exception:
            return
        pos = channel._pos = end
        if held and not results.armed:
            results.arm()
        held.append(_result_frame(task, attempt, *call(fn, positional, keywords)))
        if len(held) >= HOLD:
            results.send()


def serve(channel: _Channel, initializer=None) -> None:
    """The conversation after Hello, until Shutdown (returns) or an error (raises). A
    thread worker's (`channel.in_thread`) takes no configuration, has no watcher (its
    heartbeats are off, and the engine's end is its own process's), and runs
    `initializer()` on Init instead of the payload."""
    message = channel.recv()
    if message[0] != WELCOME:
        raise ProtocolError(
            f"expected Welcome as the engine's first frame, got {NAMES[message[0]]}"
        )
    _, version, _worker_id, heartbeat_ms, config = message
    if version != PROTOCOL_VERSION:
        raise ProtocolError(
            f"Welcome names protocol version {version}; "
            f"this worker speaks version {PROTOCOL_VERSION}"
        )
    if not channel.in_thread:
        start_new_thread(_watch, (channel, heartbeat_ms))
        _configure(config)
    runner = _Runner()
    initialized = ran = False
    recv, run, has_frame = channel.recv, runner.run, channel.has_frame
    # The Results of prefetched Runs (the engine prefetches only tiny tasks) go out
    # together, in one write, once the Runs already received are done, HOLD at most,
    # unless a Run after them takes longer than a tick (see _Held). The engine allows
    # it: when a worker dies with several Runs unanswered, it runs them again, each
    # alone, rather than guess which one was running.
    results = _Held(channel)
    held, answer = results.held, results.send

    while True:
        if ran:
            _answer_buffered_calls(channel, runner, results)
            if held and not has_frame():
                answer()
        message = recv()
        kind = message[0]
        if kind == RUN:
            _, task, attempt, payload = message
            ran = True
            if held and not results.armed:
                results.arm()
            ok, data, tb = run(payload)
            del message, payload  # the task's bytes can be large: free them now
            held.append(_result_frame(task, attempt, ok, data, tb))
            if len(held) >= HOLD or not has_frame():
                answer()
        elif kind == INIT:
            if initialized or ran:
                raise ProtocolError(
                    "Init received twice" if initialized else "Init received after a Run"
                )
            initialized = True
            if initializer is not None:
                ok, data, tb = _run_initializer(initializer)
            else:
                ok, data, tb = _initialize(message[1])
            _flush_output()
            channel.send(init_done(ok, data, tb))
        elif kind == SHUTDOWN:
            # Every Run received was answered (they run in order, in this thread).
            answer()
            channel.send_last(bye())
            return
        else:
            raise ProtocolError(f"{NAMES[kind]} received twice")


def serve_thread(fd: int, initializer=None) -> None:
    """A thread worker of shoal's thread pools: the protocol on `fd`, in a thread of the
    caller, until Shutdown or until the engine cuts the channel (a timeout, terminate).
    The caller closes `fd` afterwards. `initializer()`, if given, runs on Init."""
    channel = _Channel(fd, in_thread=True)
    runtime = "python %d.%d.%d (thread)" % sys.version_info[:3]
    try:
        channel.send(hello(os.getpid(), runtime))
        serve(channel, initializer)
    except EngineGone:
        pass
    except ProtocolError as exc:
        os.write(2, f"shoal thread worker: protocol error: {exc}\n".encode())


def main() -> None:
    fd_text = os.environ.pop("SHOAL_WORKER_FD", None)
    if fd_text is None:
        _exit_now(1, "SHOAL_WORKER_FD is not set: this program is started by shoal's engine")
    try:
        fd = int(fd_text)
        os.set_inheritable(fd, False)
    except (ValueError, OSError) as exc:
        _exit_now(1, f"SHOAL_WORKER_FD={fd_text!r} does not name an open descriptor: {exc}")
    channel = _Channel(fd)
    runtime = "python %d.%d.%d" % sys.version_info[:3]
    channel.send(hello(os.getpid(), runtime))
    try:
        serve(channel)
    except EngineGone:
        _exit_now(1)
    except ProtocolError as exc:
        _exit_now(1, f"protocol error: {exc}")
    try:
        os.close(fd)
    except OSError:
        pass
    _flush_output()
    # A clean exit runs the user's atexit handlers; a user thread that blocks it is the
    # engine's to kill after its grace period.


if __name__ == "__main__":
    main()
