"""Read a state dict from a ``torch.save`` file, a ``.safetensors`` file or an ``.npz``, with NumPy only.

Design
------
* **The format is decided by the content**, never by the extension:

  - a zip archive holding ``<dir>/data.pkl`` is a ``torch.save`` file (the
    default format since PyTorch 1.6): a pickle of the object graph, one raw
    record ``<dir>/data/<key>`` per storage and a ``<dir>/byteorder`` record;
  - a zip archive holding only ``*.npy`` members is an ``.npz``;
  - a pickle starting with PyTorch's magic number is the legacy
    (``_use_new_zipfile_serialization=False``) ``torch.save`` format: five
    pickles (magic number, protocol, system information, the object graph, the
    storage keys) followed by each storage as an int64 element count and its
    raw bytes;
  - an 8-byte little-endian length followed by a JSON object is a
    ``.safetensors`` file.

* **No code from the file runs.** Pickles are read by :class:`_Unpickler`,
  whose ``find_class`` maps the few globals a tensor state dict needs to
  private stand-ins defined here (it never imports a module, so torch is
  neither needed nor called), and raises :class:`UnsafeCheckpointError` for
  any other global *when the pickle names it*, before the opcode that would
  call it. The stand-ins build inert ``_Tensor`` records; arrays are made from
  the raw storages only after the pickle has been read. Extension-registry
  opcodes (``EXT1/2/4``), which can bypass ``find_class`` through the
  process-wide cache, are refused by a scan of the opcodes before loading.

* **Tensors are copied out of their storage.** A tensor is (storage, offset,
  size, stride) in elements; it is checked to lie inside its storage, viewed
  with ``numpy.lib.stride_tricks.as_strided`` and copied into a new
  C-contiguous array, so transposed, sliced, expanded and shared-storage
  tensors come out with their values, each in its own memory.

* **dtypes**: float16 and bfloat16 are upcast to float32 (fastconv's kernels
  compute in float32 and float64); float32, float64, complex, signed and
  unsigned integers and bool are kept. Every array is in native byte order.

* **Every problem with the file is a ValueError** naming the path and what is
  wrong; a refused global is an :class:`UnsafeCheckpointError`, which is also a
  ``ValueError`` (and a ``pickle.UnpicklingError``).
"""

import collections
import io
import json
import math
import mmap
import os
import pickle
import pickletools
import warnings
import zipfile
import zlib

import numpy as np

__all__ = ["load", "UnsafeCheckpointError", "STATE_DICT_KEYS"]

#: Entries searched, in this order, for the state dict when a pickled
#: checkpoint's top level is a dict that is not itself a flat dict of tensors.
STATE_DICT_KEYS = ("state_dict", "model_state_dict", "model", "module", "net", "network")

_TORCH_MAGIC = 0x1950A86A20F9469CFC6C
_TORCH_PROTOCOL = 1001
_MAX_SAFETENSORS_HEADER = 100_000_000  # the safetensors library's own limit


class UnsafeCheckpointError(pickle.UnpicklingError, ValueError):
    """A pickled checkpoint names a global that :func:`fastconv.load` does not accept.

    It is raised by the restricted unpickler when the pickle *names* the global
    (``GLOBAL``/``STACK_GLOBAL``/``INST``/``OBJ``), which precedes any opcode that
    could call it, so nothing from the file has run. It is a ``ValueError``, like
    every other problem :func:`fastconv.load` finds in a file, and a
    ``pickle.UnpicklingError``, like PyTorch's ``weights_only=True`` refusals.

    Examples
    --------
    >>> import pickle
    >>> from fastconv import UnsafeCheckpointError
    >>> issubclass(UnsafeCheckpointError, ValueError)
    True
    >>> issubclass(UnsafeCheckpointError, pickle.UnpicklingError)
    True
    """


class _Invalid(ValueError):
    """What the stand-ins find wrong in a pickle; re-raised as a ValueError naming the file."""


def _fail(path, what):
    return ValueError(f"Cannot load {path}: {what}")


# -- dtypes ------------------------------------------------------------------

class _DType:
    """A tensor element type: its storage dtype (little-endian) and a name.

    ``bfloat16`` has no NumPy dtype: it is stored as ``uint16`` and widened
    to float32 by putting its 16 bits above 16 zero bits.
    """

    __slots__ = ("name", "storage")

    def __init__(self, name, storage):
        self.name = name
        self.storage = np.dtype(storage)

    def __setstate__(self, state):
        raise UnsafeCheckpointError("Expected no state for a dtype, got a BUILD opcode")

    def __repr__(self):
        return f"torch.{self.name}"


