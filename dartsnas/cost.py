"""What a cell will cost once deployed, while it is still being searched (issue 23, first part).

A :class:`CostTable` holds, for the *final* network a search is for (its stacking, width, depth and
image size, not the 8-cell search network's), the multiply-adds and parameters of every candidate op
on every edge of every cell, measured on the op itself at the shape and stride it has there
(``torch.utils.flop_counter``, as ``dartsnas summary`` counts), and the fixed part of the network
(stem, preprocessing, classifier). So:

- :meth:`CostTable.of_genotype` is a derived network's cost, equal to ``summary``'s (tested);
- :meth:`CostTable.expected` is the expected cost of the cell distribution softmax(α), differentiable
  in α (and in PC-DARTS's edge weights β), in the final network's units.

The expectation follows what derivation does: ``none`` is never derived, so each edge's op
distribution is renormalised without it; a node keeps two of its incoming edges, so its cost is twice
the edge-weighted mean of its edges' expected costs (PC-DARTS's softmax(β) as the edge weights, else
uniform). With one op and two edges per node standing out, it is the cost of that genotype.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Sequence

import torch
from torch.utils.flop_counter import FlopCounterMode

from .errors import ConfigError
from .genotype import SKIP_OP, ZERO_OP, Genotype
from .nets import NETWORKS, NetworkConfig, build_network, check_input_size
from .nets.summary import count_macs, count_parameters
from .ops import build_op, edge_ops

#: The costs a search can aim at: counted (multiply-adds, parameters) or measured (latency, ms).
COST_KINDS = ("macs", "params", "latency")
#: The costs every table counts; a table of ``dartsnas latency-table`` adds measured latency (ms).
COUNTED = ("macs", "params")


@lru_cache(maxsize=None)
def op_cost(name: str, channels: int, height: int, width: int, stride: int) -> tuple[int, int]:
    """(multiply-adds, parameters) of op ``name`` as a final network builds it (affine BatchNorm), on
    one ``channels`` x ``height`` x ``width`` input at ``stride``."""
    op = build_op(name, channels, stride, affine=True).eval()
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        op(torch.zeros(1, channels, height, width))
    return counter.get_total_flops() // 2, sum(p.numel() for p in op.parameters())


def _edges_per_node(nodes: int) -> list[range]:
    """The α rows of each node's incoming edges (node-major: node k has 2 + k inputs)."""
    rows, start = [], 0
    for k in range(nodes):
        rows.append(range(start, start + 2 + k))
        start += 2 + k
    return rows


def _reference_genotype(nodes: int) -> Genotype:
    edges = tuple(("sep_conv_3x3", j) for _ in range(nodes) for j in (0, 1))
    concat = tuple(range(2, 2 + nodes))
    return Genotype(edges, concat, edges, concat)


