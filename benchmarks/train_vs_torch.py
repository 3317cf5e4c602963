"""Train MNIST-1D's CNN with fastconv and with PyTorch, side by side.

The recipe is the paper's (Adam, lr 1e-2, batch 100, 8,000 steps, one batch
order for all epochs; ``ConvBase``: three Conv1d + ReLU, then Linear(125, 10)).
Both frameworks get the same data,
the same initial weights (PyTorch's copied from fastconv's, so the init scheme
is the same too), the same batches in the same order and the same evaluation
schedule (the test set every 10 epochs), in one process at the same thread
count (``fastconv.set_num_threads`` and ``torch.set_num_threads``). Runs
alternate (fastconv, torch, fastconv, torch, ...), one pair per seed, with a
pause of 0.1 s between runs so that one OpenMP runtime's spinning idle threads
do not slow the other. The fastconv run is ``fastconv.train.train`` itself.

PyTorch is optional: without it only the fastconv column is reported.

    python benchmarks/train_vs_torch.py                  # 3 seeds, 2 threads
    python benchmarks/train_vs_torch.py --seeds 5 --threads 1 --json vs_torch.json
    python benchmarks/train_vs_torch.py --profile        # where a fastconv step's time goes

``--profile`` times 2,000 fastconv training steps with wrappers around every
layer, the loss, the optimiser and every compiled kernel entry point
(perf_counter, about 0.1 us per call; a function-level profiler such as
cProfile distorts this workload several-fold, since it slows the Python side
between kernel calls), and prints the time per step spent in each.
"""

import argparse
import json
import platform
import statistics
import sys
import time
import types
from collections import defaultdict

import fastconv
from fastconv import nn, optim
from fastconv import train as T

RECIPE = T.RECIPES["mnist1d"]


def _torch():
    try:
        import torch
    except ImportError:
        return None
    return torch


def torch_model(torch, fastconv_model):
    """PyTorch's ConvBase with the fastconv model's weights (same layer indices)."""
    tnn = torch.nn
    model = tnn.Sequential(
        tnn.Conv1d(1, 25, 5, stride=2, padding=1), tnn.ReLU(),
        tnn.Conv1d(25, 25, 3, stride=2, padding=1), tnn.ReLU(),
        tnn.Conv1d(25, 25, 3, stride=2, padding=1), tnn.ReLU(),
        tnn.Flatten(), tnn.Linear(125, 10))
    model.load_state_dict({k: torch.from_numpy(v) for k, v in fastconv_model.state_dict().items()})
    return model


def _torch_evaluate(torch, model, x, y):
    with torch.no_grad():
        logits = model(x)
        return (float(torch.nn.functional.cross_entropy(logits, y)),
                float((logits.argmax(1) == y).float().mean()))


