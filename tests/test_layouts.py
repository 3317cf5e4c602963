"""Results do not depend on memory layout, and dtypes follow one rule.

* Any layout of the same values (strided, reversed, offset, Fortran-ordered,
  read-only or broadcast arrays) gives bitwise the same answer as a
  C-contiguous copy.
* float32 stays float32 and float64 stays float64; integer and bool inputs
  are cast to float64; mixed float inputs follow ``numpy.result_type``;
  max-pool indices are int64.
* An empty batch gives an empty result of the right shape and dtype (and a
  zero gradient for weights and bias).
* No op writes into its inputs.

Every op and gradient is described once in ``CASES`` as its array operands
plus a call; the tests transform the operands and compare.
"""

import numpy as np
import pytest

import fastconv as fc
from fastconv import grad


def _make_cases(rng):
    """name -> (array operands, call). Float operands are float64; integer
    operands (max-pool indices) are int64 and never cast."""
    def r(*shape):
        return rng.standard_normal(shape)

    conv2d = dict(stride=(2, 1), padding=1, dilation=(1, 2))  # (2, 3, 7, 8) -> (2, 4, 4, 8)
    convt2d = dict(stride=2, padding=1, output_padding=1)     # (2, 3, 4, 4) -> (2, 2, 8, 8)
    avg2d = dict(stride=2, padding=1, count_include_pad=False)  # (2, 3, 8, 7) -> (2, 3, 4, 4)
    return {
        "conv2d": ([r(2, 3, 7, 8), r(4, 3, 3, 2), r(4)],
                   lambda x, w, b: fc.conv2d(x, w, b, **conv2d)),
        "conv2d-groups": ([r(2, 4, 6, 6), r(6, 2, 3, 3), r(6)],
                          lambda x, w, b: fc.conv2d(x, w, b, padding="same", groups=2)),
        "conv1d": ([r(2, 3, 8), r(4, 3, 3), r(4)],
                   lambda x, w, b: fc.conv1d(x, w, b, padding="same")),
        "conv_transpose2d": ([r(2, 3, 4, 4), r(3, 2, 3, 3), r(2)],
                             lambda x, w, b: fc.conv_transpose2d(x, w, b, **convt2d)),
        "conv_transpose1d": ([r(2, 3, 5), r(3, 2, 3), r(2)],
                             lambda x, w, b: fc.conv_transpose1d(x, w, b, stride=2)),
        "max_pool2d": ([r(2, 3, 8, 7)],
                       lambda x: fc.max_pool2d(x, 3, stride=2, padding=1, ceil_mode=True,
                                               return_indices=True)),
        "max_pool1d": ([r(2, 3, 8)], lambda x: fc.max_pool1d(x, 2, return_indices=True)),
        "avg_pool2d": ([r(2, 3, 8, 7)], lambda x: fc.avg_pool2d(x, 3, **avg2d)),
        "avg_pool1d": ([r(2, 3, 8)], lambda x: fc.avg_pool1d(x, 3, stride=2, padding=1)),
        "grad.conv2d_input": ([r(4, 3, 3, 2), r(2, 4, 4, 8)],
                              lambda w, gy: grad.conv2d_input((2, 3, 7, 8), w, gy, **conv2d)),
        "grad.conv2d_weight": ([r(2, 3, 7, 8), r(2, 4, 4, 8)],
                               lambda x, gy: grad.conv2d_weight(x, (4, 3, 3, 2), gy, **conv2d)),
        "grad.conv1d_input": ([r(4, 3, 3), r(2, 4, 6)],
                              lambda w, gy: grad.conv1d_input((2, 3, 8), w, gy)),
        "grad.conv1d_weight": ([r(2, 3, 8), r(2, 4, 6)],
                               lambda x, gy: grad.conv1d_weight(x, (4, 3, 3), gy)),
        "grad.conv_transpose2d_input": (
            [r(3, 2, 3, 3), r(2, 2, 8, 8)],
            lambda w, gy: grad.conv_transpose2d_input((2, 3, 4, 4), w, gy, **convt2d)),
        "grad.conv_transpose2d_weight": (
            [r(2, 3, 4, 4), r(2, 2, 8, 8)],
            lambda x, gy: grad.conv_transpose2d_weight(x, (3, 2, 3, 3), gy, **convt2d)),
        "grad.conv_bias": ([r(2, 4, 4, 8)], grad.conv_bias),
        "grad.max_pool2d": ([r(2, 3, 4, 4), rng.integers(0, 8 * 7, (2, 3, 4, 4))],
                            lambda gy, idx: grad.max_pool2d(gy, idx, (2, 3, 8, 7))),
        "grad.avg_pool2d": ([r(2, 3, 4, 4)],
                            lambda gy: grad.avg_pool2d(gy, (2, 3, 8, 7), 3, **avg2d)),
    }


