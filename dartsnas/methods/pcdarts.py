"""PC-DARTS (Xu et al., ICLR 2020, "Partial Channel Connections for Memory-Efficient Architecture
Search"): each mixed op sees 1/K of its input's channels (the rest bypass it, then the channels are
shuffled), and each node weights its incoming edges by softmax(β) over them (edge normalisation);
derivation ranks edges by softmax(α) x softmax(β). The network's side is in ``spaces/conv.py``
(``MixedOp``'s ``partial``, ``edge_softmax``); the ImageNet search's recipe is
``train.search_config.SEARCH_RECIPES["imagenet"]``."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..config import Config, option
from . import SEARCH_METHODS, SearchMethod


@dataclass
class PartialChannelOptions(Config):
    partial_channels: int = option(1, "PC-DARTS: mixed ops see 1/K of the channels, edges weighted by β",
                                   group="search space", min=1, metavar="K", default_text="1: plain DARTS")


@SEARCH_METHODS.register("pc-darts")
class PcDarts(SearchMethod):
    name = "pc-darts"

    @classmethod
    def applies(cls, config: Any) -> bool:
        return getattr(config, "partial_channels", 1) > 1

    @classmethod
    def label(cls, config: dict[str, Any]) -> str:
        return "pc-darts" if config.get("partial_channels", 1) > 1 else ""

    @classmethod
    def space_options(cls, config: Any) -> dict[str, Any]:
        return {"partial_channels": config.partial_channels}

    def record(self, run: Any, record: dict[str, Any], genotype: Any) -> str:
        """softmax(β) of every edge, beside softmax(α)."""
        record["edge_weights"] = {cell: [round(v, 6) for v in e.tolist()]
                                  for cell, e in zip(("normal", "reduce"), run.model.edge_weights()) if e is not None}
        return ""
