"""Every path decision of the convolution kernels, in one place.

Each op of a convolution has several kernels, here called paths. This module
picks one for a geometry, dtype and thread count, in one ``auto`` block per
op, as scikit-learn's pairwise-distances engine chooses among its
strategies. Every threshold is a named constant below, with the measurement
that set it. The launchers (``fastconv._launch``) pass the chosen path to
the kernel, which takes it as given.

Paths (kernels in ``fastconv/_kernels/_conv.pxi``):

==============  ==================  ==========================================
op              path                kernel
==============  ==================  ==========================================
forward         ``depthwise_flat``  ``depthwise_forward_or_input_grad``: flat
                                    scratch planes (stride 1)
                ``depthwise_rows``  ``depthwise_forward_or_input_grad``: row
                                    passes, no scratch
                ``implicit_row``    ``conv2d_forward``: implicit tiles, one
                                    output channel at a time
                ``implicit``        ``conv2d_forward``: implicit tiles (B read
                                    in place from a padded input copy)
                ``im2col``          ``conv2d_forward``: patch tiles
                ``channels``        ``conv2d_forward``: the patches of all
                                    positions as A panels, the weight as B
                                    panels of output channels (few positions)
                ``winograd``        ``conv2d_forward``: Winograd F(2x2, 3x3),
                                    16 GEMMs over transformed tiles (3x3 at
                                    stride 1)
input_grad      ``depthwise_flat``, as for forward
                ``depthwise_rows``
                ``implicit_adjoint`` ``conv2d_input_grad``: adjoint of the
                                    implicit forward (1-D, images as rows)
                ``col2im``          ``conv2d_input_grad``: GEMM + scatter
                ``winograd``        ``conv2d_forward``'s winograd path on
                                    grad_out, with the flipped weight
weight_grad     ``depthwise_flat``  ``depthwise_weight_grad``: dot products
                                    over flat planes (stride 1)
                ``depthwise_rows``  ``depthwise_weight_grad``: by rows
                ``direct``          ``conv2d_weight_grad``: dot products over
                                    flat planes (stride 1)
                ``implicit``        ``conv2d_weight_grad``: implicit tiles
                ``im2col``          ``conv2d_weight_grad``: patch tiles,
                                    per-thread copies of dW
                ``im2col_by_columns`` ``conv2d_weight_grad``: patch tiles,
                                    items are blocks of columns of dW
max_pool        ``flat``            ``max_pool2d_forward``: 2x2 windows at
                                    stride 2 that tile pairs of input rows,
                                    a band of rows as one flat row
                ``rows``            a row of outputs at a time, vectorised
                                    along it (edges: one window at a time)
                ``windows``         one window at a time (with indices,
                                    windows spanning 2**31 elements or more)
avg_pool        ``flat``, ``rows``  ``avg_pool2d_forward``, as for max_pool
avg_pool_grad   ``tiled``           ``avg_pool2d_backward``: windows that tile
                                    the plane (kernel = stride, no padding)
                ``rows``            a row of outputs spread once, added to
                                    each of its window rows
==============  ==================  ==========================================

The max-pool gradient and the bias gradient have one kernel each.

``fastconv.conv_plan`` (``conv_plan`` here) tells which path each op of a
convolution takes;
``forced`` (private, for tests and tuning) makes the plan take a given path
wherever it applies, and raises where it does not.
"""

import contextlib
import functools
from dataclasses import dataclass

import numpy as np

from . import _config
from ._validation import conv_geometry

__all__ = ["Plan", "PATHS", "CONV_OPS", "plan_for", "pool_plan", "conv_plan", "conv_threads",
           "threads_for", "forced"]

CONV_OPS = ("forward", "input_grad", "weight_grad")
PATHS = {
    "forward": ("depthwise_flat", "depthwise_rows", "implicit_row", "implicit", "im2col",
                "channels", "winograd"),
    "input_grad": ("depthwise_flat", "depthwise_rows", "implicit_adjoint", "col2im",
                   "winograd"),
    "weight_grad": ("depthwise_flat", "depthwise_rows", "direct", "implicit",
                    "im2col_by_columns", "im2col"),
    "max_pool": ("flat", "rows", "windows"),
    "avg_pool": ("flat", "rows"),
    "avg_pool_grad": ("tiled", "rows"),
}

