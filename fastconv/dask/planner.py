"""The chunk planner of :mod:`fastconv.dask`: plain arithmetic, no dask needed.

Every op of ``fastconv.dask`` is, along each spatial axis, one convolution
geometry ``(size, out_size, kernel, stride, dilation, pad_begin)`` read in one
of two directions:

* **forward** (input space -> output space: convolution and pooling forward,
  the weight gradients, the input gradient of a transposed convolution). The
  output tile ``[o0, o1)`` reads the input ``[o0*s - p_b, (o1 - 1)*s - p_b + eff)``
  with ``eff = d*(k - 1) + 1``. So input chunk boundaries sit at
  ``c = o*s - p_b`` and each chunk needs a halo of ``max(0, eff - s)`` input
  positions from its right neighbour; the part of a tile's range outside the
  array is that tile's own (asymmetric) padding.
* **adjoint** (output space -> input space: the input gradients, the
  transposed convolution forward). The input chunk ``[c_j, c_{j+1})`` takes
  contributions from the outputs ``[o_j - g, o_{j+1})`` with
  ``g = ceil(eff/s) - 1``: a halo of ``g`` output positions from the left
  neighbour.

A tiling is the list of output boundaries ``0 = o_0 < o_1 < ... < o_m = out_size``.
It is *legal* when every inner input boundary ``o_j*s - p_b`` lies strictly
inside the input, and (when there is more than one tile, since dask takes a
halo only from the immediate neighbour) every input chunk holds at least
``halo`` positions and every output tile at least ``grad_halo``. Legal
tilings serve the forward op and its gradients alike, so an input chunked
once (in storage, say) needs no rechunk in training.
"""

import math
from dataclasses import dataclass

from .._validation import conv_geometry, conv_transpose_geometry, pool_geometry

__all__ = [
    "AxisGeometry", "Plan", "TASK_SECONDS", "FLOP_RATE", "BYTE_RATE",
    "plan_conv", "plan_conv_transpose", "plan_pool",
]

#: Default seconds of work per task: dask's overhead is about 1 ms per task,
#: so 100 ms keeps it near 1%.
TASK_SECONDS = 0.1
#: Assumed convolution throughput of one worker thread (FLOP/s), for the
#: default task size. benchmarks/results-*.txt measured 70-190 GFLOP/s a
#: thread for float32 layers of 6-64 input channels on the benchmark machine
#: (less with few input channels, and on older cores): 50e9 is a middle
#: assumption. Pass ``flop_rate`` measured on your machine to plan for it.
FLOP_RATE = 50e9
#: Assumed pooling throughput of one worker thread (input bytes/s); the same
#: results measured 14-44 GB/s for float32 max and average pooling.
BYTE_RATE = 10e9


