"""DARTS-PT (Wang et al., ICLR 2021, "Rethinking Architecture Selection in Differentiable NAS"): the cell
is selected by perturbation, not by α's magnitude. After the search, edge by edge (in a seeded random
order), each op is removed in turn and the supernet's validation accuracy measured; the edge keeps the
op whose removal hurts most. Between decisions the supernet is fine-tuned. Once every edge has its op,
each node with more than two inputs drops, one at a time, the input whose removal hurts least, until
two are left (the conv space; a NAS-Bench-201 cell keeps every edge).

As the authors' code (ruocwang/darts-pt, ``sota/cnn/projection.py`` and ``nasbench201/projection.py``,
``model_search_darts_proj.py``):
- the weights a pass sees: softmax(α) on undecided edges, one-hot on decided ones, zero on removed ones;
  a removal sets one entry (or an edge's row) to 0 without renormalising, in the cell under decision;
- a measurement: accuracy (``--pt-crit acc``: the op whose removal gives the lowest; ties keep the
  first) or loss (the highest), the supernet in training mode (BatchNorm on batch statistics), no
  gradient, every op tried, ``none`` included; each step decides a normal edge, then a reduction edge;
- the schedule: a decision every ``--pt-interval`` (5) epochs from the first selection epoch, D decisions
  (the edges, then the nodes with more than two inputs) in ``interval x (D - 1) + 1`` epochs
  (``projection.py`` lines 126-127, 161-181: 81 epochs in the DARTS space), each epoch a full pass of
  DARTS's first-order steps (α moves: their darts-proj) with the weights' SGD reset (momentum cleared)
  at a constant lr ``--pt-lr`` (their learning_rate / 10, 0.0025: their cosine scheduler is never stepped).

Departures, on purpose (docs/methods.md): measurements run on the validation split as evaluation reads
it (no augmentation; theirs the augmented α queue) and leave BatchNorm's running statistics as they
were; the order's random stream is seeded and kept by the checkpoint, so a resumed selection takes the
same decisions (theirs redraws after a resume); NAS-Bench-201 uses the same schedule rule (26 epochs,
theirs 25 with the last decision one epoch early).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ..config import Config, option
from ..errors import ConfigError
from . import SEARCH_METHODS, SearchMethod

#: The order's random stream: the run's seed plus this.
PT_SEED_OFFSET = 23
#: A log-weight standing for 0 where a derivation reads the projected weights as α.
_ZERO_LOGIT = -1e4


@dataclass
class PTOptions(Config):
    select: str = option("top-k", "top-k: the cell α derives to; pt: DARTS-PT after the search's epochs, each edge's op "
                         "by the drop in validation accuracy without it, then each node's inputs, the supernet "
                         "fine-tuned between decisions (adds --pt-interval x (decisions - 1) + 1 epochs)",
                         group="selection", choices=("top-k", "pt"))
    pt_interval: int = option(5, "DARTS-PT: fine-tuning epochs between two decisions", group="selection", min=1)
    pt_crit: str = option("acc", "DARTS-PT: what a removal is judged by (validation accuracy or loss)",
                          group="selection", choices=("acc", "loss"))
    pt_lr: float | None = option(None, "DARTS-PT: the fine-tuning's constant learning rate [--lr / 10]", group="selection",
                                 above=0, default_text="--lr / 10")
    pt_batches: int | None = option(None, "DARTS-PT: validation batches per measurement [all]", group="selection",
                                    min=1, default_text="all")


def node_edges(nodes: int, inputs: int = 2) -> list[range]:
    """The rows of α of each node's incoming edges (node i has i + ``inputs`` predecessors)."""
    spans, start = [], 0
    for i in range(nodes):
        spans.append(range(start, start + i + inputs))
        start += i + inputs
    return spans


