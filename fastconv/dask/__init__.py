"""fastconv on Dask: ops and gradients on chunked arrays, data-parallel training.

Needs the ``dask`` extra (``pip install "fastconv[dask]"``: ``dask[array]``
and ``distributed``). ``import fastconv`` never imports dask; this package
imports it on first use of an op, so :mod:`fastconv.dask.planner` (plain
arithmetic) works without it.

* ``conv1d``, ``conv2d``, ``conv_transpose1d``, ``conv_transpose2d``,
  ``max_pool1d``, ``max_pool2d``, ``avg_pool1d``, ``avg_pool2d``: the
  functional ops with a dask array input and NumPy weights, returning dask arrays;
* :mod:`fastconv.dask.grad`: their gradients, mirroring :mod:`fastconv.grad`;
* :mod:`fastconv.dask.planner`: halos, aligned chunk boundaries, smallest
  legal chunks and default task sizes;
* :func:`set_worker_threads`, :func:`data_parallel_step`: a dask.distributed cluster.
"""

import importlib

__all__ = [
    "conv1d", "conv2d", "conv_transpose1d", "conv_transpose2d",
    "max_pool1d", "max_pool2d", "avg_pool1d", "avg_pool2d",
    "grad", "planner", "set_worker_threads", "data_parallel_step",
]

_OPS = {name: "._ops" for name in __all__[:8]}
_OPS.update(set_worker_threads="._train", data_parallel_step="._train")


def _require_dask():
    try:
        import dask.array  # noqa: F401
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "fastconv.dask needs dask: pip install \"fastconv[dask]\" "
            "(dask[array] and distributed)") from exc


def __getattr__(name):
    if name in ("grad", "planner"):
        if name == "grad":
            _require_dask()
        return importlib.import_module(f".{name}", __name__)
    if name in _OPS:
        _require_dask()
        value = getattr(importlib.import_module(_OPS[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