_DTYPES = {name: _DType(name, storage) for name, storage in [
    ("float64", "<f8"), ("float32", "<f4"), ("float16", "<f2"), ("bfloat16", "<u2"),
    ("complex128", "<c16"), ("complex64", "<c8"),
    ("int64", "<i8"), ("int32", "<i4"), ("int16", "<i2"), ("int8", "i1"),
    ("uint64", "<u8"), ("uint32", "<u4"), ("uint16", "<u2"), ("uint8", "u1"),
    ("bool", "u1"),
]}
_DTYPE_ALIASES = {"float": "float32", "double": "float64", "half": "float16", "long": "int64",
                  "int": "int32", "short": "int16", "cfloat": "complex64",
                  "cdouble": "complex128"}

# torch.<Name>Storage -> element type (the legacy typed storages torch still
# writes in every checkpoint); quantized storages are left out on purpose.
_STORAGES = {
    "DoubleStorage": "float64", "FloatStorage": "float32", "HalfStorage": "float16",
    "BFloat16Storage": "bfloat16", "ComplexDoubleStorage": "complex128",
    "ComplexFloatStorage": "complex64", "LongStorage": "int64", "IntStorage": "int32",
    "ShortStorage": "int16", "CharStorage": "int8", "ByteStorage": "uint8",
    "BoolStorage": "bool", "UntypedStorage": "uint8",
}


def _to_array(view, dtype):
    """Copy a (strided) storage view into a new native, C-contiguous array."""
    if dtype.name == "bfloat16":
        bits = np.array(view, dtype=np.uint32, order="C")
        np.left_shift(bits, 16, out=bits)  # in place: a 0-d result stays an array
        return bits.view(np.float32)
    if dtype.name == "float16":
        return np.array(view, dtype=np.float32, order="C")
    if dtype.name == "bool":
        return np.array(view != 0, order="C")
    return np.array(view, dtype=view.dtype.newbyteorder("="), order="C")


# -- stand-ins for the globals a pickled state dict names ----------------------

class _Marker:
    """An inert stand-in for a class a pickle may name but never call (``torch.Tensor``)."""

    __slots__ = ("name",)

    def __init__(self, name):
        self.name = name

    def __setstate__(self, state):
        raise UnsafeCheckpointError(f"Expected no state for {self.name}, got a BUILD opcode")

    def __repr__(self):
        return self.name


class _StorageType(_Marker):
    __slots__ = ("dtype",)

    def __init__(self, name, dtype):
        super().__init__(f"torch.{name}")
        self.dtype = dtype


class _Storage:
    """A storage named by a persistent id; its bytes are read after the pickle."""

    __slots__ = ("key", "dtype", "numel", "raw", "byteorder")

    def __init__(self, key, dtype, numel):
        self.key, self.dtype, self.numel = key, dtype, numel
        self.raw, self.byteorder = None, "little"

    def __setstate__(self, state):
        raise UnsafeCheckpointError("Expected no state for a storage, got a BUILD opcode")


class _Tensor:
    """A tensor as the pickle describes it; made into an array by :meth:`array`."""

    __slots__ = ("storage", "offset", "size", "stride", "dtype")

    def __init__(self, storage, offset, size, stride, dtype=None):
        if not isinstance(storage, _Storage):
            raise _Invalid(f"Expected a storage as a tensor's first argument, got {type(storage).__name__}")
        self.dtype = storage.dtype if dtype is None else dtype
        if not isinstance(self.dtype, _DType):
            raise _Invalid(f"Expected a torch dtype, got {type(self.dtype).__name__}")
        self.storage = storage
        self.offset = _index(offset, "storage offset")
        self.size = tuple(_index(s, "size") for s in _sequence(size, "size"))
        self.stride = tuple(_index(s, "stride") for s in _sequence(stride, "stride"))
        if len(self.size) != len(self.stride):
            raise _Invalid(f"Expected as many strides as sizes, got size {self.size} "
                             f"and stride {self.stride}")

    def __setstate__(self, state):
        raise UnsafeCheckpointError("Expected no state for a tensor, got a BUILD opcode")

    def array(self):
        raw = self.storage.raw
        itemsize = self.dtype.storage.itemsize
        if len(raw) % itemsize:
            raise _Invalid(f"Expected storage {self.storage.key!r} to hold whole "
                             f"{self.dtype!r} elements, got {len(raw)} bytes")
        base = np.frombuffer(raw, dtype=self.dtype.storage)
        if 0 in self.size:
            return _to_array(np.empty(self.size, dtype=self.dtype.storage), self.dtype)
        last = self.offset + sum((n - 1) * s for n, s in zip(self.size, self.stride))
        if last >= base.size:
            raise _Invalid(
                f"Expected a tensor inside its storage {self.storage.key!r} of {base.size} "
                f"elements, got offset {self.offset}, size {self.size} and stride {self.stride} "
                f"(last element {last})")
        strides = tuple(s * itemsize if n > 1 else 0 for n, s in zip(self.size, self.stride))
        view = np.lib.stride_tricks.as_strided(base[self.offset:], self.size, strides,
                                               writeable=False)
        return _to_array(view, self.dtype)


