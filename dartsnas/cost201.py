"""What a NAS-Bench-201 cell will cost in the benchmark's network, while it is being searched: the
budget of ``search nb201 --cost macs|params``.

As :class:`dartsnas.cost.CostTable` does for DARTS's cells: the multiply-adds and parameters of every
candidate op on every edge of every cell of the final network (C, N, the data's image size), counted
on the op at the shape it has there, and the fixed part (stem, residual blocks, head). The derivation
keeps one op per edge, ``none`` included (it costs nothing), so the expected cost under softmax(α) is
the fixed part plus, per edge, the softmax-weighted sum of its ops' costs.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch

from .cost import COST_KINDS, op_cost
from .errors import ConfigError
from .genotype201 import Cell201, edge_inputs, edges_of
from .nets import NetworkConfig, build_network, check_input_size
from .nets.nb201 import InferCell201
from .nets.summary import count_macs, count_parameters


@dataclass
class CostTable201:
    """Per cell of the final network: each edge's input (channels, height, width) and the cost of every
    candidate op on it, per kind (``cells[i][kind]`` is an [edges, ops] list); ``fixed[kind]`` is the rest."""

    network: dict[str, Any]
    op_names: list[str]
    cells: list[dict[str, Any]]
    fixed: dict[str, float]

    @classmethod
    def build(cls, ops: Sequence[str], nodes: int = 3, *, init_channels: int = 16, layers: int = 5,
              image_size: tuple[int, int] = (32, 32), num_classes: int = 10, in_channels: int = 3) -> "CostTable201":
        check_input_size("the cost's final network nb201", 4, *image_size)
        empty = Cell201(tuple(("none", j) for j in edge_inputs(nodes)))
        net = build_network("nb201", NetworkConfig(empty, init_channels=init_channels, layers=layers,
                                                   num_classes=num_classes, in_channels=in_channels, auxiliary=False))
        shapes: list[tuple[int, ...]] = []
        hooks = [m.register_forward_pre_hook(lambda m, args: shapes.append(tuple(args[0].shape[1:])))
                 for m in net.modules() if isinstance(m, InferCell201)]
        try:
            macs = count_macs(net.eval(), (in_channels, *image_size))
        finally:
            for h in hooks:
                h.remove()
        cells = []
        for C, H, W in shapes:
            costs = [[op_cost(name, C, H, W, 1) for name in ops] for _ in range(edges_of(nodes))]
            cells.append({"edges": [[C, H, W]] * edges_of(nodes), "macs": [[c[0] for c in e] for e in costs],
                          "params": [[c[1] for c in e] for e in costs]})
        network = {"network": "nb201", "init_channels": init_channels, "layers": layers, "image_size": list(image_size),
                   "num_classes": num_classes, "in_channels": in_channels, "nodes": nodes}
        return cls(network, list(ops), cells, {"macs": macs, "params": count_parameters(net)["params"]})

    @property
    def kinds(self) -> tuple[str, ...]:
        return tuple(k for k in COST_KINDS if k in self.fixed)

    def check_kind(self, kind: str) -> None:
        if kind not in self.kinds:
            raise ConfigError(f"the nb201 space's cost table holds {', '.join(self.kinds)}, not {kind!r}")

    def of_genotype(self, genotype: Cell201) -> dict[str, float]:
        """The benchmark network's multiply-adds and parameters for this cell (``summary``'s figures)."""
        out = dict(self.fixed)
        for e, (op, _) in enumerate(genotype.edges):
            if op not in self.op_names:
                raise ConfigError(f"cell op {op!r} is not a candidate ({', '.join(self.op_names)})")
            for cell in self.cells:
                for kind in self.kinds:
                    out[kind] += cell[kind][e][self.op_names.index(op)]
        return out

    def expected(self, kind: str, weights: torch.Tensor, *unused: Any) -> torch.Tensor:
        """E[cost] under softmax(α) (``weights``: [edges, ops] rows summing to one); PC-DARTS's edge
        weights do not enter (every edge is kept)."""
        self.check_kind(kind)
        summed = [[sum(cell[kind][e][o] for cell in self.cells) for o in range(len(self.op_names))]
                  for e in range(len(self.cells[0][kind]))] if self.cells else [[0] * len(self.op_names)]
        costs = torch.tensor(summed, dtype=weights.dtype, device=weights.device)
        return float(self.fixed[kind]) + (weights * costs).sum()

    def to_dict(self) -> dict[str, Any]:
        return {"network": self.network, "op_names": self.op_names, "cells": self.cells, "fixed": self.fixed}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "CostTable201":
        try:
            table = cls(dict(data["network"]), list(data["op_names"]), list(data["cells"]), dict(data["fixed"]))
            for cell in table.cells:
                for kind in table.kinds:
                    if any(len(row) != len(table.op_names) for row in cell[kind]):
                        raise TypeError(f"{kind} of a cell")
        except (KeyError, TypeError, AttributeError) as e:
            raise ConfigError(f"not a NAS-Bench-201 cost table: missing or malformed {e}") from None
        return table
