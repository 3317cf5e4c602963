"""fastconv and its NumPy reference accept and reject the same inputs, with
the same words: both go through fastconv._preprocess."""

import subprocess
import sys

import numpy as np
import pytest

import fastconv
from fastconv import reference as ref

X1, W1 = np.ones((2, 3, 8)), np.ones((4, 3, 3))
X2, W2 = np.ones((2, 3, 6, 6)), np.ones((4, 3, 3, 3))
GY2 = np.ones((2, 4, 4, 4))

# (name, fastconv call, reference call); each must raise
BAD = [
    ("zero length", lambda m: m.conv1d(np.ones((3, 8, 0)), np.ones((2, 8, 1)))),
    ("zero width", lambda m: m.conv2d(np.ones((1, 3, 4, 0)), W2)),
    ("zero channels", lambda m: m.conv2d(np.ones((1, 0, 4, 4)), np.ones((1, 0, 3, 3)))),
    ("zero-size transposed", lambda m: m.conv_transpose2d(np.ones((1, 3, 0, 2)), W2)),
    ("rank", lambda m: m.conv2d(X1, W2)),
    ("weight rank", lambda m: m.conv1d(X1, W2)),
    ("complex", lambda m: m.conv2d(X2.astype(complex), W2)),
    ("float16", lambda m: m.conv2d(X2.astype(np.float16), W2)),
    ("groups", lambda m: m.conv2d(X2, W2, groups=2)),
    ("kernel larger", lambda m: m.conv2d(np.ones((1, 3, 2, 2)), W2)),
    ("negative stride", lambda m: m.conv2d(X2, W2, stride=-1)),
    ("bias shape", lambda m: m.conv2d(X2, W2, np.ones(3))),
    ("same with stride", lambda m: m.conv1d(X1, W1, stride=2, padding="same")),
    ("output_padding", lambda m: m.conv_transpose1d(np.ones((1, 4, 5)), W1, stride=2,
                                                    output_padding=2)),
    ("grad_output shape", lambda m: m.grad.conv2d_input(X2.shape, W2, np.ones((2, 4, 3, 4)))),
    ("zero input_size", lambda m: m.grad.conv2d_input((2, 3, 0, 6), W2, GY2)),
    ("weight_size", lambda m: m.grad.conv2d_weight(X2, (4, 2, 3, 3), GY2)),
    ("bias grad rank", lambda m: m.grad.conv_bias(np.ones(3))),
    ("pool zero size", lambda m: m.max_pool1d(np.ones((1, 2, 0)), 1)),
    ("pool padding", lambda m: m.max_pool2d(X2, 2, padding=2)),
    ("pool kernel", lambda m: m.avg_pool2d(X2, 7)),
    ("pool only padding", lambda m: m.max_pool1d(np.ones((1, 1, 1)), 3, stride=2,
                                                 padding=1, dilation=2)),
    ("count_include_pad", lambda m: m.avg_pool2d(X2, 2, count_include_pad="yes")),
    ("float indices", lambda m: m.grad.max_pool2d(np.ones((2, 3, 3, 3)),
                                                  np.zeros((2, 3, 3, 3)), X2.shape)),
    ("indices out of range", lambda m: m.grad.max_pool2d(
        np.ones((2, 3, 3, 3)), np.full((2, 3, 3, 3), 36), X2.shape)),
    ("avg grad shape", lambda m: m.grad.avg_pool2d(np.ones((2, 3, 2, 3)), X2.shape, 2)),
]


@pytest.mark.parametrize("name,call", BAD, ids=[b[0] for b in BAD])
def test_both_backends_reject_with_the_same_words(name, call):
    with pytest.raises((ValueError, TypeError)) as fast:
        call(fastconv)
    with pytest.raises((ValueError, TypeError)) as slow:
        call(ref)
    assert type(fast.value) is type(slow.value), (fast.value, slow.value)
    assert str(fast.value) == str(slow.value)
    assert str(fast.value).startswith("Expected")


def test_empty_batch_is_accepted_by_both():
    x = np.ones((0, 3, 6, 6))
    for m in (fastconv, ref):
        assert m.conv2d(x, W2).shape == (0, 4, 4, 4)
        assert m.max_pool2d(x, 2).shape == (0, 3, 3, 3)


def test_huge_pooling_geometry_answers_at_once():
    """Validation costs O(1) in the padding (it visited every window start in
    the padding, minutes with the GIL held for padding 2**30), and so does a
    window of 2**31 taps mostly in the padding. Run in a child with a generous
    bound, so that a regression fails instead of hanging. (The reference pads
    the input itself, 8 GiB here: only its validation, shared, is run.)"""
    code = (
        "import numpy as np, fastconv\n"
        "from fastconv import _preprocess\n"
        "x = np.zeros((1, 1, 1), np.float32)\n"
        "k, p = 2**31 - 1, 2**30 - 1\n"
        "y, i = fastconv.max_pool1d(x, k, stride=1, padding=p, return_indices=True)\n"
        "assert y.shape == (1, 1, 1) and y[0, 0, 0] == 0 and i[0, 0, 0] == 0, (y, i)\n"
        "g = fastconv.avg_pool1d(x, k, stride=1, padding=p)\n"
        "gx = fastconv.grad.avg_pool1d(g, x.shape, k, stride=1, padding=p)\n"
        "assert g.shape == gx.shape == (1, 1, 1)\n"
        "_preprocess.max_pool(1, x, k, 1, p, 1, False)\n"
        "print('ok')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stdout + proc.stderr
