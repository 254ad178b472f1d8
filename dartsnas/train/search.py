"""The DARTS search loop for convolutional cells (paper, section 3.1 and Algorithm 1).

Each step takes one α step on a validation batch (:class:`~dartsnas.architect.Architect`), then one
SGD step of the weights on a training batch. The training split is cut in two: the first
``train_portion`` trains w, the rest is the validation data that trains α.

A run directory holds ``metrics.jsonl`` (one record per epoch, with softmax(α) and the derived
genotype), ``checkpoint.pt`` (everything needed to resume) and, at the end, ``genotype.json``.
"""
from __future__ import annotations

import dataclasses
import itertools
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F

from ..architect import Architect, requires_grad_off
from ..data import (OWN_DATASETS, PYTHON_DATASET, BatchLoader, ImageDataset, data_root, from_torch_dataset,
                    load_dataset, load_splits, search_split)
from ..data.folder import FolderBatches, ImageFolderDataset, find_split, folder_info, list_images
from ..data.splits import sample_per_class
from ..errors import CheckpointError, ConfigError
from ..cost import CostTable, round_cost
from ..genotype import SKIP_OP, Genotype, derive_genotype
from ..nets import RESIZE_HINT, check_input_size
from ..ops import DARTS_OPS, EDGE_OP_SETS, edge_ops, resolve_op_set
from ..regularizers import REGULARIZERS, perturb_mixing_weights, sdarts_epsilon
from ..spaces import SEARCH_SPACES, ConvSearchSpaceConfig
from ..spaces.base import mixing_weights
from .checkpoint import GENOTYPE, load_checkpoint, tensors_to_lists
from ..config import (ArchStep, ArchWarmup, CostBudget, Curvature, Epochs, FastConv, ImageData, Momentum, RunOptions,
                      Sampler, Seed, configclass, option)
from .common import autocast, cosine_lr, python_data_config
from .hooks import RegularizerSchedule, SamplerSchedule, curvature_text, watch_curvature
from .loop import Run, batch_source, set_lr
from .meters import ClassifierEpoch, ClipMeter, EpochMeter, evaluate
from .rng import seed_everything

KIND = "search-cnn"
STAGES = "stages.json"
COST_TABLE = "cost_table.json"


