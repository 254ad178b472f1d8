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

import math
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from ..genotype import Genotype, derive_genotype, num_edges
from ..ops import DilatedDepthwiseConv2d, FactorizedReduce, ReLUConvBN, build_op, is_preactivated, is_zero_op
from ..nets.conv import FIXED_REDUCTION
from .base import ArchitectureSplit, mixing_weights, recomputed, sampled_sum
from .conv_config import ConvSearchSpaceConfig


FIXED_REDUCTION_TYPES = tuple(FIXED_REDUCTION.values())
#: The search network's architecture tensors: α per cell type, PC-DARTS's β (absent ones are skipped).
ARCH_TENSORS = ("alpha_normal", "alpha_reduce", "beta_normal", "beta_reduce")


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """Interleave ``groups`` channel groups (ShuffleNet), so the next edge sees other channels."""
    b, c, h, w = x.shape
    return x.view(b, groups, c // groups, h, w).transpose(1, 2).reshape(b, c, h, w)


def add_conv_biases(module: nn.Module) -> None:
    """GDAS's cells (xautodl's cell_operations.py, ``bias=not affine``): every convolution but the
    depthwise ones carries a bias, initialised as ``nn.Conv2d``'s. Before a non-affine BatchNorm in
    training it cancels (the batch mean removes it, its gradient is 0); it shows in evaluation, where
    the running mean holds only part of it, and where a conv follows (the fixed reduction cell's)."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d) and m.bias is None and not isinstance(m, DilatedDepthwiseConv2d):
            bound = 1 / math.sqrt(m.in_channels // m.groups * math.prod(m.kernel_size))
            m.bias = nn.Parameter(torch.empty(m.out_channels).uniform_(-bound, bound))


class MixedOp(nn.Module):
    """Sum over candidate ops weighted by softmax(α) for one edge (paper, equation 1); with
    ``partial`` K > 1, over the first C/K channels only (PC-DARTS)."""

    def __init__(self, C: int, stride: int, op_names: tuple[str, ...], partial: int = 1,
                 auxiliary_skip: bool = False, pool_bn: bool = True, sampled_form: str = "darts") -> None:
        """``pool_bn``: a non-affine BatchNorm after each pooling candidate (DARTS's MixedOp; GDAS's has none);
        ``sampled_form``: GDAS's mixture of the one computed op, its DARTS-space cell's (``darts``) or its
        NAS-Bench-201 cell's (``nb201``, :func:`~dartsnas.spaces.base.sampled_sum`)."""
        super().__init__()
        self.sampled_form = sampled_form
        self.partial = partial
        # DARTS- (Chu et al., ICLR 2021): a skip connection beside the mixture, outside α, so that the
        # ops need not compete with skip_connect for the residual path; its weight β decays to 0.
        self.aux = (FactorizedReduce(C, C, affine=False) if stride == 2 else nn.Identity()) if auxiliary_skip else None
        # ceil_mode: an odd side halves to ceil(H/2), as the padded stride-2 ops do (PC-DARTS's floor crashed)
        self.bypass = nn.MaxPool2d(2, 2, ceil_mode=True) if stride == 2 and partial > 1 else None
        C = C // partial
        self.channels = C  # what each candidate op sees (DrNAS's progressive search widens them)
        self.ops = nn.ModuleList()
        for name in op_names:
            op = build_op(name, C, stride, affine=False)
            if "pool" in name and pool_bn:
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
        self.aux_beta = 0.0  # DARTS-: the auxiliary skip's weight, set per epoch

    @property
    def uses_relu(self) -> bool:
        return any(self.preactivated[i] for i in self.active)

    def forward(self, x: torch.Tensor, weights: torch.Tensor,
                x_relu: torch.Tensor | None = None, index: int | None = None) -> torch.Tensor:
        """``weights``: the edge's mixing weights (softmax(α), or a sampler's straight-through ones with
        ``index`` the one op computed); ``x_relu`` (relu(x), shared by all edges leaving a node) saves
        recomputing it per op."""
        if self.aux is not None and self.aux_beta:
            return self._mix(x, weights, x_relu, index) + self.aux_beta * self.aux(x)
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
        if index is not None:  # GDAS's DARTS-space MixedOp.forward_gdas (xautodl search_cells.py): op_k(x) h_k alone
            y = self._op(index, x, x_relu)
            if self.sampled_form == "nb201":  # NAS201SearchCell.forward_gdas: + the other h_j as scalars
                return sampled_sum(weights, index, y)
            return weights[index].to(y.dtype) * y
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
                 auxiliary_skip: bool = False, recompute_edges: bool = False, pool_bn: bool = True) -> None:
        """``op_names``: the candidate ops of each edge, node-major; ``recompute_edges``: every mixed op's
        activations are recomputed in backward instead of kept; ``pool_bn``: see :class:`MixedOp`."""
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
                self.edges.append(MixedOp(C, stride, op_names[len(self.edges)], partial, auxiliary_skip, pool_bn))
        self._relu_needed = any(edge.uses_relu for edge in self.edges)
        # The ReLU every pre-activated op starts with, computed once per node (see PreReLU).
        self.relu = nn.ReLU(inplace=False)

    def forward(self, s0: torch.Tensor, s1: torch.Tensor, weights: torch.Tensor,
                edge_weights: torch.Tensor | None = None, index: list[int] | None = None) -> torch.Tensor:
        """``edge_weights`` (PC-DARTS's per-node softmax of β, one per edge) scale each edge's output;
        ``index`` (GDAS) names the one op each edge computes."""
        if self.recompute_edges:  # the preprocessing's ReLU, conv and BatchNorm outputs too (bit-identical)
            states = [recomputed(self.preprocess0, s0), recomputed(self.preprocess1, s1)]
        else:
            states = [self.preprocess0(s0), self.preprocess1(s1)]
        relus = [self.relu(h) if self._relu_needed else None for h in states]
        row = 0
        for i in range(self.nodes):
            s = None
            for j, h in enumerate(states):
                edge = self.edges[row + j]
                pick = None if index is None else index[row + j]
                if self.recompute_edges:
                    y = recomputed(edge, h, weights[row + j], relus[j], pick)
                else:
                    y = edge(h, weights[row + j], relus[j], pick)
                if edge_weights is not None:
                    y = edge_weights[row + j] * y
                s = y if s is None else s + y
            row += len(states)
            states.append(s)
            last = i == self.nodes - 1  # the last node feeds no edge of this cell
            relus.append(self.relu(s) if self._relu_needed and not last else None)
        return torch.cat(states[2:], dim=1)


