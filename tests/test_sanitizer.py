"""The sanitizer job (.ci/sanitize.sh) really detects errors: a deliberate
heap overflow, a signed overflow and a leak, compiled with the job's flags
into a shared object and called from Python with the job's preloaded
runtimes and options (its leak suppressions included), end the process
with the sanitizer's report; the same object without the bug runs clean
(so Python and NumPy's own leaks are suppressed)."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / ".ci" / "sanitize.sh"

BUGS = r"""
#include <limits.h>
#include <stdlib.h>

int heap_overflow(int n) {         /* writes one int past a malloc'd block */
    volatile int *a = malloc(n * sizeof(int));
    a[n] = 1;
    int r = a[0];
    free((void *)a);
    return r;
}

int signed_overflow(int x) {       /* INT_MAX + x, x > 0: undefined */
    return INT_MAX + x;
}

int leak(int n) {                  /* malloc'd here and never freed */
    volatile int *a = malloc(n * sizeof(int));
    a[0] = n;
    return a[0];
}

int fine(int n) {                  /* the same, in bounds */
    volatile int *a = malloc(n * sizeof(int));
    a[n - 1] = n;
    int r = a[n - 1];
    free((void *)a);
    return r;
}
"""


def _job_settings():
    """The job's compiler flags and runtime options, read from the script."""
    text = SCRIPT.read_text()
    flags = re.search(r'^FLAGS="([^"]+)"', text, re.M).group(1)
    opts = dict(re.findall(r'^export ((?:ASAN|UBSAN|LSAN)_OPTIONS)="([^"]+)"', text, re.M))
    root = str(SCRIPT.parents[1])
    return flags, {k: v.replace("$REPO", root) for k, v in opts.items()}


@pytest.fixture(scope="module")
def bugs(tmp_path_factory):
    if not SCRIPT.exists():
        pytest.skip(".ci/sanitize.sh is not beside the tests")
    gcc = shutil.which("gcc")
    if gcc is None or not sys.platform.startswith("linux"):
        pytest.skip("gcc on Linux is needed")
    clean = {k: v for k, v in os.environ.items()
             if k not in ("LD_PRELOAD", "ASAN_OPTIONS", "UBSAN_OPTIONS", "LSAN_OPTIONS")}
    libs = [subprocess.run([gcc, f"-print-file-name={lib}"], capture_output=True, text=True,
                           env=clean).stdout.strip() for lib in ("libasan.so", "libubsan.so")]
    if not all(os.path.isabs(lib) and os.path.exists(lib) for lib in libs):
        pytest.skip("gcc's ASan/UBSan runtimes are not installed")
    flags, opts = _job_settings()
    d = tmp_path_factory.mktemp("sanitizer")
    (d / "bugs.c").write_text(BUGS)
    # -O0 here: the bugs must survive the optimiser; the job's flags otherwise
    subprocess.run([gcc, "-shared", "-fPIC", "-O0", *flags.split(), str(d / "bugs.c"), "-o",
                    str(d / "bugs.so")], check=True, capture_output=True, env=clean)
    env = dict(clean, LD_PRELOAD=" ".join(libs), **opts)
    return d / "bugs.so", env


def _call(bugs, name, arg):
    so, env = bugs
    code = f"import ctypes; print(ctypes.CDLL({str(so)!r}).{name}({arg}))"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, timeout=120)


def test_a_heap_overflow_is_reported_and_fails(bugs):
    proc = _call(bugs, "heap_overflow", 8)
    assert proc.returncode != 0, proc.stdout
    assert "ERROR: AddressSanitizer: heap-buffer-overflow" in proc.stderr, proc.stderr[-3000:]
    assert "heap_overflow" in proc.stderr  # the report names the function


def test_undefined_behaviour_is_reported_and_fails(bugs):
    proc = _call(bugs, "signed_overflow", 1)
    assert proc.returncode != 0, proc.stdout
    assert "runtime error: signed integer overflow" in proc.stderr, proc.stderr[-3000:]


def test_a_leak_is_reported_at_exit_and_fails(bugs):
    """The job checks leaks with .ci/lsan.supp: a malloc that no suppression
    covers (its caller is not CPython's or NumPy's) is reported."""
    proc = _call(bugs, "leak", 8)
    assert proc.stdout.strip() == "8"
    assert proc.returncode != 0
    assert "ERROR: LeakSanitizer: detected memory leaks" in proc.stderr, proc.stderr[-3000:]
    assert "leak" in proc.stderr and "bugs.so" in proc.stderr


def test_the_same_code_without_the_bug_runs_clean(bugs):
    proc = _call(bugs, "fine", 8)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == "8"
    assert "Sanitizer" not in proc.stderr
