"""The build's compiler probes see the flags the build uses (setup.py)."""

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

SETUP = Path(__file__).resolve().parents[1] / "setup.py"

PROBE = """
import sys
import setuptools  # noqa: F401  (provides distutils on Python >= 3.12)
src = open(sys.argv[1]).read()
ns = {"__name__": "probe"}
exec(src[:src.index("setup(ext_modules")], ns)  # the helpers, without running setup()
from distutils.ccompiler import new_compiler
from distutils.sysconfig import customize_compiler
cc = new_compiler()
customize_compiler(cc)
print(ns["_compiles"](cc, ns["OPENMP_TEST"], ["-fopenmp"], ["-fopenmp"]))
"""


def _sanitizer_links():
    cc = shutil.which("gcc")
    if cc is None:
        return False
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "t.c"
        src.write_text("int main(void) { return 0; }\n")
        return subprocess.run([cc, "-fsanitize=address,undefined", "-fopenmp", str(src), "-o",
                               str(Path(tmp) / "t")], capture_output=True).returncode == 0


@pytest.mark.skipif(not SETUP.exists(), reason="setup.py is not beside the tests")
def test_openmp_probe_links_with_the_sanitizer_flags():
    """With CFLAGS/LDFLAGS=-fsanitize=..., the OpenMP probe links as the
    extensions do. It linked as an executable, without LDFLAGS, failed on the
    sanitizer's symbols, and the build went serial with only a warning."""
    pytest.importorskip("Cython", reason="setup.py needs Cython (the [test] extra has it)")
    pytest.importorskip("setuptools")
    if not _sanitizer_links():
        pytest.skip("gcc with OpenMP and the ASan/UBSan runtimes is not installed")
    flags = "-fsanitize=address,undefined"
    env = dict(os.environ, CC="gcc", CFLAGS=flags, LDFLAGS=flags)
    proc = subprocess.run([sys.executable, "-c", PROBE, str(SETUP)], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "True", proc.stdout + proc.stderr
