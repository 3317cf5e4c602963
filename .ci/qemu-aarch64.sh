#!/usr/bin/env bash
# The aarch64 job: fastconv cross-built for arm64 (its generic build, which
# on aarch64 is the NEON one) and its test suite run by Debian's arm64
# python3 and NumPy under qemu-user. Any failure fails the job.
#
# Usage: .ci/qemu-aarch64.sh [PYTEST_ARGS...]   (default: the suite as below)
# Needs: root and apt (Debian x86-64). It installs what is missing:
# debootstrap, qemu-user, gcc-aarch64-linux-gnu, python3-venv; and Cython
# and setuptools from PyPI into a virtual environment of its own. All it
# makes is in one temporary directory, removed at exit: nothing is cached.
#
# * The arm64 root is Debian bookworm (python3 3.11, numpy 1.24, pytest 7.2,
#   hypothesis, threadpoolctl), made by `debootstrap --foreign`: its first
#   stage fetches the packages (checked against the host's Debian keyring)
#   and unpacks the essential ones without running arm64 code. Its second
#   stage cannot run here: it chroots to run the packages' maintainer
#   scripts, and a chroot can exec arm64 programs only through binfmt_misc.
#   So the job unpacks the other packages the first stage fetched (the
#   root's debootstrap/base: python3, numpy, pytest and their dependencies)
#   as the second stage's dpkg would, keeping the merged-/usr links, and
#   does the one thing of the maintainer scripts that the tests need:
#   libblas.so.3 and liblapack.so.3, update-alternatives links, for NumPy.
# * The build is a temporary copy of the tree (tracked and new files, no
#   built ones), built by setup.py itself, so the sources and flags are the
#   shipped ones: Cython runs on the host (the C it writes is portable), and
#   setuptools compiles with the settings of the root's Python
#   (_PYTHON_SYSCONFIGDATA_NAME: the compiler aarch64-linux-gnu-gcc, the
#   suffix .cpython-311-aarch64-linux-gnu.so) against the root's Python
#   headers, with the cross compiler's libgomp; FASTCONV_REQUIRE_OPENMP=1, so
#   it must be an OpenMP build. setup.py picks its ISA variants by
#   platform.machine(), the host's: the driver answers "aarch64", so the
#   build has what a native arm64 build has (_openmp and the generic conv,
#   pool and norm modules). `file` must call each an aarch64 ELF.
# * The tests run under qemu-aarch64 with the root as its library prefix,
#   through a launcher in the root (usr/bin/python3-qemu) that is also
#   sys.executable, so that the tests' own Python subprocesses run under
#   qemu too. FASTCONV_ISA=generic and OMP_NUM_THREADS=3, as the sanitizer
#   job; the tests with the n_threads fixture run at 1 and 3 threads.
#   PyTorch, Dask and scikit-learn have no place in the root: those tests
#   skip, as does tests/test_build.py (no Cython 3 in bookworm).
# * What runs: the whole suite but two files that test the host process
#   rather than the kernels, and cannot work under qemu-user:
#   tests/test_faults.py (RLIMIT_AS does not bound an emulated process's
#   allocations, and its malloc shim is built by the host's gcc for x86-64)
#   and tests/test_sanitizer.py (the host's libasan and libubsan). Both run
#   on x86-64 in sections 1-4 of .ci/run.
# * Time, 2 cores: the root ~30 s, the build 20-45 s, the tests ~3 min, ~4
#   min in all (with the two files, `.ci/qemu-aarch64.sh tests`: ~5.5 min
#   of tests). It prints its time.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
START=$SECONDS
SUITE=bookworm
Q=$(mktemp -d)
trap 'rm -rf "$Q"' EXIT
ROOT=$Q/root
step() { printf -- '-- %s (%d s)\n' "$*" "$((SECONDS - START))"; }

