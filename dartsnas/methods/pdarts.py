"""P-DARTS (Chen et al., ICCV 2019, "Progressive Differentiable Architecture Search: Bridging the
Depth Gap between Search and Evaluation"): the search runs in stages of growing depth
(``--stage-layers``, each a fresh network, optimisers and cosine schedule); between stages every edge
keeps its ``--stage-ops`` ops of largest softmax(α); skip_connect gets dropout (``--stage-dropout``,
decaying within a stage); the first ``--stage-warmup`` epochs of a stage train only the weights; the
derived normal cell keeps at most ``--max-skip`` (2) skip_connects. A run's stages are written to
``stages.json``; the checkpoint keeps the stage and the ops its edges kept."""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from typing import Any

import torch

from ..config import Config, option
from ..errors import ConfigError
from ..ops import EDGE_OP_SETS
from . import SEARCH_METHODS, SearchMethod

STAGES = "stages.json"
GROUP = "progressive search (P-DARTS, DrNAS)"
#: Each stage's weights are seeded by the run's seed plus this times the stage.
STAGE_SEED_STRIDE = 1009


@dataclass
class ProgressiveOptions(Config):
    progressive: bool = option(False, "P-DARTS (Chen et al., 2019): search in stages of growing depth (--stage-layers), "
                               "pruning each edge to the ops strongest by softmax(α) between stages (--stage-ops); "
                               "the run's epochs are the stages' (--stage-epochs each); --max-skip defaults to 2",
                               group=GROUP)
    stage_layers: tuple[int, ...] = option(help="cells L of each stage's search network", factory=lambda: (5, 11, 17),
                                           group=GROUP, metavar="L")
    stage_ops: tuple[int, ...] = option(help="candidate ops per edge in each stage (the first: the whole op set; DrNAS's "
                                        "progressive search: 7 4)",
                                        factory=lambda: (8, 5, 3), group=GROUP, metavar="K")
    stage_dropout: tuple[float, ...] = option(help="dropout rate on skip_connect in each stage, decaying within it",
                                              factory=lambda: (0.1, 0.4, 0.7), group=GROUP, metavar="P")
    stage_epochs: int = option(25, "epochs of each stage (P-DARTS's, DrNAS's)", group=GROUP, min=1)
    stage_warmup: int = option(10, "first epochs of each stage that train only the weights (α frozen)", group=GROUP,
                               min=0)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.progressive:
            staged_epochs(self, len(self.stage_layers), "progressive")
            if self.max_skip is None:
                self.max_skip = 2  # P-DARTS's cap on the normal cell's skip_connects

    def stage_of(self, epoch: int) -> tuple[int, int]:
        """(stage, epoch within it), both 0-based, of the run's 0-based ``epoch``."""
        return epoch // self.stage_epochs, epoch % self.stage_epochs


def staged_epochs(config: Any, stages: int, flag: str) -> None:
    """A staged search's epochs are its stages' (``flag`` selects the stages): --epochs is left at its
    default or says the same."""
    total = stages * config.stage_epochs
    if config.epochs not in (total, type(config).__dataclass_fields__["epochs"].default):
        raise ConfigError(f"{{epochs}} {config.epochs} with {{{flag}}}: the run's epochs are {stages} stages x "
                          f"{{stage_epochs}} {config.stage_epochs} = {total}", names=("epochs", flag, "stage_epochs"))
    config.epochs = total


def check_stage_ops(config: Any, flag: str) -> None:
    """--stage-ops of a staged search selected by ``flag``: from the whole op set, shrinking."""
    if len(config.ops) == 1 and config.ops[0] in EDGE_OP_SETS:
        raise ConfigError(f"{{{flag}}} prunes one op set per edge: a named per-edge set (s1) does not apply",
                          names=(flag, "ops"))
    ops = config.stage_ops
    if ops[0] != len(config.ops) or any(b > a for a, b in zip(ops, ops[1:])) or ops[-1] < 1:
        raise ConfigError(f"{{stage_ops}} {list(ops)} must start at the op set's {len(config.ops)} and "
                          "shrink (or stay) from stage to stage", names=("stage_ops", "ops"))


def check_stage_warmup(config: Any) -> None:
    if config.stage_warmup >= config.stage_epochs:
        raise ConfigError(f"{{stage_warmup}} {config.stage_warmup} leaves α no epoch of the {{stage_epochs}} "
                          f"{config.stage_epochs}", names=("stage_warmup", "stage_epochs"))


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


def edge_op_lists(space: Any) -> dict[str, list[list[str]]]:
    """The ops every edge of both cell types searches in ``space``, as JSON lists."""
    return {cell: [list(ops) for ops in space.edge_ops(cell)] for cell in ("normal", "reduce")}


def stage_space(space: Any, layers: int, edge_op_sets: dict[str, Any]) -> Any:
    """A stage's search space: its depth, and the ops each edge kept."""
    sets = {cell: tuple(tuple(ops) for ops in rows) for cell, rows in edge_op_sets.items()}
    return dataclasses.replace(space, layers=layers, edge_op_sets=sets)


