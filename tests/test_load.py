"""fastconv.load: state dicts from torch.save, safetensors and npz files.

Files written by torch and by the safetensors package are checked against
those libraries (skipped cleanly when they are missing); files written here by
hand (torch's zip and legacy layouts, safetensors headers) check the parsers
without them. Malicious pickles must be refused without running; truncated and
corrupt files must raise ValueErrors that name the file.
"""

import collections
import doctest
import io
import json
import os
import pickle
import struct
import sys
import zipfile

import numpy as np
import pytest
from conftest import assert_close

import fastconv
from fastconv import UnsafeCheckpointError, nn

# -- writers used by the tests (torch-free) ---------------------------------


class _Global:
    """A callable stand-in that pickles as ``GLOBAL module name`` (see _Pickler)."""

    def __init__(self, module, name):
        self.module, self.name = module, name

    def __call__(self, *args):  # pickle checks that a reduce function is callable
        raise AssertionError("never called")

    def __reduce_ex__(self, protocol):
        return self.name


class _Pickler(pickle._Pickler):
    """The pure-Python pickler, writing _Global objects as GLOBAL opcodes."""

    def __init__(self, file, persistent=None):
        super().__init__(file, protocol=2)
        self._persistent = persistent

    def save_global(self, obj, name=None):
        if isinstance(obj, _Global):
            self.write(pickle.GLOBAL + f"{obj.module}\n{obj.name}\n".encode())
            self.memoize(obj)
            return
        super().save_global(obj, name)

    def persistent_id(self, obj):
        return self._persistent(obj) if self._persistent else None


_STORAGE_NAMES = {"<f4": "FloatStorage", "<f8": "DoubleStorage", "<f2": "HalfStorage",
                  "<i8": "LongStorage", "<i4": "IntStorage", "|u1": "ByteStorage",
                  "|b1": "BoolStorage", "<i2": "ShortStorage", "|i1": "CharStorage"}


class _FakeStorage:
    def __init__(self, key, array, storage_name=None):
        self.key, self.array = key, np.ascontiguousarray(array).reshape(-1)
        self.storage_name = storage_name or _STORAGE_NAMES[self.array.dtype.str]


class _FakeTensor:
    """A tensor as torch pickles it: (storage, offset, size, stride) in elements."""

    def __init__(self, storage, offset, size, stride):
        self.args = (storage, offset, tuple(size), tuple(stride), False,
                     collections.OrderedDict())

    def __reduce_ex__(self, protocol):
        return _Global("torch._utils", "_rebuild_tensor_v2"), self.args