DEFAULT=(tests --ignore=tests/test_faults.py --ignore=tests/test_sanitizer.py)
if [ $# -gt 0 ]; then TESTS=("$@"); else TESTS=("${DEFAULT[@]}"); fi

# -- host tools ---------------------------------------------------------------------
missing=()
command -v debootstrap >/dev/null || missing+=(debootstrap)
command -v qemu-aarch64 >/dev/null || missing+=(qemu-user)
command -v aarch64-linux-gnu-gcc >/dev/null || missing+=(gcc-aarch64-linux-gnu)
command -v file >/dev/null || missing+=(file)
command -v python3 >/dev/null || missing+=(python3)
python3 -c "import ensurepip, venv" 2>/dev/null || missing+=(python3-venv)
if [ ${#missing[@]} -gt 0 ]; then
    step "apt-get install ${missing[*]}"
    install() {
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
    }
    install > "$Q/apt.log" 2>&1 || install > "$Q/apt.log" 2>&1 \
        || { tail -20 "$Q/apt.log"; echo "qemu-aarch64.sh: could not install ${missing[*]}" >&2; exit 1; }
fi
aarch64-linux-gnu-gcc --version | head -1
qemu-aarch64 --version | head -1
debootstrap --version

# -- the arm64 root -----------------------------------------------------------------
# The host's own Debian archive (the one its apt lists for its release), else
# debootstrap's default.
# shellcheck disable=SC1091
CODENAME=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
# shellcheck disable=SC2016  # $(RELEASE), $(REPO_URI): apt-get's fields
MIRROR=$(apt-get indextargets --format '$(RELEASE) $(REPO_URI)' 'Identifier: Packages' 2>/dev/null \
         | awk -v r="$CODENAME" '$1 == r {print $2; exit}')
PACKAGES=python3,python3-numpy,python3-pytest,python3-hypothesis,python3-threadpoolctl,libgomp1,libpython3.11-dev
step "debootstrap --foreign --arch=arm64 --variant=minbase --include=$PACKAGES $SUITE ${MIRROR:-(default mirror)}"
make_root() {
    rm -rf "$ROOT"
    debootstrap --foreign --arch=arm64 --variant=minbase --include="$PACKAGES" \
        "$SUITE" "$ROOT" ${MIRROR:+"$MIRROR"}
}
make_root > "$Q/debootstrap.log" 2>&1 || make_root > "$Q/debootstrap.log" 2>&1 \
    || { tail -30 "$Q/debootstrap.log"; echo "qemu-aarch64.sh: debootstrap failed" >&2; exit 1; }
step "unpacking the $(wc -w < "$ROOT/debootstrap/base") packages of the second stage"
# shellcheck disable=SC2013  # the file is one line of names
for pkg in $(cat "$ROOT/debootstrap/base"); do
    deb=$(awk -v p="$pkg" '$1 == p {print $2}' "$ROOT/debootstrap/debpaths")
    [ -n "$deb" ] || { echo "qemu-aarch64.sh: debootstrap fetched no $pkg" >&2; exit 1; }
    # --keep-directory-symlink: bin, lib, sbin stay links into usr (merged /usr)
    dpkg-deb --fsys-tarfile "$ROOT$deb" | tar -x --keep-directory-symlink -C "$ROOT"
done
for lib in blas/libblas.so.3 lapack/liblapack.so.3; do  # libblas3's and liblapack3's alternatives
    ln -sf "$lib" "$ROOT/usr/lib/aarch64-linux-gnu/${lib#*/}"
done
# The launcher: its own path is sys.executable (qemu's -0), and the root's
# Python finds its prefix from it.
cat > "$ROOT/usr/bin/python3-qemu" <<EOF
#!/bin/sh
exec qemu-aarch64 -L "$ROOT" -0 "\$0" "$ROOT/usr/bin/python3.11" "\$@"
EOF
chmod +x "$ROOT/usr/bin/python3-qemu"
PY=$ROOT/usr/bin/python3-qemu
# byte code: written on first import (the root's was never compiled), and
# the tests' subprocesses then start in about 1 s instead of 4
unset PYTHONDONTWRITEBYTECODE
"$PY" -c "import sys, platform, numpy, pytest; print('arm64 root:', platform.machine(), 'python', sys.version.split()[0], 'numpy', numpy.__version__, 'pytest', pytest.__version__)"

# -- the cross build ------------------------------------------------------------------
step "the host's Cython and setuptools (a virtual environment)"
python3 -m venv "$Q/venv"
"$Q/venv/bin/python" -m pip install --quiet --upgrade pip
"$Q/venv/bin/python" -m pip install --quiet "Cython>=3.0" "setuptools>=77"
"$Q/venv/bin/python" -c "import Cython, setuptools; print('Cython', Cython.__version__, 'setuptools', setuptools.__version__)"

mkdir "$Q/src" "$Q/sysconfig"
(cd "$REPO" && git ls-files -z --cached --others --exclude-standard) \
    | tar -C "$REPO" --null --no-recursion --ignore-failed-read --exclude='*.so' -T - -cf - 2>/dev/null \
    | tar -C "$Q/src" -xf -
SYSCONFIG=_sysconfigdata__aarch64-linux-gnu
cp "$ROOT/usr/lib/python3.11/$SYSCONFIG.py" "$Q/sysconfig/"
# Python.h (and its pyconfig.h) from the root, then the multiarch pyconfig.h
# that one includes; the C library's headers stay the cross compiler's
mkdir -p "$Q/include/aarch64-linux-gnu"
ln -s "$ROOT/usr/include/aarch64-linux-gnu/python3.11" "$Q/include/aarch64-linux-gnu/"
step "setup.py build_ext --inplace for aarch64 (aarch64-linux-gnu-gcc, $SYSCONFIG)"
cd "$Q/src"
if ! _PYTHON_SYSCONFIGDATA_NAME=$SYSCONFIG PYTHONPATH="$Q/sysconfig" FASTCONV_REQUIRE_OPENMP=1 \
        "$Q/venv/bin/python" - "$ROOT/usr/include/python3.11" "$Q/include" \
        > "$Q/build.log" 2>&1 <<'EOF'
import platform, runpy, sys
platform.machine = lambda: "aarch64"  # setup.py's ISA variants are the target's
sys.argv = ["setup.py", "build_ext", "--inplace", "-I", ":".join(sys.argv[1:])]
runpy.run_path("setup.py", run_name="__main__")
EOF
then
    tail -40 "$Q/build.log"; echo "qemu-aarch64.sh: the aarch64 build failed" >&2; exit 1
fi
grep -m1 -F "_conv_generic.c -o" "$Q/build.log"  # one compile command, as it ran
step "the extensions"
EXT_SUFFIX=$("$PY" -c "import sysconfig; print(sysconfig.get_config_var('EXT_SUFFIX'))")
for name in _openmp _conv_generic _pool_generic _norm_generic; do
    so=fastconv/_kernels/$name$EXT_SUFFIX
    [ -f "$so" ] || { echo "qemu-aarch64.sh: the build made no $so" >&2; ls fastconv/_kernels/ >&2; exit 1; }
    file "$so" | tee -a "$Q/file.txt"
done
[ "$(grep -c ': ELF 64-bit LSB shared object, ARM aarch64' "$Q/file.txt")" = 4 ] \
    || { echo "qemu-aarch64.sh: not all four are aarch64 ELF" >&2; exit 1; }
[ "$(find fastconv -name '*.so' | wc -l)" = 4 ] \
    || { echo "qemu-aarch64.sh: extensions besides the four:" >&2; find fastconv -name '*.so' >&2; exit 1; }

# -- the tests under qemu ------------------------------------------------------------
export FASTCONV_ISA=generic OMP_NUM_THREADS=3 PYTHONFAULTHANDLER=1 PYTHONPATH=$Q/src
"$PY" - <<'EOF' | tee "$Q/config.txt"
import os, fastconv
assert fastconv.__file__.startswith(os.getcwd()), fastconv.__file__
fastconv.show_config()
EOF
grep -q "openmp: enabled" "$Q/config.txt" || { echo "qemu-aarch64.sh: not an OpenMP build" >&2; exit 1; }
grep -q "micro-kernel: neon" "$Q/config.txt" \
    || { echo "qemu-aarch64.sh: not the NEON micro-kernels" >&2; exit 1; }
step "under qemu-aarch64, FASTCONV_ISA=$FASTCONV_ISA OMP_NUM_THREADS=$OMP_NUM_THREADS: python3 -m pytest -p no:cacheprovider -q ${TESTS[*]}"
T0=$SECONDS
# (bounded: a hang under emulation must not take the rest of CI's time)
timeout -k 60 1800 "$PY" -m pytest -p no:cacheprovider -q "${TESTS[@]}"
echo "tests: $((SECONDS - T0)) s"
echo "aarch64 job: $((SECONDS - START)) s"
