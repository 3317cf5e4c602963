"""The machinery of fastconv.dask: tilings of dask arrays and the block functions.

Every op runs one fastconv kernel per output block, on the input block plus
the halo that ``dask.array.overlap.overlap(..., boundary='none',
allow_rechunk=False)`` copies from its neighbour, with the tile's own
geometry: the part of its range outside the array becomes its own padding
(see :mod:`fastconv.dask.planner`). Each output is computed once: the
chunk boundaries are aligned so that no tile computes anything that is
trimmed afterwards.
"""

import math
from dataclasses import replace

import dask
import dask.array as da
import numpy as np

from .. import _launch
from .._validation import as_float_arrays, check_ndim, contiguous

__all__ = []

LAYOUT = {1: "(N, C, L)", 2: "(N, C, H, W)"}


# -- arguments -------------------------------------------------------------------------


def dask_input(x, nd, name="input"):
    """``x`` as a dask array of nd + 2 dims, in its float dtype."""
    if not isinstance(x, da.Array):
        raise TypeError(f"Expected {name} to be a dask array, got {type(x).__name__}; "
                        "use the fastconv op itself for NumPy arrays")
    if x.ndim != nd + 2:
        raise ValueError(f"Expected {name} of {nd + 2} dimensions {LAYOUT[nd]}, got shape "
                         f"{x.shape}")
    if any(math.isnan(c) for cs in x.chunks for c in cs):
        raise ValueError(f"Expected {name} with known chunk sizes, got {x.chunks}; "
                         "call compute_chunk_sizes() first")
    return x


def numpy_operands(nd, x, **named):
    """Cast NumPy ``named`` (weight, bias, ...) and the dask ``x`` to one float dtype."""
    for name, a in named.items():
        if isinstance(a, da.Array):
            raise TypeError(f"Expected {name} to be a NumPy array (it goes to every task "
                            f"whole), got a dask array of shape {a.shape}")
    probe = np.empty((0,), dtype=x.dtype)
    arrays, dtype = as_float_arrays({"input": probe, **named})
    for name in named:
        if name == "weight":
            check_ndim(arrays[name], nd + 2, name, "(C_out, C_in/groups, *kernel)")
    if x.dtype != dtype:
        x = x.astype(dtype)
    return x, dtype, [arrays[name] for name in named]


def nonempty(shape, name="input"):
    if any(s == 0 for s in shape[1:]):
        raise ValueError(f"Expected {name} with non-zero channel and spatial sizes, got "
                         f"shape {tuple(shape)}")


# -- chunks --------------------------------------------------------------------------


def _cuts(chunks):
    out, total = [], 0
    for c in chunks:
        total += c
        out.append(total)
    return out[:-1]


def align(x, axes, space, rechunk, name, channels=None):
    """Tile ``x`` along its spatial axes for ``axes`` (AxisGeometry per axis).

    ``space`` is "input" (x is in the convolution's input space, its chunks
    are snapped to boundaries ``o*s - p_b``) or "output" (x is in output
    space). ``channels`` is the channel chunking to impose (None: keep).
    Returns the (possibly rechunked) x and the tilings.
    """
    tiles, want = [], list(x.chunks)
    for i, a in enumerate(axes):
        got = x.chunks[2 + i]
        if space == "input":
            t = a.tiles_from_input_chunks(got)
            want[2 + i] = a.input_chunks(t)
        else:
            t = a.tiles_from_output_chunks(got)
            want[2 + i] = a.output_chunks(t)
        tiles.append(t)
    if channels is not None:
        want[1] = channels
    want = tuple(tuple(w) for w in want)
    if want != x.chunks:
        if not rechunk:
            bad = [i for i in range(x.ndim) if want[i] != x.chunks[i]]
            raise ValueError(
                f"Expected {name} chunks legal for this geometry along axes {bad} "
                f"(nearest legal: {[want[i] for i in bad]}; halo {[a.halo for a in axes]}, "
                f"smallest chunk {[a.min_chunk for a in axes]}), got "
                f"{[x.chunks[i] for i in bad]}; pass rechunk=True to rechunk")
        x = x.rechunk(want)
    return x, tiles


