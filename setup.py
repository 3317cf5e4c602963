"""Build the Cython kernels, with OpenMP when the compiler has it.

* OpenMP is detected by compiling a small test program. Without it the
  extensions are built serial (correct, one thread) and a warning says so;
  ``FASTCONV_REQUIRE_OPENMP=1`` turns that case into a build error, and
  ``FASTCONV_DISABLE_OPENMP=1`` builds serial on purpose.
* On x86-64 the convolution, pooling and normalisation kernels are compiled
  three times, for the baseline ISA, for AVX2+FMA and for AVX-512F; fastconv
  picks one at import time from the CPU's features. No build ever uses
  ``-march=native``.
"""

import glob
import os
import platform
import sys
import tempfile
import textwrap
import warnings

from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

KERNELS = "fastconv/_kernels"

CYTHON_DIRECTIVES = {
    "language_level": 3,
    "boundscheck": False,
    "wraparound": False,
    "cdivision": True,
    "initializedcheck": False,
}

OPENMP_TEST = textwrap.dedent(
    """
    #include <omp.h>
    int main(void) {
        int n = 0;
        #pragma omp parallel reduction(+:n)
        n += omp_get_thread_num() >= 0;
        return n > 0 ? 0 : 1;
    }
    """
)


def _is_x86_64():
    return platform.machine().lower() in ("x86_64", "amd64")


def _openmp_flags(compiler_type):
    """(compile_args, link_args) that enable OpenMP for this compiler."""
    if compiler_type == "msvc":
        return ["/openmp"], []
    if sys.platform == "darwin":
        # Apple clang needs libomp from Homebrew or conda; its prefix goes in
        # CPPFLAGS/LDFLAGS (cibuildwheel sets them).
        return ["-Xpreprocessor", "-fopenmp"], ["-lomp"]
    return ["-fopenmp"], ["-fopenmp"]


def _isa_flags(compiler_type, variant):
    """Flags for an extension named ..._avx2 or ..._avx512; none for the rest."""
    if variant not in ("avx2", "avx512"):
        return []
    if compiler_type == "msvc":
        return {"avx2": ["/arch:AVX2"], "avx512": ["/arch:AVX512"]}[variant]
    return {"avx2": ["-mavx2", "-mfma"], "avx512": ["-mavx512f", "-mavx2", "-mfma"]}[variant]


def _compiles(compiler, source, compile_args, link_args=()):
    """Whether `source` compiles and links with these flags, as an extension
    is compiled and linked: a shared object, by the same compiler and linker
    commands, so that CFLAGS and LDFLAGS (a sanitizer's, say) apply to the
    test as they do to the build. (Linked as an executable, it lacked
    LDFLAGS, and a sanitizer build silently went serial.)"""
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "test.c")
        with open(src, "w") as f:
            f.write(source)
        try:
            objects = compiler.compile([src], output_dir=tmp, extra_postargs=compile_args)
            compiler.link_shared_object(
                objects, os.path.join(tmp, "test" + (compiler.shared_lib_extension or ".so")),
                extra_postargs=list(link_args),
            )
        except Exception:
            return False
    return True


class BuildExt(build_ext):
    """build_ext that adds OpenMP and per-variant ISA flags for the compiler in use."""

    def finalize_options(self):
        super().finalize_options()
        if self.parallel is None:  # pip and build pass no -j: one job per core
            self.parallel = True

    def build_extensions(self):
        ctype = self.compiler.compiler_type
        compile_args, link_args = _openmp_flags(ctype)
        disabled = os.environ.get("FASTCONV_DISABLE_OPENMP") == "1"
        use_openmp = not disabled and _compiles(
            self.compiler, OPENMP_TEST, compile_args, link_args
        )
        if not use_openmp:
            reason = (
                "OpenMP disabled by FASTCONV_DISABLE_OPENMP=1"
                if disabled
                else f"this compiler cannot build OpenMP code with {compile_args} {link_args}"
            )
            if os.environ.get("FASTCONV_REQUIRE_OPENMP") == "1":
                raise RuntimeError(f"FASTCONV_REQUIRE_OPENMP=1 but {reason}.")
            message = (
                f"fastconv: {reason}; building a correct but SERIAL extension (one "
                "thread). Use an OpenMP-capable compiler for parallel kernels."
            )
            # Both: pip shows the build's stderr with -v, and warnings go to
            # front ends that collect them.
            print(f"WARNING: {message}", file=sys.stderr)
            warnings.warn(message, stacklevel=1)
            compile_args, link_args = [], []
        # -g0: no debug info in shipped binaries (Python's own CFLAGS carry -g)
        opt = ["/O2"] if ctype == "msvc" else ["-O3", "-g0"]
        # gcc's unroll-and-jam turns the GEMM micro-kernel's loop over taps
        # into scalar code (gcc 12); other compilers lack the flag.
        if ctype != "msvc" and _compiles(
            self.compiler, "int main(void) { return 0; }\n",
            ["-Werror", "-fno-loop-unroll-and-jam"],
        ):
            opt.append("-fno-loop-unroll-and-jam")
        for ext in self.extensions:
            variant = ext.name.rsplit("_", 1)[-1]
            ext.extra_compile_args = opt + compile_args + _isa_flags(ctype, variant)
            ext.extra_link_args = list(link_args)
        super().build_extensions()


def _extensions():
    isas = ["generic", "avx2", "avx512"] if _is_x86_64() else ["generic"]
    names = ["_openmp"] + [f"_{kind}_{isa}" for kind in ("conv", "pool", "norm")
                            for isa in isas]
    exts = [
        # depends: the C headers, which the micro-kernels include from one
        # another where Cython does not see it
        Extension(f"fastconv._kernels.{name}", [f"{KERNELS}/{name}.pyx"],
                  include_dirs=[KERNELS], depends=sorted(glob.glob(f"{KERNELS}/*.h")))
        for name in names
    ]
    return cythonize(exts, compiler_directives=CYTHON_DIRECTIVES, include_path=["."])


setup(ext_modules=_extensions(), cmdclass={"build_ext": BuildExt})
