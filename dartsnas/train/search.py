"""The DARTS search loop for convolutional cells (paper, section 3.1 and Algorithm 1), in any image
search space (``SearchConfig.SPACE``, the DARTS conv space) with the methods its config selects.

Each step takes one α step on a validation batch, then one SGD step of the weights on a training
batch (:class:`~dartsnas.train.bilevel.BilevelSearch`). The training split is cut in two: the first
``train_portion`` trains w, the rest is the validation data that trains α.

A run directory holds ``metrics.jsonl`` (one record per epoch, with softmax(α) and the derived
genotype), ``checkpoint.pt`` (everything needed to resume) and, at the end, ``genotype.json``.
"""
from __future__ import annotations

import dataclasses

import itertools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from ..cost import CostTable
from ..errors import CheckpointError, ConfigError
from ..genotype import SKIP_OP, Genotype
from ..methods.pdarts import stage_space
from ..nets import RESIZE_HINT, check_input_size
from ..spaces import SEARCH_SPACES
from ..spaces.conv import ARCH_TENSORS, ConvSearchSpaceConfig, ranking_weights
from .bilevel import BilevelSearch, load_loaders_state, loaders_state, search_step
from .checkpoint import GENOTYPE, load_checkpoint, tensors_to_lists
from .common import autocast, cosine_lr, python_data_config
from .hooks import curvature_text
from .loop import batch_source, set_lr
from .meters import ClassifierEpoch, ClipMeter, EpochMeter, evaluate
from .rng import seed_everything
from .search_config import SearchConfig
from .search_data import search_loaders

KIND = "search-cnn"
COST_TABLE = "cost_table.json"


@dataclass
class SearchResult:
    genotype: Genotype
    metrics: list[dict[str, Any]]
    out_dir: Path
    early_stop: dict[str, Any] | None = None  # DARTS-ES: the epoch whose genotype this is, and why


class CellPrices:
    """What a budgeted conv search prices (methods.budget.Prices): the cost table of the final
    network, at the search network's distribution now."""

    def __init__(self, run: "Search", table: CostTable) -> None:
        self.run, self.table = run, table

    def expected(self, kind: str) -> torch.Tensor:
        model = self.run.model
        return self.table.expected(kind, *model.arch_weights(), *model.edge_weights())

    def of(self, genotype: Genotype) -> dict[str, float]:
        return self.table.of_genotype(genotype)

    def top_k(self) -> Genotype:
        return self.run.model.genotype(self.run.config.max_skip)


