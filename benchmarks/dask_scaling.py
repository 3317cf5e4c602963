"""Scale-out benchmark of fastconv.dask: scaling efficiency, Dask's costs, data parallel.

Prints the figures issue 16 asks for:

1. Dask's cost per task and per byte moved between workers, on the cluster;
2. the planner's default task size for the benchmark's convolution;
3. **scaling efficiency** of a large conv2d forward, and of forward + backward
   (input and weight gradients): one process with ``W*T`` OpenMP threads
   against a ``W``-worker x ``T``-thread LocalCluster on the same cores,
   ``efficiency = t_single / t_cluster`` (target >= 85%);
4. data-parallel training of the MNIST-1D CNN (``fastconv.train``'s model and
   recipe: Adam, lr 1e-2, batch 100, the same batch order each epoch) on the
   cluster against single-process training: test accuracy and time per step.

    python benchmarks/dask_scaling.py                         # the full run
    python benchmarks/dask_scaling.py --size 64 --repeats 1 --steps 20   # a check

Inputs are persisted on the workers before timing (the single process has
them in memory too); each run reduces its outputs to a sum so that nothing
large comes back. Medians of ``--repeats`` runs. MNIST-1D needs the
``mnist1d`` package (the ``demo`` extra); without it that part is skipped.
"""

import argparse
import math
import os
import statistics
import time

import numpy as np


