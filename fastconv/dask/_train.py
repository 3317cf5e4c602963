"""fastconv on a dask.distributed cluster: worker threads and data-parallel steps."""

import copy

import dask
import dask.array as da
import numpy as np
from distributed.diagnostics.plugin import WorkerPlugin

__all__ = ["set_worker_threads", "data_parallel_step"]


class _Threads(WorkerPlugin):
    """A worker plugin: fastconv's thread count on every worker, restarted ones too."""

    name = "fastconv-threads"

    def __init__(self, n):
        self.n = n

    def setup(self, worker=None):
        _apply_threads(self.n)


def _apply_threads(n):
    import os

    import fastconv

    # LocalCluster's nanny sets OMP_NUM_THREADS=1 in its workers; fastconv's
    # own setting takes precedence over it (and is set for child libraries too)
    os.environ["OMP_NUM_THREADS"] = str(n)
    fastconv.set_num_threads(n)
    return fastconv.get_num_threads()


def set_worker_threads(client, n):
    """Set fastconv's OpenMP thread count on every worker of ``client``.

    It is registered as a worker plugin, so workers that join later (or are
    restarted after a crash or a memory kill) get it too.

    Parameters
    ----------
    client : distributed.Client
    n : int >= 1

    Returns
    -------
    dict
        ``{worker address: fastconv.get_num_threads()}`` after the change.

    Examples
    --------
    >>> from distributed import Client, LocalCluster  # doctest: +SKIP
    >>> with LocalCluster(n_workers=2, threads_per_worker=1) as cluster, \\
    ...         Client(cluster) as client:                        # doctest: +SKIP
    ...     sorted(set_worker_threads(client, 2).values())
    [2, 2]
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
        raise TypeError(f"Expected n to be an int, got {n!r}")
    if n < 1:
        raise ValueError(f"Expected n >= 1, got {n}")
    client.register_plugin(_Threads(int(n)), name=_Threads.name)
    return client.run(_apply_threads, int(n))


# -- data parallel ---------------------------------------------------------------


def _buffers(module, prefix=""):
    """``[(name, ndarray)]``: the module's ``named_buffers()`` if it has them, else
    those of its sub-modules (a container such as Sequential), recursively."""
    named = getattr(module, "named_buffers", None)
    if callable(named):
        return [(prefix + name, b) for name, b in named()]
    children = getattr(module, "_children", None)
    out = []
    for name, child in (children() if callable(children) else []):
        out += _buffers(child, f"{prefix}{name}.")
    return out


def _shard(model, loss_fn, xb, yb, n_total):
    """Forward and backward of one shard on a private copy of the model (tasks
    may share a worker's deserialised objects). The loss gradient is weighted
    by ``n_shard / n_total``, so that the shards' gradients sum to the
    full-batch mean-loss gradient."""
    model = copy.deepcopy(model)
    loss_fn = copy.deepcopy(loss_fn)
    model.zero_grad()
    weight = xb.shape[0] / n_total
    loss = loss_fn(model(xb), yb)
    model.backward(loss_fn.backward(weight))
    buffers = [(np.asarray(b) * weight if np.asarray(b).dtype.kind == "f" else np.asarray(b))
               for _, b in _buffers(model)]
    return {"loss": loss * weight, "grads": [p.grad for p in model.parameters()],
            "buffers": buffers}


def _sum(*parts):
    """Sum shard results: losses, gradients and weighted float buffers (integer
    buffers, such as a batch counter, are taken from the first shard)."""
    total = {"loss": sum(p["loss"] for p in parts),
             "grads": [g.copy() for g in parts[0]["grads"]],
             "buffers": [b.copy() for b in parts[0]["buffers"]]}
    for p in parts[1:]:
        for g, h in zip(total["grads"], p["grads"]):
            g += h
        for b, c in zip(total["buffers"], p["buffers"]):
            if b.dtype.kind == "f":
                b += c
    return total


def data_parallel_step(client, model, loss_fn, optimizer, x, y, *, split_every=8):
    """One data-parallel training step on a dask.distributed cluster.

    Each batch chunk of ``x`` and ``y`` runs the forward and backward of a
    copy of ``model`` (the current weights, sent with the step's graph) on a
    worker; the shard's loss gradient is weighted by ``n_shard / N`` so that
    the gradients sum to the full-batch mean-loss gradient. The gradients
    are summed in a tree on the workers (``split_every`` per add), written
    into the parameters' ``grad`` (replacing them, as ``zero_grad`` then
    ``backward`` would), and ``optimizer.step()`` runs on the client.

    Parameters
    ----------
    client : distributed.Client
    model : fastconv.nn.Module
        Any module; its parameters are updated in place.
    loss_fn : fastconv.nn.Module
        A mean loss such as ``CrossEntropyLoss`` or ``MSELoss``, whose
        ``backward(grad_output)`` scales the gradient.
    optimizer : fastconv.optim.Optimizer
        Over ``model.parameters()``.
    x, y : dask.array.Array
        Inputs and targets, chunked along the batch axis only (other axes
        are merged into one chunk); ``y`` is rechunked to ``x``'s batch chunks.

    Returns
    -------
    float
        The full-batch mean loss before the step.

    Notes
    -----
    Batch statistics under sharding (as PyTorch's DistributedDataParallel
    without SyncBatchNorm): a layer that normalises by batch statistics
    (BatchNorm) computes them **per shard**, so in training mode its
    outputs and gradients equal the full-batch step only when each shard
    holds the whole batch. Its running statistics: a module that exposes
    ``named_buffers()`` (``(name, ndarray)`` pairs) gets, after the step,
    the shard-size-weighted mean of the shards' updated float buffers (for
    a running mean: the update with the mean of the per-shard means, which
    is the full-batch mean; for a running variance: with the mean of the
    per-shard variances); integer buffers (a batch counter) come from the
    first shard. DDP instead keeps rank 0's buffers. Layers without batch
    statistics (convolutions, pooling, activations, Linear) give the
    full-batch step exactly, to rounding. Dropout draws its masks from the
    copy of the model's RNG that each shard receives: shards draw the same
    sequence.

    Fault tolerance: the shards are produced by tasks (never scattered), so
    a lost worker's shards and gradients are recomputed from their lineage.

    Examples
    --------
    >>> import numpy as np, dask.array as da
    >>> from distributed import Client, LocalCluster               # doctest: +SKIP
    >>> from fastconv import nn, optim
    >>> from fastconv.dask import data_parallel_step
    >>> model = nn.Sequential(nn.Conv1d(1, 4, 3, rng=np.random.default_rng(0)), nn.ReLU(),
    ...                       nn.Flatten(), nn.Linear(24, 2, rng=np.random.default_rng(1)))
    >>> opt = optim.SGD(model.parameters(), lr=0.1)
    >>> x = da.random.default_rng(0).standard_normal((32, 1, 8), chunks=(8, 1, 8))
    >>> y = da.zeros(32, dtype=int, chunks=8)
    >>> with LocalCluster(n_workers=2, threads_per_worker=1) as cluster, \\
    ...         Client(cluster) as client:                           # doctest: +SKIP
    ...     loss = data_parallel_step(client, model, nn.CrossEntropyLoss(), opt, x, y)
    """
    for name, a in (("x", x), ("y", y)):
        if not isinstance(a, da.Array):
            raise TypeError(f"Expected {name} to be a dask array, got {type(a).__name__}")
    if x.ndim < 1 or y.ndim < 1 or x.shape[0] != y.shape[0] or x.shape[0] == 0:
        raise ValueError(f"Expected x and y with the same non-zero batch size, got shapes "
                         f"{x.shape} and {y.shape}")
    x = x.rechunk((x.chunks[0],) + tuple(-1 for _ in x.shape[1:]))
    y = y.rechunk((x.chunks[0],) + tuple(-1 for _ in y.shape[1:]))
    n = x.shape[0]
    xs, ys = x.to_delayed().ravel(), y.to_delayed().ravel()
    # pure=False: a fresh key every step, so no worker reuses stale weights
    m = dask.delayed(model, pure=False, traverse=False)
    f = dask.delayed(loss_fn, pure=False, traverse=False)
    parts = [dask.delayed(_shard, pure=False)(m, f, xb, yb, n) for xb, yb in zip(xs, ys)]
    while len(parts) > 1:
        parts = [dask.delayed(_sum, pure=False)(*parts[i:i + split_every])
                 for i in range(0, len(parts), split_every)]
    total = client.compute(parts[0]).result()
    for p, g in zip(model.parameters(), total["grads"]):
        np.copyto(p.grad, g)
    for (_, b), new in zip(_buffers(model), total["buffers"]):
        np.copyto(b, new, casting="unsafe")
    optimizer.step()
    return float(total["loss"])