CASES = _make_cases(np.random.default_rng(2024))


def _outputs(result):
    return result if isinstance(result, tuple) else (result,)


def _assert_identical(got, expected):
    got, expected = _outputs(got), _outputs(expected)
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        assert g.dtype == e.dtype, (g.dtype, e.dtype)
        np.testing.assert_array_equal(g, e, strict=True)


def _map_floats(operands, fn):
    """Apply ``fn`` to the float operands; leave integer ones (indices) alone."""
    return [fn(a) if a.dtype.kind == "f" else a for a in operands]


# -- layouts --------------------------------------------------------------------
# Each function returns an array of the given values (or, for broadcast_to,
# values of its own) in an unusual memory layout.


def _poisoned_parent(a, shape):
    """A larger array filled with a value that would show up if read by mistake."""
    return np.full(shape, True if a.dtype == bool else 99, dtype=a.dtype)


def _strided(a):
    steps = (2, 3) if a.ndim >= 2 else (2,)
    head, tail = a.shape[: a.ndim - len(steps)], a.shape[a.ndim - len(steps):]
    parent = _poisoned_parent(a, head + tuple(n * s for n, s in zip(tail, steps)))
    view = (Ellipsis,) + tuple(slice(None, None, s) for s in steps)
    parent[view] = a
    return parent[view]


def _reversed_last(a):
    return a[..., ::-1].copy()[..., ::-1]


def _reversed_all(a):
    flip = (slice(None, None, -1),) * a.ndim
    return a[flip].copy()[flip]


def _channel_offset(a):
    axis = 1 if a.ndim >= 2 else 0
    shape = list(a.shape)
    shape[axis] += 3
    parent = _poisoned_parent(a, tuple(shape))
    view = (slice(None),) * axis + (slice(1, 1 + a.shape[axis]),)
    parent[view] = a
    return parent[view]


def _read_only(a):
    a = a.copy()
    a.setflags(write=False)
    return a


def _broadcast(a):
    return np.broadcast_to(a[:1], a.shape)


LAYOUTS = {
    "strided": _strided,
    "reversed-last-axis": _reversed_last,
    "reversed-all-axes": _reversed_all,
    "channel-offset": _channel_offset,
    "fortran": np.asfortranarray,
    "read-only": _read_only,
    "broadcast_to": _broadcast,
}


def test_layouts_are_what_they_claim():
    a = np.arange(2 * 5 * 4 * 6, dtype=np.float64).reshape(2, 5, 4, 6)
    for name, layout in LAYOUTS.items():
        v = layout(a)
        assert v.shape == a.shape, name
        if name != "broadcast_to":
            np.testing.assert_array_equal(v, a, err_msg=name)
        if name not in ("read-only",):
            assert not v.flags.c_contiguous, name
    assert not LAYOUTS["read-only"](a).flags.writeable
    assert LAYOUTS["broadcast_to"](a).strides[0] == 0
    assert min(LAYOUTS["reversed-all-axes"](a).strides) < 0
    assert LAYOUTS["channel-offset"](a).base is not None


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("op", CASES)
def test_layout_gives_bitwise_same_result(op, layout, dtype):
    operands, call = CASES[op]
    arranged = [LAYOUTS[layout](a) for a in _map_floats(operands, lambda a: a.astype(dtype))]
    before = [a.copy() for a in arranged]
    expected = call(*[np.ascontiguousarray(a) for a in arranged])
    _assert_identical(call(*arranged), expected)
    for a, b in zip(arranged, before):
        np.testing.assert_array_equal(a, b, strict=True)


