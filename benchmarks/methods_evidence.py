"""Issue 34's evidence in the NAS-Bench-201 space: DARTS, DARTS-PT, DrNAS, β-DARTS, GDAS and random search
on the tabular benchmark of real digits that benchmarks/nb201_evidence.py builds, at one search budget
and two seeds; then every zero-cost proxy's rank correlation with the benchmark's accuracy.

1. ``search nb201`` (C=8, N=1, --search-epochs, batch 64, seeds 0 and 1) with DARTS (first order), DrNAS
   (``--sampler dirichlet``), β-DARTS (``--regularizer beta-decay``) and GDAS; DARTS-PT is
   ``derive --method pt`` on each DARTS run (its selection's epochs on top, reported). Derived cells the
   benchmark lacks are trained into it the same way (``bench201 build --include ... --resume``).
2. Random search on the table: cells drawn uniformly from the benchmark's evaluated cells (seeded) for as
   long as the mean gradient search took, each costing the benchmark's training time of a cell; the one of
   best x-valid accuracy is reported.
3. Per method and seed: the cell's test accuracy, percentile among the benchmark's cells, regret; and
   ``dartsnas proxies nb201 --bench201`` over every cell: Kendall τ and Spearman ρ per proxy.

    python benchmarks/nb201_evidence.py --out nb201_evidence      # the benchmark, once (~35 min)
    python benchmarks/methods_evidence.py --bench nb201_evidence   # ~10 min on 2 cores

Prints one JSON line per search, result and proxy summary; the last line is the table.
"""
from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import time
from pathlib import Path

METHODS = {"darts": [], "drnas": ["--sampler", "dirichlet"], "beta-darts": ["--regularizer", "beta-decay"],
           "gdas": ["--sampler", "gdas"]}


def cli(*args: str, stdout: int | None = subprocess.DEVNULL) -> tuple[float, str]:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "dartsnas", *args], check=True, stdout=subprocess.PIPE,
                          stderr=subprocess.DEVNULL, text=True)
    return time.perf_counter() - start, done.stdout