def _fake_tensor(array, key):
    """A _FakeTensor for an array; strided arrays keep their strides and offset."""
    base = array
    while isinstance(base.base, np.ndarray):
        base = base.base
    if not base.flags.c_contiguous or base.dtype != array.dtype:
        base = array = np.ascontiguousarray(array)
    itemsize = array.dtype.itemsize
    offset = (array.__array_interface__["data"][0] - base.__array_interface__["data"][0]) // itemsize
    return _FakeTensor(_FakeStorage(key, base), offset, array.shape,
                       [s // itemsize for s in array.strides])


def _pickle_with_storages(obj, legacy=False):
    storages = {}

    def persistent(o):
        if isinstance(o, _FakeStorage):
            storages[o.key] = o
            pid = ("storage", _Global("torch", o.storage_name), o.key, "cpu", o.array.size)
            return pid + (None,) if legacy else pid
        return None

    f = io.BytesIO()
    _Pickler(f, persistent).dump(obj)
    return f.getvalue(), storages


def _write_torch_zip(path, obj, byteorder="little", pkl=None, compression=zipfile.ZIP_STORED):
    """torch.save's zip layout, written without torch (torch stores the records uncompressed)."""
    data, storages = _pickle_with_storages(obj)
    with zipfile.ZipFile(path, "w", compression) as z:
        z.writestr("archive/data.pkl", data if pkl is None else pkl)
        z.writestr("archive/byteorder", byteorder)
        for key, s in storages.items():
            a = s.array.astype(s.array.dtype.newbyteorder(">" if byteorder == "big" else "<"))
            z.writestr(f"archive/data/{key}", a.tobytes())
        z.writestr("archive/version", "3\n")


def _write_torch_legacy(path, obj, main=None):
    """torch.save(..., _use_new_zipfile_serialization=False)'s layout, without torch."""
    data, storages = _pickle_with_storages(obj, legacy=True)
    out = io.BytesIO()
    for header in (0x1950A86A20F9469CFC6C, 1001,
                   {"protocol_version": 1001, "little_endian": True,
                    "type_sizes": {"short": 2, "int": 4, "long": 4}}):
        pickle.dump(header, out, protocol=2)
    out.write(data if main is None else main)
    pickle.dump(list(storages), out, protocol=2)
    for s in storages.values():
        out.write(struct.pack("<q", s.array.size))
        out.write(s.array.astype(s.array.dtype.newbyteorder("<")).tobytes())
    with open(path, "wb") as f:
        f.write(out.getvalue())


def _safetensors_bytes(header, buffer, pad=0):
    text = json.dumps(header).encode() + b" " * pad
    return struct.pack("<Q", len(text)) + text + buffer


_ST_CODES = {"float64": "F64", "float32": "F32", "float16": "F16", "int64": "I64",
             "int32": "I32", "int16": "I16", "int8": "I8", "uint8": "U8", "bool": "BOOL",
             "uint16": "U16", "uint32": "U32", "uint64": "U64"}


def _write_safetensors(path, arrays, metadata=None):
    """A safetensors file written by hand: tensors in order, no padding between."""
    header, chunks, pos = {}, [], 0
    if metadata is not None:
        header["__metadata__"] = metadata
    for name, a in arrays.items():
        raw = np.ascontiguousarray(a).astype(a.dtype.newbyteorder("<")).tobytes()
        header[name] = {"dtype": _ST_CODES[a.dtype.name], "shape": list(a.shape),
                        "data_offsets": [pos, pos + len(raw)]}
        chunks.append(raw)
        pos += len(raw)
    with open(path, "wb") as f:
        f.write(_safetensors_bytes(header, b"".join(chunks), pad=(-len(json.dumps(header))) % 8))


def _bf16_bits(values):
    """bfloat16 bit patterns of float32 values that bfloat16 holds exactly."""
    v = np.asarray(values, dtype=np.float32)
    bits = v.view(np.uint32)
    assert np.all(bits & 0xFFFF == 0), "choose values bfloat16 represents exactly"
    return (bits >> 16).astype(np.uint16)


def _check_same(state, expected):
    assert list(state) == list(expected)
    for k, e in expected.items():
        a = state[k]
        assert isinstance(a, np.ndarray), k
        assert a.dtype == e.dtype and a.shape == e.shape, (k, a.dtype, e.dtype, a.shape, e.shape)
        assert a.flags.c_contiguous and a.flags.writeable, k
        np.testing.assert_array_equal(a, e, err_msg=k)


# -- the doctest of the module ------------------------------------------------


def test_docstring_examples():
    from fastconv import _checkpoint

    result = doctest.testmod(_checkpoint, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0


# -- torch.save files, written by torch ---------------------------------------

TORCH_DTYPES = ["float32", "float64", "float16", "bfloat16", "int64", "int32", "int16",
                "int8", "uint8", "bool", "complex64", "uint16"]


def _torch_expected(t):
    """What fastconv.load must return for a torch tensor: float16/bfloat16 as float32."""
    import torch

    t = t.detach()
    if t.dtype in (torch.float16, torch.bfloat16):
        t = t.float()
    if t.dtype == torch.uint16:
        return t.to(torch.int32).numpy().astype(np.uint16)
    return t.contiguous().numpy()


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
@pytest.mark.parametrize("dtype", TORCH_DTYPES)
def test_torch_dtypes(tmp_path, dtype, legacy):
    torch = pytest.importorskip("torch")
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 5, generator=g) * 20
    t = (x > 0) if dtype == "bool" else x.to(getattr(torch, dtype)) if dtype != "uint16" else \
        x.abs().to(torch.int32).to(torch.uint16)
    state = {"t": t, "t_T": t.t(), "t_slice": t[1:, 2:], "scalar": t[0, 0].clone()}
    path = tmp_path / "c.pt"
    if legacy and dtype == "uint16":
        pytest.skip("torch's legacy format does not save uint16")
    torch.save(state, path, _use_new_zipfile_serialization=not legacy)
    got = fastconv.load(path)
    expected = {k: _torch_expected(v) for k, v in state.items()}
    _check_same(got, expected)
    want = np.dtype(np.float32 if dtype in ("float16", "bfloat16") else dtype)
    assert all(a.dtype == want for a in got.values())


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_torch_strided_and_shared_storages(tmp_path, legacy):
    torch = pytest.importorskip("torch")
    g = torch.Generator().manual_seed(1)
    w = torch.randn(4, 6, generator=g)
    x = torch.randn(2, 3, 4, 5, generator=g)
    attr = torch.randn(3, generator=g)
    attr.note = "a python attribute on a tensor"
    state = collections.OrderedDict([
        ("w", w),
        ("w.t", w.t()),                              # transposed
        ("w.rows", w[1:3]),                          # storage offset
        ("w.cols", w[:, 1::2]),                      # offset and stride 2
        ("w.elem", w[2, 3]),                         # 0-d view at an offset
        ("x.perm", x.permute(0, 2, 3, 1)),           # NHWC view of NCHW
        ("x.flip", x[:, :, 1:, :].transpose(1, 3)),
        ("b.expand", torch.arange(3.0).expand(4, 3)),  # stride 0
        ("tied", w),                                 # the same tensor twice
        ("empty", torch.empty(0, 3)),
        ("num_batches_tracked", torch.tensor(7)),
        ("param", torch.nn.Parameter(w[1:].clone())),  # _rebuild_parameter
        ("with_attr", attr),                          # _rebuild_from_type_v2
    ])
    path = tmp_path / "strided.pt"
    torch.save(state, path, _use_new_zipfile_serialization=not legacy)
    got = fastconv.load(path)
    _check_same(got, {k: _torch_expected(v) for k, v in state.items()})
    # every array owns its memory: writing one leaves the others alone
    assert not np.shares_memory(got["w"], got["tied"])
    got["w"][...] = 0
    np.testing.assert_array_equal(got["w.t"], w.t().numpy())
    assert got["num_batches_tracked"].shape == () and got["num_batches_tracked"].dtype == np.int64


def _torch_model(torch):
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(8, 4, 3, stride=2), torch.nn.ReLU(), torch.nn.Flatten(),
        torch.nn.Linear(4 * 1 * 1, 5))


def _fastconv_model():
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 4, 3, stride=2), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 1 * 1, 5))