def _index(value, what):
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise _Invalid(f"Expected a non-negative int as a tensor's {what}, got {value!r}")
    return value


def _sequence(value, what):
    if not isinstance(value, (tuple, list)):
        raise _Invalid(f"Expected a tuple as a tensor's {what}, got {type(value).__name__}")
    return value


class _Callable:
    """A function the pickle may call; inert otherwise (``BUILD`` cannot change it)."""

    __slots__ = ("name", "function")

    def __init__(self, name, function):
        self.name, self.function = name, function

    def __call__(self, *args):
        return self.function(*args)

    def __setstate__(self, state):
        raise UnsafeCheckpointError(f"Expected no state for {self.name}, got a BUILD opcode")

    def __repr__(self):
        return self.name


def _rebuild_tensor(storage, storage_offset, size, stride):
    return _Tensor(storage, storage_offset, size, stride)


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False,
                       backward_hooks=None, metadata=None):
    return _Tensor(storage, storage_offset, size, stride)


def _rebuild_tensor_v3(storage, storage_offset, size, stride, requires_grad, backward_hooks,
                       dtype, metadata=None):
    return _Tensor(storage, storage_offset, size, stride, dtype)


def _rebuild_parameter(data, requires_grad=True, backward_hooks=None, state=None):
    if not isinstance(data, _Tensor):
        raise _Invalid(f"Expected a tensor inside a Parameter, got {type(data).__name__}")
    return data


def _rebuild_from_type_v2(func, new_type, args, state):
    if not (isinstance(func, _Callable) and func.function in _REBUILDS.values()
            and func.function is not _rebuild_from_type_v2):
        raise _Invalid(f"Expected a tensor rebuild function, got {func!r}")
    if new_type not in (_TENSOR, _PARAMETER):
        raise _Invalid(f"Expected torch.Tensor or torch.nn.Parameter, got {new_type!r}")
    return func(*_sequence(args, "rebuild arguments"))


_TENSOR = _Marker("torch.Tensor")
_PARAMETER = _Marker("torch.nn.parameter.Parameter")


_GLOBALS = {
    ("collections", "OrderedDict"): collections.OrderedDict,  # an immutable type
    ("torch", "Tensor"): _TENSOR,
    ("torch.nn.parameter", "Parameter"): _PARAMETER,
    ("torch", "Size"): _Callable("torch.Size", tuple),
    ("torch.storage", "UntypedStorage"): _StorageType("UntypedStorage", _DTYPES["uint8"]),
}
_REBUILDS = {
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_tensor_v3"): _rebuild_tensor_v3,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch._tensor", "_rebuild_from_type_v2"): _rebuild_from_type_v2,
}
_GLOBALS.update({key: _Callable(".".join(key), f) for key, f in _REBUILDS.items()})
_GLOBALS.update({("torch", name): _StorageType(name, _DTYPES[dt]) for name, dt in _STORAGES.items()})
_GLOBALS.update({("torch", name): dt for name, dt in _DTYPES.items()})
_GLOBALS.update({("torch", alias): _DTYPES[name] for alias, name in _DTYPE_ALIASES.items()})


# dtypes and storages torch writes that have no NumPy counterpart
_UNSUPPORTED = {"float8_e5m2", "float8_e4m3fn", "float8_e5m2fnuz", "float8_e4m3fnuz",
                "float8_e8m0fnu", "float4_e2m1fn_x2", "complex32", "chalf", "bits8", "bits16",
                "bits1x8", "bits2x4", "bits4x2", "QInt8Storage", "QUInt8Storage",
                "QInt32Storage", "QUInt4x2Storage", "QUInt2x4Storage", "quint8", "qint8",
                "qint32", "quint4x2", "quint2x4"}


