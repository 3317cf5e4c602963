"""The fused ReLU of conv1d/conv2d (``activation='relu'``): on every forward
path, against the reference's conv followed by ``np.maximum``, on each ISA
build this CPU runs."""

import numpy as np
import pytest
from conftest import assert_close
from test_paths import isa  # noqa: F401  (the fixture: each ISA build in turn)

import fastconv
from fastconv import _plan
from fastconv import reference as ref
from fastconv._validation import conv_geometry

# (input shape, weight shape, stride, padding, groups): between them every
# forward path applies somewhere, and one has K = 2700 > KC (several blocks of
# K, the ReLU on the last one only)
CASES = [
    ((2, 5, 9, 11), (7, 5, 3, 3), 1, 1, 1),
    ((3, 1, 10, 12), (2, 1, 5, 5), 1, 2, 1),
    ((2, 6, 8, 9), (6, 1, 3, 3), 1, 1, 6),
    ((2, 4, 9, 8), (4, 1, 3, 3), 2, 1, 4),
    ((2, 300, 5, 5), (9, 300, 3, 3), 1, 0, 1),
    ((7, 4, 10), (6, 4, 3), 1, 1, 1),
]


@pytest.mark.usefixtures("isa")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_every_forward_path_fuses_the_relu(dtype):
    rng = np.random.default_rng(7)
    taken = set()
    for xs, ws, stride, padding, groups in CASES:
        nd = len(xs) - 2
        conv = fastconv.conv1d if nd == 1 else fastconv.conv2d
        x = rng.standard_normal(xs).astype(dtype)
        w = rng.standard_normal(ws).astype(dtype)
        b = rng.standard_normal(ws[0]).astype(dtype)
        x.flat[x.size // 3] = np.nan  # NaN stays NaN through the ReLU
        geo = conv_geometry(xs, ws, nd, stride, padding, 1, groups)
        want = np.maximum(getattr(ref, f"conv{nd}d")(x, w, b, stride, padding, groups=groups), 0)
        assert np.isnan(want).any() and (want == 0).any()
        for path in _plan.PATHS["forward"]:
            with _plan.forced(forward=path):
                try:
                    _plan.plan_for("forward", geo, x.itemsize)
                except ValueError as exc:
                    assert "does not apply" in str(exc)
                    continue
                got = conv(x, w, b, stride, padding, groups=groups, activation="relu")
            assert got.dtype == dtype
            np.testing.assert_array_equal(np.isnan(got), np.isnan(want), err_msg=path)
            finite = ~np.isnan(want)
            assert (got[finite] >= 0).all(), path
            assert_close(np.where(finite, got, 0), np.where(finite, want, 0),
                         n_terms=xs[1] // groups * 25, err_msg=f"{path} {xs}")
            taken.add(path)
    assert taken == set(_plan.PATHS["forward"])


def test_the_reference_fuses_the_same_relu():
    x = np.array([[[1.0, -2.0, 3.0, np.nan]]])
    w = np.array([[[1.0]]])
    for op in (fastconv.conv1d, ref.conv1d):
        np.testing.assert_array_equal(op(x, w, activation="relu"), [[[1.0, 0.0, 3.0, np.nan]]])
        np.testing.assert_array_equal(op(x, w, activation=None), x)


@pytest.mark.parametrize("bad", ["ReLU", "tanh", 1, True, ("relu",)])
def test_an_unknown_activation_is_refused_by_both_backends(bad):
    x, w = np.ones((1, 1, 4, 4)), np.ones((1, 1, 3, 3))
    for op in (fastconv.conv2d, ref.conv2d):
        with pytest.raises(ValueError, match="Expected activation None or 'relu'"):
            op(x, w, activation=bad)
