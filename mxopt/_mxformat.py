"""MXNet 1.9.1's file formats in pure Python + NumPy (no JAX, no MXNet).

This module is the byte-level half of :mod:`mxopt.interop`. It imports nothing but
the standard library and NumPy so that ``tools/make_golden_interop.py`` can load it
by path inside the MXNet side virtualenv (NumPy 1.23, no JAX) and prove, with real
MXNet, that what it writes loads and continues there.

Formats (MXNet 1.9.1, ``src/ndarray/ndarray.cc``, ``src/c_api/c_api.cc``), all
little-endian:

* NDArray list file (``mx.nd.save``, Gluon ``save_parameters``, ``export``)::

      uint64 0x112, uint64 reserved,
      uint64 count, count * NDArray,
      uint64 name_count (0 or count), name_count * (uint64 length, utf-8 bytes)

* one NDArray (``NDArray::Save``; also the payload of a pickled NDArray)::

      uint32 magic        0xF993FAC9 (v2) or 0xF993FACA (v3: numpy-shape semantics)
      int32  storage      0 dense (1 row_sparse, 2 csr: refused here)
      int32  ndim, ndim * int64 dims
      int32  dev_type, int32 dev_id
      int32  dtype flag   0 f32, 1 f64, 2 f16, 3 u8, 4 i32, 5 i8, 6 i64, 7 bool
      prod(dims) * itemsize bytes of C-ordered data

  In v2 a 0-d shape means "no array" (MXNet writes 0-d arrays outside numpy-shape
  semantics but cannot load them back); v3 files hold 0-d arrays and load in MXNet
  only under numpy-shape semantics (``mx.np_shape(True)``, or ``mx.npx.load`` after
  ``mx.npx.set_np()``).

* ``.states`` files (``Updater.get_states`` / Gluon ``Trainer.save_states``): a
  pickle of ``{index: NDArray | tuple of NDArrays | None}``, or of the pair
  ``(states, optimizer)`` with ``dump_optimizer=True`` (what ``save_states``
  writes). An NDArray pickles as ``NDArray(None)`` followed by
  ``__setstate__({'handle': bytearray(<one NDArray as above>)})``; the optimizer
  as its class plus its ``__dict__`` (without ``param_dict``), its LR scheduler
  likewise.

Pickles can run arbitrary code. :func:`restricted_loads` never imports or calls
anything but the few MXNet, NumPy and builtin names MXNet's files contain, each
replaced by an inert stand-in; everything else is refused before it runs.
"""
from __future__ import annotations

import collections
import dataclasses
import functools
import io
import math
import numbers
import os
import pickle
import pickletools
import reprlib
import struct
import types
import uuid
from typing import Any, Callable, Mapping, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np

__all__ = [
    "MXNetFormatError", "UnsafePickleError", "MXNetObject", "MXNetStates",
    "loads_params", "dumps_params", "decode_ndarray", "encode_ndarray",
    "restricted_loads", "loads_states", "dumps_states", "atomic_write",
    "rmsprop_optimizer", "optimizer_record", "optimizer_format", "OptimizerFormat",
    "OPTIMIZER_FORMATS", "scheduler_record", "OPTIMIZER_CLASSES", "SCHEDULER_CLASSES",
    "MXNET_CLASSES",
    "states_payload", "check_rmsprop", "real_field", "clip_bound",
]

LIST_MAGIC = 0x112
V1_MAGIC = 0xF993FAC8
V2_MAGIC = 0xF993FAC9
V3_MAGIC = 0xF993FACA

# mshadow type flags MXNet 1.9.1's Python frontend can create and save.
_DTYPE_BY_FLAG = {0: np.dtype("<f4"), 1: np.dtype("<f8"), 2: np.dtype("<f2"),
                  3: np.dtype("u1"), 4: np.dtype("<i4"), 5: np.dtype("i1"),
                  6: np.dtype("<i8"), 7: np.dtype("?")}
_FLAG_BY_DTYPE = {dt.newbyteorder("="): flag for flag, dt in _DTYPE_BY_FLAG.items()}
# Flags mshadow defines but MXNet 1.9.1's Python frontend cannot create.
_UNSUPPORTED_FLAGS = {8: "int16", 9: "uint16", 10: "uint32", 11: "uint64", 12: "bfloat16"}
_STORAGE_NAMES = {-1: "undefined", 0: "default (dense)", 1: "row_sparse", 2: "csr"}
_DEVICE_TYPES = {1: "cpu", 2: "gpu", 3: "cpu_pinned", 5: "cpu_shared"}
_MAX_NDIM = 32
_MAX_BYTES = 2 ** 63 - 1  # NumPy's limit on an array's size, even with a zero dimension
# Smallest possible encoded dense NDArray: magic, storage, ndim, context (2), flag.
_MIN_NDARRAY_BYTES = 4 * 6
# Pickled structures nest a few levels; anything deeper is not an MXNet file.
_MAX_DEPTH = 64

_OPTIMIZER_MODULE = "mxnet.optimizer.optimizer"
OPTIMIZER_CLASSES = frozenset(
    f"{_OPTIMIZER_MODULE}.{name}" for name in (
        "Optimizer", "SGD", "Signum", "FTML", "LARS", "LBSGD", "LAMB", "DCASGD", "NAG",
        "SGLD", "ccSGD", "Adam", "AdaGrad", "RMSProp", "AdaDelta", "Ftrl", "Adamax",
        "Nadam", "Test")) | {"mxnet.optimizer.contrib.GroupAdaGrad"}
SCHEDULER_CLASSES = frozenset(
    f"mxnet.lr_scheduler.{name}" for name in (
        "LRScheduler", "FactorScheduler", "MultiFactorScheduler", "PolyScheduler",
        "CosineScheduler"))
# What an MXNet .states file may refer to besides NDArrays: restricted_loads' default.
MXNET_CLASSES = OPTIMIZER_CLASSES | SCHEDULER_CLASSES
_NDARRAY_CLASSES = frozenset({"mxnet.ndarray.ndarray.NDArray", "mxnet.numpy.ndarray"})
RMSPROP_CLASS = f"{_OPTIMIZER_MODULE}.RMSProp"


class MXNetFormatError(ValueError):
    """A file or byte string is not a valid (or not a supported) MXNet file."""


class UnsafePickleError(MXNetFormatError):
    """A pickle refers to something other than the MXNet classes a checkpoint holds."""


def _fail(source: str, message: str) -> MXNetFormatError:
    return MXNetFormatError(f"{source}: {message}")


# --------------------------------------------------------------------------------------
# NDArray binary format
# --------------------------------------------------------------------------------------

class _Cursor:
    """Bounds-checked little-endian reads: every length is checked against the bytes
    that are left before anything is allocated."""

    def __init__(self, data, source: str):
        self.buf = memoryview(data).cast("B")
        self.pos = 0
        self.source = source

    @property
    def remaining(self) -> int:
        return len(self.buf) - self.pos

    def take(self, n: int, what: str) -> memoryview:
        if n > self.remaining:
            raise _fail(self.source, f"truncated: {what} needs {n} bytes at offset "
                                     f"{self.pos}, only {self.remaining} left")
        out = self.buf[self.pos:self.pos + n]
        self.pos += n
        return out

    def unpack(self, fmt: str, what: str):
        return struct.unpack(fmt, self.take(struct.calcsize(fmt), what))[0]

    def u32(self, what):
        return self.unpack("<I", what)

    def i32(self, what):
        return self.unpack("<i", what)

    def u64(self, what):
        return self.unpack("<Q", what)

    def i64(self, what):
        return self.unpack("<q", what)


