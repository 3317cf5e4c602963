"""The benchmark suite: ``python -m fastconv bench`` or ``benchmarks/run.py``.

Every case is run by fastconv, by the NumPy reference (:mod:`fastconv.reference`)
and by PyTorch when it is importable, side by side in one process, with the
same number of threads for all three (OpenBLAS threads for NumPy via
threadpoolctl when it is installed). Each result is checked against the
reference before it is timed. The three are timed in turn, over a few rounds
(see :func:`side_by_side`). A case reports the median wall time per call
over all the runs (short calls are timed in runs of about 20 ms), GFLOP/s
(convolutions: the direct sum's operations over the time, an effective rate
on the ``winograd`` path, which does 2.25x fewer) or GB/s (pooling), the ratios
``reference / fastconv`` and ``torch / fastconv`` (above 1: fastconv is
faster), the kernel path each op took (``fastconv.conv_plan``) and the peak
extra memory of one fastconv call.

First, the machine: the CPU, the ISA build and its micro-kernel, the GEMM
peak (NumPy ``matmul`` of 2048x2048), the FMA peak (a tight loop of
independent FMAs in the micro-kernel's registers), the micro-kernel alone on
panels that stay in L1 (the ``ukernel`` case), and the copy bandwidth.
``--save DIR`` writes the results as ``DIR/results-<cpu>-<isa>.{json,txt}``,
one pair per machine.
"""

import argparse
import json
import os
import platform
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass, field

import numpy as np

import fastconv
from fastconv import reference

__all__ = ["CASES", "run", "main"]


@dataclass
class Case:
    """One benchmark: an op (``kind``) on fixed shapes."""

    name: str
    kind: str  # conv, conv_fwdbwd, pool_max, pool_avg
    nd: int
    x: tuple
    w: tuple = None  # conv weight shape (transposed layout for transposed convs)
    kwargs: dict = field(default_factory=dict)
    transposed: bool = False


def _conv_cases():
    shapes = {
        # name: (N, C_in, C_out, H, k, stride, padding)
        "lenet1": (64, 1, 6, 28, 5, 1, 0),
        "lenet2": (64, 6, 16, 14, 5, 1, 0),
        "cifar1": (32, 3, 32, 32, 3, 1, 1),
        "cifar2": (32, 32, 64, 16, 3, 1, 1),
        "resnet": (8, 64, 64, 56, 3, 1, 1),
        "stem": (4, 3, 64, 224, 7, 2, 3),
    }
    cases = []
    for name, (n, ci, co, h, k, s, p) in shapes.items():
        for kind in ("conv", "conv_fwdbwd"):
            cases.append(Case(name, kind, 2, (n, ci, h, h), (co, ci, k, k),
                              dict(stride=s, padding=p)))
    extra = [
        Case("mnist1d-1", "conv_fwdbwd", 1, (100, 1, 40), (25, 1, 5), dict(stride=2, padding=1)),
        Case("mnist1d-2", "conv_fwdbwd", 1, (100, 25, 19), (25, 25, 3), dict(stride=2, padding=1)),
        Case("mnist1d-3", "conv_fwdbwd", 1, (100, 25, 10), (25, 25, 3), dict(stride=2, padding=1)),
        Case("tdnn", "conv_fwdbwd", 1, (32, 40, 200), (128, 40, 5), {}),
        Case("depthwise", "conv_fwdbwd", 2, (8, 64, 56, 56), (64, 1, 3, 3),
             dict(padding=1, groups=64)),
        Case("upsample-x2", "conv_fwdbwd", 2, (16, 64, 32, 32), (64, 32, 2, 2),
             dict(stride=2), transposed=True),
    ]
    return cases + extra


def _pool_cases():
    shapes = {
        "pool-cifar": ((32, 64, 32, 32), dict(kernel_size=2, stride=2)),
        "pool-resnet": ((8, 64, 112, 112), dict(kernel_size=3, stride=2, padding=1)),
        "pool-lenet": ((64, 6, 28, 28), dict(kernel_size=2, stride=2)),
    }
    cases = []
    for name, (shape, kw) in shapes.items():
        cases.append(Case(name, "pool_max", 2, shape, kwargs=kw))
        cases.append(Case(name, "pool_avg", 2, shape, kwargs=kw))
    return cases


CASES = _conv_cases() + _pool_cases()


# -- the three implementations of each case --------------------------------------


