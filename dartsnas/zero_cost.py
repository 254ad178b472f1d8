"""``dartsnas proxies``: the zero-cost proxies (``proxies.py``) of genotypes, a random sample of a space
or the cells of a NAS-Bench-201 file, on one minibatch of a dataset; with a benchmark, each proxy's
Kendall τ and Spearman ρ against its accuracy. And the pre-ranking of ``select`` / ``random-search``:
the candidates a proxy ranks best, the rest never trained.

As the authors' NAS-Bench-201 runs (``nasbench2_pred.py``): one random minibatch of 64 training images
(their ``--dataload random``, 1 batch; here drawn without augmentation from a seeded stream), PyTorch's
default initialisation, the benchmark's network of the cell (C=16, N=5 unless ``--init-channels`` and
``--layers`` say otherwise); the same batch for every candidate.
"""
from __future__ import annotations

import argparse
import json
import math
import random
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from .errors import ConfigError
from .proxies import ALL_PROXIES, PROXIES, score


def minibatch(dataset: str, data_dir: str | None = None, batch_size: int = 64, seed: int = 0,
              device: str = "cpu") -> tuple[torch.Tensor, torch.Tensor, Any]:
    """``batch_size`` training images of ``dataset`` drawn by ``seed``, normalised as training sees
    them (no augmentation), their labels, and the dataset."""
    from .data import load_splits
    from .data.augment import normalize
    train, _ = load_splits(dataset, data_dir, test=False)
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(train), generator=g)[:batch_size]
    images = train.images[idx] if torch.is_tensor(train.images) else torch.stack([train.images[int(i)] for i in idx])
    return normalize(images.to(device), train.mean, train.std), train.labels[idx].to(device), train


def rank_correlations(x: Sequence[float], y: Sequence[float]) -> dict[str, float]:
    """Kendall's τ-b and Spearman's ρ (average ranks for ties) of the finite pairs of ``x`` and ``y``."""
    pairs = [(a, b) for a, b in zip(x, y) if math.isfinite(a) and math.isfinite(b)]
    n = len(pairs)
    if n < 2:
        return {"kendall_tau": math.nan, "spearman_rho": math.nan, "n": n}
    conc = disc = tx = ty = 0
    for i in range(n):
        for j in range(i + 1, n):
            dx, dy = pairs[i][0] - pairs[j][0], pairs[i][1] - pairs[j][1]
            if dx == 0 and dy == 0:
                continue
            if dx == 0:
                tx += 1
            elif dy == 0:
                ty += 1
            elif dx * dy > 0:
                conc += 1
            else:
                disc += 1
    m = conc + disc
    tau = (conc - disc) / math.sqrt((m + tx) * (m + ty)) if m else math.nan
    rx, ry = _ranks([p[0] for p in pairs]), _ranks([p[1] for p in pairs])
    mx, my = sum(rx) / n, sum(ry) / n
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    var = math.sqrt(sum((a - mx) ** 2 for a in rx) * sum((b - my) ** 2 for b in ry))
    return {"kendall_tau": tau, "spearman_rho": cov / var if var else math.nan, "n": n}


def _ranks(values: list[float]) -> list[float]:
    order = sorted(range(len(values)), key=values.__getitem__)
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def network_builder(space: str, genotype: Any, data: Any, init_channels: int | None, layers: int | None
                    ) -> Callable[[], torch.nn.Module]:
    """What builds ``genotype``'s final network for ``data`` (its classes and channels)."""
    from .spaces import SEARCH_SPACES
    if space not in ("cnn", "nb201"):
        raise ConfigError(f"zero-cost proxies score image networks (cnn, nb201), not the {space} space")
    sizes = {k: v for k, v in (("init_channels", init_channels), ("layers", layers)) if v is not None}
    sizes.update(num_classes=data.num_classes, in_channels=data.in_channels, auxiliary=False)
    return lambda: SEARCH_SPACES.get(space).final_network(genotype, **sizes)


def score_genotypes(space: str, genotypes: dict[str, Any], *, dataset: str, data_dir: str | None = None,
                    batch_size: int = 64, proxies: Sequence[str] = ALL_PROXIES, seed: int = 0,
                    init_channels: int | None = None, layers: int | None = None,
                    log: Callable[[dict[str, Any]], None] | None = None) -> dict[str, dict[str, float]]:
    """Every proxy of every genotype (by name), on the one minibatch of ``dataset`` that ``seed`` draws."""
    for name in proxies:
        PROXIES.get(name)
    inputs, targets, data = minibatch(dataset, data_dir, batch_size, seed)
    scores = {}
    for name, genotype in genotypes.items():
        scores[name] = score(network_builder(space, genotype, data, init_channels, layers), inputs, targets,
                             proxies, seed=seed)
        if log is not None:
            log({"name": name, **scores[name]})
    return scores


def prerank(genotypes: dict[str, Any], space: str, config: Any, proxy: str, keep: int,
            seed: int = 0) -> tuple[list[str], dict[str, float]]:
    """The ``keep`` candidates ``proxy`` scores highest (ties: the given order) on a minibatch of the
    training ``config``'s data and network sizes; and every candidate's score."""
    scores = score_genotypes(space, genotypes, dataset=config.dataset, data_dir=config.data_dir,
                             batch_size=min(64, config.batch_size), proxies=(proxy,), seed=seed,
                             init_channels=config.init_channels, layers=config.layers)
    values = {name: s[proxy] for name, s in scores.items()}
    order = sorted(values, key=lambda n: -values[n] if math.isfinite(values[n]) else math.inf)
    return order[:keep], values


