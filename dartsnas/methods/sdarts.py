"""SDARTS-RS (Chen & Hsieh, ICML 2020, "Stabilizing Differentiable Architecture Search via
Perturbation-based Regularization", random smoothing): every weight step sees the mixing weights
softmax(α) + U(-ε, ε), each row clamped to [0, 1] and renormalised, ε growing linearly from 0.03 to
``--sdarts-epsilon`` (0.3) over the search; the α step is DARTS's. Training the weights to do well
around α, not only at it, flattens the validation loss in α."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F

from ..config import Config, option
from . import SEARCH_METHODS, Regularizer

SDARTS_EPSILON_START = 0.03
#: The noise's seed: the run's seed plus this.
SMOOTHING_SEED_OFFSET = 7


@dataclass
class SmoothingOptions(Config):
    sdarts_epsilon: float = option(0.3, "SDARTS-RS: the perturbation grows linearly from 0.03 to this",
                                   group="optimisation", above=0, max=1)


def sdarts_epsilon(epoch: int, epochs: int, epsilon: float = 0.3) -> float:
    """SDARTS-RS's perturbation size in epoch ``epoch`` (0-based): from 0.03 growing linearly towards ``epsilon``."""
    return SDARTS_EPSILON_START + (epsilon - SDARTS_EPSILON_START) * epoch / epochs


def perturb_mixing_weights(weights: torch.Tensor, epsilon: float, generator: torch.Generator) -> torch.Tensor:
    """``weights`` (rows of softmax(α)) + U(-ε, ε), each row clamped to [0, 1] and renormalised to sum 1;
    a row the clamp leaves all zero keeps only its largest perturbed entry (SDARTS's projection).
    The noise is drawn on the CPU from ``generator`` (reproducible, resumable, the same on every rank)."""
    noise = (2 * torch.rand(weights.shape, generator=generator, dtype=torch.float64) - 1) * epsilon
    shifted = weights.detach() + noise.to(weights.device, weights.dtype)
    clamped = shifted.clamp(0.0, 1.0)
    strongest = F.one_hot(shifted.argmax(-1), weights.shape[-1]).to(weights.dtype)
    clamped = torch.where(clamped.sum(-1, keepdim=True) == 0, strongest, clamped)
    return clamped / clamped.sum(-1, keepdim=True)


@SEARCH_METHODS.register("sdarts-rs")
class SdartsRS(Regularizer):
    name = "sdarts-rs"

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        self.smoothing = torch.Generator().manual_seed(config.seed + SMOOTHING_SEED_OFFSET)  # the same on every rank

    def epoch_start(self, run: Any, record: dict[str, Any]) -> None:
        record["sdarts_epsilon"] = self.epsilon(run)

    def epsilon(self, run: Any) -> float:
        # epochs after the search's (DARTS-PT's selection) keep the full ε
        return sdarts_epsilon(min(run.epoch, self.config.epochs), self.config.epochs, self.config.sdarts_epsilon)

    def perturb(self, run: Any) -> Callable[[], Any]:
        epsilon, model = self.epsilon(run), run.model
        return lambda: tuple(None if w is None else perturb_mixing_weights(w, epsilon, self.smoothing)
                             for w in model.arch_weights())

    def run_state(self, run: Any) -> dict[str, Any]:
        return {"smoothing": self.smoothing.get_state()}

    def load_run_state(self, state: dict[str, Any]) -> None:
        if "smoothing" in state:
            self.smoothing.set_state(state["smoothing"])