@configclass()
class SearchConfig(RunOptions, FastConv, Seed, Curvature, ArchWarmup, Sampler, ArchStep, Momentum, Epochs, ImageData,
                   CostBudget):
    """Everything that defines a conv search; defaults are the paper's CIFAR-10 settings."""

    train_portion: float = option(0.5, "part of the training split that trains w; the rest trains α", above=0, below=1)
    init_channels: int = option(16, "C", group="search space", min=1)
    layers: int = option(8, "cells L", group="search space", min=1)
    nodes: int = option(4, "intermediate nodes N per cell", group="search space", min=1)
    ops: tuple[str, ...] = option(
        help="candidate op set, or a named one (any case): darts, or RobustDARTS's reduced spaces s2 (skip_connect, "
             "sep_conv_3x3), s3 (none too), s4 (noise, sep_conv_3x3), s1 (two ops per edge, chosen per edge; 4 nodes)",
        factory=lambda: DARTS_OPS, group="search space", metavar="OP")
    stem: str = option("cifar", "cifar: a stride-1 conv (the paper's, for small images); imagenet: PC-DARTS's three "
                       "stride-2 convs, the cells see 1/8 of the pixels (large images, e.g. --image-size 128 or 224)",
                       group="search space", choices=("cifar", "imagenet"))
    partial_channels: int = option(1, "PC-DARTS: mixed ops see 1/K of the channels, edges weighted by β",
                                   group="search space", min=1, metavar="K", default_text="1: plain DARTS")
    recompute: str = option("none", "activations recomputed in backward instead of kept: per cell or per edge (mixed "
                            "op); less memory for more compute, the same numbers", group="search space",
                            choices=("none", "cell", "edge"), resumable=True)
    max_skip: int | None = option(None, "cap on skip_connects in the derived normal cell", group="optimisation", min=0,
                                  default_text="none")
    regularizer: str = option("none", "sdarts-rs: weight steps see softmax(α) + U(-ε, ε) (SDARTS-RS); darts-minus: an "
                              "auxiliary skip on every edge, its weight decaying from 1 to 0 (DARTS-)",
                              group="optimisation", choices=REGULARIZERS)
    sdarts_epsilon: float = option(0.3, "SDARTS-RS: the perturbation grows linearly from 0.03 to this",
                                   group="optimisation", above=0, max=1)
    warmup_epochs: int = option(0, "linear learning-rate warm-up: epoch e < N uses lr x (e+1)/N (PC-DARTS's ImageNet "
                                "search: 5)", group="optimisation", min=0)
    latency_table: str | None = option(None, "the table of dartsnas latency-table (needed with --cost latency; its final "
                                       "network replaces --cost-network, --cost-layers, --cost-channels)", group="cost",
                                       default_text="none", metavar="FILE")
    cost_derive: str = option("top-k", "top-k: the paper's derivation, whatever it costs; budget: where top-k's network "
                              "exceeds --cost-target, picks give way to cheaper ones of their node (the least weight "
                              "lost per cost saved first) until it fits", group="cost", choices=("top-k", "budget"))
    cost_network: str = option("cifar", "the final network the cost is counted in", group="cost",
                               choices=("cifar", "imagenet"))
    cost_layers: int = option(20, "its cells L", group="cost", min=3)
    cost_channels: int = option(36, "its C", group="cost", min=1)
    reduce_cell: str = option("searched", "gdas: the reduction cells are GDAS's fixed, hand-designed one (GDAS-FRC), "
                              "only the normal cell is searched; the genotype names it and the final network builds it",
                              group="sampled search", choices=("searched", "gdas"))
    progressive: bool = option(False, "P-DARTS (Chen et al., 2019): search in stages of growing depth (--stage-layers), "
                               "pruning each edge to the ops strongest by softmax(α) between stages (--stage-ops); "
                               "the run's epochs are the stages' (--stage-epochs each); --max-skip defaults to 2",
                               group="progressive search (P-DARTS)")
    stage_layers: tuple[int, ...] = option(help="cells L of each stage's search network", factory=lambda: (5, 11, 17),
                                           group="progressive search (P-DARTS)", metavar="L")
    stage_ops: tuple[int, ...] = option(help="candidate ops per edge in each stage (the first: the whole op set)",
                                        factory=lambda: (8, 5, 3), group="progressive search (P-DARTS)", metavar="K")
    stage_dropout: tuple[float, ...] = option(help="dropout rate on skip_connect in each stage, decaying within it",
                                              factory=lambda: (0.1, 0.4, 0.7), group="progressive search (P-DARTS)",
                                              metavar="P")
    stage_epochs: int = option(25, "epochs of each stage", group="progressive search (P-DARTS)", min=1)
    stage_warmup: int = option(10, "first epochs of each stage that train only the weights (α frozen)",
                               group="progressive search (P-DARTS)", min=0)
    sample: tuple[float, float] = option(
        help="imagenet: the parts of every class of the training images sampled to train w and α (PC-DARTS: 0.1 and "
             "0.025)", factory=lambda: (0.1, 0.025), group="data", metavar="P")

    DATASET_COMMAND = "search"
    TITLES = {"collapse": "collapse (Zela et al., 2020)"}
    FLAG_HELP = {"cost": "macs, params or latency: the expected cost of the final network (--cost-network, "
                         "--cost-layers, --cost-channels, or --latency-table's) joins α's objective"}

    def __post_init__(self) -> None:
        super().__post_init__()
        self.ops = resolve_op_set(self.ops)  # a named op set: --ops s2 (or S2)
        if self.progressive:  # the run's epochs are the stages'
            total = len(self.stage_layers) * self.stage_epochs
            if self.epochs not in (total, type(self).__dataclass_fields__["epochs"].default):
                raise ConfigError(f"{{epochs}} {self.epochs} with {{progressive}}: the run's epochs are "
                                  f"{len(self.stage_layers)} stages x {{stage_epochs}} {self.stage_epochs} = {total}",
                                  names=("epochs", "progressive", "stage_epochs"))
            self.epochs = total
            if self.max_skip is None:
                self.max_skip = 2  # P-DARTS's cap on the normal cell's skip_connects

    def stage_of(self, epoch: int) -> tuple[int, int]:
        """P-DARTS: (stage, epoch within it), both 0-based, of the run's 0-based ``epoch``."""
        return epoch // self.stage_epochs, epoch % self.stage_epochs

    def space(self, num_classes: int = 10, in_channels: int = 3) -> ConvSearchSpaceConfig:
        """The search network this config builds, for the data's classes and channels."""
        return ConvSearchSpaceConfig(init_channels=self.init_channels, layers=self.layers, nodes=self.nodes,
                                     num_classes=num_classes, in_channels=in_channels, ops=tuple(self.ops),
                                     partial_channels=self.partial_channels,
                                     auxiliary_skip=self.regularizer == "darts-minus", recompute=self.recompute,
                                     stem=self.stem, sampler=self.sampler, sampler_seed=self.seed + 13,
                                     reduce_cell=self.reduce_cell)

    def check(self) -> None:
        super().check()
        if self.cost_derive == "budget" and self.cost is None:
            raise ConfigError("{cost_derive} budget needs {cost} and {cost_target}",
                              names=("cost_derive", "cost", "cost_target"))
        if self.cost == "latency" and self.latency_table is None:
            raise ConfigError("{cost} latency needs {latency_table}, a table of dartsnas latency-table",
                              names=("cost", "latency_table"))
        if len(self.sample) != 2 or not all(0 < p < 1 for p in self.sample):
            raise ConfigError(f"{{sample}} needs two parts of a class in (0, 1), for w and α, got {list(self.sample)}",
                              names=("sample",))
        if self.sampler == "gdas":
            self.check_exclusive("sampler", {"hessian_every": 0, "regularizer": "none", "progressive": False})
        if self.reduce_cell != "searched":
            self.check_exclusive("reduce_cell", {"cost": None, "hessian_every": 0, "progressive": False,
                                                 "regularizer": "none"})
        if self.progressive:
            self.check_stages()
        self.space().validate()  # before any data is read

    def check_stages(self) -> None:
        n = len(self.stage_layers)
        if not n or len(self.stage_ops) != n or len(self.stage_dropout) != n:
            raise ConfigError(f"{{stage_layers}}, {{stage_ops}} and {{stage_dropout}} need one value per stage, got "
                              f"{len(self.stage_layers)}, {len(self.stage_ops)} and {len(self.stage_dropout)}",
                              names=("stage_layers", "stage_ops", "stage_dropout"))
        if len(self.ops) == 1 and self.ops[0] in EDGE_OP_SETS:
            raise ConfigError("{progressive} prunes one op set per edge: a named per-edge set (s1) does not apply",
                              names=("progressive", "ops"))
        if self.stage_ops[0] != len(self.ops) or any(b > a for a, b in zip(self.stage_ops, self.stage_ops[1:])) \
                or self.stage_ops[-1] < 1:
            raise ConfigError(f"{{stage_ops}} {list(self.stage_ops)} must start at the op set's {len(self.ops)} and "
                              "shrink (or stay) from stage to stage", names=("stage_ops", "ops"))
        if any(L < 3 for L in self.stage_layers):
            raise ConfigError(f"{{stage_layers}} must all be >= 3, got {list(self.stage_layers)}",
                              names=("stage_layers",))
        if any(not 0 <= p < 1 for p in self.stage_dropout):
            raise ConfigError(f"{{stage_dropout}} must lie in [0, 1), got {list(self.stage_dropout)}",
                              names=("stage_dropout",))
        if self.stage_warmup >= self.stage_epochs:
            raise ConfigError(f"{{stage_warmup}} {self.stage_warmup} leaves α no epoch of the {{stage_epochs}} "
                              f"{self.stage_epochs}", names=("stage_warmup", "stage_epochs"))
        self.check_exclusive("progressive", {"cost": None, "hessian_every": 0, "arch_start_epoch": 0},
                             {"arch_start_epoch": "each stage warms up for {stage_warmup} epochs"})


