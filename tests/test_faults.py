"""Fault injection: allocation failure, interrupts, adversarial geometry,
threads changing under concurrent calls, fork during a call, and (marked
``slow``) sizes past 2**31 elements.

Every experiment runs in a child process with a timeout, so that a crash or
a hang fails its test instead of the run.

What the interrupt tests found (and hold): a kernel runs without the GIL
and does not poll for signals, so **a call cannot be interrupted part-way**.
SIGINT during a call is handled when the kernel returns: the call's result
is discarded, ``KeyboardInterrupt`` is raised at that point, and the process
is healthy (the next call gives the right answer).
"""

import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from fastconv._plan import PATHS as _PATHS

ROOT = Path(__file__).resolve().parents[1]
UNDER_ASAN = "libasan" in os.environ.get("LD_PRELOAD", "")


def _child(code, *args, timeout=120, env=None):
    """Run `code` in a new interpreter; return the CompletedProcess."""
    env = dict(os.environ, **(env or {}))
    # tests/ for conftest; fastconv is whichever this process imports (the
    # source tree's or an installed one: PYTHONPATH is passed on)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "tests"), env.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code), *args],
                          capture_output=True, text=True, timeout=timeout, env=env)


def _ok(proc):
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr[-4000:]}"
    return proc.stdout


# -- allocation failure ---------------------------------------------------------------

# (op, path, call): every scratch-allocating kernel, on a geometry where its
# scratch is large enough to be mmap'd (and so to fail under the limit).
ALLOC_CASES = [
    ("forward", p, "conv2d", (1, 2, 300, 300), (2, 1, 3, 3), dict(padding=1, groups=2))
    for p in ("depthwise_flat", "depthwise_rows", "implicit_row", "implicit", "im2col")
] + [
    ("forward", p, "conv2d", (1, 64, 40, 40), (16, 64, 3, 3), dict(padding=1))
    for p in ("implicit", "im2col")
] + [
    ("input_grad", p, "conv2d_input", (1, 2, 300, 300), (2, 1, 3, 3), dict(padding=1, groups=2))
    for p in ("depthwise_flat", "depthwise_rows", "col2im")
] + [
    ("input_grad", "implicit_adjoint", "conv1d_input", (64, 16, 10), (16, 16, 3), dict(padding=1)),
    ("input_grad", "col2im", "conv2d_input", (1, 64, 40, 40), (16, 64, 3, 3), dict(padding=1)),
] + [
    ("weight_grad", p, "conv2d_weight", (1, 2, 300, 300), (2, 1, 3, 3), dict(padding=1, groups=2))
    for p in ("depthwise_flat", "depthwise_rows", "direct", "implicit", "im2col_by_columns",
              "im2col")
] + [
    ("max_pool", p, "max_pool2d", (1, 2, 2, 2**17), None, dict(kernel_size=2, stride=2))
    for p in ("flat", "rows")
] + [
    ("max_pool", "windows", "max_pool2d", (1, 2, 3, 2**16), None,
     dict(kernel_size=3, stride=2, padding=1)),
    ("avg_pool", "flat", "avg_pool2d", (1, 2, 2, 2**17), None, dict(kernel_size=2, stride=2)),
    ("avg_pool", "rows", "avg_pool2d", (1, 2, 3, 2**17), None,
     dict(kernel_size=3, stride=1, padding=1)),
    ("avg_pool_grad", "tiled", "grad.avg_pool2d", (1, 2, 2, 2**17), None,
     dict(kernel_size=2, stride=2)),
    ("avg_pool_grad", "rows", "grad.avg_pool2d", (1, 2, 1, 2**18), None,
     dict(kernel_size=(1, 3), stride=1, padding=(0, 1))),
    (None, None, "grad.max_pool2d", (2, 3, 64, 64), None, dict(kernel_size=2)),
    (None, None, "grad.conv_bias", (64, 4096, 2, 2), None, {}),
]

def _key(case):
    """A case as a hashable key (its kwargs dict as sorted items)."""
    return case[:5] + (tuple(sorted(case[5].items())),)


