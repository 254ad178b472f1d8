"""The DARTS convolutional search space (paper, sections 2.1 and 3.1.1).

A cell is a DAG of two input nodes and ``nodes`` intermediate nodes; every edge carries a
:class:`MixedOp`, the softmax(α)-weighted sum of all candidate ops. All normal cells share
α_normal and all reduction cells share α_reduce; both live on :class:`SearchNetwork`.

With ``partial_channels`` K > 1 the space is PC-DARTS's (Xu et al., ICLR 2020): each mixed op sees
1/K of its input channels (the rest bypass it, then the channels are shuffled), and each node
weights its incoming edges by softmax(β) over them (edge normalisation); derivation ranks edges by
softmax(α) x softmax(β).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from ..genotype import Genotype, derive_genotype, num_edges
from ..ops import (CONV_OPS, DARTS_OPS, EDGE_OP_SETS, FactorizedReduce, ReLUConvBN, build_op, edge_ops,
                   is_preactivated, is_zero_op, resolve_op_set, unknown_op_error)
from ..nets.conv import FIXED_REDUCTION
from . import SEARCH_SPACES
from .base import RECOMPUTE_MODES, SAMPLERS, ArchitectureSplit, GumbelSampler, mixing_weights, recomputed, sampled_sum


@dataclass
class ConvSearchSpaceConfig:
    """Shape of a convolutional search network; the defaults are the paper's CIFAR-10 search."""

    init_channels: int = 16
    layers: int = 8
    nodes: int = 4
    num_classes: int = 10
    in_channels: int = 3
    stem_multiplier: int = 3
    ops: tuple[str, ...] = field(default_factory=lambda: DARTS_OPS)
    partial_channels: int = 1  # K of PC-DARTS; 1 is plain DARTS
    auxiliary_skip: bool = False  # DARTS-: a skip beside every mixed op, weighted by SearchNetwork.aux_beta
    recompute: str = "none"  # activations recomputed in backward: none, per cell or per edge (mixed op)
    stem: str = "cifar"  # cifar: one stride-1 conv; imagenet: PC-DARTS's three stride-2 convs (8x fewer pixels)
    # P-DARTS's pruned spaces: the candidate ops of every edge, per cell type ({"normal": ((op, ...), ...),
    # "reduce": ...}, node-major, as many ops on every edge), replacing ``ops`` on each edge.
    edge_op_sets: dict[str, tuple[tuple[str, ...], ...]] | None = None
    sampler: str = "none"  # gdas: one op per edge sampled by hard Gumbel-softmax (GDAS), computed alone
    sampler_seed: int = 0  # the seed of the sampler's own random stream
    reduce_cell: str = "searched"  # gdas: GDAS's fixed reduction cell; only the normal cell is searched

    def __post_init__(self) -> None:
        self.ops = resolve_op_set(self.ops)

    def validate(self) -> None:
        for name in ("init_channels", "layers", "nodes", "num_classes", "in_channels",
                     "stem_multiplier"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.layers < 3:
            # Reductions sit at layers//3 and 2*layers//3: fewer than 3 cells would make a cell
            # both the first and a reduction, which the space does not define.
            raise ConfigError(f"{{layers}} must be >= 3 (reductions at L/3 and 2L/3), got {self.layers}",
                              names=("layers",))
        if not self.ops:
            raise ConfigError("the op set is empty")
        if self.edge_op_sets is not None:
            self._check_edge_op_sets()
        elif len(self.ops) == 1 and self.ops[0] in EDGE_OP_SETS:  # per-edge op sets: RobustDARTS's S1
            self.edge_ops("normal")  # raises ConfigError unless the cell has the set's edges
        else:
            for op in self.ops:
                if op not in CONV_OPS:
                    raise unknown_op_error(op)
            if len(set(self.ops)) != len(self.ops):
                raise ConfigError(f"repeated op in the op set {list(self.ops)}")
            if all(op == "none" for op in self.ops):
                raise ConfigError("the op set needs at least one op other than 'none'")
        if self.partial_channels < 1:
            raise ConfigError(f"{{partial_channels}} must be >= 1, got {self.partial_channels}", names=("partial_channels",))
        if self.init_channels % self.partial_channels:
            raise ConfigError(f"{{partial_channels}} {self.partial_channels} must divide {{init_channels}} "
                              f"{self.init_channels}", names=("partial_channels", "init_channels"))
        if self.stem not in STEMS:
            raise ConfigError(f"{{stem}} must be one of {', '.join(STEMS)}, got {self.stem!r}", names=("stem",))
        if self.stem == "imagenet" and self.init_channels < 2:
            raise ConfigError(f"{{init_channels}} must be >= 2 with {{stem}} imagenet, got {self.init_channels}",
                              names=("init_channels", "stem"))
        if self.recompute not in RECOMPUTE_MODES:
            raise ConfigError(f"{{recompute}} must be one of {', '.join(RECOMPUTE_MODES)}, got {self.recompute!r}",
                              names=("recompute",))
        if self.sampler not in SAMPLERS:
            raise ConfigError(f"{{sampler}} must be one of {', '.join(SAMPLERS)}, got {self.sampler!r}",
                              names=("sampler",))
        if self.reduce_cell not in REDUCE_CELLS:
            raise ConfigError(f"{{reduce_cell}} must be one of {', '.join(REDUCE_CELLS)}, got {self.reduce_cell!r}",
                              names=("reduce_cell",))
        if self.reduce_cell != "searched" and self.partial_channels > 1:
            raise ConfigError("{reduce_cell} gdas and {partial_channels} do not combine: the fixed reduction cell "
                              "has no edges to weight", names=("reduce_cell", "partial_channels"))
        if self.auxiliary_skip and self.partial_channels > 1:
            raise ConfigError("{regularizer} darts-minus and {partial_channels} do not combine: the auxiliary skip "
                              "of DARTS- spans every channel, PC-DARTS mixes a part of them",
                              names=("regularizer", "partial_channels"))

    def edge_ops(self, cell: str) -> tuple[tuple[str, ...], ...]:
        """The candidate ops of every edge of the ``cell`` ("normal" or "reduce") cells, node-major."""
        if self.edge_op_sets is not None:
            return tuple(tuple(ops) for ops in self.edge_op_sets[cell])
        return edge_ops(self.ops, num_edges(self.nodes), cell)

    def _check_edge_op_sets(self) -> None:
        sets = self.edge_op_sets
        if not isinstance(sets, dict) or set(sets) != {"normal", "reduce"}:
            raise ConfigError("edge_op_sets needs the op sets of the 'normal' and the 'reduce' cell's edges")
        widths = set()
        for cell, rows in sets.items():
            if len(rows) != num_edges(self.nodes):
                raise ConfigError(f"edge_op_sets[{cell!r}] names {len(rows)} edges; a {self.nodes}-node cell has "
                                  f"{num_edges(self.nodes)}")
            for e, ops in enumerate(rows):
                for op in ops:
                    if op not in CONV_OPS:
                        raise unknown_op_error(op)
                if not ops or len(set(ops)) != len(ops):
                    raise ConfigError(f"edge_op_sets[{cell!r}] edge {e}: {list(ops)} is empty or repeats an op")
                widths.add(len(ops))
        if len(widths) != 1:
            raise ConfigError(f"edge_op_sets: every edge needs as many ops (α is one matrix), got {sorted(widths)}")

    @property
    def reduction_layers(self) -> tuple[int, int]:
        return (self.layers // 3, 2 * self.layers // 3)

    @property
    def downsampling(self) -> int:
        """How many times smaller the last cells' maps are than the input (the smallest image it takes)."""
        return STEMS[self.stem] * 4


#: The reduction cell of a search: searched like the normal one, or GDAS's fixed one (GDAS-FRC).
REDUCE_CELLS = ("searched", "gdas")

#: Search-network stems and their downsampling: CIFAR's stride-1 conv, or PC-DARTS's ImageNet stem
#: (two stride-2 convs to s0, a third to s1) for large images.
STEMS = {"cifar": 1, "imagenet": 8}


FIXED_REDUCTION_TYPES = tuple(FIXED_REDUCTION.values())


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """Interleave ``groups`` channel groups (ShuffleNet), so the next edge sees other channels."""
    b, c, h, w = x.shape
    return x.view(b, groups, c // groups, h, w).transpose(1, 2).reshape(b, c, h, w)


class MixedOp(nn.Module):
    """Sum over candidate ops weighted by softmax(α) for one edge (paper, equation 1); with
    ``partial`` K > 1, over the first C/K channels only (PC-DARTS)."""

    def __init__(self, C: int, stride: int, op_names: tuple[str, ...], partial: int = 1,
                 auxiliary_skip: bool = False) -> None:
        super().__init__()
        self.partial = partial
        # DARTS- (Chu et al., ICLR 2021): a skip connection beside the mixture, outside α, so that the
        # ops need not compete with skip_connect for the residual path; its weight β decays to 0.
        self.aux = (FactorizedReduce(C, C, affine=False) if stride == 2 else nn.Identity()) if auxiliary_skip else None
        # ceil_mode: an odd side halves to ceil(H/2), as the padded stride-2 ops do (PC-DARTS's floor crashed)
        self.bypass = nn.MaxPool2d(2, 2, ceil_mode=True) if stride == 2 and partial > 1 else None
        C = C // partial
        self.ops = nn.ModuleList()
        for name in op_names:
            op = build_op(name, C, stride, affine=False)
            if "pool" in name:
                # As in the original: pooled features are rescaled like the conv ops' outputs.
                op = nn.Sequential(op, nn.BatchNorm2d(C, affine=False))
            self.ops.append(op)
        # Zero ops contribute w * 0 = 0 to the value and to every gradient: skip them.
        self.active = [i for i, op in enumerate(self.ops) if not is_zero_op(op)]
        self.preactivated = [is_preactivated(op) for op in self.ops]
        self.stride = stride
        # P-DARTS: dropout on the identity (skip_connect at stride 1) with this rate, set per epoch.
        self.identity = {i for i, name in enumerate(op_names) if name == "skip_connect" and stride == 1}
        self.skip_dropout = 0.0

    @property
    def uses_relu(self) -> bool:
        return any(self.preactivated[i] for i in self.active)

    def forward(self, x: torch.Tensor, weights: torch.Tensor,
                x_relu: torch.Tensor | None = None, aux_beta: float = 0.0, index: int | None = None) -> torch.Tensor:
        """``x_relu`` (relu(x), shared by all edges leaving a node) saves recomputing it per op;
        ``aux_beta`` weights DARTS-'s auxiliary skip; ``index`` (GDAS) is the one op computed."""
        if self.aux is not None and aux_beta:
            return self._mix(x, weights, x_relu, index) + aux_beta * self.aux(x)
        if self.partial > 1:
            c = x.shape[1] // self.partial
            rest = x[:, c:]
            mixed = self._mix(x[:, :c], weights, x_relu[:, :c] if x_relu is not None else None, index)
            rest = self.bypass(rest) if self.bypass is not None else rest
            return channel_shuffle(torch.cat([mixed, rest], dim=1), self.partial)
        return self._mix(x, weights, x_relu, index)

    def _op(self, i: int, x: torch.Tensor, x_relu: torch.Tensor | None) -> torch.Tensor:
        if x_relu is not None and self.preactivated[i]:
            y = self.ops[i].forward_preactivated(x_relu)
        else:
            y = self.ops[i](x)
        if self.skip_dropout and i in self.identity:
            y = F.dropout(y, self.skip_dropout, self.training)
        return y

    def _mix(self, x: torch.Tensor, weights: torch.Tensor, x_relu: torch.Tensor | None,
             index: int | None = None) -> torch.Tensor:
        if index is not None:
            return sampled_sum(weights, index, self._op(index, x, x_relu))
        if not self.active:
            return self.ops[0](x)
        out = None
        for i in self.active:
            y = weights[i] * self._op(i, x, x_relu)
            out = y if out is None else out + y
        return out


class SearchCell(nn.Module):
    """A search cell: every intermediate node sums the mixed ops applied to all its predecessors."""

    def __init__(self, nodes: int, C_prev_prev: int, C_prev: int, C: int, reduction: bool,
                 reduction_prev: bool, op_names: tuple[tuple[str, ...], ...], partial: int = 1,
                 auxiliary_skip: bool = False, recompute_edges: bool = False) -> None:
        """``op_names``: the candidate ops of each edge, node-major; ``recompute_edges``: every mixed op's
        activations are recomputed in backward instead of kept."""
        super().__init__()
        self.recompute_edges = recompute_edges
        self.reduction = reduction
        self.nodes = nodes
        if reduction_prev:
            self.preprocess0: nn.Module = FactorizedReduce(C_prev_prev, C, affine=False)
        else:
            self.preprocess0 = ReLUConvBN(C_prev_prev, C, 1, 1, 0, affine=False)
        self.preprocess1 = ReLUConvBN(C_prev, C, 1, 1, 0, affine=False)
        self.edges = nn.ModuleList()
        for i in range(nodes):
            for j in range(2 + i):
                stride = 2 if reduction and j < 2 else 1
                self.edges.append(MixedOp(C, stride, op_names[len(self.edges)], partial, auxiliary_skip))
        self._relu_needed = any(edge.uses_relu for edge in self.edges)
        # The ReLU every pre-activated op starts with, computed once per node (see PreReLU).
        self.relu = nn.ReLU(inplace=False)

    def forward(self, s0: torch.Tensor, s1: torch.Tensor, weights: torch.Tensor,
                edge_weights: torch.Tensor | None = None, aux_beta: float = 0.0,
                index: list[int] | None = None) -> torch.Tensor:
        """``edge_weights`` (PC-DARTS's per-node softmax of β, one per edge) scale each edge's output;
        ``index`` (GDAS) names the one op each edge computes."""
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        relus = [self.relu(h) if self._relu_needed else None for h in states]
        row = 0
        for i in range(self.nodes):
            s = None
            for j, h in enumerate(states):
                edge = self.edges[row + j]
                pick = None if index is None else index[row + j]
                if self.recompute_edges:
                    y = recomputed(edge, h, weights[row + j], relus[j], aux_beta, pick)
                else:
                    y = edge(h, weights[row + j], relus[j], aux_beta, pick)
                if edge_weights is not None:
                    y = edge_weights[row + j] * y
                s = y if s is None else s + y
            row += len(states)
            states.append(s)
            last = i == self.nodes - 1  # the last node feeds no edge of this cell
            relus.append(self.relu(s) if self._relu_needed and not last else None)
        return torch.cat(states[2:], dim=1)


def edge_softmax(beta: torch.Tensor, nodes: int) -> torch.Tensor:
    """PC-DARTS's edge weights: softmax(β) over each node's incoming edges (node-major rows)."""
    parts, row = [], 0
    for i in range(nodes):
        parts.append(mixing_weights(beta[row:row + 2 + i]))
        row += 2 + i
    return torch.cat(parts)


@SEARCH_SPACES.register("cnn")
class SearchNetwork(ArchitectureSplit, nn.Module):
    """The DARTS search network: stem, ``layers`` search cells, global pooling, classifier.

    Reduction cells (stride 2, channels doubled) sit at layers//3 and 2*layers//3. BatchNorm is
    non-affine everywhere but in the stem, as in the original. ``alpha_normal`` and
    ``alpha_reduce`` are registered parameters (so they travel in the state dict) but are kept out
    of :meth:`weight_parameters`.
    """

    downsampling = 4  # with the CIFAR stem (a stride-1 conv), then two reduction cells: see config.downsampling

    def __init__(self, config: ConvSearchSpaceConfig | None = None) -> None:
        super().__init__()
        config = config or ConvSearchSpaceConfig()
        config.validate()
        self.config = config
        C, nodes = config.init_channels, config.nodes
        if config.stem == "imagenet":
            # PC-DARTS's ImageNet search: s0 at 1/4 of the input, s1 at 1/8, so the first cell reduces s0.
            self.stem0 = nn.Sequential(
                nn.Conv2d(config.in_channels, C // 2, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(C // 2),
                nn.ReLU(inplace=True),
                nn.Conv2d(C // 2, C, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(C))
            self.stem1 = nn.Sequential(nn.ReLU(inplace=False), nn.Conv2d(C, C, 3, stride=2, padding=1, bias=False),
                                       nn.BatchNorm2d(C))
            C_prev_prev, C_prev, C_curr = C, C, C
            reduction_prev = True
        else:
            C_curr = config.stem_multiplier * C
            self.stem = nn.Sequential(
                nn.Conv2d(config.in_channels, C_curr, 3, padding=1, bias=False),
                nn.BatchNorm2d(C_curr),
            )
            C_prev_prev, C_prev, C_curr = C_curr, C_curr, C
            reduction_prev = False
        self.cells = nn.ModuleList()
        self.fixed_reduction = config.reduce_cell != "searched"
        for i in range(config.layers):
            reduction = i in config.reduction_layers
            if reduction:
                C_curr *= 2
            if reduction and self.fixed_reduction:
                cell = FIXED_REDUCTION[config.reduce_cell](C_prev_prev, C_prev, C_curr, reduction_prev, affine=False)
            else:
                cell = SearchCell(nodes, C_prev_prev, C_prev, C_curr, reduction, reduction_prev,
                                  config.edge_ops("reduce" if reduction else "normal"), config.partial_channels,
                                  config.auxiliary_skip, recompute_edges=config.recompute == "edge")
            self.cells.append(cell)
            reduction_prev = reduction
            C_prev_prev, C_prev = C_prev, (cell.multiplier if isinstance(cell, FIXED_REDUCTION_TYPES) else nodes) * C_curr
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(C_prev, config.num_classes)
        shape = (num_edges(nodes), len(config.edge_ops("normal")[0]))
        self.alpha_normal = nn.Parameter(1e-3 * torch.randn(shape))
        # GDAS-FRC: no reduction cell to search, no α_reduce
        self.alpha_reduce = None if self.fixed_reduction else nn.Parameter(1e-3 * torch.randn(shape))
        if config.partial_channels > 1:
            self.beta_normal = nn.Parameter(1e-3 * torch.randn(shape[0]))
            self.beta_reduce = nn.Parameter(1e-3 * torch.randn(shape[0]))
        # Set by a search loop, not learned: DARTS-'s auxiliary-skip weight, and SDARTS-RS's perturbed
        # mixing weights (normal, reduce) that replace softmax(α) in its weight steps.
        self.aux_beta = 0.0
        self.mixing_override: tuple[torch.Tensor, torch.Tensor] | None = None
        self.sampler = GumbelSampler(config.sampler_seed) if config.sampler == "gdas" else None

    def set_skip_dropout(self, rate: float) -> None:
        """P-DARTS: the dropout rate on every identity (skip_connect) candidate."""
        for cell in self.cells:
            for edge in getattr(cell, "edges", ()):  # a fixed reduction cell has none
                edge.skip_dropout = float(rate)

    @property
    def partial(self) -> bool:
        return self.config.partial_channels > 1

    def arch_parameters(self) -> list[nn.Parameter]:
        extra = [self.beta_normal, self.beta_reduce] if self.partial else []
        return [a for a in (self.alpha_normal, self.alpha_reduce) if a is not None] + extra

    def edge_weights(self) -> tuple[torch.Tensor, torch.Tensor] | tuple[None, None]:
        """PC-DARTS: softmax(β) over the incoming edges of each node (float32); (None, None) in plain DARTS."""
        if not self.partial:
            return None, None
        return edge_softmax(self.beta_normal, self.config.nodes), edge_softmax(self.beta_reduce, self.config.nodes)

    def arch_weights(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """softmax(α) per edge, computed in float32 whatever the autocast dtype (reduce: None with a
        fixed reduction cell)."""
        return (mixing_weights(self.alpha_normal),
                None if self.alpha_reduce is None else mixing_weights(self.alpha_reduce))

    def sample(self) -> tuple[tuple[torch.Tensor, list[int]], tuple[torch.Tensor, list[int]]]:
        """GDAS: straight-through weights and the picked op of every edge, for normal and reduction
        cells (one draw per forward pass, shared by all cells of a type)."""
        drawn = [self.sampler.sample(a, self.training) if a is not None else (None, None)
                 for a in (self.alpha_normal, self.alpha_reduce)]
        return tuple((w, None if i is None else i.tolist()) for w, i in drawn)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        i_normal = i_reduce = None
        if self.sampler is not None and self.mixing_override is None:
            (w_normal, i_normal), (w_reduce, i_reduce) = self.sample()
        else:
            w_normal, w_reduce = self.mixing_override or self.arch_weights()
        e_normal, e_reduce = self.edge_weights()
        if self.config.stem == "imagenet":
            s0 = self.stem0(x)
            s1 = self.stem1(s0)
        else:
            s0 = s1 = self.stem(x)
        per_cell = self.config.recompute == "cell"
        for cell in self.cells:
            if isinstance(cell, FIXED_REDUCTION_TYPES):
                s0, s1 = s1, cell(s0, s1)
                continue
            args = (s0, s1, w_reduce, e_reduce, self.aux_beta, i_reduce) if cell.reduction else \
                (s0, s1, w_normal, e_normal, self.aux_beta, i_normal)
            s0, s1 = s1, (recomputed(cell, *args) if per_cell else cell(*args))
        return self.classifier(torch.flatten(self.global_pooling(s1), 1))

    def loss(self, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of the logits; the architect differentiates this w.r.t. w and α."""
        return F.cross_entropy(self(inputs), targets)

    def ranking_weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The rows derivation ranks (edges, ops) by: softmax(α), times softmax(β) with PC-DARTS."""
        w_normal, w_reduce = self.arch_weights()
        if self.partial:  # PC-DARTS ranks edges by α·β
            e_normal, e_reduce = self.edge_weights()
            w_normal, w_reduce = w_normal * e_normal[:, None], w_reduce * e_reduce[:, None]
        return w_normal, w_reduce

    def genotype(self, max_skip: int | None = None) -> Genotype:
        w_normal, w_reduce = self.ranking_weights()
        if w_reduce is None:  # a fixed reduction cell: only the normal cell is derived
            normal = derive_genotype(w_normal, w_normal, self.config.edge_ops("normal"), max_skip=max_skip)
            return normal.with_fixed_reduction(self.config.reduce_cell)
        return derive_genotype(w_normal, w_reduce, self.config.edge_ops("normal"), max_skip=max_skip,
                               reduce_op_names=self.config.edge_ops("reduce"))
