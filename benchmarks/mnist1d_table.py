"""The MNIST-1D table with fastconv's layers: test accuracy over several seeds.

Rows, after Greydanus (2020), "Scaling down deep learning" (MNIST-1D), whose
test accuracies are ``fastconv.train.PAPER_ACCURACY``: logistic regression,
the residual MLP, the CNN, and the CNN on samples whose 40 positions are
shuffled by one fixed permutation. Every run uses the paper's recipe (Adam,
lr 1e-2, batch 100, 8,000 steps, the same batch order every epoch) through
``fastconv.train.train``, on the
data the ``mnist1d`` package generates (4,000 train, 1,000 test). A run's
seed sets the initialisation, the batch order and, for the shuffled row, the
permutation.

    python benchmarks/mnist1d_table.py                       # 4 rows x 5 seeds, a few minutes
    python benchmarks/mnist1d_table.py --seeds 2 --steps 1000 --rows cnn mlp
    python benchmarks/mnist1d_table.py --json mnist1d_table.json --threads 2

Prints one line per run, then the table (paper figure, our median, min-max,
seconds per run) and writes the results as JSON.
"""

import argparse
import json
import platform
import statistics
import sys
import time

import fastconv
from fastconv import train as T

ROWS = {  # row: (model, shuffled)
    "logistic": ("logistic", False),
    "mlp": ("mlp", False),
    "cnn": ("cnn", False),
    "cnn shuffled": ("cnn", True),
}


def run_row(row, seeds, steps, data=None, log=print):
    """Train row ``row`` once per seed; returns a list of per-run dicts."""
    model_name, shuffled = ROWS[row]
    runs = []
    for seed in seeds:
        d = T.load_dataset("mnist1d", seed=seed, shuffle=True) if shuffled else data
        if d is None:
            d = data = T.load_dataset("mnist1d")
        model = T.build_model(model_name, d.input_shape, seed=seed)
        t0 = time.perf_counter()
        history = T.train(model, d, seed=seed, **T.recipe("mnist1d", steps=steps))
        seconds = time.perf_counter() - t0
        run = {"row": row, "seed": seed, "test_acc": 100 * history["test_acc_final"],
               "best_test_acc": 100 * max(history["test_acc"]), "seconds": seconds,
               "train_seconds": sum(history["epoch_time"])}
        runs.append(run)
        if log:
            log(f"  {row:<13} seed {seed}: test acc {run['test_acc']:5.1f}% "
                f"(best during training {run['best_test_acc']:5.1f}%), {seconds:5.1f} s")
    return runs


def summarise(runs):
    """Rows of the table: paper figure, median, min, max, median seconds."""
    table = []
    for row in dict.fromkeys(r["row"] for r in runs):
        accs = [r["test_acc"] for r in runs if r["row"] == row]
        secs = [r["seconds"] for r in runs if r["row"] == row]
        table.append({"row": row, "paper": T.PAPER_ACCURACY[row], "median": statistics.median(accs),
                      "min": min(accs), "max": max(accs), "runs": len(accs),
                      "seconds": statistics.median(secs)})
    return table


def format_table(table):
    lines = [f"{'row':<14}{'paper':>7}{'median':>9}{'min-max':>15}{'runs':>6}{'s/run':>8}"]
    for t in table:
        lines.append(f"{t['row']:<14}{t['paper']:>6.0f}%{t['median']:>8.1f}%"
                     f"{t['min']:>8.1f}-{t['max']:.1f}%{t['runs']:>6}{t['seconds']:>8.1f}")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", nargs="+", choices=list(ROWS), default=list(ROWS))
    p.add_argument("--seeds", type=int, default=5, help="seeds 0 .. SEEDS-1 (default 5)")
    p.add_argument("--steps", type=int, default=T.RECIPES["mnist1d"]["steps"])
    p.add_argument("--threads", type=int, help="fastconv.set_num_threads")
    p.add_argument("--json", default="mnist1d_table.json", help="output file ('' for none)")
    args = p.parse_args(argv)
    if args.threads:
        fastconv.set_num_threads(args.threads)
    seeds = list(range(args.seeds))
    r = T.RECIPES["mnist1d"]
    print(f"MNIST-1D with fastconv {fastconv.__version__}: {args.steps} steps, batch "
          f"{r['batch_size']} ({r['batch_order']} order), Adam lr {r['lr']:g}, seeds {seeds}, "
          f"{fastconv.get_num_threads()} threads; final test accuracy")
    data = T.load_dataset("mnist1d")
    runs = []
    for row in args.rows:
        runs += run_row(row, seeds, args.steps, data=data)
    table = summarise(runs)
    print("\n" + format_table(table))
    print("\npaper: Greydanus (2020), MNIST-1D; ours: the accuracy after the last step, "
          "median over seeds; s/run: wall time of one run (training and evaluation)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"fastconv": fastconv.__version__, "platform": platform.platform(),
                       "threads": fastconv.get_num_threads(), "steps": args.steps,
                       "seeds": seeds, "table": table, "runs": runs}, f, indent=1)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
