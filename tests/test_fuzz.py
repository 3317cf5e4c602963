"""The differential fuzzer (tests/fuzz): a slice of it in every run, checks
that its judge catches faults, and every finding it made, as a regression
test (see tests/fuzz/__main__.py for longer runs)."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_close
from fuzz import cases

import fastconv
from fastconv import _plan
from fastconv import reference as ref

# Seeds whose cases found a defect (the first run, seeds 0-3999): replayed
# here (the kernel defects among them are fixed; see cases.KNOWN_NONFINITE).
FOUND = [
    446, 581, 36, 277,  # an array argument None: AttributeError, or NumPy's words
    320, 1003, 1291, 1331, 2267, 1932, 178,  # weight_grad direct/depthwise: NaN beyond reach
    1340, 2616, 1144,  # forward depthwise at stride > 1 skipped the padding's zeros
    100009,  # weight_grad depthwise_rows skipped the padding's zeros times an inf grad_out
    1000596,  # a weight of zero output channels: fastconv answered, the reference crashed
    2003897,  # an empty batch with a huge padding: the reference could not size its copy
    2036514,  # an empty batch of a plane no array can hold: NumPy's words, not ours
    18586,  # (under the sanitizers) a window of 10**14 taps: the reference looped over them all
    7038449,  # input_size past 2**63: NumPy's 'Maximum allowed dimension exceeded'
]


@pytest.mark.parametrize("seed", FOUND)
def test_found_cases_replay_clean(seed):
    op, status = cases.run(seed)
    assert status in ("ok", "raised", "known"), (op, status)


def test_the_cost_guard_counts_the_weight_gradient():
    """Seed 5238315: a weight gradient of an empty batch whose weight_size
    (4, 4, 1, 2**31 - 1) is 256 GiB of float64. Both backends rightly fail
    to allocate it; the guard, which counted only the input and the output
    of the forward, now skips it as too big to fuzz."""
    assert cases.run(5238315) == ("grad.conv2d_weight", "skipped")


def test_a_slice_of_the_fuzzer():
    """400 seeds past the CI slice's start, in this process: none is a finding."""
    statuses = [cases.run(seed)[1] for seed in range(100_000, 100_400)]
    assert statuses.count("ok") > 200 and statuses.count("raised") > 40


