"""
The benchmark ratios as a bar chart
===================================

``python -m fastconv bench --save DIR`` writes one results file per machine
(``results-<cpu>-<isa>.json``). This example reads the AVX-512 file in
``benchmarks/`` and draws, for each case at 2 threads, how many times faster
fastconv's forward + backward pass (forward, input, weight and bias
gradients; pooling forward + backward) is than PyTorch and than the NumPy
reference: each bar is the other implementation's time divided by
fastconv's, so above the line at 1 fastconv is faster
(:doc:`/guide/performance` explains how the figures are measured).
"""

import json
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np


def results_file(name="results-epyc-zen5-avx512.json"):
    """benchmarks/<name> of the source tree this example lives in."""
    try:
        here = Path(__file__).resolve().parent
    except NameError:  # run interactively
        here = Path.cwd()
    for parent in (here, *here.parents):
        candidate = parent / "benchmarks" / name
        if candidate.exists():
            return candidate
    raise FileNotFoundError(f"benchmarks/{name} not found above {here}")


path = results_file()
result = json.loads(path.read_text())
print(f"{path.name}: {result['cpu']}, {result['isa']} build, "
      f"numpy {result['numpy']}, torch {result['torch']}")

rows = [r for r in result["rows"] if r["threads"] == 2 and r["kind"] != "conv"]
cases = list(dict.fromkeys((r["case"], r["kind"]) for r in rows))
label = {"conv_fwdbwd": "", "pool_max": " max", "pool_avg": " avg"}
names = [case + label[kind] for case, kind in cases]


def ratios(dtype, column):
    by_key = {(r["case"], r["kind"]): r for r in rows if r["dtype"] == dtype}
    return np.array([by_key[key][column] or np.nan for key in cases])


fig, axes = plt.subplots(2, 1, figsize=(10, 7), sharex=True)
pos = np.arange(len(cases))
for ax, (column, other) in zip(axes, (("vs_torch", "PyTorch"), ("vs_reference", "NumPy reference"))):
    for shift, dtype, color in ((-0.2, "float32", "tab:blue"), (0.2, "float64", "tab:orange")):
        ax.bar(pos + shift, ratios(dtype, column), width=0.4, color=color, label=dtype)
    ax.axhline(1.0, color="black", lw=1)
    ax.set_yscale("log")
    ax.set_ylabel(f"x {other}")
    ax.set_title(f"fastconv's speed-up over {other} (fwd+bwd, 2 threads)")
    ax.grid(True, axis="y", which="both", alpha=0.3)
    ax.legend(loc="upper left")
axes[1].set_xticks(pos, names, rotation=60, ha="right")
fig.tight_layout()
plt.show()
