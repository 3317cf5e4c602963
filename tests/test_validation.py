"""Every bad argument raises ValueError or TypeError worded "Expected ..., got ...".

Each case names the call, the exception class and a ``match`` fragment that
must appear in the message: the argument's name and/or the offending value or
shape. The tables are grouped by concern; 1-D ops, 2-D ops and the gradients
share each table. The operands are fixed arrays of known shape, so these tests
do not depend on any op computing the right values.
"""

import os
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from conftest import assert_close

import fastconv as fc
from fastconv import _config, grad

# -- operands -----------------------------------------------------------------
# conv2d of X2 (2, 4, 6, 6) with W2 (6, 4, 3, 3) gives G2 (2, 6, 4, 4);
# conv_transpose2d of X2 with WT2 (4, 3, 3, 3) gives GT2 (2, 3, 8, 8);
# 2x2 pooling of X2 gives GP2 (2, 4, 3, 3). The 1-D operands drop the H axis.

_rng = np.random.default_rng(0)
X2 = _rng.standard_normal((2, 4, 6, 6))
W2 = _rng.standard_normal((6, 4, 3, 3))
WT2 = _rng.standard_normal((4, 3, 3, 3))
G2 = np.ones((2, 6, 4, 4))
GT2 = np.ones((2, 3, 8, 8))
GP2 = np.ones((2, 4, 3, 3))
IP2 = np.zeros((2, 4, 3, 3), dtype=np.int64)

X1 = X2[:, :, 0].copy()
W1 = W2[:, :, 0].copy()
WT1 = WT2[:, :, 0].copy()
G1 = np.ones((2, 6, 4))
GT1 = np.ones((2, 3, 8))
GP1 = np.ones((2, 4, 3))
IP1 = np.zeros((2, 4, 3), dtype=np.int64)

BIG = 2**40


def _case(call, exc, match, id):
    return pytest.param(call, exc, match, id=id)


def _check(call, exc, match):
    with pytest.raises(exc, match=match) as info:
        call()
    assert str(info.value).startswith("Expected"), str(info.value)
    assert ", got" in str(info.value) or " got " in str(info.value), str(info.value)


# -- channels and groups ------------------------------------------------------

CHANNELS = [
    _case(lambda: fc.conv2d(X2, W2[:, :3]), ValueError,
          r"weight of shape \(C_out, C_in/groups=4.*got weight shape \(6, 3, 3, 3\)",
          "conv2d"),
    _case(lambda: fc.conv1d(X1, W1[:, :3]), ValueError,
          r"C_in/groups=4.*got weight shape \(6, 3, 3\)", "conv1d"),
    _case(lambda: fc.conv_transpose2d(X2, WT2[:3]), ValueError,
          r"weight of shape \(C_in=4.*got weight shape \(3, 3, 3, 3\)", "conv_transpose2d"),
    _case(lambda: fc.conv_transpose1d(X1, WT1[:3]), ValueError,
          r"C_in=4.*got weight shape \(3, 3, 3\)", "conv_transpose1d"),
    _case(lambda: grad.conv2d_input((2, 3, 6, 6), W2, G2), ValueError,
          r"C_in/groups=3.*got weight shape \(6, 4, 3, 3\)", "conv2d_input"),
    _case(lambda: grad.conv1d_input((2, 3, 6), W1, G1), ValueError,
          r"C_in/groups=3.*got weight shape \(6, 4, 3\)", "conv1d_input"),
    _case(lambda: grad.conv2d_weight(X2, (6, 3, 3, 3), G2), ValueError,
          r"C_in/groups=4.*got weight shape \(6, 3, 3, 3\)", "conv2d_weight"),
    _case(lambda: grad.conv1d_weight(X1, (6, 3, 3), G1), ValueError,
          r"C_in/groups=4.*got weight shape \(6, 3, 3\)", "conv1d_weight"),
    _case(lambda: grad.conv_transpose2d_input((2, 5, 6, 6), WT2, GT2), ValueError,
          r"C_in=5.*got weight shape \(4, 3, 3, 3\)", "conv_transpose2d_input"),
    _case(lambda: grad.conv_transpose2d_weight(X2, (5, 3, 3, 3), GT2), ValueError,
          r"C_in=4.*got weight shape \(5, 3, 3, 3\)", "conv_transpose2d_weight"),
    _case(lambda: grad.conv_transpose1d_weight(X1, (5, 3, 3), GT1), ValueError,
          r"C_in=4.*got weight shape \(5, 3, 3\)", "conv_transpose1d_weight"),
]


@pytest.mark.parametrize("call, exc, match", CHANNELS)
def test_channel_mismatch(call, exc, match):
    _check(call, exc, match)


GROUPS = [
    _case(lambda: fc.conv2d(X2, W2, groups=3), ValueError,
          "in_channels divisible by groups, got in_channels=4 and groups=3", "conv2d-in"),
    _case(lambda: fc.conv2d(X2, W2[:5, :2], groups=2), ValueError,
          r"out_channels divisible by groups.*out_channels=5\) and groups=2", "conv2d-out"),
    _case(lambda: fc.conv1d(X1, W1, groups=3), ValueError,
          "got in_channels=4 and groups=3", "conv1d-in"),
    _case(lambda: fc.conv1d(X1, W1[:5, :2], groups=2), ValueError,
          r"out_channels=5\) and groups=2", "conv1d-out"),
    _case(lambda: fc.conv_transpose2d(X2, WT2, groups=3), ValueError,
          "got in_channels=4 and groups=3", "conv_transpose2d"),
    _case(lambda: fc.conv_transpose1d(X1, WT1, groups=3), ValueError,
          "got in_channels=4 and groups=3", "conv_transpose1d"),
    _case(lambda: grad.conv2d_input(X2.shape, W2, G2, groups=3), ValueError,
          "got in_channels=4 and groups=3", "conv2d_input"),
    _case(lambda: grad.conv2d_input((2, 4, 6, 6), W2[:, :1], G2, groups=4), ValueError,
          r"out_channels=6\) and groups=4", "conv2d_input-out"),
    _case(lambda: grad.conv1d_weight(X1, (6, 4, 3), G1, groups=3), ValueError,
          "got in_channels=4 and groups=3", "conv1d_weight"),
    _case(lambda: grad.conv2d_weight(X2, (6, 4, 3, 3), G2, groups=3), ValueError,
          "got in_channels=4 and groups=3", "conv2d_weight"),
    _case(lambda: grad.conv_transpose2d_input(X2.shape, WT2, GT2, groups=3), ValueError,
          "got in_channels=4 and groups=3", "conv_transpose2d_input"),
    _case(lambda: grad.conv_transpose2d_weight(X2, WT2.shape, GT2, groups=3), ValueError,
          "got in_channels=4 and groups=3", "conv_transpose2d_weight"),
    _case(lambda: fc.conv2d(X2, W2, groups=0), ValueError,
          "groups >= 1, got 0", "conv2d-zero"),
    _case(lambda: fc.conv_transpose2d(X2, WT2, groups=-1), ValueError,
          "groups >= 1, got -1", "conv_transpose2d-negative"),
    _case(lambda: fc.conv2d(X2, W2, groups=1.5), TypeError,
          "groups to be an int, got 1.5", "conv2d-float"),
]


