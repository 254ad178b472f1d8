"""NAS-Bench-201's search space (Dong & Yang, ICLR 2020) as a registered space, ``nb201``: one cell of
an input node and 3 intermediate nodes, a mixed op on each of its 6 edges over ``none``,
``skip_connect``, ``nor_conv_1x1``, ``nor_conv_3x3`` and ``avg_pool_3x3``, in the benchmark's network
(:mod:`dartsnas.nets.nb201`); the genotype is one op per edge (:class:`~dartsnas.genotype201.Cell201`).

The search network is xautodl's (``cell_searchs/search_model_darts.py`` TinyNetworkDarts and its
GDAS twin, ``search_cells.py`` NAS201SearchCell): the cells' BatchNorms non-affine (their convs with a
bias, ``bias=not affine``), no BatchNorm after the pooling candidate, the residual blocks and the
stem affine, BN-ReLU before the pooling; GDAS mixes in the NAS-Bench-201 cell's form. Every search
method of the conv space's loop runs here but P-DARTS's stages and GDAS's fixed reduction cell.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from ..config import Config, option
from ..errors import ConfigError
from ..genotype201 import CELLS201, Cell201, derive_cell201, edge_inputs, edges_of
from ..layout import CellLayout
from ..nets import NetworkConfig, build_network
from ..nets.nb201 import ResNetBlock, stage_layout
from ..ops import CONV_OPS, NB201_OPS, resolve_op_set, unknown_op_error
from . import SEARCH_SPACES, SearchSpace
from .base import RECOMPUTE_MODES, mixing_weights, recomputed
from .conv import MixedCellsNetwork, MixedOp, add_conv_biases


@dataclass
class NB201SearchSpaceConfig:
    """Shape of a NAS-Bench-201 search network; the defaults are the benchmark's (C=16, N=5)."""

    init_channels: int = 16
    layers: int = 5  # N: cells per stage
    nodes: int = 3
    num_classes: int = 10
    in_channels: int = 3
    ops: tuple[str, ...] = field(default_factory=lambda: NB201_OPS)
    partial_channels: int = 1
    auxiliary_skip: bool = False
    recompute: str = "none"
    track_running_stats: bool = True

    downsampling = 4

    def __post_init__(self) -> None:
        self.ops = resolve_op_set(self.ops)

    def validate(self) -> None:
        for name in ("init_channels", "layers", "nodes", "num_classes", "in_channels", "partial_channels"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{{{name}}} must be >= 1, got {getattr(self, name)}", names=(name,))
        if not self.ops or len(set(self.ops)) != len(self.ops):
            raise ConfigError(f"the op set {list(self.ops)} is empty or repeats an op")
        for op in self.ops:
            if op not in CONV_OPS:
                raise unknown_op_error(op)
        if self.init_channels % self.partial_channels:
            raise ConfigError(f"{{partial_channels}} {self.partial_channels} must divide {{init_channels}} "
                              f"{self.init_channels}", names=("partial_channels", "init_channels"))
        if self.recompute not in RECOMPUTE_MODES:
            raise ConfigError(f"{{recompute}} must be one of {', '.join(RECOMPUTE_MODES)}, got {self.recompute!r}",
                              names=("recompute",))
        if self.auxiliary_skip and self.partial_channels > 1:
            raise ConfigError("{regularizer} darts-minus and {partial_channels} do not combine",
                              names=("regularizer", "partial_channels"))

    def edge_ops(self, cell: str = "normal") -> tuple[tuple[str, ...], ...]:
        return (tuple(self.ops),) * edges_of(self.nodes)


class SearchCell201(nn.Module):
    """NAS201SearchCell: node i sums the mixed ops of its edges from every node before it."""

    def __init__(self, config: NB201SearchSpaceConfig, C: int) -> None:
        super().__init__()
        self.nodes = config.nodes
        self.recompute_edges = config.recompute == "edge"
        self.reduction = False
        self.edges = nn.ModuleList([MixedOp(C, 1, tuple(config.ops), config.partial_channels, config.auxiliary_skip,
                                            pool_bn=False, sampled_form="nb201") for _ in range(edges_of(config.nodes))])
        add_conv_biases(self)
        if not config.track_running_stats:
            for m in self.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.track_running_stats, m.running_mean, m.running_var, m.num_batches_tracked = False, None, None, None

    def forward(self, x: torch.Tensor, weights: torch.Tensor, edge_weights: torch.Tensor | None = None,
                index: list[int] | None = None) -> torch.Tensor:
        states, row = [x], 0
        for i in range(1, self.nodes + 1):
            s = None
            for j in range(i):
                edge, pick = self.edges[row + j], None if index is None else index[row + j]
                if self.recompute_edges:
                    y = recomputed(edge, states[j], weights[row + j], None, pick)
                else:
                    y = edge(states[j], weights[row + j], None, pick)
                if edge_weights is not None:
                    y = edge_weights[row + j] * y
                s = y if s is None else s + y
            row += i
            states.append(s)
        return states[-1]


class SearchNetwork201(MixedCellsNetwork):
    """TinyNetworkDarts: stem, 3 stages of N search cells with residual blocks between, BN-ReLU,
    pooling, classifier; α for the cell's edges (no reduction cell to search)."""

    cell_inputs = 1

    def __init__(self, config: NB201SearchSpaceConfig | None = None) -> None:
        super().__init__()
        config = config or NB201SearchSpaceConfig()
        config.validate()
        self.config = config
        C = config.init_channels
        self.stem = nn.Sequential(nn.Conv2d(config.in_channels, C, 3, padding=1, bias=False), nn.BatchNorm2d(C))
        self.cells = nn.ModuleList()
        C_prev = C
        for C_curr, reduction in stage_layout(C, config.layers):
            self.cells.append(ResNetBlock(C_prev, C_curr, 2) if reduction else SearchCell201(config, C_curr))
            C_prev = C_curr
        self.lastact = nn.Sequential(nn.BatchNorm2d(C_prev), nn.ReLU(inplace=False))
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(C_prev, config.num_classes)
        self.init_arch(edges_of(config.nodes), len(config.ops), reduce=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        (w, e, index), _ = self.mixing()
        s = self.stem(x)
        per_cell = self.config.recompute == "cell"
        for cell in self.cells:
            if isinstance(cell, ResNetBlock):
                s = cell(s)
            else:
                s = recomputed(cell, s, w, e, index) if per_cell else cell(s, w, e, index)
        return self.classifier(torch.flatten(self.global_pooling(self.lastact(s)), 1))

    def ranking_weights(self) -> tuple[torch.Tensor, None]:
        return mixing_weights(self.alpha_normal), None

    def genotype(self, max_skip: int | None = None) -> Cell201:
        return derive_cell201(self.alpha_normal, self.config.edge_ops())


@dataclass
class NB201Options(Config):
    """The NAS-Bench-201 space's config group."""

    init_channels: int = option(16, "C", group="search space", min=1)
    layers: int = option(5, "cells per stage N (3N cells, 2 residual blocks; the benchmark's 5)", group="search space",
                         min=1)
    nodes: int = option(3, "intermediate nodes per cell (the benchmark's 3: 4 with the input, 6 edges)",
                        group="search space", min=1)
    ops: tuple[str, ...] = option(help="candidate op set (the benchmark's: none skip_connect nor_conv_1x1 nor_conv_3x3 "
                                  "avg_pool_3x3)", factory=lambda: NB201_OPS, group="search space", metavar="OP")
    recompute: str = option("none", "activations recomputed in backward instead of kept: per cell or per edge",
                            group="search space", choices=("none", "cell", "edge"), resumable=True)
    track_running_stats: bool = option(True, "the cells' BatchNorms keep running statistics (xautodl's "
                                       "--track_running_stats 1); off: batch statistics in evaluation too",
                                       group="search space")

    def __post_init__(self) -> None:
        super().__post_init__()
        self.ops = resolve_op_set(self.ops)

    def space_config(self, num_classes: int, in_channels: int, **method_fields: Any) -> NB201SearchSpaceConfig:
        return NB201SearchSpaceConfig(init_channels=self.init_channels, layers=self.layers, nodes=self.nodes,
                                      num_classes=num_classes, in_channels=in_channels, ops=tuple(self.ops),
                                      recompute=self.recompute, track_running_stats=self.track_running_stats,
                                      **method_fields)


def sample_cell201(rng: random.Random, nodes: int = 3, ops: Sequence[str] = NB201_OPS) -> Cell201:
    """A uniform cell of the space: each edge any op, ``none`` included (the benchmark's random search)."""
    return Cell201(tuple((rng.choice(list(ops)), j) for j in edge_inputs(nodes)))


class NB201Space(SearchSpace):
    name = "nb201"
    help = "NAS-Bench-201's cell (one op per edge of a 4-node DAG) in the benchmark's network"
    train_help = "the benchmark's network of a NAS-Bench-201 cell (C=16, N=5)"
    search_kind, train_kind = "search-nb201", "train-nb201"
    genotype = Cell201
    options = NB201Options
    cell_types, cell_inputs, edges_per_node = ("normal",), 1, 0
    builtins = CELLS201
    default_nodes, default_ops = 3, NB201_OPS

    def owns(self, data: Mapping[str, Any]) -> bool:
        return "arch" in data

    def build(self, space_config: NB201SearchSpaceConfig) -> SearchNetwork201:
        return SearchNetwork201(space_config)

    def derive(self, space_config: NB201SearchSpaceConfig, arch: Mapping[str, torch.Tensor],
               max_skip: int | None = None) -> Cell201:
        return derive_cell201(arch["alpha_normal"], space_config.edge_ops())

    def final_network(self, genotype: Cell201, *, network: str = "nb201", **sizes: Any) -> torch.nn.Module:
        return build_network("nb201", NetworkConfig(genotype, **{"init_channels": 16, "layers": 5, **sizes,
                                                                 "auxiliary": False}))

    def resolve_ops(self, ops: Sequence[str]) -> tuple[str, ...]:
        return resolve_op_set(ops)

    def sample(self, rng: random.Random, nodes: int, ops: Sequence[str]) -> Cell201:
        return sample_cell201(rng, nodes, ops)

    def edge_picks(self, genotype: Mapping[str, Any], cell: str) -> list[tuple[int, str]]:
        return [(e, op) for e, (op, _) in enumerate(Cell201.from_dict(genotype).edges)]

    def cost_table(self, ops: Sequence[str], nodes: int, *, image_size: tuple[int, int], num_classes: int,
                   in_channels: int, init_channels: int, layers: int, latency_table: str | None = None,
                   **unused: Any) -> Any:
        """The multiply-adds and parameters of every candidate in the benchmark's network (C, N) at the
        data's size (no latency tables: they time DARTS's cells)."""
        from ..cost201 import CostTable201
        if latency_table is not None:
            raise ConfigError("{latency_table} times DARTS's cells; the nb201 space's costs are macs and params",
                              names=("latency_table",))
        return CostTable201.build(ops, nodes, init_channels=init_channels, layers=layers, image_size=tuple(image_size),
                                  num_classes=num_classes, in_channels=in_channels)

    def layouts(self, genotype: Cell201) -> list[CellLayout]:
        """The cell: the input, the nodes, an arrow per edge that is not ``none``; the last node is the output."""
        n = genotype.nodes
        nodes = [("x", 0.0, 0.0, "input")] + [(str(i), 2.0 * i, 0.9 if i % 2 else -0.9, "node") for i in range(1, n)]
        nodes.append(("out", 2.0 * n, 0.0, "output"))
        name = lambda j: "x" if j == 0 else ("out" if j == n else str(j))
        inputs = [i for i in range(1, n + 1) for _ in range(i)]
        edges = [(name(j), name(i), op) for (op, j), i in zip(genotype.edges, inputs) if op != "none"]
        return [CellLayout("cell", nodes, edges)]


SEARCH_SPACES.register("nb201")(NB201Space())
