"""Every forward path that applies, forced, side by side on a layer shape: the
measurements behind the thresholds of ``fastconv/_plan.py``.

    python benchmarks/forward_paths.py                      # the deep ResNet layers
    python benchmarks/forward_paths.py --dtype float64
    FASTCONV_ISA=avx2 python benchmarks/forward_paths.py    # another ISA build
    python benchmarks/forward_paths.py --shape 1 256 14 256 1   # N C_in H C_out stride

Each shape is a 3x3 convolution with padding 1 of an (N, C_in, H, H) input
to C_out channels at the given stride, with a fused ReLU, as ``nn.fuse``
makes it (weights packed once per path). Each path that applies is forced
(``_plan.forced``, private) and the paths take turns in each round
(``fastconv.bench.side_by_side``); rates are GFLOP/s of the direct formula,
medians. ``auto`` is the path the plan picks.
"""

import argparse
import contextlib
import sys

import numpy as np

import fastconv
from fastconv import _config, _plan, nn
from fastconv.bench import side_by_side

SHAPES = [  # N, C_in, H, C_out, stride
    (1, 512, 7, 512, 1), (1, 256, 14, 512, 2), (2, 512, 7, 512, 1), (4, 512, 7, 512, 1),
    (8, 512, 7, 512, 1), (8, 256, 14, 512, 2), (1, 256, 14, 256, 1), (1, 128, 28, 256, 2),
    (1, 128, 14, 128, 1), (1, 64, 14, 64, 1), (1, 32, 7, 32, 1), (4, 256, 14, 256, 1),
]


def time_paths(n, c_in, h, c_out, stride, dtype, repeats, rounds):
    """{path: GFLOP/s} of every forward path that applies, and the plan's own."""
    x = np.random.default_rng(0).standard_normal((n, c_in, h, h)).astype(dtype)
    layer = nn.fuse(nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, rng=0,
                                            dtype=dtype), nn.ReLU()))
    steps = {}
    for path in _plan.PATHS["forward"]:
        def step(path=path):
            with _plan.forced(forward=path):
                return layer(x)
        try:
            want = step()
        except ValueError as exc:  # the path does not apply to this shape
            assert "does not apply" in str(exc)
            continue
        steps[path] = step
    times = side_by_side(steps, repeats, rounds=rounds)
    flop = 2 * want.size * c_in * 9
    auto = fastconv.conv_plan(x.shape, layer[0].weight.shape, dtype, stride=stride,
                              padding=1)["forward"]
    return {path: flop / t / 1e9 for path, t in times.items()}, auto


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    p.add_argument("--shape", type=int, nargs=5, action="append",
                   metavar=("N", "C_IN", "H", "C_OUT", "STRIDE"))
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args(argv)
    if args.repeats < 1 or args.rounds < 1:
        p.error("Expected --repeats and --rounds >= 1")
    print(f"fastconv {fastconv.__version__}, {_config.ISA} build, "
          f"{fastconv.get_num_threads()} threads, {args.dtype}; GFLOP/s, medians")
    for shape in args.shape or SHAPES:
        rates, auto = time_paths(*shape, np.dtype(args.dtype), args.repeats, args.rounds)
        n, c_in, h, c_out, stride = shape
        best = max(rates, key=rates.get)
        cells = "  ".join(f"{path} {rate:5.0f}" for path, rate in rates.items())
        print(f"{n}x{c_in}x{h}x{h} -> {c_out} s{stride}  auto {auto:<9} best {best:<9} {cells}",
              flush=True)
    return 0


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        sys.exit(main())