@pytest.mark.parametrize("call, exc, match", GROUPS)
def test_groups(call, exc, match):
    _check(call, exc, match)


BIAS = [
    _case(lambda: fc.conv2d(X2, W2, bias=np.zeros(5)), ValueError,
          r"bias of shape \(6,\).*got \(5,\)", "conv2d"),
    _case(lambda: fc.conv1d(X1, W1, bias=np.zeros(7)), ValueError,
          r"bias of shape \(6,\).*got \(7,\)", "conv1d"),
    _case(lambda: fc.conv2d(X2, W2, bias=np.zeros((6, 1))), ValueError,
          r"bias of shape \(6,\).*got \(6, 1\)", "conv2d-2d-bias"),
    _case(lambda: fc.conv_transpose2d(X2, WT2, bias=np.zeros(4)), ValueError,
          r"bias of shape \(3,\).*got \(4,\)", "conv_transpose2d"),
    _case(lambda: fc.conv_transpose1d(X1, WT1, bias=np.zeros(6)), ValueError,
          r"bias of shape \(3,\).*got \(6,\)", "conv_transpose1d"),
]


@pytest.mark.parametrize("call, exc, match", BIAS)
def test_bias_length(call, exc, match):
    _check(call, exc, match)


# -- geometry -----------------------------------------------------------------

_FIT = r"kernel size \({k}\) to fit in the padded input size \({p}\)"

TOO_BIG = [
    _case(lambda: fc.conv2d(X2, np.ones((6, 4, 7, 7))), ValueError,
          _FIT.format(k="7, 7", p="6, 6"), "conv2d"),
    _case(lambda: fc.conv2d(X2, np.ones((6, 4, 9, 3)), padding=1), ValueError,
          _FIT.format(k="9, 3", p="8, 8"), "conv2d-padded"),
    _case(lambda: fc.conv2d(X2, W2, dilation=(1, 3)), ValueError,
          _FIT.format(k="3, 7", p="6, 6"), "conv2d-dilated"),
    _case(lambda: fc.conv1d(X1, np.ones((6, 4, 7))), ValueError,
          _FIT.format(k="7,", p="6,"), "conv1d"),
    _case(lambda: fc.conv1d(X1, W1, padding="valid", dilation=4), ValueError,
          _FIT.format(k="9,", p="6,"), "conv1d-dilated"),
    _case(lambda: fc.conv_transpose2d(X2, WT2, padding=5), ValueError,
          r"positive output size.*got \(-2, -2\)", "conv_transpose2d"),
    # PyTorch returns an empty array for a size of exactly 0 (see the conventions)
    _case(lambda: fc.conv_transpose2d(X2, WT2, padding=(0, 4)), ValueError,
          r"positive output size.*got \(8, 0\)", "conv_transpose2d-zero"),
    _case(lambda: fc.conv_transpose1d(X1, WT1, padding=5), ValueError,
          r"positive output size.*got \(-2,\)", "conv_transpose1d"),
    _case(lambda: fc.max_pool2d(X2, 7), ValueError,
          _FIT.format(k="7, 7", p="6, 6"), "max_pool2d"),
    _case(lambda: fc.max_pool2d(X2, 3, dilation=3), ValueError,
          _FIT.format(k="7, 7", p="6, 6"), "max_pool2d-dilated"),
    _case(lambda: fc.max_pool1d(X1, 7), ValueError,
          _FIT.format(k="7,", p="6,"), "max_pool1d"),
    _case(lambda: fc.avg_pool2d(X2, (2, 9), padding=(0, 1)), ValueError,
          _FIT.format(k="2, 9", p="6, 8"), "avg_pool2d"),
    _case(lambda: fc.avg_pool1d(X1, 7), ValueError,
          _FIT.format(k="7,", p="6,"), "avg_pool1d"),
    _case(lambda: grad.conv2d_input((2, 4, 2, 2), W2, G2), ValueError,
          _FIT.format(k="3, 3", p="2, 2"), "conv2d_input"),
    _case(lambda: grad.conv1d_input((2, 4, 2), W1, G1), ValueError,
          _FIT.format(k="3,", p="2,"), "conv1d_input"),
    _case(lambda: grad.conv2d_weight(X2, (6, 4, 7, 7), G2), ValueError,
          _FIT.format(k="7, 7", p="6, 6"), "conv2d_weight"),
    _case(lambda: grad.conv_transpose2d_input(X2.shape, WT2, GT2, padding=5), ValueError,
          "positive output size", "conv_transpose2d_input"),
    _case(lambda: grad.avg_pool2d(GP2, X2.shape, 7), ValueError,
          _FIT.format(k="7, 7", p="6, 6"), "avg_pool2d-grad"),
    _case(lambda: grad.avg_pool1d(GP1, X1.shape, 7), ValueError,
          _FIT.format(k="7,", p="6,"), "avg_pool1d-grad"),
]


@pytest.mark.parametrize("call, exc, match", TOO_BIG)
def test_kernel_larger_than_padded_input(call, exc, match):
    _check(call, exc, match)


NOT_POSITIVE = [
    _case(lambda: fc.conv2d(X2, W2, stride=0), ValueError, "stride >= 1, got 0", "conv2d-stride"),
    _case(lambda: fc.conv2d(X2, W2, stride=(1, -2)), ValueError,
          r"stride >= 1, got \(1, -2\)", "conv2d-stride-tuple"),
    _case(lambda: fc.conv2d(X2, W2, dilation=0), ValueError,
          "dilation >= 1, got 0", "conv2d-dilation"),
    _case(lambda: fc.conv1d(X1, W1, stride=-1), ValueError, "stride >= 1, got -1", "conv1d-stride"),
    _case(lambda: fc.conv1d(X1, W1, dilation=0), ValueError,
          "dilation >= 1, got 0", "conv1d-dilation"),
    _case(lambda: fc.conv2d(X2, np.ones((6, 4, 0, 3))), ValueError,
          r"non-empty kernel, got weight shape \(6, 4, 0, 3\)", "conv2d-kernel"),
    _case(lambda: fc.conv1d(X1, np.ones((6, 4, 0))), ValueError,
          r"non-empty kernel, got weight shape \(6, 4, 0\)", "conv1d-kernel"),
    _case(lambda: fc.conv_transpose2d(X2, WT2, stride=0), ValueError,
          "stride >= 1, got 0", "conv_transpose2d-stride"),
    _case(lambda: fc.conv_transpose1d(X1, WT1, dilation=0), ValueError,
          "dilation >= 1, got 0", "conv_transpose1d-dilation"),
    _case(lambda: fc.conv_transpose2d(X2, np.ones((4, 3, 3, 0))), ValueError,
          r"non-empty kernel, got weight shape \(4, 3, 3, 0\)", "conv_transpose2d-kernel"),
    _case(lambda: fc.max_pool2d(X2, 0), ValueError, "kernel_size >= 1, got 0", "max_pool2d-kernel"),
    _case(lambda: fc.max_pool2d(X2, (2, -1)), ValueError,
          r"kernel_size >= 1, got \(2, -1\)", "max_pool2d-kernel-tuple"),
    _case(lambda: fc.max_pool2d(X2, 2, stride=0), ValueError,
          "stride >= 1, got 0", "max_pool2d-stride"),
    _case(lambda: fc.max_pool2d(X2, 2, dilation=0), ValueError,
          "dilation >= 1, got 0", "max_pool2d-dilation"),
    _case(lambda: fc.max_pool1d(X1, 0), ValueError, "kernel_size >= 1, got 0", "max_pool1d-kernel"),
    _case(lambda: fc.max_pool1d(X1, 2, dilation=-3), ValueError,
          "dilation >= 1, got -3", "max_pool1d-dilation"),
    _case(lambda: fc.avg_pool2d(X2, 0), ValueError, "kernel_size >= 1, got 0", "avg_pool2d-kernel"),
    _case(lambda: fc.avg_pool1d(X1, 2, stride=0), ValueError,
          "stride >= 1, got 0", "avg_pool1d-stride"),
    _case(lambda: grad.conv2d_input(X2.shape, W2, G2, stride=0), ValueError,
          "stride >= 1, got 0", "conv2d_input-stride"),
    _case(lambda: grad.conv1d_weight(X1, W1.shape, G1, dilation=0), ValueError,
          "dilation >= 1, got 0", "conv1d_weight-dilation"),
    _case(lambda: grad.conv2d_weight(X2, (6, 4, 0, 3), G2), ValueError,
          r"non-empty kernel, got weight shape \(6, 4, 0, 3\)", "conv2d_weight-kernel"),
    _case(lambda: grad.conv_transpose2d_input(X2.shape, WT2, GT2, stride=0), ValueError,
          "stride >= 1, got 0", "conv_transpose2d_input-stride"),
    _case(lambda: grad.conv_transpose1d_weight(X1, WT1.shape, GT1, dilation=0), ValueError,
          "dilation >= 1, got 0", "conv_transpose1d_weight-dilation"),
    _case(lambda: grad.avg_pool2d(GP2, X2.shape, 0), ValueError,
          "kernel_size >= 1, got 0", "avg_pool2d-grad-kernel"),
    _case(lambda: grad.avg_pool1d(GP1, X1.shape, 2, stride=0), ValueError,
          "stride >= 1, got 0", "avg_pool1d-grad-stride"),
]