#: Per-dataset departures from the paper's CIFAR-10 search: PC-DARTS's ImageNet search (Xu et al., 2020:
#: 10% / 2.5% of each class for w / α, partial channels K=2, the three-conv stem, batch 1024 with lr 0.5
#: warmed up over 5 epochs, α frozen for the first 35 of 50 epochs, α learning rate 6e-3).
SEARCH_RECIPES: dict[str, dict[str, Any]] = {
    "imagenet": dict(stem="imagenet", partial_channels=2, epochs=50, batch_size=1024, lr=0.5, lr_min=0.0,
                     weight_decay=3e-4, warmup_epochs=5, arch_lr=6e-3, arch_start_epoch=35, image_size=224,
                     workers=4),
}


def search_recipe(dataset: str, **overrides: Any) -> SearchConfig:
    """The search config for ``dataset``: its recipe where it has one, then ``overrides``."""
    return SearchConfig(**{"dataset": dataset, **SEARCH_RECIPES.get(dataset, {}), **overrides})


@dataclass
class SearchResult:
    genotype: Genotype
    metrics: list[dict[str, Any]]
    out_dir: Path
    early_stop: dict[str, Any] | None = None  # DARTS-ES: the epoch whose genotype this is, and why


def search_step(model: torch.nn.Module, architect: Architect, w_optimizer: torch.optim.Optimizer,
                train_batch: tuple[torch.Tensor, torch.Tensor], val_batch: tuple[torch.Tensor, torch.Tensor],
                lr: float, grad_clip: float, finite: Callable[..., bool] | None = None,
                update_alpha: bool = True, net: torch.nn.Module | None = None,
                loss_fn: Callable[[Any, Any], torch.Tensor] = F.cross_entropy,
                perturb: Callable[[], Any] | None = None
                ) -> tuple[torch.Tensor, Any, torch.Tensor, bool]:
    """One step of Algorithm 1: an α step on ``val_batch``, then a w step on ``train_batch``.

    Returns the training loss, outputs (logits), (pre-clipping) weight-gradient norm and whether w
    was updated, without syncing unless ``finite`` is given: then the weights are updated only if
    ``finite(loss, grad_norm)``. ``update_alpha=False`` is the warm-up of PC-DARTS (weights only).
    ``net`` runs the weight step's forward (the model in DistributedDataParallel), else ``model``;
    ``loss_fn(outputs, targets)`` is the weight step's loss (a user model's, in a model search);
    ``perturb()`` gives the mixing weights the weight step sees instead of softmax(α) (SDARTS-RS).
    """
    if update_alpha:
        architect.step(train_batch, val_batch, lr)
    x, y = train_batch
    if perturb is not None:
        model.mixing_override = perturb()
    try:
        with requires_grad_off(model.arch_parameters()):
            logits = (net or model)(x)
            loss = loss_fn(logits, y)
            w_optimizer.zero_grad(set_to_none=True)
            loss.backward()
    finally:
        if perturb is not None:
            model.mixing_override = None
    params = [p for group in w_optimizer.param_groups for p in group["params"]]
    grad_norm = torch.nn.utils.clip_grad_norm_(params, grad_clip)
    ok = finite is None or finite(loss, grad_norm)
    if ok:
        w_optimizer.step()
    return loss.detach(), logits.detach(), grad_norm, ok


