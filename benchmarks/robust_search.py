"""Plain DARTS, DARTS-ES, SDARTS-RS and DARTS- side by side on the bundled digits: searches with the
dominant eigenvalue of the α-Hessian every epoch, in several op sets and seeds; then every derived
cell trained from scratch at one budget. Writes summary.json (one row per search) and eigenvalues.png
into --out, and prints one JSON line per search and per training.

    python benchmarks/robust_search.py --out runs/robust        # 2 op sets x 3 methods x 2 seeds, ~2 hours on 2 cores

DARTS-ES is plain DARTS stopped by a rule: its decision is taken from the plain run's eigenvalue
sequence with the same rule (dartsnas.curvature.EarlyStopHessian), as RobustDARTS reports it; the
genotype is the plain run's at the epoch the rule names. Searches run --jobs at a time, each on
one thread (the many small kernels of a search use two processes better than two threads).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

METHODS = {"darts": [], "sdarts-rs": ["--regularizer", "sdarts-rs"], "darts-minus": ["--regularizer", "darts-minus"]}


def run(cmd: list[str], log: Path, threads: int = 1) -> int:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    with open(log, "w") as f:
        return subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=env).returncode


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--spaces", nargs="+", default=["darts", "s2"])
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--epochs", type=int, default=16)
    p.add_argument("--init-channels", type=int, default=4)
    p.add_argument("--layers", type=int, default=5)
    p.add_argument("--hessian-steps", type=int, default=10)
    p.add_argument("--es-start", type=int, default=4, help="DARTS-ES's first nameable epoch, counted from 1 (RobustDARTS: 11 of 50)")
    p.add_argument("--train-epochs", type=int, default=10)
    p.add_argument("--jobs", type=int, default=2)
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    py = [sys.executable, "-m", "dartsnas"]
    searches = []
    for space in args.spaces:
        for method in args.methods:
            for seed in args.seeds:
                name = f"{space}-{method}-{seed}"
                cmd = [*py, "search", "cnn", "--dataset", "digits", "--init-channels", str(args.init_channels),
                       "--layers", str(args.layers), "--batch-size", "64", "--lr", "0.05", "--epochs", str(args.epochs),
                       "--ops", space, "--seed", str(seed), "--hessian-every", "1", "--hessian-batches", "1",
                       "--hessian-steps", str(args.hessian_steps), *METHODS[method], "--quiet", "--resume",
                       "--out", str(args.out / name)]
                searches.append((name, space, method, seed, cmd))
    with ThreadPoolExecutor(args.jobs) as pool:
        codes = list(pool.map(lambda s: run(s[4], args.out / f"{s[0]}.log"), searches))

    from dartsnas.curvature import EarlyStopHessian
    from dartsnas.train.checkpoint import read_metrics
    rows = []
    for (name, space, method, seed, _), code in zip(searches, codes):
        records = read_metrics(args.out / name / "metrics.jsonl")
        if code != 0 or len(records) < args.epochs:
            rows.append({"name": name, "failed": (args.out / f"{name}.log").read_text()[-500:]})
            continue
        row = {"name": name, "space": space, "method": method, "seed": seed,
               "eigenvalues": [r["hessian_eigenvalue"] for r in records],
               "skips": [r["skip_connect_normal"] for r in records], "genotype": records[-1]["genotype"],
               "search_val_acc": round(records[-1]["val_acc"], 4)}
        rows.append(row)
        if method == "darts":  # DARTS-ES: the plain run, stopped by the rule
            rule = EarlyStopHessian(start=args.es_start, last_epoch=args.epochs)
            for r in records:
                if rule.update(r["epoch"], r["hessian_eigenvalue"], r["genotype"]):
                    break
            es = {"name": f"{space}-darts-es-{seed}", "space": space, "method": "darts-es", "seed": seed,
                  "eigenvalues": row["eigenvalues"][:rule.stopped["at"]] if rule.stopped else row["eigenvalues"],
                  "stopped": rule.stopped, "genotype": rule.genotypes[rule.stopped["epoch"]] if rule.stopped
                  else row["genotype"]}
            es["skips"] = row["skips"][:len(es["eigenvalues"])]
            rows.append(es)
    trained_by_genotype: dict[str, float | None] = {}
    for row in rows:
        if "genotype" not in row:
            continue
        row["final_skips"] = sum(op == "skip_connect" for op, _ in row["genotype"]["normal"])
        key = json.dumps(row["genotype"], sort_keys=True)
        if key in trained_by_genotype:  # DARTS-ES that did not stop: the plain run's cell, trained once
            row["test_top1"] = trained_by_genotype[key]
            print(json.dumps({k: v for k, v in row.items() if k not in ("genotype", "eigenvalues", "skips")}), flush=True)
            continue
        path = args.out / f"{row['name']}.genotype.json"
        path.write_text(json.dumps(row["genotype"]))
        out = args.out / f"train-{row['name']}"
        cmd = [*py, "train", "cnn", "--genotype", str(path), "--dataset", "digits", "--init-channels", "16",
               "--layers", "8", "--epochs", str(args.train_epochs), "--batch-size", "64", "--lr", "0.05",
               "--seed", "0", "--quiet", "--resume", "--out", str(out)]
        run(cmd, args.out / f"train-{row['name']}.log", threads=2)
        trained = read_metrics(out / "metrics.jsonl")
        row["test_top1"] = trained_by_genotype[key] = round(trained[-1]["test_top1"], 4) if trained else None
        print(json.dumps({k: v for k, v in row.items() if k not in ("genotype", "eigenvalues", "skips")}), flush=True)
    (args.out / "summary.json").write_text(json.dumps(rows, indent=1))
    _figure(rows, args.out / "eigenvalues.png")


def _figure(rows: list[dict], path: Path) -> None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    spaces = sorted({r["space"] for r in rows if "space" in r})
    fig, axes = plt.subplots(2, len(spaces), figsize=(5 * len(spaces), 6.4), squeeze=False, sharex=True)
    colours = {"darts": "#d62728", "sdarts-rs": "#1f77b4", "darts-minus": "#2ca02c"}
    for j, space in enumerate(spaces):
        for r in rows:
            if r.get("space") != space or r.get("method") not in colours:
                continue
            epochs = range(1, len(r["eigenvalues"]) + 1)
            label = r["method"] if r["seed"] == 0 else None
            axes[0][j].plot(epochs, r["eigenvalues"], color=colours[r["method"]], lw=1.2, label=label)
            axes[1][j].plot(epochs, r["skips"], color=colours[r["method"]], lw=1.2, label=label)
        for r in rows:
            if r.get("space") == space and r.get("method") == "darts-es" and r.get("stopped"):
                axes[0][j].axvline(r["stopped"]["epoch"], color="#d62728", ls=":", lw=1)
        axes[0][j].set_title(f"{space}: dominant eigenvalue of the α-Hessian", fontsize=9)
        axes[1][j].set_title(f"{space}: skip_connects in the derived normal cell", fontsize=9)
        axes[1][j].set_xlabel("epoch")
        axes[0][j].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
