"""Issue 33's evidence: a NAS-Bench-201 benchmark of real data built by dartsnas, and where the search
methods land in it.

1. ``bench201 build``: --cells unique cells of the space (a seeded sample) plus the all-skip cell and the
   space's CIFAR-10 best, trained the same way on scikit-learn's 1,797 real 8x8 digits (half the training
   split trains, half is x-valid; the 359 test digits are x-test), side by side on --devices.
2. ``search nb201`` with DARTS first and second order, GDAS, SDARTS-RS and DARTS-, two seeds each, on
   the same data; every derived cell the benchmark lacks is then trained into it the same way
   (``build --include ... --resume``).
3. Per search: the derived cell's benchmark test accuracy, its percentile among the built cells, its
   regret against the best, and Kendall's τ between the final softmax(α) edge strengths of each built
   cell (the sum over its edges of log softmax(α) of its op) and that cell's accuracy. A histogram of the
   accuracies with each search's cell marked (docs/nb201_digits.png).

    python benchmarks/nb201_evidence.py --out nb201_evidence      # about an hour on 2 cores

Prints one JSON line per build, search and result; the last line is the summary.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

METHODS = {"darts-v1": [], "darts-v2": ["--order", "second"], "gdas": ["--sampler", "gdas"],
           "sdarts-rs": ["--regularizer", "sdarts-rs"], "darts-minus": ["--regularizer", "darts-minus"]}


def cli(*args: str) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "dartsnas", *args], check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def kendall_tau(x: list[float], y: list[float]) -> float:
    """Kendall's τ-b (ties in either list counted out)."""
    from dartsnas.zero_cost import rank_correlations
    return rank_correlations(x, y)["kendall_tau"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("nb201_evidence"))
    p.add_argument("--cells", type=int, default=300)
    p.add_argument("--epochs", type=int, default=12, help="each cell's training [12, as the benchmark's short budget]")
    p.add_argument("--channels", type=int, default=8, help="C of the benchmark's network [8]")
    p.add_argument("--layers", type=int, default=1, help="N, cells per stage [1]")
    p.add_argument("--search-epochs", type=int, default=30)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--devices", nargs="+", default=["cpu", "cpu"])
    p.add_argument("--plot", type=Path, default=Path("docs/nb201_digits.png"))
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    bench = args.out / "digits.pickle.pbz2"
    data = ["--dataset", "digits", "--init-channels", str(args.channels), "--layers", str(args.layers),
            "--batch-size", "64"]
    build = ["bench201", "build", *data, "--epochs", str(args.epochs), "--cells", str(args.cells),
             "--devices", *args.devices, "--out", str(bench), "--quiet"]
    include = ["all-skip", "best-cifar10"]
    resume = ["--resume"] if (args.out / "digits.pickle.pbz2.runs" / "build.json").is_file() else []
    seconds = cli(*build, "--include", *include, *resume)
    print(json.dumps({"build": str(bench), "cells": args.cells + 2, "seconds": round(seconds, 1),
                      "resumed": bool(resume)}), flush=True)

    searches = {}
    for name, flags in METHODS.items():
        for seed in args.seeds:
            out = args.out / "searches" / f"{name}_seed{seed}"
            if not (out / "genotype.json").is_file():
                seconds = cli("search", "nb201", *data, "--epochs", str(args.search_epochs), "--seed", str(seed),
                              "--bench201", str(bench), "--bench201-dataset", "digits", "--bench201-epochs",
                              str(args.epochs), "--quiet", "--overwrite", *flags, "--out", str(out))
            else:
                seconds = float("nan")
            records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
            searches[(name, seed)] = (out, records, sum(r["seconds"] for r in records))
            print(json.dumps({"search": name, "seed": seed, "seconds": round(seconds, 1),
                              "search_seconds": round(searches[(name, seed)][2], 1),
                              "genotype": records[-1]["genotype"]["arch"]}), flush=True)
    derived = sorted({r[-1]["genotype"]["arch"] for _, r, _ in searches.values()})
    seconds = cli(*build, "--include", *include, *derived, "--resume")
    print(json.dumps({"build": "derived cells added", "cells": len(derived), "seconds": round(seconds, 1)}), flush=True)

    from dartsnas.bench201 import Benchmark201
    from dartsnas.genotype201 import Cell201
    table = Benchmark201(bench)
    hp = str(args.epochs)
    acc = {i: table.query(i, "digits", hp)["test-accuracy"] for i in table.evaluated()}
    sampled = [i for i in acc]  # the benchmark's cells: the sample, the two named ones and the derived ones
    best = max(acc.values())
    ordered = sorted(acc.values())
    rows = []
    for (name, seed), (out, records, search_seconds) in searches.items():
        cell = Cell201.from_dict(records[-1]["genotype"])
        index = table.lookup(cell)
        mine = acc[index]
        alphas = records[-1]["alphas"]["normal"]
        strength = [sum(math.log(alphas[e][list(("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3",
                                                  "avg_pool_3x3")).index(op)])
                        for e, (op, _) in enumerate(Cell201.from_str(table.meta_archs[i]).edges)) for i in sampled]
        rows.append({"method": name, "seed": seed, "cell": cell.to_str(), "index": index, "test_accuracy": mine,
                     "percentile": 100 * sum(a <= mine for a in ordered) / len(ordered), "regret": best - mine,
                     "kendall_tau": kendall_tau(strength, [acc[i] for i in sampled]),
                     "skip_connects": sum(op == "skip_connect" for op, _ in cell.edges),
                     "search_seconds": round(search_seconds, 1)})
        print(json.dumps(rows[-1]), flush=True)
    jobs = []
    for metrics in sorted((args.out / "digits.pickle.pbz2.runs" / "runs").glob("*/metrics.jsonl")):
        records = [json.loads(line) for line in metrics.read_text().splitlines() if '"epoch"' in line]
        jobs.append(sum(r["seconds"] + r.get("val_seconds", 0) + r.get("test_seconds", 0) for r in records))
    jobs.sort()
    print(json.dumps({"build_jobs": len(jobs), "job_seconds_mean": round(sum(jobs) / len(jobs), 2),
                      "job_seconds_median": round(jobs[len(jobs) // 2], 2), "job_seconds_max": round(jobs[-1], 2)}))
    skip = table.index_of("all-skip")
    summary = {"cells": len(acc), "best": best, "median": ordered[len(ordered) // 2], "worst": ordered[0],
               "all_skip": acc[skip], "best_cifar10": acc[table.index_of("best-cifar10")],
               "best_cell": table.meta_archs[max(acc, key=acc.get)]}
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 3.6))
    ax.hist(list(acc.values()), bins=40, color="#bbb")
    colors = dict(zip(METHODS, ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd")))
    for row in rows:
        ax.axvline(row["test_accuracy"], color=colors[row["method"]], lw=1.5,
                   label=row["method"] if row["seed"] == args.seeds[0] else None)
    ax.axvline(acc[skip], color="k", ls=":", lw=1, label="all-skip")
    ax.set_xlabel(f"test accuracy (%), 8x8 digits, {args.epochs} epochs, C={args.channels} N={args.layers}")
    ax.set_ylabel("cells")
    ax.legend(fontsize=7)
    fig.tight_layout()
    args.plot.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.plot, dpi=110)
    print(json.dumps({"summary": summary, "plot": str(args.plot)}), flush=True)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main()