def test_torch_module_state_dict_with_buffers(tmp_path):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(2, 3, 3), torch.nn.BatchNorm2d(3),
                                torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(12, 2))
    model.train()
    for _ in range(3):  # non-trivial running statistics and num_batches_tracked
        model(torch.randn(4, 2, 4, 4))
    state = model.state_dict()
    assert isinstance(state, collections.OrderedDict) and hasattr(state, "_metadata")
    torch.save(state, tmp_path / "m.pt")
    got = fastconv.load(tmp_path / "m.pt")
    _check_same(got, {k: _torch_expected(v) for k, v in state.items()})
    assert got["1.num_batches_tracked"].shape == () and int(got["1.num_batches_tracked"]) == 3
    assert type(got) is dict


@pytest.mark.parametrize("fmt", ["torch", "torch-legacy", "safetensors"])
def test_state_dict_runs_in_fastconv_as_in_torch(tmp_path, fmt):
    torch = pytest.importorskip("torch")
    model = _torch_model(torch).eval()
    path = tmp_path / ("m.safetensors" if fmt == "safetensors" else "m.pt")
    if fmt.startswith("torch"):
        torch.save(model.state_dict(), path, _use_new_zipfile_serialization=fmt == "torch")
    else:
        safetensors_torch = pytest.importorskip("safetensors.torch")
        safetensors_torch.save_file(model.state_dict(), str(path))
    state = fastconv.load(path)
    assert sorted(state) == ["0.bias", "0.weight", "3.bias", "3.weight", "6.bias", "6.weight"]
    ours = _fastconv_model()
    ours.load_state_dict(state)
    x = np.random.default_rng(0).standard_normal((2, 3, 8, 8)).astype(np.float32)
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    assert_close(ours.eval()(x), expected, n_terms=3 * 9 + 8 * 9 + 4)


def test_torch_checkpoint_dict_rule(tmp_path):
    torch = pytest.importorskip("torch")
    model = _torch_model(torch)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(2, 3, 8, 8)).sum().backward()
    opt.step()
    sd = model.state_dict()
    expected = {k: _torch_expected(v) for k, v in sd.items()}
    for wrapper in ("model", "state_dict", "model_state_dict"):
        ckpt = {"epoch": 3, "arch": "small", "best": 0.5, wrapper: sd,
                "optimizer": opt.state_dict()}
        torch.save(ckpt, tmp_path / "ckpt.pt")
        _check_same(fastconv.load(tmp_path / "ckpt.pt"), expected)
    # 'model' holding a name, the weights under 'state_dict': the dict of tensors wins
    torch.save({"model": "resnet", "state_dict": sd}, tmp_path / "ckpt.pt")
    _check_same(fastconv.load(tmp_path / "ckpt.pt"), expected)
    # key= picks an entry that is not among the usual names
    torch.save({"ema": sd, "epoch": 1}, tmp_path / "ema.pt")
    _check_same(fastconv.load(tmp_path / "ema.pt", key="ema"), expected)
    with pytest.raises(ValueError, match=r"ema\.pt.*pass key="):
        fastconv.load(tmp_path / "ema.pt")
    with pytest.raises(ValueError, match="expected an entry 'nope'"):
        fastconv.load(tmp_path / "ema.pt", key="nope")
    with pytest.raises(ValueError, match="expected entry 'epoch' to be a dict of tensors"):
        fastconv.load(tmp_path / "ema.pt", key="epoch")
    torch.save({"w": torch.ones(2), "epoch": 3}, tmp_path / "mixed.pt")
    with pytest.raises(ValueError, match=r"non-tensor entries \['epoch'\]"):
        fastconv.load(tmp_path / "mixed.pt")
    torch.save([torch.ones(2)], tmp_path / "list.pt")
    with pytest.raises(ValueError, match="expected a dict at the top of the checkpoint, got list"):
        fastconv.load(tmp_path / "list.pt")


def test_torch_float8_is_a_clear_error(tmp_path):
    torch = pytest.importorskip("torch")
    torch.save({"w": torch.ones(4).to(torch.float8_e4m3fn)}, tmp_path / "f8.pt")
    with pytest.raises(ValueError, match=r"f8\.pt.*dtype NumPy has, got torch\.float8_e4m3fn"):
        fastconv.load(tmp_path / "f8.pt")


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")
def test_torch_whole_model_and_torchscript_refused(tmp_path):
    torch = pytest.importorskip("torch")
    model = _torch_model(torch)
    torch.save(model, tmp_path / "whole.pt")
    with pytest.raises(UnsafeCheckpointError, match=r"torch\.nn\.modules.*model\.state_dict\(\)"):
        fastconv.load(tmp_path / "whole.pt")
    torch.jit.script(model).save(str(tmp_path / "scripted.pt"))
    with pytest.raises(ValueError, match="TorchScript"):
        fastconv.load(tmp_path / "scripted.pt")