def add_prerank_flags(q: argparse.ArgumentParser) -> None:
    """select's and random-search's --prerank flags."""
    g = q.add_argument_group("pre-ranking (zero-cost proxies, before any training)")
    g.add_argument("--prerank", choices=ALL_PROXIES, default=None, metavar="PROXY",
                   help=f"train only the candidates this proxy scores highest ({', '.join(ALL_PROXIES)})")
    g.add_argument("--prerank-keep", type=int, default=None, metavar="K", help="how many of them (required with --prerank)")


def prerank_of(args: argparse.Namespace) -> tuple[str, int] | None:
    """(proxy, K) of the --prerank flags, or None."""
    if args.prerank is None:
        if args.prerank_keep is not None:
            raise ConfigError("--prerank-keep needs --prerank PROXY")
        return None
    if args.prerank_keep is None or args.prerank_keep < 1:
        raise ConfigError("--prerank needs --prerank-keep K (K >= 1)")
    if args.space == "rnn":
        raise ConfigError("--prerank scores image networks: the rnn space has no zero-cost proxies")
    return args.prerank, args.prerank_keep


def add_parser(sub: Any) -> None:
    p = sub.add_parser("proxies", help="zero-cost proxies of genotypes, a random sample or a NAS-Bench-201 file's "
                       "cells (one JSON line each; with a benchmark, each proxy's Kendall τ and Spearman ρ)")
    p.add_argument("space", choices=("cnn", "nb201"))
    p.add_argument("genotypes", nargs="*", help="genotype JSON files, run directories, built-in names (nb201: arch strings)")
    p.add_argument("--sample", type=int, default=None, help="also N genotypes drawn uniformly from the space")
    p.add_argument("--sample-seed", type=int, default=0, help="[0]")
    p.add_argument("--bench201", default=None, metavar="FILE", help="nb201: score the file's evaluated cells (or "
                   "--cells N of them, seeded) and rank-correlate with their test accuracy")
    p.add_argument("--bench201-dataset", default="cifar10", help="[cifar10]")
    p.add_argument("--bench201-epochs", default="200", help="[200]")
    p.add_argument("--cells", type=int, default=None, help="with --bench201: a seeded sample of this many cells [all]")
    p.add_argument("--dataset", default="cifar10", help="the minibatch's dataset [cifar10]")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--batch-size", type=int, default=64, help="[64, the authors']")
    p.add_argument("--proxies", nargs="+", default=list(ALL_PROXIES), choices=list(ALL_PROXIES), metavar="NAME",
                   help=f"[all: {' '.join(ALL_PROXIES)}]")
    p.add_argument("--init-channels", type=int, default=None, help="the final network's C [the space's]")
    p.add_argument("--layers", type=int, default=None, help="its L (nb201: N) [the space's]")
    p.add_argument("--seed", type=int, default=0, help="the minibatch's and the weights' seed [0]")
    p.add_argument("--out", type=Path, default=None, help="also write the lines to this file")


def run(args: argparse.Namespace) -> int:
    from .genotype import load_genotype
    from .spaces import SEARCH_SPACES
    space = SEARCH_SPACES.get(args.space)
    genotypes = {spec: load_genotype(spec, args.space) for spec in args.genotypes}
    if args.sample:
        rng = random.Random(args.sample_seed)
        for k in range(args.sample):
            genotypes[f"sample_{k:03d}"] = space.sample(rng, space.default_nodes, space.default_ops)
    accuracy: dict[str, float] = {}
    if args.bench201 is not None:
        if args.space != "nb201":
            raise ConfigError("--bench201 is the nb201 space's")
        from .bench201 import Benchmark201
        from .genotype201 import Cell201
        table = Benchmark201(args.bench201)
        cells = table.evaluated()
        if args.cells is not None and args.cells < len(cells):
            cells = sorted(random.Random(args.sample_seed).sample(cells, args.cells))
        for i in cells:
            arch = table.meta_archs[i]
            genotypes[arch] = Cell201.from_str(arch)
            accuracy[arch] = table.query(i, args.bench201_dataset, args.bench201_epochs)["test-accuracy"]
    if not genotypes:
        raise ConfigError("proxies needs genotypes, --sample N or --bench201 FILE")
    lines = []

    def emit(row: dict[str, Any]) -> None:
        if row.get("name") in accuracy:
            row["test_accuracy"] = accuracy[row["name"]]
        lines.append(json.dumps(row))
        print(lines[-1], flush=True)

    scores = score_genotypes(args.space, genotypes, dataset=args.dataset, data_dir=args.data_dir,
                             batch_size=args.batch_size, proxies=args.proxies, seed=args.seed,
                             init_channels=args.init_channels, layers=args.layers, log=emit)
    if accuracy:
        names = [n for n in scores if n in accuracy]
        summary = {p: rank_correlations([scores[n][p] for n in names], [accuracy[n] for n in names])
                   for p in args.proxies}
        emit({"correlations": summary, "cells": len(names), "dataset": args.bench201_dataset})
    if args.out is not None:
        from .train.checkpoint import atomic_write_text
        atomic_write_text(args.out, "\n".join(lines) + "\n")
    sys.stdout.flush()
    return 0
