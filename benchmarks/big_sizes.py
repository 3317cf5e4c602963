"""Sizes past 2**31 elements: correctness at sampled positions and peak memory.

    python benchmarks/big_sizes.py                 # every case, each in its own process
    python benchmarks/big_sizes.py max_pool        # one case, in this process
    python benchmarks/big_sizes.py --side 4000 conv3x3   # a small trial run

Cases (plane side S = 46400 by default, so S*S = 2.15e9 > 2**31):

* ``max_pool``: max_pool2d(kernel 2, stride 2, return_indices=True) over an
  (1, 1, S, S) float32 input (8.6 GB; output 2.2 GB, indices 4.3 GB);
* ``conv3x3``: a 3x3 single-channel conv2d with padding 1 on that plane
  (input and output 8.6 GB each);
* ``conv1x1``: a 1x1 conv2d of (1, 2, S', S') float32 to one channel,
  S' = 0.711 S, so the input has more than 2**31 elements (8.7 GB).

Each is checked against direct NumPy at 4000 sampled positions, the plane's
corners and edges and the last rows (flat indices past 2**31), and reports
its time and its peak memory (ru_maxrss) beside input + output; it fails if
the peak exceeds input + output by more than 10 % + 0.5 GiB. The full-size
cases need 16-18 GB of free memory; run them on a machine that has it
(``pytest -m slow tests/test_faults.py`` runs them too).
"""

import argparse
import os
import resource
import subprocess
import sys
import time

import numpy as np

CASES = ("max_pool", "conv3x3", "conv1x1")
GiB = 1 << 30


def _fill(shape, seed):
    """A float32 array of `shape` with values from a cheap integer pattern:
    one band of 512 rows computed once, then copied band by band with an
    offset that changes from band to band (a whole-array expression would
    need temporaries the size of the input, and computing every band took
    minutes)."""
    x = np.empty(shape, np.float32)
    h, w = shape[-2:]
    rows = np.arange(min(h, 512), dtype=np.int64)[:, None]
    cols = np.arange(w, dtype=np.int64)
    band = (((rows * 7919 + cols * 104729 + seed * 31) % 2003 - 1001) / 16.0).astype(np.float32)
    for c in range(shape[1]):
        for k, r0 in enumerate(range(0, h, 512)):
            n = min(512, h - r0)
            np.add(band[:n], np.float32((k * 37 + c * 11) % 101 - 50), out=x[0, c, r0:r0 + n])
    return x


def _samples(h, w, rng, n=4000):
    """Sampled (row, col) positions: random, the corners and edges, the last rows."""
    pts = [(0, 0), (0, w - 1), (h - 1, 0), (h - 1, w - 1), (h // 2, w // 2)]
    pts += [(int(r), int(c)) for r, c in zip(rng.integers(0, h, n), rng.integers(0, w, n))]
    pts += [(h - 1 - int(r), int(c)) for r, c in zip(rng.integers(0, 4, 200),
                                                       rng.integers(0, w, 200))]
    pts += [(int(r), 0) for r in rng.integers(0, h, 100)] + [(int(r), w - 1)
                                                             for r in rng.integers(0, h, 100)]
    return pts


def run_case(case, side):
    import fastconv

    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    if case == "max_pool":
        x = _fill((1, 1, side, side), 1)
        t1 = time.perf_counter()
        y, idx = fastconv.max_pool2d(x, 2, stride=2, return_indices=True)
        t2 = time.perf_counter()
        plane = x[0, 0]
        oh, ow = y.shape[2:]
        for r, c in _samples(oh, ow, rng):
            win = plane[2 * r:2 * r + 2, 2 * c:2 * c + 2]
            assert y[0, 0, r, c] == win.max(), (r, c)
            i = int(idx[0, 0, r, c])
            assert plane.flat[i] == win.max() and i // side in (2 * r, 2 * r + 1) \
                and i % side in (2 * c, 2 * c + 1), (r, c, i)
        if side * side > 2**31:
            assert int(idx.max()) >= 2**31, "no index past 2**31 was checked"
        in_out = x.nbytes + y.nbytes + idx.nbytes
    elif case == "conv3x3":
        x = _fill((1, 1, side, side), 2)
        w = (np.arange(9, dtype=np.float32).reshape(1, 1, 3, 3) - 4) / 8
        t1 = time.perf_counter()
        y = fastconv.conv2d(x, w, padding=1)
        t2 = time.perf_counter()
        for r, c in _samples(side, side, rng):
            want = 0.0
            for i in range(3):
                for j in range(3):
                    rr, cc = r + i - 1, c + j - 1
                    if 0 <= rr < side and 0 <= cc < side:
                        want += float(x[0, 0, rr, cc]) * float(w[0, 0, i, j])
            assert abs(float(y[0, 0, r, c]) - want) <= 1e-5 * max(1.0, abs(want)) * 9, (r, c)
        in_out = x.nbytes + y.nbytes
    elif case == "conv1x1":
        s = int(side * 0.711)
        if side >= 46400:
            assert 2 * s * s > 2**31, "the input must have more than 2**31 elements"
        x = _fill((1, 2, s, s), 3)
        w = np.array([0.75, -1.25], np.float32).reshape(1, 2, 1, 1)
        t1 = time.perf_counter()
        y = fastconv.conv2d(x, w)
        t2 = time.perf_counter()
        for r, c in _samples(s, s, rng):
            want = float(x[0, 0, r, c]) * 0.75 - float(x[0, 1, r, c]) * 1.25
            assert abs(float(y[0, 0, r, c]) - want) <= 1e-6 * max(1.0, abs(want)), (r, c)
        in_out = x.nbytes + y.nbytes
    else:
        raise SystemExit(f"unknown case {case!r}; expected one of {CASES}")
    t3 = time.perf_counter()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    trial = "" if side >= 46400 else " (a trial size, below 2**31 elements)"
    print(f"{case}{trial}: side {side}, input+output {in_out / GiB:.2f} GiB, peak {peak / GiB:.2f} GiB "
          f"({peak / in_out:.2f}x); fill {t1 - t0:.1f} s, op {t2 - t1:.1f} s, "
          f"checked {t3 - t2:.1f} s", flush=True)
    limit = 1.1 * in_out + 0.5 * GiB
    if peak > limit:
        raise SystemExit(f"{case}: peak memory {peak / GiB:.2f} GiB exceeds input + output "
                         f"({in_out / GiB:.2f} GiB) by more than 10 % + 0.5 GiB")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("cases", nargs="*",
                        help=f"some of {', '.join(CASES)} (default: all, each in a process)")
    parser.add_argument("--side", type=int,
                        default=int(os.environ.get("FASTCONV_BIG_SIDE", 46400)),
                        help="the plane's side (default 46400, or $FASTCONV_BIG_SIDE)")
    args = parser.parse_args(argv)
    for case in args.cases:
        if case not in CASES:
            parser.error(f"unknown case {case!r}; expected some of {CASES}")
    if len(args.cases) == 1:
        run_case(args.cases[0], args.side)
        return 0
    failed = 0
    for case in args.cases or CASES:  # each in its own process: its own peak memory
        proc = subprocess.run([sys.executable, __file__, case, "--side", str(args.side)])
        failed += proc.returncode != 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
