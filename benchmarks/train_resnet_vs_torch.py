"""Train the digits ResNet (``python -m fastconv train --model resnet``) with
fastconv and with PyTorch, side by side: accuracy and speed.

The same recipe in both: scikit-learn's digits (the command's split),
``fastconv.models.resnet_small`` (BatchNorm, four stages of one BasicBlock)
and its PyTorch twin with torchvision's names (``benchmarks/torch_resnet.py``)
holding the same initial weights, the same batches in the same order
(``fastconv.train.batch_schedule``), Adam with the same cosine-decayed rate
per step and the same L2 weight decay (``fastconv.train.MODEL_RECIPES``), BatchNorm in training mode while training and in eval mode for the
test set, at the same thread count. Runs alternate (fastconv, torch, ...),
one pair per seed, with a pause between runs so that one OpenMP runtime's
spinning threads do not slow the other. The fastconv run is
``fastconv.train.train`` itself.

    python benchmarks/train_resnet_vs_torch.py                    # 3 seeds, 2 threads
    python benchmarks/train_resnet_vs_torch.py --seeds 1 --epochs 1
"""

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from torch_resnet import torch_resnet  # noqa: E402

import fastconv  # noqa: E402
from fastconv import train as T  # noqa: E402


def torch_twin(torch, model):
    """The PyTorch ResNet with ``model``'s weights and buffers, key for key."""
    tmodel = torch_resnet(torch, [len(getattr(model, f"layer{i}")) for i in range(1, 5)],
                          model.fc.out_features, model.conv1.in_channels,
                          model.conv1.out_channels, small_input=True)
    tmodel.load_state_dict({k: torch.from_numpy(np.asarray(v))
                            for k, v in model.state_dict().items()})
    return tmodel


def train_torch(torch, model, data, seed, epochs, batch_size, lr, lr_schedule, batch_order,
                eval_every, steps=None, weight_decay=0.0, **_):
    """``fastconv.train.train``'s loop in PyTorch; returns (test accuracy, train seconds)."""
    F = torch.nn.functional
    x, y = torch.from_numpy(data.x_train), torch.from_numpy(data.y_train)
    x_test, y_test = torch.from_numpy(data.x_test), torch.from_numpy(data.y_test)
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    per_epoch = math.ceil(len(x) / batch_size)
    total = steps if steps is not None else epochs * per_epoch
    schedule = list(T.batch_schedule(len(x), batch_size, total, batch_order, seed))
    seconds, step, acc = 0.0, 0, None
    for epoch, batches in enumerate(schedule, start=1):
        model.train()
        t0 = time.perf_counter()
        for idx in batches:
            if lr_schedule == "cosine":
                for group in opt.param_groups:
                    group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * step / total))
            i = torch.from_numpy(idx)
            loss = F.cross_entropy(model(x[i]), y[i])
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
        seconds += time.perf_counter() - t0
        if epoch % eval_every == 0 or epoch == len(schedule):
            model.eval()
            with torch.no_grad():
                acc = float((model(x_test).argmax(1) == y_test).float().mean())
    return acc, seconds


def compare(seeds, epochs, threads, log=print):
    import torch

    fastconv.set_num_threads(threads)
    torch.set_num_threads(threads)
    runs = []
    for seed in seeds:
        data = T.load_dataset("digits", seed=seed)
        recipe = T.recipe("digits", **T.MODEL_RECIPES.get("resnet", {}),
                          **({} if epochs is None else {"epochs": epochs}))
        for framework in ("fastconv", "torch"):
            time.sleep(0.2)
            model = T.build_model("resnet", data.input_shape, seed=seed)
            t0 = time.perf_counter()
            if framework == "fastconv":
                history = T.train(model, data, seed=seed, **recipe)
                acc, train_seconds = history["test_acc_final"], sum(history["epoch_time"])
            else:
                acc, train_seconds = train_torch(torch, torch_twin(torch, model), data, seed,
                                                 **recipe)
            seconds = time.perf_counter() - t0
            runs.append({"framework": framework, "seed": seed, "seconds": seconds,
                         "train_seconds": train_seconds, "test_acc": 100 * acc})
            if log:
                log(f"  {framework:<8} seed {seed}: {seconds:7.2f} s ({train_seconds:.2f} s "
                    f"in training steps), test acc {100 * acc:.2f}%")
    return runs


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--epochs", type=int, help="default: the recipe's")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", default="")
    args = p.parse_args(argv)
    import torch

    print(f"digits ResNet (fastconv.models.resnet_small), the train command's recipe, "
          f"{args.threads} threads; fastconv {fastconv.__version__}, torch {torch.__version__}")
    runs = compare(list(range(args.seeds)), args.epochs, args.threads)
    summary = {}
    for fw in ("fastconv", "torch"):
        rs = [r for r in runs if r["framework"] == fw]
        summary[fw] = {k: statistics.median(r[k] for r in rs)
                       for k in ("seconds", "train_seconds", "test_acc")}
        print(f"{fw:<9} median: {summary[fw]['seconds']:.2f} s per run, "
              f"{summary[fw]['train_seconds']:.2f} s training, "
              f"test acc {summary[fw]['test_acc']:.2f}%")
    print(f"torch / fastconv training time: "
          f"{summary['torch']['train_seconds'] / summary['fastconv']['train_seconds']:.2f} "
          f"(above 1: fastconv is faster)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"platform": platform.platform(), "threads": args.threads,
                       "summary": summary, "runs": runs}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