def _median(fn, repeats):
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _task_and_byte_costs(client, repeats):
    import dask
    import dask.array as da

    n = 400
    parts = [dask.delayed(int, pure=False)(i) for i in range(n)]
    per_task = _median(lambda: client.compute(dask.delayed(sum)(parts)).result(),
                       repeats) / n
    # per byte: a 64 MiB array made on one worker, summed on the other
    workers = list(client.scheduler_info()["workers"])
    size = 64 * 2**20
    per_byte = float("nan")
    if len(workers) >= 2:
        def move():
            a = client.submit(np.ones, size // 8, workers=[workers[0]], pure=False)
            client.submit(np.sum, a, workers=[workers[1]], pure=False).result()
        local = _median(lambda: client.submit(
            lambda: np.ones(size // 8).sum(), workers=[workers[0]], pure=False).result(),
            repeats)
        per_byte = max(0.0, _median(move, repeats) - local) / size
    del da
    return per_task, per_byte


def _conv_case(args, client):
    import dask
    import dask.array as da
    from dask.distributed import wait

    import fastconv
    import fastconv.dask as fd
    from fastconv.dask import planner

    rng = np.random.default_rng(0)
    n, c, co, s = args.batch, args.channels, args.out_channels, args.size
    x = rng.standard_normal((n, c, s, s), dtype=np.float32)
    w = (rng.standard_normal((co, c, 3, 3)) * 0.1).astype(np.float32)
    cores = args.workers * args.threads
    plan = planner.plan_conv(x.shape, w.shape, padding=1)
    print(f"planner default for conv2d {x.shape} * {w.shape}: {plan.describe()}")
    # the benchmark's own chunking: at least 2 tasks per core, whole samples
    per = max(1, n // (2 * cores))
    if n >= 2 * cores:
        plan = planner.plan_conv(x.shape, w.shape, padding=1, batch=per, outputs=(s, s))
    else:
        side = max(8, s // math.ceil(math.sqrt(2 * cores / n)))
        plan = planner.plan_conv(x.shape, w.shape, padding=1, batch=1, outputs=(side, side))
    print(f"benchmark chunks: {plan.describe()}")

    fastconv.set_num_threads(cores)
    gy = np.ones(fastconv.conv2d(x, w, padding=1).shape, np.float32)
    single_fwd = _median(lambda: fastconv.conv2d(x, w, padding=1).sum(dtype=np.float64),
                         args.repeats)

    def single_both():
        fastconv.conv2d(x, w, padding=1).sum(dtype=np.float64)
        fastconv.grad.conv2d_input(x.shape, w, gy, padding=1).sum(dtype=np.float64)
        fastconv.grad.conv2d_weight(x, w.shape, gy, padding=1)

    single_bwd = _median(single_both, args.repeats)
    fastconv.set_num_threads(None)

    xd = client.persist(da.from_array(x, chunks=plan.input_chunks()))
    y = fd.conv2d(xd, w, padding=1)
    gyd = client.persist(da.ones(y.shape, chunks=y.chunks, dtype=np.float32))
    wait([xd, gyd])
    cluster_fwd = _median(lambda: client.compute(y.sum(dtype=np.float64)).result(),
                          args.repeats)

    def cluster_both():
        dx = fd.grad.conv2d_input(x.shape, w, gyd, padding=1)
        dw = fd.grad.conv2d_weight(xd, w.shape, gyd, padding=1)
        client.compute([y.sum(dtype=np.float64), dx.sum(dtype=np.float64), dw], sync=True)

    cluster_bwd = _median(cluster_both, args.repeats)
    # exactness on the side
    got = client.compute(y[:1, :, : s // 2]).result()
    ref = fastconv.conv2d(x[:1], w, padding=1)[:, :, : s // 2]
    print(f"  check: max |diff| vs fastconv {float(np.abs(got - ref).max()):.1e}")
    flops = 2 * math.prod(y.shape) * c * 9
    for name, t1, tc, mult in (("conv2d forward", single_fwd, cluster_fwd, 1),
                               ("conv2d fwd+bwd", single_bwd, cluster_bwd, 3)):
        print(f"  {name:<16} one process {cores} threads {t1 * 1e3:9.1f} ms "
              f"({mult * flops / t1 / 1e9:6.1f} GFLOP/s)   cluster {args.workers}x{args.threads} "
              f"{tc * 1e3:9.1f} ms   scaling efficiency {t1 / tc:6.1%}")
    del dask
    return {"fwd": single_fwd / cluster_fwd, "fwd+bwd": single_bwd / cluster_bwd,
            "tasks": y.npartitions}


def _mnist1d(args, client):
    import dask.array as da

    import fastconv.dask as fd
    from fastconv import nn, optim
    from fastconv import train as T

    try:
        data = T.load_dataset("mnist1d")
    except (ImportError, SystemExit, ModuleNotFoundError) as exc:
        print(f"MNIST-1D skipped: {exc}")
        return None
    recipe = T.recipe("mnist1d")
    batch = recipe["batch_size"]
    shape = data.x_train.shape[1:]
    models = {k: T.build_model("cnn", shape, seed=0) for k in ("single", "dask")}
    opts = {k: optim.Adam(m.parameters(), lr=recipe["lr"]) for k, m in models.items()}
    losses = {k: nn.CrossEntropyLoss() for k in models}
    order = [idx for epoch in T.batch_schedule(len(data.x_train), batch, args.steps,
                                               recipe["batch_order"]) for idx in epoch]
    times = {"single": [], "dask": []}
    shard = math.ceil(batch / args.workers)
    for step, idx in enumerate(order):
        if step >= args.steps:
            break
        xb, yb = data.x_train[idx], data.y_train[idx]
        t0 = time.perf_counter()
        m, o, f = models["single"], opts["single"], losses["single"]
        f(m(xb), yb)
        m.backward(f.backward())
        o.step()
        o.zero_grad()
        times["single"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        fd.data_parallel_step(client, models["dask"], losses["dask"], opts["dask"],
                              da.from_array(xb, chunks=(shard,) + shape),
                              da.from_array(yb, chunks=shard))
        times["dask"].append(time.perf_counter() - t0)
    for k, m in models.items():
        _, acc = T.evaluate(m, data.x_test, data.y_test)
        print(f"  MNIST-1D CNN, {k:<6}: test accuracy {acc:6.1%} after {args.steps} steps, "
              f"{statistics.median(times[k]) * 1e3:7.1f} ms/step (median)")
    diff = max(float(np.abs(p.data - q.data).max()) for p, q in
               zip(models["single"].parameters(), models["dask"].parameters()))
    print(f"  largest weight difference single vs data parallel: {diff:.1e} (float32)")
    return times


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=1024)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--channels", type=int, default=32)
    p.add_argument("--out-channels", type=int, default=32)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--threads", type=int, default=1, help="threads per worker")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--steps", type=int, default=8000, help="MNIST-1D steps (0: skip)")
    args = p.parse_args(argv)

    import distributed

    import fastconv.dask as fd

    env = dict(os.environ)
    with distributed.LocalCluster(n_workers=args.workers, threads_per_worker=args.threads,
                                  processes=True, dashboard_address=":0") as cluster, \
            distributed.Client(cluster) as client:
        os.environ.clear()
        os.environ.update(env)  # the nanny's OMP_NUM_THREADS=1 is for the workers only
        fd.set_worker_threads(client, args.threads)
        per_task, per_byte = _task_and_byte_costs(client, args.repeats)
        print(f"Dask costs on this cluster: {per_task * 1e3:.2f} ms per task, "
              f"{per_byte * 1e9:.3f} s per GB moved between workers")
        result = _conv_case(args, client)
        if args.steps:
            _mnist1d(args, client)
    print(f"summary: scaling efficiency forward {result['fwd']:.1%}, "
          f"fwd+bwd {result['fwd+bwd']:.1%} ({result['tasks']} tasks)")
    return 0


if __name__ == "__main__":  # workers are spawned: the guard is needed
    raise SystemExit(main())
