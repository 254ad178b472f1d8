"""DARTS's recurrent search space (paper, section 3.1.2) as a registered space: the search language
model of :mod:`.recurrent` (one α row per edge), the genotype of one strongest incoming edge per node,
the AWD-LSTM-style language model it trains as (``nets/recurrent.py``), the uniform random cell and
its diagram."""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import torch

from ..config import Config, option
from ..genotype import RNN_GENOTYPES, RecurrentGenotype, derive_recurrent_genotype
from ..layout import CellLayout, cell_layout
from ..nets.recurrent import RNNConfig, build_rnn_model
from ..ops import RNN_DARTS_OPS, nonzero_ops
from . import SEARCH_SPACES, SearchSpace
from .base import mixing_weights
from .recurrent import RecurrentSearchModel, RecurrentSearchSpaceConfig


@dataclass
class RecurrentSpaceOptions(Config):
    """The recurrent space's config group: the cell's nodes and candidate ops (the model around it,
    sizes and dropouts, is the corpus group's, shared with ``train rnn``)."""

    nodes: int = option(8, "intermediate nodes of the cell", group="corpus", min=1)
    ops: tuple[str, ...] = option(factory=lambda: RNN_DARTS_OPS, cli=False)

    def space_config(self, vocab_size: int, **model: Any) -> RecurrentSearchSpaceConfig:
        """The search model of these options for a vocabulary, with the model's sizes and dropouts."""
        return RecurrentSearchSpaceConfig(vocab_size=vocab_size, nodes=self.nodes, ops=tuple(self.ops), **model)


def sample_recurrent_genotype(rng: random.Random, nodes: int = 8,
                              ops: Sequence[str] = RNN_DARTS_OPS) -> RecurrentGenotype:
    """A uniform recurrent cell: node i (1-based) takes one state < i through a non-zero op."""
    active = nonzero_ops(ops)
    return RecurrentGenotype(recurrent=tuple((rng.choice(active), rng.randrange(i)) for i in range(1, nodes + 1)),
                             concat=tuple(range(1, nodes + 1)))


class DartsRecurrentSpace(SearchSpace):
    name = "rnn"
    help = "a recurrent cell (language modelling)"
    train_help = "the recurrent language model of a recurrent cell"
    search_kind, train_kind = "search-rnn", "train-rnn"
    genotype = RecurrentGenotype
    options = RecurrentSpaceOptions
    cell_types, cell_inputs, edges_per_node = ("recurrent",), 1, 1
    builtins = RNN_GENOTYPES
    default_nodes, default_ops = 8, RNN_DARTS_OPS

    def owns(self, data: Mapping[str, Any]) -> bool:
        return "recurrent" in data

    def build(self, space_config: RecurrentSearchSpaceConfig) -> RecurrentSearchModel:
        return RecurrentSearchModel(space_config)

    def derive(self, space_config: RecurrentSearchSpaceConfig, arch: Mapping[str, torch.Tensor],
               max_skip: int | None = None) -> RecurrentGenotype:
        return derive_recurrent_genotype(mixing_weights(arch["alpha"]), space_config.ops)

    def final_network(self, genotype: RecurrentGenotype, **sizes: Any) -> torch.nn.Module:
        return build_rnn_model(genotype, RNNConfig(**sizes))

    def sample(self, rng: random.Random, nodes: int, ops: Sequence[str]) -> RecurrentGenotype:
        return sample_recurrent_genotype(rng, nodes, ops)

    def layouts(self, genotype: RecurrentGenotype) -> list[CellLayout]:
        return [cell_layout("recurrent", genotype.recurrent, genotype.concat, k=self.edges_per_node,
                            inputs=("x_{t}", "h_{t-1}"), output="h_{t}", first_node_fixed=True)]


SEARCH_SPACES.register("rnn")(DartsRecurrentSpace())
