"""DARTS- (Chu et al., ICLR 2021, "DARTS-: Robustly Stepping out of Performance Collapse Without
Indicators"): every mixed op gets an auxiliary skip connection outside α (a factorised reduction on
stride-2 edges) weighted by β, which decays linearly from 1 to 0 over the search, so that the
candidate ops no longer have to win the residual path from skip_connect; the auxiliary skip is never
part of the derived genotype (the network's side: ``spaces/conv.py``, ``MixedOp.aux``)."""
from __future__ import annotations

from typing import Any

from . import SEARCH_METHODS, Regularizer


def darts_minus_beta(epoch: int, epochs: int) -> float:
    """DARTS-'s auxiliary-skip weight in epoch ``epoch`` (0-based): 1 at the start, decaying linearly to 0
    (and 0 in epochs after the search's: DARTS-PT's selection)."""
    return max(0.0, 1.0 - epoch / epochs)


@SEARCH_METHODS.register("darts-minus")
class DartsMinus(Regularizer):
    name = "darts-minus"

    @classmethod
    def space_options(cls, config: Any) -> dict[str, Any]:
        return {"auxiliary_skip": True}

    def epoch_start(self, run: Any, record: dict[str, Any]) -> None:
        # run.model, not the model at the start: P-DARTS builds one per stage
        run.model.aux_beta = record["aux_skip_beta"] = darts_minus_beta(run.epoch, self.config.epochs)