def edge_softmax(beta: torch.Tensor, nodes: int, inputs: int = 2) -> torch.Tensor:
    """PC-DARTS's edge weights: softmax(β) over each node's incoming edges (node-major rows; node i
    has ``inputs`` + i of them)."""
    parts, row = [], 0
    for i in range(nodes):
        parts.append(mixing_weights(beta[row:row + inputs + i]))
        row += inputs + i
    return torch.cat(parts)


class MixedCellsNetwork(ArchitectureSplit, nn.Module):
    """What a search network of mixed-op cells offers the search methods, whatever its macro
    structure: α per cell type (``alpha_normal``; ``alpha_reduce`` None where no reduction cell is
    searched), PC-DARTS's β, GDAS's draws, SDARTS-RS's override, DARTS-'s auxiliary skips and
    P-DARTS's skip dropout. A subclass builds ``cells`` (each searched one with ``edges`` of
    :class:`MixedOp`) and sets ``cell_inputs``, the states before a cell's first node."""

    cell_inputs = 2

    def init_arch(self, num_edges: int, num_ops: int, reduce: bool) -> None:
        """α (and with PC-DARTS β) for the normal cells, and for the reduction cells if ``reduce``;
        then the methods' hooks, unset."""
        self.alpha_normal = nn.Parameter(1e-3 * torch.randn(num_edges, num_ops))
        self.alpha_reduce = nn.Parameter(1e-3 * torch.randn(num_edges, num_ops)) if reduce else None
        # PC-DARTS's edge normalisation; DrNAS's progressive search has partial channels without it
        partial = self.config.partial_channels > 1 and getattr(self.config, "edge_norm", True)
        self.beta_normal = nn.Parameter(1e-3 * torch.randn(num_edges)) if partial else None
        self.beta_reduce = nn.Parameter(1e-3 * torch.randn(num_edges)) if partial and reduce else None
        # Set by a search method, not learned: SDARTS-RS's perturbed mixing weights (normal, reduce) that
        # replace softmax(α) in its weight steps, and GDAS's sampler (methods.gdas.GumbelSampler) that
        # draws one op per edge in every forward pass.
        self.mixing_override: tuple[torch.Tensor, torch.Tensor | None] | None = None
        self.sampler = None
        self.projection = None  # DARTS-PT: methods.pt.Projection, its decided, removed and tried candidates
        self._aux_beta = 0.0

    def mixed_edges(self) -> list[MixedOp]:
        return [edge for cell in self.cells for edge in getattr(cell, "edges", ())]  # fixed cells have none

    @property
    def aux_beta(self) -> float:
        """DARTS-: the weight of every mixed op's auxiliary skip."""
        return self._aux_beta

    @aux_beta.setter
    def aux_beta(self, value: float) -> None:
        self._aux_beta = value
        for edge in self.mixed_edges():
            edge.aux_beta = value

    def set_skip_dropout(self, rate: float) -> None:
        """P-DARTS: the dropout rate on every identity (skip_connect) candidate."""
        for edge in self.mixed_edges():
            edge.skip_dropout = float(rate)

    def arch_parameters(self) -> list[nn.Parameter]:
        return [a for a in (self.alpha_normal, self.alpha_reduce, self.beta_normal, self.beta_reduce) if a is not None]

    def alphas(self) -> list[nn.Parameter]:
        """α of every searched cell type (normal, and reduce where searched): what a term on α sees."""
        return [a for a in (self.alpha_normal, self.alpha_reduce) if a is not None]

    def edge_weights(self) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """PC-DARTS: softmax(β) over the incoming edges of each node (float32); (None, None) in plain DARTS."""
        return tuple(None if b is None else edge_softmax(b, self.config.nodes, self.cell_inputs)
                     for b in (self.beta_normal, self.beta_reduce))

    def arch_weights(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """softmax(α) per edge, computed in float32 whatever the autocast dtype (reduce: None without a
        searched reduction cell)."""
        return (mixing_weights(self.alpha_normal),
                None if self.alpha_reduce is None else mixing_weights(self.alpha_reduce))

    def sample(self) -> tuple[tuple[torch.Tensor, list[int]], tuple[torch.Tensor, list[int]]]:
        """GDAS: straight-through weights and the picked op of every edge, for normal and reduction
        cells (one draw per forward pass, shared by all cells of a type)."""
        drawn = [self.sampler.sample(a, self.training) if a is not None else (None, None)
                 for a in (self.alpha_normal, self.alpha_reduce)]
        return tuple((w, None if i is None else i.tolist()) for w, i in drawn)

    def mixing(self) -> tuple[tuple[Any, Any, Any], tuple[Any, Any, Any]]:
        """(weights, edge weights, picked ops) of the normal and the reduction cells for this pass."""
        i_normal = i_reduce = None
        if self.sampler is not None and self.mixing_override is None:
            (w_normal, i_normal), (w_reduce, i_reduce) = self.sample()
        else:
            w_normal, w_reduce = self.mixing_override or self.arch_weights()
        if self.projection is not None:
            w_normal, w_reduce = self.projection.apply(w_normal, "normal"), self.projection.apply(w_reduce, "reduce")
        e_normal, e_reduce = self.edge_weights()
        return (w_normal, e_normal, i_normal), (w_reduce, e_reduce, i_reduce)

    def loss(self, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of the logits; the architect differentiates this w.r.t. w and α."""
        return F.cross_entropy(self(inputs), targets)

    def arch_state(self) -> dict[str, torch.Tensor]:
        """The architecture tensors by name, as the state dict holds them (what derivation reads)."""
        return {name: p for name in ARCH_TENSORS if (p := getattr(self, name, None)) is not None}


class SearchNetwork(MixedCellsNetwork):
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
            # PC-DARTS's ImageNet search (model_search_imagenet.py, Network.__init__): at 3C channels
            # (stem_multiplier x C), 3 -> 3C/2 -> 3C to s0 at 1/4 of the input, 3C -> 3C to s1 at 1/8;
            # the first cell reduces s0.
            S = config.stem_multiplier * C
            self.stem0 = nn.Sequential(
                nn.Conv2d(config.in_channels, S // 2, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(S // 2),
                nn.ReLU(inplace=True),
                nn.Conv2d(S // 2, S, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(S))
            self.stem1 = nn.Sequential(nn.ReLU(inplace=False), nn.Conv2d(S, S, 3, stride=2, padding=1, bias=False),
                                       nn.BatchNorm2d(S))
            C_prev_prev, C_prev, C_curr = S, S, C
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
        gdas_network = config.search_network == "gdas"
        for i in range(config.layers):
            reduction = i in config.reduction_layers
            if reduction:
                C_curr *= 2
            if reduction and self.fixed_reduction:
                cell = FIXED_REDUCTION[config.reduce_cell](C_prev_prev, C_prev, C_curr, reduction_prev, affine=False)
            else:
                cell = SearchCell(nodes, C_prev_prev, C_prev, C_curr, reduction, reduction_prev,
                                  config.edge_ops("reduce" if reduction else "normal"), config.partial_channels,
                                  config.auxiliary_skip, recompute_edges=config.recompute == "edge",
                                  pool_bn=not gdas_network)
            if gdas_network:
                add_conv_biases(cell)
            self.cells.append(cell)
            reduction_prev = reduction
            C_prev_prev, C_prev = C_prev, (cell.multiplier if isinstance(cell, FIXED_REDUCTION_TYPES) else nodes) * C_curr
        # GDAS's NASNetworkGDAS (search_model_gdas_nasnet.py, and its _FRC twin): an (affine) BN + ReLU
        # on the last cell's output before the pooling
        self.lastact = nn.Sequential(nn.BatchNorm2d(C_prev), nn.ReLU(inplace=False)) if gdas_network else None
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(C_prev, config.num_classes)
        # GDAS-FRC: no reduction cell to search, no α_reduce
        self.init_arch(num_edges(nodes), len(config.edge_ops("normal")[0]), reduce=not self.fixed_reduction)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        (w_normal, e_normal, i_normal), (w_reduce, e_reduce, i_reduce) = self.mixing()
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
            args = (s0, s1, w_reduce, e_reduce, i_reduce) if cell.reduction else (s0, s1, w_normal, e_normal, i_normal)
            s0, s1 = s1, (recomputed(cell, *args) if per_cell else cell(*args))
        if self.lastact is not None:
            s1 = self.lastact(s1)
        return self.classifier(torch.flatten(self.global_pooling(s1), 1))

    def ranking_weights(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The rows derivation ranks (edges, ops) by: softmax(α), times softmax(β) with PC-DARTS."""
        return ranking_weights(self.arch_state(), self.config.nodes)

    def genotype(self, max_skip: int | None = None) -> Genotype:
        return derive_conv_genotype(self.config, self.arch_state(), max_skip)


def ranking_weights(arch: Mapping[str, torch.Tensor], nodes: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """softmax(α) of the normal and reduction edges (reduce: None with a fixed reduction cell), times
    softmax(β) over each node's incoming edges with PC-DARTS (its β in ``arch``)."""
    w_normal = mixing_weights(arch["alpha_normal"])
    w_reduce = mixing_weights(arch["alpha_reduce"]) if "alpha_reduce" in arch else None
    if "beta_normal" in arch:  # PC-DARTS ranks edges by α·β
        w_normal = w_normal * edge_softmax(arch["beta_normal"], nodes)[:, None]
        w_reduce = w_reduce * edge_softmax(arch["beta_reduce"], nodes)[:, None]
    return w_normal, w_reduce


def derive_conv_genotype(config: ConvSearchSpaceConfig, arch: Mapping[str, torch.Tensor],
                         max_skip: int | None = None) -> Genotype:
    """The top-k genotype of the architecture tensors ``arch`` (a network's, or a checkpoint's) in the
    space ``config``: per node the two strongest non-zero incoming edges (or, ``derivation`` gdas, the
    two strongest (op, input) pairs); a fixed reduction cell named."""
    w_normal, w_reduce = ranking_weights(arch, config.nodes)
    pairs = config.derivation == "gdas"
    if w_reduce is None:  # a fixed reduction cell: only the normal cell is derived
        normal = derive_genotype(w_normal, w_normal, config.edge_ops("normal"), max_skip=max_skip, pairs=pairs)
        return normal.with_fixed_reduction(config.reduce_cell)
    return derive_genotype(w_normal, w_reduce, config.edge_ops("normal"), max_skip=max_skip,
                           reduce_op_names=config.edge_ops("reduce"), pairs=pairs)
