"""fastconv beside other native libraries in one process: PyTorch (its own
OpenMP runtime), NumPy/SciPy's OpenBLAS, and threadpoolctl. Each scenario runs
in a fresh interpreter so that the import order is the one under test."""

import importlib.util
import subprocess
import sys
import textwrap

import pytest

CHECK_CONV = """
import numpy as np
import fastconv
rng = np.random.default_rng(0)
x = rng.standard_normal((8, 16, 24, 24))
w = rng.standard_normal((32, 16, 3, 3))
y = fastconv.conv2d(x, w, padding=1)
np.testing.assert_allclose(y, fastconv.reference.conv2d(x, w, padding=1), rtol=1e-10, atol=1e-10)
"""


def _run(imports, code=""):
    """Run the imports, then CHECK_CONV, then code, in a fresh interpreter."""
    script = textwrap.dedent(imports) + CHECK_CONV + textwrap.dedent(code)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def _has(module):
    return importlib.util.find_spec(module) is not None


@pytest.mark.skipif(not _has("torch"), reason="PyTorch is not installed")
@pytest.mark.parametrize("first", ["torch", "fastconv"])
def test_beside_torch_in_either_order(first):
    second = "fastconv" if first == "torch" else "torch"
    out = _run(f"""
        import {first}
        import {second}
    """, """
        import torch
        torch.set_num_threads(2)
        fastconv.set_num_threads(2)
        for _ in range(3):  # interleave the two OpenMP runtimes
            yt = torch.nn.functional.conv2d(torch.from_numpy(x), torch.from_numpy(w), padding=1)
            y = fastconv.conv2d(x, w, padding=1)
            np.testing.assert_allclose(y, yt.numpy(), rtol=1e-10, atol=1e-10)
        print("ok")
    """)
    assert out.strip().endswith("ok")


def test_beside_openblas_and_scipy():
    out = _run("import scipy.linalg\n" if _has("scipy") else "", """
        a = rng.standard_normal((400, 400))
        for _ in range(3):  # BLAS threads and OpenMP threads take turns
            b = a @ a
            y2 = fastconv.conv2d(x, w, padding=1)
            np.testing.assert_array_equal(y2, y)
        np.testing.assert_allclose(b, a @ a)
        print("ok")
    """)
    assert out.strip().endswith("ok")


@pytest.mark.skipif(not _has("threadpoolctl"), reason="threadpoolctl is not installed")
def test_threadpoolctl_sees_and_limits_fastconv_runtime():
    out = _run("", """
        from fastconv._kernels import _openmp
        from threadpoolctl import threadpool_info, threadpool_limits
        if not _openmp.openmp_enabled():
            print("serial build"); raise SystemExit
        runtimes = [i for i in threadpool_info() if i["user_api"] == "openmp"]
        assert runtimes, threadpool_info()
        with threadpool_limits(limits=1, user_api="openmp"):
            assert fastconv.get_num_threads() == 1
        print("ok", [r["filepath"] for r in runtimes])
    """)
    assert out.startswith(("ok", "serial build"))
