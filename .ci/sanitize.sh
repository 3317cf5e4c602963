#!/usr/bin/env bash
# The sanitizer job: the kernels built with AddressSanitizer and
# UndefinedBehaviorSanitizer, the kernel tests and a bounded differential
# fuzz run under them, on every ISA build this CPU runs. Any report fails.
#
# Usage: .ci/sanitize.sh [FUZZ_SECONDS]   (default 120; 0 skips the fuzz run)
# Needs: gcc with libasan and libubsan, and a Python with numpy, Cython,
# setuptools, pytest and hypothesis (the [test] extra).
#
# * The build is a temporary copy of the tree, built in place with
#   CFLAGS/LDFLAGS=-fsanitize=address,undefined; setup.py's own flags (-O3,
#   -fopenmp, the ISA's) are kept, so the code under test is the shipped code.
#   The build must still be an OpenMP build (a sanitizer build once went
#   serial with only a warning): it is checked.
# * Python is not instrumented, so gcc's ASan runtime is preloaded (it must
#   come first), and libubsan with it.
# * Leaks are checked (detect_leaks=1) with two frames recorded per
#   allocation and the suppressions in .ci/lsan.supp: CPython and NumPy's
#   module initialisation leave objects unfreed at every exit, and a
#   suppression matches only malloc's direct caller, so a leak of the
#   kernels' own malloc is always reported. (With full stacks every leak
#   has Python frames, and suppressing them would hide the kernels' too.)
#   Memory errors keep their full stack; only "allocated by" is two frames.
# * Time budget, 2 cores: the build ~3-4 min; the kernel suite on the best
#   ISA build (~1 min), the ISA-dependent tests on the others (~0.5 min
#   each), the fuzz slice on the best (FUZZ_SECONDS). The job prints its time.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
FUZZ_SECONDS=${1:-120}
START=$SECONDS
SAN=$(mktemp -d)
trap 'rm -rf "$SAN"' EXIT

ASAN_LIB=$(gcc -print-file-name=libasan.so)
UBSAN_LIB=$(gcc -print-file-name=libubsan.so)
for lib in "$ASAN_LIB" "$UBSAN_LIB"; do
    [ -e "$lib" ] || { echo "sanitize.sh: gcc has no $lib" >&2; exit 1; }
done
FLAGS="-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer"

# -- the build, in a copy of the tree (tracked and new files, no built ones) ------
python - "$REPO" "$SAN/src" <<'EOF'
import os, shutil, subprocess, sys
repo, dest = sys.argv[1:]
names = subprocess.run(["git", "-C", repo, "ls-files", "-z", "--cached", "--others",
                        "--exclude-standard"], capture_output=True, check=True).stdout
for name in filter(None, names.split(b"\0")):
    src, dst = os.path.join(repo, os.fsdecode(name)), os.path.join(dest, os.fsdecode(name))
    if os.path.isfile(src) and not src.endswith((".so", ".pyd")):
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        shutil.copy2(src, dst)
EOF
cd "$SAN/src"
echo "building the kernels with $FLAGS"
if ! CC=gcc CFLAGS="$FLAGS" LDFLAGS="$FLAGS" FASTCONV_REQUIRE_OPENMP=1 \
        python setup.py -q build_ext --inplace -j 2 > "$SAN/build.log" 2>&1; then
    tail -40 "$SAN/build.log"; echo "sanitize.sh: the sanitizer build failed" >&2; exit 1
fi
echo "build: $((SECONDS - START)) s"

export LD_PRELOAD="$ASAN_LIB $UBSAN_LIB"
# allocator_may_return_null: a failed malloc is NULL (MemoryError), as without ASan
export ASAN_OPTIONS="halt_on_error=1:abort_on_error=0:detect_leaks=1:malloc_context_size=2:allocator_may_return_null=1:exitcode=86"
export LSAN_OPTIONS="suppressions=$REPO/.ci/lsan.supp:print_suppressions=0"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1:exitcode=87"
export PYTHONPATH="$SAN/src"
export PYTHONFAULTHANDLER=1

python - <<'EOF'
import fastconv
from fastconv._kernels import _conv_generic
assert fastconv.__file__.startswith(__import__("os").environ["PYTHONPATH"]), fastconv.__file__
assert fastconv._kernels._openmp.openmp_enabled(), "the sanitizer build went serial"
fastconv.show_config()
EOF

ISAS=$(python -c "from fastconv import _config; print(' '.join(_config._supported_isas()))")
BEST=${ISAS##* }
echo "ISA builds this CPU runs: $ISAS (the whole kernel suite on $BEST)"

# The kernel tests: everything but the build, packaging, demo, coexistence
# and micro-kernel tests (they compile and run their own programs, train, or
# import PyTorch: minutes under ASan, and no kernel code that the others do
# not run; the C micro-kernels run inside every convolution).
FULL=(tests --ignore=tests/test_build.py --ignore=tests/test_train.py --ignore=tests/test_bench.py
      --ignore=tests/test_docs.py --ignore=tests/test_coexistence.py --ignore=tests/test_ukernels.py)
# On the other builds: the tests that differ by ISA (every path, the
# convolutions and pooling against the reference, the loops at 1 and 3 threads).
SHORT=(tests/test_paths.py tests/test_conv.py tests/test_pool.py tests/test_reference.py)

run_pytest() {  # run_pytest ISA ARGS...: the tests on one ISA build, at 3 threads
    local isa=$1; shift
    local t0=$SECONDS
    echo "-- FASTCONV_ISA=$isa: pytest $*"
    # --capture=sys: a report written to fd 2 by a process that then halts is
    # not swallowed by pytest's file-descriptor capture
    FASTCONV_ISA=$isa OMP_NUM_THREADS=3 python -m pytest -p no:cacheprovider -q -x \
        --capture=sys -m "not slow" "$@"
    echo "   ($((SECONDS - t0)) s)"
}

cd "$SAN/src"
for isa in $ISAS; do
    if [ "$isa" = "$BEST" ]; then
        run_pytest "$isa" "${FULL[@]}"
    else
        run_pytest "$isa" "${SHORT[@]}"
    fi
done

if [ "$FUZZ_SECONDS" -gt 0 ]; then
    echo "-- differential fuzz, $FUZZ_SECONDS s, FASTCONV_ISA=$BEST"
    FASTCONV_ISA=$BEST python -m tests.fuzz --seconds "$FUZZ_SECONDS" --workers 2
fi
echo "sanitizer job: $((SECONDS - START)) s"