@pytest.mark.parametrize("call, exc, match", NOT_POSITIVE)
def test_stride_dilation_kernel_not_positive(call, exc, match):
    _check(call, exc, match)


NEGATIVE_PADDING = [
    _case(lambda: fc.conv2d(X2, W2, padding=-1), ValueError, "padding >= 0, got -1", "conv2d"),
    _case(lambda: fc.conv2d(X2, W2, padding=((1, -1), (0, 0))), ValueError,
          r"padding >= 0, got \(1, -1\)", "conv2d-pairs"),
    _case(lambda: fc.conv1d(X1, W1, padding=-2), ValueError, "padding >= 0, got -2", "conv1d"),
    _case(lambda: fc.conv1d(X1, W1, padding=(0, -1)), ValueError,
          r"padding >= 0, got \(0, -1\)", "conv1d-pair"),
    _case(lambda: fc.conv_transpose2d(X2, WT2, padding=-1), ValueError,
          "padding >= 0, got -1", "conv_transpose2d"),
    _case(lambda: fc.conv_transpose1d(X1, WT1, output_padding=-1), ValueError,
          "output_padding >= 0, got -1", "conv_transpose1d-output_padding"),
    _case(lambda: fc.max_pool2d(X2, 2, padding=-1), ValueError,
          "padding >= 0, got -1", "max_pool2d"),
    _case(lambda: fc.avg_pool1d(X1, 2, padding=-1), ValueError,
          "padding >= 0, got -1", "avg_pool1d"),
    _case(lambda: grad.conv2d_input(X2.shape, W2, G2, padding=-1), ValueError,
          "padding >= 0, got -1", "conv2d_input"),
    _case(lambda: grad.conv2d_weight(X2, W2.shape, G2, padding=(0, -1)), ValueError,
          r"padding >= 0, got \(0, -1\)", "conv2d_weight"),
    _case(lambda: grad.avg_pool2d(GP2, X2.shape, 2, padding=-1), ValueError,
          "padding >= 0, got -1", "avg_pool2d-grad"),
]


@pytest.mark.parametrize("call, exc, match", NEGATIVE_PADDING)
def test_negative_padding(call, exc, match):
    _check(call, exc, match)


_HUGE = "<= 2147483647, got 1099511627776"

ABSURD = [
    _case(lambda: fc.max_pool2d(X2, BIG), ValueError, "kernel_size " + _HUGE,
          "max_pool2d-kernel"),
    _case(lambda: fc.max_pool2d(X2, (2, BIG)), ValueError,
          r"kernel_size <= 2147483647, got \(2, 1099511627776\)", "max_pool2d-kernel-tuple"),
    _case(lambda: fc.max_pool1d(X1, BIG), ValueError, "kernel_size " + _HUGE,
          "max_pool1d-kernel"),
    _case(lambda: fc.max_pool2d(X2, 2, dilation=BIG), ValueError, "dilation " + _HUGE,
          "max_pool2d-dilation"),
    _case(lambda: fc.max_pool1d(X1, 2, dilation=BIG), ValueError, "dilation " + _HUGE,
          "max_pool1d-dilation"),
    _case(lambda: fc.max_pool2d(X2, 2, stride=BIG), ValueError, "stride " + _HUGE,
          "max_pool2d-stride"),
    _case(lambda: fc.avg_pool2d(X2, BIG), ValueError, "kernel_size " + _HUGE,
          "avg_pool2d-kernel"),
    _case(lambda: fc.avg_pool1d(X1, BIG), ValueError, "kernel_size " + _HUGE,
          "avg_pool1d-kernel"),
    _case(lambda: fc.conv2d(X2, W2, dilation=BIG), ValueError, "dilation " + _HUGE,
          "conv2d-dilation"),
    _case(lambda: fc.conv2d(X2, W2, stride=BIG), ValueError, "stride " + _HUGE,
          "conv2d-stride"),
    _case(lambda: fc.conv2d(X2, W2, padding=BIG), ValueError, "padding " + _HUGE,
          "conv2d-padding"),
    _case(lambda: fc.conv1d(X1, W1, dilation=BIG), ValueError, "dilation " + _HUGE,
          "conv1d-dilation"),
    _case(lambda: fc.conv_transpose2d(X2, WT2, stride=BIG), ValueError, "stride " + _HUGE,
          "conv_transpose2d-stride"),
    _case(lambda: grad.conv2d_input(X2.shape, W2, G2, dilation=BIG), ValueError,
          "dilation " + _HUGE, "conv2d_input-dilation"),
    _case(lambda: grad.avg_pool2d(GP2, X2.shape, BIG), ValueError, "kernel_size " + _HUGE,
          "avg_pool2d-grad-kernel"),
    _case(lambda: grad.avg_pool1d(GP1, X1.shape, BIG), ValueError, "kernel_size " + _HUGE,
          "avg_pool1d-grad-kernel"),
    # Within the int range but far larger than the input: an empty output.
    _case(lambda: fc.max_pool2d(X2, 2, dilation=2**30), ValueError,
          "to fit in the padded input size", "max_pool2d-dilation-2**30"),
]


@pytest.mark.parametrize("call, exc, match", ABSURD)
def test_absurd_sizes(call, exc, match):
    _check(call, exc, match)