# -- thresholds -------------------------------------------------------------------

# Work per thread below which another thread costs more (waking it, sharing
# the tile) than it saves: multiply-adds for convolutions, elements for pooling.
GRAIN = {"conv": 2**16, "pool": 2**15}

# The implicit kernels are taken where at least this share of the forward's
# work is useful (the rest: positions between rows of a tile and the tail of
# its last block of NR columns).
IMPLICIT_MIN_EFFICIENCY = 0.6
# Tiles of more rows are preferred while their efficiency is within this of
# the best one's: fewer, larger copies of the input.
IMPLICIT_ROWS_SLACK = 0.02
# ... and need micro-kernel rows (NR) of at least this many values: at NR = 8
# (AVX2 float64, SSE2 float32) the implicit forward measured 0.45-1.0x the
# im2col time (lenet1 0.38 -> 0.17 ms, AVX2 float64); SSE2 float64 (NR = 4)
# is left to im2col, unmeasured.
IMPLICIT_MIN_NR = 8
# The implicit forward computes one output channel at a time (implicit_row)
# where at most a third of the micro-kernel's MR rows hold output channels:
# 0.45-0.65x the time with one channel per group, 0.8-1.0x with two.
ROW_KERNEL_MAX_SHARE = 1 / 3
# (The input gradient at stride 1 was once the forward of grad_out with the
# flipped weight. With the explicit micro-kernels col2im measured as fast or
# faster on the six anchor shapes, 1.0-1.3x, and it never multiplies the
# padding's zeros by the weight: 0 * inf is NaN.)
# The adjoint of the implicit forward serves 1-D input gradients with fewer
# outputs per image than half a block of NR columns (MNIST-1D's 10 and 5 in
# float32): col2im's items are single images, mostly padding.
# The weight gradient's B panels hold NR output channels: it is direct (dot
# products, whose cost does not depend on NR) with at most 3/8 NR of them per
# group at stride 1 (lenet1's 6: direct 0.67x the implicit time at NR = 16,
# 1.6x at NR = 8), and implicit only with at least NR/4 (lenet1's 6 at NR =
# 32: im2col 0.9x the implicit time); implicit measured 0.55-0.8x the time of
# im2col elsewhere.
DIRECT_MAX_SHARE = 3 / 8
WEIGHT_IMPLICIT_MIN_SHARE = 1 / 4
# Bytes of dW above which the weight gradient's items are blocks of columns
# of dW, each summing all positions into its own slice, instead of tiles of
# positions that walk all of dW (8x slower than PyTorch on a 7x7 map with
# 512 channels).
DW_CACHED = 1 << 20
# The forward with the GEMM's operands swapped (channels) holds the patches
# of all positions at once, K x CHANNELS_MAX_POSITIONS values at most. It is
# taken with at least NR output channels per group, and panels of NR of them
# for every thread, for at most TP positions (one im2col tile), or up to the
# bound for a weight of at least CHANNELS_MIN_WEIGHT values, which it reads
# once where the other paths read it once per tile. Zen 5, 2 threads, rates
# against the best other path (float32 AVX-512; float64 and AVX2 alike
# within 0.1-0.2x): 3x3, 512 channels at 7x7: 1.4-1.8x for 1 and 2 images,
# 1.15-1.35x for 4 to 8 (2.4M weights); 256 -> 512 at stride 2, 8 images:
# 1.05-1.1x (1.2M); 256 -> 256 at 14x14, 196 positions: 0.85-1.15x (0.6M,
# not taken); 784 positions: 0.8-1.15x; one panel of 32 channels for 2
# threads: 0.8-1.0x.
CHANNELS_MAX_POSITIONS = 512
CHANNELS_MIN_WEIGHT = 1 << 20
# Winograd F(2x2, 3x3) (3x3 at stride 1: the forward, and the input gradient
# as the forward of grad_out) for at least these input and output channels
# of its forward, by micro-kernel and itemsize: its transforms cost
# O(C_in + C_out) per tile against the GEMMs' O(C_in * C_out), the input's
# spread over the output channels and the result's over the input channels.
# Time of the best other path over winograd's, Zen 5, 2 threads, 8-64
# images of 8x8 to 56x56 (float32 / float64):
#   avx2+fma: (8, 8) 1.19-1.25 / 1.0-1.20, (16, 16) 1.33-1.35 / 1.15-1.37,
#     (32, 8) 1.42 / 1.41, (64, 16) 1.31 / 1.17, (16, 32) 1.57 / 1.57;
#     not taken: (3, 32) 0.92 / 0.93, and with it (4, 16) 1.15 / 1.13.
#   sse2: 1.5-1.9 from (8, 8) to (128, 16); (3, 32) 1.18-1.24 is left to
#     the direct paths, as on avx2+fma.
#   avx512f, float32 (an 8 x 32 kernel): (32, 32) 1.05, (32, 64) and (64,
#     64) 1.09-1.17; not taken: (16, 32) 0.88, (16, 16) 0.73, (8, 8) 0.76.
#   avx512f, float64: (16, 32) 1.13, (32, 64) 1.26, (64, 64) 1.10-1.43;
#     not taken: (16, 16) 1.06, (64, 16) 0.99, (32, 8) 0.72, (8, 8) 0.72.
#   neon (and scalar): not measured (no aarch64 machine), as avx512f's
#   float64.
WINOGRAD_MIN_CHANNELS = {("avx2+fma", 4): (8, 8), ("avx2+fma", 8): (8, 8),
                         ("sse2", 4): (8, 8), ("sse2", 8): (8, 8),
                         ("avx512f", 4): (32, 32), ("avx512f", 8): (16, 32)}
