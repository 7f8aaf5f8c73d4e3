"""Read a plain pickle of numpy arrays (what paddle.save writes) without running anything from the file.

A pickle names the functions and classes that rebuild its objects, and unpickling calls them: a downloaded file can
ask for os.system. `load_array_pickle` answers only the few names a pickled dict of numpy arrays uses (protocols
0 to 5), and not with numpy itself: `numpy.dtype(...)` and `_reconstruct(ndarray, ...)` become inert records whose
pickled state is checked here, and the arrays are then built with `np.frombuffer` from the raw bytes of a numeric
dtype. Every other global (os.system, builtins.eval, subprocess.*, any class) is refused before it is looked up, so
nothing from the file runs and nothing outside this module is imported on the file's behalf.
"""

from __future__ import annotations

import _compat_pickle
import math
import pickle
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from utils.core.errors import UserError, first_line

_MAX_DEPTH = 32  # a state dict nests 1-3 levels; deeper (or cyclic) data is not weights
_NUMERIC_CODE = re.compile(r"[biufc]\d{1,2}")  # numpy's dtype codes of bool/int/uint/float/complex arrays ('f4', 'b1')
_LEAVES = (str, bytes, int, float, complex, bool, type(None), np.generic)


class _Refused(Exception):
    """Something the pickle asks for that is not allowed; `what` completes "refused to load — it ..."."""

    def __init__(self, what: str) -> None:
        super().__init__(what)
        self.what = what


class _Sealed:
    """A handle on one allowed function. Pickle's BUILD opcode writes state onto whatever object is on its stack;
    aimed at a plain function it could change, say, its __defaults__ for the rest of the process. Here it is refused."""

    __slots__ = ("fn", "label")

    def __init__(self, fn: Callable, label: str) -> None:
        object.__setattr__(self, "fn", fn)
        object.__setattr__(self, "label", label)

    def __call__(self, *args: Any) -> Any:
        return self.fn(*args)

    def __setattr__(self, name: str, value: Any) -> None:
        raise _Refused(f"writes the attribute {name[:40]!r} onto {self.label}")

    def __setstate__(self, state: Any) -> None:
        raise _Refused(f"writes state onto {self.label}")


class _NdarrayType:
    """Stands for the class numpy.ndarray, which the pickle may only hand to _reconstruct (never call or change)."""

    __slots__ = ()
    label = "numpy.ndarray"

    def __setstate__(self, state: Any) -> None:
        raise _Refused("writes state onto numpy.ndarray")


class _Dtype:
    """A numeric numpy dtype as numpy pickles it: numpy.dtype('f4', False, True), then BUILD with its byte order."""

    __slots__ = ("code", "order")

    def __init__(self, code: str) -> None:
        self.code, self.order = code, "="

    def __setstate__(self, state: Any) -> None:
        # (version, byte order, subarray, names, fields, elsize, alignment, flags[, metadata]); a numeric dtype has
        # no subarray, names or fields — a structured or object dtype is not weights
        if not (isinstance(state, tuple) and len(state) in (8, 9) and state[1] in ("<", ">", "|", "=")):
            raise _Refused(f"sets the state of dtype {self.code!r} to something numpy does not write")
        if any(s is not None for s in state[2:5]):
            raise _Refused(f"turns dtype {self.code!r} into a structured dtype (only numeric arrays are read)")
        self.order = state[1]

    def resolve(self) -> np.dtype:
        dt = np.dtype(self.code)
        return dt.newbyteorder(self.order) if self.order in ("<", ">") else dt


