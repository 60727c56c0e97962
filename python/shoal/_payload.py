"""The payloads of shoal's Python tasks: what a Run frame carries, what its Result answers.

The engine carries payloads as opaque bytes (`docs/protocol.md`); this module is the one
place that gives them a meaning, for both sides: `_client` encodes calls and decodes
outcomes, `_worker` decodes calls and encodes outcomes. It must stay cheap to import
(the worker imports it at start): the C pickler and `struct` only, cloudpickle on demand.

A Run payload is a header, the pickled function, then the pickled arguments:

    offset 0   u8    mode: CALL, MAP or STARMAP
    offset 1   u32   n, little-endian: the length of the function's pickle
    offset 5   n     the function, pickled once by the client and reused as is
    offset 5+n ...   the arguments: CALL: (args, kwargs or None);
                     MAP: [item, ...] for fn(item); STARMAP: [args, ...] for fn(*args)

The worker keeps unpickled functions keyed by their pickled bytes, so a function costs
one unpickling per worker, however many tasks carry it.

The Result payload of a CALL is the pickled return value (ok) or the pickled exception
with its formatted traceback in the frame's own field (not ok). A chunk (MAP, STARMAP)
answers `ok` with a pickled `(elapsed, values, errors)`: the seconds the worker spent on
the chunk (the client's chunking measures items with it), the list of return values (None
where an item failed) and a dict `{index: (pickled exception, traceback)}` of the items
that failed. A chunk answers not ok only when the whole chunk failed (its function or its
arguments could not be unpickled), with one exception for all its items.
"""

from __future__ import annotations

import io
import struct
import sys
from types import FunctionType as types_FunctionType

try:
    # What `pickle` re-exports; importing `pickle` itself (re, enum and more) costs a
    # worker milliseconds at start, before its first result.
    import _pickle as pickle
except ImportError:  # an interpreter without the C pickler
    import pickle  # type: ignore[no-redef]

CALL = 1
MAP = 2
STARMAP = 3
MODES = (CALL, MAP, STARMAP)

PROTOCOL = 5
_HEADER = struct.Struct("<BI")
_HEADER_SIZE = _HEADER.size

# Plain pickle refers to what it pickles by module and name. A worker's `__main__` is
# not the caller's, so anything pickled by reference to `__main__` must go by value.
_MAIN = b"__main__"


def dumps(obj: object) -> bytes:
    """Pickles `obj` with the fast standard pickler, falling back to cloudpickle for what
    only cloudpickle can carry (lambdas, closures, anything defined in `__main__`).
    Raises the pickler's own error when neither can pickle it."""
    try:
        data = pickle.dumps(obj, PROTOCOL)
    except Exception:
        return cloudpickle_dumps(obj)
    # find, not `in`: bytes.__contains__ first tries the operand as an int and formats
    # the TypeError it throws away, which doubled the cost of pickling a small call.
    if data.find(_MAIN) != -1:
        return cloudpickle_dumps(obj)
    return data


def dumps_function(fn: object) -> bytes:
    """Pickles a task's function: by value with cloudpickle where only it can (lambdas,
    closures, `__main__`), else by reference.

    Until something has imported cloudpickle, a function that the standard pickler
    takes by reference, as cloudpickle would, is pickled by it: this spares a first
    call cloudpickle's import (tens of milliseconds). Once cloudpickle is loaded, it
    decides, so that modules registered with its `register_pickle_by_value` go by
    value."""
    if "cloudpickle" not in sys.modules and _importable(fn):
        try:
            data = pickle.dumps(fn, PROTOCOL)
        except Exception:
            pass
        else:
            if data.find(_MAIN) == -1:
                return data
    return cloudpickle_dumps(fn)


def _importable(fn: object) -> bool:
    """Whether `fn` comes from a module imported from a file or package (one a worker
    can import too), not from `__main__` or a module made at run time."""
    module = sys.modules.get(getattr(fn, "__module__", None) or "")
    return module is not None and getattr(module, "__spec__", None) is not None