class Projection:
    """The selection's state: per cell type the op decided on each edge (-1: not yet), the edges
    removed, the nodes whose inputs are chosen; and the one candidate a measurement removes."""

    def __init__(self, edges: int, cells: tuple[str, ...]) -> None:
        self.decided = {c: [-1] * edges for c in cells}
        self.removed = {c: [False] * edges for c in cells}
        self.nodes_done: dict[str, list[int]] = {c: [] for c in cells}
        self.trial: tuple[str, int, int | None] | None = None  # (cell, edge, op; None: the whole edge)

    def apply(self, weights: torch.Tensor | None, cell: str) -> torch.Tensor | None:
        """``weights`` (edges x ops) as the selection sees them: decided rows one-hot, removed rows and
        the trial's candidate zero (no renormalisation)."""
        if weights is None or cell not in self.decided:
            return weights
        ops = weights.shape[-1]
        decided = torch.tensor(self.decided[cell], device=weights.device)
        onehot = torch.nn.functional.one_hot(decided.clamp(min=0), ops).to(weights.dtype)
        out = torch.where((decided >= 0)[:, None], onehot, weights)
        keep = torch.ones_like(out)
        keep[torch.tensor(self.removed[cell], device=weights.device)] = 0
        if self.trial is not None and self.trial[0] == cell:
            _, edge, op = self.trial
            if op is None:
                keep[edge] = 0
            else:
                keep[edge, op] = 0
        return out * keep

    def logits(self, alpha: torch.Tensor, cell: str) -> torch.Tensor:
        """α whose softmax is the projected weights (0 as a large negative logit), for a derivation."""
        w = self.apply(torch.softmax(alpha.detach().double(), -1), cell)
        return torch.where(w > 0, w.clamp(min=1e-300).log(), torch.full_like(w, _ZERO_LOGIT)).to(alpha.dtype)

    def arch(self, arch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Architecture tensors (a network's or a checkpoint's) as α whose derivation is the selection's:
        each cell's :meth:`logits`; PC-DARTS's β left out (the measurements already weighed the edges)."""
        return {name: self.logits(arch[name], name.split("_")[1]) for name in ("alpha_normal", "alpha_reduce")
                if name in arch}

    def state_dict(self) -> dict[str, Any]:
        return {"decided": self.decided, "removed": self.removed, "nodes_done": self.nodes_done}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.decided = {c: [int(v) for v in row] for c, row in state["decided"].items()}
        self.removed = {c: [bool(v) for v in row] for c, row in state["removed"].items()}
        self.nodes_done = {c: [int(v) for v in row] for c, row in state["nodes_done"].items()}


def projected_arch(arch: dict[str, torch.Tensor], state: dict[str, Any]) -> dict[str, torch.Tensor]:
    """A checkpoint's α with a selection's state (its ``pt`` entry) applied."""
    projection = Projection(len(next(iter(state["decided"].values()))), tuple(state["decided"]))
    projection.load_state_dict(state)
    return projection.arch(arch)


@SEARCH_METHODS.register("pt")
class PerturbationSelection(SearchMethod):
    name = "pt"
    key = "pt"

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        self.order = torch.Generator().manual_seed(config.seed + PT_SEED_OFFSET)
        self.projection: Projection | None = None
        self.saved: dict[str, Any] | None = None
        self.decisions: list[dict[str, Any]] = []
        self.steps = 0  # decisions taken

    @classmethod
    def applies(cls, config: Any) -> bool:
        return getattr(config, "select", "top-k") == "pt"

    @classmethod
    def check(cls, config: Any) -> None:
        if not cls.applies(config):
            return
        if getattr(config, "sampler", "none") == "gdas":
            raise ConfigError("{select} pt measures the supernet with every op mixed: GDAS's sampled network "
                              "computes one op per edge", names=("select", "sampler"))
        config.check_exclusive("select", {"progressive": False, "reduce_cell": "searched", "cost_derive": "top-k",
                                          "early_stop": None})

    @classmethod
    def label(cls, config: dict[str, Any]) -> str:
        return "+pt" if config.get("select") == "pt" else ""

    # -- the schedule -----------------------------------------------------------------------------

    def cells(self, run: Any) -> tuple[str, ...]:
        return ("normal", "reduce") if getattr(run.model, "alpha_reduce", None) is not None else ("normal",)

    def topology_nodes(self, run: Any) -> list[int]:
        """The nodes whose inputs are chosen: those with more than two, in a cell that keeps two per node."""
        if getattr(run.model, "cell_inputs", 1) != 2:
            return []
        return [i for i, span in enumerate(node_edges(run.model.config.nodes)) if len(span) > 2]

    def total_decisions(self, run: Any) -> int:
        return run.model.alpha_normal.shape[0] + len(self.topology_nodes(run))

    def extra_epochs(self, run: Any) -> int:
        return self.config.pt_interval * (self.total_decisions(run) - 1) + 1

    def attach(self, run: Any) -> None:
        edges = run.model.alpha_normal.shape[0]
        self.projection = Projection(edges, self.cells(run))
        if self.saved is not None:
            self.projection.load_state_dict(self.saved)
        run.model.projection = self.projection

    def epoch_start(self, run: Any, record: dict[str, Any]) -> None:
        cfg = self.config
        epoch = run.epoch - cfg.epochs
        if epoch < 0:
            return
        lr = cfg.pt_lr if cfg.pt_lr is not None else cfg.lr / 10
        if epoch == 0 and self.steps == 0:
            run.w_optimizer.state.clear()  # their fresh SGD: no momentum carried from the search
        for group in run.w_optimizer.param_groups:
            group["lr"] = lr
        record["lr"] = lr
        run.architect.order = "first"  # their darts-proj's α steps
        step = epoch // cfg.pt_interval
        if epoch % cfg.pt_interval == 0 and step < self.total_decisions(run):
            if step == self.steps:
                self.decisions += [{"step": step, **self.decide(run, cell, step)} for cell in self.cells(run)]
                self.steps += 1
            # resumed inside this epoch: the decisions taken before the stop, as the record had them
            record["pt"] = [d for d in self.decisions if d["step"] == step]
        record["pt_decided"] = self.steps

    # -- the decisions ----------------------------------------------------------------------------

    def measure(self, run: Any, trial: tuple[str, int, int | None]) -> float:
        from ..train.meters import evaluate
        self.projection.trial = trial
        try:
            result = evaluate(run.model, run.eval_loader, run.dist, batch_stats=True, batches=self.config.pt_batches)
        finally:
            self.projection.trial = None
        return result["top1"] if self.config.pt_crit == "acc" else result["loss"]

    def draw(self, choices: list[int]) -> int:
        return choices[int(torch.randint(len(choices), (1,), generator=self.order))]

    def candidates(self, run: Any, cell: str, edge: int) -> list[int]:
        """The ops an edge may keep: all of them, but ``none`` where a node keeps two inputs (the conv
        space's genotype has no place for it; their DARTS space has no ``none`` at all)."""
        ops = range(run.model.alpha_normal.shape[1])
        edge_ops = getattr(run.model.config, "edge_ops", None)
        if getattr(run.model, "cell_inputs", 1) != 2 or edge_ops is None:
            return list(ops)
        names = edge_ops(cell)[edge]
        return [k for k in ops if names[k] != "none"]

    def decide(self, run: Any, cell: str, step: int) -> dict[str, Any]:
        """One decision of ``cell``: an edge's op (the first steps), else a node's two inputs."""
        p, acc = self.projection, self.config.pt_crit == "acc"
        edges = len(p.decided[cell])
        if step < edges:
            edge = self.draw([e for e in range(edges) if p.decided[cell][e] < 0])
            tried = self.candidates(run, cell, edge)
            scores: list[float | None] = [None] * run.model.alpha_normal.shape[1]
            best = tried[0]
            for op in tried:  # strict: ties keep the first op
                scores[op] = score = self.measure(run, (cell, edge, op))
                if (score < scores[best]) if acc else (score > scores[best]):
                    best = op
            p.decided[cell][edge] = best
            return {"cell": cell, "edge": edge, "op": best, "scores": scores}
        spans = node_edges(run.model.config.nodes)
        node = self.draw([n for n in self.topology_nodes(run) if n not in p.nodes_done[cell]])
        kept = [e for e in spans[node] if not p.removed[cell][e]]
        dropped, rounds = [], []
        while len(kept) > 2:
            scores = [self.measure(run, (cell, e, None)) for e in kept]
            worst = 0
            for i, score in enumerate(scores):  # the removal that hurts least; ties go to the later edge
                if (score >= scores[worst]) if acc else (score <= scores[worst]):
                    worst = i
            rounds.append(dict(zip(map(str, kept), scores)))
            p.removed[cell][kept[worst]] = True
            dropped.append(kept.pop(worst))
        p.nodes_done[cell].append(node)
        return {"cell": cell, "node": node, "kept": kept, "dropped": dropped, "scores": rounds}

    def derive(self, run: Any) -> Any:
        if self.steps == 0:
            return None
        from ..spaces import SEARCH_SPACES
        arch = self.projection.arch(run.model.arch_state())
        return SEARCH_SPACES.get(self.config.SPACE).derive(run.space, arch, self.config.max_skip)

    def record(self, run: Any, record: dict[str, Any], genotype: Any) -> str:
        if run.epoch <= self.config.epochs:
            return ""
        return f" | pt {self.steps}/{self.total_decisions(run)} decided"

    def describe(self) -> str:
        return f", DARTS-PT selection (every {self.config.pt_interval} epochs, by {self.config.pt_crit})"

    def state_dict(self) -> dict[str, Any]:
        state = self.projection.state_dict() if self.projection is not None else {}
        return {**state, "steps": self.steps, "order": self.order.get_state(), "decisions": self.decisions}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.steps = int(state["steps"])
        self.order.set_state(state["order"])
        self.decisions = list(state["decisions"])
        self.saved = {k: state[k] for k in ("decided", "removed", "nodes_done") if k in state}
        if self.projection is not None and self.saved:
            self.projection.load_state_dict(self.saved)