class _Array:
    """An array as numpy pickles it: _reconstruct(ndarray, (0,), b'b'), then BUILD with (version, shape, dtype,
    is_fortran, raw bytes). The array is built here, from the bytes, only when the state checks out."""

    __slots__ = ("array",)

    def __init__(self) -> None:
        self.array: np.ndarray | None = None

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) == 5:
            state = state[1:]  # drop the version (numpy writes 1; files from before it was added have 4 fields)
        if not (isinstance(state, tuple) and len(state) == 4):
            raise _Refused("sets the state of an array to something numpy does not write")
        shape, dtype, fortran, raw = state
        if not (isinstance(shape, tuple) and all(type(n) is int and n >= 0 for n in shape)):
            raise _Refused(f"gives an array the shape {str(shape)[:60]}")
        if not isinstance(dtype, _Dtype):
            raise _Refused("gives an array a dtype that is not a pickled numpy dtype")
        if isinstance(raw, str):  # a Python 2 pickle (read with encoding latin1) holds the bytes as text
            raw = raw.encode("latin1")
        if not isinstance(raw, bytes):  # object arrays pickle a list of objects here
            raise _Refused("holds an array whose data is not raw bytes")
        dt = dtype.resolve()
        if len(raw) != math.prod(shape) * dt.itemsize:
            raise _Refused(f"holds an array of shape {list(shape)} with {len(raw)} bytes of data")
        flat = np.frombuffer(raw, dtype=dt)
        # own, writable, native-order memory (torch.from_numpy wants both), in C order whatever the pickled order
        self.array = flat.reshape(shape, order="F" if fortran else "C").astype(dt.newbyteorder("="), order="C")


# ----------------------------------------------------------------------------- what the pickle may call, by name
def _reconstruct(subtype: Any, shape: Any = None, code: Any = None) -> _Array:
    if not isinstance(subtype, _NdarrayType):  # numpy passes the array's class; a subclass could run its own code
        raise _Refused("asks numpy's _reconstruct for something other than a plain numpy.ndarray")
    return _Array()  # shape and code are numpy's placeholders ((0,), b'b'): the real ones come with the state


def _dtype(code: Any, align: Any = False, copy: Any = True) -> _Dtype:
    if not (isinstance(code, str) and _NUMERIC_CODE.fullmatch(code)):
        raise _Refused(
            f"builds a numpy dtype {str(code)[:40]!r} (only bool, integer, float and complex arrays are read)"
        )
    try:
        np.dtype(code)
    except TypeError:  # e.g. 'f3': no such size
        raise _Refused(f"builds a numpy dtype {code!r} that does not exist") from None
    return _Dtype(code)


def _frombuffer(buf: Any, dtype: Any, shape: Any, order: Any = "C") -> _Array:
    # protocol 5: numpy hands the raw bytes over as a buffer (bytes, or a bytearray for a writable array)
    arr = _Array()
    arr.__setstate__((shape, dtype, order == "F", bytes(buf) if isinstance(buf, bytearray) else buf))
    return arr


def _scalar(dtype: Any, raw: Any = b"") -> np.generic:
    if isinstance(raw, str):
        raw = raw.encode("latin1")
    if not (isinstance(dtype, _Dtype) and isinstance(raw, bytes) and len(raw) == dtype.resolve().itemsize):
        raise _Refused("builds a numpy scalar from something that is not a numeric dtype and its bytes")
    return np.frombuffer(raw, dtype=dtype.resolve())[0]


def _latin1(text: Any, encoding: Any = "latin1") -> bytes:
    # protocol 2 writes bytes (numpy's raw data) as _codecs.encode(text, 'latin1'): only that use is allowed
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise _Refused(f"calls _codecs.encode with {str(encoding)[:40]!r}, not with 'latin1'")
    return text.encode("latin1")


def _empty_bytes(*args: Any) -> bytes:
    if args:  # protocol 2 writes b'' as bytes(); nothing else calls it
        raise _Refused("calls bytes() with arguments")
    return b""


def _tuple(items: Any = ()) -> tuple:
    # paddle.save pickles a tensor inside other objects as tuple((name, ndarray))
    if not isinstance(items, (list, tuple)):
        raise _Refused(f"calls tuple() on a {type(items).__name__}")
    return tuple(items)


def _ordered_dict(items: Any = ()) -> dict:
    # a plain dict (ordered too): an OrderedDict instance could carry attributes that shadow its methods
    if not isinstance(items, (list, tuple)) or not all(isinstance(p, (list, tuple)) and len(p) == 2 for p in items):
        raise _Refused("builds an OrderedDict from something that is not a list of pairs")
    return dict(items)