def _conv_names(case):
    nd = case.nd
    if case.transposed:
        return (f"conv_transpose{nd}d", f"conv_transpose{nd}d_input",
                f"conv_transpose{nd}d_weight")
    return f"conv{nd}d", f"conv{nd}d_input", f"conv{nd}d_weight"


def _numpy_inputs(case, dtype, rng):
    x = rng.standard_normal(case.x).astype(dtype)
    if case.kind.startswith("pool"):
        return dict(x=x)
    w = (rng.standard_normal(case.w) / np.sqrt(np.prod(case.w[1:]))).astype(dtype)
    c_out = case.w[1] * case.kwargs.get("groups", 1) if case.transposed else case.w[0]
    b = rng.standard_normal(c_out).astype(dtype)
    y = getattr(fastconv, _conv_names(case)[0])(x, w, b, **case.kwargs)
    gy = rng.standard_normal(y.shape).astype(dtype)
    return dict(x=x, w=w, b=b, gy=gy)


def _numpy_step(module, case, a):
    """The case as a zero-argument callable on fastconv or the reference."""
    kw = case.kwargs
    if case.kind == "pool_max":
        def step():
            y, idx = module.max_pool2d(a["x"], return_indices=True, **kw)
            return y, idx, module.grad.max_pool2d(y, idx, a["x"].shape)
        return step
    if case.kind == "pool_avg":
        def step():
            y = module.avg_pool2d(a["x"], **kw)
            return y, module.grad.avg_pool2d(y, a["x"].shape, **kw)
        return step
    fwd, inp, wgt = _conv_names(case)
    if case.kind == "conv":
        return lambda: getattr(module, fwd)(a["x"], a["w"], a["b"], **kw)

    def step():
        y = getattr(module, fwd)(a["x"], a["w"], a["b"], **kw)
        return (y,
                getattr(module.grad, inp)(a["x"].shape, a["w"], a["gy"], **kw),
                getattr(module.grad, wgt)(a["x"], a["w"].shape, a["gy"], **kw),
                module.grad.conv_bias(a["gy"]))
    return step


def _torch_step(torch, case, a):
    F = torch.nn.functional
    kw = case.kwargs
    x = torch.from_numpy(a["x"])
    if case.kind == "pool_max":
        x.requires_grad_(True)

        def step():
            x.grad = None
            y = F.max_pool2d(x, return_indices=False, **kw)
            y.backward(y.detach())
        return step
    if case.kind == "pool_avg":
        x.requires_grad_(True)

        def step():
            x.grad = None
            y = F.avg_pool2d(x, **kw)
            y.backward(y.detach())
        return step
    op = getattr(F, _conv_names(case)[0])
    w, b = torch.from_numpy(a["w"]), torch.from_numpy(a["b"])
    if case.kind == "conv":
        def step():
            with torch.no_grad():
                return op(x, w, b, **kw)
        return step
    gy = torch.from_numpy(a["gy"])
    for t in (x, w, b):
        t.requires_grad_(True)

    def step():
        x.grad = w.grad = b.grad = None
        op(x, w, b, **kw).backward(gy)
    return step


# -- measurement -------------------------------------------------------------------


def run_times(f, repeats, min_time=0.02):
    """Wall times of one call of ``f`` in ``repeats`` runs, after a warm-up
    call.

    A call shorter than ``min_time`` is timed in runs of as many calls as
    fill about ``min_time`` (as ``timeit`` does), and each run gives the
    mean of its calls: one call of 0.1 ms is as long as a timer interrupt or
    a thread's wake-up, and the median of a few such single calls moved by
    up to 2x between runs.
    """
    f()  # warm-up
    t0 = time.perf_counter()
    f()
    number = max(1, int(min_time / max(time.perf_counter() - t0, 1e-9)))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(number):
            f()
        times.append((time.perf_counter() - t0) / number)
    return times


def median_time(f, repeats, min_time=0.02):
    """Median of :func:`run_times`."""
    return float(np.median(run_times(f, repeats, min_time)))


def side_by_side(steps, repeats, rounds=3, pause=0.2):
    """Median time of each step over ``rounds`` x ``repeats`` runs, the steps
    timed in turn, one block each per round.

    Before each block, a pause lets the previous runtime's idle threads go to
    sleep: a step timed while OpenBLAS's or GNU libgomp's threads still spin
    ran up to 20x slower on two cores (0.05 s was enough on the development
    machine). Within a block, an untimed call wakes the step's own threads
    and the timed calls follow back to back, as in a training loop. Taking
    turns over several rounds lets every step meet the same spells of a
    shared machine: timed in one block each, the ratio of two steps moved by
    up to 2x between runs when one of them happened to meet a slow spell.
    """
    times = {k: [] for k in steps}
    for _ in range(rounds):
        for k, f in steps.items():
            time.sleep(pause)
            times[k] += run_times(f, repeats)
    return {k: float(np.median(v)) for k, v in times.items()}


