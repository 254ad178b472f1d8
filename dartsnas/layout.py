"""A cell diagram as data: node positions and labelled edges (drawn by :mod:`dartsnas.plot`; each
search space lays out its own cells with :func:`cell_layout`)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence


@dataclass
class CellLayout:
    """Node positions and labelled edges of one cell; ``kind`` is input, node or output."""

    name: str
    nodes: list[tuple[str, float, float, str]]   # (label, x, y, kind)
    edges: list[tuple[str, str, str]]            # (source, target, op; "" for fixed connections)


def cell_layout(name: str, edges: Sequence[tuple[str, int]], concat: Sequence[int], *, k: int,
                inputs: Sequence[str], output: str, first_node_fixed: bool = False) -> CellLayout:
    """Lay out a cell whose node i takes ``k`` (op, state) pairs; states 0.. are ``inputs`` then nodes.

    With ``first_node_fixed`` (recurrent cells) all inputs feed node 0 through a fixed connection
    and the genotype's states are numbered from that node.
    """
    n_nodes = len(edges) // k + (1 if first_node_fixed else 0)
    labels = list(inputs)
    step = 2.0  # horizontal distance between columns, in the same units as the vertical ones
    nodes = [(lab, 0.0, 1.2 * ((len(inputs) - 1) / 2 - i), "input") for i, lab in enumerate(inputs)]
    for i in range(n_nodes):
        nodes.append((str(i), step * (1 + i), 0.9 if i % 2 == 0 else -0.9, "node"))
    nodes.append((output, step * (n_nodes + 1), 0.0, "output"))
    out: list[tuple[str, str, str]] = []
    if first_node_fixed:
        out.extend((lab, "0", "") for lab in inputs)
        state = lambda idx: str(idx)
        first = 1
    else:
        state = lambda idx: labels[idx] if idx < len(inputs) else str(idx - len(inputs))
        first = 0
    for pos, (op, idx) in enumerate(edges):
        out.append((state(idx), str(first + pos // k), op))
    out.extend((state(idx), output, "") for idx in concat)
    return CellLayout(name, nodes, out)
