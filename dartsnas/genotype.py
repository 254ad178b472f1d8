"""Discrete cells: the Genotype type, derivation from α (paper, section 2.4), JSON and built-ins.

JSON form of a convolutional genotype (pairs in node order, two per intermediate node; the index
names the input node: 0 and 1 are the cell inputs, 2.. the intermediate nodes)::

    {"normal": [["sep_conv_3x3", 0], ["sep_conv_3x3", 1], ...], "normal_concat": [2, 3, 4, 5],
     "reduce": [...], "reduce_concat": [2, 3, 4, 5]}

A genotype searched with GDAS's fixed reduction cell has ``"reduce": [], "reduce_concat": []`` and
``"reduce_cell": "gdas"``: its reduction cells are that hand-designed cell, not a searched one.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch

from .errors import GenotypeError
from .ops import CONV_OPS, RNN_OPS
from .registry import Registry

Edge = tuple[str, int]
#: Hand-designed reduction cells a genotype may name instead of a searched one (GDAS-FRC's).
FIXED_REDUCTION_CELLS = ("gdas",)
ZERO_OP = "none"
SKIP_OP = "skip_connect"


@dataclass(frozen=True)
class Genotype:
    """A convolutional cell pair: per cell type, the chosen (op, input) pairs and the concat list;
    ``reduce_cell`` names a fixed reduction cell (``"gdas"``) that replaces a searched one."""

    normal: tuple[Edge, ...]
    normal_concat: tuple[int, ...]
    reduce: tuple[Edge, ...]
    reduce_concat: tuple[int, ...]
    reduce_cell: str | None = None

    @property
    def nodes(self) -> int:
        """Number of intermediate nodes of the normal cell."""
        return len(self.normal) // 2

    def to_dict(self) -> dict[str, Any]:
        out = {
            "normal": [[op, idx] for op, idx in self.normal],
            "normal_concat": list(self.normal_concat),
            "reduce": [[op, idx] for op, idx in self.reduce],
            "reduce_concat": list(self.reduce_concat),
        }
        if self.reduce_cell is not None:
            out["reduce_cell"] = self.reduce_cell
        return out

    def with_fixed_reduction(self, name: str) -> "Genotype":
        """This normal cell with the fixed reduction cell ``name`` in place of a searched one."""
        return dataclasses.replace(self, reduce=(), reduce_concat=(), reduce_cell=name)

    def to_json(self, indent: int | None = None) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_dict(cls, data: Any, *, source: str = "genotype") -> "Genotype":
        """Validate and convert a parsed JSON object; errors name ``source`` and the location."""
        if not isinstance(data, dict):
            raise GenotypeError(f"{source}: expected a JSON object, got {type(data).__name__}")
        expected = ("normal", "normal_concat", "reduce", "reduce_concat")
        missing = [k for k in expected if k not in data]
        if missing:
            raise GenotypeError(f"{source}: missing field(s) {', '.join(missing)}")
        extra = sorted(set(data) - set(expected) - {"reduce_cell"})
        if extra:
            raise GenotypeError(f"{source}: unknown field(s) {', '.join(map(str, extra))}")
        fixed = data.get("reduce_cell")
        if fixed is not None:
            if fixed not in FIXED_REDUCTION_CELLS:
                raise GenotypeError(f"{source}: reduce_cell must be one of {', '.join(FIXED_REDUCTION_CELLS)}, "
                                    f"got {fixed!r}")
            if data["reduce"] or data["reduce_concat"]:
                raise GenotypeError(f"{source}: reduce_cell {fixed!r} replaces the reduction cell: reduce and "
                                    "reduce_concat must be empty")
        cells = {}
        for cell in ("normal", "reduce") if fixed is None else ("normal",):
            edges = _parse_edges(data[cell], k=2, num_inputs=2, where=f"{source}: {cell}")
            concat = _parse_concat(data[f"{cell}_concat"], len(edges) // 2 + 2,
                                   where=f"{source}: {cell}_concat")
            cells[cell] = (edges, concat)
        reduce = cells.get("reduce", ((), ()))
        return cls(cells["normal"][0], cells["normal"][1], reduce[0], reduce[1], fixed)

    @classmethod
    def from_json(cls, text: str, *, source: str = "genotype") -> "Genotype":
        return cls.from_dict(_parse_json(text, source), source=source)


def _parse_json(text: str, source: str) -> Any:
    try:
        return json.loads(text)
    except (json.JSONDecodeError, RecursionError) as e:
        detail = e.msg if isinstance(e, json.JSONDecodeError) else "nesting too deep"
        where = f" at line {e.lineno} column {e.colno}" if isinstance(e, json.JSONDecodeError) else ""
        raise GenotypeError(f"{source}: malformed JSON{where}: {detail}") from None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _parse_edges(raw: Any, *, k: int, num_inputs: int, where: str,
                 ops: Registry | None = None) -> tuple[Edge, ...]:
    """Check a list of [op, input] pairs, ``k`` per node; node i may read inputs < num_inputs + i."""
    ops = CONV_OPS if ops is None else ops
    if not isinstance(raw, list) or not raw:
        raise GenotypeError(f"{where}: expected a non-empty list of [op, input] pairs")
    if len(raw) % k:
        raise GenotypeError(f"{where}: {len(raw)} pairs is not {k} per intermediate node")
    edges = []
    for pos, pair in enumerate(raw):
        node = pos // k
        loc = f"{where}, pair {pos} (node {node + num_inputs})"
        if not isinstance(pair, (list, tuple)) or len(pair) != 2:
            raise GenotypeError(f"{loc}: expected [op, input], got {json.dumps(pair, default=str)}")
        op, idx = pair
        if not isinstance(op, str):
            raise GenotypeError(f"{loc}: op must be a string, got {json.dumps(op, default=str)}")
        if op not in ops:
            raise GenotypeError(f"{loc}: unknown op {op!r} (known: {', '.join(ops.names())})")
        if op == ZERO_OP:
            raise GenotypeError(f"{loc}: op 'none' cannot be an edge of a derived cell")
        if not _is_int(idx):
            raise GenotypeError(f"{loc}: input must be an integer, got {json.dumps(idx, default=str)}")
        if not 0 <= idx < num_inputs + node:
            raise GenotypeError(f"{loc}: input {idx} out of range 0..{num_inputs + node - 1}")
        edges.append((op, idx))
    return tuple(edges)


def _parse_concat(raw: Any, num_states: int, *, where: str) -> tuple[int, ...]:
    if not isinstance(raw, list) or not raw:
        raise GenotypeError(f"{where}: expected a non-empty list of node indices")
    for idx in raw:
        if not _is_int(idx):
            raise GenotypeError(f"{where}: node index must be an integer, got {json.dumps(idx, default=str)}")
        if not 0 <= idx < num_states:
            raise GenotypeError(f"{where}: node {idx} out of range 0..{num_states - 1}")
    if len(set(raw)) != len(raw):
        raise GenotypeError(f"{where}: repeated node index in {raw}")
    return tuple(raw)


# --------------------------------------------------------------------------------------------
# Derivation (section 2.4)


def per_edge_op_names(op_names: Sequence[str] | Sequence[Sequence[str]], num_edges: int) -> list[Sequence[str]]:
    """``op_names`` as one op-name sequence per edge: a shared op set, or already one per edge (S1)."""
    if op_names and not isinstance(op_names[0], str):
        if len(op_names) != num_edges:
            raise GenotypeError(f"{len(op_names)} per-edge op sets for {num_edges} edges")
        return list(op_names)  # type: ignore[arg-type]
    return [op_names] * num_edges  # type: ignore[list-item]


def derive_cell(weights: torch.Tensor, op_names: Sequence[str] | Sequence[Sequence[str]], *, num_inputs: int,
                k: int, excluded: frozenset[tuple[int, int]] = frozenset(), pairs: bool = False) -> list[Edge]:
    """Keep, for each intermediate node, the ``k`` strongest incoming edges with their best op.

    ``weights`` holds one row per edge (softmax(α), node-major: node i has ``num_inputs + i``
    incoming edges); ``op_names`` names its columns, for all edges or per edge. An edge's strength is
    its strongest non-``none`` op weight; ties keep the lower input index and the earlier op.
    ``excluded`` lists (edge row, op column) never chosen. ``pairs``: GDAS's rule
    (``genotype()`` of search_model_gdas_nasnet.py), the ``k`` strongest non-``none`` (op, input)
    pairs of the node, two of which may share an input; ties keep the earlier input, then op.
    """
    w = weights.detach().double().cpu()
    num_edges = w.shape[0]
    names = per_edge_op_names(op_names, num_edges)
    usable = [[j for j, name in enumerate(edge) if name != ZERO_OP] for edge in names]
    if not any(usable):
        raise GenotypeError("cannot derive a cell from an op set with no op other than 'none'")
    gene: list[Edge] = []
    row = 0
    node = 0
    while row < num_edges:
        n_in = num_inputs + node
        best: list[tuple[float, int, int]] = []  # (strength, input, op column)
        for j in range(n_in):
            cands = [(w[row + j, o].item(), o) for o in usable[row + j] if (row + j, o) not in excluded]
            if not cands:
                continue
            if pairs:
                best.extend((value, j, op) for value, op in cands)
                continue
            value, op = max(cands, key=lambda t: (t[0], -t[1]))
            best.append((value, j, op))
        if len(best) < k:
            raise GenotypeError(f"node {node + num_inputs} has fewer than {k} usable incoming edges")
        best.sort(key=lambda t: (-t[0], t[1], t[2]))
        gene.extend((names[row + j][op], j) for _, j, op in best[:k])
        row += n_in
        node += 1
    return gene


def derive_genotype(weights_normal: torch.Tensor, weights_reduce: torch.Tensor,
                    op_names: Sequence[str] | Sequence[Sequence[str]], *, max_skip: int | None = None,
                    reduce_op_names: Sequence[str] | Sequence[Sequence[str]] | None = None,
                    pairs: bool = False) -> Genotype:
    """Derive a conv Genotype (k=2) from the softmax of α_normal and α_reduce.

    ``op_names`` names the columns (one op set, or one per edge as in RobustDARTS's S1);
    ``reduce_op_names`` those of the reduction cell where they differ. ``max_skip`` caps the
    skip_connects of the normal cell: while there are too many, the weakest chosen skip_connect is
    excluded and the cell derived again (a guard against skip collapse). ``pairs``: GDAS's rule
    (:func:`derive_cell`).
    """
    nodes = _nodes_from_edges(weights_normal.shape[0], num_inputs=2)
    concat = tuple(range(2, 2 + nodes))
    excluded: set[tuple[int, int]] = set()
    normal = derive_cell(weights_normal, op_names, num_inputs=2, k=2, pairs=pairs)
    names = per_edge_op_names(op_names, weights_normal.shape[0])
    if max_skip is not None:
        while sum(op == SKIP_OP for op, _ in normal) > max_skip:
            rows = [edge_row(pos // 2, j, 2) for pos, (op, j) in enumerate(normal) if op == SKIP_OP]
            weakest = min(rows, key=lambda r: (weights_normal[r, list(names[r]).index(SKIP_OP)].item(), -r))
            excluded.add((weakest, list(names[weakest]).index(SKIP_OP)))
            normal = derive_cell(weights_normal, op_names, num_inputs=2, k=2,
                                 excluded=frozenset(excluded), pairs=pairs)
    reduce = derive_cell(weights_reduce, op_names if reduce_op_names is None else reduce_op_names,
                         num_inputs=2, k=2, pairs=pairs)
    return Genotype(tuple(normal), concat, tuple(reduce), concat)


def edge_row(node: int, j: int, num_inputs: int) -> int:
    """Row of edge (input j -> intermediate node ``node``) in node-major edge order."""
    return sum(num_inputs + i for i in range(node)) + j


def _nodes_from_edges(num_edges: int, num_inputs: int) -> int:
    # num_edges = sum_{i<n} (num_inputs + i) = n*num_inputs + n(n-1)/2
    n = int((-(2 * num_inputs - 1) + math.sqrt((2 * num_inputs - 1) ** 2 + 8 * num_edges)) / 2 + 0.5)
    if n * num_inputs + n * (n - 1) // 2 != num_edges:
        raise GenotypeError(f"{num_edges} edges do not form a cell with {num_inputs} inputs")
    return n


def num_edges(nodes: int, num_inputs: int = 2) -> int:
    """Number of searched edges of a cell with ``nodes`` intermediate nodes."""
    return nodes * num_inputs + nodes * (nodes - 1) // 2


# --------------------------------------------------------------------------------------------
# Built-in genotypes from the paper and its baselines

CONV_GENOTYPES: Registry[Genotype] = Registry("conv genotype")


def _builtin(name: str, normal: list, reduce: list, normal_concat=(2, 3, 4, 5),
             reduce_concat=(2, 3, 4, 5)) -> None:
    CONV_GENOTYPES.register(name)(
        Genotype.from_dict({"normal": normal, "normal_concat": list(normal_concat),
                            "reduce": reduce, "reduce_concat": list(reduce_concat)},
                           source=f"built-in {name}"))


# DARTS (first order), Table 1.
_builtin("DARTS_V1",
         [["sep_conv_3x3", 1], ["sep_conv_3x3", 0], ["skip_connect", 0], ["sep_conv_3x3", 1],
          ["skip_connect", 0], ["sep_conv_3x3", 1], ["sep_conv_3x3", 0], ["skip_connect", 2]],
         [["max_pool_3x3", 0], ["max_pool_3x3", 1], ["skip_connect", 2], ["max_pool_3x3", 0],
          ["max_pool_3x3", 0], ["skip_connect", 2], ["skip_connect", 2], ["avg_pool_3x3", 0]])
# DARTS (second order), Figures 4 and 5: the cell reported at 2.76% CIFAR-10 test error.
_builtin("DARTS_V2",
         [["sep_conv_3x3", 0], ["sep_conv_3x3", 1], ["sep_conv_3x3", 0], ["sep_conv_3x3", 1],
          ["sep_conv_3x3", 1], ["skip_connect", 0], ["skip_connect", 0], ["dil_conv_3x3", 2]],
         [["max_pool_3x3", 0], ["max_pool_3x3", 1], ["skip_connect", 2], ["max_pool_3x3", 1],
          ["max_pool_3x3", 0], ["skip_connect", 2], ["skip_connect", 2], ["max_pool_3x3", 1]])
CONV_GENOTYPES.register("DARTS")(CONV_GENOTYPES.get("DARTS_V2"))
# NASNet-A and AmoebaNet-A cells as written in the DARTS code base (5 intermediate nodes).
_builtin("NASNet",
         [["sep_conv_5x5", 1], ["sep_conv_3x3", 0], ["sep_conv_5x5", 0], ["sep_conv_3x3", 0],
          ["avg_pool_3x3", 1], ["skip_connect", 0], ["avg_pool_3x3", 0], ["avg_pool_3x3", 0],
          ["sep_conv_3x3", 1], ["skip_connect", 1]],
         [["sep_conv_5x5", 1], ["sep_conv_7x7", 0], ["max_pool_3x3", 1], ["sep_conv_7x7", 0],
          ["avg_pool_3x3", 1], ["sep_conv_5x5", 0], ["skip_connect", 3], ["avg_pool_3x3", 2],
          ["sep_conv_3x3", 2], ["max_pool_3x3", 1]],
         normal_concat=(2, 3, 4, 5, 6), reduce_concat=(4, 5, 6))
_builtin("AmoebaNet",
         [["avg_pool_3x3", 0], ["max_pool_3x3", 1], ["sep_conv_3x3", 0], ["sep_conv_5x5", 2],
          ["sep_conv_3x3", 0], ["avg_pool_3x3", 3], ["sep_conv_3x3", 1], ["skip_connect", 1],
          ["skip_connect", 0], ["avg_pool_3x3", 1]],
         [["avg_pool_3x3", 0], ["sep_conv_3x3", 1], ["max_pool_3x3", 0], ["sep_conv_7x7", 2],
          ["sep_conv_7x7", 0], ["avg_pool_3x3", 1], ["max_pool_3x3", 0], ["max_pool_3x3", 1],
          ["conv_7x1_1x7", 0], ["sep_conv_3x3", 5]],
         normal_concat=(4, 5, 6), reduce_concat=(3, 4, 6))


@dataclass(frozen=True)
class RecurrentGenotype:
    """A recurrent cell: one (op, input state) pair per intermediate node, and the averaged nodes.

    State 0 is the fixed first node (the highway transform of x_t and h_{t-1}); node i (1-based)
    may read any state < i. JSON: ``{"recurrent": [["sigmoid", 0], ...], "concat": [1, ..., 8]}``.
    """

    recurrent: tuple[Edge, ...]
    concat: tuple[int, ...]

    @property
    def nodes(self) -> int:
        return len(self.recurrent)

    def to_dict(self) -> dict[str, Any]:
        return {"recurrent": [[op, idx] for op, idx in self.recurrent], "concat": list(self.concat)}

    def to_json(self, indent: int | None = None) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_dict(cls, data: Any, *, source: str = "genotype") -> "RecurrentGenotype":
        if not isinstance(data, dict):
            raise GenotypeError(f"{source}: expected a JSON object, got {type(data).__name__}")
        missing = [k for k in ("recurrent", "concat") if k not in data]
        if missing:
            raise GenotypeError(f"{source}: missing field(s) {', '.join(missing)}")
        extra = sorted(set(data) - {"recurrent", "concat"})
        if extra:
            raise GenotypeError(f"{source}: unknown field(s) {', '.join(map(str, extra))}")
        edges = _parse_edges(data["recurrent"], k=1, num_inputs=1, where=f"{source}: recurrent", ops=RNN_OPS)
        concat = _parse_concat(data["concat"], len(edges) + 1, where=f"{source}: concat")
        return cls(edges, concat)

    @classmethod
    def from_json(cls, text: str, *, source: str = "genotype") -> "RecurrentGenotype":
        return cls.from_dict(_parse_json(text, source), source=source)


def derive_recurrent_genotype(weights: torch.Tensor, op_names: Sequence[str]) -> RecurrentGenotype:
    """k=1 derivation: each node keeps its single strongest non-``none`` op over all predecessors."""
    edges = derive_cell(weights, op_names, num_inputs=1, k=1)
    return RecurrentGenotype(tuple(edges), tuple(range(1, len(edges) + 1)))


RNN_GENOTYPES: Registry[RecurrentGenotype] = Registry("recurrent genotype")
_RNN_CONCAT = list(range(1, 9))
# Table 2: DARTS (first order) and DARTS (second order), the 55.7-perplexity cell.
RNN_GENOTYPES.register("DARTS_V1")(RecurrentGenotype.from_dict({"recurrent": [
    ["relu", 0], ["relu", 1], ["tanh", 2], ["relu", 3], ["relu", 4], ["identity", 1], ["relu", 5], ["relu", 1]],
    "concat": _RNN_CONCAT}, source="built-in DARTS_V1"))
RNN_GENOTYPES.register("DARTS_V2")(RecurrentGenotype.from_dict({"recurrent": [
    ["sigmoid", 0], ["relu", 1], ["relu", 1], ["identity", 1], ["tanh", 2], ["sigmoid", 5], ["tanh", 3], ["relu", 5]],
    "concat": _RNN_CONCAT}, source="built-in DARTS_V2"))
RNN_GENOTYPES.register("DARTS")(RNN_GENOTYPES.get("DARTS_V2"))

_SPACES = {"cnn": (CONV_GENOTYPES, Genotype), "rnn": (RNN_GENOTYPES, RecurrentGenotype)}


def _space_genotypes(space: str) -> tuple[Registry, type]:
    if space == "nb201":  # (its module imports this one)
        from .genotype201 import CELLS201, Cell201
        return CELLS201, Cell201
    return _SPACES[space]


def genotype_from_dict(data: Any, *, source: str = "genotype") -> Any:
    """A conv or NAS-Bench-201 genotype from its JSON dict (a trained model's, whichever it holds)."""
    _, cls = _space_genotypes("nb201" if isinstance(data, dict) and "arch" in data else "cnn")
    return cls.from_dict(data, source=source)


def load_genotype(spec: str | os.PathLike, space: str = "cnn") -> Any:
    """A genotype of ``space`` (cnn, nb201 or rnn) from a built-in name, a JSON file, a run directory,
    or (nb201) an arch string."""
    builtins, cls = _space_genotypes(space)
    text = os.fspath(spec)
    if text in builtins:
        return builtins.get(text)
    if space == "nb201" and text.startswith("|"):
        return cls.from_str(text, source="--genotype")
    path = Path(text)
    if path.is_dir():
        path = path / "genotype.json"
        if not path.is_file():
            raise GenotypeError(f"{spec}: directory holds no genotype.json")
    if not path.is_file():
        known = ", ".join(builtins.names())
        raise GenotypeError(f"unknown genotype {text!r}: neither a built-in {space} name ({known}) nor a file")
    try:
        content = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise GenotypeError(f"{path}: cannot read: {e}") from None
    return cls.from_json(content, source=str(path))
