"""The NAS-Bench-201 space's commands: ``search nb201`` (the conv search loop on the benchmark's
search network, every method but P-DARTS's stages and GDAS's fixed reduction cell) and ``train
nb201`` (the benchmark's network of a cell, with the benchmark's recipe by default).

Defaults and recipes come from AutoDL-Projects: the searches' ``configs/nas-benchmark/algos/DARTS.config``
and ``GDAS.config`` (50 / 250 epochs, batch 64, lr 0.025 cosine to 0.001, Nesterov momentum 0.9, weight
decay 5e-4; ``scripts-search/NAS-Bench-201-algos/*.sh``: α Adam 3e-4, weight decay 1e-3, C=16, N=5), and
the benchmark's training ``configs/nas-benchmark/hyper-opts/200E.config`` (200 epochs, batch 256, lr 0.1
cosine to 0, Nesterov, weight decay 5e-4).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

from ..bench201 import Benchmark201, BenchmarkError
from ..config import configclass, option, with_recipe
from ..genotype201 import Cell201
from ..errors import ConfigError
from ..spaces.nb201 import NB201Options
from .final import TrainConfig, Training
from .meters import evaluate
from .search import Search, SearchResult
from .search_config import SearchConfig

SEARCH_KIND, TRAIN_KIND = "search-nb201", "train-nb201"
_SEARCH = dict(epochs=50, batch_size=64, lr=0.025, lr_min=0.001, momentum=0.9, nesterov=True, weight_decay=5e-4,
               grad_clip=5.0, arch_lr=3e-4, arch_weight_decay=1e-3, init_channels=16, layers=5, train_portion=0.5)
#: xautodl's NAS-Bench-201 searches (exps/NAS-Bench-201-algos): DARTS-V2 (second order), DARTS-V1, GDAS.
NB201_SEARCH_RECIPES: dict[str, dict[str, Any]] = {
    "darts": {**_SEARCH, "order": "second"},
    "darts-v1": {**_SEARCH, "order": "first"},
    "gdas": {**_SEARCH, "order": "first", "sampler": "gdas", "epochs": 250, "tau_max": 10.0, "tau_min": 0.1},
    # DrNAS's 201-space/train_search.py and β-DARTS's nasbench201/train_search.py: 100 epochs, batch 64,
    # lr 0.025 cosine to 0.001, momentum 0.9 (no Nesterov), weight decay 3e-4, α Adam 3e-4 (1e-3), first order
    "drnas": {**_SEARCH, "order": "first", "sampler": "dirichlet", "epochs": 100, "nesterov": False, "weight_decay": 3e-4},
    "beta-darts": {**_SEARCH, "order": "first", "regularizer": "beta-decay", "epochs": 100, "nesterov": False,
                   "weight_decay": 3e-4},
}
#: What the conv search has and this space has not (P-DARTS's and DrNAS's stages, GDAS-FRC, the conv cells' cost
#: tables, stems, derivations and search networks): kept off the command line, refused if set.
_CONV_ONLY = {"progressive": False, "reduce_cell": "searched", "stem": "cifar", "derivation": "top-k",
              "search_network": "darts", "max_skip": None, "cost_derive": "top-k",
              "cost_network": "cifar", "latency_table": None, "stage_partial_channels": ()}


@configclass(**{k: v for k, v in _SEARCH.items()})
class NB201SearchConfig(NB201Options, SearchConfig):
    """A search in the NAS-Bench-201 space; defaults are xautodl's DARTS-V1 search on it."""

    SPACE = "nb201"
    recipe: str = option("none", "xautodl's NAS-Bench-201 search settings, any flag overriding them: darts (DARTS-V2, "
                         "second order), darts-v1, gdas (250 epochs, τ 10 to 0.1), drnas, beta-darts (100 epochs; their scripts); none: these defaults (darts-v1's)",
                         choices=("none", *NB201_SEARCH_RECIPES))
    progressive: bool = option(False, cli=False)
    stage_partial_channels: tuple[int, ...] = option(factory=tuple, cli=False)  # DrNAS's progressive search: conv only
    stage_layers: tuple[int, ...] = option(factory=lambda: (5, 11, 17), cli=False)  # the stages' flags: conv only
    stage_ops: tuple[int, ...] = option(factory=lambda: (8, 5, 3), cli=False)
    stage_dropout: tuple[float, ...] = option(factory=lambda: (0.1, 0.4, 0.7), cli=False)
    stage_epochs: int = option(25, cli=False)
    stage_warmup: int = option(10, cli=False)
    reduce_cell: str = option("searched", cli=False)
    stem: str = option("cifar", cli=False)
    derivation: str = option("top-k", cli=False)
    search_network: str = option("darts", cli=False)
    max_skip: int | None = option(None, cli=False)
    cost_derive: str = option("top-k", cli=False)
    cost_network: str = option("cifar", cli=False)
    latency_table: str | None = option(None, cli=False)
    cost_layers: int = option(5, "its cells per stage N", group="cost", min=1)
    cost_channels: int = option(16, "its C", group="cost", min=1)

    bench201: str | None = option(None, "a NAS-Bench-201 / NATS-Bench file (or -simple directory, the fastest) or a "
                                  "benchmark of dartsnas bench201 build: each epoch's derived cell is looked up "
                                  "(or an evaluated cell isomorphic to it)", group="benchmark", metavar="FILE",
                                  default_text="none", resumable=True)
    bench201_dataset: str = option("cifar10", "the benchmark's dataset to report (cifar10, cifar10-valid, cifar100, "
                                   "ImageNet16-120, or a built benchmark's)", group="benchmark", resumable=True)
    bench201_epochs: str = option("200", "its training budget: 12 or 200 (a built benchmark's: its --epochs)",
                                  group="benchmark", resumable=True)

    def check(self) -> None:
        for name, neutral in _CONV_ONLY.items():
            if getattr(self, name) != neutral:
                raise ConfigError(f"{{{name}}} is the conv space's: the nb201 space does not take it", names=(name,))
        if self.cost == "latency":
            raise ConfigError("{cost} latency times DARTS's cells: the nb201 space's costs are macs and params",
                              names=("cost",))
        super().check()