def cloudpickle_dumps(obj: object, pickler: type | None = None) -> bytes:
    """Pickles `obj` with cloudpickle, code keeping its file name (see `pickler_class`),
    or with `pickler`, a subclass of that class."""
    with io.BytesIO() as file:
        (pickler or pickler_class())(file, PROTOCOL).dump(obj)
        return file.getvalue()


_PICKLER: type | None = None


def pickler_class() -> type:
    """cloudpickle's Pickler, with two differences for what it pickles by value:
    - code keeps its file name. cloudpickle names it "<dynamic-code>", so a traceback
      of a function defined in `__main__` (or a lambda, or a closure) showed neither the
      file nor the source line; with the real name the worker's linecache reads the
      line as multiprocessing's workers do, and shows file and line where it cannot.
    - functions of the caller's `__main__` share one namespace in a worker (see
      `main_namespace`), as they share a module in a spawn pool's worker: an
      initializer's `global` assignments are seen by the tasks. cloudpickle gives each
      pickle a namespace of its own, where a task saw the caller's placeholder (None)
      instead of what the initializer had set."""
    global _PICKLER
    if _PICKLER is None:
        import types
        from collections import ChainMap

        base = _cloudpickle().Pickler
        reduce_code = base.dispatch_table[types.CodeType]

        def reduce_code_in_its_file(code):
            rebuild, args = reduce_code(code)
            return _code_in_file, (rebuild, args, code.co_filename)

        class Pickler(base):
            dispatch_table = ChainMap({types.CodeType: reduce_code_in_its_file}, base.dispatch_table)

            def _dynamic_function_reduce(self, func):
                # cloudpickle's (make, (code, globals, ...), state, None, None, setstate);
                # another shape (a cloudpickle of its own) is left as it is.
                reduced = super()._dynamic_function_reduce(func)
                main = sys.modules.get("__main__")
                if main is None or func.__globals__ is not vars(main) or len(reduced) != 6:
                    return reduced
                make, (code, base_globals, *rest), state, items, entries, setstate = reduced
                return (
                    make,
                    (code, _MainGlobals(base_globals), *rest),
                    (setstate, state),
                    items,
                    entries,
                    _set_main_function_state,
                )

        _PICKLER = Pickler
    return _PICKLER


def _code_in_file(rebuild, args: tuple, filename: str):
    """A code object pickled by `pickler_class`, given back its file name."""
    return rebuild(*args).replace(co_filename=filename)


class _MainGlobals:
    """Pickles as the worker's namespace of the caller's `__main__` functions."""

    def __init__(self, base: dict) -> None:
        self.base = base

    def __reduce__(self):
        return main_namespace, (dict(self.base),)


# In a worker: the namespace shared by the caller's `__main__` functions (the module
# attributes cloudpickle sends first: __name__, __file__...), and the functions and
# classes the caller sent into it, by name.
_MAIN_NAMESPACE: dict | None = None
_MAIN_CODE: dict = {}
_UNSENT = object()


def main_namespace(base: dict) -> dict:
    global _MAIN_NAMESPACE
    if _MAIN_NAMESPACE is None:
        _MAIN_NAMESPACE = dict(base)
    return _MAIN_NAMESPACE


def _is_code(value: object) -> bool:
    return isinstance(value, (type, types_FunctionType))