@pytest.mark.parametrize("call", [
    lambda: fc.conv2d(X2, W2, padding=2**30),
    lambda: fc.conv_transpose2d(X2, WT2, stride=2**30),
], ids=["conv2d-padding", "conv_transpose2d-stride"])
def test_output_too_large_to_allocate(call):
    """Legal parameters whose output has more elements than any array can:
    refused by the validation, in its own words, before anything is allocated."""
    _check(call, ValueError, "output")


def test_huge_padding_and_dilation_cancel_exactly():
    """padding = dilation = 2**31 - 1 is legal: only the centre tap of a 3x3
    kernel lands in the input, so no index arithmetic may overflow."""
    x, w = X2[:1, :, :3, :3], W2[:2]
    m = 2**31 - 1
    y = fc.conv2d(x, w, padding=m, dilation=m)
    assert_close(y, np.einsum("nchw,oc->nohw", x, w[:, :, 1, 1]), n_terms=x.shape[1])


WRONG_LENGTH = [
    _case(lambda: fc.conv2d(X2, W2, stride=(1, 1, 1)), ValueError,
          r"stride to be an int or a tuple of 2 ints, got \(1, 1, 1\)", "conv2d-stride"),
    _case(lambda: fc.conv2d(X2, W2, dilation=(1,)), ValueError,
          r"dilation to be an int or a tuple of 2 ints, got \(1,\)", "conv2d-dilation"),
    _case(lambda: fc.conv2d(X2, W2, padding=(1, 1, 1)), ValueError,
          r"padding to be an int or a tuple of 2 ints, got \(1, 1, 1\)", "conv2d-padding"),
    _case(lambda: fc.conv2d(X2, W2, padding=((1,), (1, 1))), ValueError,
          r"padding pairs \(begin, end\), got \(\(1,\), \(1, 1\)\)", "conv2d-padding-pairs"),
    _case(lambda: fc.conv1d(X1, W1, stride=(1, 1)), ValueError,
          r"stride to be an int or a tuple of 1 ints, got \(1, 1\)", "conv1d-stride"),
    _case(lambda: fc.conv1d(X1, W1, padding=(1, 1, 1)), ValueError,
          r"padding to be an int or a tuple of 1 ints, got \(1, 1, 1\)", "conv1d-padding"),
    _case(lambda: fc.conv_transpose2d(X2, WT2, stride=2, output_padding=(0, 0, 0)), ValueError,
          r"output_padding to be an int or a tuple of 2 ints, got \(0, 0, 0\)",
          "conv_transpose2d-output_padding"),
    _case(lambda: fc.conv_transpose1d(X1, WT1, padding=(0, 0)), ValueError,
          r"padding to be an int or a tuple of 1 ints, got \(0, 0\)", "conv_transpose1d-padding"),
    _case(lambda: fc.max_pool2d(X2, (2, 2, 2)), ValueError,
          r"kernel_size to be an int or a tuple of 2 ints, got \(2, 2, 2\)", "max_pool2d-kernel"),
    _case(lambda: fc.max_pool1d(X1, (2, 2)), ValueError,
          r"kernel_size to be an int or a tuple of 1 ints, got \(2, 2\)", "max_pool1d-kernel"),
    _case(lambda: fc.avg_pool2d(X2, 2, stride=(1,)), ValueError,
          r"stride to be an int or a tuple of 2 ints, got \(1,\)", "avg_pool2d-stride"),
    _case(lambda: grad.conv2d_weight(X2, W2.shape, G2, stride=[1, 1, 1]), ValueError,
          r"stride to be an int or a tuple of 2 ints, got \[1, 1, 1\]", "conv2d_weight-stride"),
    _case(lambda: grad.avg_pool1d(GP1, X1.shape, (2, 2)), ValueError,
          r"kernel_size to be an int or a tuple of 1 ints", "avg_pool1d-grad-kernel"),
]


@pytest.mark.parametrize("call, exc, match", WRONG_LENGTH)
def test_tuple_of_wrong_length(call, exc, match):
    _check(call, exc, match)


NOT_INT = [
    _case(lambda: fc.conv2d(X2, W2, stride=1.5), TypeError,
          "stride to be an int, got 1.5", "conv2d-stride"),
    _case(lambda: fc.conv2d(X2, W2, stride=(1, 2.0)), TypeError,
          "stride to be an int, got 2.0", "conv2d-stride-tuple"),
    _case(lambda: fc.conv2d(X2, W2, dilation=True), TypeError,
          "dilation to be an int, got True", "conv2d-dilation-bool"),
    _case(lambda: fc.conv2d(X2, W2, padding=0.5), TypeError,
          "padding to be an int, got 0.5", "conv2d-padding"),
    _case(lambda: fc.conv1d(X1, W1, stride=1.5), TypeError,
          "stride to be an int, got 1.5", "conv1d-stride"),
    _case(lambda: fc.conv_transpose2d(X2, WT2, stride=1.5), TypeError,
          "stride to be an int, got 1.5", "conv_transpose2d-stride"),
    _case(lambda: fc.conv_transpose1d(X1, WT1, stride=2, output_padding=0.5), TypeError,
          "output_padding to be an int, got 0.5", "conv_transpose1d-output_padding"),
    _case(lambda: fc.max_pool2d(X2, 1.5), TypeError,
          "kernel_size to be an int, got 1.5", "max_pool2d-kernel"),
    _case(lambda: fc.max_pool2d(X2, 2, stride=1.5), TypeError,
          "stride to be an int, got 1.5", "max_pool2d-stride"),
    _case(lambda: fc.max_pool1d(X1, 2, padding="same"), TypeError,
          "padding to be an int, got 'same'", "max_pool1d-padding-string"),
    _case(lambda: fc.avg_pool1d(X1, 2.0), TypeError,
          "kernel_size to be an int, got 2.0", "avg_pool1d-kernel"),
    _case(lambda: fc.max_pool2d(X2, 2, ceil_mode=1), TypeError,
          "ceil_mode to be a bool, got 1", "max_pool2d-ceil_mode"),
    _case(lambda: fc.avg_pool2d(X2, 2, count_include_pad=None), TypeError,
          "count_include_pad to be a bool, got None", "avg_pool2d-count_include_pad"),
    _case(lambda: grad.conv2d_input(X2.shape, W2, G2, stride=1.5), TypeError,
          "stride to be an int, got 1.5", "conv2d_input-stride"),
    _case(lambda: grad.conv1d_weight(X1, W1.shape, G1, stride=1.5), TypeError,
          "stride to be an int, got 1.5", "conv1d_weight-stride"),
    _case(lambda: grad.conv_transpose2d_weight(X2, WT2.shape, GT2, stride=1.5), TypeError,
          "stride to be an int, got 1.5", "conv_transpose2d_weight-stride"),
    _case(lambda: grad.avg_pool2d(GP2, X2.shape, 2, stride=1.5), TypeError,
          "stride to be an int, got 1.5", "avg_pool2d-grad-stride"),
    _case(lambda: grad.avg_pool2d(GP2, X2.shape, 2, count_include_pad=1), TypeError,
          "count_include_pad to be a bool, got 1", "avg_pool2d-grad-count_include_pad"),
]


@pytest.mark.parametrize("call, exc, match", NOT_INT)
def test_non_integer_parameters(call, exc, match):
    _check(call, exc, match)