ALLOC_CHILD = r"""
import contextlib, ctypes, json, resource, sys
import numpy as np
import fastconv
from fastconv import _config, _plan
from fastconv import reference as ref

op, path, name, xs, ws, kw = json.loads(sys.argv[1])
kw = dict((k, tuple(v) if isinstance(v, list) else v) for k, v in kw)
# Every malloc of 4 KiB or more is its own mmap, so it fails as soon as the
# address-space limit is reached (no dynamic threshold, no cached heap top).
libc = ctypes.CDLL(None)
libc.mallopt(-3, 4096)   # M_MMAP_THRESHOLD
libc.mallopt(-1, 0)      # M_TRIM_THRESHOLD
_plan.GRAIN.update(conv=1, pool=1)
rng = np.random.default_rng(0)
x = rng.standard_normal(xs)
nd = len(xs) - 2
w = None if ws is None else rng.standard_normal(ws)

def call(m):
    if name == "grad.max_pool2d":
        y, idx = ref.max_pool2d(x, return_indices=True, **kw)
        return lambda: m.grad.max_pool2d(np.ones_like(y), idx, x.shape)
    if name == "grad.conv_bias":
        return lambda: m.grad.conv_bias(x)
    if name == "grad.avg_pool2d":
        gy = np.ones(ref.avg_pool2d(x, **kw).shape)
        return lambda: m.grad.avg_pool2d(gy, x.shape, **kw)
    if name.endswith("_input"):
        y = getattr(ref, name.replace("_input", ""))(x, w, **kw)
        return lambda: getattr(m.grad, name)(x.shape, w, np.ones_like(y), **kw)
    if name.endswith("_weight"):
        y = getattr(ref, name.replace("_weight", ""))(x, w, **kw)
        return lambda: getattr(m.grad, name)(x, w.shape, np.ones_like(y), **kw)
    if w is not None:
        return lambda: getattr(m, name)(x, w, **kw)
    return lambda: getattr(m, name)(x, **kw)

want = call(ref)()
run = call(fastconv)

def vm_bytes():
    for line in open("/proc/self/status"):
        if line.startswith("VmSize:"):
            return int(line.split()[1]) * 1024

def correct(y):
    return y.shape == want.shape and np.allclose(y, want, rtol=1e-9, atol=1e-9)

kernels = _config.conv_kernels
outcomes = []
for n_threads in (1, 2):
    fastconv.set_num_threads(n_threads)
    with _plan.forced(**{op: path}) if op else contextlib.nullcontext():
        assert correct(run()), "wrong before any limit"  # warm: threads, caches, plan
        scratch = kernels.workspace_peak(reset=True) if op in ("forward", "input_grad",
                                                               "weight_grad") else -1
        out = want.nbytes
        margins = [0] + [int(out + f * max(scratch, 1 << 16)) for f in (0.02, 0.25, 0.5, 0.9)]
        margins += [1 << k for k in range(12, 31, 2)]
        for margin in sorted(set(margins)):
            soft, hard = resource.getrlimit(resource.RLIMIT_AS)
            resource.setrlimit(resource.RLIMIT_AS, (vm_bytes() + margin, hard))
            try:
                y = run()
                kind = "ok" if correct(y) else "WRONG"
            except MemoryError as exc:
                kind = "kernel" if str(exc).startswith("fastconv:") else "numpy"
            finally:
                resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
            healthy = correct(run())
            outcomes.append((n_threads, margin, kind, healthy))
result = {"scratch": scratch, "out": want.nbytes, "outcomes": outcomes, "shim": None}
if hasattr(libc, "fc_fault_arm"):  # the malloc shim is preloaded: fail each kernel malloc
    for line in open("/proc/self/maps"):
        parts = line.split()
        if len(parts) >= 6 and "/fastconv/_kernels/_" in parts[5]:
            a, b = (int(v, 16) for v in parts[0].split("-"))
            libc.fc_fault_range(ctypes.c_size_t(a), ctypes.c_size_t(b))
    libc.fc_fault_disarm.restype = ctypes.c_long
    result["shim"] = shim = []
    for n_threads in (1, 2):
        fastconv.set_num_threads(n_threads)
        with _plan.forced(**{op: path}) if op else contextlib.nullcontext():
            for k in range(200):
                libc.fc_fault_arm(ctypes.c_long(k))
                try:
                    y = run()
                    kind = "ok" if correct(y) else "WRONG"
                except MemoryError as exc:
                    kind = "kernel" if str(exc).startswith("fastconv:") else "numpy"
                finally:
                    n_mallocs = libc.fc_fault_disarm()
                shim.append((n_threads, k, kind, correct(run())))
                if k >= n_mallocs:  # no kernel malloc was failed: the call was whole
                    break
print(json.dumps(result))
"""


