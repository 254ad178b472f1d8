"""DARTS, P-DARTS and GDAS on real digits at one search budget in wall time (issue 24's evidence).

Each method searches the bundled 8x8 digits (scikit-learn's 1,797 real handwritten digits) for about
``--budget-s`` seconds: a one-epoch pilot per method measures its seconds per epoch (per stage for
P-DARTS) from metrics.jsonl, and the method then gets the epochs that fit the budget. Every derived
cell is trained from scratch at one budget (C16, 8 cells, --train-epochs) and tested on the held-out
test split. One JSON line per run, then a summary per method (mean and spread over --seeds):

    python benchmarks/successors.py --out successor_runs          # ~20 minutes on 2 cores

Fields: search wall seconds and peak RSS (GB) of the search process, skip_connects in the normal cell,
test top-1 of the trained cell.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _harness import emit, rows, run_cli  # noqa: E402

METHODS = ("darts", "p-darts", "gdas")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="successor_runs")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--budget-s", type=float, default=90.0, help="search budget in wall seconds (epochs only)")
    p.add_argument("--channels", type=int, default=8, help="C of the search networks [8]")
    p.add_argument("--layers", type=int, default=5, help="cells of DARTS's and GDAS's search network [5]")
    p.add_argument("--stage-layers", type=int, nargs=3, default=[3, 5, 8],
                   help="P-DARTS's stages, growing to the final network's depth as 5/11/17 to 20 in the paper [3 5 8]")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--arch-lr", type=float, default=3e-3, help="α's Adam step (short searches need more than 3e-4)")
    p.add_argument("--train-channels", type=int, default=16)
    p.add_argument("--train-layers", type=int, default=8)
    p.add_argument("--train-epochs", type=int, default=15)
    args = p.parse_args()

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    base = ["search", "cnn", "--dataset", "digits", "--init-channels", str(args.channels), "--batch-size",
            str(args.batch_size), "--arch-lr", str(args.arch_lr), "--quiet", "--overwrite"]
    flat = ["--layers", str(args.layers)]
    stages = ["--progressive", "--stage-layers", *map(str, args.stage_layers)]
    method_flags = {"darts": flat, "gdas": [*flat, "--sampler", "gdas"], "p-darts": stages}

    # 1. pilots: seconds per epoch of each method (P-DARTS: one epoch of each stage)
    per_epoch = {}
    for method in METHODS:
        pilot = out / f"pilot_{method}"
        extra = ["--stage-epochs", "1", "--stage-warmup", "0"] if method == "p-darts" else ["--epochs", "1"]
        if not (pilot / "genotype.json").is_file():
            run_cli([*base, *method_flags[method], *extra, "--out", str(pilot)])
        per_epoch[method] = sum(r["seconds"] for r in rows(pilot))  # P-DARTS: one epoch of every stage
    plan = {}
    for method in METHODS:
        fit = max(1, int(args.budget_s / per_epoch[method]))
        if method == "p-darts":  # epochs per stage, 40% of them warm-up (P-DARTS: 10 of 25)
            fit = max(2, fit)
            plan[method] = ["--stage-epochs", str(fit), "--stage-warmup", str(max(1, round(0.4 * fit)))]
        else:
            plan[method] = ["--epochs", str(fit)]
        emit({"stage": "plan", "method": method, "seconds_per_epoch": round(per_epoch[method], 2), "flags": plan[method]})

    # 2. searches and 3. the derived cells trained from scratch
    results = []
    for method in METHODS:
        for seed in args.seeds:
            name = f"{method}_s{seed}"
            run_dir = out / f"search_{name}"
            search_log = out / f"search_{name}.json"
            if not search_log.is_file():
                rss, wall = run_cli([*base, *method_flags[method], *plan[method], "--seed", str(seed),
                                     "--out", str(run_dir)])
                search_log.write_text(json.dumps({"peak_rss_gb": rss, "wall_s": wall}))
            searched = json.loads(search_log.read_text())
            genotype = json.loads((run_dir / "genotype.json").read_text())
            train_dir = out / f"train_{name}"
            if not (train_dir / "model.pt").is_file():
                run_cli(["train", "cnn", "--dataset", "digits", "--seed", str(seed), "--genotype",
                         str(run_dir / "genotype.json"), "--init-channels", str(args.train_channels), "--layers",
                         str(args.train_layers), "--epochs", str(args.train_epochs), "--batch-size", "64",
                         "--quiet", "--overwrite", "--out", str(train_dir)])
            records = rows(run_dir)
            results.append(emit({
                "stage": "run", "method": method, "seed": seed, "search_wall_s": searched["wall_s"],
                "search_epochs": len(records), "epoch_seconds": round(sum(r["seconds"] for r in records), 1),
                "peak_rss_gb": searched["peak_rss_gb"],
                "skip_connects": sum(op == "skip_connect" for op, _ in genotype["normal"]),
                "test_top1": rows(train_dir)[-1]["test_top1"], "genotype": genotype}))
    for method in METHODS:
        mine = [r for r in results if r["method"] == method]
        accs = [r["test_top1"] for r in mine]
        emit({"stage": "summary", "method": method, "seeds": len(mine),
              "search_wall_s": round(statistics.mean(r["search_wall_s"] for r in mine), 1),
              "peak_rss_gb": round(max(r["peak_rss_gb"] for r in mine), 3),
              "skip_connects": [r["skip_connects"] for r in mine],
              "test_top1_mean": round(statistics.mean(accs), 4), "test_top1": accs})


if __name__ == "__main__":
    main()