_FUNCTIONS: dict[tuple[str, str], Callable] = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,  # numpy < 2
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,  # numpy >= 2
    ("numpy.core.numeric", "_frombuffer"): _frombuffer,  # protocol 5
    ("numpy._core.numeric", "_frombuffer"): _frombuffer,
    ("numpy.core.multiarray", "scalar"): _scalar,
    ("numpy._core.multiarray", "scalar"): _scalar,
    ("numpy", "dtype"): _dtype,
    ("_codecs", "encode"): _latin1,
    ("builtins", "bytes"): _empty_bytes,
    ("builtins", "tuple"): _tuple,
    ("collections", "OrderedDict"): _ordered_dict,
}


class _ArrayUnpickler(pickle.Unpickler):
    """find_class answers from _FUNCTIONS (each a fresh _Sealed handle) or with the ndarray stand-in; any other name
    raises before it is imported or called."""

    def find_class(self, module: str, name: str) -> Any:
        # protocol 2 from Python 2 writes __builtin__.tuple etc.: map to the Python 3 names, as pickle itself does
        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        else:
            module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        if (module, name) == ("numpy", "ndarray"):
            return _NdarrayType()
        if (module, name) in _FUNCTIONS:
            return _Sealed(_FUNCTIONS[(module, name)], f"{module}.{name}")
        raise _Refused(
            f"pickles {f'{module}.{name}'[:100]}, which is not a numpy array or a plain container, and unpickling it "
            f"could run code from the file"
        )


def _finish(obj: Any, depth: int, done: dict[int, Any]) -> Any:
    """The loaded data with every _Array replaced by its ndarray (a _Dtype by its np.dtype); anything that is not
    plain data or an array is refused. `done` keeps shared objects shared (and a pickle that repeats one object
    many times cheap)."""
    if isinstance(obj, _LEAVES):
        return obj
    if id(obj) in done:
        return done[id(obj)]
    if depth > _MAX_DEPTH:
        raise _Refused(f"nests containers more than {_MAX_DEPTH} levels deep (or in a cycle)")
    if isinstance(obj, _Array):
        if obj.array is None:
            raise _Refused("holds an array without data")
        out: Any = obj.array
    elif isinstance(obj, _Dtype):
        out = obj.resolve()
    elif type(obj) is dict:
        out = {_finish(k, depth + 1, done): _finish(v, depth + 1, done) for k, v in obj.items()}
    elif type(obj) in (list, tuple, set, frozenset):
        out = type(obj)(_finish(v, depth + 1, done) for v in obj)
    else:  # a stand-in or sealed function left as data: it has no meaning in the file's content
        raise _Refused(f"holds a bare {getattr(obj, 'label', type(obj).__name__)} as data")
    done[id(obj)] = out
    return out


def load_array_pickle(path: str | Path, todo: str) -> Any:
    """The object pickled in `path`, rebuilt from numpy arrays (numeric dtypes, own native-order memory) and plain
    data only: dict (also for OrderedDict), list, tuple, set, str, bytes, numbers, None.

    Anything else, and any file that is not a complete pickle, is one UserError line naming the file, what was
    refused and `todo` (what the user should pass instead). Nothing from the file has run by then.
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            raw = _ArrayUnpickler(f, encoding="latin1").load()  # latin1: Python 2 pickles' byte strings stay intact
        return _finish(raw, 0, {})
    except _Refused as e:
        raise UserError(f"{path}: refused to load — it {e.what} — {todo}") from None
    except OSError as e:  # a folder, no permission: the user's path, not a bug
        raise UserError(f"cannot read {path} ({first_line(e)}) — {todo}") from None
    except Exception as e:  # truncated or crafted data: pickle raises many types (EOFError, UnpicklingError, ...)
        raise UserError(f"{path} is not a readable pickle ({first_line(e)}) — {todo}") from None
