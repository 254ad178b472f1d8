"""What reading your own images costs a search, next to CIFAR-10's batches: images/s of whole search
steps (α step + w step, data loading and augmentation included) on the same 32x32 RGB images, stored
as CIFAR-10 python batches, as PNG class folders held in memory, and as PNG class folders streamed by
DataLoader workers (``--memory-gb 0``); plus the one-off cost of reading the data.

    python benchmarks/data_search_step.py                       # 2,048 images, C=8, L=5, batch 32, first order
    python benchmarks/data_search_step.py --images 4096 --steps 8 --order second

The images are random (their content does not change the cost); each source is measured in a fresh
process, and one JSON line is printed per source.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import pickle
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _harness import peak_memory_gb, run_isolated  # noqa: E402

SOURCES = ["cifar10", "imagefolder", "imagefolder-streamed"]


def write_data(root: Path, n: int) -> None:
    """The same n random 32x32 RGB images as CIFAR-10 batches and as PNG class folders."""
    import numpy as np
    from PIL import Image
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
    labels = rng.integers(0, 10, n)
    cifar = root / "cifar" / "cifar-10-batches-py"
    cifar.mkdir(parents=True)
    for name, sl in (("data_batch_1", slice(0, n)), ("test_batch", slice(0, 256))):
        with open(cifar / name, "wb") as f:
            pickle.dump({b"data": images[sl].reshape(-1, 3072), b"labels": labels[sl].tolist()}, f, protocol=2)
    with open(cifar / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": [f"c{i}".encode() for i in range(10)]}, f, protocol=2)
    for i, (image, label) in enumerate(zip(images, labels)):
        folder = root / "folder" / "train" / f"c{label}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image.transpose(1, 2, 0)).save(folder / f"{i:05d}.png")


def measure(args: argparse.Namespace) -> dict:
    import torch

    from dartsnas.train.search import Search, SearchConfig
    torch.set_num_threads(args.threads)
    root = Path(args.root)
    source = args.source
    data = dict(dataset="cifar10", data_dir=str(root / "cifar"), verify=False) if source == "cifar10" else \
        dict(dataset="imagefolder", data_dir=str(root / "folder"), memory_gb=0.0 if source.endswith("streamed") else 2.0,
             workers=args.workers)
    config = SearchConfig(**data, init_channels=args.C, layers=args.L, batch_size=args.batch, order=args.order,
                          steps_per_epoch=args.warmup, epochs=1)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as out:
        run = Search(config, Path(out) / "run", quiet=True)
        load_s = time.perf_counter() - t0
        run.train_epoch()  # warm-up
        run.config = dataclasses.replace(config, steps_per_epoch=args.steps)
        t1 = time.perf_counter()
        record = run.train_epoch()
        seconds = time.perf_counter() - t1
    return {"source": source, "images": args.images, "C": args.C, "L": args.L, "batch": args.batch, "order": args.order,
            "workers": args.workers if source.endswith("streamed") else 0, "read_s": round(load_s, 2),
            "s_per_step": round(seconds / args.steps, 3), "images_per_s": round(args.batch * args.steps / seconds, 2),
            "train_loss": round(record["train_loss"], 4), **peak_memory_gb(False)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=2048)
    p.add_argument("--C", type=int, default=8)
    p.add_argument("--L", type=int, default=5)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--order", default="first")
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--workers", type=int, default=2, help="decoding processes of the streamed source")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--sources", nargs="+", default=SOURCES, choices=SOURCES)
    p.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--source", help=argparse.SUPPRESS)
    p.add_argument("--root", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        print(json.dumps(measure(args)), flush=True)
        return
    with tempfile.TemporaryDirectory() as root:
        write_data(Path(root), args.images)
        common = [f"--{k}={v}" for k, v in vars(args).items() if k in ("images", "C", "L", "batch", "order", "steps",
                                                                       "warmup", "workers", "threads")]
        run_isolated(__file__, [[*common, f"--source={s}", f"--root={root}"] for s in args.sources])


if __name__ == "__main__":
    main()
