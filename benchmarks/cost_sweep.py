"""Evidence for searching at a budget (issue 23), on the 1,797 real 8x8 digits scikit-learn ships.

Stages (one JSON line each, then a summary line; runs already in --out are reused, so an interrupted
sweep continues):
1. a latency table of the final network (onnxruntime, one thread) and how well it predicts: over
   --latency-cells random cells, the table's latency against the exported network timed by onnxruntime
   (Spearman's rho, median relative error);
2. an unconstrained search, then searches aimed at a multiply-add target: the fixed part plus 25%, 50%
   and 100% of the unconstrained cell's ops' multiply-adds (the fixed part, stem, preprocessing and head,
   is out of the cell's reach), with the derived penalty, the hinge too at 25% and 50%, the linear one
   at 50%; one search aimed at a latency target (60% of the unconstrained network's table latency);
3. every derived network's real cost (multiply-adds, parameters, onnxruntime latency) and its test
   accuracy after training from scratch; random cells of the same multiply-adds (within 10%) trained
   the same way;
4. docs/cost_sweep.png: test accuracy against multiply-adds, the front marked.

    python benchmarks/cost_sweep.py --out cost_runs        # about 50 minutes on 2 CPU cores, alone
"""
from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _harness import emit, rows, run_cli  # noqa: E402


def spearman(a: list[float], b: list[float]) -> float:
    """Spearman's rank correlation (average ranks for ties)."""
    from dartsnas.zero_cost import rank_correlations
    return rank_correlations(a, b)["spearman_rho"]


