"""The shape of a DARTS conv search network (:class:`ConvSearchSpaceConfig`), checked before anything
is built: its sizes, its op sets (one for all edges, per edge, or P-DARTS's pruned ones), PC-DARTS's
partial channels, DARTS-'s auxiliary skip, the stem and the reduction cell."""
from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import ConfigError
from ..genotype import num_edges
from ..ops import CONV_OPS, DARTS_OPS, EDGE_OP_SETS, edge_ops, resolve_op_set, unknown_op_error
from .base import RECOMPUTE_MODES


@dataclass
class ConvSearchSpaceConfig:
    """Shape of a convolutional search network; the defaults are the paper's CIFAR-10 search."""

    init_channels: int = 16
    layers: int = 8
    nodes: int = 4
    num_classes: int = 10
    in_channels: int = 3
    stem_multiplier: int = 3
    ops: tuple[str, ...] = field(default_factory=lambda: DARTS_OPS)
    partial_channels: int = 1  # K of PC-DARTS; 1 is plain DARTS
    edge_norm: bool = True  # with partial channels, PC-DARTS's β per edge (DrNAS's progressive search: none)
    auxiliary_skip: bool = False  # DARTS-: a skip beside every mixed op, weighted by SearchNetwork.aux_beta
    recompute: str = "none"  # activations recomputed in backward: none, per cell or per edge (mixed op)
    stem: str = "cifar"  # cifar: one stride-1 conv; imagenet: PC-DARTS's three stride-2 convs (8x fewer pixels)
    # P-DARTS's pruned spaces: the candidate ops of every edge, per cell type ({"normal": ((op, ...), ...),
    # "reduce": ...}, node-major, as many ops on every edge), replacing ``ops`` on each edge.
    edge_op_sets: dict[str, tuple[tuple[str, ...], ...]] | None = None
    reduce_cell: str = "searched"  # gdas: GDAS's fixed reduction cell; only the normal cell is searched
    derivation: str = "top-k"  # gdas: per node the two strongest (op, input) pairs, as GDAS's genotype()
    # gdas: GDAS's NASNetworkGDAS: no BatchNorm after the pooling candidates, BN + ReLU before the pooling
    search_network: str = "darts"

    def __post_init__(self) -> None:
        self.ops = resolve_op_set(self.ops)

    def validate(self) -> None:
        for name in ("init_channels", "layers", "nodes", "num_classes", "in_channels",
                     "stem_multiplier"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.layers < 3:
            # Reductions sit at layers//3 and 2*layers//3: fewer than 3 cells would make a cell
            # both the first and a reduction, which the space does not define.
            raise ConfigError(f"{{layers}} must be >= 3 (reductions at L/3 and 2L/3), got {self.layers}",
                              names=("layers",))
        if not self.ops:
            raise ConfigError("the op set is empty")
        if self.edge_op_sets is not None:
            self._check_edge_op_sets()
        elif len(self.ops) == 1 and self.ops[0] in EDGE_OP_SETS:  # per-edge op sets: RobustDARTS's S1
            self.edge_ops("normal")  # raises ConfigError unless the cell has the set's edges
        else:
            for op in self.ops:
                if op not in CONV_OPS:
                    raise unknown_op_error(op)
            if len(set(self.ops)) != len(self.ops):
                raise ConfigError(f"repeated op in the op set {list(self.ops)}")
            if all(op == "none" for op in self.ops):
                raise ConfigError("the op set needs at least one op other than 'none'")
        if self.partial_channels < 1:
            raise ConfigError(f"{{partial_channels}} must be >= 1, got {self.partial_channels}", names=("partial_channels",))
        if self.init_channels % self.partial_channels:
            raise ConfigError(f"{{partial_channels}} {self.partial_channels} must divide {{init_channels}} "
                              f"{self.init_channels}", names=("partial_channels", "init_channels"))
        if self.stem not in STEMS:
            raise ConfigError(f"{{stem}} must be one of {', '.join(STEMS)}, got {self.stem!r}", names=("stem",))
        if self.recompute not in RECOMPUTE_MODES:
            raise ConfigError(f"{{recompute}} must be one of {', '.join(RECOMPUTE_MODES)}, got {self.recompute!r}",
                              names=("recompute",))
        if self.derivation not in DERIVATIONS:
            raise ConfigError(f"{{derivation}} must be one of {', '.join(DERIVATIONS)}, got {self.derivation!r}",
                              names=("derivation",))
        if self.search_network not in SEARCH_NETWORKS:
            raise ConfigError(f"{{search_network}} must be one of {', '.join(SEARCH_NETWORKS)}, got "
                              f"{self.search_network!r}", names=("search_network",))
        if self.reduce_cell not in REDUCE_CELLS:
            raise ConfigError(f"{{reduce_cell}} must be one of {', '.join(REDUCE_CELLS)}, got {self.reduce_cell!r}",
                              names=("reduce_cell",))
        if self.reduce_cell != "searched" and self.partial_channels > 1:
            raise ConfigError("{reduce_cell} gdas and {partial_channels} do not combine: the fixed reduction cell "
                              "has no edges to weight", names=("reduce_cell", "partial_channels"))
        if self.auxiliary_skip and self.partial_channels > 1:
            raise ConfigError("{regularizer} darts-minus and {partial_channels} do not combine: the auxiliary skip "
                              "of DARTS- spans every channel, PC-DARTS mixes a part of them",
                              names=("regularizer", "partial_channels"))

    def edge_ops(self, cell: str) -> tuple[tuple[str, ...], ...]:
        """The candidate ops of every edge of the ``cell`` ("normal" or "reduce") cells, node-major."""
        if self.edge_op_sets is not None:
            return tuple(tuple(ops) for ops in self.edge_op_sets[cell])
        return edge_ops(self.ops, num_edges(self.nodes), cell)

    def _check_edge_op_sets(self) -> None:
        sets = self.edge_op_sets
        if not isinstance(sets, dict) or set(sets) != {"normal", "reduce"}:
            raise ConfigError("edge_op_sets needs the op sets of the 'normal' and the 'reduce' cell's edges")
        widths = set()
        for cell, rows in sets.items():
            if len(rows) != num_edges(self.nodes):
                raise ConfigError(f"edge_op_sets[{cell!r}] names {len(rows)} edges; a {self.nodes}-node cell has "
                                  f"{num_edges(self.nodes)}")
            for e, ops in enumerate(rows):
                for op in ops:
                    if op not in CONV_OPS:
                        raise unknown_op_error(op)
                if not ops or len(set(ops)) != len(ops):
                    raise ConfigError(f"edge_op_sets[{cell!r}] edge {e}: {list(ops)} is empty or repeats an op")
                widths.add(len(ops))
        if len(widths) != 1:
            raise ConfigError(f"edge_op_sets: every edge needs as many ops (α is one matrix), got {sorted(widths)}")

    @property
    def reduction_layers(self) -> tuple[int, int]:
        return (self.layers // 3, 2 * self.layers // 3)

    @property
    def downsampling(self) -> int:
        """How many times smaller the last cells' maps are than the input (the smallest image it takes)."""
        return STEMS[self.stem] * 4


#: How a conv genotype is derived: DARTS's top-k (the two strongest incoming edges per node, each with
#: its best op) or GDAS's (the two strongest (op, input) pairs of the node).
DERIVATIONS = ("top-k", "gdas")
#: The search network around the cells: DARTS's (model_search.py) or GDAS's (NASNetworkGDAS, xautodl).
SEARCH_NETWORKS = ("darts", "gdas")
#: The reduction cell of a search: searched like the normal one, or GDAS's fixed one (GDAS-FRC).
REDUCE_CELLS = ("searched", "gdas")

#: Search-network stems and their downsampling: CIFAR's stride-1 conv, or PC-DARTS's ImageNet stem
#: (two stride-2 convs to s0, a third to s1) for large images.
STEMS = {"cifar": 1, "imagenet": 8}