def test_format_from_content_not_extension(tmp_path):
    a = {"w": np.arange(6, dtype=np.float32).reshape(2, 3), "n": np.array(4, dtype=np.int64)}
    _write_torch_zip(tmp_path / "torch.safetensors", {k: _fake_tensor(v, k) for k, v in a.items()})
    _write_safetensors(tmp_path / "st.pt", a)
    np.savez(tmp_path / "arrays.bin", **a)
    for name in ("torch.safetensors", "st.pt", "arrays.bin.npz"):
        _check_same(fastconv.load(tmp_path / name), a)
        with open(tmp_path / name, "rb") as f:  # a binary file object works too
            _check_same(fastconv.load(f), a)
    _check_same(fastconv.load(str(tmp_path / "st.pt")), a)


# -- torch's layouts written by hand (no torch needed) -------------------------


def _strided_arrays():
    rng = np.random.default_rng(3)
    w = rng.standard_normal((4, 6)).astype(np.float32)
    return collections.OrderedDict([
        ("w", w), ("w.T", w.T), ("w.rows", w[1:3]), ("w.cols", w[:, 1::3]), ("w.elem", w[2, 3, ...]),
        ("d", rng.standard_normal((2, 3))),
        ("h", rng.standard_normal(5).astype(np.float16)),
        ("i", np.arange(-3, 3, dtype=np.int32)),
        ("b", np.array([True, False, True])),
        ("u", np.arange(250, 256, dtype=np.uint8)),
        ("n", np.array(9, dtype=np.int64)),
    ])


def _expected(arrays):
    return {k: np.array(v, dtype=np.float32 if v.dtype == np.float16 else v.dtype, order="C")
            for k, v in arrays.items()}


@pytest.mark.parametrize("compression", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED],
                         ids=["stored", "deflated"])