@dataclass
class CostTable:
    """Per final-network cell: its type, the (channels, height, width, stride) of each edge's input
    (``edges``) and the cost of every candidate op on every edge, per kind (``cells[i][kind]`` is an
    [edges, ops] list); ``fixed[kind]`` is everything outside the ops. A latency table adds the kind
    ``latency`` (ms) and says in ``measurement`` how, where and on what it was timed."""

    network: dict[str, Any]
    op_names: dict[str, list[list[str]]]
    cells: list[dict[str, Any]]
    fixed: dict[str, float]
    measurement: dict[str, Any] | None = None
    _summed: dict[str, dict[str, list[list[int]]]] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def build(cls, ops: Sequence[str], nodes: int = 4, *, network: str = "cifar", init_channels: int = 36,
              layers: int = 20, image_size: tuple[int, int] = (32, 32), num_classes: int = 10,
              in_channels: int = 3) -> "CostTable":
        """The table of the final network ``network`` (C=``init_channels``, L=``layers``) on
        ``image_size`` inputs, for the candidate ``ops`` of a search with ``nodes`` nodes per cell."""
        check_input_size(f"the cost's final network {network}", NETWORKS.get(network).downsampling, *image_size)
        num_edges = sum(2 + k for k in range(nodes))
        names = {cell: [list(e) for e in edge_ops(tuple(ops), num_edges, cell)] for cell in ("normal", "reduce")}
        reference = _reference_genotype(nodes)
        config = NetworkConfig(reference, init_channels=init_channels, layers=layers, num_classes=num_classes,
                               in_channels=in_channels)
        net = build_network(network, config).eval()
        shapes: list[tuple[bool, tuple[int, ...]]] = []
        hooks = [cell.preprocess1.register_forward_hook(
            lambda m, i, out, red=cell.reduction: shapes.append((red, tuple(out.shape[1:])))) for cell in net.cells]
        input_shape = (in_channels, *image_size)
        try:
            total_macs = count_macs(net, input_shape)
        finally:
            for h in hooks:
                h.remove()
        cells = []
        for reduction, (C, H, W) in shapes:
            kind = "reduce" if reduction else "normal"
            if reduction:  # the nodes' own states: what a stride-2 edge makes of the cell's inputs
                with torch.no_grad():
                    H2, W2 = build_op("max_pool_3x3", C, 2, affine=True)(torch.zeros(1, C, H, W)).shape[2:]
            else:
                H2, W2 = H, W
            macs, params, edges = [], [], []
            inputs = [j for rows in _edges_per_node(nodes) for j in range(len(rows))]  # each edge's input
            for j, edge_names in zip(inputs, names[kind]):
                stride, h, w = (2, H, W) if reduction and j < 2 else (1, H2, W2)
                costs = [op_cost(name, C, h, w, stride) for name in edge_names]
                macs.append([c[0] for c in costs])
                params.append([c[1] for c in costs])
                edges.append([C, h, w, stride])
            cells.append({"reduction": reduction, "edges": edges, "macs": macs, "params": params})
        table = cls({"network": network, "init_channels": init_channels, "layers": layers,
                     "image_size": list(image_size), "num_classes": num_classes, "in_channels": in_channels,
                     "nodes": nodes}, names, cells, {"macs": 0, "params": 0})
        ops_only = table.of_genotype(reference)
        table.fixed = {"macs": total_macs - ops_only["macs"],
                       "params": count_parameters(net)["params"] - ops_only["params"]}
        return table

    @property
    def nodes(self) -> int:
        return int(self.network["nodes"])

    @property
    def kinds(self) -> tuple[str, ...]:
        """The costs this table holds: macs and params, and latency when measured."""
        return tuple(k for k in COST_KINDS if k in self.fixed)

    def reference_genotype(self) -> Genotype:
        """sep_conv_3x3 on each node's first two inputs: the network the fixed part is taken from."""
        return _reference_genotype(self.nodes)

    def of_genotype(self, genotype: Genotype) -> dict[str, float]:
        """The derived network's multiply-adds and parameters (``summary``'s figures), and its
        predicted latency in a latency table."""
        if genotype.reduce_cell is not None:
            raise ConfigError(f"a cost table prices searched cells: the genotype's fixed reduction cell "
                              f"{genotype.reduce_cell!r} is not in it")
        out = dict(self.fixed)
        for cell in self.cells:
            kind = "reduce" if cell["reduction"] else "normal"
            for node, (op, j) in enumerate(getattr(genotype, kind)):
                e = _edge_of(node // 2, j, self.nodes)
                names = self.op_names[kind][e]
                if op not in names:
                    raise ConfigError(f"genotype op {op!r} is not a candidate of {kind} edge {e} "
                                      f"({', '.join(names)})")
                for k in self.kinds:
                    out[k] += cell[k][e][names.index(op)]
        return out

    def expected(self, kind: str, weights_normal: torch.Tensor, weights_reduce: torch.Tensor,
                 edge_normal: torch.Tensor | None = None, edge_reduce: torch.Tensor | None = None) -> torch.Tensor:
        """E[cost] of the final network under softmax(α) (``weights_*``: [edges, ops] rows summing to
        one) and, with PC-DARTS, the edge weights ``edge_*`` ([edges], each node's softmax(β))."""
        self.check_kind(kind)
        per_type = {}
        for name, weights, edges in (("normal", weights_normal, edge_normal), ("reduce", weights_reduce, edge_reduce)):
            zero = torch.tensor([[op == ZERO_OP for op in names] for names in self.op_names[name]],
                                device=weights.device)
            kept = weights.masked_fill(zero, 0)
            kept = kept / kept.sum(-1, keepdim=True).clamp_min(1e-12)  # derivation never keeps none
            if edges is None:
                edges = torch.cat([torch.full((len(r),), 1 / len(r), dtype=weights.dtype, device=weights.device)
                                   for r in _edges_per_node(self.nodes)])
            per_type[name] = (kept, 2 * edges)  # two edges per node are kept
        total = torch.tensor(float(self.fixed[kind]), dtype=weights_normal.dtype, device=weights_normal.device)
        for name, (kept, edge_weight) in per_type.items():
            costs = torch.tensor(self.summed(kind)[name], dtype=kept.dtype, device=kept.device)
            total = total + (edge_weight * (kept * costs).sum(-1)).sum()
        return total

    def within(self, genotype: Genotype, kind: str, target: float, weights_normal: torch.Tensor,
               weights_reduce: torch.Tensor, max_skip: int | None = None) -> Genotype:
        """``genotype`` (top-k's) with picks given up for cheaper ones until the final network costs at
        most ``target``: each step takes the swap, within one node, of a kept (edge, op) for another op
        of that edge or another incoming edge with any op, that loses the least weight (the rows that
        ranked the picks: softmax(α), times PC-DARTS's β) per cost saved. Stops when it fits or
        nothing cheaper is left (the floor is the fixed part and the cheapest ops)."""
        self.check_kind(kind)
        rows = {"normal": weights_normal.detach().double().cpu(), "reduce": weights_reduce.detach().double().cpu()}
        costs = self.summed(kind)
        cells = {"normal": list(genotype.normal), "reduce": list(genotype.reduce)}
        total = self.of_genotype(genotype)[kind]
        while total > target:
            best = None  # (loss per cost saved, -saved, cell, slot, new (op, j)): the least loss, then the most saved
            for name, slots in cells.items():
                names = self.op_names[name]
                skips = sum(op == SKIP_OP for op, _ in slots)
                for pos, (op, j) in enumerate(slots):
                    node = pos // 2
                    e = _edge_of(node, j, self.nodes)
                    now, strength = costs[name][e][names[e].index(op)], float(rows[name][e, names[e].index(op)])
                    other = slots[pos ^ 1][1]
                    for j2 in range(node + 2):
                        if j2 == other:
                            continue
                        e2 = _edge_of(node, j2, self.nodes)
                        for o2, op2 in enumerate(names[e2]):
                            saved = now - costs[name][e2][o2]
                            if op2 == ZERO_OP or saved <= 0 or (
                                    name == "normal" and max_skip is not None and op2 == SKIP_OP and op != SKIP_OP
                                    and skips >= max_skip):
                                continue
                            key = ((strength - float(rows[name][e2, o2])) / saved, -saved, name, pos, (op2, j2))
                            if best is None or key[:2] < best[:2]:
                                best = key
            if best is None:
                break
            _, less, name, pos, pick = best
            cells[name][pos] = pick
            total += less
        return Genotype(tuple(cells["normal"]), genotype.normal_concat, tuple(cells["reduce"]), genotype.reduce_concat)

    def check_kind(self, kind: str) -> None:
        if kind not in COST_KINDS:
            raise ConfigError(f"cost must be one of {', '.join(COST_KINDS)}, got {kind!r}")
        if kind not in self.kinds:
            raise ConfigError(f"this cost table holds no {kind} (it has {', '.join(self.kinds)}): "
                              "measure one with dartsnas latency-table")

    def check_fits(self, ops: Sequence[str], nodes: int, image_size: Sequence[int], in_channels: int,
                   num_classes: int, source: str) -> None:
        """Refuse a table made for another search: other candidate ops or nodes, other images."""
        num_edges = sum(2 + k for k in range(nodes))
        asked = {"nodes": nodes, "image_size": list(image_size), "in_channels": in_channels, "num_classes": num_classes}
        for key, value in asked.items():
            if self.network.get(key) != value:
                raise ConfigError(f"{source}: the table is for {key} {self.network.get(key)}, the search has {value}")
        for cell in ("normal", "reduce"):
            wanted = [list(e) for e in edge_ops(tuple(ops), num_edges, cell)]
            if self.op_names.get(cell) != wanted:
                raise ConfigError(f"{source}: the table's {cell} candidate ops {self.op_names.get(cell)} are not the "
                                  f"search's {wanted}")

    def summed(self, kind: str) -> dict[str, list[list[float]]]:
        """Per cell type, the cost of each op on each edge summed over the network's cells of that
        type (the expectation is linear in it), in exact integers; computed once per kind."""
        if kind not in self._summed:
            out = {}
            for name, reduction in (("normal", False), ("reduce", True)):
                rows = [cell[kind] for cell in self.cells if cell["reduction"] == reduction]
                out[name] = [[sum(r[e][o] for r in rows) for o in range(len(names))]
                             for e, names in enumerate(self.op_names[name])]
            self._summed[kind] = out
        return self._summed[kind]

    def to_dict(self) -> dict[str, Any]:
        out = {"network": self.network, "op_names": self.op_names, "cells": self.cells, "fixed": self.fixed}
        if self.measurement is not None:
            out["measurement"] = self.measurement
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "CostTable":
        try:
            table = cls(dict(data["network"]), data["op_names"], list(data["cells"]), dict(data["fixed"]),
                        data.get("measurement"))
            for key in ("nodes", "image_size", "in_channels", "num_classes"):
                table.network[key]
            for cell in table.cells:
                for kind in table.kinds:
                    if len(cell[kind]) != len(table.op_names["reduce" if cell["reduction"] else "normal"]):
                        raise TypeError(f"{kind} of a cell")
        except (KeyError, TypeError, AttributeError) as e:
            raise ConfigError(f"not a cost table: missing or malformed {e}") from None
        return table

    @classmethod
    def read(cls, path: str | Path) -> "CostTable":
        """A table written by a search (cost_table.json) or by ``dartsnas latency-table``."""
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigError(f"{path}: no such cost table") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ConfigError(f"{path}: not a cost table ({e.__class__.__name__}: {e})") from None
        try:
            if isinstance(data, dict) and isinstance(data.get("network"), dict) and data["network"].get("network") == "nb201":
                from .cost201 import CostTable201  # (it imports this module)
                return CostTable201.from_dict(data)
            return cls.from_dict(data if isinstance(data, dict) else {})
        except ConfigError as e:
            raise ConfigError(f"{path}: {e}") from None


def round_cost(kind: str, value: float) -> float:
    """A cost as metrics show it: whole multiply-adds and parameters, latency to 0.1 µs."""
    return round(value, 4) if kind == "latency" else round(value)


def _edge_of(node: int, j: int, nodes: int) -> int:
    return _edges_per_node(nodes)[node].start + j


__all__ = ["COST_KINDS", "COUNTED", "CostTable", "op_cost", "round_cost"]
