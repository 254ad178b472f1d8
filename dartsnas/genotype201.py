"""A NAS-Bench-201 cell (Dong & Yang, ICLR 2020): a complete DAG of an input node and ``nodes``
intermediate ones, one op on every edge (``none`` included: an edge may be absent), the last node the
cell's output.

The benchmark names a cell by its arch string, ``|op~0|+|op~0|op~1|+|op~0|op~1|op~2|`` (node by
node, each edge as ``op~input``; xautodl's ``Structure.tostr``). ``Structure.gen_all`` enumerates the
cells with the edges node-major and the last edge's op varying fastest (ops in the space's order):
:meth:`Cell201.index`. The benchmark's files number them after a shuffle of that list by Python's
``random.seed(88); random.shuffle`` (AutoDL-Projects ``exps/NAS-Bench-201/main.py``):
:func:`benchmark_cells`, :func:`benchmark_index`. Two cells are isomorphic when they compute the same function of the input up to the order of a
sum (``Structure.to_unique_str(consider_zero=True)``): a skip passes its input's expression on, a
``none`` or an input that is always zero contributes nothing, and a node's terms are sorted.
"""
from __future__ import annotations

import json
import random
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Iterator, Sequence

import torch

from .errors import GenotypeError
from .genotype import SKIP_OP, ZERO_OP, _is_int, _parse_json
from .ops import CONV_OPS, NB201_OPS
from .registry import Registry

Edge = tuple[str, int]


def edges_of(nodes: int) -> int:
    """Edges of a complete cell DAG with ``nodes`` intermediate nodes (3 nodes: 6 edges)."""
    return nodes * (nodes + 1) // 2


def edge_inputs(nodes: int) -> list[int]:
    """The node each edge reads, node-major (node i reads 0..i-1): [0, 0, 1, 0, 1, 2] for 3 nodes."""
    return [j for i in range(1, nodes + 1) for j in range(i)]


def _nodes_of(num_edges: int) -> int | None:
    nodes = 0
    while edges_of(nodes) < num_edges:
        nodes += 1
    return nodes if edges_of(nodes) == num_edges and nodes > 0 else None


@dataclass(frozen=True)
class Cell201:
    """One op per edge, node-major: node i (1-based) reads nodes 0..i-1, in that order."""

    edges: tuple[Edge, ...]

    def __post_init__(self) -> None:
        nodes = _nodes_of(len(self.edges))
        if nodes is None:
            raise GenotypeError(f"a NAS-Bench-201 cell has n(n+1)/2 edges, got {len(self.edges)}")
        expected = edge_inputs(nodes)
        if [j for _, j in self.edges] != expected:
            raise GenotypeError(f"edges must read inputs {expected} node by node, got {[j for _, j in self.edges]}")

    @property
    def nodes(self) -> int:
        """Intermediate nodes (3 in NAS-Bench-201: 4 with the input)."""
        return _nodes_of(len(self.edges)) or 0

    @property
    def normal(self) -> tuple[Edge, ...]:
        """The searched cell's edges (the name the conv search's records use)."""
        return self.edges

    def node_edges(self) -> list[tuple[Edge, ...]]:
        """The edges of each intermediate node."""
        out, start = [], 0
        for i in range(1, self.nodes + 1):
            out.append(self.edges[start:start + i])
            start += i
        return out

    def to_str(self) -> str:
        """The benchmark's arch string."""
        return "+".join("|" + "|".join(f"{op}~{j}" for op, j in node) + "|" for node in self.node_edges())

    def __str__(self) -> str:
        return self.to_str()

    @classmethod
    def from_str(cls, text: str, *, source: str = "arch string") -> "Cell201":
        """Parse an arch string (a node's edges in any order; each predecessor exactly once)."""
        if not isinstance(text, str) or not text.strip():
            raise GenotypeError(f"{source}: expected an arch string such as |nor_conv_3x3~0|+|...~0|...~1|+...")
        edges: list[Edge] = []
        for i, part in enumerate(text.strip().split("+"), start=1):
            if not (part.startswith("|") and part.endswith("|")) or len(part) < 2:
                raise GenotypeError(f"{source}: node {i} {part!r} is not |op~input|...|")
            pairs = {}
            for item in part[1:-1].split("|"):
                op, sep, idx = item.rpartition("~")
                if not sep or not op or not idx.isdigit():
                    raise GenotypeError(f"{source}: node {i}: {item!r} is not op~input")
                if op not in CONV_OPS:
                    raise GenotypeError(f"{source}: node {i}: unknown op {op!r} (known: {', '.join(CONV_OPS.names())})")
                j = int(idx)
                if j >= i or j in pairs:
                    raise GenotypeError(f"{source}: node {i}: input {j} " + ("repeats" if j in pairs else
                                        f"does not exist yet (node {i} reads 0..{i - 1})"))
                pairs[j] = op
            if sorted(pairs) != list(range(i)):
                missing = sorted(set(range(i)) - set(pairs))
                raise GenotypeError(f"{source}: node {i} has no edge from node(s) {missing} (write none~j for none)")
            edges += [(pairs[j], j) for j in range(i)]
        return cls(tuple(edges))

    def to_dict(self) -> dict[str, Any]:
        return {"arch": self.to_str()}

    def to_json(self, indent: int | None = None) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_dict(cls, data: Any, *, source: str = "genotype") -> "Cell201":
        if not isinstance(data, dict) or "arch" not in data:
            raise GenotypeError(f"{source}: expected a JSON object with an \"arch\" string")
        extra = sorted(set(data) - {"arch"})
        if extra:
            raise GenotypeError(f"{source}: unknown field(s) {', '.join(map(str, extra))}")
        return cls.from_str(data["arch"], source=source)

    @classmethod
    def from_json(cls, text: str, *, source: str = "genotype") -> "Cell201":
        text = text.strip()
        if text.startswith("|"):  # an arch string alone
            return cls.from_str(text, source=source)
        return cls.from_dict(_parse_json(text, source), source=source)

    # -- the benchmark's numbering and isomorphism ----------------------------------------------

    def index(self, ops: Sequence[str] = NB201_OPS) -> int:
        """The cell's position in ``Structure.gen_all``'s enumeration over ``ops`` (not the benchmark's
        index: :func:`benchmark_index`)."""
        out = 0
        for op, _ in self.edges:
            if op not in ops:
                raise GenotypeError(f"op {op!r} is not in the op set {list(ops)}")
            out = out * len(ops) + list(ops).index(op)
        return out

    @classmethod
    def from_index(cls, index: int, ops: Sequence[str] = NB201_OPS, nodes: int = 3) -> "Cell201":
        n = edges_of(nodes)
        if not _is_int(index) or not 0 <= index < len(ops) ** n:
            raise GenotypeError(f"cell index {index!r} out of range 0..{len(ops) ** n - 1}")
        picks = []
        for _ in range(n):
            index, k = divmod(index, len(ops))
            picks.append(ops[k])
        return cls(tuple(zip(reversed(picks), edge_inputs(nodes))))

    def unique_str(self) -> str:
        """The cell's expression with ``none`` and skips resolved and every sum sorted: equal for
        isomorphic cells (``#``: always zero)."""
        exprs = ["0"]
        for node in self.node_edges():
            terms = []
            for op, j in node:
                if op == ZERO_OP or exprs[j] == "#":
                    terms.append("#")
                elif op == SKIP_OP:
                    terms.append(exprs[j])
                else:
                    terms.append(f"({exprs[j]})@{op}")
            exprs.append("+".join(sorted(terms)))
        return exprs[-1]

    def is_connected(self) -> bool:
        """Whether the output depends on the input (some path of non-``none`` ops)."""
        alive = [True]
        for node in self.node_edges():
            alive.append(any(op != ZERO_OP and alive[j] for op, j in node))
        return alive[-1]