class Search(BilevelSearch):
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
        common = dict(device=self.device, channels_last=config.channels_last, rank=dist.rank,
                      world_size=dist.world_size, workers=config.workers)
        loaders = search_loaders(config, common, dist.enabled, train_data, val_data)
        for line in loaders.description:
            self.log(line)
        self.train_loader, self.val_loader, self.eval_loader = loaders.train, loaders.val, loaders.eval
        self.data_info = loaders.info
        self.search_space = SEARCH_SPACES.get(config.SPACE)
        space = config.space(num_classes=loaders.num_classes, in_channels=loaders.in_channels)
        check_input_size("the search network" + (f" with --stem {config.stem}" if config.stem != "cifar" else ""),
                         space.downsampling, *loaders.image_size, RESIZE_HINT if config.dataset == "imagefolder" else "")
        fixed = []
        if config.hessian_every:  # the eigenvalue's fixed validation batches
            fixed = list(itertools.islice(loaders.fixed(config.batch_size), config.hessian_batches))

        seed_everything(config.seed)
        self.select_methods()
        for method in self.methods:  # a staged method's first network (P-DARTS), or a resumed later stage's
            space = method.first_space(space, saved)
        self.prices: CellPrices | None = None
        self.data_shape = dict(image_size=tuple(loaders.image_size), num_classes=loaders.num_classes,
                               in_channels=loaders.in_channels)
        self.build_network(space, split=True)
        self.wrap()
        self.autocast = autocast(self.device, config.amp)
        self.watch(fixed, lambda: self.derived().to_dict())
        self.begin(saved, self.data_info)

    def build_network(self, space: ConvSearchSpaceConfig, split: bool) -> None:
        """The search network of ``space`` with its weight optimiser and architect (fresh, as each of
        P-DARTS's stages is); ``split``: the ranks' random streams part here (the run's first network)."""
        cfg = self.config
        self.space = space
        model = self.place_model(self.search_space.build(space), cfg.channels_last, split=split)
        if cfg.cost is not None and self.prices is None:
            self.prices = CellPrices(self, self.open_cost_table())
        self.bilevel(model, momentum=cfg.momentum, nesterov=cfg.nesterov)

    def open_cost_table(self) -> CostTable:
        """The run's cost table: its file in the run directory (a resumed run keeps it), else the
        space's table of the final network (or the latency table given); written there."""
        cfg, path = self.config, self.out / COST_TABLE
        if self.dir.started and path.is_file():  # a resumed run's; a fresh run's own, never an old run's
            return CostTable.read(path)
        table = self.search_space.cost_table(cfg.ops, cfg.nodes, network=cfg.cost_network, init_channels=cfg.cost_channels,
                                             layers=cfg.cost_layers, latency_table=cfg.latency_table, **self.data_shape)
        table.check_kind(cfg.cost)
        self.write_text(COST_TABLE, json.dumps(table.to_dict()) + "\n")
        return table

    def derived(self) -> Genotype:
        """The genotype α derives to now: top-k (with --max-skip's cap), kept within the budget with
        --cost-derive budget."""
        cfg = self.config
        for method in self.methods:
            own = method.derive(self)
            if own is not None:  # DARTS-PT's selection
                return own
        genotype = self.model.genotype(cfg.max_skip)
        if cfg.cost_derive == "budget":
            genotype = self.prices.table.within(genotype, cfg.cost, cfg.cost_target, *self.model.ranking_weights(),
                                                max_skip=cfg.max_skip)
        return genotype

    # -- state ---------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {**self.bilevel_state(), **loaders_state(self), "genotype": self.derived().to_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.load_bilevel_state(state)
        load_loaders_state(self, state)

    # -- the loop --------------------------------------------------------------------------------

    def train_epoch(self) -> dict[str, float]:
        """One epoch of alternating α and w steps; returns mean train loss and accuracy."""
        model, cfg = self.model, self.config
        model.train()
        xi = self.w_optimizer.param_groups[0]["lr"]
        state = ClassifierEpoch(EpochMeter(self.device, self.dist), ClipMeter(cfg.grad_clip, self.device))
        check = self.checks_every_step
        batches = batch_source(self.train_loader)
        perturb = self.perturbation()
        update_alpha = self.alpha_moves()

        def step(i: int) -> tuple[int, bool, dict[str, Any]]:
            x, y = batches()
            val_batch = self.val_loader.next_batch()
            with self.autocast:
                loss, logits, grad_norm, ok = search_step(
                    model, self.architect, self.w_optimizer, (x, y), val_batch, xi, cfg.grad_clip,
                    finite=self.all_finite if check else None, update_alpha=update_alpha,
                    net=self.net, perturb=perturb, weights_first=self.weights_first)
            if check:
                self.check_arch_finite(i + 1, model.arch_parameters())
            if ok:
                state.update(loss, logits, y, grad_norm)
            return y.shape[0], ok, {"loss": loss, "acc": lambda: state.meter.accuracy}

        steps, seconds = self.run_steps(state, step, self.epoch_steps(self.train_loader, cfg.steps_per_epoch))
        return state.summary(self, steps, seconds)

    def epoch_start(self) -> dict[str, Any]:
        """The epoch's learning rate: cosine over the run (or a method's own schedule, P-DARTS's per
        stage); over the first --warmup-epochs N, lr x (e+1)/N instead."""
        cfg = self.config
        epoch, epochs, extra = self.epoch, cfg.epochs, {}
        for method in self.methods:
            own = method.schedule(self)
            if own is not None:
                epoch, epochs, extra = own
        lr = cosine_lr(epoch, epochs, cfg.lr, cfg.lr_min)
        if self.epoch < cfg.warmup_epochs:  # PC-DARTS's ImageNet search: flat, lr x (e+1)/N
            lr = cfg.lr * (self.epoch + 1) / cfg.warmup_epochs
        set_lr(self.w_optimizer, lr)
        return {"lr": lr, **extra}

    def evaluate(self) -> dict[str, float]:
        """Loss and accuracy of the search network on the validation split (no augmentation)."""
        result = evaluate(self.model, self.eval_loader, self.dist)
        return {"val_loss": result["loss"], "val_acc": result["top1"]}

    def shape_text(self) -> str:
        """The search network's size, for the run's first line."""
        cfg = self.config
        stages = self.method("p-darts")
        layers = stages.layers_text() if stages is not None else f"L={cfg.layers}"
        return f"C={cfg.init_channels} {layers} N={cfg.nodes}"

    def describe(self) -> str:
        cfg = self.config
        methods = "".join(m.describe() for m in self.methods)
        return (f"search {self.search_space.name}: {cfg.order} order{methods}, {self.shape_text()}, "
                f"{len(self.train_loader.indices)} train / {len(self.val_loader.indices)} val images, {self.where()}")

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
        extra = "".join(m.record(self, record, genotype) for m in self.methods)
        prefix = "".join(m.prefix(record) for m in self.methods)
        return lambda r: (f"epoch {r['epoch']}/{self.total_epochs()} {prefix}lr {r['lr']:.5f} "
                          f"train loss {r['train_loss']:.4f} acc {r['train_acc']:.4f} | "
                          f"val loss {r['val_loss']:.4f} acc {r['val_acc']:.4f} | "
                          f"skip(normal) {skips}{extra}{curvature_text(r)} | {r['seconds']:.1f}s\n"
                          f"  genotype {genotype.to_json()}")

    def finish(self) -> SearchResult:
        genotype = self.kept_genotype(self.derived())
        self.write_text(GENOTYPE, genotype.to_json(indent=None) + "\n")
        return SearchResult(genotype, self.metrics.read(), self.out, self.curvature.stopped)


