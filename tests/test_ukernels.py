"""The GEMM micro-kernels of every ISA build, against NumPy and plain loops.

Two levels:
* each compiled build this CPU can run (generic, AVX2, AVX-512) through its
  test entry points, against NumPy;
* the disassembly of each compiled x86-64 build (on any x86-64 CPU) and of
  the NEON kernels cross compiled: the kernels keep their vectors in
  registers (no stack traffic);
* the C header itself (tests/ukernels/check_ukernels.c), compiled for every
  vector layer: the x86-64 ones this CPU runs, the scalar fallback, and NEON
  with an aarch64 cross compiler run under qemu-user (skipped where those
  are not installed: Debian's gcc-aarch64-linux-gnu and qemu-user).
"""

import importlib
import os
import platform
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_close

from fastconv import _config
from fastconv._kernels import __file__ as _kernels_init

INCLUDE = Path(_kernels_init).parent
HARNESS = Path(__file__).parent / "ukernels" / "check_ukernels.c"
ISAS = ["generic", "avx2", "avx512"]
DTYPES = [np.float32, np.float64]


def _build(isa):
    if isa not in _config._supported_isas():
        pytest.skip(f"this CPU cannot run the {isa} build")
    try:
        return importlib.import_module(f"fastconv._kernels._conv_{isa}")
    except ImportError:
        pytest.skip(f"the {isa} build is not part of this installation")


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kc", [1, 3, 64, 300])
def test_micro_kernels_match_numpy(isa, dtype, kc, rng):
    m = _build(isa)
    _, mr, nr32, nr64 = m.ukernel()
    nr = nr32 if dtype == np.float32 else nr64
    a = rng.standard_normal((kc, mr)).astype(dtype)

    # fc_gemm: B rows ldb > NR apart, C rows ldc > NR apart; nothing past
    # the block is written
    b = rng.standard_normal((kc, nr + 5)).astype(dtype)
    c = np.full((mr, nr + 3), -7.0, dtype)
    m.micro_gemm(a, b, c)
    assert_close(c[:, :nr], a.T.astype(np.float64) @ b[:, :nr], n_terms=kc)
    assert np.all(c[:, nr:] == -7.0)

    # fc_gemm_taps: row k of B at off[k], anywhere in a flat buffer
    flat = rng.standard_normal(kc * 3 * mr * nr + mr * nr).astype(dtype)
    off = rng.integers(0, flat.size - mr * nr + 1, size=kc).astype(np.intp)
    rows = np.stack([flat[o:o + nr] for o in off])
    m.micro_gemm_taps(a, flat, off, c)
    ab = a.T.astype(np.float64) @ rows
    assert_close(c[:, :nr], ab, n_terms=kc)
    # ... its epilogue: the bias added to each row, or the block added to C,
    # then max(., 0), NaN kept
    bias = rng.standard_normal(mr).astype(dtype)
    m.micro_gemm_taps(a, flat, off, c, bias)
    assert_close(c[:, :nr], ab + bias[:, None], n_terms=kc + 1)
    before = c[:, :nr].astype(np.float64)
    m.micro_gemm_taps(a, flat, off, c, bias, add=True)  # the bias is ignored
    assert_close(c[:, :nr], before + ab, n_terms=kc + 1)
    start = np.where(ab > 0, -2 * ab, 1.0).astype(dtype)  # sums of either sign
    c[:, :nr] = start
    c[0, 0] = np.nan
    m.micro_gemm_taps(a, flat, off, c, add=True, relu=True)
    want = np.maximum(start + ab, 0)
    want[0, 0] = np.nan
    assert_close(c[:, :nr], want, n_terms=kc + 1)
    assert np.all(c[:, nr:] == -7.0)
    m.micro_gemm_taps(a, flat, off, c, bias, relu=True)
    assert_close(c[:, :nr], np.maximum(ab + bias[:, None], 0), n_terms=kc + 1)

    # fc_gemm_row: column 0 of the panel against MR*NR columns at off[k]
    wide = np.stack([flat[o:o + mr * nr] for o in off])
    crow = np.empty(mr * nr, dtype)
    m.micro_gemm_row(np.ascontiguousarray(a), flat, off, crow)
    assert_close(crow, a[:, 0].astype(np.float64) @ wide, n_terms=kc)

    # fc_gemm_rows: rows of A read in place, 2 segments of kc values
    nseg, sstride = 2, kc + 4
    abuf = rng.standard_normal(4 * mr + sstride + kc).astype(dtype)
    aoff = (np.arange(mr)[::-1] * 4).astype(np.intp)
    bseg = rng.standard_normal((nseg * kc, nr)).astype(dtype)
    arows = np.stack([np.concatenate([abuf[o + s * sstride:o + s * sstride + kc]
                                      for s in range(nseg)]) for o in aoff])
    m.micro_gemm_rows(nseg, kc, sstride, abuf, aoff, bseg, c)
    assert_close(c[:, :nr], arows.astype(np.float64) @ bseg, n_terms=nseg * kc)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_register_transposes_match_numpy(isa, dtype, rng):
    # fc_transpose: a square of one vector's lanes (NR / 2), rows of both
    # operands strided; nothing past the square is written
    m = _build(isa)
    _, _, nr32, nr64 = m.ukernel()
    w = (nr32 if dtype == np.float32 else nr64) // 2
    s = rng.standard_normal((w, w + 3)).astype(dtype)
    d = np.full((w + 1, w + 5), -7.0, dtype)
    m.transpose_block(s, d)
    np.testing.assert_array_equal(d[:w, :w], s[:, :w].T)
    assert np.all(d[:w, w:] == -7.0) and np.all(d[w:] == -7.0)
    with pytest.raises(ValueError, match=r"Expected d of at least"):
        m.transpose_block(s, np.zeros((w, w - 1) if w > 1 else (0, 1), dtype))