@pytest.mark.parametrize("byteorder", ["little", "big"])
def test_handwritten_torch_zip(tmp_path, byteorder, compression):
    arrays = _strided_arrays()
    # the w-views share one storage: the writer names it once per tensor with one key
    tensors = {}
    w_storage = _FakeStorage("0", arrays["w"])
    for k, v in arrays.items():
        if k.startswith("w"):
            offset = (v.__array_interface__["data"][0]
                      - arrays["w"].__array_interface__["data"][0]) // 4
            tensors[k] = _FakeTensor(w_storage, offset, v.shape, [s // 4 for s in v.strides])
        else:
            tensors[k] = _fake_tensor(v, k)
    _write_torch_zip(tmp_path / "h.pt", collections.OrderedDict(tensors), byteorder=byteorder,
                     compression=compression)
    got = fastconv.load(tmp_path / "h.pt")
    _check_same(got, _expected(arrays))
    assert all(a.dtype.isnative for a in got.values())
    _check_same(fastconv.load(io.BytesIO((tmp_path / "h.pt").read_bytes())), _expected(arrays))


def test_handwritten_torch_legacy(tmp_path):
    arrays = _strided_arrays()
    _write_torch_legacy(tmp_path / "l.pt", {k: _fake_tensor(v, k) for k, v in arrays.items()})
    _check_same(fastconv.load(tmp_path / "l.pt"), _expected(arrays))


def test_handwritten_bfloat16_and_uint16_v3(tmp_path):
    values = np.array([1.5, -2.0, 0.15625, 2.0**127, -0.0, 1.0 / 1024], dtype=np.float32)
    bf = _FakeStorage("0", _bf16_bits(values), storage_name="BFloat16Storage")
    raw16 = np.array([0, 1, 65535, 40000], dtype=np.uint16)
    untyped = _FakeStorage("1", raw16.view(np.uint8), storage_name="UntypedStorage")

    class V3:
        def __reduce_ex__(self, protocol):
            return (_Global("torch._utils", "_rebuild_tensor_v3"),
                    (untyped, 1, (3,), (1,), False, collections.OrderedDict(),
                     _Global("torch", "uint16")))

    _write_torch_zip(tmp_path / "bf.pt", {"bf": _FakeTensor(bf, 0, (2, 3), (3, 1)),
                                          "bf.T": _FakeTensor(bf, 0, (3, 2), (1, 3)),
                                          "u16": V3()})
    got = fastconv.load(tmp_path / "bf.pt")
    _check_same(got, {"bf": values.reshape(2, 3), "bf.T": values.reshape(2, 3).T.copy(),
                      "u16": raw16[1:]})


def test_handwritten_parameter_and_rebuild_from_type(tmp_path):
    w = np.arange(6, dtype=np.float32).reshape(2, 3)
    inner = _fake_tensor(w, "0")

    class Param:
        def __reduce_ex__(self, protocol):
            return (_Global("torch._utils", "_rebuild_parameter"),
                    (inner, True, collections.OrderedDict()))

    class Sub:
        def __reduce_ex__(self, protocol):
            return (_Global("torch._tensor", "_rebuild_from_type_v2"),
                    (_Global("torch._utils", "_rebuild_tensor_v2"), _Global("torch", "Tensor"),
                     inner.args, {}))

    _write_torch_zip(tmp_path / "p.pt", {"p": Param(), "s": Sub()})
    _check_same(fastconv.load(tmp_path / "p.pt"), {"p": w, "s": w})


@pytest.mark.parametrize("offset, size, stride", [
    (0, (3, 3), (3, 1)),      # 9 elements of a storage of 6
    (5, (2,), (1,)),          # runs one past the end
    (0, (2, 3), (4, 1)),      # strided past the end
    (-1, (2,), (1,)),
    (0, (2, 3), (3,)),        # fewer strides than sizes
    (0, (2.0, 3), (3, 1)),
])
def test_tensor_outside_its_storage(tmp_path, offset, size, stride):
    storage = _FakeStorage("0", np.zeros(6, dtype=np.float32))
    _write_torch_zip(tmp_path / "bad.pt", {"t": _FakeTensor(storage, offset, size, stride)})
    with pytest.raises(ValueError, match=r"bad\.pt.*[Ee]xpected"):
        fastconv.load(tmp_path / "bad.pt")


def test_storage_record_of_wrong_size(tmp_path):
    good = tmp_path / "good.pt"
    _write_torch_zip(good, {"t": _fake_tensor(np.zeros(6, np.float32), "0")})
    with zipfile.ZipFile(good) as z, zipfile.ZipFile(tmp_path / "bad.pt", "w") as out:
        for n in z.namelist():
            data = z.read(n)
            out.writestr(n, data[:-4] if n.endswith("data/0") else data)
    with pytest.raises(ValueError, match=r"expected 24 bytes in record 'archive/data/0'.*got 20"):
        fastconv.load(tmp_path / "bad.pt")
    with zipfile.ZipFile(good) as z, zipfile.ZipFile(tmp_path / "missing.pt", "w") as out:
        for n in z.namelist():
            if not n.endswith("data/0"):
                out.writestr(n, z.read(n))
    with pytest.raises(ValueError, match=r"expected a record 'archive/data/0'"):
        fastconv.load(tmp_path / "missing.pt")


# -- malicious pickles ----------------------------------------------------------


class _Evil:
    """Creates a marker file when unpickled by an ordinary unpickler."""

    def __init__(self, marker, how="system"):
        self.marker, self.how = str(marker), how

    def __reduce__(self):
        if self.how == "system":
            return os.system, (f"touch '{self.marker}'",)
        if self.how == "exec":
            return exec, (f"open({self.marker!r}, 'w').close()",)
        return eval, (f"open({self.marker!r}, 'w').close()",)


def _evil_pickles(marker, legacy=False):
    """(name, pickle bytes) of live payloads, each creating ``marker`` when unpickled."""
    out = []
    for how in ("system", "exec", "eval"):
        for protocol in (0, 2, 4, 5):
            out.append((f"{how}-p{protocol}", pickle.dumps(_Evil(marker, how), protocol=protocol)))
    state = {"w": _fake_tensor(np.ones(2, np.float32), "0"), "x": _Evil(marker)}
    out.append(("inside-state-dict", _pickle_with_storages(state, legacy=legacy)[0]))
    return out


def _assert_payload_is_live(payload, marker):
    """The test's own check: an ordinary unpickler does run the payload."""
    pickle.loads(payload)
    assert marker.exists()
    marker.unlink()


@pytest.mark.parametrize("container", ["zip", "legacy", "plain"])
def test_malicious_pickle_refused_without_running(tmp_path, container):
    marker = tmp_path / "pwned"
    for name, payload in _evil_pickles(marker, legacy=container == "legacy"):
        path = tmp_path / f"{name}.pt"
        if container == "zip":
            _write_torch_zip(path, {}, pkl=payload)
        elif container == "legacy":
            _write_torch_legacy(path, {}, main=payload)
        else:
            path.write_bytes(payload)
        if container == "plain" and not payload.startswith(b"\x80\x02"):
            # protocol 0/4/5 plain pickles are not a checkpoint format at all
            with pytest.raises(ValueError, match="expected a torch.save, .safetensors or .npz"):
                fastconv.load(path)
        else:
            with pytest.raises(UnsafeCheckpointError, match="nothing from the file was run"):
                fastconv.load(path)
        assert not marker.exists(), name
        if name != "inside-state-dict":
            _assert_payload_is_live(payload, marker)


def test_malicious_torch_save_refused(tmp_path):
    """A payload saved by torch.save itself, next to real tensors."""
    torch = pytest.importorskip("torch")
    marker = tmp_path / "pwned"
    for legacy in (False, True):
        path = tmp_path / f"evil{legacy}.pt"
        torch.save({"w": torch.ones(3), "x": _Evil(marker)}, path,
                   _use_new_zipfile_serialization=not legacy)
        with pytest.raises(UnsafeCheckpointError, match=r"posix\.system|os\.system"):
            fastconv.load(path)
        assert not marker.exists()


@pytest.mark.parametrize("payload, match", [
    (b"\x80\x02\x82\x01.", "extension-registry"),                     # EXT1
    (b"\x80\x02X\x06\x00\x00\x00module\x85Q.", "persistent id"),  # a 'module' persistent id
    (b"\x80\x02ctorch\nFloatStorage\n}b.", "BUILD"),                # BUILD on a stand-in
    (b"\x80\x02ctorch._utils\n_rebuild_tensor_v2\n(N}tb.", "BUILD"),  # setattr on a function
    (b"\x80\x02ctorch\nfloat32\n}b.", "BUILD"),
    (b"\x80\x02ctorch\nSize\n}b.", "BUILD"),
    (b"\x80\x02cbuiltins\ngetattr\n.", "builtins.getattr"),
    (b"\x80\x02ctorch._utils\n_rebuild_qtensor\n.", "_rebuild_qtensor"),
])
def test_other_refusals(tmp_path, payload, match):
    _write_torch_zip(tmp_path / "x.pt", {}, pkl=payload)
    with pytest.raises(UnsafeCheckpointError, match=match):
        fastconv.load(tmp_path / "x.pt")


def test_deeply_nested_pickle(tmp_path):
    n = 100_000
    _write_torch_zip(tmp_path / "deep.pt", {}, pkl=b"\x80\x02" + b"]" * n + b"a" * (n - 1) + b".")
    with pytest.raises(ValueError, match="nested too deeply"):
        fastconv.load(tmp_path / "deep.pt")


def test_unsafe_error_is_a_valueerror_and_an_unpicklingerror():
    assert issubclass(UnsafeCheckpointError, ValueError)
    assert issubclass(UnsafeCheckpointError, pickle.UnpicklingError)


# -- safetensors -----------------------------------------------------------------


def test_safetensors_package_numpy(tmp_path):
    st = pytest.importorskip("safetensors.numpy")
    rng = np.random.default_rng(0)
    arrays = {"w": rng.standard_normal((3, 4)).astype(np.float32),
              "d": rng.standard_normal(5), "h": rng.standard_normal(4).astype(np.float16),
              "i": np.arange(6, dtype=np.int64).reshape(2, 3), "b": np.array([True, False]),
              "u": np.arange(4, dtype=np.uint8), "s": np.array(2.5, dtype=np.float32),
              "e": np.zeros((0, 3), np.float32), "i8": np.arange(-3, 3, dtype=np.int8)}
    st.save_file(arrays, str(tmp_path / "a.safetensors"), metadata={"format": "np"})
    got = fastconv.load(tmp_path / "a.safetensors")
    assert sorted(got) == sorted(arrays)
    _check_same({k: got[k] for k in arrays}, _expected(arrays))


def test_safetensors_package_torch_bfloat16(tmp_path):
    torch = pytest.importorskip("torch")
    st = pytest.importorskip("safetensors.torch")
    g = torch.Generator().manual_seed(0)
    tensors = {"bf": torch.randn(3, 4, generator=g).to(torch.bfloat16),
               "h": torch.randn(5, generator=g).half(), "n": torch.tensor(3)}
    st.save_file(tensors, str(tmp_path / "t.safetensors"))
    got = fastconv.load(tmp_path / "t.safetensors")
    _check_same({k: got[k] for k in tensors}, {k: _torch_expected(v) for k, v in tensors.items()})


def test_handwritten_safetensors(tmp_path):
    values = np.array([[1.5, -2.0, 0.15625], [2.0**127, -0.0, 0.0009765625]], dtype=np.float32)
    bf = _bf16_bits(values).tobytes()
    f16 = np.array([0.5, -1.25], dtype="<f2").tobytes()
    i64 = np.array(7, dtype="<i8").tobytes()
    # data in another order than the header's keys, an empty tensor, metadata
    header = {"__metadata__": {"format": "pt"},
              "n": {"dtype": "I64", "shape": [], "data_offsets": [len(bf) + len(f16), len(bf) + len(f16) + 8]},
              "bf": {"dtype": "BF16", "shape": [2, 3], "data_offsets": [0, len(bf)]},
              "e": {"dtype": "F32", "shape": [0, 4], "data_offsets": [len(bf), len(bf)]},
              "h": {"dtype": "F16", "shape": [2], "data_offsets": [len(bf), len(bf) + len(f16)]}}
    (tmp_path / "h.safetensors").write_bytes(_safetensors_bytes(header, bf + f16 + i64, pad=5))
    got = fastconv.load(tmp_path / "h.safetensors")
    _check_same(got, {"n": np.array(7, dtype=np.int64), "bf": values,
                      "e": np.zeros((0, 4), np.float32),
                      "h": np.array([0.5, -1.25], dtype=np.float32)})


def _st_header_ok():
    return {"a": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]},
            "b": {"dtype": "I64", "shape": [1], "data_offsets": [16, 24]}}