def bilevel_state(run: Any) -> dict[str, Any]:
    """What a bilevel search over image batches keeps: model and α, both optimisers, both loaders."""
    return {"model": run.model.state_dict(), "w_optimizer": run.w_optimizer.state_dict(),
            "architect": run.architect.state_dict(),
            "loaders": {"train": run.train_loader.state_dict(), "val": run.val_loader.state_dict()}}


def load_bilevel_state(run: Any, state: dict[str, Any]) -> None:
    run.model.load_state_dict(state["model"])
    run.w_optimizer.load_state_dict(state["w_optimizer"])
    run.architect.load_state_dict(state["architect"])
    run.train_loader.load_state_dict(state["loaders"]["train"])
    run.val_loader.load_state_dict(state["loaders"]["val"])


class Search(Run):
    """A resumable DARTS search run writing into ``out_dir`` (see the module docstring)."""

    kind, what = KIND, "search"

    def __init__(self, config: SearchConfig, out_dir: str | Path, *, resume: bool = False,
                 overwrite: bool = False, quiet: bool = False,
                 log: Callable[[str], None] = print,
                 tensorboard: bool = False, train_data: Any = None, val_data: Any = None) -> None:
        config = python_data_config(config, train_data, val_data)
        saved = self.open(config, out_dir, resume=resume, overwrite=overwrite, quiet=quiet, log=log,
                          tensorboard=tensorboard)
        dist = self.dist

        seed = config.seed
        common = dict(device=self.device, channels_last=config.channels_last, rank=dist.rank,
                      world_size=dist.world_size, workers=config.workers)
        loaders = (imagenet_search_loaders if config.dataset == "imagenet" else image_search_loaders)(
            config, common, dist.enabled, train_data, val_data)
        for line in loaders.description:
            self.log(line)
        self.train_loader, self.val_loader, self.eval_loader = loaders.train, loaders.val, loaders.eval
        self.data_info = loaders.info
        space = config.space(num_classes=loaders.num_classes, in_channels=loaders.in_channels)
        check_input_size("the search network" + (f" with --stem {config.stem}" if config.stem != "cifar" else ""),
                         space.downsampling, *loaders.image_size, RESIZE_HINT if config.dataset == "imagefolder" else "")
        fixed = []
        if config.hessian_every:  # the eigenvalue's fixed validation batches
            fixed = list(itertools.islice(loaders.fixed(config.batch_size), config.hessian_batches))

        seed_everything(seed)
        self.stage, self.stages = 0, []  # P-DARTS: the stage running and what each one searched
        if config.progressive:
            space = dataclasses.replace(space, layers=config.stage_layers[0])
            if saved is not None and saved.get("stage"):  # resumed in a later stage: its pruned space
                self.stage = int(saved["stage"])
                space = self.stage_space(space, self.stage, saved["edge_ops"])
        self.space = space
        self.build_stage(space, split=True)
        self.cost_table = None
        if config.cost is not None:
            self.cost_table = self.open_cost_table(config, loaders)
            self.architect.penalty = self.cost_penalty
        self.net = self.wrap()
        self.autocast = autocast(self.device, config.amp)
        self.smoothing = torch.Generator().manual_seed(seed + 7)  # SDARTS-RS's noise, the same on every rank
        self.curvature = watch_curvature(config, self.model, fixed, lambda: self.derived().to_dict(),
                                         dist)
        self.hooks += [RegularizerSchedule(config, self.model), self.curvature]
        if self.model.sampler is not None:
            self.hooks.append(SamplerSchedule(config, self.model.sampler))
        self.begin(saved, self.data_info)

    # -- the network (one per stage with --progressive) ---------------------------------------------

    def build_stage(self, space: ConvSearchSpaceConfig, split: bool) -> None:
        """The search network of ``space`` with its weight optimiser and architect (fresh, as each of
        P-DARTS's stages is); ``split``: the ranks' random streams part here (the run's first network)."""
        config = self.config
        self.model = self.place_model(SEARCH_SPACES.get("cnn")(space), config.channels_last, split=split)
        self.w_optimizer = torch.optim.SGD(self.model.weight_parameters(), lr=config.lr,
                                           momentum=config.momentum,
                                           weight_decay=config.weight_decay)
        self.architect = Architect(self.model, self.w_optimizer, order=config.order,
                                   lr=config.arch_lr, betas=tuple(config.arch_betas),
                                   weight_decay=config.arch_weight_decay, fd_step=config.fd_step,
                                   fd_scheme=config.fd_scheme, grad_clip=config.grad_clip, sync=self.dist.average)

    def wrap(self) -> torch.nn.Module:
        """The weight step's forward runs in DDP (gradients averaged in buckets during backward); α is
        left to the architect. With SyncBatchNorm the statistics already agree across ranks. GDAS
        leaves the unsampled ops without gradients: DDP must look for them."""
        return self.dist.wrap(self.model, ignore=self.model.arch_parameters(), broadcast_buffers=not self.config.sync_bn,
                              find_unused=self.config.sampler == "gdas")

    def stage_space(self, space: ConvSearchSpaceConfig, stage: int, edge_op_sets: dict[str, Any]
                    ) -> ConvSearchSpaceConfig:
        """P-DARTS: stage ``stage``'s network: its depth, and the ops each edge kept."""
        sets = {cell: tuple(tuple(ops) for ops in rows) for cell, rows in edge_op_sets.items()}
        return dataclasses.replace(space, layers=self.config.stage_layers[stage], edge_op_sets=sets)

    def next_stage(self, stage: int) -> None:
        """P-DARTS: prune every edge to the ops strongest by softmax(α) of the stage that ended, then
        build the deeper network of ``stage`` afresh (its weights seeded by --seed and the stage)."""
        keep = self.config.stage_ops[stage]
        weights = dict(zip(("normal", "reduce"), self.model.arch_weights()))
        sets = {cell: prune_edge_ops(weights[cell], self.space.edge_ops(cell), keep) for cell in weights}
        self.stage, self.space = stage, self.stage_space(self.space, stage, sets)
        self.net = None  # DDP's reducer goes before its model is replaced
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.config.seed + 1009 * stage)
            self.build_stage(self.space, split=False)
        self.net = self.wrap()
        self.log(f"stage {stage + 1}/{len(self.config.stage_layers)}: {self.space.layers} cells, the {keep} "
                 f"strongest ops of every edge kept (written to {self.out / STAGES})")

    def edge_op_lists(self) -> dict[str, list[list[str]]]:
        """The ops every edge of both cell types searches now, as JSON lists."""
        return {cell: [list(ops) for ops in self.space.edge_ops(cell)] for cell in ("normal", "reduce")}

    def record_stage(self, dropout: float) -> dict[str, Any]:
        """P-DARTS: the stage's fields of the epoch's record; its op sets into stages.json."""
        cfg = self.config
        if len(self.stages) <= self.stage:
            first = self.stage * cfg.stage_epochs + 1
            self.stages.append({"stage": self.stage + 1, "layers": self.space.layers,
                                "ops_per_edge": cfg.stage_ops[self.stage], "epochs": [first, first + cfg.stage_epochs - 1],
                                "skip_dropout": cfg.stage_dropout[self.stage], "edge_ops": self.edge_op_lists()})
            self.write_text(STAGES, json.dumps(self.stages, indent=1) + "\n")
        return {"stage": self.stage + 1, "layers": self.space.layers, "skip_dropout": round(dropout, 6)}

    # -- cost --------------------------------------------------------------------------------------

    def open_cost_table(self, config: SearchConfig, loaders: SearchLoaders) -> CostTable:
        """The run's cost table: its file in the run directory (a resumed run keeps it), else the
        latency table given, or one counted for the final network on the data's image size; written
        there."""
        path = self.out / COST_TABLE
        if path.is_file():
            return CostTable.read(path)
        data = dict(image_size=tuple(loaders.image_size), num_classes=loaders.num_classes,
                    in_channels=loaders.in_channels)
        if config.latency_table is not None:
            table = CostTable.read(config.latency_table)
            table.check_fits(config.ops, config.nodes, source=config.latency_table, **data)
        else:
            table = CostTable.build(config.ops, config.nodes, network=config.cost_network,
                                    init_channels=config.cost_channels, layers=config.cost_layers, **data)
        table.check_kind(config.cost)
        self.write_text(COST_TABLE, json.dumps(table.to_dict()) + "\n")
        return table

    def expected_cost(self) -> torch.Tensor:
        return self.cost_table.expected(self.config.cost, *self.model.arch_weights(), *self.model.edge_weights())

    def cost_penalty(self) -> torch.Tensor:
        derived = 0.0
        if self.config.cost_penalty == "derived":  # top-k's cell: the one a budget-keeping derivation would cut
            derived = self.cost_table.of_genotype(self.model.genotype(self.config.max_skip))[self.config.cost]
        return self.config.budget_penalty(self.expected_cost(), derived)

    def derived(self) -> Genotype:
        """The genotype α derives to now: top-k (with --max-skip's cap), kept within the budget with
        --cost-derive budget."""
        cfg = self.config
        genotype = self.model.genotype(cfg.max_skip)
        if cfg.cost_derive == "budget":
            genotype = self.cost_table.within(genotype, cfg.cost, cfg.cost_target, *self.model.ranking_weights(),
                                              max_skip=cfg.max_skip)
        return genotype

    # -- state ---------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        state = {**bilevel_state(self), "smoothing": self.smoothing.get_state(), "genotype": self.derived().to_dict()}
        if self.config.progressive:
            state.update(stage=self.stage, stages=self.stages, edge_ops=self.edge_op_lists())
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        load_bilevel_state(self, state)
        if "smoothing" in state:
            self.smoothing.set_state(state["smoothing"])
        if self.config.progressive:
            self.stages = list(state["stages"])

    # -- the loop --------------------------------------------------------------------------------

    def train_epoch(self) -> dict[str, float]:
        """One epoch of alternating α and w steps; returns mean train loss and accuracy."""
        model, cfg = self.model, self.config
        model.train()
        xi = self.w_optimizer.param_groups[0]["lr"]
        state = ClassifierEpoch(EpochMeter(self.device, self.dist), ClipMeter(cfg.grad_clip, self.device))
        check = self.checks_every_step
        batches = batch_source(self.train_loader)
        perturb = None
        if cfg.regularizer == "sdarts-rs":
            epsilon = sdarts_epsilon(self.epoch, cfg.epochs, cfg.sdarts_epsilon)
            perturb = lambda: tuple(perturb_mixing_weights(w, epsilon, self.smoothing)  # noqa: E731
                                    for w in model.arch_weights())

        def step(i: int) -> tuple[int, bool, dict[str, Any]]:
            x, y = batches()
            val_batch = self.val_loader.next_batch()
            with self.autocast:
                loss, logits, grad_norm, ok = search_step(
                    model, self.architect, self.w_optimizer, (x, y), val_batch, xi, cfg.grad_clip,
                    finite=self.all_finite if check else None, update_alpha=self.alpha_moves(),
                    net=self.net, perturb=perturb)
            if check:
                self.check_arch_finite(i + 1, model.arch_parameters())
            if ok:
                state.update(loss, logits, y, grad_norm)
            return y.shape[0], ok, {"loss": loss, "acc": lambda: state.meter.accuracy}

        steps, seconds = self.run_steps(state, step, self.epoch_steps(self.train_loader, cfg.steps_per_epoch))
        return state.summary(self, steps, seconds)

    def alpha_moves(self) -> bool:
        """Whether this epoch takes α steps: after --arch-start-epoch, or each stage's --stage-warmup."""
        if self.config.progressive:
            return self.config.stage_of(self.epoch)[1] >= self.config.stage_warmup
        return self.epoch >= self.config.arch_start_epoch

    def epoch_start(self) -> dict[str, Any]:
        cfg = self.config
        epoch, epochs, extra = self.epoch, cfg.epochs, {}
        if cfg.progressive:  # each stage: a fresh cosine schedule, and the skip dropout decaying
            stage, epoch = cfg.stage_of(self.epoch)
            if stage != self.stage:
                self.next_stage(stage)
            epochs = cfg.stage_epochs
            dropout = pdarts_skip_dropout(cfg.stage_dropout[stage], epoch, epochs, cfg.stage_warmup)
            self.model.set_skip_dropout(dropout)
            extra = self.record_stage(dropout)
        lr = cosine_lr(epoch, epochs, cfg.lr, cfg.lr_min)
        if self.epoch < cfg.warmup_epochs:
            lr *= (self.epoch + 1) / cfg.warmup_epochs
        set_lr(self.w_optimizer, lr)
        return {"lr": lr, **extra}

    def evaluate(self) -> dict[str, float]:
        """Loss and accuracy of the search network on the validation split (no augmentation)."""
        result = evaluate(self.model, self.eval_loader, self.dist)
        return {"val_loss": result["loss"], "val_acc": result["top1"]}

    def describe(self) -> str:
        cfg = self.config
        layers = f"L={'/'.join(map(str, cfg.stage_layers))} (P-DARTS stages)" if cfg.progressive else f"L={cfg.layers}"
        sampler = ", GDAS sampler" if cfg.sampler == "gdas" else ""
        return (f"search cnn: {cfg.order} order{sampler}, C={cfg.init_channels} {layers} "
                f"N={cfg.nodes}, {len(self.train_loader.indices)} train / "
                f"{len(self.val_loader.indices)} val images, {self.where()}")

    def epoch_summary(self, record: dict[str, Any]) -> Callable[[dict[str, Any]], str]:
        cfg = self.config
        genotype = self.derived()
        weights = dict(zip(("normal", "reduce"), self.model.arch_weights()))
        skips = sum(op == SKIP_OP for op, _ in genotype.normal)
        record.update({
            "skip_connect_normal": skips,
            "genotype": genotype.to_dict(),
            "alphas": {cell: tensors_to_lists(w) for cell, w in weights.items() if w is not None},
        })
        cost = ""
        if self.cost_table is not None:
            with torch.no_grad():
                record["expected_cost"] = round_cost(cfg.cost, float(self.expected_cost()))
            record["derived_cost"] = round_cost(cfg.cost, self.cost_table.of_genotype(genotype)[cfg.cost])
            cost = f" | {cfg.cost} E {record['expected_cost']:.4g} derived {record['derived_cost']:.4g}"
        if self.model.partial:
            e_normal, e_reduce = self.model.edge_weights()
            record["edge_weights"] = {"normal": [round(v, 6) for v in e_normal.tolist()],
                                      "reduce": [round(v, 6) for v in e_reduce.tolist()]}
        stage = f"stage {record['stage']} (L={record['layers']}) " if cfg.progressive else ""
        return lambda r: (f"epoch {r['epoch']}/{cfg.epochs} {stage}lr {r['lr']:.5f} "
                          f"train loss {r['train_loss']:.4f} acc {r['train_acc']:.4f} | "
                          f"val loss {r['val_loss']:.4f} acc {r['val_acc']:.4f} | "
                          f"skip(normal) {skips}{cost}{curvature_text(r)} | {r['seconds']:.1f}s\n"
                          f"  genotype {genotype.to_json()}")

    def finish(self) -> SearchResult:
        genotype = self.derived()
        if self.curvature.stops():
            self.log(self.curvature.reason())
            genotype = Genotype.from_dict(self.curvature.kept_genotype())
        self.write_text(GENOTYPE, genotype.to_json(indent=None) + "\n")
        return SearchResult(genotype, self.metrics.read(), self.out, self.curvature.stopped)