class _Unpickler(pickle.Unpickler):
    """An unpickler that knows only :data:`_GLOBALS` and storage persistent ids."""

    def __init__(self, file, legacy=False):
        super().__init__(file)
        self.legacy = legacy
        self.storages = {}

    def find_class(self, module, name):
        try:
            return _GLOBALS[module, name]
        except (KeyError, TypeError):
            pass
        if module == "torch" and name in _UNSUPPORTED:
            raise _Invalid(f"Expected tensors of a dtype NumPy has, got torch.{name}; convert "
                             f"them (say with .float()) before saving")
        hint = ""
        if module.startswith("torch.nn.modules") or module.startswith("__main__"):
            hint = (" This looks like a whole model saved with torch.save(model): save "
                    "model.state_dict() instead.")
        raise UnsafeCheckpointError(
            f"Expected only tensors, numbers, strings and containers in the checkpoint, got "
            f"the global {module}.{name}, which fastconv.load refuses to look up or call; "
            f"nothing from the file was run.{hint}")

    def persistent_load(self, pid):
        if not isinstance(pid, tuple) or not pid:
            raise _Invalid(f"Expected a storage persistent id, got {pid!r}")
        kind = pid[0].decode("ascii") if isinstance(pid[0], bytes) else pid[0]
        if kind != "storage":
            raise UnsafeCheckpointError(
                f"Expected only 'storage' persistent ids, got {kind!r}; nothing from the "
                f"file was run")
        if len(pid) != (6 if self.legacy else 5):
            raise _Invalid(f"Expected a storage persistent id of {6 if self.legacy else 5} "
                             f"fields, got {len(pid)}")
        storage_type, key, _location, numel = pid[1:5]
        if self.legacy and pid[5] is not None:
            raise _Invalid("Expected no storage views (a format of PyTorch before 0.4), got "
                             "one; re-save the checkpoint with a recent torch.save")
        if not isinstance(storage_type, _StorageType):
            raise _Invalid(f"Expected a torch storage type, got {storage_type!r}")
        if not isinstance(key, str):
            raise _Invalid(f"Expected a string storage key, got {key!r}")
        numel = _index(numel, "storage size")
        storage = self.storages.get(key)
        if storage is None:
            storage = self.storages[key] = _Storage(key, storage_type.dtype, numel)
        elif storage.dtype is not storage_type.dtype or storage.numel != numel:
            raise _Invalid(f"Expected storage {key!r} to be named with one type and size, got "
                             f"{storage.dtype!r}[{storage.numel}] and "
                             f"{storage_type.dtype!r}[{numel}]")
        return storage


def _unpickle(path, file, legacy=False):
    """Load one pickle from ``file`` with :class:`_Unpickler`; returns (object, storages)."""
    start = file.tell()
    try:
        with warnings.catch_warnings():  # protocol-0 strings may warn of bad escapes
            warnings.simplefilter("ignore")
            opcodes = [opcode.name for opcode, _arg, _pos in pickletools.genops(file)]
        for name in opcodes:
            if name in ("EXT1", "EXT2", "EXT4"):
                raise UnsafeCheckpointError(
                    f"Expected no extension-registry opcodes in the pickle, got {name}; "
                    f"nothing from the file was run")
    except UnsafeCheckpointError as exc:
        raise UnsafeCheckpointError(f"Cannot load {path}: {exc}") from None
    except Exception as exc:
        raise _fail(path, f"the pickle is truncated or corrupt ({exc})") from exc
    file.seek(start)
    unpickler = _Unpickler(file, legacy=legacy)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            obj = unpickler.load()
    except UnsafeCheckpointError as exc:
        raise UnsafeCheckpointError(f"Cannot load {path}: {exc}") from None
    except _Invalid as exc:
        raise _fail(path, str(exc)) from None
    except MemoryError:
        raise
    except Exception as exc:
        raise _fail(path, f"the pickle is truncated or corrupt ({type(exc).__name__}: {exc})") from exc
    return obj, unpickler.storages


# -- torch.save: the zip format and the legacy format --------------------------

def _read(path, archive, name):
    """One zip record; a bad CRC, a truncated record, ... become a ValueError."""
    try:
        return archive.read(name)
    except MemoryError:
        raise
    except Exception as exc:
        raise _fail(path, f"truncated or corrupt zip archive: record {name!r} cannot be read "
                          f"({type(exc).__name__}: {exc})") from exc


