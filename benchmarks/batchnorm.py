"""Batch normalisation: fastconv's fused kernels against the NumPy reference
and PyTorch (when importable), on ResNet-18's BatchNorm shapes.

Rows: the op (train forward with the running-statistics update, eval
forward, training backward with all three gradients), the shape, the median
time of fastconv, the NumPy reference and PyTorch, fastconv's bandwidth in
GB/s (the bytes it must move: forward 2 reads + 1 write in training, 1 + 1 in
eval; backward 3 reads + 1 write of the array), and the ratios.

    python benchmarks/batchnorm.py                        # ResNet-18 shapes, batch 1 and 8
    python benchmarks/batchnorm.py --threads 2 --repeat 20
    python benchmarks/batchnorm.py --shapes 2,8,6,6 --repeat 1   # a quick check
"""

import argparse
import statistics
import time

import numpy as np

import fastconv
from fastconv import reference

# (N, C, H, W) of the BatchNorm layers of ResNet-18 at 224x224, and one (N, C)
SHAPES = [(b, c, s, s) for b in (1, 8) for c, s in ((64, 112), (64, 56), (128, 28),
                                                       (256, 14), (512, 7))] + [(256, 512)]
PASSES = {"train forward": 3, "eval forward": 2, "backward": 4}


def _median_time(fn, repeat):
    fn()  # warm-up
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _numpy_cases(module, grad, x, gy, w, b):
    c = x.shape[1]
    rm, rv = np.zeros(c, x.dtype), np.ones(c, x.dtype)
    return {
        "train forward": lambda: module.batch_norm(x, rm, rv, w, b, training=True),
        "eval forward": lambda: module.batch_norm(x, rm, rv, w, b),
        "backward": lambda: grad(x, gy, w, training=True),
    }


def _torch_cases(torch, x, gy, w, b):
    F = torch.nn.functional
    xt, gyt = torch.from_numpy(x), torch.from_numpy(gy)
    wt, bt = torch.from_numpy(w), torch.from_numpy(b)
    rm, rv = torch.zeros(x.shape[1]), torch.ones(x.shape[1])
    xg = xt.clone().requires_grad_(True)
    wg, bg = wt.clone().requires_grad_(True), bt.clone().requires_grad_(True)

    def backward():
        y = F.batch_norm(xg, None, None, wg, bg, training=True)
        torch.autograd.grad(y, (xg, wg, bg), gyt)

    def no_grad(f):
        def run():
            with torch.no_grad():
                return f()
        return run

    return {
        "train forward": no_grad(lambda: F.batch_norm(xt, rm, rv, wt, bt, training=True)),
        "eval forward": no_grad(lambda: F.batch_norm(xt, rm, rv, wt, bt)),
        "backward": backward,
    }


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=None, help="threads of fastconv and torch")
    p.add_argument("--repeat", type=int, default=10)
    p.add_argument("--shapes", nargs="*", help="shapes as N,C[,L|,H,W] (default: ResNet-18's)")
    args = p.parse_args(argv)
    try:
        import torch
    except ImportError:
        torch = None
    if args.threads:
        fastconv.set_num_threads(args.threads)
        if torch is not None:
            torch.set_num_threads(args.threads)
    shapes = ([tuple(int(v) for v in s.split(",")) for s in args.shapes] if args.shapes
              else SHAPES)
    rng = np.random.default_rng(0)
    print(f"fastconv {fastconv.__version__}, {fastconv.get_num_threads()} threads, float32, "
          f"median of {args.repeat}")
    header = (f"{'op':<14} {'shape':<20} {'fastconv ms':>11} {'GB/s':>6} {'numpy ms':>9} "
              f"{'x numpy':>8} {'torch ms':>9} {'x torch':>8}")
    print(header)
    print("-" * len(header))
    for shape in shapes:
        x = rng.standard_normal(shape).astype(np.float32)
        gy = rng.standard_normal(shape).astype(np.float32)
        w = rng.uniform(0.5, 1.5, shape[1]).astype(np.float32)
        b = rng.standard_normal(shape[1]).astype(np.float32)
        ours = _numpy_cases(fastconv, fastconv.grad.batch_norm, x, gy, w, b)
        ref = _numpy_cases(reference, reference.batch_norm_grad, x, gy, w, b)
        theirs = _torch_cases(torch, x, gy, w, b) if torch is not None else {}
        for op in PASSES:
            t_ours = _median_time(ours[op], args.repeat)
            t_ref = _median_time(ref[op], args.repeat)
            gbs = PASSES[op] * x.nbytes / t_ours / 1e9
            row = (f"{op:<14} {str(shape):<20} {t_ours * 1e3:>11.3f} {gbs:>6.1f} "
                   f"{t_ref * 1e3:>9.3f} {t_ref / t_ours:>8.2f}")
            if op in theirs:
                t_torch = _median_time(theirs[op], args.repeat)
                row += f" {t_torch * 1e3:>9.3f} {t_torch / t_ours:>8.2f}"
            print(row)


if __name__ == "__main__":
    main()