WINOGRAD_MIN_CHANNELS_OTHER = (16, 32)
# ... and at most this many input channels per output channel: (128, 16) at
# 8x8 ran at 0.96-0.98 on avx2+fma (1.7 on sse2, left out with it).
WINOGRAD_MAX_IN_PER_OUT = 4
# ... and for tiles enough for two items of NR tiles per thread (its items
# are blocks of tiles), and a transformed weight (16 x C_in x C_out values)
# of at most this many bytes: every item of tiles reads all of it, and 512
# -> 512 channels at 7x7 (16.8 MB in float32) ran at 0.55-0.8x the direct
# time.
WINOGRAD_MAX_WEIGHT_BYTES = 1 << 23
# Bytes of the transformed input of one winograd item (16 x C_in x tiles),
# which its GEMMs read once per panel of MR output channels: 128 KiB was
# within 5% of the best of 64 KiB to 1 MiB on each of the shapes above.
WINOGRAD_BLOCK_BYTES = 1 << 17
# Bytes of per-thread scratch of the kernels over flat planes. The weight
# gradient's (direct, depthwise_flat) go over bands of output rows that fit;
# the forward and input gradient (depthwise_flat) hold two whole padded
# planes, and beyond this give way to depthwise_rows, which needs no scratch
# (before the bound: 6 GiB of scratch for one 20000 x 20000 plane).
FLAT_MAX_BYTES = 1 << 22


@dataclass(frozen=True)
class Plan:
    """The path of one op, its thread count, and the tile where the path
    takes one: rows x cols of outputs of the implicit kernels, or (rows, 0)
    of a band of the direct weight gradient."""

    path: str
    n_threads: int
    tile: tuple = (0, 0)