@dataclass(frozen=True)
class AxisGeometry:
    """One spatial axis of an op, as the convolution it is.

    Parameters
    ----------
    size : int
        Input length (the convolution's input; for a transposed convolution,
        its output).
    out_size : int
        Output length of the convolution (for a transposed convolution, its input).
    kernel, stride, dilation, pad_begin : int
        The convolution's (or pooling's) kernel, stride, dilation and leading padding.

    Examples
    --------
    >>> from fastconv.dask.planner import AxisGeometry
    >>> g = AxisGeometry(size=10, out_size=5, kernel=3, stride=2, dilation=1, pad_begin=1)
    >>> g.halo, g.grad_halo, g.min_outputs
    (1, 1, 1)
    >>> g.tile_input(1, 3)
    (1, 6)
    """

    size: int
    out_size: int
    kernel: int
    stride: int
    dilation: int
    pad_begin: int

    @property
    def eff(self):
        """The dilated kernel extent ``d*(k - 1) + 1``."""
        return self.dilation * (self.kernel - 1) + 1

    @property
    def halo(self):
        """Input positions a chunk needs from its right neighbour (forward)."""
        return max(0, self.eff - self.stride)

    @property
    def grad_halo(self):
        """Output positions a tile needs from its left neighbour (adjoint)."""
        return -(-self.eff // self.stride) - 1

    @property
    def min_outputs(self):
        """The fewest outputs of a tile, when an axis has several."""
        return max(1, self.grad_halo, -(-self.halo // self.stride))

    @property
    def min_chunk(self):
        """The smallest legal inner input chunk (``min_outputs * stride``)."""
        return self.min_outputs * self.stride

    def boundary(self, o):
        """The input position where output tile ``o`` starts reading: ``o*s - p_b``."""
        return o * self.stride - self.pad_begin

    def tile_input(self, o0, o1):
        """The input range ``[a, b)`` read by outputs ``[o0, o1)`` (may leave the array)."""
        return self.boundary(o0), self.boundary(o1 - 1) + self.eff

    def input_bounds(self, tiles):
        """The input chunk boundaries ``[0, c_1, ..., size]`` of a tiling."""
        return [0] + [self.boundary(o) for o in tiles[1:-1]] + [self.size]

    def input_chunks(self, tiles):
        """Input chunk lengths of a tiling."""
        b = self.input_bounds(tiles)
        return tuple(b1 - b0 for b0, b1 in zip(b[:-1], b[1:]))

    def output_chunks(self, tiles):
        """Output tile lengths of a tiling."""
        return tuple(o1 - o0 for o0, o1 in zip(tiles[:-1], tiles[1:]))

    def problems(self, tiles):
        """Why a tiling is not legal: a list of strings, empty if it is."""
        out = []
        if tiles[0] != 0 or tiles[-1] != self.out_size:
            out.append(f"the tiles must span [0, {self.out_size}), got {tiles}")
        if any(o1 <= o0 for o0, o1 in zip(tiles[:-1], tiles[1:])):
            out.append(f"the tile boundaries must increase, got {tiles}")
            return out
        if len(tiles) == 2:
            return out
        bounds = self.input_bounds(tiles)
        if not all(0 < c < self.size for c in bounds[1:-1]):
            out.append(f"the input boundaries {bounds[1:-1]} must lie in (0, {self.size})")
        chunks = self.input_chunks(tiles)
        if min(chunks) < max(self.halo, 1):
            out.append(f"input chunks {chunks} are smaller than the halo {self.halo}")
        outs = self.output_chunks(tiles)
        if min(outs) < self.grad_halo:
            out.append(f"output tiles {outs} are smaller than the gradient halo "
                       f"{self.grad_halo}")
        return out

    def is_legal(self, tiles):
        """Whether a tiling is legal (see :meth:`problems`)."""
        return not self.problems(tiles)

    def _legalise(self, candidates):
        """The legal tiling nearest to sorted inner output boundaries ``candidates``:
        boundaries that would make a chunk too small are dropped, left to right."""
        h, g = max(self.halo, 1), self.grad_halo
        kept = [0]
        for o in sorted(set(candidates)):
            c = self.boundary(o)
            if not (0 < o < self.out_size and 0 < c < self.size):
                continue
            start = self.boundary(kept[-1]) if len(kept) > 1 else 0
            if c - start < h or o - kept[-1] < g:
                continue
            kept.append(o)
        while len(kept) > 1 and (self.size - self.boundary(kept[-1]) < h
                                 or self.out_size - kept[-1] < g):
            kept.pop()
        return kept + [self.out_size]

    def tiles_from_input_chunks(self, chunks):
        """The legal tiling whose input chunks are nearest to ``chunks`` (lengths
        summing to ``size``): each boundary snaps to the nearest ``o*s - p_b``."""
        bounds = [sum(chunks[:i]) for i in range(1, len(chunks))]
        cand = [int(round((c + self.pad_begin) / self.stride)) for c in bounds]
        return self._legalise(cand)

    def tiles_from_output_chunks(self, chunks):
        """The legal tiling nearest to output tile lengths ``chunks``."""
        return self._legalise([sum(chunks[:i]) for i in range(1, len(chunks))])

    def tiles_of(self, outputs):
        """A legal tiling of tiles of about ``outputs`` outputs each (evenly spread)."""
        outputs = max(int(outputs), self.min_outputs)
        n = max(1, self.out_size // outputs)
        return self._legalise([round(i * self.out_size / n) for i in range(1, n)])


def _tiles_str(chunks):
    return f"{len(chunks)} of {chunks[0]}" if len(set(chunks)) == 1 else str(chunks)


@dataclass(frozen=True)
class Plan:
    """The chunking of one op: per spatial axis its geometry and tiling.

    Attributes
    ----------
    axes : tuple of AxisGeometry
    tiles : tuple of lists
        Output boundaries per spatial axis.
    batch : int
        Samples per task.
    seconds_per_task : float
        The estimate for one task of this plan, from :data:`FLOP_RATE` or
        :data:`BYTE_RATE`.

    Examples
    --------
    >>> from fastconv.dask import planner
    >>> p = planner.plan_conv((1, 3, 64, 64), (8, 3, 3, 3), stride=2, padding=1,
    ...                       outputs=(8, 8))
    >>> p.input_chunks()
    ((1,), (3,), (15, 16, 16, 17), (15, 16, 16, 17))
    >>> p.output_chunks(8)
    ((1,), (8,), (8, 8, 8, 8), (8, 8, 8, 8))
    >>> p.halo, p.min_chunk
    ((1, 1), (2, 2))
    """

    axes: tuple
    tiles: tuple
    n: int
    c_in: int
    batch: int
    seconds_per_output: float

    @property
    def halo(self):
        """Forward halo per axis (input positions from the right neighbour)."""
        return tuple(a.halo for a in self.axes)

    @property
    def grad_halo(self):
        """Adjoint halo per axis (output positions from the left neighbour)."""
        return tuple(a.grad_halo for a in self.axes)

    @property
    def min_chunk(self):
        """Smallest legal inner input chunk per axis."""
        return tuple(a.min_chunk for a in self.axes)

    def _batch_chunks(self):
        n, b = self.n, max(1, self.batch)
        return tuple(min(b, n - i) for i in range(0, n, b)) if n else (0,)

    def input_chunks(self):
        """Chunks of the input, for ``dask.array`` (and zarr storage)."""
        return ((self._batch_chunks(), (self.c_in,))
                + tuple(a.input_chunks(t) for a, t in zip(self.axes, self.tiles)))

    def output_chunks(self, c_out):
        """Chunks of the output with ``c_out`` channels."""
        return ((self._batch_chunks(), (c_out,))
                + tuple(a.output_chunks(t) for a, t in zip(self.axes, self.tiles)))

    @property
    def seconds_per_task(self):
        """Estimated seconds of the largest task."""
        outs = math.prod(max(a.output_chunks(t)) for a, t in zip(self.axes, self.tiles))
        return self.seconds_per_output * outs * max(1, self.batch)

    def describe(self):
        """One line: the tiles per axis, halos and the estimated task time."""
        tiles = " by ".join(_tiles_str(a.output_chunks(t)) for a, t in zip(self.axes, self.tiles))
        return (f"batch {self.batch}, output tiles {tiles}, halo {self.halo}, "
                f"min chunk {self.min_chunk}, ~{self.seconds_per_task * 1e3:.0f} ms/task")


def _axes(geo):
    nd = geo.nd
    return tuple(
        AxisGeometry(size=geo.in_size[i], out_size=geo.out_size[i], kernel=geo.kernel[i],
                     stride=geo.stride[i], dilation=geo.dilation[i],
                     pad_begin=(geo.pad_begin if hasattr(geo, "pad_begin")
                                else geo.padding)[i])
        for i in range(2 - nd, 2)
    )


def _plan(axes, n, c_in, seconds_per_output, chunks, outputs, batch, task_seconds,
          bytes_per_output=0.0, max_task_bytes=None):
    if chunks is not None:
        tiles = tuple(a.tiles_from_input_chunks(tuple(c)) for a, c in zip(axes, chunks[2:]))
        batch = max(chunks[0]) if batch is None else batch
    elif outputs is not None:
        tiles = tuple(a.tiles_of(o) for a, o in zip(axes, outputs))
    else:
        # The default task size: enough outputs for task_seconds, as square
        # as the axes allow, whole samples first along the batch.
        per_sample = seconds_per_output * math.prod(a.out_size for a in axes)
        if batch is None:
            batch = max(1, min(n, int(task_seconds // per_sample))) if per_sample else n
        need = task_seconds / max(seconds_per_output * batch, 1e-30)
        if max_task_bytes is not None and bytes_per_output:
            need = min(need, max_task_bytes / (bytes_per_output * batch))
        side = max(1.0, need) ** (1 / len(axes))
        tiles = tuple(a.tiles_of(math.ceil(side)) for a in axes)
    return Plan(axes=axes, tiles=tiles, n=n, c_in=c_in,
                batch=n if batch is None else max(1, int(batch)),
                seconds_per_output=seconds_per_output)


def plan_conv(input_shape, weight_shape, stride=1, padding=0, dilation=1, groups=1, *,
              chunks=None, outputs=None, batch=None, task_seconds=TASK_SECONDS,
              flop_rate=FLOP_RATE, itemsize=4, max_task_bytes=None):
    """Plan the chunks of ``conv{1,2}d`` (and of its gradients).

    Parameters
    ----------
    input_shape, weight_shape : tuple of int
        ``(N, C_in, *spatial)`` and ``(C_out, C_in/groups, *kernel)``.
    stride, padding, dilation, groups
        As :func:`fastconv.conv2d`.
    chunks : tuple of tuples, optional
        Existing input chunks (``dask.array.Array.chunks``): the plan is the
        legal tiling nearest to them.
    outputs : tuple of int, optional
        Outputs per tile along each spatial axis (else chosen for ``task_seconds``).
    batch : int, optional
        Samples per task.
    task_seconds, flop_rate : float
        The default task size is ``task_seconds`` of work at ``flop_rate``.
    itemsize, max_task_bytes : int, optional
        Cap the default task so that its input and output tiles
        (``itemsize`` bytes an element) take at most ``max_task_bytes``.

    Returns
    -------
    Plan

    Examples
    --------
    >>> from fastconv.dask import planner
    >>> p = planner.plan_conv((1, 3, 4096, 4096), (16, 3, 3, 3), padding=1)
    >>> p.halo, p.seconds_per_task >= 0.1
    ((2, 2), True)
    """
    nd = len(input_shape) - 2
    geo = conv_geometry(tuple(input_shape), tuple(weight_shape), nd, stride, padding,
                        dilation, groups)
    flops = 2 * geo.c_out * (geo.c_in // geo.groups) * math.prod(geo.kernel)
    per_output = (geo.c_in * math.prod(geo.stride) + geo.c_out) * itemsize
    return _plan(_axes(geo), geo.n, geo.c_in, flops / flop_rate, chunks, outputs, batch,
                 task_seconds, per_output, max_task_bytes)


def plan_conv_transpose(input_shape, weight_shape, stride=1, padding=0, output_padding=0,
                        groups=1, dilation=1, *, chunks=None, outputs=None, batch=None,
                        task_seconds=TASK_SECONDS, flop_rate=FLOP_RATE):
    """Plan the chunks of ``conv_transpose{1,2}d``: the tiles are of its *input*.

    Parameters and Returns as :func:`plan_conv`; ``chunks`` are the
    transposed convolution's input chunks, which are the output tiles of the
    convolution it transposes (``Plan.output_chunks``).

    Examples
    --------
    >>> from fastconv.dask import planner
    >>> p = planner.plan_conv_transpose((1, 8, 32), (8, 4, 4), stride=2, outputs=(8,))
    >>> p.output_chunks(8)[2], p.input_chunks()[2]
    ((8, 8, 8, 8), (16, 16, 16, 18))
    """
    nd = len(input_shape) - 2
    geo = conv_transpose_geometry(tuple(input_shape), tuple(weight_shape), nd, stride,
                                  padding, output_padding, groups, dilation)
    flops = 2 * geo.c_out * (geo.c_in // geo.groups) * math.prod(geo.kernel)
    axes = _axes(geo)
    if chunks is not None:
        tiles = tuple(a.tiles_from_output_chunks(tuple(c)) for a, c in zip(axes, chunks[2:]))
        return Plan(axes=axes, tiles=tiles, n=geo.n, c_in=geo.c_in,
                    batch=max(chunks[0]) if batch is None else batch,
                    seconds_per_output=flops / flop_rate)
    return _plan(axes, geo.n, geo.c_in, flops / flop_rate, None, outputs, batch, task_seconds)


def plan_pool(input_shape, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
              *, chunks=None, outputs=None, batch=None, itemsize=4,
              task_seconds=TASK_SECONDS, byte_rate=BYTE_RATE, max_task_bytes=None):
    """Plan the chunks of ``max_pool`` / ``avg_pool`` (and of their gradients).

    Parameters
    ----------
    input_shape : tuple of int
        ``(N, C, *spatial)``.
    kernel_size, stride, padding, dilation, ceil_mode
        As :func:`fastconv.max_pool2d` (average pooling: dilation 1).
    chunks, outputs, batch, task_seconds
        As :func:`plan_conv`.
    itemsize, byte_rate, max_task_bytes
        The default task size assumes ``byte_rate`` input bytes per second,
        capped at ``max_task_bytes`` of input and output.

    Returns
    -------
    Plan

    Examples
    --------
    >>> from fastconv.dask import planner
    >>> p = planner.plan_pool((2, 4, 30), 3, 2, padding=1, outputs=(5,))
    >>> p.input_chunks()[2], p.halo
    ((9, 10, 11), (1,))
    """
    nd = len(input_shape) - 2
    geo = pool_geometry(tuple(input_shape[2:]), nd, kernel_size, stride, padding, dilation,
                        ceil_mode)
    c = input_shape[1]
    per_output = c * math.prod(geo.stride) * itemsize
    return _plan(_axes(geo), input_shape[0], c, per_output / byte_rate, chunks, outputs, batch,
                 task_seconds, per_output + c * itemsize, max_task_bytes)
