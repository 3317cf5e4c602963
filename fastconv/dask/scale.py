"""``python -m fastconv scale``: convolve and pool an image larger than any worker's memory.

Starts a ``distributed.LocalCluster`` (worker processes, each with a memory
limit), builds the input chunk by chunk (random data made by tasks, or an
existing zarr array with ``--zarr``), runs ``conv2d -> max_pool2d`` tile by
tile with Dask's progress bar, reducing each pooled tile to its sum so that
nothing large comes back, then

* checks sampled output windows against direct fastconv calls on their
  input windows (the convolution within rounding, the pooling of those
  values bitwise),
* prints the throughput, the peak memory of the workers and the scaling
  efficiency: the time one process with all the cores' threads would take
  (measured on one tile, times the number of tiles) over the cluster's time.

Example (the default: a 1x3x16384x16384 float32 input, 3 GiB, on 2 workers
of 1.5 GiB)::

    python -m fastconv scale
    python -m fastconv scale --size 4096 --memory-limit 512MiB
"""

import argparse
import math
import threading
import time

import numpy as np

__all__ = ["main"]


def _parser():
    p = argparse.ArgumentParser(prog="python -m fastconv scale", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=16384, help="image height and width")
    p.add_argument("--channels", type=int, default=3)
    p.add_argument("--out-channels", type=int, default=8)
    p.add_argument("--kernel", type=int, default=3)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--threads-per-worker", type=int, default=1)
    p.add_argument("--memory-limit", default="1.5GiB", help="per worker")
    p.add_argument("--tile", type=int, default=None,
                   help="output tile side (default: the planner's, under the memory limit)")
    p.add_argument("--samples", type=int, default=4, help="output windows to check")
    p.add_argument("--zarr", default=None, help="read the input from this zarr array")
    p.add_argument("--scheduler", default=None,
                   help="address of an existing scheduler instead of a LocalCluster")
    p.add_argument("--seed", type=int, default=0)
    return p


