"""A tabular benchmark of a user's own data in NAS-Bench-201's space: ``dartsnas bench201 build``.

Every cell to train (the space's unique cells up to isomorphism, or a seeded sample of them, plus the
cells named with ``include``) and every seed is one protocol job (:mod:`dartsnas.jobs`): a ``train
nb201`` run in ``FILE.runs/runs/``, resumable from its checkpoint, skipped once done, side by side over
``--devices``. Each job runs with the same number of threads however many run beside it, so a cell's
numbers do not depend on how the build was spread. The file is rewritten (whole, atomically) as jobs
finish: NATS-Bench's format for ``.pickle.pbz2`` (the budget's own hp key, ``str(epochs)``) or a
NATS-Bench ``-simple`` directory, NAS-Bench-201's ``.pth`` (its 'less' and 'full' both hold the one
budget: the official API asks for it as hp '12' or '200', dartsnas by its epochs).

A run's held-out part of the training split is the benchmark's ``x-valid``, the test split its
``x-test``, and the two together its ``ori-test``, as NAS-Bench-201 lays out cifar100's; the dataset is
named by ``name`` (the ``--dataset``'s name unless given). Costs are the benchmark's (``benchmark_cost``:
FLOPs and parameters in millions) at the data's image size.
"""
from __future__ import annotations

import dataclasses
import json
import random
from pathlib import Path
from typing import Any, Callable, Sequence

from ..config import Config, option
from ..errors import ConfigError, DartsError
from ..genotype201 import Cell201, benchmark_cells, benchmark_index, unique_cells
from ..jobs import Job, default_devices, run_jobs
from ..nets import NetworkConfig, build_network
from ..nets.nb201 import benchmark_cost
from ..ops import NB201_OPS
from ..train.checkpoint import atomic_write_text, read_metrics
from .files import write_nats_dir, write_nats_file, write_pth
from .records import cell_record, run_record

PLAN = "build.json"


@dataclasses.dataclass
class BuildConfig(Config):
    """What a benchmark build trains: which cells, with which seeds, into which file."""

    cells: str = option("all", "all: every unique cell of the space up to isomorphism (6,466); N: a seeded sample "
                        "of N of them", group="benchmark")
    sample_seed: int = option(0, "the seed of --cells N's sample", group="benchmark")
    include: tuple[str, ...] = option(help="cells (arch strings or names: best-cifar10, all-skip, resnet) trained "
                                      "whatever the sample", factory=tuple, group="benchmark", metavar="ARCH")
    seeds: tuple[int, ...] = option(help="training seeds of every cell (NAS-Bench-201: 777 888 999)",
                                    factory=lambda: (777,), group="benchmark", metavar="S")
    name: str | None = option(None, "the dataset's name in the file", group="benchmark", default_text="--dataset's")
    threads: int = option(1, "threads of each job, however many run side by side", group="benchmark", min=1)

    def check(self) -> None:
        super().check()
        if self.cells != "all" and not (self.cells.isdigit() and int(self.cells) >= 1):
            raise ConfigError(f"{{cells}} must be all or a positive count, got {self.cells!r}", names=("cells",))
        if not self.seeds:
            raise ConfigError("{seeds} needs at least one seed", names=("seeds",))


def chosen_cells(config: BuildConfig, ops: Sequence[str] = NB201_OPS, nodes: int = 3) -> list[Cell201]:
    """The cells of a build: the unique ones (or a seeded sample), then ``include``'s, once each, in the
    benchmark's index order."""
    from ..genotype import load_genotype
    pool = unique_cells(tuple(ops), nodes)
    if config.cells != "all":
        count = int(config.cells)
        if count > len(pool):
            raise ConfigError(f"{{cells}} {count}: the space has {len(pool)} unique cells", names=("cells",))
        pool = random.Random(config.sample_seed).sample(pool, count)
    extra = [load_genotype(spec, "nb201") for spec in config.include]
    for cell in extra:
        if any(op not in ops for op, _ in cell.edges) or cell.nodes != nodes:
            raise ConfigError(f"--include {cell}: not a cell of the space ({nodes} nodes, ops {', '.join(ops)})")
    chosen = {benchmark_index(c, ops): c for c in [*pool, *extra]}
    return [chosen[i] for i in sorted(chosen)]


def _evals(records: list[dict[str, Any]]) -> tuple[dict[str, list[tuple[float, float]]], dict[str, list[float]]]:
    """x-valid, x-test and their union ori-test per epoch (loss, accuracy %), and their seconds."""
    evals: dict[str, list[tuple[float, float]]] = {"x-valid": [], "x-test": [], "ori-test": []}
    times: dict[str, list[float]] = {"x-valid": [], "x-test": [], "ori-test": []}
    for r in records:
        nv, nt = r["val_images"], r["test_images"]
        evals["x-valid"].append((r["val_loss"], 100 * r["val_top1"]))
        evals["x-test"].append((r["test_loss"], 100 * r["test_top1"]))
        evals["ori-test"].append(((r["val_loss"] * nv + r["test_loss"] * nt) / (nv + nt),
                                  100 * (r["val_top1"] * nv + r["test_top1"] * nt) / (nv + nt)))
        times["x-valid"].append(r["val_seconds"])
        times["x-test"].append(r["test_seconds"])
        times["ori-test"].append(r["val_seconds"] + r["test_seconds"])
    return evals, times


def write_benchmark(out: Path, meta: list[str], infos: dict[int, dict[str, Any]], hp: str) -> None:
    if out.suffix == ".pth":
        write_pth(out, meta, infos, epochs=hp)
    elif out.name.endswith(".pickle.pbz2"):
        write_nats_file(out, meta, infos)
    else:
        write_nats_dir(out, meta, infos)


