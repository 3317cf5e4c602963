"""Large image planes: a convolution's workspace (what its kernels malloc
outside NumPy) is bounded by tiles, whatever the size of the plane (planes
too large for the flat-plane kernels take kernels with no plane-sized
scratch), and max pooling keeps its vectorised path on planes of 2**31
elements or more. The sizes past 2**31 themselves run in the slow tests."""

import numpy as np
import pytest
from conftest import assert_close

import fastconv
from fastconv import _config, _plan
from fastconv import reference as ref
from fastconv._validation import conv_geometry

BIG = 1100  # a plane whose flat scratch (2 * 1102**2 * 8 bytes) is over FLAT_MAX_BYTES


@pytest.mark.parametrize("channels", [1, 4])  # 1 -> 1 (groups = 1) and depthwise
@pytest.mark.parametrize("n_threads", [1, 2])
def test_large_planes_need_no_plane_sized_scratch(channels, n_threads, threads):
    threads.set_num_threads(n_threads)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, channels, BIG, BIG))
    w = rng.standard_normal((channels, 1, 3, 3))
    gy = rng.standard_normal((1, channels, BIG, BIG))
    kw = dict(padding=1, groups=channels)
    plan = fastconv.conv_plan(x.shape, w.shape, np.float64, **kw)
    # whole flat planes would not fit: the forward and input gradient take
    # kernels without them; the weight gradient goes over bands of rows
    assert 2 * (BIG + 2) ** 2 * 8 > _plan.FLAT_MAX_BYTES
    assert plan["forward"] != "depthwise_flat" and plan["input_grad"] != "depthwise_flat"
    assert plan["weight_grad"] == "depthwise_flat"
    geo = conv_geometry(x.shape, w.shape, 2, 1, 1, 1, channels)
    band = _plan.plan_for("weight_grad", geo, 8).tile[0]
    assert 1 <= band < BIG // 4

    _config.conv_kernels.workspace_peak(reset=True)
    y = fastconv.conv2d(x, w, **kw)
    gx = fastconv.grad.conv2d_input(x.shape, w, gy, **kw)
    gw = fastconv.grad.conv2d_weight(x, w.shape, gy, **kw)
    peak = _config.conv_kernels.workspace_peak(reset=True)
    assert peak <= _plan.FLAT_MAX_BYTES * n_threads, (peak, plan)

    assert_close(y, ref.conv2d(x, w, **kw), n_terms=9)
    assert_close(gx, ref.conv2d_input(x.shape, w, gy, **kw), n_terms=9)
    assert_close(gw, ref.conv2d_weight(x, w.shape, gy, **kw), n_terms=BIG * BIG, scale=1.0)


def test_small_planes_keep_the_flat_kernels():
    plan = fastconv.conv_plan((8, 32, 56, 56), (32, 1, 3, 3), padding=1, groups=32)
    assert set(plan.values()) - {plan["threads"]} == {"depthwise_flat"}
    plan = fastconv.conv_plan((8, 3, 32, 32), (6, 3, 5, 5))  # lenet1
    # direct where its 6 output channels are few for a micro-kernel row:
    # float32 rows of 16 or more values (AVX2, AVX-512), not NEON's or SSE2's 8
    nr = _config.blocking()["NR"][4]
    assert plan["weight_grad"] == ("direct" if 6 <= _plan.DIRECT_MAX_SHARE * nr else "implicit")


def test_many_large_planes_are_shared_by_rows(threads):
    """Depthwise planes too large for flat scratch, but enough of them for
    every thread: parallel over planes, row by row."""
    threads.set_num_threads(2)
    plan = fastconv.conv_plan((4, 8, BIG, BIG), (8, 1, 3, 3), padding=1, groups=8)
    assert plan["forward"] == plan["input_grad"] == "depthwise_rows"
    assert plan["weight_grad"] == "depthwise_flat"  # over bands of rows


def test_max_pool_indices_of_huge_planes_keep_the_rows_path():
    """The rows path's int tap offsets need the window's rows, not the
    plane, to hold fewer than 2**31 elements (planned only: no such array
    is made here)."""
    from fastconv._validation import pool_geometry

    big = pool_geometry((46400, 46400), 2, 2, 2, 0, 1, False)
    assert big.in_size[0] * big.in_size[1] >= 2**31
    assert _plan.pool_plan("max_pool", big, 4, 1, want_indices=True).path == "rows"
    tall = pool_geometry((2**20, 2**12), 2, (2**19, 2), 1, 0, 1, False)  # 2**31-element windows
    assert _plan.pool_plan("max_pool", tall, 4, 1, want_indices=True).path == "windows"
    assert _plan.pool_plan("max_pool", tall, 4, 1, want_indices=False).path == "rows"