def front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats in both cost (lower) and accuracy (higher)."""
    return [i for i, (c, a) in enumerate(points)
            if not any((c2 <= c and a2 >= a) and (c2 < c or a2 > a) for c2, a2 in points)]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="cost_runs")
    p.add_argument("--search-channels", type=int, default=8)
    p.add_argument("--search-layers", type=int, default=5)
    p.add_argument("--search-epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--arch-lr", type=float, default=3e-3, help="α's Adam step (short searches need more than 3e-4)")
    p.add_argument("--cost-weight", type=float, default=1.0)
    p.add_argument("--train-channels", type=int, default=16, help="C of the final network [16]")
    p.add_argument("--train-layers", type=int, default=8, help="its cells [8]")
    p.add_argument("--train-epochs", type=int, default=25)
    p.add_argument("--fractions", type=float, nargs="+", default=[0.25, 0.5, 1.0])
    p.add_argument("--random-per-target", type=int, default=2)
    p.add_argument("--latency-cells", type=int, default=20)
    p.add_argument("--latency-fraction", type=float, default=0.6, help="latency target: this part of the "
                   "unconstrained network's table latency [0.6]")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--plot", default=str(HERE.parent / "docs" / "cost_sweep.png"))
    args = p.parse_args()

    from dartsnas.cost import CostTable
    from dartsnas.genotype import Genotype
    from dartsnas.latency import Timer
    from dartsnas.nets import NetworkConfig, build_network
    from dartsnas.spaces.cnn import sample_genotype

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    final = ["--init-channels", str(args.train_channels), "--layers", str(args.train_layers)]
    data = ["--dataset", "digits", "--seed", str(args.seed), "--quiet", "--overwrite"]
    timer = Timer("onnxruntime", "cpu", threads=args.threads, repeats=200, warmup=20, rounds=5)

    def measured_ms(genotypes: list[Genotype]) -> list[float]:
        """The exported networks timed by onnxruntime, all in the same interleaved rounds."""
        return timer.times([timer.prepare(build_network("cifar", NetworkConfig(
            g, init_channels=args.train_channels, layers=args.train_layers, in_channels=1)), (1, 8, 8))
            for g in genotypes])

    # 1. the latency table, and its predictions against the exported networks' timings
    table_path = out / "latency_table.json"
    if not table_path.is_file():
        run_cli(["latency-table", "--runtime", "onnxruntime", "--threads", str(args.threads), *final,
                 "--image-size", "8", "--in-channels", "1", "--repeats", "200", "--warmup", "20", "--rounds", "5", "--out",
                 str(table_path), "--quiet"])
    table = CostTable.read(table_path)
    fixed = table.fixed
    emit({"stage": "latency_table", "fixed": fixed, "reference_ms": table.measurement["reference_network_ms"],
          "op_shapes": table.measurement["distinct_op_shapes"], "threads": table.measurement["threads"],
          "cpu": table.measurement["device_name"]})
    check_path = out / "latency_check.json"
    if not check_path.is_file():
        rng = random.Random(args.seed)
        cells = [sample_genotype(rng) for _ in range(args.latency_cells)]
        pairs = [(table.of_genotype(g)["latency"], ms) for g, ms in zip(cells, measured_ms(cells))]
        check_path.write_text(json.dumps(pairs))
    pairs = json.loads(check_path.read_text())
    predicted, measured = [a for a, _ in pairs], [b for _, b in pairs]
    latency_check = emit({"stage": "latency_prediction", "cells": len(pairs),
                          "spearman_rho": round(spearman(predicted, measured), 4),
                          "median_relative_error": round(statistics.median(abs(a - b) / b for a, b in pairs), 4),
                          "measured_ms_range": [round(min(measured), 4), round(max(measured), 4)]})

    # 2. searches
    search = ["search", "cnn", *data, "--init-channels", str(args.search_channels), "--layers",
              str(args.search_layers), "--epochs", str(args.search_epochs), "--batch-size", str(args.batch_size),
              "--arch-lr", str(args.arch_lr), "--latency-table", str(table_path)]

    def searched(name: str, extra: list[str]) -> Genotype:
        run_dir = out / f"search_{name}"
        if not (run_dir / "genotype.json").is_file():
            run_cli([*search, *extra, "--out", str(run_dir)])
        return Genotype.from_dict(json.loads((run_dir / "genotype.json").read_text()))

    g0 = searched("free", [])
    free = table.of_genotype(g0)
    runs = {"free": {"genotype": g0, "target": None, "cost": None}}
    for fraction in args.fractions:
        target = fixed["macs"] + fraction * (free["macs"] - fixed["macs"])
        forms = {0.25: ("derived", "hinge"), 0.5: ("derived", "hinge", "linear")}.get(fraction, ("derived",))
        for form in forms:
            name = f"macs{int(fraction * 100)}_{form}"
            runs[name] = {"target": target, "cost": "macs", "genotype": searched(name, [
                "--cost", "macs", "--cost-target", str(target), "--cost-penalty", form,
                "--cost-weight", str(args.cost_weight)])}
    target = args.latency_fraction * free["latency"]  # the table's fixed part may be below zero (see docs)
    runs["latency_derived"] = {"target": target, "cost": "latency", "genotype": searched("latency_derived", [
        "--cost", "latency", "--cost-target", str(target), "--cost-penalty", "derived",
        "--cost-weight", str(args.cost_weight)])}

    # 3. real costs and accuracy after training from scratch
    def trained(name: str, genotype: Genotype) -> float:
        run_dir = out / f"train_{name}"
        if not (run_dir / "model.pt").is_file():
            genotype_file = out / f"genotype_{name}.json"
            genotype_file.write_text(genotype.to_json())
            run_cli(["train", "cnn", *data, "--genotype", str(genotype_file), *final, "--epochs",
                     str(args.train_epochs), "--batch-size", "64", "--out", str(run_dir)])
        return rows(run_dir)[-1]["test_top1"]

    results = []
    timed = dict(zip(runs, measured_ms([run["genotype"] for run in runs.values()])))
    for name, run in runs.items():
        cost = table.of_genotype(run["genotype"])
        row = {"stage": "derived", "run": name, "target": run["target"], "cost": run["cost"],
               "macs": cost["macs"], "params": cost["params"], "predicted_ms": round(cost["latency"], 4),
               "onnxruntime_ms": round(timed[name], 4),
               "test_top1": round(trained(name, run["genotype"]), 4), "genotype": run["genotype"].to_dict()}
        if run["target"] is not None:
            real = cost[run["cost"]] if run["cost"] == "macs" else row["onnxruntime_ms"]
            row["real_over_target"] = round(real / run["target"], 3)
        results.append(emit(row))
    rng = random.Random(args.seed + 1)
    pool = [sample_genotype(rng) for _ in range(20000)]
    randoms = []
    for row in results:
        if row["cost"] != "macs" or not row["run"].endswith("derived"):
            continue
        matched = [g for g in pool if abs(table.of_genotype(g)["macs"] / row["macs"] - 1) <= 0.1]
        for k, genotype in enumerate(matched[:args.random_per_target]):
            name = f"random_{row['run']}_{k}"
            cost = table.of_genotype(genotype)
            randoms.append(emit({"stage": "random", "run": name, "matches": row["run"], "macs": cost["macs"],
                                 "params": cost["params"], "test_top1": round(trained(name, genotype), 4),
                                 "matched_in_pool": len(matched)}))

    # 4. the plot
    points = [(r["macs"] / 1e6, r["test_top1"]) for r in results + randoms]
    best = front(points)
    try:
        import matplotlib
        import matplotlib.ticker
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        xs = [points[i] for i in sorted(best, key=lambda i: points[i][0])]
        ax.plot([x for x, _ in xs], [y for _, y in xs], "-", color="0.7", zorder=1, label="front")
        for r in randoms:
            ax.scatter(r["macs"] / 1e6, r["test_top1"], marker="x", color="0.45", zorder=2)
        ax.scatter([], [], marker="x", color="0.45", label="random cells of the same cost")
        labels: dict[tuple[float, float], list[str]] = {}  # runs that derived the same cell share a label
        for r in results:
            style = "s" if r["run"] == "free" else "^" if r["cost"] == "latency" else "o"
            ax.scatter(r["macs"] / 1e6, r["test_top1"], marker=style, s=50, zorder=3)
            labels.setdefault((r["macs"] / 1e6, r["test_top1"]), []).append(r["run"].replace("_derived", ""))
        for xy, names in labels.items():
            ax.annotate(" = ".join(names), xy, fontsize=7, xytext=(4, 3), textcoords="offset points")
        ax.set_xlabel("multiply-adds of the final network (M)")
        ax.set_ylabel("test accuracy after training")
        ax.set_title(f"digits 8x8: searched at a budget (C{args.train_channels} L{args.train_layers}, "
                     f"{args.train_epochs} epochs)", fontsize=9)
        ax.yaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0, decimals=1))
        ax.legend(fontsize=7, loc="center right")
        fig.tight_layout()
        fig.savefig(args.plot, dpi=120)
    except ImportError:
        pass
    emit({"stage": "summary", "fixed": fixed, "free": free, "latency_prediction": latency_check,
          "front": [(results + randoms)[i]["run"] for i in best],
          "derived": [{k: v for k, v in r.items() if k not in ("stage", "genotype")} for r in results],
          "random": [{k: v for k, v in r.items() if k != "stage"} for r in randoms]})


if __name__ == "__main__":
    main()