PADDING_STRINGS = [
    _case(lambda: fc.conv2d(X2, W2, padding="full"), ValueError,
          r"padding to be 'valid', 'same', an int or a tuple, got 'full'", "conv2d-unknown"),
    _case(lambda: fc.conv1d(X1, W1, padding="SAME"), ValueError,
          r"'valid', 'same'.*got 'SAME'", "conv1d-unknown"),
    _case(lambda: grad.conv2d_input(X2.shape, W2, G2, padding="full"), ValueError,
          "got 'full'", "conv2d_input-unknown"),
    _case(lambda: fc.conv_transpose2d(X2, WT2, padding="same"), ValueError,
          "padding of a transposed convolution to be an int or a tuple, got 'same'",
          "conv_transpose2d-string"),
    _case(lambda: fc.conv2d(X2, W2, padding="same", stride=2), ValueError,
          r"stride=1 with padding='same', got stride=\(2, 2\)", "conv2d-same-stride"),
    _case(lambda: fc.conv2d(X2, W2, padding="same", stride=(1, 2)), ValueError,
          r"stride=1 with padding='same', got stride=\(1, 2\)", "conv2d-same-stride-tuple"),
    _case(lambda: fc.conv1d(X1, W1, padding="same", stride=3), ValueError,
          r"stride=1 with padding='same', got stride=\(3,\)", "conv1d-same-stride"),
    _case(lambda: grad.conv2d_input(X2.shape, W2, G2, padding="same", stride=2), ValueError,
          r"padding='same', got stride=\(2, 2\)", "conv2d_input-same-stride"),
    _case(lambda: grad.conv1d_weight(X1, W1.shape, G1, padding="same", stride=2), ValueError,
          r"padding='same', got stride=\(2,\)", "conv1d_weight-same-stride"),
]


@pytest.mark.parametrize("call, exc, match", PADDING_STRINGS)
def test_padding_strings(call, exc, match):
    _check(call, exc, match)


OUTPUT_PADDING = [
    _case(lambda: fc.conv_transpose2d(X2, WT2, stride=2, output_padding=2), ValueError,
          r"output_padding < max\(stride, dilation\), got output_padding=\(2, 2\), "
          r"stride=\(2, 2\)", "conv_transpose2d-stride"),
    _case(lambda: fc.conv_transpose2d(X2, WT2, stride=(2, 1), output_padding=(1, 1)),
          ValueError, r"got output_padding=\(1, 1\), stride=\(2, 1\)",
          "conv_transpose2d-one-axis"),
    _case(lambda: fc.conv_transpose2d(X2, WT2, dilation=2, output_padding=2), ValueError,
          r"output_padding=\(2, 2\), stride=\(1, 1\), dilation=\(2, 2\)",
          "conv_transpose2d-dilation"),
    _case(lambda: fc.conv_transpose2d(X2, WT2, output_padding=1), ValueError,
          r"output_padding=\(1, 1\), stride=\(1, 1\), dilation=\(1, 1\)",
          "conv_transpose2d-default"),
    _case(lambda: fc.conv_transpose1d(X1, WT1, stride=3, output_padding=3), ValueError,
          r"output_padding=\(3,\), stride=\(3,\)", "conv_transpose1d"),
    _case(lambda: grad.conv_transpose2d_input(X2.shape, WT2, GT2, 1, 0, 1, 1, 1), ValueError,
          r"output_padding=\(1, 1\)", "conv_transpose2d_input"),
    _case(lambda: grad.conv_transpose2d_weight(X2, WT2.shape, GT2, 2, 0, 2, 1, 1), ValueError,
          r"output_padding=\(2, 2\), stride=\(2, 2\)", "conv_transpose2d_weight"),
    _case(lambda: grad.conv_transpose1d_input(X1.shape, WT1, GT1, 1, 0, 1, 1, 1), ValueError,
          r"output_padding=\(1,\)", "conv_transpose1d_input"),
    _case(lambda: grad.conv_transpose1d_weight(X1, WT1.shape, GT1, 2, 0, 2, 1, 1), ValueError,
          r"output_padding=\(2,\), stride=\(2,\)", "conv_transpose1d_weight"),
]


@pytest.mark.parametrize("call, exc, match", OUTPUT_PADDING)
def test_output_padding_too_large(call, exc, match):
    _check(call, exc, match)


POOL_PADDING = [
    _case(lambda: fc.max_pool2d(X2, 2, padding=2), ValueError,
          r"padding <= kernel_size/2, got padding=\(2, 2\) and kernel_size=\(2, 2\)",
          "max_pool2d"),
    _case(lambda: fc.max_pool2d(X2, (3, 2), padding=(1, 2)), ValueError,
          r"got padding=\(1, 2\) and kernel_size=\(3, 2\)", "max_pool2d-one-axis"),
    _case(lambda: fc.max_pool1d(X1, 3, padding=2), ValueError,
          r"got padding=\(2,\) and kernel_size=\(3,\)", "max_pool1d"),
    _case(lambda: fc.avg_pool2d(X2, 3, padding=2), ValueError,
          r"got padding=\(2, 2\) and kernel_size=\(3, 3\)", "avg_pool2d"),
    _case(lambda: fc.avg_pool1d(X1, 1, padding=1), ValueError,
          r"got padding=\(1,\) and kernel_size=\(1,\)", "avg_pool1d"),
    _case(lambda: grad.avg_pool2d(GP2, X2.shape, 2, padding=2), ValueError,
          r"got padding=\(2, 2\) and kernel_size=\(2, 2\)", "avg_pool2d-grad"),
    _case(lambda: grad.avg_pool1d(GP1, X1.shape, 2, padding=2), ValueError,
          r"got padding=\(2,\) and kernel_size=\(2,\)", "avg_pool1d-grad"),
]


@pytest.mark.parametrize("call, exc, match", POOL_PADDING)
def test_pool_padding_more_than_half_kernel(call, exc, match):
    _check(call, exc, match)


# -- array ranks, dtypes and sizes --------------------------------------------