def build(config: BuildConfig, train: Any, out: str | Path, *, devices: Sequence[str] | None = None,
          resume: bool = False, overwrite: bool = False, log: Callable[[str], None] = print,
          launcher: Any = None) -> dict[str, Any]:
    """Train the build's cells with ``train`` (a NB201TrainConfig: the budget, the data) and write the
    benchmark to ``out``; returns a summary (cells written, jobs failed, seconds per job)."""
    out = Path(out)
    if not (out.suffix == ".pth" or out.name.endswith(".pickle.pbz2") or out.name.endswith("-simple")):
        raise ConfigError(f"--out {out}: name a .pth (NAS-Bench-201), .pickle.pbz2 (NATS-Bench) or a -simple "
                          "directory (NATS-Bench's, one file per cell)")
    work = out.with_name(out.name + ".runs")
    plan_file = work / PLAN
    if plan_file.exists() and not (resume or overwrite):
        raise ConfigError(f"{work} holds a build: pass --resume to continue it or --overwrite to start again")
    config.validate()
    if train.train_portion >= 1.0:
        raise ConfigError("a benchmark needs a held-out validation split (x-valid): --train-portion below 1",
                          names=("train_portion",))
    train.validate()
    cells = chosen_cells(config)
    plan = {"config": config.to_dict(), "train": train.to_dict(), "name": config.name or train.dataset,
            "cells": {str(benchmark_index(c)): c.to_str() for c in cells}}
    if resume and plan_file.is_file():  # the same training (the finished runs are reused), maybe other cells
        saved = json.loads(plan_file.read_text())
        changed = sorted(k for k in {**saved["train"], **plan["train"]} if k != "device" and
                         saved["train"].get(k) != plan["train"].get(k))
        if changed or saved["config"]["seeds"] != plan["config"]["seeds"] or saved["name"] != plan["name"]:
            raise ConfigError(f"{work} was built with other settings ({', '.join(changed) or 'seeds or name'}): "
                              "resume it with its own, or --overwrite")
    elif overwrite and work.exists():
        import shutil
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    atomic_write_text(plan_file, json.dumps(plan, indent=1) + "\n")
    seeds = plan["config"]["seeds"]
    jobs = {(int(i), s): Job(f"cell_{int(i):06d}_seed{s}", "train-nb201", {**plan["train"], "genotype": arch, "seed": s},
                             str(work / "runs" / f"cell_{int(i):06d}_seed{s}"))
            for i, arch in plan["cells"].items() for s in seeds}
    meta = [c.to_str() for c in benchmark_cells()]
    hp = str(plan["train"]["epochs"])
    costs: dict[str, dict[str, Any]] = {}
    converted: dict[tuple[int, int], tuple[dict[str, Any], float]] = {}  # a finished run's record, made once

    def record_of(index: int, seed: int) -> tuple[dict[str, Any], float]:
        """A finished job's run record and its training seconds (its files do not change once done)."""
        if (index, seed) not in converted:
            arch, out_dir = plan["cells"][str(index)], Path(jobs[index, seed].out)
            records = [r for r in read_metrics(out_dir / "metrics.jsonl") if "epoch" in r]
            if arch not in costs:
                costs[arch] = _cost(arch, plan["train"], json.loads((out_dir / "data.json").read_text()))
            evals, times = _evals(records)
            converted[index, seed] = (run_record(
                dataset=plan["name"], seed=seed, arch=arch, epochs=len(records), num_classes=costs[arch]["classes"],
                channels=plan["train"]["init_channels"], cells=plan["train"]["layers"],
                train=[(r["train_loss"], 100 * r["train_acc"]) for r in records], evals=evals,
                train_times=[r["seconds"] for r in records], eval_times=times, params=costs[arch]["params"],
                flops=costs[arch]["flops"], latency=None), sum(r["seconds"] for r in records))
        return converted[index, seed]

    def write(results: dict[str, dict[str, Any]]) -> dict[str, Any]:
        infos, seconds = {}, []
        for index, arch in plan["cells"].items():
            runs = {}
            for s in seeds:
                if results.get(jobs[int(index), s].name, {}).get("status") == "done":
                    record, spent = record_of(int(index), s)
                    runs[(plan["name"], s)] = record
                    seconds.append(spent)
            if runs:
                infos[int(index)] = {hp: cell_record(int(index), arch, runs)}
        write_benchmark(out, meta, infos, hp)
        return {"cells": len(infos), "jobs": len(jobs), "failed": sum(r.get("status") == "failed" for r in results.values()),
                "train_seconds_per_job": sum(seconds) / len(seconds) if seconds else None, "out": str(out)}

    log(f"bench201 build: {len(plan['cells'])} cells x {len(seeds)} seeds on {plan['name']}, {hp} epochs, devices "
        f"{', '.join(devices or default_devices())}, into {out} (runs in {work})")
    results = run_jobs(list(jobs.values()), devices, log=log, on_result=write, threads=plan["config"]["threads"],
                       launcher=launcher, folder=work / "slurm")
    summary = write(results)
    if summary["failed"]:
        raise DartsError(f"{summary['failed']} of {len(jobs)} jobs failed (their logs are in {work / 'runs'}); the "
                         f"file holds the {summary['cells']} cells that finished; --resume retries the rest")
    return summary


def _cost(arch: str, train: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
    """The benchmark's FLOPs and parameters of a cell's network at the data's size."""
    classes = len(data["classes"]) if isinstance(data.get("classes"), list) else int(data["num_classes"])
    net = build_network("nb201", NetworkConfig(Cell201.from_str(arch), init_channels=train["init_channels"],
                                               layers=train["layers"], num_classes=classes,
                                               in_channels=data["in_channels"], auxiliary=False))
    return {**benchmark_cost(net, tuple(data["image_size"]), data["in_channels"]), "classes": classes}