@SEARCH_METHODS.register("p-darts")
class PDarts(SearchMethod):
    """The stages: which one runs, its network (rebuilt by the run's ``build_network``), its schedule."""

    name = "p-darts"

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        self.stage, self.stages = 0, []  # the stage running and what each one searched

    @classmethod
    def applies(cls, config: Any) -> bool:
        return bool(getattr(config, "progressive", False))

    @classmethod
    def label(cls, config: dict[str, Any]) -> str:
        return "p-darts" if config.get("progressive") else ""

    @classmethod
    def check(cls, config: Any) -> None:
        if not cls.applies(config):
            return
        n = len(config.stage_layers)
        if not n or len(config.stage_ops) != n or len(config.stage_dropout) != n:
            raise ConfigError(f"{{stage_layers}}, {{stage_ops}} and {{stage_dropout}} need one value per stage, got "
                              f"{len(config.stage_layers)}, {len(config.stage_ops)} and {len(config.stage_dropout)}",
                              names=("stage_layers", "stage_ops", "stage_dropout"))
        check_stage_ops(config, "progressive")
        if any(L < 3 for L in config.stage_layers):
            raise ConfigError(f"{{stage_layers}} must all be >= 3, got {list(config.stage_layers)}",
                              names=("stage_layers",))
        if any(not 0 <= p < 1 for p in config.stage_dropout):
            raise ConfigError(f"{{stage_dropout}} must lie in [0, 1), got {list(config.stage_dropout)}",
                              names=("stage_dropout",))
        check_stage_warmup(config)
        config.check_exclusive("progressive", {"cost": None, "hessian_every": 0, "arch_start_epoch": 0},
                               {"arch_start_epoch": "each stage warms up for {stage_warmup} epochs"})

    def first_space(self, space: Any, saved: dict[str, Any] | None) -> Any:
        """The first network's space: the first stage's depth, or a resumed later stage's pruned space."""
        if saved is not None and saved.get("stage"):
            self.stage = int(saved["stage"])
            return stage_space(space, self.config.stage_layers[self.stage], saved["edge_ops"])
        return dataclasses.replace(space, layers=self.config.stage_layers[0])

    def alpha_moves(self, run: Any) -> bool:
        return self.config.stage_of(run.epoch)[1] >= self.config.stage_warmup

    def schedule(self, run: Any) -> tuple[int, int, dict[str, Any]]:
        """Before the epoch: a new stage's network where one starts; the epoch within the stage and the
        stage's length (a fresh cosine schedule each), the skip dropout, the record's stage fields."""
        cfg = self.config
        stage, epoch = cfg.stage_of(run.epoch)
        if stage != self.stage:
            self.next_stage(run, stage)
        dropout = pdarts_skip_dropout(cfg.stage_dropout[stage], epoch, cfg.stage_epochs, cfg.stage_warmup)
        run.model.set_skip_dropout(dropout)
        if len(self.stages) <= self.stage:
            first = self.stage * cfg.stage_epochs + 1
            self.stages.append({"stage": self.stage + 1, "layers": run.space.layers,
                                "ops_per_edge": cfg.stage_ops[self.stage], "epochs": [first, first + cfg.stage_epochs - 1],
                                "skip_dropout": cfg.stage_dropout[self.stage], "edge_ops": edge_op_lists(run.space)})
            run.write_text(STAGES, json.dumps(self.stages, indent=1) + "\n")
        return epoch, cfg.stage_epochs, {"stage": self.stage + 1, "layers": run.space.layers,
                                         "skip_dropout": round(dropout, 6)}

    def next_stage(self, run: Any, stage: int) -> None:
        """Prune every edge to the ops strongest by softmax(α) of the stage that ended, then build the
        deeper network of ``stage`` afresh (its weights seeded by --seed and the stage)."""
        keep = self.config.stage_ops[stage]
        weights = dict(zip(("normal", "reduce"), run.model.arch_weights()))
        sets = {cell: prune_edge_ops(weights[cell], run.space.edge_ops(cell), keep) for cell in weights}
        self.stage = stage
        space = stage_space(run.space, self.config.stage_layers[stage], sets)
        run.net = None  # DDP's reducer goes before its model is replaced
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.config.seed + STAGE_SEED_STRIDE * stage)
            run.build_network(space, split=False)
        run.wrap()
        run.log(f"stage {stage + 1}/{len(self.config.stage_layers)}: {space.layers} cells, the {keep} "
                f"strongest ops of every edge kept (written to {run.out / STAGES})")

    def layers_text(self) -> str:
        """The stages' depths, for the run's first line."""
        return f"L={'/'.join(map(str, self.config.stage_layers))} (P-DARTS stages)"

    def prefix(self, record: dict[str, Any]) -> str:
        return f"stage {record['stage']} (L={record['layers']}) "

    def run_state(self, run: Any) -> dict[str, Any]:
        return {"stage": self.stage, "stages": self.stages, "edge_ops": edge_op_lists(run.space)}

    def load_run_state(self, state: dict[str, Any]) -> None:
        self.stages = list(state["stages"])