def search(config: SearchConfig, out_dir: str | Path, **kwargs: Any) -> SearchResult:
    """Run (or with ``resume=True`` continue) a conv search; returns the derived genotype.

    ``train_data`` (and optionally ``val_data``, the images that train α) may be any torch Dataset of
    (CHW image, label), uint8 or float in [0, 1]: the search then runs on them instead of
    ``config.dataset`` (recorded as ``python``; a resumed run needs them again).
    """
    return Search.launch(config, out_dir, **kwargs)


def derive_from_checkpoint(path: str | Path, max_skip: int | None = None, derivation: str | None = None) -> Genotype:
    """The genotype α in a search checkpoint derives to (``max_skip`` and ``derivation``, top-k or
    gdas, override the run's), by the space's derivation that the network uses: ranked by α·β with
    PC-DARTS, the last P-DARTS stage's ops, kept within the budget with ``cost_derive="budget"``
    (the run's cost table)."""
    from .nb201 import SEARCH_KIND as NB201, NB201SearchConfig
    state = load_checkpoint(path)
    if state.get("kind") not in (KIND, NB201):
        raise CheckpointError(f"{path}: a {state.get('kind')!r} checkpoint, not a conv search's")
    config = (NB201SearchConfig if state["kind"] == NB201 else SearchConfig).from_dict(state["config"])
    arch = {name: state["model"][name] for name in ARCH_TENSORS if name in state["model"]}
    if "alpha_normal" not in arch:
        raise CheckpointError(f"{path}: checkpoint holds no α")
    if state.get("pt", {}).get("steps"):  # DARTS-PT: the selection's decisions so far
        from ..methods.pt import projected_arch
        arch = projected_arch(arch, state["pt"])
    space = config.space()
    if derivation is not None and state["kind"] == NB201:
        raise ConfigError("--derivation is the conv space's: a NAS-Bench-201 cell keeps one op per edge")
    if derivation is not None:
        space = dataclasses.replace(space, derivation=derivation)
        space.validate()
    if state.get("edge_ops") is not None:  # P-DARTS: the ops the last stage's edges kept
        space = stage_space(space, space.layers, state["edge_ops"])
    max_skip = config.max_skip if max_skip is None else max_skip
    genotype = SEARCH_SPACES.get(config.SPACE).derive(space, arch, max_skip)
    if config.cost_derive == "budget":
        run_dir = Path(path) if Path(path).is_dir() else Path(path).parent
        table = CostTable.read(run_dir / COST_TABLE)
        genotype = table.within(genotype, config.cost, config.cost_target, *ranking_weights(arch, config.nodes),
                                max_skip=max_skip)
    return genotype
