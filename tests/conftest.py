"""Shared test helpers: one compare function, tolerances per dtype, RNG."""

import numpy as np
import pytest

# Per-dtype relative tolerance of one rounded product-sum term. A result that
# sums n terms may drift by about eps * sqrt(n) of the terms' magnitude; the
# bound below allows eps * n, which is loose enough for any summation order
# and tight enough to catch a single wrong or missing term.
EPS = {np.dtype(np.float32): 1.2e-7, np.dtype(np.float64): 2.3e-16}


def assert_close(actual, expected, *, n_terms=1, scale=None, err_msg=""):
    """Compare an op's result with an oracle, tolerance scaled with n_terms.

    ``scale`` is the magnitude of the summed terms (defaults to the largest
    |expected|, at least 1).
    """
    actual = np.asarray(actual)
    expected = np.asarray(expected)
    assert actual.shape == expected.shape, (actual.shape, expected.shape, err_msg)
    dtype = actual.dtype if actual.dtype in EPS else np.dtype(np.float64)
    if scale is None:
        scale = max(1.0, float(np.max(np.abs(expected), initial=0.0)))
    atol = 4 * EPS[dtype] * max(1, n_terms) * scale
    np.testing.assert_allclose(actual, expected, rtol=0, atol=atol, err_msg=err_msg)


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


@pytest.fixture
def threads():
    """Restore the fastconv thread setting after a test changes it."""
    import fastconv

    yield fastconv
    fastconv.set_num_threads(None)


def pytest_report_header(config):
    """Say which fastconv is under test: the source tree's or an installed one."""
    import fastconv
    from fastconv import _config
    from fastconv._kernels import _openmp

    return (f"fastconv {fastconv.__version__} from {fastconv.__file__}; openmp "
            f"{'on' if _openmp.openmp_enabled() else 'OFF'}, {_config.get_num_threads()} "
            f"threads, {_config.ISA} kernels")