def search(config: SearchConfig, out_dir: str | Path, **kwargs: Any) -> SearchResult:
    """Run (or with ``resume=True`` continue) a conv search; returns the derived genotype.

    ``train_data`` (and optionally ``val_data``, the images that train α) may be any torch Dataset of
    (CHW image, label), uint8 or float in [0, 1]: the search then runs on them instead of
    ``config.dataset`` (recorded as ``python``; a resumed run needs them again).
    """
    return Search(config, out_dir, **kwargs).execute()


@dataclass
class SearchLoaders:
    """A search's batches: w's (``train``), α's (``val``), the α images in order (``eval``, and
    ``fixed(batch_size)``, the eigenvalue's batches), with what the network and the run need."""

    train: Any
    val: Any
    eval: Any
    fixed: Callable[[int], Any]
    num_classes: int
    in_channels: int
    image_size: tuple[int, int]
    info: dict[str, Any]
    description: list[str]


def image_search_loaders(config: SearchConfig, common: dict[str, Any], drop_last: bool, train_data: Any,
                         val_data: Any) -> SearchLoaders:
    """Images held in memory or streamed: the training split cut at ``train_portion`` (or α's own images)."""
    data, alpha_data = load_search_data(config, train_data, val_data)
    description = [data.description]
    if alpha_data is None:
        train_idx, val_idx = search_split(data, config.train_portion, config.seed)
    else:
        description.append(alpha_data.description)
        train_idx, val_idx = None, None
    alpha_data = alpha_data or data
    in_order = lambda batch_size: BatchLoader(alpha_data, val_idx, batch_size=batch_size,  # noqa: E731
                                              shuffle=False, augment=False, **common)
    return SearchLoaders(
        train=BatchLoader(data, train_idx, batch_size=config.batch_size, seed=config.seed, drop_last=drop_last,
                          **common),
        val=BatchLoader(alpha_data, val_idx, batch_size=config.batch_size, seed=config.seed + 1, drop_last=drop_last,
                        **common),
        eval=in_order(max(config.batch_size, 256)), fixed=in_order, num_classes=data.num_classes,
        in_channels=data.in_channels, image_size=data.image_size, info=data.info(), description=description)