SHIM = r"""
/* Fail the k-th malloc called from fastconv's kernel modules (return
   addresses in the ranges given), and only that one. LD_PRELOADed, so the
   kernels' calls to malloc come here. */
#include <stddef.h>
#include <stdint.h>
extern void *__libc_malloc(size_t);
static uintptr_t lo[32], hi[32];
static int nranges;
static long armed = -1, calls, failed;
void fc_fault_range(uintptr_t a, uintptr_t b) {
    if (nranges < 32) { lo[nranges] = a; hi[nranges] = b; nranges++; }
}
void fc_fault_arm(long k) {
    __atomic_store_n(&calls, 0, __ATOMIC_SEQ_CST);
    __atomic_store_n(&failed, 0, __ATOMIC_SEQ_CST);
    __atomic_store_n(&armed, k, __ATOMIC_SEQ_CST);
}
long fc_fault_disarm(void) {
    __atomic_store_n(&armed, -1, __ATOMIC_SEQ_CST);
    return __atomic_load_n(&calls, __ATOMIC_SEQ_CST);
}
long fc_fault_failed(void) { return __atomic_load_n(&failed, __ATOMIC_SEQ_CST); }
void *malloc(size_t n) {
    long k = __atomic_load_n(&armed, __ATOMIC_SEQ_CST);
    if (k >= 0) {
        uintptr_t ra = (uintptr_t)__builtin_return_address(0);
        for (int i = 0; i < nranges; i++) {
            if (ra >= lo[i] && ra < hi[i]) {
                if (__atomic_fetch_add(&calls, 1, __ATOMIC_SEQ_CST) == k) {
                    __atomic_fetch_add(&failed, 1, __ATOMIC_SEQ_CST);
                    return NULL;
                }
                break;
            }
        }
    }
    return __libc_malloc(n);
}
"""

@pytest.fixture(scope="module")
def malloc_shim(tmp_path_factory):
    """The shim's path, or None (not Linux, or no C compiler)."""
    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None or not sys.platform.startswith("linux"):
        return None
    d = tmp_path_factory.mktemp("shim")
    (d / "shim.c").write_text(SHIM)
    subprocess.run([cc, "-shared", "-fPIC", "-O2", str(d / "shim.c"), "-o", str(d / "shim.so")],
                   check=True, capture_output=True)
    return d / "shim.so"


@functools.cache
def _alloc_result(case, shim):
    """One child per case runs both experiments (the shim's only where it is built)."""
    op, path, name, xs, ws, kw = case
    env = {"LD_PRELOAD": str(shim)} if shim else {}
    proc = _child(ALLOC_CHILD, json.dumps([op, path, name, xs, ws, kw]), timeout=300, env=env)
    return json.loads(_ok(proc).strip().splitlines()[-1])


@pytest.mark.skipif(UNDER_ASAN, reason="AddressSanitizer reserves terabytes of address "
                    "space: RLIMIT_AS cannot bound it")
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_AS, mallopt: Linux")
@pytest.mark.parametrize("case", ALLOC_CASES, ids=[f"{c[2]}-{c[1]}" for c in ALLOC_CASES])
def test_allocation_failure_raises_memory_error_and_leaves_the_process_healthy(case,
                                                                              malloc_shim):
    """Under an address-space limit swept from none to plenty above the
    process's size, at 1 and 2 threads: every call gives the right answer
    or raises MemoryError (the kernel's own, for its scratch, or NumPy's for
    an array), never a crash or a wrong answer; after each, a call without
    the limit is right. Where the output or the kernel's workspace is 1 MiB
    or more (mmap'd, so its allocation fails at some limit) a MemoryError
    must have been seen. (Which allocation fails first depends on their
    order, and small ones come from memory the process already holds:
    test_every_kernel_allocation_failure fails each kernel malloc in turn.)"""
    result = _alloc_result(_key(case), malloc_shim)
    kinds = {k for _, _, k, _ in result["outcomes"]}
    assert "WRONG" not in kinds, result
    assert all(h for *_, h in result["outcomes"]), result
    assert "ok" in kinds, result
    if max(result["out"], result["scratch"]) >= 1 << 20:
        # large buffers are mmap'd: some allocation must fail at some limit
        # (which one fails first depends on the order of the allocations)
        assert kinds & {"kernel", "numpy"}, f"no allocation ever failed: {result}"


