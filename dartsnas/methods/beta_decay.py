"""β-DARTS (Ye et al., CVPR 2022, "β-DARTS: Beta-Decay Regularization for Differentiable Architecture
Search"): α's objective gains λ·Beta(α), Beta(α) = the mean over edges of logsumexp over the edge's
ops of the raw α (a smooth maximum; its gradient λ·softmax(α)/edges pulls every edge's mixing weights
towards uniform, so no op runs away early), λ growing linearly with the epoch.

As the authors' code (Sunshine-Ye/Beta-DARTS, ``optimizers/darts/architect.py``): ``mlc_loss`` (lines
55-59) is ``logsumexp(α, -1).mean()``; ``_backward_step`` (lines 80-85) adds it with weight
``50 * epoch / 100`` (epoch 0-based, not scaled by the number of epochs: λ = 0.5·epoch, 0 to 49.5 over
their 100-epoch NAS-Bench-201 search), beside α's Adam weight decay, which stays. Departures, on
purpose (docs/methods.md): the term joins α's gradient in every order (theirs only in the
first-order path; it is a function of α alone, so the second-order and exact gradients take it as
they take a cost penalty), and with a reduction cell the two cells' terms are summed (their DARTS-space
script passes the list of both α to ``torch.logsumexp`` and cannot run; the NAS-Bench-201 space has one α).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ..config import Config, option
from . import SEARCH_METHODS, Regularizer


@dataclass
class BetaDecayOptions(Config):
    beta_decay_slope: float = option(0.5, "β-DARTS: the Beta-Decay weight λ = this x the epoch (0-based; the "
                                     "authors' 50·epoch/100)", group="optimisation", min=0)


def beta_decay(alphas: list[torch.Tensor]) -> torch.Tensor:
    """Beta(α): per cell type, the mean over edges of logsumexp over ops of α; summed over the cell types."""
    return sum(torch.logsumexp(a.float() if a.dtype not in (torch.float32, torch.float64) else a, dim=-1).mean()
               for a in alphas)


def beta_decay_weight(epoch: int, slope: float = 0.5) -> float:
    """λ in epoch ``epoch`` (0-based): ``slope`` x epoch (the authors' 50 x epoch / 100)."""
    return slope * epoch


@SEARCH_METHODS.register("beta-decay")
class BetaDecay(Regularizer):
    name = "beta-decay"

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        self.weight = 0.0

    def attach(self, run: Any) -> None:
        alphas = run.model.alphas()  # the network of this stage (P-DARTS rebuilds it)
        run.architect.terms.append(lambda: self.weight * beta_decay(alphas))

    def epoch_start(self, run: Any, record: dict[str, Any]) -> None:
        epoch = min(run.epoch, self.config.epochs - 1)  # DARTS-PT's selection after the search keeps the last λ
        self.weight = record["beta_decay_weight"] = beta_decay_weight(epoch, self.config.beta_decay_slope)

    def describe(self) -> str:
        return f", Beta-Decay λ = {self.config.beta_decay_slope:g} x epoch"