NDIM = [
    _case(lambda: fc.conv2d(X2[0], W2), ValueError,
          r"input of 4 dimensions \(N, C, H, W\), got shape \(4, 6, 6\)", "conv2d-input"),
    _case(lambda: fc.conv2d(X2, W2[0]), ValueError,
          r"weight of 4 dimensions.*got shape \(4, 3, 3\)", "conv2d-weight"),
    _case(lambda: fc.conv1d(X2, W1), ValueError,
          r"input of 3 dimensions \(N, C, L\), got shape \(2, 4, 6, 6\)", "conv1d-input"),
    _case(lambda: fc.conv1d(X1, W2), ValueError,
          r"weight of 3 dimensions.*got shape \(6, 4, 3, 3\)", "conv1d-weight"),
    _case(lambda: fc.conv2d(3.0, W2), ValueError,
          r"input of 4 dimensions.*got shape \(\)", "conv2d-scalar"),
    _case(lambda: fc.conv_transpose2d(X2[0], WT2), ValueError,
          r"input of 4 dimensions.*got shape \(4, 6, 6\)", "conv_transpose2d-input"),
    _case(lambda: fc.conv_transpose2d(X2, WT2[0]), ValueError,
          r"weight of 4 dimensions.*got shape \(3, 3, 3\)", "conv_transpose2d-weight"),
    _case(lambda: fc.conv_transpose1d(X1, WT2), ValueError,
          r"weight of 3 dimensions.*got shape \(4, 3, 3, 3\)", "conv_transpose1d-weight"),
    _case(lambda: fc.max_pool2d(X1, 2), ValueError,
          r"input of 4 dimensions.*got shape \(2, 4, 6\)", "max_pool2d"),
    _case(lambda: fc.max_pool1d(X2, 2), ValueError,
          r"input of 3 dimensions.*got shape \(2, 4, 6, 6\)", "max_pool1d"),
    _case(lambda: fc.avg_pool2d(X2[None], 2), ValueError,
          r"input of 4 dimensions.*got shape \(1, 2, 4, 6, 6\)", "avg_pool2d"),
    _case(lambda: fc.avg_pool1d(X1[0], 2), ValueError,
          r"input of 3 dimensions.*got shape \(4, 6\)", "avg_pool1d"),
    _case(lambda: grad.conv2d_input(X2.shape, W2[0], G2), ValueError,
          r"weight of 4 dimensions.*got shape \(4, 3, 3\)", "conv2d_input-weight"),
    _case(lambda: grad.conv2d_input(X2.shape, W2, G2[0]), ValueError,
          r"grad_output of 4 dimensions.*got shape \(6, 4, 4\)", "conv2d_input-grad_output"),
    _case(lambda: grad.conv1d_weight(X2, W1.shape, G1), ValueError,
          r"input of 3 dimensions.*got shape \(2, 4, 6, 6\)", "conv1d_weight-input"),
    _case(lambda: grad.conv2d_weight(X2, W2.shape, G1), ValueError,
          r"grad_output of 4 dimensions.*got shape \(2, 6, 4\)", "conv2d_weight-grad_output"),
    _case(lambda: grad.conv_transpose2d_input(X2.shape, WT1, GT2), ValueError,
          r"weight of 4 dimensions.*got shape \(4, 3, 3\)", "conv_transpose2d_input-weight"),
    _case(lambda: grad.conv_transpose1d_weight(X1, WT1.shape, GT2), ValueError,
          r"grad_output of 3 dimensions.*got shape \(2, 3, 8, 8\)",
          "conv_transpose1d_weight-grad_output"),
    _case(lambda: grad.max_pool2d(GP1, IP1, X2.shape), ValueError,
          r"grad_output of 4 dimensions.*got shape \(2, 4, 3\)", "max_pool2d-grad"),
    _case(lambda: grad.avg_pool1d(GP2, X1.shape, 2), ValueError,
          r"grad_output of 3 dimensions.*got shape \(2, 4, 3, 3\)", "avg_pool1d-grad"),
    _case(lambda: grad.conv_bias(np.ones(3)), ValueError,
          r"grad_output of at least 2 dimensions.*got shape \(3,\)", "conv_bias"),
]


@pytest.mark.parametrize("call, exc, match", NDIM)
def test_wrong_ndim(call, exc, match):
    _check(call, exc, match)


def test_empty_channel_or_spatial_axis():
    _check(lambda: fc.conv2d(np.ones((1, 0, 4, 4)), np.ones((1, 0, 3, 3))), ValueError,
           r"input with non-zero channel and spatial sizes, got shape \(1, 0, 4, 4\)")
    _check(lambda: fc.max_pool1d(np.ones((1, 2, 0)), 1), ValueError,
           r"non-zero channel and spatial sizes, got shape \(1, 2, 0\)")
    _check(lambda: grad.conv2d_input((2, 4, 0, 6), W2, G2), ValueError,
           r"input_size with non-zero channel and spatial sizes, got shape \(2, 4, 0, 6\)")


_BAD_DTYPES = {
    "complex": np.complex128,
    "object": object,
    "float16": np.float16,
}
if np.dtype(np.longdouble) not in (np.dtype(np.float64), np.dtype(np.float32)):
    _BAD_DTYPES["longdouble"] = np.longdouble


def _bad_dtype_calls(a):
    """(argument name, call) pairs that feed ``a`` to one argument of one op."""
    def as_(x):
        return x.astype(a) if a is not str else np.full(x.shape, "a")

    return [
        ("input", lambda: fc.conv2d(as_(X2), W2)),
        ("weight", lambda: fc.conv2d(X2, as_(W2))),
        ("bias", lambda: fc.conv2d(X2, W2, bias=as_(np.zeros(6)))),
        ("input", lambda: fc.conv1d(as_(X1), W1)),
        ("weight", lambda: fc.conv_transpose2d(X2, as_(WT2))),
        ("input", lambda: fc.conv_transpose1d(as_(X1), WT1)),
        ("input", lambda: fc.max_pool2d(as_(X2), 2)),
        ("input", lambda: fc.max_pool1d(as_(X1), 2)),
        ("input", lambda: fc.avg_pool2d(as_(X2), 2)),
        ("input", lambda: fc.avg_pool1d(as_(X1), 2)),
        ("grad_output", lambda: grad.conv2d_input(X2.shape, W2, as_(G2))),
        ("weight", lambda: grad.conv1d_input(X1.shape, as_(W1), G1)),
        ("input", lambda: grad.conv2d_weight(as_(X2), W2.shape, G2)),
        ("grad_output", lambda: grad.conv_transpose2d_input(X2.shape, WT2, as_(GT2))),
        ("input", lambda: grad.conv_transpose1d_weight(as_(X1), WT1.shape, GT1)),
        ("grad_output", lambda: grad.conv_bias(as_(G2))),
        ("grad_output", lambda: grad.max_pool2d(as_(GP2), IP2, X2.shape)),
        ("grad_output", lambda: grad.avg_pool1d(as_(GP1), X1.shape, 2)),
    ]


@pytest.mark.parametrize("dtype", [*_BAD_DTYPES.values(), str],
                         ids=[*_BAD_DTYPES, "string"])
def test_unsupported_dtypes(dtype):
    for name, call in _bad_dtype_calls(dtype):
        shown = "<U1" if dtype is str else str(np.dtype(dtype))
        _check(call, TypeError,
               f"Expected {name} to have a float32, float64, integer or bool dtype, "
               f"got {re.escape(shown)}")



def test_float_operands_are_not_copied():
    """C-contiguous float operands are used as they are, also when their
    dtype is an equal but distinct instance (a deepcopy's: NumPy's asarray
    copies those), and the others are converted."""
    import copy

    from fastconv._validation import as_float_arrays

    a = np.ones((2, 3), dtype=copy.deepcopy(np.dtype(np.float32)))
    b = np.ones((2, 3), np.float32)
    arrays, dtype = as_float_arrays({"a": a, "b": b, "none": None})
    assert arrays["a"] is a and arrays["b"] is b and arrays["none"] is None
    assert dtype == np.float32
    f = np.asfortranarray(np.ones((2, 3)))
    arrays, dtype = as_float_arrays({"f": f, "i": np.arange(3)})
    assert arrays["f"].flags.c_contiguous and arrays["i"].dtype == np.float64 == dtype