def _mutate(changes):
    h = _st_header_ok()
    for (name, field), value in changes.items():
        if field is None:
            h[name] = value
        else:
            h[name][field] = value
    return h


BAD_HEADERS = {
    "past-the-end": (_mutate({("b", "data_offsets"): [16, 32]}), "expected 8 bytes"),
    "past-the-end-both": (_mutate({("b", "data_offsets"): [24, 32]}), "past its end"),
    "begin>end": (_mutate({("b", "data_offsets"): [24, 16]}), "0 <= begin <= end"),
    "negative": (_mutate({("a", "data_offsets"): [-4, 12]}), "0 <= begin <= end"),
    "bool offset": (_mutate({("a", "data_offsets"): [False, 16]}), "data_offsets"),
    "float offset": (_mutate({("a", "data_offsets"): [0.0, 16]}), "data_offsets"),
    "three offsets": (_mutate({("a", "data_offsets"): [0, 8, 16]}), "data_offsets"),
    "overlap": (_mutate({("b", "data_offsets"): [8, 16], ("b", "dtype"): "F32",
                           ("b", "shape"): [2]}), "an overlap"),
    "gap": (_mutate({("a", "data_offsets"): [0, 8], ("a", "shape"): [2]}), "a gap"),
    "wrong count": (_mutate({("a", "shape"): [2, 3]}), "expected 24 bytes"),
    "negative dim": (_mutate({("a", "shape"): [-2, -2]}), "non-negative ints"),
    "shape str": (_mutate({("a", "shape"): "2,2"}), "non-negative ints"),
    "dtype": (_mutate({("a", "dtype"): "F8_E4M3"}), "expected a dtype among"),
    "extra field": (_mutate({("a", "extra"): 1}), "dtype, shape, data_offsets"),
    "not a dict": (_mutate({("a", None): [0, 16]}), "dtype, shape, data_offsets"),
}