# -- dtypes ---------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("op", CASES)
def test_float_dtype_is_kept(op, dtype):
    operands, call = CASES[op]
    results = _outputs(call(*_map_floats(operands, lambda a: a.astype(dtype))))
    assert results[0].dtype == dtype
    for extra in results[1:]:  # max-pool indices
        assert extra.dtype == np.int64


_TO_INTEGER = {
    "int32": lambda a: np.round(3 * a).astype(np.int32),
    "int64": lambda a: np.round(3 * a).astype(np.int64),
    "uint8": lambda a: np.round(3 * np.abs(a)).astype(np.uint8),
    "bool": lambda a: a > 0,
}


@pytest.mark.parametrize("kind", _TO_INTEGER)
@pytest.mark.parametrize("op", CASES)
def test_integer_and_bool_inputs_are_cast_to_float64(op, kind):
    operands, call = CASES[op]
    ints = _map_floats(operands, _TO_INTEGER[kind])
    as_float = [a.astype(np.float64) if a is not b else a for a, b in zip(ints, operands)]
    got = call(*ints)
    assert _outputs(got)[0].dtype == np.float64
    _assert_identical(got, call(*as_float))


_MIXED = [name for name, (operands, _) in CASES.items()
          if sum(a.dtype.kind == "f" for a in operands) >= 2]


@pytest.mark.parametrize("op", _MIXED)
def test_float32_with_float64_gives_float64(op):
    """The first operand float32, the rest float64: numpy.result_type rules."""
    operands, call = CASES[op]
    mixed = [operands[0].astype(np.float32)] + operands[1:]
    got = call(*mixed)
    assert np.result_type(*mixed) == np.float64
    assert _outputs(got)[0].dtype == np.float64
    _assert_identical(got, call(*[mixed[0].astype(np.float64)] + operands[1:]))


@pytest.mark.parametrize("op", _MIXED)
def test_integer_with_float32_gives_float64(op):
    """An integer operand counts as float64, so it promotes float32 partners."""
    operands, call = CASES[op]
    mixed = [np.round(3 * operands[0]).astype(np.int16)] + [
        a.astype(np.float32) for a in operands[1:]]
    got = call(*mixed)
    assert _outputs(got)[0].dtype == np.float64
    _assert_identical(got, call(*[a.astype(np.float64) for a in mixed]))


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64, bool])
@pytest.mark.parametrize("op, shape", [(fc.max_pool1d, (1, 2, 6)), (fc.max_pool2d, (1, 2, 6, 6))],
                         ids=["max_pool1d", "max_pool2d"])
def test_max_pool_indices_are_int64(op, shape, dtype):
    x = np.random.default_rng(1).standard_normal(shape)
    out, idx = op(x.astype(dtype), 2, return_indices=True)
    assert idx.dtype == np.int64
    assert out.dtype == (np.float64 if np.dtype(dtype).kind in "bi" else dtype)


# -- empty batch ------------------------------------------------------------------


