"""DARTS (Liu, Simonyan, Yang, ICLR 2019), the base of every search: each edge mixes all its
candidates by softmax(α) (``spaces.base.mixing_weights``), α steps by Adam on the validation split with
the first-order, second-order (the paper's finite differences) or exact gradient
(:mod:`dartsnas.architect`), and after ``--arch-start-epoch`` (PC-DARTS's warm-up: 15) only."""
from __future__ import annotations

from typing import Any

from . import SEARCH_METHODS, SearchMethod


@SEARCH_METHODS.register("darts")
class Darts(SearchMethod):
    name = "darts"

    @classmethod
    def applies(cls, config: Any) -> bool:
        return True

    @classmethod
    def label(cls, config: dict[str, Any]) -> str:
        order = config.get("order", "first")
        return f" ({order} order)" if order != "first" else ""

    def alpha_moves(self, run: Any) -> bool:
        """Whether this epoch takes α steps (a stage-wise method decides instead, see pdarts)."""
        return run.epoch >= self.config.arch_start_epoch
