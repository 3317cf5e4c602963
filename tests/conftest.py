"""Shared test helpers: one compare function, tolerances per dtype, RNG,
thread and grain fixtures, the ISA build under test, the ``slow`` marker.

* ``pytest --isa generic|avx2|avx512`` (or ``FASTCONV_ISA=...``) runs the
  whole suite on one ISA build of the kernels (fastconv._config honours the
  variable at import); the tests that switch builds themselves
  (tests/test_paths.py's ``isa`` fixture) then keep to it.
* ``slow`` tests (sizes past 2**31 elements, many GB) are deselected unless
  ``-m slow`` is given (pyproject.toml's addopts); the benchmark job runs them.
"""

import os

import numpy as np
import pytest

ISAS = ("generic", "avx2", "avx512")


def pytest_addoption(parser):
    parser.addoption("--isa", choices=ISAS, default=None,
                     help="run on this ISA build of the kernels (sets FASTCONV_ISA)")


def pytest_configure(config):
    isa = config.getoption("--isa")
    if isa:
        os.environ["FASTCONV_ISA"] = isa
    config.addinivalue_line(
        "markers", "slow: sizes past 2**31 elements and many GB; run with -m slow")


def pytest_sessionstart(session):
    """The build under test is the one asked for, or the run stops."""
    isa = os.environ.get("FASTCONV_ISA")
    if isa:
        from fastconv import _config

        if _config.ISA != isa:
            raise pytest.UsageError(f"FASTCONV_ISA={isa} but fastconv runs {_config.ISA}")


def isa_allowed(name):
    """Whether a test may switch to the ISA build `name` in this run."""
    forced = os.environ.get("FASTCONV_ISA")
    return forced is None or forced == name

# Per-dtype relative tolerance of one rounded product-sum term. A result that
# sums n terms may drift by about eps * sqrt(n) of the terms' magnitude; the
# bound below allows eps * n, which is loose enough for any summation order
# and tight enough to catch a single wrong or missing term.
EPS = {np.dtype(np.float32): 1.2e-7, np.dtype(np.float64): 2.3e-16}


def assert_close(actual, expected, *, n_terms=1, scale=None, rtol=None, atol=None,
                 err_msg=""):
    """Compare a result with an oracle: the one comparison of the test suite.

    By default the tolerance is that of rounding, derived from the geometry:
    ``n_terms`` is the length of the sums behind one value (the reduction
    length of the op: C_in/groups * taps for a forward convolution, N * OH *
    OW for a weight gradient, the taps for pooling) and ``scale`` the
    magnitude of the summed terms (defaults to the largest |expected|, at
    least 1). The dtype is that of ``actual`` (float64 for non-float
    results).

    Comparisons whose error is not rounding (central differences, sampled
    statistics, a printed constant) give ``rtol`` and/or ``atol`` instead,
    explicitly.
    """
    actual = np.asarray(actual)
    expected = np.asarray(expected)
    assert actual.shape == expected.shape, (actual.shape, expected.shape, err_msg)
    if rtol is None and atol is None:
        dtype = actual.dtype if actual.dtype in EPS else np.dtype(np.float64)
        if scale is None:
            scale = max(1.0, float(np.max(np.abs(expected), initial=0.0)))
        rtol, atol = 0.0, 4 * EPS[dtype] * max(1, n_terms) * scale
    np.testing.assert_allclose(actual, expected, rtol=rtol or 0.0, atol=atol or 0.0,
                               err_msg=err_msg)


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


@pytest.fixture
def threads():
    """Restore the fastconv thread setting after a test changes it."""
    import fastconv

    yield fastconv
    fastconv.set_num_threads(None)


@pytest.fixture
def low_grain(monkeypatch):
    """The work grain (fastconv._plan.GRAIN) lowered to 1: every call, however
    small, is shared among all the threads it is given."""
    from fastconv import _plan

    monkeypatch.setattr(_plan, "GRAIN", {"conv": 1, "pool": 1})
    _plan._plan_cached.cache_clear()
    yield
    _plan._plan_cached.cache_clear()


@pytest.fixture(params=[1, 3], ids=["1-thread", "3-threads"])
def n_threads(request, low_grain, threads):
    """1 or 3 threads, with the grain lowered so that small cases use them."""
    threads.set_num_threads(request.param)
    yield request.param


def pytest_report_header(config):
    """Say which fastconv is under test: the source tree's or an installed one."""
    import fastconv
    from fastconv import _config
    from fastconv._kernels import _openmp

    return (f"fastconv {fastconv.__version__} from {fastconv.__file__}; openmp "
            f"{'on' if _openmp.openmp_enabled() else 'OFF'}, {_config.get_num_threads()} "
            f"threads, {_config.ISA} kernels")