@pytest.mark.parametrize("isa", ISAS)
def test_micro_kernel_entry_points_check_their_operands(isa):
    m = _build(isa)
    _, mr, nr, _ = m.ukernel()
    a = np.zeros((4, mr), np.float32)
    with pytest.raises(ValueError, match="Expected b of at least"):
        m.micro_gemm(a, np.zeros((4, nr - 1), np.float32), np.zeros((mr, nr), np.float32))
    with pytest.raises(ValueError, match="outside b"):
        m.micro_gemm_taps(a, np.zeros(nr, np.float32), np.array([0, 0, 0, 1], np.intp),
                          np.zeros((mr, nr), np.float32))
    with pytest.raises(ValueError, match="Expected itemsize"):
        m.micro_run(2, 16, 1, 1)


@pytest.mark.parametrize("isa", ISAS)
def test_benchmark_loops_count_their_flops(isa):
    m = _build(isa)
    _, mr, nr32, nr64 = m.ukernel()
    assert m.micro_run(4, 16, 3, 2) == 2 * mr * nr32 * 16 * 3 * 2
    assert m.fma_peak_run(8, 10, 1) == 2 * mr * nr64 * 10


def _run_harness(cc, flags, runner=()):
    if shutil.which(cc) is None:
        pytest.skip(f"{cc} is not installed")
    if runner and shutil.which(runner[0]) is None:
        pytest.skip(f"{runner[0]} is not installed")
    exe = Path(os.environ.get("TMPDIR", "/tmp")) / f"check_ukernels_{os.getpid()}_{abs(hash(tuple(flags)))}"
    cmd = [cc, "-O2", "-std=c99", "-Wall", "-Wextra", "-Werror", *flags, f"-I{INCLUDE}",
           str(HARNESS), "-o", str(exe), "-lm"]
    build = subprocess.run(cmd, capture_output=True, text=True)
    assert build.returncode == 0, " ".join(cmd) + "\n" + build.stderr
    try:
        run = subprocess.run([*runner, str(exe)], capture_output=True, text=True, timeout=300)
    finally:
        exe.unlink(missing_ok=True)
    assert run.returncode == 0 and run.stdout.rstrip().endswith(": ok"), run.stdout + run.stderr
    return run.stdout


X86_LAYERS = {
    "generic": ([], "sse2"),
    "avx2": (["-mavx2", "-mfma"], "avx2+fma"),
    "avx512": (["-mavx512f", "-mavx2", "-mfma"], "avx512f"),
}


@pytest.mark.parametrize("isa", ISAS)
def test_c_micro_kernels_x86(isa):
    if platform.machine().lower() not in ("x86_64", "amd64"):
        pytest.skip("not an x86-64 machine")
    if isa not in _config._supported_isas():
        pytest.skip(f"this CPU cannot run {isa} code")
    flags, name = X86_LAYERS[isa]
    assert _run_harness("cc", flags).startswith(name)