class _PeakMemory:
    """Poll the workers' memory (the scheduler's heartbeat figures) in a thread."""

    def __init__(self, client, every=0.25):
        self.client, self.every, self.peak = client, every, {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            try:
                for addr, w in self.client.scheduler_info()["workers"].items():
                    m = w.get("metrics", {}).get("memory", 0)
                    self.peak[addr] = max(self.peak.get(addr, 0), m)
            except Exception:  # pragma: no cover - a worker restarting
                pass
            self._stop.wait(self.every)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def _window_check(x, y, p, w, b, r, c, t, pad):
    """Direct fastconv on the input window of output rows/cols [r, r+t), [c, c+t).

    Computed here with the synchronous scheduler: a few tiles, and no second
    submission of the overlap's keys to the cluster (dask#9888)."""
    import dask

    import fastconv

    k = w.shape[2]
    size = x.shape[2]
    lo_r, hi_r = r - pad, r + t - 1 - pad + k
    lo_c, hi_c = c - pad, c + t - 1 - pad + k
    win, tiled, pooled = dask.compute(
        x[:, :, max(lo_r, 0):min(hi_r, size), max(lo_c, 0):min(hi_c, size)],
        y[:, :, r:r + t, c:c + t], p[:, :, r // 2:(r + t) // 2, c // 2:(c + t) // 2],
        scheduler="sync")
    pads = ((max(0, -lo_r), max(0, hi_r - size)), (max(0, -lo_c), max(0, hi_c - size)))
    direct = fastconv.conv2d(win, w, b, padding=pads)
    conv_err = float(np.max(np.abs(tiled - direct)))
    pool_same = np.array_equal(pooled, fastconv.max_pool2d(tiled, 2))
    return conv_err, pool_same


def main(argv=None):
    args = _parser().parse_args(argv)
    try:
        import dask.array as da
        import distributed
        from dask.utils import format_bytes, parse_bytes
    except ImportError:
        print('python -m fastconv scale needs the dask extra: pip install "fastconv[dask]"')
        return 1
    import fastconv
    import fastconv.dask as fd
    from fastconv.dask import planner

    n, c, s = 1, args.channels, args.size
    shape = (n, c, s, s)
    itemsize = 4
    limit = parse_bytes(args.memory_limit)
    rng = np.random.default_rng(args.seed)
    w = (rng.standard_normal((args.out_channels, c, args.kernel, args.kernel)) * 0.1
         ).astype(np.float32)
    b = rng.standard_normal(args.out_channels).astype(np.float32)
    pad = args.kernel // 2
    if args.tile:
        plan = planner.plan_conv(shape, w.shape, padding=pad, outputs=(args.tile, args.tile))
    else:
        # conv tiles, their pooled tiles and the input with halo, a few tasks
        # in flight per worker: a tenth of the limit per task
        plan = planner.plan_conv(shape, w.shape, padding=pad, max_task_bytes=limit / 10)
        side = max(plan.output_chunks(w.shape[0])[2])
        side = max(2, side - side % 2)  # even tiles: 2x2 pooling needs no rechunk
        plan = planner.plan_conv(shape, w.shape, padding=pad, outputs=(side, side))
    print(f"input {shape} float32 ({format_bytes(math.prod(shape) * itemsize)}), "
          f"{args.workers} workers x {args.threads_per_worker} thread(s), "
          f"memory limit {format_bytes(limit)} each")
    print(f"plan: {plan.describe()}")

    env = {}
    import os

    env.update(os.environ)
    if args.scheduler:
        cluster = None
        client = distributed.Client(args.scheduler)
    else:
        cluster = distributed.LocalCluster(n_workers=args.workers,
                                           threads_per_worker=args.threads_per_worker,
                                           memory_limit=limit, processes=True,
                                           dashboard_address=":0")
        client = distributed.Client(cluster)
    try:
        fd.set_worker_threads(client, args.threads_per_worker)
        if args.zarr:
            x = da.from_zarr(args.zarr).astype(np.float32).rechunk(plan.input_chunks())
        else:
            # a dask array built chunk by chunk by tasks: never whole anywhere
            x = da.random.default_rng(args.seed).standard_normal(
                shape, chunks=plan.input_chunks(), dtype=np.float32)
        y = fd.conv2d(x, w, b, padding=pad, rechunk=False)
        p = fd.max_pool2d(y, 2)
        total = p.sum(dtype=np.float64)
        with _PeakMemory(client) as mem:
            t0 = time.perf_counter()
            future = client.compute(total)
            distributed.progress(future)
            value = future.result()
            elapsed = time.perf_counter() - t0
        print()
        outputs = math.prod(y.shape)
        print(f"conv2d {x.shape} -> {y.shape} -> max_pool2d {p.shape}: {elapsed:.2f} s, "
              f"{format_bytes(math.prod(x.shape) * itemsize / elapsed)}/s of input, "
              f"{2 * outputs * c * args.kernel ** 2 / elapsed / 1e9:.1f} GFLOP/s "
              f"(sum of the pooled output {value:.6g})")
        peak = max(mem.peak.values(), default=0)
        print(f"peak worker memory {format_bytes(peak)} of {format_bytes(limit)} "
              f"(input {format_bytes(math.prod(shape) * itemsize)})")

        # checks of sampled windows against direct fastconv calls
        t = 64 if s >= 64 else s - s % 2
        ok = True
        for _ in range(args.samples):
            r = int(rng.integers(0, (s - t) // 2 + 1)) * 2
            col = int(rng.integers(0, (s - t) // 2 + 1)) * 2
            err, same = _window_check(x, y, p, w, b, r, col, t, pad)
            tol = 4 * 1.2e-7 * c * args.kernel ** 2 * max(1.0, float(np.abs(b).max()) + 10)
            ok &= err <= tol and same
            print(f"  window rows {r}:{r + t} cols {col}:{col + t}: conv max |diff| {err:.1e} "
                  f"(tolerance {tol:.1e}), pooling {'bitwise equal' if same else 'DIFFERS'}")

        # scaling efficiency: one process with all the threads, on one tile
        fastconv.set_num_threads(args.workers * args.threads_per_worker)
        block = x.blocks[0, 0, min(1, x.numblocks[2] - 1), min(1, x.numblocks[3] - 1)]
        reps = []
        for _ in range(3):
            t1 = time.perf_counter()
            xt = block.compute(scheduler="sync")  # the input's generation, as on the workers
            fastconv.max_pool2d(fastconv.conv2d(xt, w, b, padding=pad), 2).sum(dtype=np.float64)
            reps.append(time.perf_counter() - t1)
        fastconv.set_num_threads(None)
        tiles = math.prod(len(ch) for ch in plan.input_chunks()[2:])
        single = sorted(reps)[1] * tiles
        print(f"one process, {args.workers * args.threads_per_worker} threads (one tile x "
              f"{tiles} tiles): {single:.2f} s; scaling efficiency {single / elapsed:.0%} "
              "(input generation included in the cluster's time)")
        return 0 if ok else 1
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
        os.environ.clear()
        os.environ.update(env)