def _empty_cases(dtype):
    def z(*shape):
        return np.zeros(shape, dtype=dtype)

    # name -> (call, expected shapes); weight and bias gradients must be zero.
    return {
        "conv2d": (lambda: fc.conv2d(z(0, 3, 8, 8), z(4, 3, 3, 3), z(4), padding=1),
                   [(0, 4, 8, 8)]),
        "conv1d": (lambda: fc.conv1d(z(0, 3, 8), z(4, 3, 3), stride=2), [(0, 4, 3)]),
        "conv_transpose2d": (lambda: fc.conv_transpose2d(z(0, 3, 4, 4), z(3, 2, 3, 3), z(2),
                                                         stride=2),
                             [(0, 2, 9, 9)]),
        "conv_transpose1d": (lambda: fc.conv_transpose1d(z(0, 3, 4), z(3, 2, 3)), [(0, 2, 6)]),
        "max_pool2d": (lambda: fc.max_pool2d(z(0, 3, 8, 8), 2, return_indices=True),
                       [(0, 3, 4, 4), (0, 3, 4, 4)]),
        "max_pool1d": (lambda: fc.max_pool1d(z(0, 3, 8), 3, stride=1, return_indices=True),
                       [(0, 3, 6), (0, 3, 6)]),
        "avg_pool2d": (lambda: fc.avg_pool2d(z(0, 3, 8, 8), 3, padding=1), [(0, 3, 3, 3)]),
        "avg_pool1d": (lambda: fc.avg_pool1d(z(0, 3, 8), 2), [(0, 3, 4)]),
        "grad.conv2d_input": (lambda: grad.conv2d_input((0, 3, 8, 8), z(4, 3, 3, 3),
                                                        z(0, 4, 6, 6)),
                              [(0, 3, 8, 8)]),
        "grad.conv1d_input": (lambda: grad.conv1d_input((0, 3, 8), z(4, 3, 3), z(0, 4, 6)),
                              [(0, 3, 8)]),
        "grad.conv2d_weight": (lambda: grad.conv2d_weight(z(0, 3, 8, 8), (4, 3, 3, 3),
                                                          z(0, 4, 6, 6)),
                               [(4, 3, 3, 3)]),
        "grad.conv1d_weight": (lambda: grad.conv1d_weight(z(0, 3, 8), (4, 3, 3), z(0, 4, 6)),
                               [(4, 3, 3)]),
        "grad.conv_transpose2d_input": (
            lambda: grad.conv_transpose2d_input((0, 3, 4, 4), z(3, 2, 3, 3), z(0, 2, 6, 6)),
            [(0, 3, 4, 4)]),
        "grad.conv_transpose2d_weight": (
            lambda: grad.conv_transpose2d_weight(z(0, 3, 4, 4), (3, 2, 3, 3), z(0, 2, 6, 6)),
            [(3, 2, 3, 3)]),
        "grad.conv_bias": (lambda: grad.conv_bias(z(0, 4, 6, 6)), [(4,)]),
        "grad.max_pool2d": (lambda: grad.max_pool2d(z(0, 3, 4, 4),
                                                    np.zeros((0, 3, 4, 4), np.int64),
                                                    (0, 3, 8, 8)),
                            [(0, 3, 8, 8)]),
        "grad.max_pool1d": (lambda: grad.max_pool1d(z(0, 3, 4), np.zeros((0, 3, 4), np.int64),
                                                    (0, 3, 8)),
                            [(0, 3, 8)]),
        "grad.avg_pool2d": (lambda: grad.avg_pool2d(z(0, 3, 4, 4), (0, 3, 8, 8), 2),
                            [(0, 3, 8, 8)]),
        "grad.avg_pool1d": (lambda: grad.avg_pool1d(z(0, 3, 4), (0, 3, 8), 2), [(0, 3, 8)]),
    }


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("op", _empty_cases(np.float64))
def test_empty_batch(op, dtype):
    call, shapes = _empty_cases(dtype)[op]
    results = _outputs(call())
    assert [r.shape for r in results] == shapes
    assert results[0].dtype == dtype
    for extra in results[1:]:
        assert extra.dtype == np.int64
    if shapes[0][0] != 0:  # weight or bias gradient: nothing to sum over
        np.testing.assert_array_equal(results[0], np.zeros(shapes[0], dtype), strict=True)


# -- inputs are left alone ----------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("op", CASES)
def test_inputs_are_not_modified(op, dtype):
    operands, call = CASES[op]
    operands = _map_floats(operands, lambda a: a.astype(dtype))
    before = [a.copy() for a in operands]
    first = call(*operands)
    for a, b in zip(operands, before):
        np.testing.assert_array_equal(a, b, strict=True)
    _assert_identical(call(*operands), first)
