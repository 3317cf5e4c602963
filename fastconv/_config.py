"""Thread count, ISA dispatch and build facts.

The thread count used by every kernel is decided here and nowhere else:

* ``set_num_threads(n)`` fixes it for fastconv (``None`` restores the default);
* otherwise it is the OpenMP runtime's ``omp_get_max_threads()``, read at each
  call, which honours ``OMP_NUM_THREADS`` and ``threadpoolctl.threadpool_limits``;
* in a child forked from a process whose kernels already ran on several
  threads, it is 1. GNU libgomp's thread pool does not survive ``fork`` and a
  parallel region in the child would hang (PyTorch makes the same choice).
  Use the "spawn" or "forkserver" start method for parallel children.

The convolution, pooling and normalisation kernels exist in several builds
of the same source (baseline, AVX2+FMA, AVX-512F on x86-64). The best one the CPU
supports is chosen at import; ``FASTCONV_ISA=generic|avx2|avx512`` forces one
(for testing).
"""

import functools
import importlib
import os
import platform
import sys

import numpy as np

from ._kernels import _openmp

__all__ = ["set_num_threads", "get_num_threads", "show_config"]

_user_threads = None
_pool_started = False  # a kernel ran on more than one thread in this process
_forked_child = False  # this process was forked after that


def _after_fork_in_child():
    global _forked_child
    _forked_child = _forked_child or _pool_started


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)

_ISA_ORDER = ("avx512", "avx2", "generic")


def set_num_threads(n):
    """Set the number of threads fastconv's kernels use; ``None`` resets it.

    Parameters
    ----------
    n : int >= 1 or None
        With ``None`` the thread count follows the OpenMP runtime default,
        which honours ``OMP_NUM_THREADS`` and ``threadpoolctl``.
    """
    global _user_threads
    if n is not None:
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
            raise TypeError(f"Expected n to be an int or None, got {n!r}")
        if n < 1:
            raise ValueError(f"Expected n >= 1, got {n}")
        n = int(n)
    _user_threads = n


def get_num_threads():
    """The number of threads the next kernel call will use."""
    global _pool_started
    if _forked_child:
        return 1
    n = _user_threads if _user_threads is not None else max(1, _openmp.omp_max_threads())
    if n > 1 and not _pool_started:
        _pool_started = True
    return n


def _supported_isas():
    features = _openmp.cpu_features()
    isas = ["generic"]
    if features["avx2_fma"]:
        isas.append("avx2")
    if features["avx512f"]:
        isas.append("avx512")
    return isas


def _load_kernels():
    """(isa, conv kernels, pool kernels, norm kernels) of the best build this CPU runs."""
    supported = _supported_isas()
    forced = os.environ.get("FASTCONV_ISA")
    if forced:
        if forced not in _ISA_ORDER:
            raise ImportError(
                f"Expected FASTCONV_ISA to be one of {_ISA_ORDER}, got {forced!r}"
            )
        if forced not in supported:
            raise ImportError(
                f"FASTCONV_ISA={forced} but this CPU supports only {supported}"
            )
        candidates = [forced]
    else:
        candidates = [isa for isa in _ISA_ORDER if isa in supported]
    for isa in candidates:
        try:
            return isa, *(importlib.import_module(f"fastconv._kernels._{kind}_{isa}")
                          for kind in ("conv", "pool", "norm"))
        except ImportError:  # variant not built on this platform
            continue
    raise ImportError("no build of fastconv's kernels could be loaded")


ISA, conv_kernels, pool_kernels, norm_kernels = _load_kernels()


@functools.cache
def blocking():
    """The blocking table of the build in use (MR, NR per itemsize, TP, KC, QT)."""
    return conv_kernels.blocking()


@functools.cache
def pool_blocking():
    """The pooling build's vector facts (lanes per itemsize, F64_INDEX_SIMD)."""
    return pool_kernels.blocking()


def micro_kernel():
    """The GEMM micro-kernel of the build in use: its vector ISA and MR x NR
    per dtype, e.g. ``'avx2+fma, 6x16 (float32), 6x8 (float64)'``."""
    isa, mr, nr32, nr64 = conv_kernels.ukernel()
    return f"{isa}, {mr}x{nr32} (float32), {mr}x{nr64} (float64)"


def _openmp_runtime():
    """Path of the OpenMP runtime library loaded in this process, if any."""
    if not _openmp.openmp_enabled():
        return None
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return "unknown (install threadpoolctl to see it)"
    for info in threadpool_info():
        if info.get("user_api") == "openmp":
            return f"{info['internal_api']} ({info['filepath']})"
    return "unknown"


def show_config():
    """Print the version, OpenMP status and runtime, threads, and ISA in use."""
    from . import __version__

    lines = [
        f"fastconv {__version__}",
        f"python: {sys.version.split()[0]}, numpy: {np.__version__}",
        f"platform: {platform.platform()} ({platform.machine()})",
        f"openmp: {'enabled' if _openmp.openmp_enabled() else 'DISABLED (serial build)'}",
        f"openmp runtime: {_openmp_runtime()}",
        f"threads: {get_num_threads()}"
        + (" (forked child: serial)" if _forked_child else
           " (set_num_threads)" if _user_threads is not None else " (OpenMP default)"),
        f"cpu features: {', '.join(_supported_isas())}",
        f"kernels: {ISA} build",
        f"micro-kernel: {micro_kernel()}",
        f"compiler: {_openmp.compiler_info()}",
    ]
    print("\n".join(lines))