@pytest.mark.parametrize("case", list(BAD_HEADERS))
def test_safetensors_bad_headers(tmp_path, case):
    header, match = BAD_HEADERS[case]
    (tmp_path / "bad.safetensors").write_bytes(_safetensors_bytes(header, bytes(24)))
    with pytest.raises(ValueError, match=r"bad\.safetensors.*not a valid safetensors file"):
        fastconv.load(tmp_path / "bad.safetensors")
    with pytest.raises(ValueError, match=match):
        fastconv.load(tmp_path / "bad.safetensors")


def test_safetensors_trailing_bytes_duplicates_and_json(tmp_path):
    good = _safetensors_bytes(_st_header_ok(), bytes(24))
    (tmp_path / "t.st").write_bytes(good + b"\0" * 8)
    with pytest.raises(ValueError, match="fill the 32-byte buffer, got 24"):
        fastconv.load(tmp_path / "t.st")
    text = b'{"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}, "a": {"dtype": "F32", "shape": [2], "data_offsets": [8, 16]}}'
    (tmp_path / "d.st").write_bytes(struct.pack("<Q", len(text)) + text + bytes(16))
    with pytest.raises(ValueError, match="duplicate key 'a'"):
        fastconv.load(tmp_path / "d.st")
    text = b'{"a": [1, 2'
    (tmp_path / "j.st").write_bytes(struct.pack("<Q", len(text)) + text + bytes(16))
    with pytest.raises(ValueError, match="does not parse"):
        fastconv.load(tmp_path / "j.st")
    text = "{\"\udcff\": 1}".encode("utf-8", "surrogatepass")
    (tmp_path / "u.st").write_bytes(struct.pack("<Q", len(text)) + text)
    with pytest.raises(ValueError, match="does not parse"):
        fastconv.load(tmp_path / "u.st")
    huge = struct.pack("<Q", 2**40) + b"{" + bytes(16)
    (tmp_path / "huge.st").write_bytes(huge)
    with pytest.raises(ValueError, match="at most 100000000 bytes"):
        fastconv.load(tmp_path / "huge.st")


# -- npz -------------------------------------------------------------------------------


@pytest.mark.parametrize("compressed", [False, True])
def test_npz_round_trip(tmp_path, compressed):
    arrays = _strided_arrays()
    (np.savez_compressed if compressed else np.savez)(tmp_path / "a.npz", **arrays)
    _check_same(fastconv.load(tmp_path / "a.npz"), _expected(arrays))
    np.savez(tmp_path / "be.npz", w=np.arange(4, dtype=">f4"))
    got = fastconv.load(tmp_path / "be.npz")["w"]
    assert got.dtype.isnative
    np.testing.assert_array_equal(got, np.arange(4, dtype=np.float32))
    np.savez(tmp_path / "empty.npz")
    assert fastconv.load(tmp_path / "empty.npz") == {}


def test_npz_of_a_fastconv_model(tmp_path):
    model = _fastconv_model()
    np.savez(tmp_path / "m.npz", **model.state_dict())
    state = fastconv.load(tmp_path / "m.npz")
    _check_same(state, model.state_dict())
    other = _fastconv_model()
    other.load_state_dict(state)
    x = np.random.default_rng(1).standard_normal((2, 3, 8, 8)).astype(np.float32)
    np.testing.assert_array_equal(other(x), model(x))


def test_npz_object_array_refused(tmp_path):
    np.savez(tmp_path / "o.npz", o=np.array([{"a": 1}], dtype=object))
    with pytest.raises(ValueError, match=r"o\.npz.*not a readable \.npz.*allow_pickle"):
        fastconv.load(tmp_path / "o.npz")