def imagenet_search_loaders(config: SearchConfig, common: dict[str, Any], drop_last: bool, train_data: Any,
                            val_data: Any) -> SearchLoaders:
    """PC-DARTS's ImageNet search data: seeded samples of every class of the training folders (w's and
    α's, disjoint), decoded per batch by worker processes with a random-resized crop and a flip."""
    root = data_root(config.data_dir)
    samples, classes = list_images(find_split(root, "train"))
    labels = torch.tensor([label for _, label in samples], dtype=torch.int64)
    w_idx, alpha_idx = sample_per_class(labels, tuple(config.sample), config.seed)
    size = config.image_size or 224
    train_ds = ImageFolderDataset(samples, train=True, image_size=size, jitter=False, seed=config.seed)
    plain_ds = ImageFolderDataset(samples, train=False, image_size=size)
    in_order = lambda batch_size: FolderBatches(plain_ds, alpha_idx, batch_size=batch_size,  # noqa: E731
                                                shuffle=False, **common)
    description = [f"{root}: {len(classes)} classes, {len(samples)} training images; sampled per class: "
                   f"{len(w_idx)} train w ({config.sample[0]:g}), {len(alpha_idx)} train α ({config.sample[1]:g})"]
    return SearchLoaders(
        train=FolderBatches(train_ds, w_idx, batch_size=config.batch_size, seed=config.seed, drop_last=drop_last,
                            **common),
        val=FolderBatches(train_ds, alpha_idx, batch_size=config.batch_size, seed=config.seed + 1,
                          drop_last=drop_last, **common),
        eval=in_order(max(config.batch_size, 256)), fixed=in_order, num_classes=len(classes), in_channels=3,
        image_size=(size, size), info=folder_info("imagenet", classes, size), description=description)


