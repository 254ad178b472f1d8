"""DARTS's convolutional search space (paper, section 2.1 and 3.1.1) as a registered space: the
search network of :mod:`.conv` (normal and reduction cells, α per cell type), the genotype of two
strongest incoming edges per node, the CIFAR / ImageNet networks it trains as (``nets/conv.py``), the
uniform random cell of the random-search baseline, its cell diagrams and the cost table of its
final network."""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import torch

from ..config import Config, option
from ..cost import CostTable
from ..genotype import CONV_GENOTYPES, Genotype, edge_row, num_edges
from ..layout import CellLayout, cell_layout
from ..nets import NetworkConfig, build_network
from ..ops import DARTS_OPS, edge_ops, nonzero_ops, resolve_op_set
from . import SEARCH_SPACES, SearchSpace
from .conv import ConvSearchSpaceConfig, SearchNetwork, derive_conv_genotype


@dataclass
class ConvSpaceOptions(Config):
    """The conv space's config group: the search network's size, its candidate ops, its stem and what
    it recomputes (a method's own fields of :class:`ConvSearchSpaceConfig` come from its group)."""

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
    recompute: str = option("none", "activations recomputed in backward instead of kept: per cell or per edge (mixed "
                            "op); less memory for more compute, the same numbers", group="search space",
                            choices=("none", "cell", "edge"), resumable=True)
    derivation: str = option("top-k", "top-k: per node the two strongest incoming edges, each with its best op "
                             "(DARTS); gdas: the two strongest (op, input) pairs, maybe from one input (GDAS's "
                             "genotype(); GDAS's recipes' default)", group="search space", choices=("top-k", "gdas"))
    search_network: str = option("darts", "darts: DARTS's search network (a BatchNorm after each pooling candidate); "
                                 "gdas: GDAS's (none there, and BN + ReLU before the global pooling; GDAS's recipes' "
                                 "default)", group="search space", choices=("darts", "gdas"))

    def __post_init__(self) -> None:
        super().__post_init__()
        self.ops = resolve_op_set(self.ops)  # a named op set: --ops s2 (or S2)

    def space_config(self, num_classes: int, in_channels: int, **method_fields: Any) -> ConvSearchSpaceConfig:
        """The search network of these options, for the data's classes and channels."""
        return ConvSearchSpaceConfig(init_channels=self.init_channels, layers=self.layers, nodes=self.nodes,
                                     num_classes=num_classes, in_channels=in_channels, ops=tuple(self.ops),
                                     recompute=self.recompute, stem=self.stem, derivation=self.derivation,
                                     search_network=self.search_network,
                                     **method_fields)


def sample_genotype(rng: random.Random, nodes: int = 4, ops: Sequence[str] = DARTS_OPS) -> Genotype:
    """A uniform conv cell pair: each node takes 2 distinct predecessors, each through a non-zero op
    of that edge (``ops``: one op set, or a per-edge one such as ``("s1",)``)."""

    def cell(kind: str) -> tuple[tuple[str, int], ...]:
        names = edge_ops(ops, num_edges(nodes), kind)
        edges = []
        for i in range(nodes):
            for j in sorted(rng.sample(range(i + 2), 2)):
                edges.append((rng.choice(nonzero_ops(names[edge_row(i, j, 2)])), j))
        return tuple(edges)

    concat = tuple(range(2, 2 + nodes))
    return Genotype(normal=cell("normal"), normal_concat=concat, reduce=cell("reduce"), reduce_concat=concat)


class DartsConvSpace(SearchSpace):
    name = "cnn"
    help = "convolutional cells (normal + reduction)"
    train_help = "the CIFAR or ImageNet network of conv cells"
    search_kind, train_kind = "search-cnn", "train-cnn"
    genotype = Genotype
    options = ConvSpaceOptions
    cell_types, cell_inputs, edges_per_node = ("normal", "reduce"), 2, 2
    builtins = CONV_GENOTYPES
    default_nodes, default_ops = 4, DARTS_OPS

    def owns(self, data: Mapping[str, Any]) -> bool:
        return "normal" in data

    def build(self, space_config: ConvSearchSpaceConfig) -> SearchNetwork:
        return SearchNetwork(space_config)

    def derive(self, space_config: ConvSearchSpaceConfig, arch: Mapping[str, torch.Tensor],
               max_skip: int | None = None) -> Genotype:
        return derive_conv_genotype(space_config, arch, max_skip)

    def final_network(self, genotype: Genotype, *, network: str = "cifar", **sizes: Any) -> torch.nn.Module:
        return build_network(network, NetworkConfig(genotype, **sizes))

    def resolve_ops(self, ops: Sequence[str]) -> tuple[str, ...]:
        return resolve_op_set(ops)  # a named op set: --ops s2 (or S2)

    def sample(self, rng: random.Random, nodes: int, ops: Sequence[str]) -> Genotype:
        return sample_genotype(rng, nodes, ops)

    def layouts(self, genotype: Genotype) -> list[CellLayout]:
        """Normal and reduce (not a fixed reduction cell: nothing was searched there)."""
        cells = ("normal", "reduce") if genotype.reduce_cell is None else ("normal",)
        return [cell_layout(cell, getattr(genotype, cell), getattr(genotype, f"{cell}_concat"),
                            k=self.edges_per_node, inputs=("c_{k-2}", "c_{k-1}"), output="c_{k}") for cell in cells]

    def cost_table(self, ops: Sequence[str], nodes: int, *, image_size: tuple[int, int], num_classes: int,
                   in_channels: int, network: str, init_channels: int, layers: int,
                   latency_table: str | None = None) -> CostTable:
        """The multiply-adds and parameters of every candidate in the final network ``network`` (C, L)
        at the data's size, or a latency table of ``dartsnas latency-table`` checked to fit."""
        data = dict(image_size=tuple(image_size), num_classes=num_classes, in_channels=in_channels)
        if latency_table is not None:
            table = CostTable.read(latency_table)
            table.check_fits(ops, nodes, source=latency_table, **data)
            return table
        return CostTable.build(ops, nodes, network=network, init_channels=init_channels, layers=layers, **data)


SEARCH_SPACES.register("cnn")(DartsConvSpace())