def nb201_search_recipe(dataset: str | None = None, **given: Any) -> NB201SearchConfig:
    """The NAS-Bench-201 search config of these fields: the recipe they name, then the fields."""
    values = with_recipe(NB201_SEARCH_RECIPES, given.pop("recipe", None), given)
    if dataset is not None:
        values["dataset"] = dataset
    return NB201SearchConfig(**values)


class NB201Search(Search):
    """The conv search loop in the NAS-Bench-201 space; with ``bench201``, each epoch's derived cell is
    looked up in the benchmark (``bench201`` in metrics.jsonl and the epoch's lines)."""

    kind = SEARCH_KIND

    def __init__(self, config: NB201SearchConfig, out_dir: str | Path, **kwargs: Any) -> None:
        self.bench = Benchmark201(config.bench201) if config.bench201 else None  # a bad file: before the run starts
        super().__init__(config, out_dir, **kwargs)

    def shape_text(self) -> str:
        return f"C={self.config.init_channels}, {self.config.layers} cells per stage"

    def describe(self) -> str:
        return super().describe() + (f", benchmark {self.config.bench201}" if self.bench is not None else "")

    def epoch_summary(self, record: dict[str, Any]) -> Callable[[dict[str, Any]], str]:
        line = super().epoch_summary(record)
        if self.bench is None:
            return line
        cfg = self.config
        cell = Cell201.from_dict(record["genotype"])
        try:
            index = self.bench.lookup(cell)
        except BenchmarkError:  # a benchmark of some cells: this one (and its class) was not built
            record["bench201"] = {"arch": cell.to_str(), "evaluated": False}
            return lambda r: f"{line(r)}\n  bench201: the cell is not in {cfg.bench201}"
        info = self.bench.query(index, cfg.bench201_dataset, cfg.bench201_epochs)
        record["bench201"] = {k: info[k] for k in ("index", "arch", "valid-accuracy", "test-accuracy") if k in info}
        found = " ".join(f"{k.split('-')[0]} {info[k]:.2f}%" for k in ("test-accuracy", "valid-accuracy") if k in info)
        return lambda r: f"{line(r)}\n  bench201 {cfg.bench201_dataset}@{cfg.bench201_epochs}: {found} (cell {index})"


def search_nb201(config: NB201SearchConfig, out_dir: str | Path, **kwargs: Any) -> SearchResult:
    """Run (or resume) a search in the NAS-Bench-201 space; returns the derived cell."""
    return NB201Search.launch(config, out_dir, **kwargs)


#: The benchmark's training (hyper-opts/200E.config): no auxiliary head, drop path or cutout.
NB201_TRAIN = dict(network="nb201", init_channels=16, layers=5, epochs=200, batch_size=256, lr=0.1, lr_min=0.0,
                   momentum=0.9, nesterov=True, weight_decay=5e-4, auxiliary_weight=0.0, drop_path=0.0, cutout=0)


@configclass(**NB201_TRAIN, genotype="best-cifar10")
class NB201TrainConfig(TrainConfig):
    """Training the benchmark's network of a NAS-Bench-201 cell; defaults are the benchmark's 200-epoch
    recipe (the 12-epoch one: --epochs 12)."""

    def check(self) -> None:
        super().check()
        if self.network != "nb201":
            raise ConfigError("{network} must be nb201 for a NAS-Bench-201 cell", names=("network",))
        if self.auxiliary_weight or self.drop_path:
            raise ConfigError("the nb201 network has no auxiliary head and no drop path: give "
                              "{auxiliary_weight} 0 and {drop_path} 0", names=("auxiliary_weight", "drop_path"))


class NB201Training(Training):
    """Training the benchmark's network; with a held-out validation split, each epoch is evaluated on it
    and on the test split (a benchmark's x-valid and x-test), each with its images and seconds."""

    kind = TRAIN_KIND

    def evaluate(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for split, loader in (("val", self.val_loader), ("test", self.test_loader)):
            if loader is None:
                continue
            start = time.perf_counter()
            out.update({f"{split}_{k}": v for k, v in evaluate(self.model, loader, self.dist).items()})
            out[f"{split}_seconds"] = time.perf_counter() - start
            out[f"{split}_images"] = len(loader.indices) if hasattr(loader, "indices") else len(loader.dataset)
        return out


def nb201_train_recipe(dataset: str | None = None, **given: Any) -> NB201TrainConfig:
    return NB201TrainConfig(**({} if dataset is None else {"dataset": dataset}), **given)


def train_nb201(config: NB201TrainConfig, out_dir: str | Path, **kwargs: Any) -> Any:
    """Train (or resume) the benchmark's network of a NAS-Bench-201 cell."""
    return NB201Training.launch(config, out_dir, **kwargs)