def _read_ndarray(cur: _Cursor, label: str) -> np.ndarray:
    """Read one dense NDArray at the cursor (``NDArray::Load``)."""
    at = cur.pos
    magic = cur.u32(f"{label}: magic number")
    if magic == V1_MAGIC or magic not in (V2_MAGIC, V3_MAGIC):
        if magic == V1_MAGIC:
            why = "is the pre-1.0 format v1, which mxopt does not read"
        else:
            why = (f"is not an NDArray magic number (expected 0x{V2_MAGIC:08x} or "
                   f"0x{V3_MAGIC:08x}): not an MXNet NDArray, a legacy pre-1.0 one, or a "
                   f"corrupt one")
        raise _fail(cur.source, f"{label} at offset {at}: magic 0x{magic:08x} {why}")
    np_shape = magic == V3_MAGIC
    stype = cur.i32(f"{label}: storage type")
    if stype != 0:
        kind = _STORAGE_NAMES.get(stype, f"unknown ({stype})")
        raise _fail(cur.source, f"{label} has {kind} storage; mxopt reads dense arrays only "
                                f"(in MXNet, save arr.tostype('default') instead)")
    ndim = cur.i32(f"{label}: ndim")
    if np_shape and ndim == -1:
        raise _fail(cur.source, f"{label} has an unknown shape (an NDArray placeholder "
                                f"without data)")
    if not np_shape and ndim == 0:
        raise _fail(cur.source, f"{label} has ndim 0 outside numpy-shape semantics: MXNet "
                                f"reads that as an empty placeholder (it writes 0-d arrays "
                                f"this way but cannot load them back)")
    if not 0 <= ndim <= _MAX_NDIM:
        raise _fail(cur.source, f"{label} claims ndim {ndim} (corrupt file?)")
    shape = tuple(cur.i64(f"{label}: dimension {d}") for d in range(ndim))
    if any(d < 0 for d in shape):
        raise _fail(cur.source, f"{label} has a negative or unknown dimension in shape "
                                f"{shape} (corrupt file?)")
    dev_type = cur.i32(f"{label}: device type")
    cur.i32(f"{label}: device id")
    if dev_type not in _DEVICE_TYPES:
        raise _fail(cur.source, f"{label} has unknown device type {dev_type} (corrupt file?)")
    flag = cur.i32(f"{label}: dtype flag")
    if flag not in _DTYPE_BY_FLAG:
        name = _UNSUPPORTED_FLAGS.get(flag)
        why = f"{name}, which mxopt does not read" if name else "unknown (corrupt file?)"
        raise _fail(cur.source, f"{label} has dtype flag {flag}: {why}; supported: "
                                f"{sorted(str(d) for d in _DTYPE_BY_FLAG.values())}")
    dtype = _DTYPE_BY_FLAG[flag]
    if math.prod(d for d in shape if d) * dtype.itemsize > _MAX_BYTES:
        raise _fail(cur.source, f"{label} claims shape {shape}, too large for any array "
                                f"(corrupt file?)")
    count = math.prod(shape)
    raw = cur.take(count * dtype.itemsize, f"{label}: data of shape {shape} and dtype {dtype}")
    if dtype == np.bool_:
        # Normalise: a stored byte other than 0/1 would be a non-canonical NumPy bool.
        data = np.frombuffer(raw, np.uint8) != 0
    else:
        data = np.frombuffer(raw, dtype).astype(dtype.newbyteorder("="))
    return data.reshape(shape)


def decode_ndarray(data, source: str = "<bytes>") -> np.ndarray:
    """One NDArray from its raw bytes (``MXNDArraySaveRawBytes``, the pickle payload)."""
    cur = _Cursor(data, source)
    arr = _read_ndarray(cur, "NDArray")
    if cur.remaining:
        raise _fail(source, f"{cur.remaining} unexpected bytes after the NDArray")
    return arr


def loads_params(data, source: str = "<bytes>") -> dict:
    """An NDArray list file's contents as an ordered ``{name: numpy.ndarray}``.

    A file saved from a list (no names) gives the keys ``"0"``, ``"1"``, ...
    """
    cur = _Cursor(data, source)
    header = cur.u64("file header")
    if header != LIST_MAGIC:
        raise _fail(source, f"not an MXNet NDArray file: header 0x{header:x} (expected "
                            f"0x{LIST_MAGIC:x}; an NDArray file starts with bytes 12 01 00 00)")
    cur.u64("reserved header field")
    count = cur.u64("array count")
    if count * _MIN_NDARRAY_BYTES > cur.remaining:
        raise _fail(source, f"truncated or corrupt: the file claims {count} arrays but only "
                            f"{cur.remaining} bytes follow")
    arrays = [_read_ndarray(cur, f"array {i}") for i in range(count)]
    name_count = cur.u64("name count")
    if name_count not in (0, count):
        raise _fail(source, f"corrupt: {name_count} names for {count} arrays")
    names = []
    for i in range(name_count):
        length = cur.u64(f"length of name {i}")
        raw = bytes(cur.take(length, f"name {i}"))
        try:
            names.append(raw.decode("utf-8"))
        except UnicodeDecodeError as e:
            raise _fail(source, f"name {i} is not valid UTF-8 ({e})") from None
    if cur.remaining:
        raise _fail(source, f"{cur.remaining} unexpected bytes after the last "
                            f"{'name' if names else 'array'} (corrupt or concatenated file?)")
    if not names:
        return {str(i): a for i, a in enumerate(arrays)}
    out = {}
    for name, arr in zip(names, arrays):
        if name in out:
            raise _fail(source, f"the name {name!r} appears twice")
        out[name] = arr
    return out


def _mx_array(value: Any, label: str, *, np_shape: bool) -> np.ndarray:
    try:
        arr = np.asarray(value)
    except Exception as e:  # e.g. a jax array on a deleted buffer
        raise TypeError(f"{label}: cannot be converted to a NumPy array ({e})") from None
    dtype = arr.dtype.newbyteorder("=") if arr.dtype.byteorder not in "=|" else arr.dtype
    if dtype not in _FLAG_BY_DTYPE:
        raise TypeError(f"{label} has dtype {arr.dtype}; MXNet 1.9.1 files hold "
                        f"{sorted(str(d) for d in _FLAG_BY_DTYPE)}")
    if arr.ndim == 0 and not np_shape:
        raise ValueError(f"{label} is 0-d: MXNet 1.9.1 can load 0-d arrays only from files "
                         f"written with numpy-shape semantics; pass np_shape=True (and load "
                         f"under mx.np_shape(True) or with mx.npx.load)")
    if arr.ndim > _MAX_NDIM:
        raise ValueError(f"{label} has {arr.ndim} dimensions, more than {_MAX_NDIM}")
    return arr


def _encode_ndarray(arr: np.ndarray, *, np_shape: bool) -> bytes:
    dtype = arr.dtype.newbyteorder("=") if arr.dtype.byteorder not in "=|" else arr.dtype
    flag = _FLAG_BY_DTYPE[dtype]
    head = struct.pack("<Iii", V3_MAGIC if np_shape else V2_MAGIC, 0, arr.ndim)
    head += struct.pack(f"<{arr.ndim}q", *arr.shape)
    head += struct.pack("<iii", 1, 0, flag)  # cpu(0), dtype flag
    data = np.ascontiguousarray(arr, dtype=_DTYPE_BY_FLAG[flag])
    return head + data.tobytes()


def encode_ndarray(value: Any, *, np_shape: bool = False, label: str = "array") -> bytes:
    """One array as ``NDArray::Save`` writes it on cpu(0) (v2, or v3 with ``np_shape``)."""
    return _encode_ndarray(_mx_array(value, label, np_shape=np_shape), np_shape=np_shape)


def dumps_params(arrays: Union[Mapping[str, Any], Sequence[Any]], *,
                 np_shape: bool = False) -> bytes:
    """The bytes ``mx.nd.save`` writes for a dict ``{name: array}`` or a list of arrays.

    ``np_shape=False`` writes format v2, which every MXNet 1.x loads with
    ``mx.nd.load`` (0-d arrays are refused: v2 cannot hold them). ``np_shape=True``
    writes v3 (numpy-shape semantics; 0-d arrays allowed), which MXNet loads with
    ``mx.nd.load`` under ``mx.np_shape(True)``, or ``mx.npx.load`` after
    ``mx.npx.set_np()``.
    """
    if not isinstance(np_shape, bool):
        raise TypeError(f"np_shape must be a bool, got {np_shape!r}")
    if isinstance(arrays, Mapping):
        names = list(arrays.keys())
        for name in names:
            if not isinstance(name, str):
                raise TypeError(f"array names must be str, got {type(name).__name__} {name!r}")
        values = [arrays[n] for n in names]
        labels = [f"array {n!r}" for n in names]
    elif isinstance(arrays, (list, tuple)):
        names = []
        values = list(arrays)
        labels = [f"array {i}" for i in range(len(values))]
    else:
        raise TypeError(f"arrays must be a dict of name -> array or a list of arrays, got "
                        f"{type(arrays).__name__}")
    parts = [struct.pack("<QQQ", LIST_MAGIC, 0, len(values))]
    parts += [_encode_ndarray(_mx_array(v, label, np_shape=np_shape), np_shape=np_shape)
              for v, label in zip(values, labels)]
    parts.append(struct.pack("<Q", len(names)))
    for name in names:
        raw = name.encode("utf-8")
        parts.append(struct.pack("<Q", len(raw)) + raw)
    return b"".join(parts)


