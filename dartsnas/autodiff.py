"""Autograd helpers of the α steps (architect) and the curvature watch: a pass that leaves the
BatchNorm statistics alone, parameters held constant, and two passes with the same random draws."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator, Sequence

import torch
from torch import nn


@contextmanager
def same_random_draws(state: dict[str, Any] | None) -> Iterator[dict[str, Any]]:
    """Run the block from the RNG state ``state`` (or the current one); yields that state.

    The two finite-difference passes must see the same dropout masks, or their difference
    measures mask noise instead of curvature.
    """
    if state is None:
        state = {"cpu": torch.get_rng_state()}
        if torch.cuda.is_available():
            state["cuda"] = torch.cuda.get_rng_state_all()
    else:
        torch.set_rng_state(state["cpu"])
        if "cuda" in state:
            torch.cuda.set_rng_state_all(state["cuda"])
    yield state


@contextmanager
def frozen_batchnorm_stats(model: nn.Module) -> Iterator[None]:
    """Use batch statistics without updating the running ones (the α step must not move them)."""
    bns = [m for m in model.modules()
           if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    for m in bns:
        m.track_running_stats = False
    try:
        yield
    finally:
        for m in bns:
            m.track_running_stats = True


@contextmanager
def requires_grad_off(params: Sequence[torch.Tensor]) -> Iterator[None]:
    """Treat ``params`` as constants: autograd neither differentiates nor saves tensors for them."""
    flags = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(params, flags):
            p.requires_grad_(flag)