def records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bench", type=Path, default=Path("nb201_evidence"), help="nb201_evidence.py's --out")
    p.add_argument("--out", type=Path, default=None, help="[BENCH/methods]")
    p.add_argument("--search-epochs", type=int, default=30)
    p.add_argument("--pt-interval", type=int, default=5, help="DARTS-PT's epochs between decisions [5, the authors']")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--epochs", type=int, default=12, help="the benchmark's training budget [12]")
    args = p.parse_args()
    out = args.out or args.bench / "methods"
    out.mkdir(parents=True, exist_ok=True)
    bench = args.bench / "digits.pickle.pbz2"
    data = ["--dataset", "digits", "--init-channels", "8", "--layers", "1", "--batch-size", "64"]
    runs: dict[tuple[str, int], tuple[Path, float]] = {}
    for name, flags in METHODS.items():
        for seed in args.seeds:
            run = out / f"{name}_seed{seed}"
            if not (run / "genotype.json").is_file():
                cli("search", "nb201", *data, "--epochs", str(args.search_epochs), "--seed", str(seed), "--quiet",
                    "--overwrite", *flags, "--out", str(run))
            runs[(name, seed)] = (run, sum(r["seconds"] for r in records(run)))
    for seed in args.seeds:
        run = out / f"darts_seed{seed}"
        if not (run / "pt" / "genotype.json").is_file():
            cli("derive", str(run), "--method", "pt", "--pt-interval", str(args.pt_interval))
        pt = records(run / "pt")
        runs[("darts-pt", seed)] = (run / "pt", sum(r["seconds"] for r in pt))
    for (name, seed), (run, seconds) in runs.items():
        print(json.dumps({"search": name, "seed": seed, "seconds": round(seconds, 1),
                          "genotype": json.loads((run / "genotype.json").read_text())["arch"]}), flush=True)
    from dartsnas.bench201 import Benchmark201
    table = Benchmark201(bench)
    missing = sorted({json.loads((run / "genotype.json").read_text())["arch"] for run, _ in runs.values()}
                     - {table.meta_archs[i] for i in table.evaluated()})
    missing = [a for a in missing if _lookup(table, a) is None]
    if missing:
        cli("bench201", "build", *data, "--epochs", str(args.epochs), "--cells", "300", "--devices", "cpu", "cpu",
            "--out", str(bench), "--quiet", "--include", *_built_includes(args.bench), *missing, "--resume")
        table = Benchmark201(bench)
    hp = str(args.epochs)
    acc = {i: table.query(i, "digits", hp)["test-accuracy"] for i in table.evaluated()}
    valid = {i: table.query(i, "digits", hp)["valid-accuracy"] for i in table.evaluated()}
    ordered, best = sorted(acc.values()), max(acc.values())
    cell_seconds = _cell_seconds(args.bench / "digits.pickle.pbz2.runs" / "runs")
    budget = sum(s for (n, _), (_, s) in runs.items() if n != "darts-pt") / (len(runs) - len(args.seeds))
    rows = []
    for (name, seed), (run, seconds) in sorted(runs.items()):
        arch = json.loads((run / "genotype.json").read_text())["arch"]
        rows.append(_row(name, seed, arch, _lookup(table, arch), acc, ordered, best, seconds))
    for seed in args.seeds:
        rng, spent, seen = random.Random(seed), 0.0, []
        pool = list(acc)
        while spent < budget and pool:
            cell = pool.pop(rng.randrange(len(pool)))
            seen.append(cell)
            spent += cell_seconds.get(table.meta_archs[cell], sum(cell_seconds.values()) / len(cell_seconds))
        pick = max(seen, key=valid.get)
        rows.append(_row("random", seed, table.meta_archs[pick], pick, acc, ordered, best, spent, cells=len(seen)))
    for row in rows:
        print(json.dumps(row), flush=True)
    _, text = cli("proxies", "nb201", "--bench201", str(bench), "--bench201-dataset", "digits", "--bench201-epochs", hp,
                  "--dataset", "digits", "--init-channels", "8", "--layers", "1", "--out", str(out / "proxies.jsonl"))
    correlations = json.loads(text.strip().splitlines()[-1])
    print(json.dumps(correlations), flush=True)
    print(json.dumps({"cells": len(acc), "best": best, "budget_seconds": round(budget, 1), "rows": rows}), flush=True)


def _built_includes(bench: Path) -> list[str]:
    return json.loads((bench / "digits.pickle.pbz2.runs" / "build.json").read_text())["config"]["include"]


def _lookup(table, arch: str):
    from dartsnas.genotype201 import Cell201
    try:
        return table.lookup(Cell201.from_str(arch))
    except Exception:  # not evaluated: neither the cell nor an isomorphic one
        return None


def _cell_seconds(runs: Path) -> dict[str, float]:
    """Each built cell's training and evaluation seconds, by arch string."""
    seconds = {}
    for metrics in runs.glob("*/metrics.jsonl"):
        config = json.loads((metrics.parent / "config.json").read_text())
        recs = [json.loads(line) for line in metrics.read_text().splitlines() if '"epoch"' in line]
        arch = config["genotype"]
        if arch.endswith(".json"):
            arch = json.loads(Path(arch).read_text())["arch"] if Path(arch).is_file() else arch
        seconds[arch] = sum(r["seconds"] + r.get("val_seconds", 0) + r.get("test_seconds", 0) for r in recs)
    return seconds


def _row(name, seed, arch, index, acc, ordered, best, seconds, **extra) -> dict:
    mine = acc[index]
    return {"method": name, "seed": seed, "cell": arch, "test_accuracy": round(mine, 2),
            "percentile": round(100 * sum(a <= mine for a in ordered) / len(ordered), 1),
            "regret": round(best - mine, 2), "seconds": round(seconds, 1), **extra}


if __name__ == "__main__":
    main()
