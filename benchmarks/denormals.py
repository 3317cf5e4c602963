"""Whether subnormal (denormal) values slow fastconv's kernels down.

Each op runs on normal inputs and on the same inputs scaled into the
subnormal range (float32 values near 1e-39, float64 near 1e-309), whose
products and sums stay subnormal. On CPUs that take a microcode assist for
subnormal operands, the second is many times slower; fastconv does not set
flush-to-zero (that would change results), so this measures the CPU as it is.

Runs alternate (normal, subnormal, normal, ...) in one process, and the
table gives the medians and their ratio.

    python benchmarks/denormals.py              # 15 runs of each
    python benchmarks/denormals.py --repeat 31
"""

import argparse
import statistics
import time

import numpy as np

import fastconv
from fastconv.bench import cpu_slug

SCALE = {np.float32: 1e-39, np.float64: 1e-309}


def _ops(dtype, rng):
    x = rng.standard_normal((8, 32, 32, 32)).astype(dtype)
    w = (rng.standard_normal((32, 32, 3, 3)) / 17).astype(dtype)  # sums stay near |x|
    gy = rng.standard_normal((8, 32, 32, 32)).astype(dtype)
    dw = (rng.standard_normal((32, 1, 3, 3)) / 3).astype(dtype)
    return {
        "conv2d": lambda x, gy: fastconv.conv2d(x, w, padding=1),
        "conv2d_input": lambda x, gy: fastconv.grad.conv2d_input(x.shape, w, gy, padding=1),
        "conv2d_weight": lambda x, gy: fastconv.grad.conv2d_weight(x, w.shape, gy, padding=1),
        "depthwise": lambda x, gy: fastconv.conv2d(x, dw, padding=1, groups=32),
        "max_pool2d": lambda x, gy: fastconv.max_pool2d(x, 3, 2, 1, return_indices=True),
        "avg_pool2d": lambda x, gy: fastconv.avg_pool2d(x, 3, 2, 1),
    }, x, gy


def _time(f, *args):
    t0 = time.perf_counter()
    f(*args)
    return time.perf_counter() - t0


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    print(f"cpu {cpu_slug()}, kernels {fastconv._config.ISA}, "
          f"{fastconv.get_num_threads()} threads; medians of {args.repeat} runs")
    print(f"{'op':<14} {'dtype':<8} {'normal ms':>10} {'subnormal ms':>13} {'ratio':>6}")
    for dtype in (np.float32, np.float64):
        ops, x, gy = _ops(dtype, rng)
        xs, gys = x * dtype(SCALE[dtype]), gy * dtype(SCALE[dtype])
        sub = np.abs(xs[xs != 0])
        assert (sub < np.finfo(dtype).tiny).mean() > 0.99, "inputs are not subnormal"
        for name, f in ops.items():
            f(x, gy), f(xs, gys)  # warm up
            normal, subnormal = [], []
            for _ in range(args.repeat):
                normal.append(_time(f, x, gy))
                subnormal.append(_time(f, xs, gys))
            a, b = statistics.median(normal), statistics.median(subnormal)
            print(f"{name:<14} {np.dtype(dtype).name:<8} {a * 1e3:>10.3f} {b * 1e3:>13.3f} "
                  f"{b / a:>6.2f}")


if __name__ == "__main__":
    main()