def peak_extra_memory(f):
    """Peak memory of one call of ``f`` beyond its inputs, in bytes.

    The NumPy allocations (outputs, packed weights, per-thread partial sums)
    are measured with tracemalloc; to them is added the largest workspace one
    convolution kernel malloc'd outside NumPy during the call, as the kernel
    module reports it.
    """
    import tracemalloc

    kernels = fastconv._config.conv_kernels
    kernels.workspace_peak(reset=True)
    tracemalloc.start()
    result = f()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    del result
    return peak + kernels.workspace_peak(reset=True)


def _thread_limits(n):
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return nullcontext()
    return threadpool_limits(limits=n, user_api="blas")


def _flop_rate(run, repeats):
    """GFLOP/s of ``run()``, which returns the flops it did: the best of
    ``repeats`` calls (a peak: a shared machine only ever slows a run down),
    after a pause (OpenBLAS's threads spin for a while after a GEMM; see
    side_by_side) and a warm-up."""
    time.sleep(0.5)
    run()
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        flops = run()
        rates.append(flops / (time.perf_counter() - t0) / 1e9)
    return float(np.max(rates))


def machine_figures(n_threads, repeats=5):
    """GEMM peak, FMA peak and micro-kernel rate (GFLOP/s) per dtype, and
    copy bandwidth (GB/s), on ``n_threads`` threads; and which kernels
    NumPy's BLAS runs (with OPENBLAS_CORETYPE set, OpenBLAS runs that core's
    kernels, whatever the CPU: unset it to measure NumPy at its best)."""
    kernels = fastconv._config.conv_kernels
    out = {}
    with _thread_limits(n_threads):
        for dtype in (np.float32, np.float64):
            name, size = np.dtype(dtype).name, np.dtype(dtype).itemsize
            a = np.random.default_rng(0).standard_normal((2048, 2048)).astype(dtype)
            out[f"gemm_gflops_{name}"] = _flop_rate(
                lambda a=a: (np.matmul(a, a), 2 * 2048**3)[1], repeats)
            # 8-15 ms each: 10**7 (float32) or 5 * 10**6 rounds of 2*MR FMAs, and
            # 10**5 or 5 * 10**4 micro-kernel calls. The FMA loop is the ceiling
            # and short: the best of three times the repeats (a saved run once
            # had its 2-thread float64 loop at half its rate, below the
            # micro-kernel's)
            out[f"fma_gflops_{name}"] = _flop_rate(
                lambda s=size: kernels.fma_peak_run(s, 10**7 // (s // 4), n_threads),
                3 * repeats)
            out[f"ukernel_gflops_{name}"] = _flop_rate(
                lambda s=size: kernels.micro_run(s, 128, 10**5 // (s // 4), n_threads), repeats)
    src = np.ones(2**25, np.float64)  # 256 MiB
    dst = np.empty_like(src)
    t = median_time(lambda: np.copyto(dst, src), repeats)
    out["copy_gbs"] = 2 * src.nbytes / t / 1e9
    out["blas"] = _blas_kernels()
    return out


def _blas_kernels():
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return "unknown (threadpoolctl not installed)"
    blas = [i for i in threadpool_info() if i.get("user_api") == "blas"]
    if not blas:
        return "unknown"
    arch = blas[0].get("architecture", "?")
    forced = os.environ.get("OPENBLAS_CORETYPE")
    return f"{blas[0]['internal_api']} {arch}" + (f" (OPENBLAS_CORETYPE={forced})" if forced
                                                  else "")


def _work(case, a):
    """(amount, unit) of one step: GFLOP for convolutions, GB for pooling."""
    if case.kind.startswith("pool"):
        y = fastconv.max_pool2d(a["x"], **case.kwargs)
        if case.kind == "pool_max":  # x, y, indices, then grad y, indices, grad x
            moved = a["x"].nbytes * 2 + y.nbytes * 2 + y.size * 8 * 2
        else:
            moved = a["x"].nbytes * 2 + y.nbytes * 2
        return moved / 1e9, "GB/s"
    x_shape, w_shape = a["x"].shape, a["w"].shape
    y_shape = a["gy"].shape
    if case.transposed:  # the convolution it undoes maps y -> x
        macs = np.prod(x_shape) * np.prod(w_shape[1:])
    else:
        macs = np.prod(y_shape) * np.prod(w_shape[1:])
    passes = 3 if case.kind == "conv_fwdbwd" else 1
    return 2 * macs * passes / 1e9, "GFLOP/s"


# Largest relative difference from the reference accepted before timing: the
# float32 weight gradients sum tens of thousands of terms.
_CHECK_TOL = {np.dtype(np.float32): 1e-3, np.dtype(np.float64): 1e-10}


def _check(case, a):
    got = _numpy_step(fastconv, case, a)()
    want = _numpy_step(reference, case, a)()
    got = got if isinstance(got, tuple) else (got,)
    want = want if isinstance(want, tuple) else (want,)
    tol = _CHECK_TOL[a["x"].dtype]
    for g, w in zip(got, want):
        if g.dtype.kind == "i":
            if not np.array_equal(g, w):
                raise AssertionError(f"{case.name}: indices differ from the reference")
            continue
        scale = max(1.0, float(np.max(np.abs(w), initial=0)))
        err = float(np.max(np.abs(g - w), initial=0)) / scale
        if err > tol:
            raise AssertionError(f"{case.name}: max relative error {err:.2e} vs reference")


def run(cases=None, dtypes=("float32", "float64"), threads=(1, 2), repeats=5, rounds=3,
        use_torch=True, progress=True):
    """Run the suite; returns a dict with the machine figures and one row per case."""
    cases = CASES if cases is None else cases
    torch = None
    if use_torch:
        try:
            import torch
        except ImportError:
            torch = None
    jobs = [(c, d, t) for t in threads for d in dtypes for c in cases]
    try:
        from tqdm import tqdm
        bar = tqdm(total=len(jobs), disable=not progress, desc="bench", file=sys.stderr)
    except ImportError:
        bar = None
    machine = {t: machine_figures(t) for t in threads}
    rows = []
    rng = np.random.default_rng(0)
    for case, dtype, n_threads in jobs:
        if bar is not None:
            bar.set_postfix_str(f"{case.name} {case.kind} {dtype} {n_threads}t")
        fastconv.set_num_threads(n_threads)
        if torch is not None:
            torch.set_num_threads(n_threads)
        a = _numpy_inputs(case, np.dtype(dtype), rng)
        _check(case, a)
        steps = {"fastconv": _numpy_step(fastconv, case, a),
                 "reference": _numpy_step(reference, case, a)}
        if torch is not None:
            steps["torch"] = _torch_step(torch, case, a)
        with _thread_limits(n_threads):
            t = side_by_side(steps, repeats, rounds)
        amount, unit = _work(case, a)
        row = dict(
            case=case.name, kind=case.kind, dtype=dtype, threads=n_threads,
            path=_paths(case, a),
            time_s=t["fastconv"], reference_s=t["reference"], torch_s=t.get("torch"),
            rate=amount / t["fastconv"], unit=unit,
            vs_reference=t["reference"] / t["fastconv"],
            vs_torch=t["torch"] / t["fastconv"] if "torch" in t else None,
            peak_bytes=peak_extra_memory(steps["fastconv"]),
        )
        rows.append(row)
        if bar is not None:
            bar.update()
    if bar is not None:
        bar.close()
    fastconv.set_num_threads(None)
    return dict(
        machine={str(t): m for t, m in machine.items()},
        platform=platform.platform(), processor=_cpu_name(), cpu=cpu_slug(),
        cores=os.cpu_count(),
        fastconv=fastconv.__version__, numpy=np.__version__,
        torch=None if torch is None else torch.__version__,
        isa=fastconv._config.ISA, micro_kernel=fastconv._config.micro_kernel(),
        limits={k: os.environ[k] for k in _ISA_LIMITS if k in os.environ},
        repeats=repeats, rounds=rounds, rows=rows,
    )


# Variables that hold a library to an ISA, for measuring as on another CPU:
# fastconv's build, PyTorch's ATen kernels, oneDNN's, and OpenBLAS's.
_ISA_LIMITS = ("FASTCONV_ISA", "ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "OPENBLAS_CORETYPE")


def _paths(case, a):
    """The kernel paths of a case's convolution ops (``-`` for pooling): the
    forward's, or forward/input/weight for fwd+bwd."""
    if case.kind.startswith("pool"):
        return "-"
    if case.transposed:
        # the input gradient of the convolution it undoes, which maps y
        # (grad_out's shape) to x with the same weight
        plan = fastconv.conv_plan(a["gy"].shape, a["w"].shape, a["x"].dtype, **case.kwargs)
        ops = (plan["input_grad"], plan["weight_grad"], plan["forward"])
    else:
        plan = fastconv.conv_plan(a["x"].shape, a["w"].shape, a["x"].dtype, **case.kwargs)
        ops = (plan["forward"], plan["input_grad"], plan["weight_grad"])
    return ops[0] if case.kind == "conv" else "/".join(ops)


def _amd_core(family, model):
    """The core of an AMD family/model, as AMD's documentation numbers them."""
    if family == 0x1A:
        return "zen5"
    if family == 0x19:
        return "zen4" if model in range(0x10, 0x20) or model in range(0x60, 0x80) \
            or model in range(0xA0, 0xB0) else "zen3"
    if family == 0x17:
        return "zen2" if model >= 0x30 else "zen1"
    return f"f{family}m{model}"


def cpu_slug():
    """A short file-name-safe name of this CPU, e.g. ``epyc-zen3`` or ``xeon-f6m167``."""
    fields = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                fields.setdefault(key.strip(), value.strip())
    except OSError:
        return platform.machine().lower()
    name = fields.get("model name", platform.machine()).lower()
    words = [w for w in name.replace("(r)", "").replace("(tm)", "").split()
             if w not in ("amd", "intel", "processor", "cpu")]
    stem = "-".join(words[:2]) or platform.machine().lower()
    family, model = int(fields.get("cpu family", -1)), int(fields.get("model", 0))
    if fields.get("vendor_id") == "AuthenticAMD" and family >= 0:
        stem += "-" + _amd_core(family, model)
    elif fields.get("vendor_id") == "GenuineIntel" and family >= 0:
        # the core generation, which a virtual machine's "Intel Xeon Processor" hides
        stem += f"-f{family}m{model}"
    return "".join(c if c.isalnum() or c == "-" else "-" for c in stem)


def _cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _geomean(values):
    values = [v for v in values if v]
    return float(np.exp(np.mean(np.log(values)))) if values else float("nan")


def format_table(result):
    lines = [
        f"fastconv {result['fastconv']}, numpy {result['numpy']}, torch {result['torch']}; "
        f"median of {result['rounds']} rounds x {result['repeats']} runs",
        f"cpu: {result['processor']} ({result.get('cpu', '?')}), {result['cores']} cores; "
        f"kernels: {result['isa']} build; micro-kernel: {result.get('micro_kernel', '?')}",
    ]
    if result.get("limits"):
        lines.append("ISA limits: " + ", ".join(f"{k}={v}" for k, v in result["limits"].items()))
    for t, m in result["machine"].items():
        lines.append(
            f"machine, {t} thread(s): GEMM peak {m['gemm_gflops_float32']:.0f} GFLOP/s fp32, "
            f"{m['gemm_gflops_float64']:.0f} fp64 ({m.get('blas', '?')}); "
            f"copy {m['copy_gbs']:.1f} GB/s"
        )
        if "fma_gflops_float32" in m:
            lines.append(
                "  ukernel (L1-resident) / FMA peak: " + "; ".join(
                    f"{d} {m[f'ukernel_gflops_{d}']:.0f} / {m[f'fma_gflops_{d}']:.0f} GFLOP/s "
                    f"({m[f'ukernel_gflops_{d}'] / m[f'fma_gflops_{d}']:.0%})"
                    for d in ("float32", "float64")))
    header = (f"{'case':<12}{'op':<12}{'dtype':<8}{'thr':>3}{'time ms':>10}{'rate':>9}"
              f"{'unit':>8}{'%fma':>6}{'x numpy':>9}{'x torch':>9}{'peak MB':>9}  path")
    lines += ["", header, "-" * len(header)]
    for r in result["rows"]:
        vt = f"{r['vs_torch']:.2f}" if r["vs_torch"] else "-"
        share = _fma_share(result, r)
        fma = "-" if share is None else f"{share:.0%}"
        lines.append(
            f"{r['case']:<12}{r['kind']:<12}{r['dtype']:<8}{r['threads']:>3}"
            f"{r['time_s'] * 1e3:>10.3f}{r['rate']:>9.1f}{r['unit']:>8}{fma:>6}"
            f"{r['vs_reference']:>9.2f}{vt:>9}{r['peak_bytes'] / 2**20:>9.1f}"
            f"  {r.get('path', '')}"
        )
    lines.append("")
    if any("winograd" in r.get("path", "") for r in result["rows"]):
        lines.append("winograd: rates count the direct sum's operations (2.25x the multiply-adds "
                     "it does), so they may pass the FMA peak")
    for dtype in sorted({r["dtype"] for r in result["rows"]}):
        for t in sorted({r["threads"] for r in result["rows"]}):
            sel = [r for r in result["rows"] if r["dtype"] == dtype and r["threads"] == t]
            line = (f"geometric mean, {dtype}, {t} thread(s): x numpy "
                    f"{_geomean([r['vs_reference'] for r in sel]):.2f}, x torch "
                    f"{_geomean([r['vs_torch'] for r in sel]):.2f}")
            conv = [(r, _fma_share(result, r)) for r in sel]
            conv = [(r, share) for r, share in conv if share]
            direct = [(r, share) for r, share in conv if "winograd" not in r.get("path", "")]
            if conv:
                line += f"; convolutions x numpy {_geomean([r['vs_reference'] for r, _ in conv]):.2f}"
            if direct:
                # the ceiling of a direct sum: each such convolution at 100% of the FMA peak
                line += (f" ({len(direct)} direct: {_geomean([r['vs_reference'] for r, _ in direct]):.2f},"
                         f" {_geomean([r['vs_reference'] / s for r, s in direct]):.2f} at the FMA peak)")
            lines.append(line)
    return "\n".join(lines)


def _fma_share(result, row):
    """A convolution row's rate as a share of the FMA peak measured in the
    same run (None for pooling rows, or without the peak)."""
    peak = result["machine"].get(str(row["threads"]), {}).get(f"fma_gflops_{row['dtype']}")
    return row["rate"] / peak if row["unit"] == "GFLOP/s" and peak else None


def plot(result, path):
    """A bar chart of the fastconv/competitor speed ratios (matplotlib)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["rows"]
    labels = [f"{r['case']} {r['kind'].replace('conv_', '')} {r['dtype'][-2:]} {r['threads']}t"
              for r in rows]
    y = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(9, 0.22 * len(rows) + 1.5))
    ax.barh(y - 0.2, [r["vs_reference"] for r in rows], 0.4, label="vs NumPy reference")
    if any(r["vs_torch"] for r in rows):
        ax.barh(y + 0.2, [r["vs_torch"] or 0 for r in rows], 0.4, label="vs PyTorch")
    ax.axvline(1.0, color="k", lw=0.8)
    ax.set_xscale("log")
    ax.set_yticks(y, labels, fontsize=6)
    ax.invert_yaxis()
    ax.set_xlabel("speed ratio (competitor time / fastconv time)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _positive_int(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m fastconv bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dtype", nargs="+", default=["float32", "float64"],
                        choices=["float32", "float64"])
    parser.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--repeats", type=_positive_int, default=5, help="timed runs per round")
    parser.add_argument("--rounds", type=_positive_int, default=3,
                        help="rounds in which fastconv, the reference and PyTorch take turns")
    parser.add_argument("--cases", nargs="+", default=None,
                        help="case names to run (default: all)")
    parser.add_argument("--no-torch", action="store_true", help="skip PyTorch")
    parser.add_argument("--json", default=None, help="also write the results to this JSON file")
    parser.add_argument("--save", metavar="DIR", default=None,
                        help="also write DIR/results-<cpu>-<isa>.json and .txt (DIR is made if need be)")
    parser.add_argument("--plot", default=None, help="write a PNG bar chart of the ratios")
    args = parser.parse_args(argv)
    cases = CASES if args.cases is None else [c for c in CASES if c.name in args.cases]
    if not cases:
        parser.error(f"no case named {args.cases}; known: {sorted({c.name for c in CASES})}")
    if args.save:  # made before the run, so that a path it cannot make fails at once
        os.makedirs(args.save, exist_ok=True)
    result = run(cases, args.dtype, args.threads, args.repeats, args.rounds, not args.no_torch)
    print(format_table(result))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
        print(f"\nwrote {args.json}")
    if args.save:
        stem = os.path.join(args.save, f"results-{result['cpu']}-{result['isa']}")
        with open(stem + ".json", "w") as f:
            json.dump(result, f, indent=1)
        with open(stem + ".txt", "w") as f:
            f.write(format_table(result) + "\n")
        print(f"wrote {stem}.json and {stem}.txt")
    if args.plot:
        plot(result, args.plot)
        print(f"wrote {args.plot}")
    return 0
