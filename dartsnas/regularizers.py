"""Searches that do not collapse: the robust DARTS variants that change the optimisation.

``sdarts-rs`` (Chen & Hsieh, ICML 2020, "Stabilizing Differentiable Architecture Search via
Perturbation-based Regularization", random smoothing): every weight step sees the mixing weights
softmax(α) + U(-ε, ε), each row clamped to [0, 1] and renormalised, ε growing linearly from 0.03 to
``epsilon`` (0.3) over the search; the α step is DARTS's. Training the weights to do well around α,
not only at it, flattens the validation loss in α.

``darts-minus`` (Chu et al., ICLR 2021, "DARTS-: Robustly Stepping out of Performance Collapse
Without Indicators"): every mixed op gets an auxiliary skip connection outside α (a factorised
reduction on stride-2 edges) weighted by β, which decays linearly from 1 to 0 over the search, so
that the candidate ops no longer have to win the residual path from skip_connect; the auxiliary skip
is never part of the derived genotype.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

REGULARIZERS = ("none", "sdarts-rs", "darts-minus")
SDARTS_EPSILON_START = 0.03


def darts_minus_beta(epoch: int, epochs: int) -> float:
    """DARTS-'s auxiliary-skip weight in epoch ``epoch`` (0-based): 1 at the start, decaying linearly to 0."""
    return 1.0 - epoch / epochs


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