def _record(path, archive, data, name):
    """A stored (uncompressed) record as a view of ``data``, its CRC checked; else a copy."""
    info = archive.getinfo(name)
    start = info.header_offset
    local = bytes(data[start:start + 30])
    if info.compress_type != zipfile.ZIP_STORED or info.flag_bits & 1 or local[:4] != b"PK\x03\x04":
        return _read(path, archive, name)
    start += 30 + int.from_bytes(local[26:28], "little") + int.from_bytes(local[28:30], "little")
    view = memoryview(data)[start:start + info.file_size]
    if len(view) != info.file_size:
        raise _fail(path, f"truncated or corrupt zip archive: expected {info.file_size} bytes in "
                          f"record {name!r}, got {len(view)}")
    if zlib.crc32(view) != info.CRC:
        raise _fail(path, f"truncated or corrupt zip archive: bad CRC-32 for record {name!r}")
    return view


def _load_torch_zip(path, archive, names, data):
    prefix = next(n for n in names if n.count("/") == 1 and n.endswith("/data.pkl"))[:-len("data.pkl")]
    byteorder = "little"
    if prefix + "byteorder" in names:
        byteorder = _read(path, archive, prefix + "byteorder").decode("ascii", "replace").strip()
        if byteorder not in ("little", "big"):
            raise _fail(path, f"expected the byteorder record to be 'little' or 'big', got {byteorder!r}")
    obj, storages = _unpickle(path, io.BytesIO(_read(path, archive, prefix + "data.pkl")))
    for key, storage in storages.items():
        name = f"{prefix}data/{key}"
        if name not in names:
            raise _fail(path, f"expected a record {name!r} for storage {key!r}, got none (truncated?)")
        raw = _record(path, archive, data, name)
        nbytes = storage.numel * storage.dtype.storage.itemsize
        if len(raw) != nbytes:
            raise _fail(path, f"expected {nbytes} bytes in record {name!r} "
                              f"({storage.dtype!r}[{storage.numel}]), got {len(raw)}")
        storage.raw, storage.byteorder = raw, byteorder
    return obj


def _load_torch_legacy(path, data, file):
    magic, _ = _unpickle(path, file)
    if magic != _TORCH_MAGIC:
        raise _fail(path, "expected a torch.save file, got a pickle that is not one "
                          "(fastconv.load does not read plain pickles)")
    protocol, _ = _unpickle(path, file)
    if protocol != _TORCH_PROTOCOL:
        raise _fail(path, f"expected torch.save protocol {_TORCH_PROTOCOL}, got {protocol!r}")
    sys_info, _ = _unpickle(path, file)
    if not isinstance(sys_info, dict) or not isinstance(sys_info.get("little_endian"), bool):
        raise _fail(path, f"expected torch.save system information, got {sys_info!r}")
    byteorder = "little" if sys_info["little_endian"] else "big"
    obj, storages = _unpickle(path, file, legacy=True)
    keys, _ = _unpickle(path, file)
    if not isinstance(keys, list) or set(keys) != set(storages):
        raise _fail(path, "expected the list of storage keys after the pickle, got another "
                          "list (corrupt file)")
    offset = file.tell()
    for key in keys:
        storage = storages[key]
        head = bytes(data[offset:offset + 8])
        if len(head) < 8:
            raise _fail(path, f"expected storage {key!r} at byte {offset}, got the end of the "
                              f"file (truncated)")
        numel = int.from_bytes(head, byteorder)
        nbytes = numel * storage.dtype.storage.itemsize
        if numel != storage.numel:
            raise _fail(path, f"expected {storage.numel} elements in storage {key!r}, got {numel}")
        raw = memoryview(data)[offset + 8:offset + 8 + nbytes]
        if len(raw) != nbytes:
            raise _fail(path, f"expected {nbytes} bytes of storage {key!r}, got {len(raw)} "
                              f"(truncated)")
        storage.raw, storage.byteorder = raw, byteorder
        offset += 8 + nbytes
    return obj


def _materialise(path, obj):
    try:
        return _arrays(path, obj)
    except RecursionError:
        raise _fail(path, "expected a state dict, got containers nested too deeply") from None


