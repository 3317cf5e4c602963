"""The chunk planner of fastconv.dask: plain arithmetic, tested without dask.

Properties (hypothesis): the tiles partition the output; each tile's input
lies inside its chunk plus the halo; every inner chunk is at least as large
as the halo; the outputs that reach an input chunk (found by brute force)
lie in its tile plus the gradient halo; any chunking snaps to a legal one.
"""

import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastconv.dask import planner
from fastconv.dask.planner import AxisGeometry


@st.composite
def axes(draw):
    k = draw(st.integers(1, 7))
    s = draw(st.integers(1, 5))
    d = draw(st.integers(1, 4))
    eff = d * (k - 1) + 1
    size = draw(st.integers(1, 120))
    pb = draw(st.integers(0, 6))
    pe = draw(st.integers(-min(2, size + pb - 1), 6))
    out = (size + pb + pe - eff) // s + 1
    if out < 1:
        pe = eff - size - pb + draw(st.integers(0, 3))
        out = (size + pb + pe - eff) // s + 1
    return AxisGeometry(size=size, out_size=out, kernel=k, stride=s, dilation=d, pad_begin=pb)


def _chunks(draw, total):
    out = []
    while sum(out) < total:
        out.append(min(draw(st.integers(1, 12)), total - sum(out)))
    return tuple(out)


@st.composite
def axis_and_tiles(draw):
    a = draw(axes())
    how = draw(st.sampled_from(["input", "output", "target"]))
    if how == "input":
        t = a.tiles_from_input_chunks(_chunks(draw, a.size))
    elif how == "output":
        t = a.tiles_from_output_chunks(_chunks(draw, a.out_size))
    else:
        t = a.tiles_of(draw(st.integers(1, 30)))
    return a, t


@settings(max_examples=300, deadline=None)
@given(axis_and_tiles())
def test_tiles_partition_the_output_and_are_legal(case):
    a, t = case
    assert a.problems(t) == []
    assert t[0] == 0 and t[-1] == a.out_size
    assert all(o0 < o1 for o0, o1 in zip(t[:-1], t[1:]))
    assert sum(a.output_chunks(t)) == a.out_size
    assert sum(a.input_chunks(t)) == a.size
    if len(t) > 2:
        assert min(a.input_chunks(t)) >= a.halo
        assert min(a.input_chunks(t)) >= 1
        assert min(a.output_chunks(t)) >= a.grad_halo


@settings(max_examples=300, deadline=None)
@given(axis_and_tiles())
def test_each_tile_reads_inside_its_chunk_plus_halo(case):
    a, t = case
    bounds = a.input_bounds(t)
    for j, (o0, o1) in enumerate(zip(t[:-1], t[1:])):
        lo, hi = a.tile_input(o0, o1)
        # the window taps of every output of the tile, inside the array
        taps = [o * a.stride - a.pad_begin + i * a.dilation
                for o in range(o0, o1) for i in range(a.kernel)]
        inside = [p for p in taps if 0 <= p < a.size]
        assert min(taps) == lo and max(taps) == hi - 1
        if inside:
            assert min(inside) >= bounds[j]
            assert max(inside) < min(a.size, bounds[j + 1] + a.halo)


@settings(max_examples=300, deadline=None)
@given(axis_and_tiles())
def test_outputs_reaching_a_chunk_lie_in_its_tile_plus_gradient_halo(case):
    a, t = case
    bounds = a.input_bounds(t)
    for j in range(len(t) - 1):
        reach = {o for o in range(a.out_size) for i in range(a.kernel)
                 if bounds[j] <= o * a.stride - a.pad_begin + i * a.dilation < bounds[j + 1]}
        if reach:
            assert min(reach) >= max(0, t[j] - a.grad_halo)
            assert max(reach) < t[j + 1]


@settings(max_examples=200, deadline=None)
@given(axes(), st.integers(1, 40))
def test_snapping_keeps_legal_chunks(a, outputs):
    t = a.tiles_of(outputs)
    assert a.tiles_from_input_chunks(a.input_chunks(t)) == t
    assert a.tiles_from_output_chunks(a.output_chunks(t)) == t


