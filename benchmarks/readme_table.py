"""Render a results file of `python -m fastconv bench` as the README's table.

    python benchmarks/readme_table.py benchmarks/results-epyc-zen5-avx512.json [--threads 2]
    python benchmarks/readme_table.py RESULTS --rst   # docs/guide/performance.rst's list-table

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
    header = ["case", "op", "fp32 ms", "fp32 rate", "fp32 x numpy", "fp32 x torch", "fp64 ms",
              "fp64 rate", "fp64 x numpy", "fp64 x torch", "path"]
    body = []
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
        cells.append(next(iter(d.values())).get("path", "") or "-")
        body.append(cells)
    return header, body


def markdown(header, body):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(cells) + " |" for cells in body])


def rst(header, body):
    lines = [".. list-table::", "   :header-rows: 1", ""]
    for cells in [header] + body:
        lines += [f"   * - {cells[0]}"] + [f"     - {c}" for c in cells[1:]]
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rst", action="store_true", help="a reStructuredText list-table")
    args = parser.parse_args()
    with open(args.results) as f:
        print((rst if args.rst else markdown)(*table(json.load(f), args.threads)))


if __name__ == "__main__":
    main()
