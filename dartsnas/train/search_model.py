"""DARTS over a user's own model: the bilevel search of its :class:`~dartsnas.nn.Choice` and
:class:`~dartsnas.nn.InputChoice` modules, with the run directory of ``search cnn``.

Each step takes one α step on a validation batch (first, second or exact order), then one SGD step of
the weights on a training batch, as Algorithm 1. ``train_data`` and ``val_data`` are map-style torch
Datasets of (input, target); without ``val_data`` a seeded ``train_portion`` of ``train_data`` trains
the weights and the rest α. The run directory holds ``metrics.jsonl`` (per epoch: losses, accuracy
for classification, softmax(α) of every choice under ``choice_alphas`` and the picks under
``choices``), ``checkpoint.pt`` (resumable, mid-epoch too) and, at the end, ``choices.json``, the
input of :func:`dartsnas.nn.fix`.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch.utils.data import default_collate

from ..choice_cost import ChoiceCosts
from ..config import ArchStep, ArchWarmup, Epochs, Momentum, RunOptions, Seed, configclass, option
from ..data import DatasetBatches, random_split
from ..errors import ConfigError
from ..methods import check_methods
from ..methods.budget import CostBudget
from ..methods.gdas import GdasOptions
from ..nn import Choice, SearchableModel, fix
from .bilevel import BilevelSearch, load_loaders_state, loaders_state, search_step
from .common import cosine_lr
from .loop import batch_source, set_lr
from .meters import ClipMeter
from .rng import seed_everything

KIND = "search-model"
CHOICES = "choices.json"
COSTS = "choice_costs.json"


@configclass(epochs=10)
class ModelSearchConfig(RunOptions, Seed, ArchWarmup, GdasOptions, ArchStep, Momentum, Epochs, CostBudget):
    """The bilevel optimisation of a model search; defaults are the paper's CIFAR-10 search settings."""

    train_portion: float = option(0.5, "without val_data: the part of train_data that trains w; the rest trains α",
                                  above=0, below=1)
    recompute: str = option("none", "choice: every Choice's candidates are recomputed in backward instead of kept "
                            "(less memory for more compute, the same numbers)", choices=("none", "choice"),
                            resumable=True)

    FLAG_HELP = {"cost": "macs, params or latency: the expected cost of the model the choices make, per example "
                         "(each candidate counted, or timed in PyTorch, at the shapes it is called with), joins "
                         "α's objective"}

    def check(self) -> None:
        super().check()
        check_methods(self)


@dataclass
class ModelSearchResult:
    """The picks of every choice, the per-epoch metrics, the run directory and the searched model."""

    choices: dict[str, Any]
    metrics: list[dict[str, Any]]
    out_dir: Path
    model: SearchableModel

    def fixed(self) -> torch.nn.Module:
        """The plain network of the picks (:func:`dartsnas.nn.fix`), trained weights kept."""
        return fix(self.model, self.choices)


def _classification(outputs: Any, targets: Any) -> bool:
    return (isinstance(outputs, torch.Tensor) and isinstance(targets, torch.Tensor) and outputs.dim() == 2
            and targets.dim() == 1 and not targets.is_floating_point())


class ChoicePrices:
    """What a budgeted model search prices (methods.budget.Prices): each choice's candidates, counted
    (or timed) at the shapes they are called with."""

    def __init__(self, model: SearchableModel, costs: ChoiceCosts) -> None:
        self.model, self.costs = model, costs

    def expected(self, kind: str) -> torch.Tensor:
        return self.costs.expected(kind, self.model)

    def of(self, picks: dict[str, Any]) -> dict[str, float]:
        return self.costs.of_picks(picks)

    def top_k(self) -> dict[str, Any]:
        return self.model.picks()