def test_c_micro_kernels_scalar_fallback():
    assert _run_harness("cc", ["-DFASTCONV_FORCE_SCALAR"]).startswith("scalar 6x2")


def test_c_micro_kernels_neon_under_qemu():
    out = _run_harness("aarch64-linux-gnu-gcc", ["-static"], runner=("qemu-aarch64",))
    assert out.startswith("neon 8x8")  # 32 registers: MR = 8


KERNELS = ("fc_gemm", "fc_gemm_taps", "fc_gemm_row", "fc_gemm_rows")
# a vector register stored to or loaded from the stack (AT&T syntax), through
# %rsp, or through %rbp where the function makes it the frame pointer (else
# %rbp is one more register, such as a pointer into C)
STACK_VECTOR = re.compile(r"%[xyz]mm\d+.*\(%rsp|\(%rsp[^)]*\).*%[xyz]mm\d+")
FRAME_VECTOR = re.compile(r"%[xyz]mm\d+.*\(%rbp|\(%rbp[^)]*\).*%[xyz]mm\d+")
FRAME_POINTER = re.compile(r"\bmov\s+%rsp,%rbp")


def _functions(path, objdump="objdump"):
    """{symbol: [instruction lines]} of objdump's disassembly of ``path``."""
    text = subprocess.run([objdump, "-d", "--no-show-raw-insn", str(path)],
                          capture_output=True, text=True, check=True).stdout
    functions, body = {}, None
    for line in text.splitlines():
        head = re.match(r"[0-9a-f]+ <([^>]+)>:$", line)
        if head:
            body = functions.setdefault(head[1], [])
        elif body is not None and line.strip():
            body.append(line)
    return functions


@pytest.mark.parametrize("isa", ISAS)
def test_micro_kernels_keep_their_vectors_in_registers(isa):
    """Every micro-kernel of every x86-64 build is its own function (never
    inlined: see _ukernel.h) with no vector register spilled to the stack.
    Inlined into the forward, the float64 AVX2 kernel spilled an accumulator
    in its inner loop and ran at half speed. Disassembly only, so the AVX-512
    build is checked on CPUs that cannot run it."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        pytest.skip("not an x86-64 machine")
    if shutil.which("objdump") is None:
        pytest.skip("objdump (binutils) is not installed")
    try:
        module = importlib.import_module(f"fastconv._kernels._conv_{isa}")
    except ImportError:
        pytest.skip(f"the {isa} build is not part of this installation")
    _assert_no_vector_spills(_functions(module.__file__), STACK_VECTOR, isa)


def _assert_no_vector_spills(functions, pattern, build):
    for name in (f"{k}_{s}" for k in KERNELS for s in ("f32", "f64")):
        # the function, or gcc's clones of it (name.constprop.0, name.isra.0)
        body = [line for symbol, lines in functions.items()
                if symbol == name or symbol.startswith(name + ".") for line in lines]
        assert body, f"{name} is not a function of the {build} build (inlined, or stripped)"
        patterns = [pattern]
        if any(FRAME_POINTER.search(line) for line in body):
            patterns.append(FRAME_VECTOR)
        spills = [line for line in body if any(p.search(line) for p in patterns)]
        assert not spills, f"{build} {name} moves vectors through the stack:\n" + "\n".join(spills)


# a q (128-bit) register stored to or loaded from the stack; the d8-d15 saves
# of the procedure call standard's prologue are 64-bit and not matched
STACK_VECTOR_AARCH64 = re.compile(r"\b(?:st|ld)(?:r|ur|p|np)\s+q\d+.*\[sp")


def test_neon_micro_kernels_keep_their_vectors_in_registers(tmp_path):
    """The NEON kernels as the aarch64 build compiles them (-O3), cross
    compiled and disassembled: no 128-bit register through the stack."""
    for tool in ("aarch64-linux-gnu-gcc", "aarch64-linux-gnu-objdump"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed")
    obj = tmp_path / "check_ukernels.o"
    subprocess.run(["aarch64-linux-gnu-gcc", "-O3", "-std=c99", f"-I{INCLUDE}", "-c",
                    str(HARNESS), "-o", str(obj)], check=True)
    _assert_no_vector_spills(_functions(obj, "aarch64-linux-gnu-objdump"),
                             STACK_VECTOR_AARCH64, "neon")
