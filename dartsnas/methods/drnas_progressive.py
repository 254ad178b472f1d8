"""DrNAS's progressive search (Chen et al., ICLR 2021, section 3.4; their ``DARTS-space/train_search.py``
lines 120-159, the DARTS space's only search script): stages at one depth in which each mixed op sees
C/K of the channels (PC-DARTS's partial channels, without its edge normalisation: their
``model_search.py`` line 94 sums the edges), K falling from stage to stage (``--stage-partial-channels``,
theirs 6 4). Between two stages every edge keeps its ``--stage-ops`` ops strongest by α (theirs 7 4;
``utils.prune``, lines 197-207) and the kept ops are widened to C/K Net2Wider-style
(:mod:`dartsnas.widen`). Nothing restarts: the weights, α, SGD's momentum (widened as its weights) and
Adam's moments of the kept α carry over, and the learning rate follows one cosine over the run (their
``configure_optimizer`` and ``configure_scheduler``). Each stage trains only the weights for its first
``--stage-warmup`` epochs (their ``e >= 10``, ``e`` counted within the stage, line 182).

Departures: a pruned op leaves the network (theirs stays, masked out of the sample and never computed),
so with ``--dirichlet-reg kl`` the KL term is over the kept ops' Dirichlet (theirs keeps the pruned
entries at concentration 1 in it, ``utils.py`` line 202); Net2Wider's copies are consistent within an op
(see :mod:`dartsnas.widen`). Only the DARTS space's script is built: their NAS-Bench-201 progressive
script (``201-space/train_search_progressive.py``) is not their default there.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

import torch

from ..config import Config, option
from ..errors import ConfigError
from ..widen import Plan, apply_gathers, channel_map, widen_plan
from . import SEARCH_METHODS, SearchMethod
from .pdarts import (GROUP, STAGE_SEED_STRIDE, STAGES, check_stage_ops, check_stage_warmup, edge_op_lists,
                     prune_edge_ops, stage_space, staged_epochs)


@dataclass
class WideningOptions(Config):
    stage_partial_channels: tuple[int, ...] = option(
        help="DrNAS's progressive search (their DARTS-space script: 6 4): the partial channels K of each stage, "
             "one depth; between stages every edge keeps its --stage-ops (7 4) ops strongest by α and the ops are "
             "widened Net2Wider-style; each stage runs --stage-epochs, the weights alone for --stage-warmup",
        factory=tuple, group=GROUP, metavar="K", default_text="none")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.stage_partial_channels:
            staged_epochs(self, len(self.stage_partial_channels), "stage_partial_channels")


def stage_plan(old: Any, new: Any, kept: dict[str, list[list[int]]], generator: torch.Generator) -> dict[str, Any]:
    """Where every tensor of ``new``'s state dict comes from in ``old``'s: (name, gathers). ``kept``: per
    cell type, the old op indices each edge keeps, in order; α keeps their columns, each kept op is
    widened from its old self; the rest (stem, preprocessing, classifier) is the same tensor."""
    plan: dict[str, tuple[str, list]] = {}
    for name in ("alpha_normal", "alpha_reduce"):
        if getattr(new, name, None) is not None:
            plan[name] = (name, [("rows", 1, torch.tensor(kept[name[6:]]))])
    for c, (cell_old, cell_new) in enumerate(zip(old.cells, new.cells)):
        for e, (edge_old, edge_new) in enumerate(zip(getattr(cell_old, "edges", ()), getattr(cell_new, "edges", ()))):
            for k_new, k_old in enumerate(kept["reduce" if cell_new.reduction else "normal"][e]):
                g_in = channel_map(edge_old.channels, edge_new.channels, generator)
                op: Plan = widen_plan(edge_old.ops[k_old], edge_new.ops[k_new], g_in, generator)
                for rel, gathers in op.items():
                    plan[f"cells.{c}.edges.{e}.ops.{k_new}.{rel}"] = (f"cells.{c}.edges.{e}.ops.{k_old}.{rel}", gathers)
    old_state, new_state = old.state_dict(), new.state_dict()
    for name, tensor in new_state.items():
        if name not in plan:
            if name not in old_state or old_state[name].shape != tensor.shape:
                raise ValueError(f"the next stage's {name} has no tensor of its shape in the last stage's network")
            plan[name] = (name, [])
    return plan


def carry_over(run: Any, old_model: Any, old_w: torch.optim.Optimizer, old_arch: torch.optim.Optimizer,
               plan: dict[str, Any]) -> None:
    """The new stage's network, weight optimiser and architect take the last stage's tensors and states."""
    old_state = old_model.state_dict()
    run.model.load_state_dict({name: apply_gathers(old_state[src], g) for name, (src, g) in plan.items()})
    old_params = dict(old_model.named_parameters())
    old_names = {id(p): n for n, p in old_params.items()}
    new_names = {id(p): n for n, p in run.model.named_parameters()}
    for old_opt, new_opt in ((old_w, run.w_optimizer), (old_arch, run.architect.optimizer)):
        states = {old_names[id(p)]: old_opt.state[p] for group in old_opt.param_groups for p in group["params"]
                  if p in old_opt.state}
        for group in new_opt.param_groups:
            for p in group["params"]:
                src, gathers = plan[new_names[id(p)]]
                if src not in states:
                    continue
                shape = old_params[src].shape
                new_opt.state[p] = {k: (apply_gathers(v, gathers) if torch.is_tensor(v) and v.shape == shape
                                        else v.clone() if torch.is_tensor(v) else v) for k, v in states[src].items()}


@SEARCH_METHODS.register("drnas-progressive")
class DrnasProgressive(SearchMethod):
    """The stages: which one runs, the pruning and widening between them, the record's stage fields."""

    name = "drnas-progressive"

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        self.stage, self.stages = 0, []

    @classmethod
    def applies(cls, config: Any) -> bool:
        return bool(getattr(config, "stage_partial_channels", ()))

    @classmethod
    def label(cls, config: dict[str, Any]) -> str:
        if not config.get("stage_partial_channels"):
            return ""
        return ("drnas" if config.get("sampler") == "dirichlet" else "darts") + "-progressive"

    @classmethod
    def check(cls, config: Any) -> None:
        if not cls.applies(config):
            return
        ks = config.stage_partial_channels
        if len(config.stage_ops) != len(ks):
            raise ConfigError(f"{{stage_partial_channels}} and {{stage_ops}} need one value per stage, got {len(ks)} "
                              f"and {len(config.stage_ops)} (DrNAS's: --stage-partial-channels 6 4 --stage-ops 7 4)",
                              names=("stage_partial_channels", "stage_ops"))
        if any(k < 1 or config.init_channels % k for k in ks) or any(b > a for a, b in zip(ks, ks[1:])):
            raise ConfigError(f"{{stage_partial_channels}} {list(ks)} must each divide {{init_channels}} "
                              f"{config.init_channels} and fall (or stay) from stage to stage: the ops only widen",
                              names=("stage_partial_channels", "init_channels"))
        check_stage_ops(config, "stage_partial_channels")
        check_stage_warmup(config)
        if config.sampler == "gdas":
            raise ConfigError("{stage_partial_channels} and {sampler} gdas do not combine: GDAS computes one op per "
                              "edge, partial channels save nothing there", names=("stage_partial_channels", "sampler"))
        config.check_exclusive("stage_partial_channels", {
            "progressive": False, "partial_channels": 1, "reduce_cell": "searched", "cost": None, "hessian_every": 0,
            "arch_start_epoch": 0, "select": "top-k"}, {"arch_start_epoch": "each stage warms up for {stage_warmup} epochs",
                                                        "partial_channels": "the stages set K"})

    @classmethod
    def space_options(cls, config: Any) -> dict[str, Any]:
        return {"partial_channels": config.stage_partial_channels[0], "edge_norm": False}

    def first_space(self, space: Any, saved: dict[str, Any] | None) -> Any:
        """The first stage's space, or a resumed later stage's: its K and the ops its edges kept."""
        if saved is not None and saved.get("stage"):
            self.stage = int(saved["stage"])
            pruned = stage_space(space, space.layers, saved["edge_ops"])
            return dataclasses.replace(pruned, partial_channels=self.config.stage_partial_channels[self.stage])
        return space

    def alpha_moves(self, run: Any) -> bool:
        return self.config.stage_of(run.epoch)[1] >= self.config.stage_warmup

    def schedule(self, run: Any) -> tuple[int, int, dict[str, Any]]:
        """Before the epoch: the next stage's network where one starts; one cosine over the run."""
        cfg = self.config
        stage = cfg.stage_of(run.epoch)[0]
        if stage != self.stage:
            self.next_stage(run, stage)
        k = cfg.stage_partial_channels[self.stage]
        if len(self.stages) <= self.stage:
            first = self.stage * cfg.stage_epochs + 1
            self.stages.append({"stage": self.stage + 1, "partial_channels": k, "ops_per_edge": cfg.stage_ops[self.stage],
                                "epochs": [first, first + cfg.stage_epochs - 1], "edge_ops": edge_op_lists(run.space)})
            run.write_text(STAGES, json.dumps(self.stages, indent=1) + "\n")
        return run.epoch, cfg.epochs, {"stage": self.stage + 1, "partial_channels": k}

    def next_stage(self, run: Any, stage: int) -> None:
        """Prune every edge to its ops strongest by α, build the network at the stage's K (seeded by --seed
        and the stage, as the widening's draws), then carry the last stage's tensors and states over."""
        cfg = self.config
        keep = cfg.stage_ops[stage]
        old_model, old_w, old_arch = run.model, run.w_optimizer, run.architect.optimizer
        weights = dict(zip(("normal", "reduce"), old_model.arch_weights()))
        names = {cell: prune_edge_ops(weights[cell], run.space.edge_ops(cell), keep) for cell in weights}
        kept = {cell: [[ops.index(op) for op in row] for ops, row in zip(run.space.edge_ops(cell), names[cell])]
                for cell in names}
        space = dataclasses.replace(stage_space(run.space, run.space.layers, names),
                                    partial_channels=cfg.stage_partial_channels[stage])
        self.stage = stage
        run.net = None  # DDP's reducer goes before its model is replaced
        seed = cfg.seed + STAGE_SEED_STRIDE * stage
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            run.build_network(space, split=False)
        with torch.no_grad():
            plan = stage_plan(old_model, run.model, kept, torch.Generator().manual_seed(seed))
            carry_over(run, old_model, old_w, old_arch, plan)
        run.wrap()
        run.log(f"stage {stage + 1}/{len(cfg.stage_partial_channels)}: the {keep} ops of every edge strongest by α "
                f"kept, widened to K={space.partial_channels} (written to {run.out / STAGES})")

    def prefix(self, record: dict[str, Any]) -> str:
        return f"stage {record['stage']} (K={record['partial_channels']}) "

    def describe(self) -> str:
        ks = "/".join(map(str, self.config.stage_partial_channels))
        return f", progressive (K={ks}, {'/'.join(map(str, self.config.stage_ops))} ops)"

    def run_state(self, run: Any) -> dict[str, Any]:
        return {"stage": self.stage, "stages": self.stages, "edge_ops": edge_op_lists(run.space)}

    def load_run_state(self, state: dict[str, Any]) -> None:
        self.stages = list(state["stages"])
