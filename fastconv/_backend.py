"""Which implementation the layers of :mod:`fastconv.nn` call.

``"fastconv"`` is the compiled kernels, ``"numpy"`` the pure-NumPy reference.
Both expose the same functional ops and the same ``grad`` namespace, so the
same network, data and training step can be timed on each.
"""

from types import SimpleNamespace

from . import functional, grad, reference

__all__ = ["use_backend", "get_backend", "ops"]

_BACKENDS = {
    "fastconv": SimpleNamespace(
        name="fastconv", grad=grad,
        **{name: getattr(functional, name) for name in functional.__all__},
    ),
    "numpy": SimpleNamespace(
        name="numpy", grad=reference.grad,
        **{name: getattr(reference, name) for name in functional.__all__},
    ),
}
_current = "fastconv"


class use_backend:
    """Select the backend of the layers: ``"fastconv"`` (default) or ``"numpy"``.

    Calling it switches globally; used as a context manager it switches back
    on exit::

        fastconv.use_backend("numpy")          # from now on
        with fastconv.use_backend("numpy"):    # for this block only
            ...

    The setting is process-wide, not per thread.

    Parameters
    ----------
    name : {"fastconv", "numpy"}
        ``"numpy"`` runs :mod:`fastconv.nn` on :mod:`fastconv.reference`.

    Examples
    --------
    >>> import numpy as np, fastconv
    >>> from fastconv import nn
    >>> layer = nn.Conv2d(1, 4, 3, rng=np.random.default_rng(0))
    >>> x = np.random.default_rng(1).standard_normal((2, 1, 6, 6)).astype(np.float32)
    >>> with fastconv.use_backend("numpy"):
    ...     slow = layer(x)
    ...     fastconv.get_backend()
    'numpy'
    >>> fastconv.get_backend(), np.allclose(layer(x), slow, atol=1e-5)
    ('fastconv', True)
    """

    def __init__(self, name):
        global _current
        if name not in _BACKENDS:
            raise ValueError(f"Expected backend to be one of {sorted(_BACKENDS)}, got {name!r}")
        self._previous = _current
        _current = name

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        global _current
        _current = self._previous
        return False


def get_backend():
    """The name of the backend in use.

    Examples
    --------
    >>> import fastconv
    >>> fastconv.get_backend()
    'fastconv'
    """
    return _current


def ops():
    """The functional ops (and their ``grad``) of the backend in use."""
    return _BACKENDS[_current]