def all_cells(ops: Sequence[str] = NB201_OPS, nodes: int = 3) -> Iterator[Cell201]:
    """Every cell of the space, in ``Structure.gen_all``'s order."""
    for index in range(len(ops) ** edges_of(nodes)):
        yield Cell201.from_index(index, ops, nodes)


#: The seed of the shuffle that gives the benchmark's index order.
BENCHMARK_SHUFFLE_SEED = 88


@lru_cache(maxsize=8)
def benchmark_cells(ops: tuple[str, ...] = NB201_OPS, nodes: int = 3) -> tuple[Cell201, ...]:
    """Every cell in the benchmark's index order: ``gen_all``'s list shuffled by ``random.seed(88)``
    (for another op set or node count, the same rule on its cells)."""
    cells = list(all_cells(ops, nodes))
    random.Random(BENCHMARK_SHUFFLE_SEED).shuffle(cells)
    return tuple(cells)


@lru_cache(maxsize=8)
def _benchmark_positions(ops: tuple[str, ...], nodes: int) -> dict[Cell201, int]:
    return {cell: i for i, cell in enumerate(benchmark_cells(ops, nodes))}


def benchmark_index(cell: Cell201, ops: Sequence[str] = NB201_OPS) -> int:
    """The cell's index in the benchmark's files (NAS-Bench-201, NATS-Bench's topology space)."""
    for op, _ in cell.edges:
        if op not in ops:
            raise GenotypeError(f"op {op!r} is not in the op set {list(ops)}")
    return _benchmark_positions(tuple(ops), cell.nodes)[cell]


def unique_cells(ops: Sequence[str] = NB201_OPS, nodes: int = 3) -> list[Cell201]:
    """One cell per isomorphism class (the first in index order): 6,466 of NAS-Bench-201's 15,625."""
    seen: dict[str, Cell201] = {}
    for cell in all_cells(ops, nodes):
        seen.setdefault(cell.unique_str(), cell)
    return list(seen.values())


def derive_cell201(weights: torch.Tensor, op_names: Sequence[Sequence[str]]) -> Cell201:
    """The benchmark's derivation (xautodl's ``genotype()``): on every edge the op of largest weight,
    ``none`` included."""
    nodes = _nodes_of(weights.shape[0])
    if nodes is None:
        raise GenotypeError(f"{weights.shape[0]} rows of α is not the edges of a complete cell")
    picks = weights.detach().float().argmax(-1).tolist()
    return Cell201(tuple((op_names[e][k], j) for e, (k, j) in enumerate(zip(picks, edge_inputs(nodes)))))


#: Named NAS-Bench-201 cells: the space's best on CIFAR-10, the paper's ResNet cell, and the all-skip cell
#: that collapsed DARTS ends in.
CELLS201: Registry[Cell201] = Registry("NAS-Bench-201 cell")
for _name, _arch in {
    "best-cifar10": "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|",
    "resnet": "|nor_conv_3x3~0|+|none~0|nor_conv_3x3~1|+|skip_connect~0|none~1|skip_connect~2|",
    "all-skip": "|skip_connect~0|+|skip_connect~0|skip_connect~1|+|skip_connect~0|skip_connect~1|skip_connect~2|",
}.items():
    CELLS201.register(_name)(Cell201.from_str(_arch, source=f"built-in {_name}"))