def _arrays(path, obj):
    """Replace every ``_Tensor`` in a pickled object by its array (containers rebuilt as dicts/lists)."""
    if isinstance(obj, _Tensor):
        dtype = obj.dtype
        if obj.storage.byteorder == "big":
            dtype = _DType(dtype.name, dtype.storage.newbyteorder(">"))
        try:
            return _Tensor(obj.storage, obj.offset, obj.size, obj.stride, dtype).array()
        except ValueError as exc:
            raise _fail(path, str(exc)) from None
    if isinstance(obj, dict):
        return {k: _arrays(path, v) for k, v in dict.items(obj)}
    if isinstance(obj, (list, tuple)):
        items = [_arrays(path, v) for v in obj]
        return tuple(items) if isinstance(obj, tuple) else items
    return obj


def _is_state_dict(obj):
    return (isinstance(obj, dict) and len(obj) > 0
            and all(isinstance(k, str) and isinstance(v, np.ndarray) for k, v in obj.items()))


def _select(path, obj, key):
    """Apply the rule of :func:`load` to a pickled checkpoint's top-level object."""
    if not isinstance(obj, dict):
        raise _fail(path, f"expected a dict at the top of the checkpoint, got {type(obj).__name__}")
    if key is not None:
        if key not in obj:
            raise _fail(path, f"expected an entry {key!r}, got the entries {sorted(map(str, obj))}")
        if not _is_state_dict(obj[key]):
            raise _fail(path, f"expected entry {key!r} to be a dict of tensors with string keys, "
                              f"got {_describe(obj[key])}")
        return obj[key]
    if _is_state_dict(obj) or not obj:
        return obj
    for name in STATE_DICT_KEYS:
        if _is_state_dict(obj.get(name)):
            return obj[name]
    if all(isinstance(k, str) for k in obj) and any(isinstance(v, np.ndarray) for v in obj.values()):
        others = sorted(k for k, v in obj.items() if not isinstance(v, np.ndarray))
        raise _fail(path, f"expected a flat dict of tensors, got non-tensor entries {others}; "
                          f"pass key= to choose an entry")
    raise _fail(path, f"expected a state dict, at the top or under one of {list(STATE_DICT_KEYS)}, "
                      f"got a dict with the entries {sorted(map(str, obj))}; pass key= to choose one")


def _describe(value):
    if isinstance(value, dict):
        kinds = sorted({type(v).__name__ for v in value.values()})
        return f"a dict of {', '.join(kinds) or 'nothing'}"
    return type(value).__name__


# -- safetensors ---------------------------------------------------------------

_SAFETENSORS_DTYPES = {
    "F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16",
    "I64": "int64", "I32": "int32", "I16": "int16", "I8": "int8",
    "U64": "uint64", "U32": "uint32", "U16": "uint16", "U8": "uint8", "BOOL": "bool",
    "C64": "complex64",
}


def _no_duplicates(pairs):
    out = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"duplicate key {k!r}")
        out[k] = v
    return out


def _looks_like_safetensors(data):
    if len(data) < 9:
        return False
    n = int.from_bytes(data[:8], "little")
    return 2 <= n and data[8:9] == b"{"