def load_search_data(config: SearchConfig, train_data: Any,
                     val_data: Any) -> tuple[ImageDataset, ImageDataset | None]:
    """The search's training images and, where given apart, the images that train α."""
    options = config.own_data_options()
    if config.dataset == PYTHON_DATASET:
        data = from_torch_dataset(train_data, options, what="train_data")
        alpha = None if val_data is None else from_torch_dataset(
            val_data, options, classes=data.classes, stats=(data.mean, data.std), what="val_data")
        return data, alpha
    if config.dataset in OWN_DATASETS:
        return load_splits(config.dataset, config.data_dir, options=options, test=False)[0], None
    return load_dataset(config.dataset, "train", data_dir=config.data_dir, download=config.download,
                        verify=config.verify), None


def prune_edge_ops(weights: torch.Tensor, names: tuple[tuple[str, ...], ...], keep: int
                   ) -> tuple[tuple[str, ...], ...]:
    """P-DARTS's pruning: on every edge (row of ``weights``, softmax(α)), the ``keep`` ops of largest
    weight, in their order in the edge's set."""
    kept = []
    for row, ops in zip(weights.detach().cpu(), names):
        top = sorted(torch.topk(row, min(keep, len(ops))).indices.tolist())
        kept.append(tuple(ops[i] for i in top))
    return tuple(kept)