class ModelSearch(BilevelSearch):
    """A resumable search of a user model's choices writing into ``out_dir``."""

    kind, what = KIND, "model"

    def __init__(self, model: torch.nn.Module, config: ModelSearchConfig, out_dir: str | Path, *, train_data: Any,
                 val_data: Any = None, loss_fn: Callable[[Any, Any], torch.Tensor] = F.cross_entropy,
                 resume: bool = False, overwrite: bool = False, quiet: bool = False,
                 log: Callable[[str], None] = print) -> None:
        saved = self.open(config, out_dir, resume=resume, overwrite=overwrite, quiet=quiet, log=log)
        space = model if isinstance(model, SearchableModel) else SearchableModel(model, loss_fn)
        for _, members in space.groups.items():
            for _, choice in members:
                if isinstance(choice, Choice):
                    choice.recompute = config.recompute == "choice"
        dist = self.dist
        if val_data is None:
            train_idx, val_idx = random_split(len(train_data), config.train_portion, config.seed)
            val_data = train_data
        else:
            train_idx = val_idx = None
        common = dict(device=self.device, rank=dist.rank, world_size=dist.world_size, drop_last=dist.enabled)
        self.train_loader = DatasetBatches(train_data, train_idx, batch_size=config.batch_size, seed=config.seed, **common)
        self.val_loader = DatasetBatches(val_data, val_idx, batch_size=config.batch_size, seed=config.seed + 1, **common)
        self.eval_loader = DatasetBatches(val_data, val_idx, batch_size=max(config.batch_size, 256), shuffle=False,
                                          device=self.device, rank=dist.rank, world_size=dist.world_size)
        seed_everything(config.seed)
        self.select_methods()
        model = self.place_model(space)
        first = default_collate([train_data[int(self.train_loader.indices[0])]])[0]
        model.check_reached(first.to(self.device) if isinstance(first, torch.Tensor) else first)
        self.model = model
        if config.cost is not None:  # before GDAS's sampler attaches: the costs need every candidate run
            self.prices = ChoicePrices(model, self.open_costs(first))
        self.bilevel(model, momentum=config.momentum, nesterov=config.nesterov)
        self.wrap()
        self.begin(saved)

    def open_costs(self, example: Any) -> ChoiceCosts:
        """The run's cost table: its file in the run directory (a resumed run keeps it), else each
        candidate counted (and timed, for latency) on ``example`` and written there."""
        path = self.out / COSTS
        if self.dir.started and path.is_file():  # a resumed run's; a fresh run's own, never an old run's
            costs = ChoiceCosts.from_dict(json.loads(path.read_text()))
        else:
            timer = None
            if self.config.cost == "latency":
                from ..latency import Timer
                timer = Timer("torch", str(self.device))
            inputs = (example.to(self.device) if isinstance(example, torch.Tensor) else example,)
            costs = ChoiceCosts.measure(self.model, inputs, timer)
            self.write_text(COSTS, json.dumps(costs.to_dict()) + "\n")
        costs.expected(self.config.cost, self.model)  # names a kind the table lacks now, not at the first step
        return costs

    def state_dict(self) -> dict[str, Any]:
        return {**self.bilevel_state(), **loaders_state(self), "choices": self.model.picks()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.load_bilevel_state(state)
        load_loaders_state(self, state)

    def train_epoch(self) -> dict[str, Any]:
        cfg, model = self.config, self.model
        model.train()
        state = ModelEpoch(self.device, ClipMeter(cfg.grad_clip, self.device))
        xi = self.w_optimizer.param_groups[0]["lr"]
        check = self.checks_every_step
        batches = batch_source(self.train_loader)

        def step(i: int) -> tuple[int, bool, dict[str, Any]]:
            x, y = batches()
            val_batch = self.val_loader.next_batch()
            loss, out, grad_norm, ok = search_step(model, self.architect, self.w_optimizer, (x, y), val_batch, xi,
                                                   cfg.grad_clip, finite=self.all_finite if check else None,
                                                   update_alpha=self.alpha_moves(), net=self.net,
                                                   loss_fn=model.loss_fn, weights_first=self.weights_first)
            if check:
                self.check_arch_finite(i + 1, model.arch_parameters())
            if ok:
                state.update(loss, out, y, grad_norm)
            return len(y), ok, {"loss": loss}

        steps, seconds = self.run_steps(state, step, self.epoch_steps(self.train_loader, cfg.steps_per_epoch), unit="ex")
        loss_sum, correct, seen = self.dist.sum(state.sums).tolist()
        record = {"train_loss": self.check_epoch_loss(loss_sum / max(seen, 1), steps), "steps": steps,
                  **state.clips.summary(), "examples_per_s": seen / max(seconds, 1e-9)}
        if state.classification:
            record["train_acc"] = correct / max(seen, 1)
        return record

    def epoch_start(self) -> dict[str, Any]:
        lr = cosine_lr(self.epoch, self.config.epochs, self.config.lr, self.config.lr_min)
        set_lr(self.w_optimizer, lr)
        return {"lr": lr}

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Mean loss (and accuracy, for classification) of the search model on the α data."""
        model = self.model
        was = model.training
        model.eval()
        sums = ModelEpoch(self.device)
        for x, y in self.eval_loader:
            if len(y) == 0:
                continue
            out = model(x)
            sums.update(model.loss_fn(out, y), out, y)
        model.train(was)
        loss_sum, correct, seen = self.dist.sum(sums.sums).tolist()
        return {"val_loss": loss_sum / max(seen, 1),
                **({"val_acc": correct / max(seen, 1)} if sums.classification else {})}

    def describe(self) -> str:
        cfg = self.config
        return (f"search model: {cfg.order} order, {len(self.model.groups)} choices, "
                f"{sum(p.numel() for p in self.model.weight_parameters()):,} weights, "
                f"{len(self.train_loader.indices)} train / {len(self.val_loader.indices)} val examples, "
                f"{self.where()}")

    def epoch_summary(self, record: dict[str, Any]) -> Callable[[dict[str, Any]], str]:
        picks = self.model.picks()
        record.update({"choice_alphas": self.model.weights(), "choices": picks})
        cost = "".join(m.record(self, record, picks) for m in self.methods)

        def line(r: dict[str, Any]) -> str:
            acc = f" acc {r['val_acc']:.4f}" if "val_acc" in r else ""
            return (f"epoch {r['epoch']}/{self.config.epochs} lr {r['lr']:.5f} train loss {r['train_loss']:.4f} | "
                    f"val loss {r['val_loss']:.4f}{acc}{cost} | {r['seconds']:.1f}s\n  choices {json.dumps(picks)}")
        return line

    def finish(self) -> ModelSearchResult:
        picks = self.model.picks()
        self.write_text(CHOICES, json.dumps(picks, indent=1) + "\n")
        return ModelSearchResult(picks, self.metrics.read(), self.out, self.model)


class ModelEpoch:
    """Loss x examples, correct predictions and examples of a model search's epoch (accuracy only
    when the outputs are class scores), and the clipping of its weight steps."""

    def __init__(self, device: torch.device, clips: ClipMeter | None = None) -> None:
        self.sums = torch.zeros(3, dtype=torch.float64, device=device)
        self.clips, self.classification = clips, False

    def update(self, loss: torch.Tensor, out: Any, y: Any, grad_norm: torch.Tensor | None = None) -> None:
        n = len(y)
        self.classification = _classification(out, y)
        correct = (out.argmax(1) == y).sum() if self.classification else torch.zeros((), device=self.sums.device)
        self.sums += torch.stack([loss.double() * n, correct.double(),
                                  torch.tensor(float(n), device=self.sums.device, dtype=torch.float64)])
        if self.clips is not None:
            self.clips.update(grad_norm)

    def state_dict(self) -> dict[str, Any]:
        return {"sums": self.sums.cpu(), "clip": self.clips.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.sums.copy_(state["sums"])
        self.clips.load_state_dict(state.get("clip"))


def search_model(model: torch.nn.Module, train_data: Any, val_data: Any = None, *, out_dir: str | Path,
                 loss_fn: Callable[[Any, Any], torch.Tensor] = F.cross_entropy, config: ModelSearchConfig | None = None,
                 resume: bool = False, overwrite: bool = False, quiet: bool = False,
                 log: Callable[[str], None] = print, **options: Any) -> ModelSearchResult:
    """Search the choices of ``model`` (any ``nn.Module`` holding :class:`~dartsnas.nn.Choice` /
    :class:`~dartsnas.nn.InputChoice` modules) by DARTS on ``train_data`` / ``val_data`` (torch Datasets
    of (input, target)), minimising ``loss_fn(model(input), target)``. ``options`` set fields of
    :class:`ModelSearchConfig` (``epochs=``, ``order=``, ``lr=``, ...). Resume with the same model
    class and ``resume=True``."""
    unknown = sorted(set(options) - {f.name for f in dataclasses.fields(ModelSearchConfig)})
    if unknown:
        raise ConfigError(f"unknown search option(s) {', '.join(unknown)} (see ModelSearchConfig)")
    config = dataclasses.replace(config or ModelSearchConfig(), **options)
    return ModelSearch.launch(model, config, out_dir, train_data=train_data, val_data=val_data, loss_fn=loss_fn,
                              resume=resume, overwrite=overwrite, quiet=quiet, log=log)