def test_the_judge_catches_a_wrong_value(monkeypatch):
    """A kernel that is off by one part in 10**4 at one position is a finding."""
    real = fastconv.conv2d

    def off(*args, **kwargs):
        y = real(*args, **kwargs)
        if y.size:
            y.flat[y.size // 2] += 1e-4 * max(1.0, float(np.abs(y).max()))
        return y

    monkeypatch.setattr(fastconv, "conv2d", off)
    found = 0
    for seed in range(200):
        try:
            cases.run(seed, "conv2d")
        except cases.Finding as exc:
            assert "value at" in str(exc) or "pattern differs" in str(exc)
            found += 1
    assert found > 50


def test_the_judge_catches_a_disagreement_on_raising(monkeypatch):
    def strict(*args, **kwargs):
        raise ValueError("Expected nothing, got something")

    monkeypatch.setattr(fastconv, "avg_pool1d", strict)
    with pytest.raises(cases.Finding, match="fastconv raised .* but the reference ok"):
        for seed in range(50):
            cases.run(seed, "avg_pool1d")


def test_the_driver_attributes_a_crash_to_its_seed_and_goes_on():
    """A worker that dies (here: a segfault on seed 3) is a finding of that
    seed, with the worker's last words; a new worker takes the next seeds."""
    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, FASTCONV_FUZZ_CRASH_SEED="3",
               PYTHONPATH=os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-m", "tests.fuzz", "--cases", "8", "--workers", "1"],
                          cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "FINDING seed 3" in proc.stdout and "crash: the worker exited with" in proc.stdout
    # faulthandler's report (or, under the sanitizer job, ASan's)
    assert "Segmentation fault" in proc.stdout or "SEGV" in proc.stdout, proc.stdout
    assert "fuzz: 8 cases (seeds 0..7)" in proc.stdout and ", 1 findings" in proc.stdout


NONE_CALLS = [
    ("conv2d input", lambda m: m.conv2d(None, np.ones((1, 1, 1, 1)))),
    ("conv1d weight", lambda m: m.conv1d(np.ones((1, 1, 3)), None)),
    ("conv_transpose1d input", lambda m: m.conv_transpose1d(None, np.ones((1, 1, 1)))),
    ("conv1d_input weight", lambda m: m.grad.conv1d_input((1, 1, 3), None, np.ones((1, 1, 3)))),
    ("conv2d_weight grad_output", lambda m: m.grad.conv2d_weight(np.ones((1, 1, 3, 3)),
                                                                 (1, 1, 1, 1), None)),
    ("max_pool2d input", lambda m: m.max_pool2d(None, 2)),
    ("avg_pool1d input", lambda m: m.avg_pool1d(None, 2)),
    ("max_pool grad", lambda m: m.grad.max_pool1d(None, np.zeros((1, 1, 1), int), (1, 1, 2))),
    ("avg_pool grad", lambda m: m.grad.avg_pool2d(None, (1, 1, 2, 2), 2)),
]


@pytest.mark.parametrize("name,call", NONE_CALLS, ids=[c[0] for c in NONE_CALLS])
def test_none_for_an_array_is_a_type_error(name, call):
    """Found by the fuzzer: None for a required array gave AttributeError
    ('NoneType' object has no attribute 'ndim'), or for pooling NumPy's
    'at least one array or dtype is required'."""
    for m in (fastconv, ref):
        with pytest.raises(TypeError, match=r"^Expected \w+ to be an array, got None$"):
            call(m)


ZERO_WEIGHT_CALLS = [
    ("conv1d", lambda m: m.conv1d(np.ones((1, 2, 1)), np.ones((0, 2, 1)), stride=2, padding=3)),
    ("conv2d", lambda m: m.conv2d(np.ones((1, 2, 4, 4)), np.ones((0, 2, 1, 1)))),
    ("conv_transpose1d", lambda m: m.conv_transpose1d(np.ones((1, 2, 3)), np.ones((2, 0, 1)))),
    ("conv1d_input", lambda m: m.grad.conv1d_input((1, 2, 5), np.ones((0, 2, 1)),
                                                   np.ones((1, 0, 5)))),
    ("conv2d_weight", lambda m: m.grad.conv2d_weight(np.ones((1, 2, 4, 4)), (0, 2, 1, 1),
                                                     np.ones((1, 0, 4, 4)))),
]


@pytest.mark.parametrize("name,call", ZERO_WEIGHT_CALLS, ids=[c[0] for c in ZERO_WEIGHT_CALLS])
def test_a_weight_of_zero_channels_is_rejected_by_both(name, call):
    """Found by the fuzzer (seed 1000596): weight (0, 2, 1) gave fastconv an
    empty output and the reference NumPy's 'cannot reshape array of size 0';
    PyTorch rejects it ('expected weight to be at least 1 at dimension 0')."""
    for m in (fastconv, ref):
        with pytest.raises(ValueError, match=r"^Expected weight with non-zero channel sizes"):
            call(m)


P = 2**28  # an output plane of 2**58 elements: valid, and empty with an empty batch
EMPTY_HUGE_CALLS = [
    ("conv2d", lambda m: m.conv2d(np.ones((0, 2, 3, 3), np.float32),
                                  np.ones((2, 2, 1, 1), np.float32), padding=P),
     (0, 2, 2 * P + 3, 2 * P + 3)),
    ("conv_transpose2d", lambda m: m.conv_transpose2d(np.ones((0, 2, 3, 3)),
                                                      np.ones((2, 1, 3, 3)), stride=P),
     (0, 1, 2 * P + 3, 2 * P + 3)),
    ("conv1d_input", lambda m: m.grad.conv1d_input((0, 2, 2 * P), np.ones((2, 2, 1)),
                                                   np.ones((0, 2, 2 * P)), padding=0),
     (0, 2, 2 * P)),
    ("conv1d_weight", lambda m: m.grad.conv1d_weight(np.ones((0, 2, 3)), (2, 2, 1),
                                                     np.ones((0, 2, 2 * P + 3)), padding=P),
     (2, 2, 1)),
]


@pytest.mark.parametrize("name,call,shape", EMPTY_HUGE_CALLS, ids=[c[0] for c in EMPTY_HUGE_CALLS])
def test_an_empty_batch_with_a_huge_padding_is_answered_by_both(name, call, shape):
    """Found by the fuzzer (seed 2003897): conv2d of an empty batch with
    padding 2**28 gave fastconv its empty output, and the reference NumPy's
    'array is too big' (it padded the empty input to 2**58 positions)."""
    for m in (fastconv, ref):
        y = call(m)
        assert y.shape == shape and not y.any()


SIZE_CALLS = [
    ("max_pool grad, 2**63", lambda m: m.grad.max_pool1d(
        np.ones((0, 1, 2)), np.zeros((0, 1, 2), int), (0, 1, 2**63))),
    ("max_pool grad, 2**63 - 1", lambda m: m.grad.max_pool1d(
        np.ones((1, 1, 2)), np.zeros((1, 1, 2), int), (1, 1, 2**63 - 1))),
    ("avg_pool grad", lambda m: m.grad.avg_pool1d(np.ones((1, 1, 1)), (1, 1, 2**62), 2**62)),
    ("conv weight_size", lambda m: m.grad.conv1d_weight(np.ones((1, 1, 3)), (1, 1, 2**63),
                                                        np.ones((1, 1, 1)))),
]


@pytest.mark.parametrize("name,call", SIZE_CALLS, ids=[c[0] for c in SIZE_CALLS])
def test_a_size_no_array_can_hold_is_rejected_in_our_words(name, call):
    """Found by the fuzzer (seed 7038449): input_size=(0, 1, 2**63) for
    grad.max_pool1d gave NumPy's 'Maximum allowed dimension exceeded' (and
    2**63 - 1, 'array is too big') from both backends."""
    for m in (fastconv, ref):
        with pytest.raises(ValueError, match=r"^Expected (input|weight)_size to have at most"):
            call(m)


def test_an_empty_batch_does_not_make_an_impossible_plane_valid():
    """Found by the fuzzer (seed 2036514): conv_transpose2d of an empty batch
    at stride 2**30 - 1 (an output plane of 1.5e20 positions) raised NumPy's
    'array is too big' from both backends, instead of our 'Expected ...'."""
    x, w = np.ones((0, 2, 18, 9), np.float32), np.ones((2, 1, 5, 3), np.float32)
    for m in (fastconv, ref):
        with pytest.raises(ValueError, match="^Expected the transposed convolution output "
                                             "to have at most"):
            m.conv_transpose2d(x, w, stride=2**30 - 1, dilation=3)
        with pytest.raises(ValueError, match="^Expected the convolution output"):
            m.conv2d(np.ones((0, 1, 3, 3)), np.ones((1, 1, 1, 1)), padding=2**31 - 1)


HUGE_WINDOWS = r"""
import numpy as np, fastconv
from fastconv import reference as ref
rng = np.random.default_rng(0)
M = 2**31 - 1
x = rng.integers(-3, 4, (2, 3, 47)).astype(float)  # ties
for k, s, p, ceil in [(10**7, None, 0, True), (M, 1, 2**30 - 1, False), (M, M, 2**30 - 1, False),
                      (2, M, 1, False), (10**7, 100, 5 * 10**6, True)]:
    kw = dict(stride=s, padding=p, ceil_mode=ceil)
    a, ia = fastconv.max_pool1d(x, k, return_indices=True, **kw)
    b, ib = ref.max_pool1d(x, k, return_indices=True, **kw)
    assert np.array_equal(a, b) and np.array_equal(ia, ib), (k, s, p, a, b, ia, ib)
    assert np.array_equal(fastconv.grad.max_pool1d(a, ia, x.shape), ref.grad.max_pool1d(b, ib, x.shape))
    a, b = fastconv.avg_pool1d(x, k, **kw), ref.avg_pool1d(x, k, **kw)
    assert np.allclose(a, b, rtol=1e-13, atol=0), (k, s, p, a, b)
    g1 = fastconv.grad.avg_pool1d(a, x.shape, k, **kw)
    assert np.allclose(g1, ref.grad.avg_pool1d(b, x.shape, k, **kw), rtol=1e-13, atol=0)
x2 = rng.integers(-3, 4, (1, 2, 9, 11)).astype(float)
for k, s, p in [((10**6, 3), (10**6, 2), (0, 1)), ((5, 10**6), None, (2, 0))]:
    a, ia = fastconv.max_pool2d(x2, k, s, p, ceil_mode=True, return_indices=True)
    b, ib = ref.max_pool2d(x2, k, s, p, ceil_mode=True, return_indices=True)
    assert np.array_equal(a, b) and np.array_equal(ia, ib), (k, a, b)
    assert np.allclose(fastconv.avg_pool2d(x2, k, s, p, ceil_mode=True),
                       ref.avg_pool2d(x2, k, s, p, ceil_mode=True), rtol=1e-13, atol=0)
print("ok")
"""


def test_the_reference_pools_huge_windows_at_once():
    """Found by the fuzzer under the sanitizers (seed 18586, a hang):
    avg_pool2d with kernel_size=10**7 and ceil_mode on a 47 x 98 plane is
    valid (one window holds the plane), and the reference looped over all
    10**14 taps; with padding 2**30 - 1 it padded its input to 8 GiB. It now
    visits only the taps that reach the input, in a plane that holds what
    they see, and agrees with fastconv (values, indices, gradients). In a
    child with a timeout, so that a regression fails instead of hanging."""
    proc = subprocess.run([sys.executable, "-c", HUGE_WINDOWS], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stdout + proc.stderr


def _paths(op, geo):
    for path in _plan.PATHS[op]:
        with _plan.forced(**{op: path}):
            try:
                _plan.plan_for(op, geo, 8)
            except ValueError:
                continue
        yield path


@pytest.mark.parametrize("path", _plan.PATHS["weight_grad"])
@pytest.mark.parametrize("nd", [1, 2])
def test_weight_gradient_is_non_finite_only_where_the_value_reaches(path, nd):
    """An inf input that only the last tap reaches makes only that tap's dW
    non-finite (the reference's, and PyTorch's, answer): found by the fuzzer
    (seeds 320, 1003, 1932, 178)."""
    groups = 2 if path.startswith("depthwise") else 1
    xs = (2, 2, 8) if nd == 1 else (2, 2, 5, 8)
    ws = (2, 2 // groups, 3) if nd == 1 else (2, 2 // groups, 2, 3)
    x = np.ones(xs)
    x[(0, 1) + (0,) * (nd - 1) + (7,)] = np.inf  # the last column: only the last tap reaches it
    geo = fastconv._validation.conv_geometry(xs, ws, nd, 1, 0, 1, groups)
    if path not in set(_paths("weight_grad", geo)):
        pytest.skip(f"{path} does not apply")
    gy = np.ones(geo.output_shape())
    fn = f"conv{nd}d_weight"
    want = getattr(ref.grad, fn)(x, ws, gy, groups=groups)
    with _plan.forced(weight_grad=path):
        got = getattr(fastconv.grad, fn)(x, ws, gy, groups=groups)
    assert np.isfinite(want).sum() > 0 and (~np.isfinite(want)).sum() > 0
    np.testing.assert_array_equal(np.isfinite(got), np.isfinite(want))
    finite = np.isfinite(want)
    assert_close(got[finite], want[finite], n_terms=int(np.prod(gy.shape[2:])) * 2)


@pytest.mark.parametrize("path,stride", [(p, s) for s in (1, 3) for p in _plan.PATHS["forward"]])
def test_forward_paths_agree_where_an_inf_weight_meets_the_padding(path, stride):
    """Found by the fuzzer (seeds 1340, 2616, 1144). At stride 1 every path
    agrees; at stride 3 depthwise_rows skipped the padding (now fixed)."""
    x = np.ones((1, 2, 9))
    w = np.ones((2, 1, 4))
    w[0, 0, 0] = np.inf  # the first tap: in the padding for the first output
    kw = dict(stride=stride, padding=3, groups=2)
    geo = fastconv._validation.conv_geometry(x.shape, w.shape, 1, stride, 3, 1, 2)
    if path not in set(_paths("forward", geo)):
        pytest.skip(f"{path} does not apply")
    want = ref.conv1d(x, w, **kw)
    with _plan.forced(forward=path):
        got = fastconv.conv1d(x, w, **kw)
    assert np.isnan(want[0, 0, 0])
    for test in (np.isnan, np.isposinf, np.isneginf):
        np.testing.assert_array_equal(test(got), test(want))
    finite = np.isfinite(want)
    assert_close(got[finite], want[finite], n_terms=4)