GRAD_OUTPUT_SHAPE = [
    _case(lambda: grad.conv2d_input(X2.shape, W2, G2[:, :, :3]), ValueError,
          r"grad_output of shape \(2, 6, 4, 4\).*got \(2, 6, 3, 4\)", "conv2d_input"),
    _case(lambda: grad.conv2d_input(X2.shape, W2, G2, stride=2), ValueError,
          r"grad_output of shape \(2, 6, 2, 2\).*got \(2, 6, 4, 4\)", "conv2d_input-stride"),
    _case(lambda: grad.conv2d_input((3, 4, 6, 6), W2, G2), ValueError,
          r"grad_output of shape \(3, 6, 4, 4\).*got \(2, 6, 4, 4\)", "conv2d_input-batch"),
    _case(lambda: grad.conv1d_input(X1.shape, W1, G1, padding=1), ValueError,
          r"grad_output of shape \(2, 6, 6\).*got \(2, 6, 4\)", "conv1d_input"),
    _case(lambda: grad.conv2d_weight(X2, W2.shape, G2[:, :5]), ValueError,
          r"grad_output of shape \(2, 6, 4, 4\).*got \(2, 5, 4, 4\)", "conv2d_weight"),
    _case(lambda: grad.conv2d_weight(X2, W2.shape, G2, dilation=2), ValueError,
          r"grad_output of shape \(2, 6, 2, 2\).*got \(2, 6, 4, 4\)", "conv2d_weight-dilation"),
    _case(lambda: grad.conv1d_weight(X1, W1.shape, G1[:1]), ValueError,
          r"grad_output of shape \(2, 6, 4\).*got \(1, 6, 4\)", "conv1d_weight"),
    _case(lambda: grad.conv_transpose2d_input(X2.shape, WT2, GT2[..., :5]), ValueError,
          r"grad_output of shape \(2, 3, 8, 8\).*got \(2, 3, 8, 5\)", "conv_transpose2d_input"),
    _case(lambda: grad.conv_transpose2d_input(X2.shape, WT2, GT2, stride=2), ValueError,
          r"grad_output of shape \(2, 3, 13, 13\).*got \(2, 3, 8, 8\)",
          "conv_transpose2d_input-stride"),
    _case(lambda: grad.conv_transpose1d_input(X1.shape, WT1, GT1[..., :5]), ValueError,
          r"grad_output of shape \(2, 3, 8\).*got \(2, 3, 5\)", "conv_transpose1d_input"),
    _case(lambda: grad.conv_transpose2d_weight(X2, WT2.shape, GT2[:, :2]), ValueError,
          r"grad_output of shape \(2, 3, 8, 8\).*got \(2, 2, 8, 8\)", "conv_transpose2d_weight"),
    _case(lambda: grad.conv_transpose1d_weight(X1, WT1.shape, GT1[..., :7]), ValueError,
          r"grad_output of shape \(2, 3, 8\).*got \(2, 3, 7\)", "conv_transpose1d_weight"),
    _case(lambda: grad.avg_pool2d(GP2[..., :2], X2.shape, 2), ValueError,
          r"grad_output of shape \(2, 4, 3, 3\).*got \(2, 4, 3, 2\)", "avg_pool2d"),
    _case(lambda: grad.avg_pool2d(GP2, X2.shape, 2, stride=1), ValueError,
          r"grad_output of shape \(2, 4, 5, 5\).*got \(2, 4, 3, 3\)", "avg_pool2d-stride"),
    _case(lambda: grad.avg_pool2d(GP2, (2, 3, 6, 6), 2), ValueError,
          r"grad_output of shape \(2, 3, 3, 3\).*got \(2, 4, 3, 3\)", "avg_pool2d-channels"),
    _case(lambda: grad.avg_pool1d(GP1, X1.shape, 2, ceil_mode=True, stride=4), ValueError,
          r"grad_output of shape \(2, 4, 2\).*got \(2, 4, 3\)", "avg_pool1d"),
    _case(lambda: grad.max_pool2d(GP2, IP2, (3, 4, 6, 6)), ValueError,
          r"grad_output with \(N, C\) = \(3, 4\).*got shape \(2, 4, 3, 3\)", "max_pool2d-batch"),
    _case(lambda: grad.max_pool1d(GP1, IP1, (2, 5, 6)), ValueError,
          r"\(N, C\) = \(2, 5\).*got shape \(2, 4, 3\)", "max_pool1d-channels"),
]


@pytest.mark.parametrize("call, exc, match", GRAD_OUTPUT_SHAPE)
def test_grad_output_shape_mismatch(call, exc, match):
    _check(call, exc, match)


SIZES = [
    _case(lambda: grad.conv2d_input(X2.shape[1:], W2, G2), ValueError,
          r"input_size to be a tuple of 4 ints.*got \(4, 6, 6\)", "conv2d_input"),
    _case(lambda: grad.conv1d_input(X2.shape, W1, G1), ValueError,
          r"input_size to be a tuple of 3 ints.*got \(2, 4, 6, 6\)", "conv1d_input"),
    _case(lambda: grad.conv_transpose2d_input((2, 4, 6), WT2, GT2), ValueError,
          r"input_size to be a tuple of 4 ints.*got \(2, 4, 6\)", "conv_transpose2d_input"),
    _case(lambda: grad.conv_transpose1d_input((2, 4), WT1, GT1), ValueError,
          r"input_size to be a tuple of 3 ints.*got \(2, 4\)", "conv_transpose1d_input"),
    _case(lambda: grad.max_pool2d(GP2, IP2, X2.shape[:3]), ValueError,
          r"input_size to be a tuple of 4 ints.*got \(2, 4, 6\)", "max_pool2d"),
    _case(lambda: grad.max_pool1d(GP1, IP1, X2.shape), ValueError,
          r"input_size to be a tuple of 3 ints.*got \(2, 4, 6, 6\)", "max_pool1d"),
    _case(lambda: grad.avg_pool2d(GP2, X2.shape[1:], 2), ValueError,
          r"input_size to be a tuple of 4 ints.*got \(4, 6, 6\)", "avg_pool2d"),
    _case(lambda: grad.avg_pool1d(GP1, (2, 4, 6, 1), 2), ValueError,
          r"input_size to be a tuple of 3 ints.*got \(2, 4, 6, 1\)", "avg_pool1d"),
    _case(lambda: grad.conv2d_weight(X2, W2.shape[:3], G2), ValueError,
          r"weight_size to be a tuple of 4 ints.*got \(6, 4, 3\)", "conv2d_weight"),
    _case(lambda: grad.conv_transpose1d_weight(X1, WT2.shape, GT1), ValueError,
          r"weight_size to be a tuple of 3 ints.*got \(4, 3, 3, 3\)", "conv_transpose1d_weight"),
    _case(lambda: grad.conv2d_input(5, W2, G2), TypeError,
          "input_size to be a tuple of 4 ints, got 5", "conv2d_input-int"),
    _case(lambda: grad.conv2d_input(np.array(X2.shape), W2, G2), TypeError,
          r"input_size to be a tuple of 4 ints, got array\(", "conv2d_input-ndarray"),
    _case(lambda: grad.conv2d_input((2, 4, 6.0, 6), W2, G2), TypeError,
          "input_size to be an int, got 6.0", "conv2d_input-float"),
    _case(lambda: grad.conv2d_input((2, 4, -6, 6), W2, G2), ValueError,
          r"non-negative sizes in input_size, got \(2, 4, -6, 6\)", "conv2d_input-negative"),
    _case(lambda: grad.conv2d_weight(X2, (6, 4, -3, 3), G2), ValueError,
          r"non-negative sizes in weight_size, got \(6, 4, -3, 3\)", "conv2d_weight-negative"),
]