# -- truncated and corrupt files -----------------------------------------------------


def _sample_files(tmp_path):
    arrays = _strided_arrays()
    tensors = {k: _fake_tensor(v, k) for k, v in arrays.items()}
    _write_torch_zip(tmp_path / "z.pt", tensors)
    _write_torch_legacy(tmp_path / "l.pt", tensors)
    _write_safetensors(tmp_path / "s.safetensors", {k: v for k, v in arrays.items()})
    np.savez(tmp_path / "n.npz", **arrays)
    np.savez_compressed(tmp_path / "c.npz", **arrays)
    return ["z.pt", "l.pt", "s.safetensors", "n.npz", "c.npz"], _expected(arrays)


def test_truncated_files(tmp_path):
    names, _ = _sample_files(tmp_path)
    for name in names:
        data = (tmp_path / name).read_bytes()
        cuts = sorted({0, 1, 2, 4, 7, 8, 9, 16, 30, 64, 100, len(data) // 3, len(data) // 2,
                       len(data) - 22, len(data) - 9, len(data) - 1})
        for cut in cuts:
            (tmp_path / "cut").write_bytes(data[:cut])
            with pytest.raises(ValueError, match="Cannot load .*cut") as info:
                fastconv.load(tmp_path / "cut")
            assert type(info.value) in (ValueError, UnsafeCheckpointError), (name, cut)


def test_flipped_bytes(tmp_path):
    """Every flipped byte gives a dict of arrays or a ValueError naming the file, nothing else."""
    names, expected = _sample_files(tmp_path)
    for name in names:
        data = (tmp_path / name).read_bytes()
        errors = 0
        for pos in range(0, len(data), 3):
            bad = bytearray(data)
            bad[pos] ^= 0xFF
            try:
                got = fastconv.load(io.BytesIO(bytes(bad)))
            except ValueError as exc:
                assert "Cannot load" in str(exc) or "Expected key" in str(exc), (name, pos, exc)
                errors += 1
            else:
                assert all(isinstance(a, np.ndarray) for a in got.values()), (name, pos)
        assert errors > 0, name


@pytest.mark.parametrize("record", ["data/0", "data.pkl"])
def test_crc_detects_corrupt_records(tmp_path, record):
    w = np.arange(64, dtype=np.float32)
    _write_torch_zip(tmp_path / "z.pt", {"w": _fake_tensor(w, "0")})
    data = bytearray((tmp_path / "z.pt").read_bytes())
    pos = (data.find(w.tobytes()) + 40 if record == "data/0"
           else data.find(b"_rebuild_tensor_v2") + 3)
    data[pos] ^= 1
    (tmp_path / "flip.pt").write_bytes(bytes(data))
    with pytest.raises(ValueError, match=rf"flip\.pt.*corrupt zip archive.*CRC.*{record}"):
        fastconv.load(tmp_path / "flip.pt")


@pytest.mark.parametrize("content, match", [
    (b"", "the file is empty"),
    (b"hello world, not a checkpoint", "expected a torch.save, .safetensors or .npz file"),
    (b"\x93NUMPY\x01\x00v\x00", "a single .npy array"),
    (pickle.dumps({"w": [1.0, 2.0]}, protocol=2), "a pickle that is not one"),
])
def test_not_a_checkpoint(tmp_path, content, match):
    (tmp_path / "f.bin").write_bytes(content)
    with pytest.raises(ValueError, match=match):
        fastconv.load(tmp_path / "f.bin")


def test_zip_of_something_else(tmp_path):
    with zipfile.ZipFile(tmp_path / "other.zip", "w") as z:
        z.writestr("readme.txt", "hi")
    with pytest.raises(ValueError, match=r"expected a zip holding a torch.save pickle.*readme\.txt"):
        fastconv.load(tmp_path / "other.zip")


def test_bad_arguments(tmp_path):
    with pytest.raises(FileNotFoundError):
        fastconv.load(tmp_path / "missing.pt")
    _write_safetensors(tmp_path / "s.st", {"a": np.zeros(2, np.float32)})
    with pytest.raises(ValueError, match="Expected key=None for a safetensors file"):
        fastconv.load(tmp_path / "s.st", key="model")
    with pytest.raises(TypeError, match="Expected key to be a str"):
        fastconv.load(tmp_path / "s.st", key=3)
    with pytest.raises(TypeError, match="binary file object"):
        fastconv.load(io.StringIO("x"))


def test_no_torch_imported(tmp_path):
    """Loading a torch.save file never imports torch (run in a fresh interpreter)."""
    import subprocess

    _write_torch_zip(tmp_path / "z.pt", {"w": _fake_tensor(np.ones(3, np.float32), "0")})
    code = ("import sys, fastconv; s = fastconv.load(sys.argv[1]); "
            "assert 'torch' not in sys.modules and 'safetensors' not in sys.modules; "
            "print(s['w'].sum())")
    env = dict(os.environ)
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "z.pt")],
                         capture_output=True, text=True, env=env, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "3.0"