def atomic_write(path: Union[str, os.PathLike], data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same directory and
    an atomic rename, so a crash never leaves a half-written checkpoint behind (an
    existing file at ``path`` stays intact until the new one is complete)."""
    path = os.fspath(path)
    directory, base = os.path.split(os.path.abspath(path))
    tmp = os.path.join(directory, f".{base}.{uuid.uuid4().hex}.tmp")
    # 0o666 minus the umask, like open(path, "wb") would give.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


# --------------------------------------------------------------------------------------
# Inert records
# --------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class MXNetObject:
    """An MXNet object (an optimizer or an LR scheduler) as plain data.

    ``cls`` is the fully qualified class name, e.g.
    ``"mxnet.optimizer.optimizer.RMSProp"``; ``fields`` is the object's pickled
    ``__dict__`` (read-only), with NDArrays decoded to NumPy arrays and nested
    objects as :class:`MXNetObject`. Nothing of MXNet's code is involved.
    """
    cls: str
    fields: Mapping[str, Any]

    def __post_init__(self):
        if not isinstance(self.cls, str):
            raise TypeError(f"cls must be a str, got {self.cls!r}")
        if not isinstance(self.fields, Mapping):
            raise TypeError(f"fields must be a mapping, got {type(self.fields).__name__}")
        for key in self.fields:
            if not isinstance(key, str):
                raise TypeError(f"{self.cls} field names must be str, got {key!r}")
        object.__setattr__(self, "fields", types.MappingProxyType(dict(self.fields)))

    @property
    def name(self) -> str:
        """The bare class name, e.g. ``"RMSProp"``."""
        return self.cls.rpartition(".")[2]

    def __getitem__(self, key: str) -> Any:
        try:
            return self.fields[key]
        except KeyError:
            raise KeyError(f"{self.cls} has no field {key!r}; it has "
                           f"{sorted(self.fields)}") from None

    def get(self, key: str, default: Any = None) -> Any:
        return self.fields.get(key, default)

    def replace(self, **fields) -> "MXNetObject":
        """A copy with some fields changed."""
        return MXNetObject(self.cls, {**self.fields, **fields})

    def __repr__(self):
        inner = ", ".join(f"{k}={v!r}" for k, v in self.fields.items())
        return f"MXNetObject({self.cls}: {inner})"


@dataclasses.dataclass(frozen=True)
class MXNetStates:
    """The contents of a ``.states`` file.

    ``states`` maps MXNet's parameter index to its optimizer state as MXNet keeps it:
    a NumPy array, a tuple of arrays (RMSProp: ``(n,)`` or ``(n, g, delta)``), a
    ``(float32 master weight, inner state)`` pair for ``multi_precision`` float16
    weights, or None. ``optimizer`` is the pickled optimizer
    (``dump_optimizer=True``, what Gluon's ``Trainer.save_states`` writes) or None.
    """
    states: Mapping[Union[int, str], Any]
    optimizer: Optional[MXNetObject] = None

    def __post_init__(self):
        if not isinstance(self.states, Mapping):
            raise TypeError(f"states must be a mapping of index -> state, got "
                            f"{type(self.states).__name__}")
        if self.optimizer is not None:
            if not isinstance(self.optimizer, MXNetObject):
                raise TypeError(f"optimizer must be an MXNetObject or None, got "
                                f"{type(self.optimizer).__name__}")
            if self.optimizer.cls not in OPTIMIZER_CLASSES:
                raise ValueError(f"optimizer must be an MXNet optimizer, got {self.optimizer.cls}")
        object.__setattr__(self, "states", types.MappingProxyType(dict(self.states)))


# --------------------------------------------------------------------------------------
# Restricted unpickling
# --------------------------------------------------------------------------------------

class _Stub:
    """Base of the stand-ins the restricted unpickler builds instead of real objects.
    Class-level defaults keep a stand-in created through NEWOBJ (which skips
    ``__init__``) in a well-defined, unbuilt state."""
    _qualname = "?"


class _NDArrayStub(_Stub):
    """Stands in for ``NDArray(None)``; ``__setstate__`` keeps the raw bytes, which
    the finalizer decodes."""
    built = False
    handle = None

    def __init__(self, *args):
        if args not in ((), (None,)):
            raise UnsafePickleError(f"{self._qualname} called with unexpected arguments")

    def __setstate__(self, state):
        if self.built:
            raise MXNetFormatError(f"{self._qualname} state set twice")
        if not isinstance(state, dict) or set(state) != {"handle"}:
            raise MXNetFormatError(f"{self._qualname} state must be {{'handle': bytes}}, got "
                                   f"a {type(state).__name__}")
        handle = state["handle"]
        if handle is not None and not isinstance(handle, (bytes, bytearray)):
            raise MXNetFormatError(f"{self._qualname} handle must be bytes, got a "
                                   f"{type(handle).__name__}")
        self.handle = handle
        self.built = True


class _ObjectStub(_Stub):
    """Stands in for an allowed MXNet class; ``__setstate__`` keeps its ``__dict__``."""
    fields = None

    def __init__(self, *args, **kwargs):
        if args or kwargs:
            raise UnsafePickleError(f"{self._qualname} called with arguments: MXNet "
                                    f"pickles these objects by state only")

    def __setstate__(self, state):
        if self.fields is not None:
            raise MXNetFormatError(f"{self._qualname} state set twice")
        if not isinstance(state, dict) or not all(isinstance(k, str) for k in state):
            raise MXNetFormatError(f"{self._qualname} state must be a dict of attributes, "
                                   f"got a {type(state).__name__}")
        self.fields = state


_SIMPLE_DTYPES = frozenset("b1 i1 u1 i2 u2 i4 u4 i8 u8 f2 f4 f8".split())


class _ScalarType:
    """Stands in for an extra scalar type (e.g. ``ml_dtypes.bfloat16``), only as a
    ``numpy.dtype`` spec."""

    def __init__(self, dtype: np.dtype):
        self.dtype = dtype

    def __call__(self, *args, **kwargs):
        raise UnsafePickleError(f"{self.dtype} may only appear as the spec of a numpy.dtype")


class _DTypeStub(_Stub):
    """Stands in for ``numpy.dtype(spec, align, copy)`` of a plain numeric dtype."""
    _qualname = "numpy.dtype"
    spec = None
    order = "="

    def __init__(self, spec=None, align=False, copy=True):
        if isinstance(spec, _ScalarType):
            spec = spec.dtype
        elif spec not in _SIMPLE_DTYPES:
            spec = None
        if spec is None or align is not False or copy is not True:
            raise UnsafePickleError(f"numpy.dtype{_short((spec, align, copy))} is not a plain "
                                    f"numeric dtype")
        self.spec = spec

    def __setstate__(self, state):
        if not isinstance(state, tuple) or len(state) < 2 or state[1] not in ("<", ">", "|", "="):
            raise MXNetFormatError(f"numpy.dtype state {_short(state)} is not understood")
        self.order = state[1]

    def resolve(self) -> np.dtype:
        if self.spec is None:
            raise MXNetFormatError("numpy.dtype without a type code")
        dt = np.dtype(self.spec)
        return dt if self.order in "|=" else dt.newbyteorder(self.order)


class _NumpyArrayStub(_Stub):
    """Stands in for ``numpy.core.multiarray._reconstruct(ndarray, (0,), b'b')``;
    ``__setstate__`` keeps ``(shape, dtype, fortran, bytes)`` for the finalizer."""
    _qualname = "numpy.ndarray"
    state = None

    def __setstate__(self, state):
        if (not isinstance(state, tuple) or len(state) != 5 or state[0] != 1
                or not isinstance(state[1], tuple) or not isinstance(state[2], _DTypeStub)
                or not isinstance(state[4], (bytes, bytearray)) or self.state is not None):
            raise MXNetFormatError("numpy array state is not understood")
        shape = state[1]
        if (len(shape) > _MAX_NDIM
                or not all(type(d) is int and d >= 0 for d in shape)):  # noqa: E721
            raise MXNetFormatError(f"numpy array with invalid shape {_short(shape)}")
        self.state = state[1:]


class _NumpyArrayMarker:
    """Stands in for the class ``numpy.ndarray``, only as _reconstruct's argument."""

    def __init__(self, *args, **kwargs):
        raise UnsafePickleError("numpy.ndarray may only appear as an argument of "
                                "numpy.core.multiarray._reconstruct")


def _short(obj) -> str:
    return reprlib.repr(obj)


def _stub_class(base, qualname: str):
    return type(qualname.rpartition(".")[2], (base,), {"_qualname": qualname})


@functools.lru_cache(maxsize=16)
def _allowed_globals(classes: frozenset, scalar_types: tuple):
    """``find_class``'s table: inert stand-ins for NDArrays, for each qualified class
    name in ``classes`` and for the ``(qualified name, dtype)`` pairs of
    ``scalar_types``."""
    table = {("collections", "OrderedDict"): collections.OrderedDict,
             ("numpy", "dtype"): _DTypeStub,
             ("numpy", "ndarray"): _NumpyArrayMarker}
    for qualname in _NDARRAY_CLASSES:
        table[tuple(qualname.rsplit(".", 1))] = _stub_class(_NDArrayStub, qualname)
    for qualname in classes:
        table[tuple(qualname.rsplit(".", 1))] = _stub_class(_ObjectStub, qualname)
    for qualname, dtype in scalar_types:
        table[tuple(qualname.rsplit(".", 1))] = _ScalarType(dtype)
    return table


_NUMPY_MODULES = ("numpy.core.multiarray", "numpy._core.multiarray")


class _RestrictedUnpickler(pickle.Unpickler):
    """``find_class`` is the only way a pickle reaches code; it hands out stand-ins
    and a few functions bound to this load (which charge the bytes they produce to
    a budget of the input's size, so shared references cannot amplify memory)."""

    def __init__(self, file, source, budget, allowed):
        super().__init__(file)
        self._source = source
        self._budget = budget
        self._allowed = allowed

    def find_class(self, module, name):
        key = (module, name)
        if key == ("builtins", "bytearray"):
            return self._bytearray
        if module in _NUMPY_MODULES and name == "scalar":
            return self._numpy_scalar
        if module in _NUMPY_MODULES and name == "_reconstruct":
            return self._numpy_reconstruct
        try:
            return self._allowed[key]
        except (KeyError, TypeError):
            raise UnsafePickleError(
                f"{self._source}: refusing to load {module}.{name}: a .states checkpoint "
                f"only refers to arrays, optimizers and LR schedulers") from None

    def persistent_load(self, pid):
        raise UnsafePickleError(f"{self._source}: refusing a persistent id in the pickle")

    def _bytearray(self, data=b""):
        # MXNet pickles an NDArray's bytes as bytearray(b'...'); keep the bytes as-is.
        if not isinstance(data, bytes):
            raise UnsafePickleError("bytearray called with something other than bytes")
        return data  # no copy, so nothing to charge

    def _numpy_scalar(self, dtype=None, data=None):
        if not isinstance(dtype, _DTypeStub) or not isinstance(data, bytes):
            raise UnsafePickleError("numpy scalar with an unexpected dtype or payload")
        dt = dtype.resolve()
        if len(data) != dt.itemsize:
            raise MXNetFormatError(f"numpy {dt} scalar with {len(data)} bytes")
        self._budget.charge(len(data))
        return np.frombuffer(data, dt)[0].astype(dt.newbyteorder("="))

    def _numpy_reconstruct(self, cls=None, shape=None, typecode=None):
        if cls is not _NumpyArrayMarker or shape != (0,) or typecode != b"b":
            raise UnsafePickleError("numpy _reconstruct with unexpected arguments")
        return _NumpyArrayStub()


class _Budget:
    """Bytes that decoding may still produce: at most the size of the input, which is
    all a genuine file ever needs (each array's bytes are stored once)."""

    def __init__(self, limit, source):
        self.left = limit
        self.source = source

    def charge(self, n):
        self.left -= n
        if self.left < 0:
            raise _fail(self.source, "the pickle reuses array payloads to expand beyond its "
                                     "own size (not an MXNet checkpoint)")


_SCALARS = (type(None), bool, int, float, complex, str, bytes, np.generic)


class _Finalizer:
    """Replace stand-ins by NumPy arrays and :class:`MXNetObject` records, keeping
    shared references shared (so a hostile DAG cannot blow up) and refusing cycles."""

    def __init__(self, source, budget):
        self.source = source
        self.budget = budget
        self.done = {}
        self.active = set()

    def __call__(self, obj, depth=0):
        if isinstance(obj, _SCALARS):
            return obj
        key = id(obj)
        if key in self.done:
            return self.done[key][1]
        if key in self.active:
            raise _fail(self.source, "the pickle holds a reference cycle, which an MXNet "
                                     "checkpoint never does")
        if depth > _MAX_DEPTH:
            raise _fail(self.source, f"the pickle nests deeper than {_MAX_DEPTH} levels")
        self.active.add(key)
        try:
            out = self._convert(obj, depth + 1)
        finally:
            self.active.discard(key)
        self.done[key] = (obj, out)  # keep obj alive so its id stays unique
        return out

    def _convert(self, obj, depth):
        if isinstance(obj, bytearray):
            return bytes(obj)
        if isinstance(obj, tuple):
            return tuple(self(x, depth) for x in obj)
        if isinstance(obj, list):
            return [self(x, depth) for x in obj]
        if isinstance(obj, (set, frozenset)):
            return frozenset(self._key(x, depth) for x in obj)
        if isinstance(obj, dict):  # includes OrderedDict
            return {self._key(k, depth): self(v, depth) for k, v in obj.items()}
        if isinstance(obj, _NDArrayStub):
            if not obj.built:
                raise _fail(self.source, f"a {obj._qualname} without state")
            if obj.handle is None:
                return None  # NDArray(None): MXNet's empty placeholder
            self.budget.charge(len(obj.handle))
            try:
                return decode_ndarray(obj.handle, source=f"pickled {obj._qualname}")
            except MXNetFormatError as e:
                raise _fail(self.source, str(e)) from None
        if isinstance(obj, _ObjectStub):
            if obj.fields is None:
                raise _fail(self.source, f"a {obj._qualname} without state")
            return MXNetObject(obj._qualname, {k: self(v, depth) for k, v in obj.fields.items()})
        if isinstance(obj, _DTypeStub):
            return obj.resolve()
        if isinstance(obj, _NumpyArrayStub):
            if obj.state is None:
                raise _fail(self.source, "a numpy array without state")
            shape, dtype, fortran, data = obj.state
            dt = dtype.resolve()
            if len(data) != math.prod(shape) * dt.itemsize:
                raise _fail(self.source, f"numpy array of shape {shape} and dtype {dt} with "
                                         f"{len(data)} bytes")
            self.budget.charge(len(data))
            arr = np.frombuffer(data, dt).reshape(shape, order="F" if fortran else "C")
            return np.array(arr, dtype=dt.newbyteorder("="), order="C")
        raise _fail(self.source, f"unexpected object of type {type(obj).__name__} in the pickle")

    def _key(self, k, depth):
        out = self(k, depth)
        try:
            hash(out)
        except TypeError:
            raise _fail(self.source, f"unhashable {type(out).__name__} used as a key") from None
        return out


def _prescan(data: bytes, source: str) -> None:
    """Walk the opcodes without executing them: every length the pickle declares
    must fit in the data (CPython allocates a declared bytes length before reading
    it), and nothing may follow STOP."""
    end = None
    try:
        for op, arg, pos in pickletools.genops(data):
            if op.name == "FRAME" and arg > len(data) - pos:
                raise _fail(source, f"pickle frame at offset {pos} claims {arg} bytes, more "
                                    f"than the data holds")
            if op.name == "STOP":
                end = pos + 1
    except MXNetFormatError:
        raise
    except Exception as e:  # ValueError for truncated arguments or unknown opcodes
        raise _fail(source, f"not a valid pickle ({e})") from None
    if end is None:
        raise _fail(source, "not a valid pickle (no STOP opcode)")
    if end != len(data):
        raise _fail(source, f"{len(data) - end} unexpected bytes after the end of the pickle")


def restricted_loads(data, source: str = "<bytes>", *,
                     classes: frozenset = MXNET_CLASSES,
                     scalar_types: Mapping[str, Any] = types.MappingProxyType({})) -> Any:
    """Unpickle a ``.states`` payload without running anything.

    Only these globals resolve, each to an inert stand-in: MXNet's ``NDArray`` (and
    ``mxnet.numpy.ndarray``), the classes named in ``classes`` (by default MXNet's
    optimizer and LR scheduler classes), ``bytearray``, ``collections.OrderedDict``,
    NumPy's scalar/array/dtype reconstructors for plain numeric dtypes and the
    scalar types of ``scalar_types`` (``{"ml_dtypes.bfloat16": dtype}``). Any other
    global (``os.system``, ``subprocess.Popen``, ``builtins.eval``, ...) raises
    :class:`UnsafePickleError` naming it, before anything is called. Returns plain
    containers, NumPy arrays for arrays and :class:`MXNetObject` records (``cls``
    being the qualified class name) for objects.

    Args:
      data: the pickle's bytes.
      source: names the input in error messages (a path, or a caller's name).
      classes: qualified names (``"module.QualName"``) of the classes whose objects
        the pickle may hold, each read as an :class:`MXNetObject` record.
      scalar_types: extra scalar types a ``numpy.dtype`` may be built from, by
        qualified name.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"data must be bytes, got {type(data).__name__}")
    data = bytes(data)
    _prescan(data, source)
    budget = _Budget(len(data), source)
    allowed = _allowed_globals(frozenset(classes), tuple(sorted(
        ((name, np.dtype(dtype)) for name, dtype in scalar_types.items()), key=lambda p: p[0])))
    unpickler = _RestrictedUnpickler(io.BytesIO(data), source, budget, allowed)
    try:
        obj = unpickler.load()
    except MXNetFormatError as e:
        if str(e).startswith(f"{source}: "):
            raise
        raise type(e)(f"{source}: {e}") from None
    except RecursionError:
        raise _fail(source, "the pickle nests too deeply") from None
    except MemoryError:
        raise _fail(source, "the pickle needs more memory than is available") from None
    except Exception as e:  # malformed pickles raise many types
        raise _fail(source, f"not a valid pickle ({type(e).__name__}: {_short(str(e))})") from None
    return _Finalizer(source, budget)(obj)


def states_payload(obj, source: str, optimizer_classes: frozenset = OPTIMIZER_CLASSES):
    """Check what :func:`restricted_loads` returned for a ``.states`` file and split
    it as ``Updater.set_states`` does: a 2-tuple is ``(states, optimizer)``,
    anything else is the states dict. Returns ``(states, optimizer record or None)``;
    the optimizer must be one of ``optimizer_classes``."""
    optimizer = None
    if isinstance(obj, tuple) and len(obj) == 2:
        obj, optimizer = obj
        if not isinstance(optimizer, MXNetObject) or optimizer.cls not in optimizer_classes:
            raise _fail(source, f"the second element of the (states, optimizer) pair is "
                                f"{_describe(optimizer)}, not an optimizer")
    if not isinstance(obj, dict):
        raise _fail(source, f"expected a dict of optimizer states (or a (states, optimizer) "
                            f"pair) as Updater.get_states writes, got {_describe(obj)}")
    for key, value in obj.items():
        if isinstance(key, bool) or not isinstance(key, (int, str)):
            raise _fail(source, f"state key {key!r} is not a parameter index (int or str)")
        _check_state_value(value, f"{source}: state {key!r}")
    return obj, optimizer


def loads_states(data, source: str = "<bytes>") -> MXNetStates:
    """A ``.states`` payload (``Updater.get_states`` / ``Trainer.save_states``) as an
    :class:`MXNetStates` record, read with :func:`restricted_loads`."""
    return MXNetStates(*states_payload(restricted_loads(data, source), source))


def _check_state_value(value, label, depth=0):
    if value is None or isinstance(value, np.ndarray):
        return
    if isinstance(value, (tuple, list)) and depth < 4:
        for i, v in enumerate(value):
            _check_state_value(v, f"{label}[{i}]", depth + 1)
        return
    raise MXNetFormatError(f"{label} is {_describe(value)}, not an array or a tuple of arrays")


def _describe(obj) -> str:
    if isinstance(obj, MXNetObject):
        return f"a {obj.cls} object"
    return f"a {type(obj).__name__}"


# --------------------------------------------------------------------------------------
# Writing pickles MXNet 1.9.1 loads
# --------------------------------------------------------------------------------------

class _PickleWriter:
    """A minimal protocol-3 pickle emitter for exactly the values a ``.states`` file
    holds, referring to MXNet's classes by name (MXNet need not be installed)."""

    def __init__(self):
        self.out = bytearray(b"\x80\x03")  # PROTO 3
        self.memo = {}
        self.keep = []

    def dump(self, obj) -> bytes:
        self.save(obj, 0)
        self.out += b"."  # STOP
        return bytes(self.out)

    def _global(self, qualname):
        module, name = qualname.rsplit(".", 1)
        self.out += b"c" + module.encode() + b"\n" + name.encode() + b"\n"

    def _put(self, obj):
        idx = len(self.memo)
        self.memo[id(obj)] = idx
        self.keep.append(obj)
        self.out += b"q" + bytes([idx]) if idx < 256 else b"r" + struct.pack("<I", idx)

    def save(self, obj, depth):
        if depth > _MAX_DEPTH:
            raise ValueError("structure nests too deeply to write")
        if id(obj) in self.memo:
            idx = self.memo[id(obj)]
            self.out += b"h" + bytes([idx]) if idx < 256 else b"j" + struct.pack("<I", idx)
            return
        if obj is None:
            self.out += b"N"
        elif obj is True or obj is False:
            self.out += b"\x88" if obj else b"\x89"
        elif isinstance(obj, np.bool_):
            self.save(bool(obj), depth)
        elif isinstance(obj, (int, np.integer)):
            v = int(obj)
            if 0 <= v < 256:
                self.out += b"K" + bytes([v])
            elif -2 ** 31 <= v < 2 ** 31:
                self.out += b"J" + struct.pack("<i", v)
            else:
                raw = v.to_bytes((v.bit_length() + 8) // 8, "little", signed=True)
                if len(raw) > 255:
                    raise ValueError(f"integer {v} too large to write")
                self.out += b"\x8a" + bytes([len(raw)]) + raw
        elif isinstance(obj, (float, np.floating)):
            self.out += b"G" + struct.pack(">d", float(obj))
        elif isinstance(obj, str):
            raw = obj.encode("utf-8")
            self.out += b"X" + struct.pack("<I", len(raw)) + raw
        elif isinstance(obj, tuple):
            if not obj:
                self.out += b")"
                return
            self.out += b"("
            for x in obj:
                self.save(x, depth + 1)
            self.out += b"t"
        elif isinstance(obj, list):
            self.out += b"]"
            self._put(obj)
            if obj:
                self.out += b"("
                for x in obj:
                    self.save(x, depth + 1)
                self.out += b"e"
        elif isinstance(obj, Mapping):
            self.out += b"}"
            self._put(obj)
            if obj:
                self.out += b"("
                for k, v in obj.items():
                    self.save(k, depth + 1)
                    self.save(v, depth + 1)
                self.out += b"u"
        elif isinstance(obj, np.ndarray):
            # NDArray.__reduce__: (NDArray, (None,), {'handle': bytearray(raw bytes)})
            self._global("mxnet.ndarray.ndarray.NDArray")
            self.out += b"N\x85R"
            raw = encode_ndarray(obj, label="state array")
            self.out += b"}X" + struct.pack("<I", 6) + b"handle"
            self._global("builtins.bytearray")
            self.out += b"B" + struct.pack("<I", len(raw)) + raw + b"\x85R"
            self.out += b"sb"
        elif isinstance(obj, MXNetObject):
            if obj.cls not in OPTIMIZER_CLASSES | SCHEDULER_CLASSES:
                raise ValueError(f"cannot write a {obj.cls}: only MXNet optimizers and LR "
                                 f"schedulers")
            self._global(obj.cls)
            self.out += b")\x81"  # EMPTY_TUPLE NEWOBJ
            self.save(dict(obj.fields), depth + 1)
            self.out += b"b"
        else:
            raise TypeError(f"cannot write a {type(obj).__name__} into an MXNet .states file")


def dumps_states(states: MXNetStates) -> bytes:
    """The bytes of a ``.states`` file MXNet 1.9.1 loads with ``Updater.set_states`` /
    Gluon ``Trainer.load_states``: the pair ``(states, optimizer)`` when
    ``states.optimizer`` is set (as ``Trainer.save_states`` writes), else the
    states dict alone. Arrays become NDArrays on cpu(0) (format v2)."""
    if not isinstance(states, MXNetStates):
        raise TypeError(f"states must be an MXNetStates, got {type(states).__name__}")
    for key in states.states:
        if isinstance(key, bool) or not isinstance(key, (int, str)):
            raise TypeError(f"state keys must be parameter indices (int or str), got {key!r}")
        _check_state_value(states.states[key], f"state {key!r}")
    payload = dict(states.states)
    if states.optimizer is not None:
        # Shared references (MXNet aliases _index_update_count to an entry of
        # _all_index_update_counts) stay shared: the writer memoizes dicts by identity.
        return _PickleWriter().dump((payload, states.optimizer))
    return _PickleWriter().dump(payload)


# --------------------------------------------------------------------------------------
# MXNet's optimizers: how each keeps its state and hyperparameters
# --------------------------------------------------------------------------------------

class OptimizerFormat(NamedTuple):
    """How one MXNet 1.9.1 optimizer class is laid out in a ``.states`` file, and
    which mxopt functional form continues it. One entry of :data:`OPTIMIZER_FORMATS`
    per class; adding an optimizer to the interop is adding its entry.

    Attributes:
      alias: the :mod:`mxopt.alias` function, e.g. ``"adam"``.
      states: the names of that function's state NamedTuples in :mod:`mxopt.alias`
        (``SGDState`` with momentum, ``SGDNoMomentumState`` without). Their fields
        after ``count`` (less ``carry``) are MXNet's state arrays, in MXNet's order.
      own: ``(alias keyword, MXNet attribute, constructor default)`` of the
        class's own hyperparameters, in the constructor's order (a fresh record
        has the attributes in this order after the base class's).
      learning_rate: the constructor's default ``learning_rate``; None where the
        class leaves it to the base class (0.01 there, None with a scheduler).
      bare: MXNet keeps a single state array bare, not in a 1-tuple (SGD's
        ``mom``, AdaGrad's ``history``; RMSProp keeps ``(n,)``). A state of no
        arrays is None whatever this says (SGD without momentum, SGLD).
      master_last: under ``multi_precision`` a float16 weight's state is
        ``(state, float32 master)`` (MXNet's fused SGD/NAG kernels) instead of the
        base class's ``(float32 master, state)``.
      python_clip: ``clip_gradient`` clips whenever it is not None, so 0 clips to
        0 (MXNet's Python-side optimizers); else only when truthy (kernels).
      clip_bounds: own attributes that are kernel clip bounds (truthy and >= 0
        clips; anything else is off).
      scheduler_takes_lr: ``Optimizer.__init__`` got ``learning_rate`` and so
        overwrote a scheduler's ``base_lr`` with it (not Ftrl, which sets ``lr``
        after the base class).
      uses_count: the arithmetic reads the per-parameter update count ``t``
        (bias corrections), so parameters with different counts cannot share
        one mxopt count even without a scheduler.
      carry: ``{alias state field: MXNet attribute}`` of optimizer-wide scalars
        the state carries (Nadam's ``m_schedule``, LARS's ``cur_lr``; an
        attribute's None is a NaN in the state).
      aggregate_num: what the constructor sets ``aggregate_num`` to (SGD: 4,
        ``MXNET_OPTIMIZER_AGGREGATION_SIZE``'s default).
      module: the module that defines the class (GroupAdaGrad's is
        ``mxnet.optimizer.contrib``).
      none_slots: positions of MXNet's state tuple that always hold None, which
        no state field stands for (DCASGD's momentum-free ``(None, w_prev)``).
      counts: the class counts its updates; False (Test) leaves ``num_update``
        and the per-index counts at the record's on export, as MXNet leaves them.
      integers: own attributes that are ints (LBSGD's epochs and scales); the
        others are reals, bools, strings (``warmup_strategy``) or dicts, by
        their default.
      caller: state fields MXNet has no counterpart for, given by the caller on
        resume under the alias keyword of the same name and dropped on export
        (SGLD's PRNG ``key``: MXNet draws from its global generator).
      cumgrads: the class keeps per-index gradient sums on the optimizer, as
        MXNet's LBSGD: ``cumgrads = {index: {'cum_grad': array, or 0 after an
        update, 'num_cums': calls}}``, which are the state's ``cum_grad`` and
        ``num_cums`` (no entry: no call yet, ``num_cums`` is ``init_updates``).
      restore: the mxopt constructor arguments MXNet keeps no attribute for,
        from the record's fields (LBSGD's ``begin_epoch``, of ``init_updates``).
      restored: the names of those arguments (what ``restore`` returns), which
        the mxopt class keeps as attributes of the same name.
      name_rule: the arithmetic reads parameter names (LARS keeps the rate of
        names ending in ``gamma``/``beta``/``bias``): MXNet's are ``idx2name``'s,
        else ``str(index)`` (a Gluon Trainer gives none), mxopt's the leaf
        names, and a resume needs them to agree.
    """
    alias: str
    states: Tuple[str, ...]
    own: Tuple[Tuple[str, str, Any], ...]
    learning_rate: Optional[float] = None
    bare: bool = False
    master_last: bool = False
    python_clip: bool = False
    clip_bounds: Tuple[str, ...] = ()
    scheduler_takes_lr: bool = True
    uses_count: bool = False
    carry: Tuple[Tuple[str, str], ...] = ()
    aggregate_num: int = 0
    module: str = _OPTIMIZER_MODULE
    none_slots: Tuple[int, ...] = ()
    counts: bool = True
    integers: Tuple[str, ...] = ()
    caller: Tuple[str, ...] = ()
    cumgrads: bool = False
    restore: Optional[Callable[[Mapping[str, Any]], dict]] = None
    restored: Tuple[str, ...] = ()
    name_rule: bool = False

    # The layout rules, written once for the class form (mxopt.facade) and the
    # interop: where the None slots, a bare array and the master go.

    def slots(self, names: Sequence[Any]) -> list:
        """MXNet's state tuple of the buffers ``names``: None where ``none_slots``
        say (DCASGD's ``(None, weight_previous)``)."""
        slots = list(names)
        for k in self.none_slots:
            slots.insert(k, None)
        return slots

    def entry(self, arrays: Sequence[Any], master: Any = None) -> Any:
        """MXNet's state entry of the buffers ``arrays``: None for no slot, a single
        slot bare where ``bare``, else the tuple of :meth:`slots`; with a float32
        ``master`` (multi_precision), paired with it in MXNet's order
        (``master_last``)."""
        slots = self.slots(arrays)
        inner = (None if not slots else slots[0] if self.bare and len(slots) == 1
                 else tuple(slots))
        if master is None:
            return inner
        return (inner, master) if self.master_last else (master, inner)

    def split(self, entry: Any, count: int,
              is_array: Callable[[Any], bool]) -> Optional[Tuple[Any, ...]]:
        """The ``count`` buffers of an entry laid out as :meth:`entry` lays them
        (without a master), or None where it is laid out otherwise."""
        slots = self.slots(range(count))
        if not slots:
            return () if entry is None else None
        if self.bare and len(slots) == 1:
            return (entry,) if is_array(entry) else None
        if (not isinstance(entry, (tuple, list)) or len(entry) != len(slots)
                or not all(a is None if k is None else is_array(a)
                           for k, a in zip(slots, entry))):
            return None
        return tuple(a for k, a in zip(slots, entry) if k is not None)

    def split_master(self, entry: Any) -> Optional[Tuple[Any, Any]]:
        """``(master, inner entry)`` of a multi_precision entry, or None where it
        is no pair."""
        if not (isinstance(entry, (tuple, list)) and len(entry) == 2):
            return None
        return (entry[1], entry[0]) if self.master_last else (entry[0], entry[1])

    def layout(self, names: Sequence[str], with_master: bool = False) -> str:
        """:meth:`entry` of the buffers ``names``, in words."""
        slots = ["None" if n is None else n for n in self.slots(names)]
        if not slots:
            inner = "None"
        elif self.bare and len(slots) == 1:
            inner = f"the array {slots[0]}"
        else:
            inner = "(" + ", ".join(slots) + (",)" if len(slots) == 1 else ")")
        if not with_master:
            return inner
        pair = (inner, "float32 master") if self.master_last else ("float32 master", inner)
        return f"({pair[0]}, {pair[1]})"


def _lbsgd_restore(fields: Mapping[str, Any]) -> dict:
    """LBSGD's ``begin_epoch``: MXNet keeps only ``init_updates = begin_epoch *
    updates_per_epoch``."""
    init, per_epoch = fields.get("init_updates"), fields.get("updates_per_epoch")
    for name, value in (("init_updates", init), ("updates_per_epoch", per_epoch)):
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
            raise ValueError(f"the optimizer's {name} is {_short(value)}, not an integer")
    if init and (not per_epoch or init % per_epoch):
        raise ValueError(f"the optimizer's init_updates {init} is not begin_epoch * "
                         f"updates_per_epoch ({per_epoch}) for an integer begin_epoch")
    return dict(begin_epoch=int(init // per_epoch) if init else 0)


OPTIMIZER_FORMATS = types.MappingProxyType({
    "RMSProp": OptimizerFormat(
        "rmsprop", ("RMSPropState", "CenteredRMSPropState"),
        (("gamma1", "gamma1", 0.9), ("gamma2", "gamma2", 0.9), ("centered", "centered", False),
         ("epsilon", "epsilon", 1e-8), ("clip_weights", "clip_weights", None)),
        learning_rate=0.001, clip_bounds=("clip_weights",)),
    "SGD": OptimizerFormat(
        "sgd", ("SGDState", "SGDNoMomentumState"),
        (("momentum", "momentum", 0.0), ("lazy_update", "lazy_update", True)),
        bare=True, master_last=True, aggregate_num=4),
    "NAG": OptimizerFormat("nag", ("NAGState", "NAGNoMomentumState"),
                           (("momentum", "momentum", 0.0),), bare=True, master_last=True),
    "Signum": OptimizerFormat("signum", ("SignumState", "SignSGDState"),
                              (("momentum", "momentum", 0.9), ("wd_lh", "wd_lh", 0.0)),
                              learning_rate=0.01, bare=True),
    "AdaGrad": OptimizerFormat("adagrad", ("AdaGradState",),
                               (("eps", "float_stable_eps", 1e-7),), bare=True,
                               python_clip=True),
    "AdaDelta": OptimizerFormat("adadelta", ("AdaDeltaState",),
                                (("rho", "rho", 0.9), ("epsilon", "epsilon", 1e-5)),
                                python_clip=True),
    "Adam": OptimizerFormat(
        "adam", ("AdamState",),
        (("beta1", "beta1", 0.9), ("beta2", "beta2", 0.999), ("epsilon", "epsilon", 1e-8),
         (None, "lazy_update", True)),
        learning_rate=0.001, uses_count=True),
    "Adamax": OptimizerFormat("adamax", ("AdamaxState",),
                              (("beta1", "beta1", 0.9), ("beta2", "beta2", 0.999)),
                              learning_rate=0.002, python_clip=True, uses_count=True),
    "Nadam": OptimizerFormat(
        "nadam", ("NadamState",),
        (("beta1", "beta1", 0.9), ("beta2", "beta2", 0.999), ("epsilon", "epsilon", 1e-8),
         ("schedule_decay", "schedule_decay", 0.004), (None, "m_schedule", 1.0)),
        learning_rate=0.001, python_clip=True, uses_count=True,
        carry=(("m_schedule", "m_schedule"),)),
    "Ftrl": OptimizerFormat("ftrl", ("FtrlState",),
                            (("lamda1", "lamda1", 0.01), ("beta", "beta", 1)),
                            learning_rate=0.1, scheduler_takes_lr=False),
    "FTML": OptimizerFormat(
        "ftml", ("FTMLState",),
        (("beta1", "beta1", 0.6), ("beta2", "beta2", 0.999), ("epsilon", "epsilon", 1e-8)),
        uses_count=True),
    # LARS's cur_lr (the momentum correction's last base rate; None before the
    # first step) is the functional state's last_lr (NaN for None).
    "LARS": OptimizerFormat(
        "lars", ("LARSState", "LARSNoMomentumState"),
        (("momentum", "momentum", 0.0), ("momentum_correction", "momentum_correction", True),
         ("lazy_update", "lazy_update", True), ("eta", "eta", 0.001), ("eps", "eps", 0),
         (None, "skip", 0), (None, "last_lr", None), (None, "cur_lr", None)),
        bare=True, master_last=True, aggregate_num=4, carry=(("last_lr", "cur_lr"),),
        name_rule=True),
    "LAMB": OptimizerFormat(
        "lamb", ("LAMBState",),
        (("beta1", "beta1", 0.9), ("beta2", "beta2", 0.999), ("epsilon", "epsilon", 1e-6),
         ("lower_bound", "lower_bound", None), ("upper_bound", "upper_bound", None),
         ("bias_correction", "bias_correction", True)),
        # Passed to the kernel only when truthy, applied only when >= 0: as clip bounds.
        learning_rate=0.001, clip_bounds=("lower_bound", "upper_bound"), uses_count=True,
        aggregate_num=45),
    # MXNet's ccSGD is SGD under a deprecated name: mxopt.sgd (mxopt.ccsgd's
    # replacement, without its warning) continues it.
    "ccSGD": OptimizerFormat(
        "sgd", ("SGDState", "SGDNoMomentumState"),
        (("momentum", "momentum", 0.0), ("lazy_update", "lazy_update", True)),
        bare=True, master_last=True, aggregate_num=4),
    "Test": OptimizerFormat("test_optimizer", ("MXNetTestState",), (), bare=True,
                            counts=False),
    "DCASGD": OptimizerFormat(
        "dcasgd", ("DCASGDState",),
        (("momentum", "momentum", 0.0), (None, "weight_previous", {}), ("lamda", "lamda", 0.04)),
        python_clip=True, none_slots=(0,)),
    "SGLD": OptimizerFormat("sgld", ("SGLDState",), (), python_clip=True, caller=("key",)),
    "GroupAdaGrad": OptimizerFormat(
        "groupadagrad", ("GroupAdaGradState",), (("eps", "float_stable_eps", 1e-5),),
        bare=True, python_clip=True, module="mxnet.optimizer.contrib"),
    "LBSGD": OptimizerFormat(
        "lbsgd", ("LBSGDState", "LBSGDNoMomentumState"),
        (("momentum", "momentum", 0.0), ("warmup_strategy", "warmup_strategy", "linear"),
         ("warmup_epochs", "warmup_epochs", 5), ("batch_scale", "batch_scale", 1),
         ("updates_per_epoch", "updates_per_epoch", 32), (None, "init_updates", 0),
         ("num_epochs", "num_epochs", 60), (None, "lbmult", 1), (None, "cumgrads", {}),
         (None, "adaptive", False), (None, "admult", 1)),
        bare=True, integers=("warmup_epochs", "batch_scale", "updates_per_epoch",
                             "init_updates", "num_epochs", "lbmult", "admult"),
        cumgrads=True, restore=_lbsgd_restore, restored=("begin_epoch",)),
})


def optimizer_format(optimizer, what: str = "optimizer") -> OptimizerFormat:
    """The :class:`OptimizerFormat` of an MXNet optimizer record; TypeError or
    ValueError (naming ``what`` and the optimizers mxopt converts) otherwise."""
    if not isinstance(optimizer, MXNetObject):
        raise TypeError(f"{what} must be an MXNetObject (the optimizer of a .states file, "
                        f"or optimizer_record(...)), got {type(optimizer).__name__}")
    fmt = OPTIMIZER_FORMATS.get(optimizer.name)
    if fmt is None or optimizer.cls != f"{fmt.module}.{optimizer.name}":
        raise ValueError(f"{what} is a {optimizer.cls}; mxopt converts the MXNet optimizers "
                         f"{', '.join(sorted(OPTIMIZER_FORMATS))}")
    return fmt


def _real_or_none(name, value):
    if value is not None and (isinstance(value, bool)
                              or not isinstance(value, (int, float, np.floating, np.integer))):
        raise TypeError(f"{name} must be a real number or None, got {value!r}")
    return None if value is None else float(value)


def optimizer_record(name: str, *, learning_rate: Optional[float] = None, wd: float = 0.0,
                     rescale_grad: float = 1.0, clip_gradient: Optional[float] = None,
                     multi_precision: bool = False, lr_scheduler: Optional[MXNetObject] = None,
                     begin_num_update: int = 0, num_update: Optional[int] = None,
                     index_update_counts: Optional[Mapping[Union[int, str], int]] = None,
                     **own) -> MXNetObject:
    """The ``__dict__`` that ``mx.optimizer.<name>(...)`` has in MXNet 1.9.1 (what
    its ``__getstate__`` pickles), after ``num_update`` updates counted per index
    in ``index_update_counts``.

    Args:
      name: the class name, a key of :data:`OPTIMIZER_FORMATS` (``"Adam"``).
      learning_rate: None for the class's default (or, as MXNet, no rate with a
        scheduler where the class defaults to the base class's).
      wd, rescale_grad, clip_gradient, multi_precision, begin_num_update: the
        base class's arguments.
      lr_scheduler: an MXNet LR scheduler record, stored as given (a new MXNet
        optimizer would set its ``base_lr`` to ``learning_rate``; a scheduler
        read from a checkpoint has moved on from there, so it is left alone).
      num_update, index_update_counts: the update counts (default: none yet).
      **own: the class's own constructor arguments by MXNet's name
        (``momentum``, ``beta1``, ``eps``, ...); the others take MXNet's defaults.
    """
    fmt = OPTIMIZER_FORMATS.get(name)
    if fmt is None:
        raise ValueError(f"unknown optimizer {name!r}; mxopt converts "
                         f"{', '.join(sorted(OPTIMIZER_FORMATS))}")
    params = {"eps" if field == "float_stable_eps" else field: default
              for _, field, default in fmt.own if field != "m_schedule"}
    unknown = sorted(set(own) - set(params))
    if unknown:
        raise TypeError(f"mx.optimizer.{name} has no argument {unknown[0]!r}; its own "
                        f"arguments are {sorted(params)}")
    defaults = dict(params)
    params.update(own)
    for key, value in params.items():
        params[key] = _own_value(fmt, key, defaults[key], value)
    for key, value in (("wd", wd), ("rescale_grad", rescale_grad)):
        if _real_or_none(key, value) is None:
            raise TypeError(f"{key} must be a real number, got None")
    if lr_scheduler is not None and (not isinstance(lr_scheduler, MXNetObject)
                                     or lr_scheduler.cls not in SCHEDULER_CLASSES):
        raise TypeError(f"lr_scheduler must be an MXNet LR scheduler record, got {lr_scheduler!r}")
    lr = _real_or_none("learning_rate", learning_rate if learning_rate is not None
                       else fmt.learning_rate)
    if lr is None and lr_scheduler is None:
        lr = 0.01  # the base class's default
    counts = {} if index_update_counts is None else dict(index_update_counts)
    if num_update is None:
        num_update = max([int(begin_num_update), *counts.values()])
    fields = {
        "rescale_grad": float(rescale_grad),
        "lr_scheduler": lr_scheduler,
        "lr": lr,
        "wd": float(wd),
        "lr_mult": {},
        "wd_mult": {},
        "begin_num_update": int(begin_num_update),
        "num_update": int(num_update),
        "_all_index_update_counts": {0: counts},
        "_index_update_count": counts,
        "clip_gradient": _real_or_none("clip_gradient", clip_gradient),
        "multi_precision": bool(multi_precision),
        "aggregate_num": fmt.aggregate_num,
        "idx2name": {},
        "sym_info": (),
        "allow_np_array": False,
    }
    for _, field, default in fmt.own:
        fields[field] = default if field == "m_schedule" else params[
            "eps" if field == "float_stable_eps" else field]
    if name == "Ftrl" and learning_rate is None:
        fields["lr"] = fmt.learning_rate  # Ftrl sets lr itself, scheduler or not
    return MXNetObject(f"{fmt.module}.{name}", fields)


def _own_value(fmt: OptimizerFormat, key: str, default: Any, value: Any) -> Any:
    """An own constructor argument as MXNet stores it, typed by its default."""
    if key in fmt.integers:
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
            raise TypeError(f"{key} must be an int, got {value!r}")
        return int(value)
    if isinstance(default, bool) or key in ("centered", "lazy_update"):
        if not isinstance(value, (bool, np.bool_)):
            raise TypeError(f"{key} must be a bool, got {value!r}")
        return bool(value)
    if isinstance(default, (str, dict)):
        if not isinstance(value, type(default)):
            raise TypeError(f"{key} must be a {type(default).__name__}, got {value!r}")
        return dict(value) if isinstance(value, dict) else value
    if isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)):
        return int(value)  # as MXNet keeps what it was given (LARS's eps=0, Ftrl's beta=1)
    return _real_or_none(key, value)


_SCHEDULER_OWN = {
    "FactorScheduler": lambda kw: dict(step=kw["step"], factor=kw.get("factor", 1),
                                       stop_factor_lr=kw.get("stop_factor_lr", 1e-8),
                                       count=0),
    "MultiFactorScheduler": lambda kw: dict(step=list(kw["step"]), cur_step_ind=0,
                                            factor=kw.get("factor", 1), count=0),
    "PolyScheduler": lambda kw: dict(power=kw.get("pwr", 2), base_lr_orig=kw.get("base_lr", 0.01),
                                     max_update=kw["max_update"], final_lr=kw.get("final_lr", 0),
                                     max_steps=kw["max_update"] - kw.get("warmup_steps", 0)),
    "CosineScheduler": lambda kw: dict(base_lr_orig=kw.get("base_lr", 0.01),
                                       max_update=kw["max_update"],
                                       final_lr=kw.get("final_lr", 0),
                                       max_steps=kw["max_update"] - kw.get("warmup_steps", 0)),
}


def scheduler_record(name: str, **kwargs) -> MXNetObject:
    """The ``__dict__`` of a freshly built ``mx.lr_scheduler.<name>(**kwargs)`` in
    MXNet 1.9.1 (checked against MXNet by tools/make_golden_interop_family.py).

    MXNet's schedulers mutate as they are called, but each catches up from its
    fresh state when first called with a later update number (FactorScheduler
    and MultiFactorScheduler loop over the steps passed; Poly and Cosine are
    functions of the number), so a fresh record continues a run at any count.

    Args:
      name: ``"FactorScheduler"``, ``"MultiFactorScheduler"``, ``"PolyScheduler"``
        or ``"CosineScheduler"``.
      **kwargs: the constructor's arguments, by MXNet's names.
    """
    own = _SCHEDULER_OWN.get(name)
    if own is None:
        raise ValueError(f"unknown LR scheduler {name!r}; MXNet's are "
                         f"{', '.join(sorted(_SCHEDULER_OWN))}")
    base_lr = kwargs.get("base_lr", 0.01)
    fields = dict(base_lr=base_lr, warmup_steps=kwargs.get("warmup_steps", 0),
                  warmup_final_lr=base_lr, warmup_begin_lr=kwargs.get("warmup_begin_lr", 0),
                  warmup_mode=kwargs.get("warmup_mode", "linear"))
    fields.update(own(kwargs))
    return MXNetObject(f"mxnet.lr_scheduler.{name}", fields)


def rmsprop_optimizer(*, learning_rate: float = 0.001, gamma1: float = 0.9,
                      gamma2: float = 0.9, epsilon: float = 1e-8, centered: bool = False,
                      clip_weights: Optional[float] = None, wd: float = 0.0,
                      rescale_grad: float = 1.0, clip_gradient: Optional[float] = None,
                      multi_precision: bool = False,
                      lr_scheduler: Optional[MXNetObject] = None,
                      begin_num_update: int = 0, num_update: Optional[int] = None,
                      index_update_counts: Optional[Mapping[Union[int, str], int]] = None
                      ) -> MXNetObject:
    """:func:`optimizer_record` of ``"RMSProp"`` (its arguments are all numbers)."""
    for name, value in (("learning_rate", learning_rate), ("gamma1", gamma1),
                        ("gamma2", gamma2), ("epsilon", epsilon), ("wd", wd),
                        ("rescale_grad", rescale_grad)):
        if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
            raise TypeError(f"{name} must be a real number, got {value!r}")
    return optimizer_record(
        "RMSProp", learning_rate=learning_rate, gamma1=gamma1, gamma2=gamma2, epsilon=epsilon,
        centered=centered, clip_weights=clip_weights, wd=wd, rescale_grad=rescale_grad,
        clip_gradient=clip_gradient, multi_precision=multi_precision, lr_scheduler=lr_scheduler,
        begin_num_update=begin_num_update, num_update=num_update,
        index_update_counts=index_update_counts)


# --------------------------------------------------------------------------------------
# Reading an optimizer record's fields
# --------------------------------------------------------------------------------------

def check_rmsprop(optimizer, what: str = "optimizer") -> None:
    """Raise unless ``optimizer`` is an MXNet RMSProp record."""
    if not isinstance(optimizer, MXNetObject):
        raise TypeError(f"{what} must be an MXNetObject (the optimizer of a .states file, "
                        f"or rmsprop_optimizer(...)), got {type(optimizer).__name__}")
    if optimizer.cls != RMSPROP_CLASS:
        raise ValueError(f"{what} is a {optimizer.cls}; mxopt converts {RMSPROP_CLASS} only "
                         f"here (mxopt.interop.resume converts every optimizer)")


def real_field(optimizer: MXNetObject, field: str, value: Any = None, *,
               allow_none: bool = False) -> Optional[float]:
    """``optimizer[field]`` (or ``value``, labelled as that field) as a finite float;
    ValueError naming the field otherwise."""
    value = optimizer.get(field) if value is None else value
    if value is None and allow_none:
        return None
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Real, np.integer,
                                                                    np.floating)):
        raise ValueError(f"the optimizer's {field} is {_short(value)}, not a real number")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"the optimizer's {field} is {value!r}, not finite")
    return value


def clip_bound(optimizer: MXNetObject, field: str) -> Optional[float]:
    """A clip bound as MXNet applies it: MXNet passes a bound only when truthy, and its
    kernels clip only when it is >= 0, so None, 0 and negative bounds are "off"."""
    value = real_field(optimizer, field, allow_none=True)
    return None if value is None or value <= 0 else value