@pytest.mark.parametrize("call, exc, match", SIZES)
def test_input_and_weight_size(call, exc, match):
    _check(call, exc, match)


# -- max-pool indices ---------------------------------------------------------

def _with(indices, position, value):
    bad = indices.copy()
    bad.flat[position] = value
    return bad


INDICES = [
    _case(lambda: grad.max_pool2d(GP2, _with(IP2, 5, 36), X2.shape), ValueError,
          r"indices in \[0, 36\) for input_size=\(2, 4, 6, 6\), got 1 out of range",
          "max_pool2d-one-past-end"),
    _case(lambda: grad.max_pool2d(GP2, IP2 + 100, X2.shape), ValueError,
          r"indices in \[0, 36\).*got 72 out of range", "max_pool2d-all-too-large"),
    _case(lambda: grad.max_pool2d(GP2, _with(IP2, 0, -1), X2.shape), ValueError,
          r"indices in \[0, 36\).*got 1 out of range", "max_pool2d-negative"),
    _case(lambda: grad.max_pool2d(GP2, _with(_with(IP2, 0, 2**62), -1, -(2**62)), X2.shape),
          ValueError, r"indices in \[0, 36\).*got 2 out of range", "max_pool2d-extreme"),
    _case(lambda: grad.max_pool2d(GP2, _with(IP2.astype(np.uint64), 3, 2**63), X2.shape),
          ValueError, r"indices in \[0, 36\).*got 1 out of range", "max_pool2d-uint64"),
    _case(lambda: grad.max_pool2d(GP2, IP2 + 20, (2, 4, 4, 4)), ValueError,
          r"indices in \[0, 16\) for input_size=\(2, 4, 4, 4\)", "max_pool2d-smaller-input"),
    _case(lambda: grad.max_pool1d(GP1, IP1 + 6, X1.shape), ValueError,
          r"indices in \[0, 6\) for input_size=\(2, 4, 6\), got 24 out of range",
          "max_pool1d-too-large"),
    _case(lambda: grad.max_pool1d(GP1, _with(IP1, 7, -3), X1.shape), ValueError,
          r"indices in \[0, 6\).*got 1 out of range", "max_pool1d-negative"),
    _case(lambda: grad.max_pool2d(GP2, IP2.astype(np.float64), X2.shape), TypeError,
          "integer indices, got dtype float64", "max_pool2d-float"),
    _case(lambda: grad.max_pool1d(GP1, IP1.astype(np.float32), X1.shape), TypeError,
          "integer indices, got dtype float32", "max_pool1d-float"),
    _case(lambda: grad.max_pool2d(GP2, IP2.astype(bool), X2.shape), TypeError,
          "integer indices, got dtype bool", "max_pool2d-bool"),
    _case(lambda: grad.max_pool2d(GP2, IP2[..., :2], X2.shape), ValueError,
          r"indices of shape \(2, 4, 3, 3\).*got \(2, 4, 3, 2\)", "max_pool2d-shape"),
    _case(lambda: grad.max_pool2d(GP2, IP2[0], X2.shape), ValueError,
          r"indices of shape \(2, 4, 3, 3\).*got \(4, 3, 3\)", "max_pool2d-ndim"),
    _case(lambda: grad.max_pool1d(GP1, IP1[..., :1], X1.shape), ValueError,
          r"indices of shape \(2, 4, 3\).*got \(2, 4, 1\)", "max_pool1d-shape"),
]


@pytest.mark.parametrize("call, exc, match", INDICES)
def test_max_pool_indices(call, exc, match):
    _check(call, exc, match)


@pytest.mark.parametrize("value", [36, 10**6, 2**62, -1, -(2**62)])
def test_corrupt_max_pool_index_writes_nowhere(value):
    """An out-of-range switch is refused, not followed: memory allocated on
    either side of the call's own buffers is left untouched."""
    before = np.full(4096, 7.0)
    bad = _with(IP2, IP2.size - 1, value)
    after = np.full(4096, 7.0)
    with pytest.raises(ValueError, match=r"indices in \[0, 36\).*got 1 out of range"):
        grad.max_pool2d(GP2, bad, X2.shape)
    assert (before == 7.0).all() and (after == 7.0).all()


def test_corrupt_max_pool_indices_do_not_crash_the_interpreter():
    """Extreme indices in a fresh interpreter: a memory error there would kill
    this process rather than fail a test."""
    script = textwrap.dedent("""
        import numpy as np
        from fastconv import grad
        idx = np.array([[[np.iinfo(np.int64).max, np.iinfo(np.int64).min, 4, 3]]])
        try:
            grad.max_pool1d(np.ones((1, 1, 4)), idx, (1, 1, 4))
        except ValueError as e:
            print("ValueError:", e)
    """)
    root = os.path.dirname(os.path.dirname(os.path.abspath(fc.__file__)))
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120, cwd=root)
    assert done.returncode == 0, done.stderr
    assert "ValueError: Expected indices in [0, 4)" in done.stdout
    assert "got 3 out of range" in done.stdout


# -- thread configuration -----------------------------------------------------

@pytest.mark.parametrize("n, exc, match", [
    (0, ValueError, "n >= 1, got 0"),
    (-2, ValueError, "n >= 1, got -2"),
    (1.5, TypeError, "n to be an int or None, got 1.5"),
    (True, TypeError, "n to be an int or None, got True"),
    ("2", TypeError, "n to be an int or None, got '2'"),
])
def test_set_num_threads_rejects(n, exc, match, monkeypatch):
    monkeypatch.setattr(_config, "_user_threads", _config._user_threads)  # restored after
    before = fc.get_num_threads()
    _check(lambda: fc.set_num_threads(n), exc, match)
    assert fc.get_num_threads() == before


# -- the geometry cache ---------------------------------------------------------


@pytest.mark.parametrize("good, bad, match", [
    (dict(stride=1), dict(stride=True), "stride to be an int, got True"),
    (dict(stride=(1, 1)), dict(stride=(1, True)), "stride to be an int, got True"),
    (dict(dilation=2), dict(dilation=2.0), "dilation to be an int, got 2.0"),
    (dict(groups=1), dict(groups=np.True_), f"groups to be an int, got {np.True_!r}"),
])
def test_geometry_cache_never_confuses_equal_values_of_other_types(good, bad, match):
    # The valid call first, so that its geometry is cached under an equal key.
    fc.conv2d(X2, W2, **good)
    fc.conv2d(X2, W2, **good)
    with pytest.raises(TypeError, match=match):
        fc.conv2d(X2, W2, **bad)


def test_geometry_cache_returns_the_geometry_it_validated():
    from fastconv._validation import conv_geometry
    args = ((2, 4, 9, 9), (6, 4, 3, 3), 2, (2, 1), ((1, 0), (2, 1)), 1, 1)
    assert conv_geometry(*args) == conv_geometry.__wrapped__(*args)  # nested: uncached
    args = ((2, 4, 9, 9), (6, 4, 3, 3), 2, (2, 1), 1, (1, 2), 1)
    first = conv_geometry(*args)
    assert conv_geometry(*args) is first
    assert first == conv_geometry.__wrapped__(*args)
    assert first.out_size == (5, 7)
