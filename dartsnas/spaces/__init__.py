"""Search spaces, registered by name: ``cnn`` (DARTS's conv cells, :mod:`.cnn`) and ``rnn`` (its
recurrent cell, :mod:`.rnn`). The commands read this registry: ``search SPACE``, ``train SPACE``,
``select SPACE``, ``random-search SPACE`` and ``plot`` exist for every space registered here, so a new
space is one module (a :class:`SearchSpace` subclass, registered) plus its tests; see
``docs/architecture.md`` ("A new search space")."""
from __future__ import annotations

import random
from typing import Any, Mapping, Sequence

import torch

from ..errors import ConfigError
from ..registry import Registry


class SearchSpace:
    """What a search space supplies to the commands.

    - ``search_kind`` / ``train_kind``: the commands (``train.commands.RUNS``) that search it and
      train its final networks; ``help``: its line in ``dartsnas search --help``;
    - ``options``: its config group (the fields of its search config that shape its model);
    - ``genotype`` (the class of its derived architectures) and ``builtins`` (its named genotypes),
      ``owns(data)``: whether a genotype's JSON dict is of this space;
    - ``build(space_config)``: its search model (a network with α) from its space config;
    - ``derive(space_config, arch, max_skip)``: the genotype of α (a dict of the model's architecture
      tensors, from the network or a checkpoint: one derivation for both);
    - ``final_network(genotype, **sizes)``: the network a genotype trains as;
    - ``sample(rng, nodes, ops)``: a uniform random genotype (random search), with ``default_nodes``,
      ``default_ops`` and ``resolve_ops`` (named op sets);
    - ``layouts(genotype)``: the cells to draw (``plot``); ``cell_types`` (the cells a genotype holds,
      α per type), ``cell_inputs`` (the states before a cell's first node) and ``edges_per_node``
      (the k of the derivation's top-k);
    - ``cost_table(...)``: the table of what each candidate costs in the final network, where the
      space prices its cells (a budgeted search).
    """

    name = ""
    help = ""
    search_kind = ""
    train_kind = ""
    genotype: type = object
    builtins: Registry
    default_nodes = 4
    default_ops: tuple[str, ...] = ()
    options: type = object
    cell_types: tuple[str, ...] = ()
    cell_inputs = 2
    edges_per_node = 2

    def owns(self, data: Mapping[str, Any]) -> bool:
        raise NotImplementedError

    def build(self, space_config: Any) -> torch.nn.Module:
        raise NotImplementedError

    def derive(self, space_config: Any, arch: Mapping[str, torch.Tensor], max_skip: int | None = None) -> Any:
        raise NotImplementedError

    def final_network(self, genotype: Any, **sizes: Any) -> torch.nn.Module:
        raise NotImplementedError

    def resolve_ops(self, ops: Sequence[str]) -> tuple[str, ...]:
        return tuple(ops)

    def sample(self, rng: random.Random, nodes: int, ops: Sequence[str]) -> Any:
        raise NotImplementedError

    def layouts(self, genotype: Any) -> list[Any]:
        raise NotImplementedError

    def edge_picks(self, genotype: Mapping[str, Any], cell: str) -> list[tuple[int, str]]:
        """(α row, op) of every pick of the ``cell`` cells in a genotype's JSON dict (``plot --alphas``)."""
        from ..genotype import edge_row
        k = self.edges_per_node
        return [(edge_row(pos // k, j, self.cell_inputs), op) for pos, (op, j) in enumerate(genotype[cell])]

    def cost_table(self, *args: Any, **kwargs: Any) -> Any:
        raise ConfigError(f"the {self.name} space has no cost table: a cost budget does not apply to it")


SEARCH_SPACES: Registry = Registry("search space")


def space_of_genotype(data: Mapping[str, Any]) -> SearchSpace:
    """The registered space whose genotypes look like ``data`` (a genotype's JSON dict)."""
    return next((space for space in SEARCH_SPACES.values() if space.owns(data)), SEARCH_SPACES.get("cnn"))


from .conv import ConvSearchSpaceConfig, MixedOp, SearchCell, SearchNetwork  # noqa: E402
from .recurrent import RecurrentSearchModel, RecurrentSearchSpaceConfig, SearchRecurrentCell  # noqa: E402
from . import cnn, nb201, rnn  # noqa: E402,F401  (registration)

__all__ = ["SEARCH_SPACES", "ConvSearchSpaceConfig", "MixedOp", "RecurrentSearchModel",
           "RecurrentSearchSpaceConfig", "SearchCell", "SearchNetwork", "SearchRecurrentCell", "SearchSpace",
           "space_of_genotype"]