def _load_safetensors(path, data):
    def fail(what):
        return _fail(path, f"not a valid safetensors file: {what}")

    n = int.from_bytes(data[:8], "little")
    if n > _MAX_SAFETENSORS_HEADER:
        raise fail(f"expected a header of at most {_MAX_SAFETENSORS_HEADER} bytes, got {n}")
    if 8 + n > len(data):
        raise fail(f"expected a {n}-byte header, got {len(data) - 8} bytes in the file (truncated)")
    try:
        header = json.loads(bytes(data[8:8 + n]).decode("utf-8"), object_pairs_hook=_no_duplicates)
    except (UnicodeDecodeError, ValueError) as exc:  # JSONDecodeError is a ValueError
        raise fail(f"expected a JSON header, got one that does not parse ({exc})") from None
    if not isinstance(header, dict):
        raise fail(f"expected a JSON object as the header, got {type(header).__name__}")
    buffer = memoryview(data)[8 + n:]
    entries = []
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if not isinstance(info, dict) or set(info) != {"dtype", "shape", "data_offsets"}:
            raise fail(f"expected {{dtype, shape, data_offsets}} for tensor {name!r}, got {info!r}")
        code, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
        if code not in _SAFETENSORS_DTYPES:
            raise fail(f"expected a dtype among {sorted(_SAFETENSORS_DTYPES)} for tensor "
                       f"{name!r}, got {code!r}")
        if not isinstance(shape, list) or not all(
                isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in shape):
            raise fail(f"expected a list of non-negative ints as the shape of {name!r}, got {shape!r}")
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(
                isinstance(o, int) and not isinstance(o, bool) for o in offsets)
                and 0 <= offsets[0] <= offsets[1]):
            raise fail(f"expected data_offsets [begin, end] with 0 <= begin <= end for {name!r}, "
                       f"got {offsets!r}")
        dtype = _DTYPES[_SAFETENSORS_DTYPES[code]]
        nbytes = math.prod(shape) * dtype.storage.itemsize
        begin, end = offsets
        if end - begin != nbytes:
            raise fail(f"expected {nbytes} bytes for tensor {name!r} ({code}, shape {shape}), "
                       f"got data_offsets {offsets} ({end - begin} bytes)")
        if end > len(buffer):
            raise fail(f"expected the data of {name!r} at bytes {offsets} of the "
                       f"{len(buffer)}-byte buffer, got past its end (truncated)")
        entries.append((begin, end, name, dtype, tuple(shape)))
    position = 0
    for begin, end, name, _dtype, _shape in sorted(entries):
        if begin != position:
            raise fail(f"expected the data of {name!r} to start at byte {position}, after the "
                       f"tensor before it, got {begin} ({'a gap' if begin > position else 'an overlap'})")
        position = end
    if position != len(buffer):
        raise fail(f"expected the tensors to fill the {len(buffer)}-byte buffer, got "
                   f"{position} bytes of tensors")
    out = {}
    for begin, end, name, dtype, shape in entries:
        view = np.frombuffer(buffer[begin:end], dtype=dtype.storage).reshape(shape)
        out[name] = _to_array(view, dtype)
    return out


# -- npz -------------------------------------------------------------------------

def _load_npz(path, file):
    try:
        file.seek(0)
        with np.load(file, allow_pickle=False) as npz:
            out = {name: npz[name] for name in npz.files}
    except MemoryError:
        raise
    except Exception as exc:
        raise _fail(path, f"not a readable .npz ({type(exc).__name__}: {exc})") from exc
    for name, a in out.items():
        dtype = np.float32 if a.dtype == np.float16 else a.dtype.newbyteorder("=")
        if a.dtype != dtype or not a.flags.c_contiguous:
            out[name] = np.array(a, dtype=dtype, order="C")
    return out


# -- the entry point -------------------------------------------------------------