def pdarts_skip_dropout(rate: float, epoch: int, epochs: int, warmup: int) -> float:
    """P-DARTS's dropout on skip_connect at ``epoch`` of a stage of ``epochs``: falling linearly from
    ``rate`` over the weights-only warm-up, then decaying as rate x exp(-0.2 (epoch - warmup))."""
    if epoch < warmup:
        return rate * (epochs - epoch - 1) / epochs
    return rate * math.exp(-0.2 * (epoch - warmup))


def derive_from_checkpoint(path: str | Path, max_skip: int | None = None) -> Genotype:
    """The genotype α in a search checkpoint derives to (``max_skip`` overrides the run's): ranked by
    α·β with PC-DARTS, kept within the budget with ``cost_derive="budget"`` (the run's cost table)."""
    from ..spaces.conv import edge_softmax
    state = load_checkpoint(path, kind=KIND)
    config = SearchConfig.from_dict(state["config"])
    model_state = state["model"]
    try:
        alpha_normal = model_state["alpha_normal"]
        alpha_reduce = model_state["alpha_reduce"] if config.reduce_cell == "searched" else alpha_normal
    except KeyError:
        raise CheckpointError(f"{path}: checkpoint holds no α") from None
    n = alpha_normal.shape[0]
    names = {cell: edge_ops(config.ops, n, cell) for cell in ("normal", "reduce")}
    if state.get("edge_ops") is not None:  # P-DARTS: the ops the last stage's edges kept
        names = {cell: tuple(tuple(ops) for ops in rows) for cell, rows in state["edge_ops"].items()}
    w_normal, w_reduce = mixing_weights(alpha_normal), mixing_weights(alpha_reduce)
    if "beta_normal" in model_state:  # PC-DARTS ranks edges by α·β
        w_normal = w_normal * edge_softmax(model_state["beta_normal"], config.nodes)[:, None]
        w_reduce = w_reduce * edge_softmax(model_state["beta_reduce"], config.nodes)[:, None]
    max_skip = config.max_skip if max_skip is None else max_skip
    genotype = derive_genotype(w_normal, w_reduce, names["normal"], reduce_op_names=names["reduce"],
                               max_skip=max_skip)
    if config.reduce_cell != "searched":  # GDAS-FRC: the fixed reduction cell, named
        genotype = genotype.with_fixed_reduction(config.reduce_cell)
    if config.cost_derive == "budget":
        run_dir = Path(path) if Path(path).is_dir() else Path(path).parent
        table = CostTable.read(run_dir / COST_TABLE)
        genotype = table.within(genotype, config.cost, config.cost_target, w_normal, w_reduce, max_skip=max_skip)
    return genotype