# Kernels that malloc nothing on these geometries, and the one whose scratch
# is optional (avg_pool2d_backward: with NULL scratch every column goes the
# per-output way, by design).
NO_SCRATCH = {("forward", "depthwise_rows"), ("input_grad", "depthwise_rows"),
              ("weight_grad", "depthwise_rows"), "grad.max_pool2d"}
OPTIONAL_SCRATCH = {("avg_pool_grad", "tiled"), ("avg_pool_grad", "rows")}


@pytest.mark.skipif(UNDER_ASAN, reason="the shim calls glibc's malloc, not ASan's")
@pytest.mark.parametrize("case", ALLOC_CASES, ids=[f"{c[2]}-{c[1]}" for c in ALLOC_CASES])
def test_every_kernel_allocation_failure_raises_memory_error(case, malloc_shim):
    """Each malloc a kernel makes (per-thread tiles, scratch rows) is failed
    in turn, k = 0, 1, 2, ... until a call makes no more, at 1 and 2
    threads: the call raises the kernel's MemoryError (or, where the
    scratch is optional, gives the right answer), never crashes, and the
    next call is right."""
    if malloc_shim is None:
        pytest.skip("no C compiler (or not Linux) for the malloc shim")
    result = _alloc_result(_key(case), malloc_shim)["shim"]
    assert all(kind in ("ok", "kernel") for _, _, kind, _ in result), result
    assert all(h for *_, h in result), result
    for n_threads in (1, 2):
        runs = [kind for t, _, kind, _ in result if t == n_threads]
        assert runs[-1] == "ok", result
        if (case[:2] if case[0] else case[2]) in NO_SCRATCH:
            assert runs == ["ok"], f"this kernel now mallocs: add it to the checks: {result}"
        elif case[:2] in OPTIONAL_SCRATCH:
            assert len(runs) > 1, f"no kernel allocation at {n_threads} threads: {result}"
        else:
            assert "kernel" in runs, f"no kernel allocation failed at {n_threads} threads: {result}"


# -- interrupts --------------------------------------------------------------------------