def threads_for(work, kind):
    """Threads for one kernel call of ``work`` units: get_num_threads(), but
    fewer for calls too small to share."""
    return max(1, min(_config.get_num_threads(), int(work) // GRAIN[kind]))


def conv_threads(geo):
    """Threads for one convolution kernel: its multiply-adds decide."""
    n, c_out = geo.n, geo.c_out
    macs = n * c_out * geo.out_size[0] * geo.out_size[1] * (geo.c_in // geo.groups) \
        * geo.kernel[0] * geo.kernel[1]
    return threads_for(macs, "conv")


# -- geometry facts -------------------------------------------------------------


def _depthwise(geo):
    return geo.c_in == geo.groups == geo.c_out


def _positions(geo):
    """Output positions over the batch: N x OH x OW."""
    return geo.n * geo.out_size[0] * geo.out_size[1]


def _flat_width(geo):
    """Wp of _Flat (_conv_direct.pxi): the row stride of the flat planes."""
    return max(geo.out_size[1] + (geo.kernel[1] - 1) * geo.dilation[1],
               geo.in_size[1] + geo.pad_begin[1])


def _flat_bytes(geo, itemsize):
    """Per-thread scratch of the forward and input gradient over flat planes:
    two padded planes of Hp x Wp."""
    (h, _), (kh, _), (oh, _) = geo.in_size, geo.kernel, geo.out_size
    hp = max(oh + (kh - 1) * geo.dilation[0], h + geo.pad_begin[0])
    return 2 * hp * _flat_width(geo) * itemsize


def _direct_band(geo, itemsize, n_threads):
    """Output rows per band of the direct weight gradient (and of
    depthwise_flat's): as many as FLAT_MAX_BYTES of scratch holds (a band of
    the input with its halo, and one of grad_out per output channel of a
    group), and few enough for two bands per thread where (image, group)
    items are fewer than the threads. 0 where not even one row fits."""
    oh, halo = geo.out_size[0], (geo.kernel[0] - 1) * geo.dilation[0]
    row = _flat_width(geo) * itemsize
    per_band_row = (1 + geo.c_out // geo.groups) * row
    rows = (FLAT_MAX_BYTES - halo * row) // per_band_row
    if rows < 1:
        return 0
    items = geo.n * geo.groups
    if 0 < items < n_threads:
        rows = min(rows, -(-oh // -(-2 * n_threads // items)))
    return min(rows, oh)


def _flat_applies(op, geo, itemsize, n_threads):
    if geo.stride != (1, 1):
        return False
    if op == "weight_grad":
        return _direct_band(geo, itemsize, n_threads) > 0
    return _flat_bytes(geo, itemsize) <= FLAT_MAX_BYTES


def _images_as_rows(geo):
    """Whether the implicit kernels see a 1-D convolution's images as rows."""
    return (geo.in_size[0] == 1 and geo.out_size[0] == 1 and geo.kernel[0] == 1
            and geo.pad_begin[0] == 0)


def _one_tap_per_phase(geo):
    """Strided, with every tap in a phase of its own (1x1 or 2x2 at stride 2):
    the implicit kernels' phases are then the im2col rows, copied all the
    same, and their forward measured 1.1x slower."""
    sh = 1 if _images_as_rows(geo) else geo.stride[0]
    sw = geo.stride[1]
    return ((sh > 1 or sw > 1)
            and (geo.kernel[0] - 1) * geo.dilation[0] // sh == 0
            and (geo.kernel[1] - 1) * geo.dilation[1] // sw == 0)


def _implicit_tile(geo, itemsize, n_threads):
    """(rows, cols, efficiency) of the implicit kernels' tile, or None where
    no tile holds a row of outputs, or where the input a tile copies (its
    outputs' windows, per channel) would outgrow FLAT_MAX_BYTES: dilations
    and strides of millions make that span, not the tile, the workspace."""
    (h, w), (kh, kw), (oh, ow) = geo.in_size, geo.kernel, geo.out_size
    tile = _config.conv_kernels.implicit_tiles(
        itemsize, geo.n, h, w, kh, kw, oh, ow, *geo.stride, geo.pad_begin[0],
        *geo.dilation, geo.groups, n_threads, IMPLICIT_ROWS_SLACK)
    if tile is None:
        return None
    rows, cols = tile[:2]
    sh = 1 if _images_as_rows(geo) else geo.stride[0]
    span = (((rows - 1) * sh + (kh - 1) * geo.dilation[0] + 1)
            * ((cols - 1) * geo.stride[1] + (kw - 1) * geo.dilation[1] + 1))
    return tile if span * itemsize <= FLAT_MAX_BYTES else None


def _winograd_channels(op, geo):
    """(input, output) channels of the winograd forward that computes ``op``:
    the input gradient is the forward of grad_out with the flipped weight."""
    return (geo.c_in, geo.c_out) if op == "forward" else (geo.c_out, geo.c_in)


def _winograd_tiles(op, geo):
    """The 2x2 blocks of outputs of the winograd forward that computes ``op``."""
    size = geo.in_size if op == "input_grad" else geo.out_size
    return geo.n * -(-size[0] // 2) * -(-size[1] // 2)


def _winograd_block(op, geo, itemsize, n_threads):
    """Tiles per winograd item: a multiple of NR whose transformed input
    fits WINOGRAD_BLOCK_BYTES, and small enough for two items per thread."""
    nr = _config.blocking()["NR"][itemsize]
    c_in = _winograd_channels(op, geo)[0]
    blocks = max(1, WINOGRAD_BLOCK_BYTES // (16 * c_in * itemsize * nr))
    blocks = min(blocks, max(1, _winograd_tiles(op, geo) // (2 * n_threads * nr)))
    return blocks * nr


# -- the plans ----------------------------------------------------------------------


def _applies(op, path, geo, itemsize, n_threads):
    """Whether ``path`` computes ``op`` of this geometry correctly (the
    kernels' preconditions, not their speed)."""
    if path == "depthwise_flat":
        return _depthwise(geo) and _flat_applies(op, geo, itemsize, n_threads)
    if path == "depthwise_rows":
        return _depthwise(geo)
    if path in ("implicit", "implicit_row"):
        return _implicit_tile(geo, itemsize, n_threads) is not None
    if path == "implicit_adjoint":
        tile = _implicit_tile(geo, itemsize, n_threads)
        return _images_as_rows(geo) and tile is not None and tile[1] == geo.out_size[1]
    if path == "direct":
        return _flat_applies(op, geo, itemsize, n_threads)
    if path == "channels":
        return _positions(geo) <= CHANNELS_MAX_POSITIONS
    if path == "winograd":
        return (geo.nd == 2 and geo.kernel == (3, 3) and geo.stride == (1, 1)
                and geo.dilation == (1, 1) and geo.groups == 1 and min(geo.c_in, geo.c_out) > 0
                and (op == "forward" or max(geo.pad_begin) <= 2))
    return True  # im2col, col2im, im2col_by_columns


def _auto(op, geo, itemsize, n_threads, winograd=True):
    """The path of ``op``: every speed decision of the convolution kernels;
    without ``winograd``, the best of the others (where the winograd path
    met a non-finite value)."""
    blk = _config.blocking()
    mr, nr = blk["MR"], blk["NR"][itemsize]
    cg, mg = geo.c_in // geo.groups, geo.c_out // geo.groups
    if _depthwise(geo):
        if _flat_applies(op, geo, itemsize, n_threads):
            return "depthwise_flat"
        # planes too large for flat scratch: by rows, where the threads have
        # planes to share (the weight gradient's are its channels)
        planes = geo.c_in if op == "weight_grad" else geo.n * geo.c_in
        if planes >= n_threads:
            return "depthwise_rows"

    positions = _positions(geo)
    k = cg * geo.kernel[0] * geo.kernel[1]
    if (op == "forward" and mg >= nr and geo.groups * -(-mg // nr) >= n_threads
            and positions <= CHANNELS_MAX_POSITIONS
            and (positions <= blk["TP"] or geo.c_out * k >= CHANNELS_MIN_WEIGHT)):
        return "channels"
    if winograd and op != "weight_grad" and _applies(op, "winograd", geo, itemsize, n_threads):
        c_in, c_out = _winograd_channels(op, geo)
        min_in, min_out = WINOGRAD_MIN_CHANNELS.get(
            (_config.conv_kernels.ukernel()[0], itemsize), WINOGRAD_MIN_CHANNELS_OTHER)
        if (c_in >= min_in and c_out >= min_out and c_in <= WINOGRAD_MAX_IN_PER_OUT * c_out
                and 16 * c_in * c_out * itemsize <= WINOGRAD_MAX_WEIGHT_BYTES
                and _winograd_tiles(op, geo) >= 2 * n_threads * nr):
            return "winograd"

    tile = _implicit_tile(geo, itemsize, n_threads)
    implicit = (tile is not None and tile[2] >= IMPLICIT_MIN_EFFICIENCY
                and nr >= IMPLICIT_MIN_NR and not _one_tap_per_phase(geo))
    if op == "forward":
        if not implicit:
            return "im2col"
        return "implicit_row" if mg <= ROW_KERNEL_MAX_SHARE * mr else "implicit"
    if op == "input_grad":
        per_image = geo.out_size[0] * geo.out_size[1]
        if (geo.n > 1 and 2 * per_image < nr and implicit
                and _applies(op, "implicit_adjoint", geo, itemsize, n_threads)):
            return "implicit_adjoint"
        return "col2im"
    # weight_grad
    if mg <= DIRECT_MAX_SHARE * nr and _applies(op, "direct", geo, itemsize, n_threads):
        return "direct"
    implicit = implicit and mg >= WEIGHT_IMPLICIT_MIN_SHARE * nr
    k_blocks = -(-k // blk["KC"])
    item_positions = tile[0] * tile[1] if implicit else min(positions, blk["TP"])
    if (geo.c_out * k * itemsize > DW_CACHED and geo.groups * k_blocks >= 2 * n_threads
            and item_positions < blk["TP"]):
        return "im2col_by_columns"
    return "implicit" if implicit else "im2col"


_forced = {}


@contextlib.contextmanager
def forced(**paths):
    """Within the block, op ``op`` takes path ``paths[op]`` (for example
    ``forced(forward="im2col")``) wherever it applies; a call for which it
    does not raises ValueError. Private: for tests and tuning."""
    for op, path in paths.items():
        if op not in PATHS:
            raise ValueError(f"Expected an op of {sorted(PATHS)}, got {op!r}")
        if path not in PATHS[op]:
            raise ValueError(f"Expected a {op} path of {PATHS[op]}, got {path!r}")
    saved = dict(_forced)
    _forced.update(paths)
    try:
        yield
    finally:
        _forced.clear()
        _forced.update(saved)


def _plan(op, geo, itemsize, n_threads, winograd=True):
    path = _forced.get(op) if winograd else None
    if path is None:
        path = _auto(op, geo, itemsize, n_threads, winograd)
    elif not _applies(op, path, geo, itemsize, n_threads):
        raise ValueError(f"the {op} path {path!r} does not apply to {geo}")
    tile = (0, 0)
    if path in ("implicit", "implicit_row", "implicit_adjoint"):
        tile = _implicit_tile(geo, itemsize, n_threads)[:2]
    elif op == "weight_grad" and path in ("direct", "depthwise_flat"):
        tile = (_direct_band(geo, itemsize, n_threads), 0)
    elif path == "winograd":
        tile = (_winograd_block(op, geo, itemsize, n_threads), 0)
    return Plan(path, n_threads, tile)


_plan_cached = functools.lru_cache(maxsize=1024)(_plan)


def plan_for(op, geo, itemsize, winograd=True):
    """The Plan of ``op`` (``forward``, ``input_grad`` or ``weight_grad``) for
    a convolution of geometry ``geo`` on values of ``itemsize`` bytes;
    without ``winograd``, the path taken where the winograd one met a
    non-finite value (never a forced one)."""
    n_threads = conv_threads(geo)
    if _forced and winograd:
        return _plan(op, geo, itemsize, n_threads)
    return _plan_cached(op, geo, itemsize, n_threads, winograd)


# -- pooling ---------------------------------------------------------------------

# The flat path of 2x2 max pooling at stride 2 only for rows shorter than two
# vectors (LeNet's 14 outputs in float32): longer rows vectorise row by row,
# and the flat path computes and drops every other row of outputs.
FLAT_MAX_ROW_VECTORS = 2
# Windows whose in-bounds taps span at least this many elements (their rows
# times W) take max pooling's windows path when indices are wanted: the rows
# path keeps int tap offsets.
INT_TAPS_LIMIT = 2**31


def _tiles_row_pairs(geo):
    """2x2 windows at stride 2 that tile whole pairs of input rows (W = 2*OW, no
    padding): the flat path, a band of output rows as one flat row."""
    (h, w), (oh, ow) = geo.in_size, geo.out_size
    return (geo.kernel == (2, 2) and geo.stride == (2, 2) and geo.padding == (0, 0)
            and geo.dilation == (1, 1) and w == 2 * ow and h >= 2 * oh)


def _tiles_plane(geo):
    """Windows that tile the plane: kernel = stride, no padding."""
    (h, w), (oh, ow) = geo.in_size, geo.out_size
    return (geo.kernel == geo.stride and geo.padding == (0, 0) and oh * geo.stride[0] <= h
            and ow * geo.stride[1] <= w)


def _pool_applies(op, path, geo, want_indices):
    if path == "flat":
        return _tiles_row_pairs(geo)
    if path == "tiled":
        return _tiles_plane(geo)
    if path == "rows" and op == "max_pool" and want_indices:
        (h, w), (kh, _), (ph, _) = geo.in_size, geo.kernel, geo.padding
        return min((kh - 1) * geo.dilation[0] + 1, h + ph) * w < INT_TAPS_LIMIT
    return True  # rows, windows


def _pool_auto(op, geo, itemsize, want_indices):
    blk = _config.pool_blocking()
    if op == "avg_pool_grad":
        return "tiled" if _tiles_plane(geo) else "rows"
    if op == "avg_pool":
        return "flat" if _tiles_row_pairs(geo) else "rows"
    if not _pool_applies(op, "rows", geo, want_indices):
        return "windows"
    # float64 indices: only where the compare-and-select vectorises
    if (_tiles_row_pairs(geo) and geo.out_size[1] < FLAT_MAX_ROW_VECTORS * blk["VEC"][itemsize]
            and (itemsize == 4 or not want_indices or blk["F64_INDEX_SIMD"])):
        return "flat"
    return "rows"


def pool_plan(op, geo, itemsize, work, want_indices=False):
    """The Plan of a pooling op (``max_pool``, ``avg_pool``, ``avg_pool_grad``)
    for geometry ``geo`` on values of ``itemsize`` bytes; ``work`` is the
    number of elements, for the thread count."""
    path = _forced.get(op)
    if path is None:
        path = _pool_auto(op, geo, itemsize, want_indices)
    elif not _pool_applies(op, path, geo, want_indices):
        raise ValueError(f"the {op} path {path!r} does not apply to {geo}")
    return Plan(path, threads_for(work, "pool"))


def conv_plan(input_shape, weight_shape, dtype=np.float32, stride=1, padding=0, dilation=1,
              groups=1):
    """The kernel path of each op of a convolution, as its call would take it.

    Parameters
    ----------
    input_shape, weight_shape : tuple of int
        As for ``conv1d``/``conv2d``: ``(N, C_in, *spatial)`` and
        ``(C_out, C_in/groups, *kernel)``.
    dtype : float32 or float64
    stride, padding, dilation, groups
        As for ``conv1d``/``conv2d``.

    Returns
    -------
    dict
        ``forward``, ``input_grad`` and ``weight_grad``: the path names of
        ``fastconv._plan.PATHS``; ``threads``: the thread count of the
        three kernels at the current setting. The forward of
        ``conv_transpose{1,2}d`` is the ``input_grad`` of the convolution
        whose weight it takes.

    Examples
    --------
    >>> import fastconv
    >>> fastconv.conv_plan((8, 64, 56, 56), (64, 64, 3, 3), padding=1)["weight_grad"]
    'implicit'
    >>> fastconv.conv_plan((8, 64, 56, 56), (64, 1, 3, 3), padding=1, groups=64)["forward"]
    'depthwise_flat'
    """
    dtype = np.dtype(dtype)
    if dtype not in (np.float32, np.float64):
        raise TypeError(f"Expected dtype float32 or float64, got {dtype}")
    nd = len(input_shape) - 2
    if nd not in (1, 2):
        raise ValueError(f"Expected an input shape of 3 or 4 dimensions, got {input_shape}")
    geo = conv_geometry(tuple(input_shape), tuple(weight_shape), nd, stride, padding,
                        dilation, groups)
    plans = {op: plan_for(op, geo, dtype.itemsize) for op in CONV_OPS}
    return {**{op: p.path for op, p in plans.items()},
            "threads": plans["forward"].n_threads}