def group_channels(chunks, c_per_group, groups, name, rechunk):
    """The channel chunks ``chunks`` if they fall on group boundaries, else one chunk
    (or an error without ``rechunk``). Returns (chunks, [(g0, g1) per chunk])."""
    cuts = _cuts(chunks)
    if all(c % c_per_group == 0 for c in cuts):
        bounds = [0] + [c // c_per_group for c in cuts] + [groups]
        return tuple(chunks), list(zip(bounds[:-1], bounds[1:]))
    if not rechunk:
        raise ValueError(
            f"Expected {name} channel chunks on group boundaries (multiples of "
            f"{c_per_group} channels for groups={groups}), got {tuple(chunks)}; pass "
            "rechunk=True to merge them into one chunk")
    return (sum(chunks),), [(0, groups)]


def overlap(x, depth):
    """Halo exchange: ``depth`` maps spatial axis -> (left, right). Axes of one chunk
    need none (dask would reject a single chunk smaller than the depth)."""
    full = {}
    for ax in range(x.ndim):
        d = depth.get(ax, (0, 0))
        full[ax] = d if len(x.chunks[ax]) > 1 and max(d) > 0 else 0
    if not any(full.values()):
        return x
    return da.overlap.overlap(x, depth=full, boundary="none", allow_rechunk=False)


def block_starts(a, tiles, space, left):
    """Start of each (overlapped) block along one axis, in that space's units."""
    if space == "input":
        starts = a.input_bounds(tiles)[:-1]
    else:
        starts = list(tiles[:-1])
    many = len(starts) > 1
    return [s - (left if (j > 0 and many) else 0) for j, s in enumerate(starts)]


def forward_table(a, tiles):
    """Per output tile j along one axis, for ops reading the input forward:
    (lo, hi) of the tile's input inside the overlapped block, pads (begin, end),
    the global start of that slice and the tile's output count."""
    starts = block_starts(a, tiles, "input", 0)
    out = []
    for j, (o0, o1) in enumerate(zip(tiles[:-1], tiles[1:])):
        lo_g, hi_g = a.tile_input(o0, o1)
        clo, chi = max(lo_g, 0), min(hi_g, a.size)
        out.append((clo - starts[j], max(chi, clo) - starts[j], max(0, -lo_g),
                    max(0, hi_g - a.size), clo, o1 - o0))
    return out


def adjoint_table(a, tiles):
    """Per input chunk j along one axis, for ops that scatter output gradients
    back: (q0 - block start, chunk start, chunk length, local pad_begin, outputs)
    where outputs [q0, o_{j+1}) reach the chunk."""
    bounds = a.input_bounds(tiles)
    starts = block_starts(a, tiles, "output", a.grad_halo)
    out = []
    for j, (o0, o1) in enumerate(zip(tiles[:-1], tiles[1:])):
        q0 = max(0, o0 - a.grad_halo)
        c0, c1 = bounds[j], bounds[j + 1]
        out.append((q0 - starts[j], c0, c1 - c0, c0 + a.pad_begin - q0 * a.stride, o1 - q0))
    return out


def chunks_of(x, axis_chunks):
    return tuple(x.chunks[:2]) + tuple(axis_chunks)


def pick(block_id, tables):
    return [t[j] for t, j in zip(tables, block_id[2:])]


def tree_sum(parts, split_every=8):
    """Sum Delayed ``parts`` in a tree of ``split_every``-ary adds (on the workers)."""
    parts = list(parts)
    while len(parts) > 1:
        parts = [dask.delayed(_add_all, pure=True)(*parts[i:i + split_every])
                 for i in range(0, len(parts), split_every)]
    return parts[0]


def _add_all(*arrays):
    total = arrays[0].copy()
    for a in arrays[1:]:
        total += a
    return total


# -- block functions ---------------------------------------------------------------


def _to2d(t, fill):
    return tuple(t) if len(t) == 2 else (fill,) + tuple(t)


def conv_tile(xb, w, b, *, nd, tables, stride, dilation, groups_of, rows_per_group,
              block_id=None):
    """One output tile of a forward convolution: fastconv's conv on the tile's
    input with the tile's own asymmetric padding."""
    from .. import functional

    rows = pick(block_id, tables)
    g0, g1 = groups_of[block_id[1]]
    wl = w[g0 * rows_per_group:g1 * rows_per_group]
    bl = None if b is None else b[g0 * rows_per_group:g1 * rows_per_group]
    if any(r[1] <= r[0] for r in rows):  # every window of the tile lies in padding
        out = np.zeros((xb.shape[0], wl.shape[0]) + tuple(r[5] for r in rows), dtype=xb.dtype)
        if bl is not None:
            out += bl.reshape((-1,) + (1,) * nd)
        return out
    sl = (slice(None), slice(None)) + tuple(slice(r[0], r[1]) for r in rows)
    pad = tuple((r[2], r[3]) for r in rows)
    run = functional.conv1d if nd == 1 else functional.conv2d
    return run(contiguous(xb[sl]), wl, bl, stride, pad, dilation, g1 - g0)


def adjoint_tile(gb, w, b, *, nd, tables, stride, dilation, groups_of, rows_per_group,
                 c_out_per_group, block_id=None):
    """One input chunk of a convolution's input gradient (a transposed convolution)."""
    rows = pick(block_id, tables)
    g0, g1 = groups_of[block_id[1]]
    wl = contiguous(w[g0 * rows_per_group:g1 * rows_per_group])
    c_in = (g1 - g0) * c_out_per_group
    bl = None if b is None else b[g0 * c_out_per_group:g1 * c_out_per_group]
    kernel = w.shape[2:]
    sizes, pads, eff_len, sl = [], [], [], [slice(None), slice(None)]
    for r, k, s, d in zip(rows, kernel, stride, dilation):
        q_lo, _, length, pb, n = r
        sl.append(slice(q_lo, q_lo + n))
        eff = d * (k - 1) + 1
        used = min(length, (n - 1) * s + eff - pb)  # beyond it no window reaches
        sizes.append(length)
        eff_len.append(used)
        pads.append((pb, max(0, (n - 1) * s + eff - pb - used)))
    full = (gb.shape[0], c_in) + tuple(sizes)
    if any(u <= 0 for u in eff_len):
        out = np.zeros(full, dtype=gb.dtype)
    else:
        from .._validation import conv_geometry

        gy = contiguous(gb[tuple(sl)])
        geo = conv_geometry((gb.shape[0], c_in) + tuple(eff_len), wl.shape, nd, stride,
                            tuple(pads), dilation, g1 - g0)
        out = _launch.conv_input_grad(gy, wl, None, geo)
        if tuple(eff_len) != tuple(sizes):
            out = np.pad(out, [(0, 0), (0, 0)] + [(0, s - u) for s, u in zip(sizes, eff_len)])
    if bl is not None:
        out += bl.reshape((-1,) + (1,) * nd)
    return out


def weight_tile(xb, gb, *, nd, tables, stride, dilation, groups, weight_shape,
                block_id):
    """The weight gradient of one block pair: x tile (with halo) and its output tile."""
    from .._validation import conv_geometry

    rows = pick(block_id, tables)
    if any(r[1] <= r[0] for r in rows):
        return np.zeros(weight_shape, dtype=xb.dtype)
    sl = (slice(None), slice(None)) + tuple(slice(r[0], r[1]) for r in rows)
    xs = contiguous(xb[sl])
    pad = tuple((r[2], r[3]) for r in rows)
    gy = contiguous(gb)
    geo = conv_geometry(xs.shape, weight_shape, nd, stride, pad, dilation, groups)
    return _launch.conv_weight_grad(xs, gy, geo)


def pool_tile(xb, *, kind, geo, tables, cip, want_indices, block_id=None):
    """One output tile of max or average pooling (a tuple (values, indices) for max)."""
    rows = pick(block_id, tables)
    nd = geo.nd
    sl = (slice(None), slice(None)) + tuple(slice(r[0], r[1]) for r in rows)
    xs = xb[sl]
    last = [r[3] > 0 for r in rows]
    first = [r[2] > 0 for r in rows]
    pads = tuple(p if f else 0 for p, f in zip(geo.padding[2 - nd:], first))
    if kind == "avg" and cip:
        # a last tile that is not the first keeps the global divisor's clip at
        # size + padding with explicit zeros (adding +0.0 changes no sum)
        extra = [p if (la and not f) else 0
                 for p, la, f in zip(geo.padding[2 - nd:], last, first)]
        if any(extra):
            xs = np.pad(xs, [(0, 0), (0, 0)] + [(0, e) for e in extra])
    xs = contiguous(xs)
    lgeo = replace(geo, in_size=_to2d(xs.shape[2:], 1), out_size=_to2d([r[5] for r in rows], 1),
                   padding=_to2d(pads, 0))
    if kind == "avg":
        return _launch.avg_pool_forward(xs, lgeo, cip)
    out, idx = _launch.max_pool_forward(xs, lgeo, want_indices)
    if not want_indices:
        return out
    offs = [r[4] for r in rows]
    if nd == 1:
        idx += offs[0]
    else:
        width = geo.in_size[1]
        lh, lw = np.divmod(idx, xs.shape[3])
        idx = (lh + offs[0]) * width + (lw + offs[1])
    return out, idx


def max_pool_grad_tile(gb, ib, *, geo, tables, block_id=None):
    """One input chunk of the max-pool gradient: the outputs that reach it, their
    indices made local (the others route 0 to position 0: +0.0 changes no sum)."""
    rows = pick(block_id, tables)
    nd = geo.nd
    plane = math.prod(geo.in_size)
    sl = (slice(None), slice(None)) + tuple(slice(r[0], r[0] + r[4]) for r in rows)
    gy = np.array(gb[sl], copy=True)
    idx = np.asarray(ib[sl])
    bad = np.count_nonzero((idx < 0) | (idx >= plane))
    if bad:
        raise ValueError(f"Expected indices in [0, {plane}) for input_size with spatial "
                         f"size {geo.in_size[2 - nd:]}, got {bad} out of range")
    sizes = [r[2] for r in rows]
    if nd == 1:
        loc = idx - rows[0][1]
        inside = (loc >= 0) & (loc < sizes[0])
    else:
        h, w = np.divmod(idx, geo.in_size[1])
        h, w = h - rows[0][1], w - rows[1][1]
        inside = (h >= 0) & (h < sizes[0]) & (w >= 0) & (w < sizes[1])
        loc = h * sizes[1] + w
    gy[~inside] = 0
    loc = np.where(inside, loc, 0).astype(np.int64)
    out, _ = _launch.max_pool_backward(contiguous(gy), contiguous(loc),
                                       (gb.shape[0], gb.shape[1]) + tuple(sizes))
    return out


def _divisors(size, k, s, ph, n, u0, cip):
    """Per output of one axis, the divisor the average-pool kernel uses."""
    u = np.arange(u0, u0 + n)
    hs = u * s - ph
    he = np.minimum(hs + k, size + ph)
    if cip:
        return he - hs
    return np.maximum(np.minimum(he, size) - np.maximum(hs, 0), 0)


def avg_pool_grad_tile(gb, *, geo, tables, cip, block_id=None):
    """One input chunk of the average-pool gradient. Windows that cross the chunk
    get the global divisor: their gradient is scaled by local/global divisor
    before the kernel divides by its local one."""
    rows = pick(block_id, tables)
    nd = geo.nd
    sl = (slice(None), slice(None)) + tuple(slice(r[0], r[0] + r[4]) for r in rows)
    gy = contiguous(gb[sl])
    ks, ss = geo.kernel[2 - nd:], geo.stride[2 - nd:]
    ps, sizes = geo.padding[2 - nd:], geo.in_size[2 - nd:]
    local = np.ones((1,) * nd)
    glob = np.ones((1,) * nd)
    for ax, (r, k, s, p, size) in enumerate(zip(rows, ks, ss, ps, sizes)):
        q0 = (r[1] + p - r[3]) // s
        shape = [1] * nd
        shape[ax] = r[4]
        local = local * _divisors(r[2], k, s, r[3], r[4], 0, cip).reshape(shape)
        glob = glob * _divisors(size, k, s, p, r[4], q0, cip).reshape(shape)
    if not np.array_equal(local, glob):
        ratio = np.where(glob > 0, local / np.maximum(glob, 1), 0)
        gy = (gy * ratio).astype(gy.dtype)
    lgeo = replace(geo, in_size=_to2d([r[2] for r in rows], 1),
                   out_size=_to2d([r[4] for r in rows], 1),
                   padding=_to2d([r[3] for r in rows], 0))
    return _launch.avg_pool_backward(gy, (gb.shape[0], gb.shape[1]) + tuple(r[2] for r in rows),
                                     lgeo, cip)


def item(block, i):
    """``block[i]`` of a (values, indices) block."""
    return block[i]