@settings(max_examples=200, deadline=None)
@given(axes())
def test_smallest_legal_chunk(a):
    assert a.min_chunk == a.min_outputs * a.stride
    assert a.min_chunk >= a.halo and a.min_outputs >= a.grad_halo
    t = a.tiles_of(1)  # as small as allowed
    if len(t) > 3:
        inner = a.input_chunks(t)[1:-1]
        assert min(inner) >= a.min_chunk


def test_halo_examples():
    # 3x3, stride 1: halo 2 on the right, gradient halo 2 on the left
    a = AxisGeometry(size=100, out_size=100, kernel=3, stride=1, dilation=1, pad_begin=1)
    assert (a.halo, a.grad_halo, a.min_chunk) == (2, 2, 2)
    # 2x2 stride 2 pooling: no halo at all
    b = AxisGeometry(size=100, out_size=50, kernel=2, stride=2, dilation=1, pad_begin=0)
    assert (b.halo, b.grad_halo, b.min_chunk) == (0, 0, 2)
    # 7x7 stride 2 padding 3 (a ResNet stem): halo 5, chunk boundaries at 2*o - 3
    c = AxisGeometry(size=224, out_size=112, kernel=7, stride=2, dilation=1, pad_begin=3)
    assert (c.halo, c.grad_halo) == (5, 3)
    assert c.input_chunks([0, 28, 56, 84, 112]) == (53, 56, 56, 59)


def test_bad_tilings_are_named():
    a = AxisGeometry(size=20, out_size=20, kernel=5, stride=1, dilation=1, pad_begin=2)
    assert any("halo" in p for p in a.problems([0, 3, 20]))
    assert any("increase" in p for p in a.problems([0, 5, 5, 20]))


def test_default_task_size():
    big = planner.plan_conv((1, 3, 16384, 16384), (16, 3, 3, 3), padding=1)
    assert big.seconds_per_task >= planner.TASK_SECONDS
    assert big.seconds_per_task < 20 * planner.TASK_SECONDS
    assert "ms/task" in big.describe()
    small = planner.plan_conv((8, 3, 16, 16), (4, 3, 3, 3))
    assert small.input_chunks()[2:] == ((16,), (16,))  # one task holds it all
    pool = planner.plan_pool((1, 3, 16384, 16384), 2, itemsize=4)
    assert pool.seconds_per_task >= planner.TASK_SECONDS


def test_planner_imports_no_dask():
    code = ("import sys, fastconv, fastconv.dask.planner as p; "
            "p.plan_conv((1, 1, 8), (1, 1, 3)); "
            "assert 'dask' not in sys.modules and 'dask.array' not in sys.modules, "
            "sorted(m for m in sys.modules if m.startswith('dask'))")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_core_import_imports_no_dask():
    code = "import sys, fastconv; assert 'dask' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_plan_rejects_bad_geometry():
    with pytest.raises(ValueError, match="Expected"):
        planner.plan_conv((1, 1, 4), (1, 1, 9))


def test_task_bytes_cap():
    capped = planner.plan_conv((1, 3, 16384, 16384), (8, 3, 3, 3), padding=1,
                               max_task_bytes=64 * 2**20)
    out_tile = max(capped.output_chunks(8)[2]) * max(capped.output_chunks(8)[3])
    in_tile = max(capped.input_chunks()[2]) * max(capped.input_chunks()[3])
    assert (8 * out_tile + 3 * in_tile) * 4 <= 1.1 * 64 * 2**20


@pytest.mark.parametrize("name", ["fastconv.dask.planner", "fastconv.dask._ops",
                                  "fastconv.dask.grad", "fastconv.dask._train"])
def test_docstring_examples(name):
    """The examples in fastconv.dask's docstrings run and print what they say."""
    import doctest
    import importlib

    import numpy as np

    if name != "fastconv.dask.planner":
        pytest.importorskip("dask.array")
        pytest.importorskip("distributed")
    module = importlib.import_module(name)
    with np.printoptions(legacy=False):
        result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0, f"{result.failed} doctest(s) failed in {name}"
    assert result.attempted > 0
