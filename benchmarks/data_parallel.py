"""Data-parallel search throughput: one process with the global batch against N torchrun processes
each with its share, same global batch, same machine. Prints one JSON line per run and the ratio.

    python benchmarks/data_parallel.py                     # CPU, gloo, 2 processes, bundled digits
    python benchmarks/data_parallel.py --nproc 4 --device cuda --dataset cifar10 --data-dir DIR

The figure is the search's own ``images_per_s`` (metrics.jsonl: images of the epoch over its time).
On a CPU the processes share the same cores (torchrun gives each one thread), so the ratio measures
what data parallelism costs there, not a speed-up; on GPUs it is the scaling.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path


def run(nproc: int, args: argparse.Namespace, out: Path) -> dict:
    flags = ["-m", "dartsnas", "search", "cnn", "--dataset", args.dataset, "--init-channels", str(args.init_channels),
             "--layers", str(args.layers), "--batch-size", str(args.batch_size // nproc), "--epochs", "1",
             "--steps-per-epoch", str(args.steps), "--order", args.order, "--device", args.device,
             "--out", str(out), "--quiet"] + (["--data-dir", args.data_dir] if args.data_dir else [])
    if nproc == 1:
        cmd = [sys.executable, *flags]
        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", *flags]
        env = {**os.environ, "OMP_NUM_THREADS": str(max(1, args.threads // nproc))}
    subprocess.run(cmd, check=True, env=env, capture_output=True, text=True)
    record = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])
    return {"bench": "data_parallel", "processes": nproc, "global_batch": args.batch_size, "order": args.order,
            "C": args.init_channels, "L": args.layers, "dataset": args.dataset, "device": args.device,
            "steps": record["steps"], "images_per_s": round(record["images_per_s"], 2)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nproc", type=int, default=2)
    p.add_argument("--dataset", default="digits")
    p.add_argument("--data-dir")
    p.add_argument("--device", default="cpu")
    p.add_argument("--init-channels", type=int, default=8)
    p.add_argument("--layers", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=64, help="global batch")
    p.add_argument("--order", default="first")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--threads", type=int, default=2, help="CPU threads in all")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        one = run(1, args, Path(tmp) / "one")
        print(json.dumps(one), flush=True)
        many = run(args.nproc, args, Path(tmp) / "many")
        print(json.dumps(many), flush=True)
    print(json.dumps({"bench": "data_parallel_ratio", "processes": args.nproc,
                      "many_over_one": round(many["images_per_s"] / one["images_per_s"], 3)}))


if __name__ == "__main__":
    main()
