"""Render a results file of `python -m fastconv bench` as the README's table.

    python benchmarks/readme_table.py benchmarks/results-epyc-zen5-avx512.json [--threads 2]

One row per case and op, float32 and float64 side by side: time, rate, the
ratios against the NumPy reference and PyTorch, and the kernel paths.
"""

import argparse
import json


def table(result, threads):
    rows = [r for r in result["rows"] if r["threads"] == threads]
    by_key = {}
    for r in rows:
        by_key.setdefault((r["case"], r["kind"]), {})[r["dtype"]] = r
    op = {"conv": "fwd", "conv_fwdbwd": "fwd+bwd", "pool_max": "max fwd+bwd",
          "pool_avg": "avg fwd+bwd"}
    lines = [
        "| case | op | fp32 ms | fp32 rate | fp32 x numpy | fp32 x torch | fp64 ms | fp64 rate "
        "| fp64 x numpy | fp64 x torch | path |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for (case, kind), d in by_key.items():
        cells = [case, op[kind]]
        for dtype in ("float32", "float64"):
            r = d.get(dtype)
            if r is None:
                cells += ["-"] * 4
                continue
            vt = f"{r['vs_torch']:.2f}" if r["vs_torch"] else "-"
            cells += [f"{r['time_s'] * 1e3:.2f}", f"{r['rate']:.0f} {r['unit']}",
                      f"{r['vs_reference']:.2f}", vt]
        cells.append(next(iter(d.values())).get("path", ""))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    with open(args.results) as f:
        print(table(json.load(f), args.threads))


if __name__ == "__main__":
    main()