def load(path, *, key=None):
    """load(path, *, key=None) -> dict[str, numpy.ndarray]

    Read a state dict from a ``torch.save`` file, a ``.safetensors`` file or an
    ``.npz``, with NumPy only: torch is not needed, and no code from the file
    runs.

    The format is recognised from the content, not the extension:

    * ``torch.save`` files, in the default zip format and in the legacy format
      (``_use_new_zipfile_serialization=False``). The pickle inside is read by a
      restricted unpickler that accepts only what a tensor state dict needs
      (tensors, parameters, ``OrderedDict``, numbers, strings, ``None``, lists,
      tuples and dicts); any other global, such as ``os.system`` in a
      ``__reduce__`` or the classes of a whole pickled ``nn.Module``, raises
      :class:`UnsafeCheckpointError` before anything runs. TorchScript
      archives (``torch.jit.save``) are refused.
    * ``.safetensors`` files, parsed here (the ``safetensors`` package is not
      used); the offsets in the header are checked strictly (every tensor's
      byte count, no gap, overlap or trailing data) and ``__metadata__`` is
      ignored.
    * ``.npz`` files, read with ``numpy.load(allow_pickle=False)``.

    Which dict is returned, for a pickled checkpoint:

    1. with ``key``, the entry ``checkpoint[key]``;
    2. else the checkpoint itself if it is a dict (or ``OrderedDict``) whose
       values are all tensors, such as ``model.state_dict()``;
    3. else the first entry among :data:`STATE_DICT_KEYS` (``'state_dict'``,
       ``'model_state_dict'``, ``'model'``, ``'module'``, ``'net'``,
       ``'network'``) that is such a dict, as in
       ``{'epoch': 9, 'model': model.state_dict(), 'optimizer': ...}``.

    Anything else raises ``ValueError`` naming the entries found. The keys are
    returned as saved (a ``module.`` prefix from ``DataParallel`` is kept).

    Parameters
    ----------
    path : str or os.PathLike or binary file object
        The checkpoint.
    key : str, optional
        The entry of a pickled checkpoint that holds the state dict.

    Returns
    -------
    dict of str to numpy.ndarray
        The tensors, in the file's order, each a new C-contiguous array in
        native byte order (whatever the strides or sharing of the saved
        tensors). float16 and bfloat16 become float32; other dtypes are kept
        (``int64`` for ``num_batches_tracked``, a 0-d array).

    Raises
    ------
    UnsafeCheckpointError
        The pickle names a global outside the allowed few (nothing has run).
    ValueError
        The file is not one of the three formats, or is truncated or corrupt,
        or holds no state dict; the message names the path and the problem.

    Examples
    --------
    >>> import os, tempfile
    >>> import numpy as np
    >>> import fastconv
    >>> from fastconv import nn
    >>> model = nn.Sequential(nn.Conv2d(1, 4, 3, rng=np.random.default_rng(0)), nn.ReLU())
    >>> path = os.path.join(tempfile.mkdtemp(), "weights.npz")
    >>> np.savez(path, **model.state_dict())
    >>> state = fastconv.load(path)
    >>> {name: a.shape for name, a in state.items()}
    {'0.weight': (4, 1, 3, 3), '0.bias': (4,)}
    >>> bool(np.array_equal(state["0.weight"], model.state_dict()["0.weight"]))
    True
    """
    if key is not None and not isinstance(key, str):
        raise TypeError(f"Expected key to be a str or None, got {type(key).__name__}")
    if hasattr(path, "read"):
        name = repr(getattr(path, "name", path))
        data = path.read()
        if not isinstance(data, bytes):
            raise TypeError(f"Expected a binary file object, got one that reads {type(data).__name__}")
        return _load(name, data, io.BytesIO(data), key)
    name = repr(os.fspath(path))
    with open(path, "rb") as f:
        try:  # map the file: the tensors are copied straight out of the page cache
            data = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except (ValueError, OSError):  # an empty file, a pipe, ...
            data = f.read()
            return _load(name, data, io.BytesIO(data), key)
        try:
            return _load(name, data, f, key)
        finally:
            try:
                data.close()
            except BufferError:  # views held by an exception's traceback: closed when freed
                pass


def _load(name, data, file, key):
    """Recognise the format of ``data`` (bytes or mmap; ``file`` reads the same bytes) and load it."""
    if data[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        try:
            file.seek(0)
            archive = zipfile.ZipFile(file)
            names = archive.namelist()
        except MemoryError:
            raise
        except Exception as exc:  # BadZipFile, EOFError, struct.error, ValueError, ...
            raise _fail(name, f"truncated or corrupt zip archive ({type(exc).__name__}: {exc})") from exc
        with archive:
            if any(n.count("/") == 1 and n.endswith("/data.pkl") for n in names):
                if any(n.endswith("/constants.pkl") or "/code/" in n for n in names):
                    raise _fail(name, "expected a torch.save file, got a TorchScript archive "
                                      "(torch.jit.save); save the state dict with "
                                      "torch.save(model.state_dict(), path)")
                obj = _load_torch_zip(name, archive, set(names), data)
                return _select(name, _materialise(name, obj), key)
            if not all(n.endswith(".npy") for n in names):
                raise _fail(name, f"expected a zip holding a torch.save pickle (<dir>/data.pkl) "
                                  f"or .npy arrays, got members {sorted(names)[:5]}")
        if key is not None:
            raise ValueError(f"Expected key=None for an .npz file, got {key!r}")
        return _load_npz(name, file)
    if data[:2] == b"\x80\x02":
        file.seek(0)
        return _select(name, _materialise(name, _load_torch_legacy(name, data, file)), key)
    if _looks_like_safetensors(data):
        if key is not None:
            raise ValueError(f"Expected key=None for a safetensors file, got {key!r}")
        return _load_safetensors(name, data)
    if data[:6] == b"\x93NUMPY":
        raise _fail(name, "expected a state dict, got a single .npy array; save a dict of "
                          "arrays with numpy.savez")
    if len(data) > 262 and data[257:262] == b"ustar":
        raise _fail(name, "expected a torch.save file, got a tar archive (the format of "
                          "PyTorch before 1.0); re-save it with torch.save in a recent PyTorch")
    if not len(data):
        raise _fail(name, "the file is empty")
    raise _fail(name, f"expected a torch.save, .safetensors or .npz file, got a file starting "
                      f"with {bytes(data[:8])!r}")
