"""Every ISA build of the kernels this CPU can run gives the reference's
answers (the builds differ in their micro-kernel width, and in which pooling
loops vectorise)."""

import os
import subprocess
import sys

import pytest

from fastconv import _config

SCRIPT = """
import numpy as np, fastconv
from fastconv import reference as ref
assert fastconv._config.ISA == {isa!r}, fastconv._config.ISA
rng = np.random.default_rng(0)
for dtype, tol in ((np.float32, 2e-4), (np.float64, 1e-10)):
    for (n, ci, co, h, k, s, p, d, g) in [(3, 4, 6, 11, 3, 2, 1, 2, 2), (2, 8, 70, 9, 3, 1, 1, 1, 1),
                                          (5, 3, 5, 6, 2, 1, 0, 1, 1), (1, 6, 6, 13, 3, 1, 1, 1, 6)]:
        x = rng.standard_normal((n, ci, h, h)).astype(dtype)
        w = rng.standard_normal((co, ci // g, k, k)).astype(dtype)
        kw = dict(stride=s, padding=p, dilation=d, groups=g)
        y = fastconv.conv2d(x, w, **kw)
        gy = rng.standard_normal(y.shape).astype(dtype)
        pairs = [(y, ref.conv2d(x, w, **kw)),
                 (fastconv.grad.conv2d_input(x.shape, w, gy, **kw), ref.conv2d_input(x.shape, w, gy, **kw)),
                 (fastconv.grad.conv2d_weight(x, w.shape, gy, **kw), ref.conv2d_weight(x, w.shape, gy, **kw))]
        for got, want in pairs:
            err = np.max(np.abs(got - want)) / max(1.0, np.max(np.abs(want)))
            assert err < tol, (dtype, n, ci, co, err)
    # rows long enough for the unrolled pooling rows to end in an overlapping vector
    for (shape, k, s, p) in [((2, 3, 9, 75), 3, 2, 1), ((2, 3, 8, 70), 2, 2, 0),
                             ((1, 2, 7, 40), 3, 1, 1), ((1, 2, 7, 40), (2, 3), 1, 0)]:
        x = rng.integers(-3, 4, size=shape).astype(dtype)  # ties
        y, idx = fastconv.max_pool2d(x, k, s, p, return_indices=True)
        y_ref, idx_ref = ref.max_pool2d(x, k, s, p, return_indices=True)
        np.testing.assert_array_equal(y, y_ref)
        np.testing.assert_array_equal(idx, idx_ref)
        np.testing.assert_allclose(fastconv.avg_pool2d(x, k, s, p), ref.avg_pool2d(x, k, s, p),
                                   rtol=tol)
print("ok")
"""


@pytest.mark.parametrize("isa", ["generic", "avx2", "avx512"])
def test_isa_build_matches_reference(isa):
    if isa not in _config._supported_isas():
        pytest.skip(f"this CPU cannot run the {isa} build")
    env = dict(os.environ, FASTCONV_ISA=isa)
    proc = subprocess.run([sys.executable, "-c", SCRIPT.format(isa=isa)], env=env,
                          capture_output=True, text=True, timeout=300)
    if "No module named 'fastconv._kernels._" in proc.stderr:
        pytest.skip(f"the {isa} build is not part of this installation")
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stdout + proc.stderr