def _set_main_function_state(func, wrapped: tuple) -> None:
    """cloudpickle's state setter for a `__main__` function, except for the globals it
    brings. Each name has one value in the worker, as a spawn (or fork) pool's worker has
    its own module:
    - data: the first value the caller sent stays, and from then on it is the worker's
      (what an initializer or a task puts there, rebound with `global` or changed in
      place). Later changes in the caller do not reach a worker that has the name, as
      with the standard library's pools, whose workers never see them either.
    - code (functions, classes): the caller's latest definition sent replaces the one
      sent before, unless the worker's code rebound the name."""
    setstate, (state, slotstate) = wrapped
    namespace, code = func.__globals__, _MAIN_CODE
    for name, value in slotstate["__globals__"].items():
        is_code = _is_code(value)
        if name in namespace:
            if not is_code or namespace[name] is not code.get(name, _UNSENT):
                continue  # data stays the worker's; so does code the worker rebound
        namespace[name] = value
        if is_code:
            code[name] = value
    slotstate["__globals__"] = {}
    setstate(func, (state, slotstate))


def run_head(mode: int, fn_bytes: bytes) -> bytes:
    """A Run payload up to its arguments: the header and the pickled function. A sender
    of many calls of one function makes it once and appends each call's arguments."""
    return _HEADER.pack(mode, len(fn_bytes)) + fn_bytes


def encode_run(mode: int, fn_bytes: bytes, args_bytes: bytes) -> bytes:
    """The Run payload of a call or a chunk (layout in the module doc)."""
    return run_head(mode, fn_bytes) + args_bytes


def decode_run(payload) -> tuple[int, bytes, object]:
    """Splits a Run payload (bytes or a memoryview) into (mode, function bytes,
    arguments). Raises ValueError naming what is wrong when the payload was not made by
    `encode_run`. (Once per task in the worker: kept to the fewest steps.)"""
    size = len(payload)
    if size < _HEADER_SIZE:
        raise ValueError(f"the task payload is {size} bytes, shorter than its header")
    mode, fn_len = _HEADER.unpack_from(payload)
    end = _HEADER_SIZE + fn_len
    if mode not in MODES or end > size:
        if mode not in MODES:
            raise ValueError(f"the task payload has an unknown mode {mode}")
        raise ValueError(
            f"the task payload's function ({fn_len} bytes) runs past its end ({size} bytes)"
        )
    fn_bytes = payload[_HEADER_SIZE:end]
    # A slice of bytes is bytes already; bytes() of it would cost more than the rest.
    if type(fn_bytes) is not bytes:
        fn_bytes = bytes(fn_bytes)
    return mode, fn_bytes, payload[end:]


def encode_chunk_result(elapsed: float, values: list, errors: dict) -> bytes:
    """The Result payload of a chunk. Values that cannot be pickled become failures of
    their own item (`errors` gains them), so one bad value never sinks the chunk.
    `errors` maps an index to (pickled exception, traceback)."""
    try:
        return dumps((elapsed, values, errors))
    except Exception:
        pass
    for index, value in enumerate(values):
        if index in errors:
            continue
        try:
            dumps(value)
        except Exception as exc:
            values[index] = None
            errors[index] = unpicklable_result(value, exc)
    return dumps((elapsed, values, errors))


def unpicklable_result(value: object, exc: BaseException) -> tuple[bytes, str]:
    """The failure of a task whose return value cannot be pickled."""
    return _result_failure(
        f"the task's return value (of type {type(value).__qualname__}) could not be "
        f"pickled to send it back: {type(exc).__name__}: {exc}"
    )


def oversized_result(size: int, limit: int) -> tuple[bytes, str]:
    """The failure of a task whose pickled return value is too large for a Result."""
    return _result_failure(
        f"the task's return value is {size} bytes pickled, over the {limit} bytes "
        "a result can carry back"
    )


def _result_failure(message: str) -> tuple[bytes, str]:
    """A pickled `shoal.PicklingError` saying `message`, and its one-line traceback."""
    from shoal.errors import PicklingError  # only on this failure: keep worker start light

    error = PicklingError(message)
    return pickle.dumps(error, PROTOCOL), f"shoal.errors.PicklingError: {error}\n"


def _cloudpickle():
    import cloudpickle  # costs tens of ms: only when a payload needs it

    return cloudpickle
