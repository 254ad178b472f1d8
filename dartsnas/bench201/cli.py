"""``dartsnas bench201``: query a NAS-Bench-201 / NATS-Bench file, and build one of a user's data."""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Sequence

COMMANDS = ("query", "build")


def normalise_argv(argv: Sequence[str]) -> list[str]:
    """``bench201 FILE query ...`` (the file first) as ``bench201 query FILE ...``."""
    argv = list(argv)
    if len(argv) > 2 and argv[0] == "bench201" and argv[1] not in COMMANDS and argv[2] in COMMANDS:
        argv[1], argv[2] = argv[2], argv[1]
    return argv


def add_parser(sub: Any) -> None:
    p = sub.add_parser("bench201", help="query NAS-Bench-201 / NATS-Bench files (query FILE ARCH), or build one of "
                                        "your data (build)")
    kinds = p.add_subparsers(dest="bench_command", required=True, metavar="{query,build}")
    q = kinds.add_parser("query", help="a cell's benchmark figures as JSON (as the official APIs answer)")
    q.add_argument("file", help="NAS-Bench-201-v1_*.pth, NATS-tss-*.pickle.pbz2, or a NATS -simple directory")
    q.add_argument("arch", help="arch string (|nor_conv_3x3~0|+|...|) or index")
    q.add_argument("--dataset", default="cifar10", help="cifar10, cifar10-valid, cifar100, ImageNet16-120 (or a "
                   "built benchmark's dataset) [cifar10]")
    q.add_argument("--epochs", default="200", help="the training budget: 12 or 200 [200]")
    q.add_argument("--epoch", type=int, default=None, help="the figures after this epoch (0-based) [the last]")

    from ..flags import add_flags
    from ..train.nb201 import NB201TrainConfig
    from .build import BuildConfig
    b = kinds.add_parser("build", help="train cells of the space on your data into a benchmark file that query, "
                                       "search nb201 --bench201 and the official APIs read")
    add_flags(b, BuildConfig)
    run = add_flags(b, NB201TrainConfig, exclude=("genotype",))["run"]
    run.add_argument("--out", required=True, type=Path, help="the benchmark: FILE.pth (NAS-Bench-201), "
                     "FILE.pickle.pbz2 (NATS-Bench) or DIR-simple (NATS-Bench's per-cell files); runs in FILE.runs")
    run.add_argument("--devices", nargs="+", default=None, metavar="DEVICE",
                     help="run jobs side by side, one per entry (e.g. cuda:0 cuda:1, or cpu cpu) [every CUDA device, "
                          "else cpu]")
    from ..cluster import add_launcher_flags
    add_launcher_flags(b, data_parallel=False)
    run.add_argument("--resume", action="store_true", help="continue the build in FILE.runs")
    run.add_argument("--overwrite", action="store_true", help="start the build in FILE.runs again")
    run.add_argument("--quiet", action="store_true", help="no line per job")


def run(args: argparse.Namespace) -> int:
    from .query import Benchmark201
    if args.bench_command == "query":
        print(json.dumps(Benchmark201(args.file).query(args.arch, args.dataset, args.epochs, args.epoch)))
        return 0
    from ..flags import given_fields
    from ..train.nb201 import NB201TrainConfig, nb201_train_recipe
    from .build import BuildConfig, build
    config = BuildConfig(**given_fields(BuildConfig, args))
    train = nb201_train_recipe(**{"train_portion": 0.5, **given_fields(NB201TrainConfig, args)})
    from ..cluster import launcher_of
    summary = build(config, train, args.out, devices=args.devices, resume=args.resume, overwrite=args.overwrite,
                    log=(lambda m: None) if args.quiet else print, launcher=launcher_of(args))
    print(json.dumps(summary))
    return 0