def train_torch(torch, model, data, seed, steps, batch_size, lr, batch_order, eval_every,
                **_):
    """The loop of ``fastconv.train.train`` in PyTorch: the same batches
    (``fastconv.train.batch_schedule``), the same per-step loss and accuracy
    bookkeeping, the same evaluations. Returns ``(final test accuracy, seconds
    of training steps)``."""
    F = torch.nn.functional
    x, y = torch.from_numpy(data.x_train), torch.from_numpy(data.y_train)
    x_test, y_test = torch.from_numpy(data.x_test), torch.from_numpy(data.y_test)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    schedule = list(T.batch_schedule(len(x), batch_size, steps, batch_order, seed))
    train_seconds, test_acc = 0.0, None
    model.train()
    for epoch, batches in enumerate(schedule, start=1):
        t0 = time.perf_counter()
        loss_sum, correct = 0.0, 0
        for idx in batches:
            i = torch.from_numpy(idx)
            xb, yb = x[i], y[i]
            logits = model(xb)
            loss = F.cross_entropy(logits, yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
            loss_sum += loss.item() * len(idx)
            correct += int((logits.argmax(1) == yb).sum())
        train_seconds += time.perf_counter() - t0
        if epoch % eval_every == 0 or epoch == len(schedule):
            model.eval()
            _, test_acc = _torch_evaluate(torch, model, x_test, y_test)
            model.train()
    return test_acc, train_seconds


def compare(seeds, steps, threads, log=print):
    """Alternate fastconv and PyTorch runs, one pair per seed; returns the runs."""
    torch = _torch()
    fastconv.set_num_threads(threads)
    if torch is not None:
        torch.set_num_threads(threads)
    data = T.load_dataset("mnist1d")
    runs = []
    for seed in seeds:
        for framework in ("fastconv", "torch") if torch is not None else ("fastconv",):
            time.sleep(0.1)
            model = T.build_model("cnn", data.input_shape, seed=seed)
            recipe = T.recipe("mnist1d", steps=steps)
            t0 = time.perf_counter()
            if framework == "fastconv":
                history = T.train(model, data, seed=seed, **recipe)
                acc, train_seconds = history["test_acc_final"], sum(history["epoch_time"])
            else:
                acc, train_seconds = train_torch(torch, torch_model(torch, model), data, seed,
                                                 **recipe)
            seconds = time.perf_counter() - t0
            runs.append({"framework": framework, "seed": seed, "seconds": seconds,
                         "train_seconds": train_seconds, "steps_per_s": steps / train_seconds,
                         "test_acc": 100 * acc})
            if log:
                log(f"  {framework:<8} seed {seed}: {seconds:6.2f} s "
                    f"({1e3 * train_seconds / steps:.3f} ms/step in training steps), "
                    f"test acc {100 * acc:.1f}%")
    return runs


def summarise(runs):
    out = {}
    for fw in dict.fromkeys(r["framework"] for r in runs):
        rs = [r for r in runs if r["framework"] == fw]
        out[fw] = {key: statistics.median(r[key] for r in rs)
                   for key in ("seconds", "train_seconds", "steps_per_s", "test_acc")}
        out[fw]["test_acc_range"] = (min(r["test_acc"] for r in rs),
                                     max(r["test_acc"] for r in rs))
    if "torch" in out:
        out["ratio_torch_over_fastconv"] = out["torch"]["seconds"] / out["fastconv"]["seconds"]
        pairs = [(r["seconds"], t["seconds"]) for r in runs for t in runs
                 if r["framework"] == "fastconv" and t["framework"] == "torch"
                 and r["seed"] == t["seed"]]
        out["ratio_per_seed_median"] = statistics.median(t / f for f, t in pairs)
    return out


# -- profile ------------------------------------------------------------------


def profile_fastconv(steps=2000, seed=0, data=None):
    """Time ``steps`` fastconv training steps, split by layer type, loss,
    optimiser and compiled kernel. Returns ``(us per step, {part: us per step},
    {part: calls per step})``.

    Kernel entry points are wrapped by swapping the kernel modules that
    ``fastconv.functional`` and ``fastconv.grad`` look up in ``_config`` at
    call time for namespaces of timed wrappers; they are restored afterwards.
    """
    from fastconv import _config

    acc, calls = defaultdict(float), defaultdict(int)
    clock = time.perf_counter

    def timed(f, key):
        def wrapper(*args, **kwargs):
            t0 = clock()
            out = f(*args, **kwargs)
            acc[key] += clock() - t0
            calls[key] += 1
            return out
        return wrapper

    def proxy(module):
        return types.SimpleNamespace(**{
            name: timed(getattr(module, name), "kernel " + name)
            for name in dir(module) if not name.startswith("_")
            and callable(getattr(module, name))})

    data = data if data is not None else T.load_dataset("mnist1d")
    model = T.build_model("cnn", data.input_shape, seed=seed)
    for layer in model:
        key = "layer " + type(layer).__name__
        layer.forward, layer.backward = timed(layer.forward, key), timed(layer.backward, key)
    opt = optim.Adam(model.parameters(), lr=RECIPE["lr"])
    opt.step = timed(opt.step, "Adam step")
    opt.zero_grad = timed(opt.zero_grad, "zero_grad")
    loss_fn = nn.CrossEntropyLoss()
    loss_fn.forward = timed(loss_fn.forward, "loss (forward + backward)")
    loss_fn.backward = timed(loss_fn.backward, "loss (forward + backward)")
    gen = T.rng(seed, "batches")
    batches = []
    while len(batches) < steps + 100:
        batches += T.epoch_batches(len(data.x_train), RECIPE["batch_size"], gen)
    saved = _config.conv_kernels, _config.pool_kernels
    _config.conv_kernels, _config.pool_kernels = (proxy(k) for k in saved)
    try:
        for idx in batches[:100]:  # warm up
            T._step(model, loss_fn, opt, data.x_train[idx], data.y_train[idx])
        acc.clear()
        calls.clear()
        t_start = clock()
        for idx in batches[100:]:
            t0 = clock()
            xb, yb = data.x_train[idx], data.y_train[idx]
            acc["batch indexing"] += clock() - t0
            t0 = clock()
            T._step(model, loss_fn, opt, xb, yb)
            acc["step (all)"] += clock() - t0
        total = clock() - t_start
    finally:
        _config.conv_kernels, _config.pool_kernels = saved
    n = len(batches) - 100
    per_step = {k: 1e6 * v / n for k, v in acc.items()}
    return 1e6 * total / n, per_step, {k: v / n for k, v in calls.items()}


def print_profile(total, parts, calls):
    kernels = sum(v for k, v in parts.items() if k.startswith("kernel"))
    conv_kernels = sum(v for k, v in parts.items() if k.startswith("kernel conv2d")
                       or k == "kernel bias_grad")
    conv_layers = parts.get("layer Conv1d", 0.0) + parts.get("layer Conv2d", 0.0)
    step = parts["step (all)"]
    accounted = sum(v for k, v in parts.items() if k.startswith("layer")) \
        + parts.get("Adam step", 0) + parts.get("zero_grad", 0) \
        + parts.get("loss (forward + backward)", 0)
    print(f"fastconv training step, MNIST-1D CNN, batch {RECIPE['batch_size']}, "
          f"{fastconv.get_num_threads()} threads: {total:.0f} us per step (instrumented)")
    for k, v in sorted(parts.items(), key=lambda kv: -kv[1]):
        if k == "step (all)":
            continue
        c = calls.get(k)
        per_call = f"{c:.0f} calls, {v / c:6.1f} us/call" if c else ""
        print(f"  {k:<34}{v:8.1f} us  {100 * v / step:5.1f}%   {per_call}")
    print(f"  {'-' * 34}")
    print(f"  {'all compiled kernels':<34}{kernels:8.1f} us  {100 * kernels / step:5.1f}%")
    print(f"  {'conv layers outside their kernels':<34}{conv_layers - conv_kernels:8.1f} us  "
          f"{100 * (conv_layers - conv_kernels) / step:5.1f}%   (validation, geometry, "
          f"allocation, dispatch, weight-grad partial sums)")
    print(f"  {'step outside layers/loss/optimiser':<34}{step - accounted:8.1f} us  "
          f"{100 * (step - accounted) / step:5.1f}%   (Sequential, argmax, wrappers)")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, default=3, help="seeds 0 .. SEEDS-1 (default 3)")
    p.add_argument("--steps", type=int, default=RECIPE["steps"])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", default="", help="write the runs and summary to this file")
    p.add_argument("--profile", action="store_true",
                   help="only profile a fastconv training step")
    args = p.parse_args(argv)
    if args.profile:
        fastconv.set_num_threads(args.threads)
        print_profile(*profile_fastconv())
        return 0
    torch = _torch()
    print(f"MNIST-1D CNN, {args.steps} steps of batch {RECIPE['batch_size']} "
          f"({RECIPE['batch_order']} order), Adam lr "
          f"{RECIPE['lr']:g}, {args.threads} threads; fastconv {fastconv.__version__}"
          + (f", torch {torch.__version__}" if torch else " (torch not importable: skipped)"))
    runs = compare(list(range(args.seeds)), args.steps, args.threads)
    s = summarise(runs)
    print(f"\n{'':<10}{'s/run':>8}{'train s':>9}{'steps/s':>9}{'test acc':>10}  range")
    for fw in ("fastconv", "torch"):
        if fw in s:
            r = s[fw]
            print(f"{fw:<10}{r['seconds']:>8.2f}{r['train_seconds']:>9.2f}"
                  f"{r['steps_per_s']:>9.0f}{r['test_acc']:>9.1f}%  "
                  f"{r['test_acc_range'][0]:.1f}-{r['test_acc_range'][1]:.1f}%")
    if "torch" in s:
        print(f"\ntorch / fastconv wall time per run: {s['ratio_torch_over_fastconv']:.2f} "
              f"(ratio of the medians), {s['ratio_per_seed_median']:.2f} (median of the "
              f"per-seed ratios); above 1: fastconv is faster")
    print("medians over seeds; s/run: whole run (training and evaluation); train s: training "
          "steps only")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"platform": platform.platform(), "threads": args.threads,
                       "steps": args.steps, "fastconv": fastconv.__version__,
                       "torch": torch.__version__ if torch else None,
                       "summary": s, "runs": runs}, f, indent=1)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