SIGINT_CHILD = r"""
import signal, sys, time
import numpy as np
import fastconv
# Python's own handler, even where the test runs with SIGINT ignored (a
# background job of a non-interactive shell inherits SIG_IGN)
signal.signal(signal.SIGINT, signal.default_int_handler)
n_threads = int(sys.argv[1])
fastconv.set_num_threads(n_threads)
rng = np.random.default_rng(0)
x = rng.standard_normal((4, 64, 96, 96)).astype(np.float32)
w = rng.standard_normal((64, 64, 3, 3)).astype(np.float32)
small_x, small_w = x[:1, :8, :12, :12].copy(), w[:4, :8].copy()
want_small = fastconv.reference.conv2d(small_x, small_w, padding=1)
fastconv.conv2d(x[:1], w, padding=1)  # warm
t0 = time.perf_counter()
fastconv.conv2d(x, w, padding=1)
one_call = time.perf_counter() - t0
print(f"ready {one_call:.3f}", flush=True)
sys.stdin.readline()
y = None
t0 = time.perf_counter()
try:
    for _ in range(3):
        y = fastconv.conv2d(x, w, padding=1)
    print("not interrupted", flush=True)
except KeyboardInterrupt:
    print(f"interrupted after {time.perf_counter() - t0:.3f} s", flush=True)
got = fastconv.conv2d(small_x, small_w, padding=1)
err = float(np.max(np.abs(got - want_small)))
print("healthy" if err < 1e-3 else f"WRONG {err}", flush=True)
"""


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT cannot be sent to a child on Windows")
@pytest.mark.parametrize("n_threads", [1, 2])
def test_sigint_during_a_kernel_call_leaves_the_process_usable(n_threads):
    """SIGINT sent while a conv2d runs (three calls of a measured length
    each; the signal lands in the first or second) raises
    KeyboardInterrupt when the kernel returns, and the next call is right."""
    env = dict(os.environ)
    proc = subprocess.Popen([sys.executable, "-c", SIGINT_CHILD, str(n_threads)], env=env,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        ready = proc.stdout.readline().split()
        assert ready and ready[0] == "ready", (ready, proc.stderr.read())
        one_call = float(ready[1])
        proc.stdin.write("go\n")
        proc.stdin.flush()
        time.sleep(one_call / 2)  # in the middle of the first call
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    lines = out.splitlines()
    assert lines[0].startswith("interrupted after"), out + err
    assert lines[-1] == "healthy", out + err
    assert proc.returncode == 0, err


# -- adversarial geometry ---------------------------------------------------------------

ADVERSARIAL_SETUP = r"""
import os, sys
import numpy as np
import fastconv
from fastconv import _plan, grad
from fastconv import reference as ref
if sys.platform.startswith("linux") and "libasan" not in os.environ.get("LD_PRELOAD", ""):
    # an allocation too big for the machine is MemoryError here, whatever the overcommit policy
    import resource
    resource.setrlimit(resource.RLIMIT_AS, (8 << 30, resource.RLIM_INFINITY))
M = 2**31 - 1
"""

CONV_ADVERSARIAL_CHILD = ADVERSARIAL_SETUP + r"""
op, path, c_in = sys.argv[1], sys.argv[2], int(sys.argv[3])
x = np.arange(1.0, 1 + 5 * c_in).reshape(1, c_in, 5)
w = 10.0 ** np.arange(3 * c_in).reshape(1, c_in, 3)  # every tap's part is readable
GEOMETRIES = [(M, 0, 1), (M, M, 1), (M, 2**30, 1), (1, M, M), (M, M, M),
              (2**30, 2**31 - 2, 1), (3, 2**30 - 1, 2**30)]

def taps(L, k, s, p, d, n_out):
    # (output, tap, input position) of every product inside the input
    return [(o, t, o * s - p + t * d) for o in range(n_out) for t in range(k)
            if 0 <= o * s - p + t * d < L]

answered = 0
for s, p, d in GEOMETRIES:
    n_out = (5 + 2 * p - d * 2 - 1) // s + 1
    kw = dict(stride=s, padding=p, dilation=d)
    gy = np.arange(1.0, 1 + n_out).reshape(1, 1, n_out)
    if op == "forward":
        want = np.zeros((1, 1, n_out))
        for o, t, i in taps(5, 3, s, p, d, n_out):
            want[0, 0, o] += x[0, :, i] @ w[0, :, t]
        call = lambda: fastconv.conv1d(x, w, **kw)
    elif op == "input_grad":
        want = np.zeros(x.shape)
        for o, t, i in taps(5, 3, s, p, d, n_out):
            want[0, :, i] += gy[0, 0, o] * w[0, :, t]
        call = lambda: grad.conv1d_input(x.shape, w, gy, **kw)
    else:
        want = np.zeros(w.shape)
        for o, t, i in taps(5, 3, s, p, d, n_out):
            want[0, :, t] += gy[0, 0, o] * x[0, :, i]
        call = lambda: grad.conv1d_weight(x, w.shape, gy, **kw)
    forced = {} if path == "auto" else {op: path}
    with _plan.forced(**forced):
        if forced:
            from fastconv._validation import conv_geometry
            try:
                _plan.plan_for(op, conv_geometry(x.shape, w.shape, 1, s, p, d, 1), 8)
            except ValueError:
                continue  # the path does not apply to this geometry
        try:
            got = call()
        except MemoryError as exc:
            raise SystemExit(f"MemoryError for a tiny problem: stride={s} padding={p} "
                             f"dilation={d}, {n_out} outputs: {exc}")
    assert np.array_equal(got, want), (s, p, d, got, want)
    answered += 1
print(answered)
"""

POOL_ADVERSARIAL_CHILD = ADVERSARIAL_SETUP + r"""
x = np.arange(1.0, 6.0).reshape(1, 1, 5)
answered = 0
# windows of 2**31 - 1 taps, mostly padding; strides past the input
for k, s, p in [(M, 1, 2**30 - 1), (M, M, 2**30 - 1), (2, M, 1), (3, M, 0)]:
    y, idx = fastconv.max_pool1d(x, k, stride=s, padding=p, return_indices=True)
    a = fastconv.avg_pool1d(x, k, stride=s, padding=p, count_include_pad=False)
    n_out = (5 + 2 * p - k) // s + 1
    want_y = np.array([x[0, 0, max(0, o * s - p):o * s - p + k].max() for o in range(n_out)])
    want_a = np.array([x[0, 0, max(0, o * s - p):o * s - p + k].mean() for o in range(n_out)])
    assert np.array_equal(y[0, 0], want_y), (k, s, p, y, want_y)
    assert np.array_equal(x[0, 0, idx[0, 0]], want_y), (k, s, p, idx)
    assert np.allclose(a[0, 0], want_a, rtol=1e-15), (k, s, p, a, want_a)
    gx = grad.avg_pool1d(np.ones_like(a), x.shape, k, stride=s, padding=p,
                         count_include_pad=False)
    assert np.allclose(gx.sum(), n_out), (k, s, p, gx)
    answered += 1
# what must raise: ValueError or TypeError worded "Expected ...", or MemoryError
bad = [
    lambda: fastconv.conv1d(x, x, stride=2**63),
    lambda: fastconv.conv1d(x, x, padding=2**64),
    lambda: fastconv.conv1d(x, x, dilation=-M),
    lambda: fastconv.conv1d(x, x, groups=M),
    lambda: fastconv.conv_transpose1d(x, x[:, :, :3], stride=M),  # 2**33 outputs
    lambda: fastconv.conv_transpose1d(x, x[:, :, :3], stride=M, dilation=M, output_padding=M),
    lambda: fastconv.max_pool1d(x, 2**63 - 1),
    lambda: fastconv.max_pool1d(x, M, padding=2**30),
    lambda: fastconv.avg_pool2d(x[None], (1, M), stride=(1, M), padding=(0, 2**30)),
    lambda: grad.conv1d_input((1, 1, 2**62), x[:, :, :3], np.ones((1, 1, 1)), stride=2**62),
    lambda: grad.conv1d_weight(x, (1, 1, M), np.ones((1, 1, 1))),
    lambda: grad.conv2d_weight(x[None], (1, 1, 1, 2**63), np.ones((1, 1, 1, 1))),
    lambda: grad.avg_pool1d(np.ones((1, 1, 1)), (1, 1, 2**62), M, stride=M),
    lambda: grad.max_pool1d(np.ones((1, 1, 1)), np.array([[[M]]]), (1, 1, 5)),
]
raised = 0
for i, f in enumerate(bad):
    try:
        f()
    except (ValueError, TypeError) as exc:
        assert str(exc).startswith("Expected"), (i, exc)
        raised += 1
    except MemoryError:
        raised += 1
    else:
        raise AssertionError(f"bad call {i} answered")
print(answered, raised)
"""

# (op, path, input channels): every path, on 1 channel (depthwise) and 2
# (the flat-plane paths, depthwise_flat and direct, and the implicit ones do
# not apply where the input they copy outgrows their scratch bound, as on all
# of these geometries, and winograd takes 3x3 kernels at stride 1 only)
CONV_PATH_CASES = [(op, path, 1 if path.startswith("depthwise") else 2)
                   for op in ("forward", "input_grad", "weight_grad")
                   for path in ("auto",) + _PATHS[op]
                   if path not in ("depthwise_flat", "direct", "implicit_row", "implicit",
                                   "implicit_adjoint", "winograd")] + [
                   ("forward", "auto", 1), ("input_grad", "auto", 1), ("weight_grad", "auto", 1)]


def _adversarial_param(op, path, c_in):
    return pytest.param(op, path, c_in, id=f"{op}-{path}-{c_in}ch")


@pytest.mark.parametrize("op,path,c_in", [_adversarial_param(*c) for c in CONV_PATH_CASES])
def test_adversarial_conv_geometry_gives_direct_numpys_answer(op, path, c_in):
    """Strides, paddings and dilations up to 2**31 - 1 on a 5-element input
    (1-5 outputs, each a handful of taps): every path that applies, and the
    plan's own choice, give direct NumPy's answer exactly (the taps are
    powers of ten), within the child's timeout."""
    out = _ok(_child(CONV_ADVERSARIAL_CHILD, op, path, str(c_in), timeout=120))
    assert int(out.strip()) >= 1


def test_adversarial_pooling_and_validation_answer_or_raise_at_once():
    """Pooling windows of 2**31 - 1 taps and strides past the input give
    direct NumPy's answer; sizes past 2**62, 2**63 and 2**64 and geometry
    that no array can hold raise ValueError/TypeError worded 'Expected ...'
    (or MemoryError), within the child's timeout."""
    answers, raised = map(int, _ok(_child(POOL_ADVERSARIAL_CHILD, timeout=60)).split())
    assert answers == 4 and raised == 14


# -- threads ----------------------------------------------------------------------------

THREADS_CHILD = r"""
import threading
import numpy as np
import fastconv
from conftest import assert_close
rng = np.random.default_rng(0)
x = rng.standard_normal((4, 8, 24, 24))
w = rng.standard_normal((12, 8, 3, 3))
want = fastconv.reference.conv2d(x, w, padding=1)
want_pool = fastconv.reference.max_pool2d(x, 3, 2, 1)
want_gw = fastconv.reference.grad.conv2d_weight(x, w.shape, want, padding=1)
stop = threading.Event()
errors = []

def changer():
    n = 0
    while not stop.is_set():
        fastconv.set_num_threads(1 + n % 4)
        n += 1
    fastconv.set_num_threads(None)

def worker(i):
    try:
        for _ in range(15):
            assert_close(fastconv.conv2d(x, w, padding=1), want, n_terms=72)
            assert np.array_equal(fastconv.max_pool2d(x, 3, 2, 1), want_pool)
            assert_close(fastconv.grad.conv2d_weight(x, w.shape, want, padding=1), want_gw,
                         n_terms=4 * 24 * 24, scale=float(np.abs(want).max() * np.abs(x).max()))
    except Exception as exc:
        errors.append(repr(exc))

c = threading.Thread(target=changer)
c.start()
ts = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
for t in ts: t.start()
for t in ts: t.join()
stop.set(); c.join()
assert not errors, errors
print("ok")
"""


def test_concurrent_calls_while_the_thread_count_changes():
    """8 Python threads call conv2d, max_pool2d and the weight gradient while
    a ninth changes set_num_threads as fast as it can: every result is right."""
    assert _ok(_child(THREADS_CHILD, timeout=300)).strip() == "ok"


FORK_CHILD = r"""
import os, threading, time
import numpy as np
import fastconv
fastconv.set_num_threads(2)
rng = np.random.default_rng(0)
x = rng.standard_normal((4, 32, 64, 64)).astype(np.float32)
w = rng.standard_normal((32, 32, 3, 3)).astype(np.float32)
small_x, small_w = x[:1, :4, :10, :10].copy(), w[:3, :4].copy()
want_small = fastconv.reference.conv2d(small_x, small_w, padding=1)
in_call = threading.Event()
done = threading.Event()

def busy():
    in_call.set()
    while not done.is_set():
        fastconv.conv2d(x, w, padding=1)

t = threading.Thread(target=busy)
t.start()
in_call.wait()
time.sleep(0.05)  # the other thread is inside a kernel (it calls back to back)
pid = os.fork()
if pid == 0:
    # the child: serial (libgomp's pool did not survive fork), and right
    ok = fastconv.get_num_threads() == 1
    y = fastconv.conv2d(small_x, small_w, padding=1)
    ok = ok and float(np.max(np.abs(y - want_small))) < 1e-3
    os._exit(0 if ok else 3)
_, status = os.waitpid(pid, 0)
done.set()
t.join()
print("child", os.waitstatus_to_exitcode(status))
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork on this platform")
def test_fork_while_another_thread_is_inside_a_kernel():
    """A fork while another thread runs a parallel kernel: the child's call
    runs (serially) and is right, instead of hanging on the lost thread pool."""
    assert _ok(_child(FORK_CHILD, timeout=120)).strip() == "child 0"


# -- sizes past 2**31 elements (slow: run by the benchmark job) ------------------------

BIG = ROOT / "benchmarks" / "big_sizes.py"


@pytest.mark.slow
@pytest.mark.parametrize("case", ["max_pool", "conv3x3", "conv1x1"])
def test_sizes_past_2_31_elements(case):
    """benchmarks/big_sizes.py CASE: the op on a plane of 46400 x 46400
    float32 (2**31 elements and more), checked against direct NumPy at
    sampled positions, with peak memory near input + output. Needs about
    16-18 GB free; FASTCONV_BIG_SIDE sets a smaller side to try it out."""
    proc = subprocess.run([sys.executable, str(BIG), case], capture_output=True, text=True,
                          timeout=3600)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    assert "checked" in proc.stdout and "peak" in proc.stdout, proc.stdout
