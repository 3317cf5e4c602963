"""Command line: ``python -m fastconv [demo|train|bench|scale|info]``.

``demo`` (the default) runs a small CNN's forward and backward ops, checks each
result against the NumPy reference and times both side by side. ``train``
trains a CNN on real data (``python -m fastconv train --help``; needs the
``demo`` extra). ``bench`` runs the benchmark suite
(``python -m fastconv bench --help``). ``scale`` convolves and pools an image
larger than any worker's memory on a Dask cluster (``python -m fastconv scale
--help``; needs the ``dask`` extra). ``info`` prints the build configuration.
"""

import argparse
import sys

import numpy as np

import fastconv
from fastconv import reference
from fastconv.bench import side_by_side


def _demo_steps(x, w1, b1, w2, b2):
    """The ops of conv -> maxpool -> conv -> avgpool, forward and backward."""
    return [
        ("conv2d", lambda m: m.conv2d(x, w1, b1, padding=1)),
        ("max_pool2d", lambda m: m.max_pool2d(x, 2, return_indices=True)),
        ("conv2d stride 2", lambda m: m.conv2d(x, w2, b2, stride=2, padding=1)),
        ("avg_pool2d", lambda m: m.avg_pool2d(x, 3, 2, 1)),
        ("conv_transpose2d", lambda m: m.conv_transpose2d(x, w1.transpose(1, 0, 2, 3),
                                                          stride=2)),
    ]


def demo(args):
    rng = np.random.default_rng(args.seed)
    n, c = args.batch, 16
    x = rng.standard_normal((n, c, 32, 32), dtype=np.float32)
    w1 = rng.standard_normal((32, c, 3, 3), dtype=np.float32) * 0.1
    b1 = rng.standard_normal(32, dtype=np.float32)
    w2 = rng.standard_normal((32, c, 3, 3), dtype=np.float32) * 0.1
    b2 = rng.standard_normal(32, dtype=np.float32)
    y = fastconv.conv2d(x, w1, b1, padding=1)
    gy = rng.standard_normal(y.shape, dtype=np.float32)
    steps = _demo_steps(x, w1, b1, w2, b2) + [
        ("conv2d_input", lambda m: m.grad.conv2d_input(x.shape, w1, gy, padding=1)),
        ("conv2d_weight", lambda m: m.grad.conv2d_weight(x, w1.shape, gy, padding=1)),
    ]
    print(f"fastconv {fastconv.__version__}: {fastconv.get_num_threads()} threads, "
          f"input {x.shape} float32\n")
    print(f"{'op':<18}{'output shape':<20}{'max |diff|':>11}{'fastconv':>11}"
          f"{'numpy ref':>11}{'speedup':>9}")
    for name, step in steps:
        out, expected = step(fastconv), step(reference)
        if isinstance(out, tuple):
            assert np.array_equal(out[1], expected[1]), f"{name}: indices differ"
            out, expected = out[0], expected[0]
        diff = float(np.max(np.abs(out - expected)))
        t = side_by_side({"fast": lambda step=step: step(fastconv),
                          "ref": lambda step=step: step(reference)}, args.repeats, rounds=3)
        t_fast, t_ref = t["fast"], t["ref"]
        print(f"{name:<18}{str(out.shape):<20}{diff:>11.1e}{t_fast * 1e3:>9.2f}ms"
              f"{t_ref * 1e3:>9.2f}ms{t_ref / t_fast:>8.1f}x")
    print(f"\nTimes are medians of 3 rounds x {args.repeats} runs in this process, "
          "fastconv and the reference taking turns.")
    return 0


def info(args):
    fastconv.show_config()
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m fastconv", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command")
    p = sub.add_parser("demo", help="check and time the ops on a small CNN layer")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=demo)
    sub.add_parser("info", help="print the build configuration").set_defaults(func=info)
    sub.add_parser("train", help="train a CNN on real data (digits, MNIST-1D)", add_help=False)
    sub.add_parser("bench", help="run the benchmark suite", add_help=False)
    sub.add_parser("scale", help="convolve an image larger than memory on Dask", add_help=False)
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["train"]:
        from fastconv import train

        return train.main(argv[1:])
    if argv[:1] == ["bench"]:
        from fastconv import bench

        return bench.main(argv[1:])
    if argv[:1] == ["scale"]:
        from fastconv.dask import scale

        return scale.main(argv[1:])
    args = parser.parse_args(argv)
    if args.command is None:
        args = parser.parse_args(["demo"] + argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
