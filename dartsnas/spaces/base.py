"""What every search model shares: its weights are all its parameters except α; activation recomputation."""
from __future__ import annotations

import contextlib
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint


def mixing_weights(logits: torch.Tensor) -> torch.Tensor:
    """softmax over the last dimension in the parameter's own precision, at least float32: a float64
    model keeps float64 (exact gradient checks), a half-precision one is lifted to float32."""
    if logits.dtype not in (torch.float32, torch.float64):
        logits = logits.float()
    return F.softmax(logits, dim=-1)


class ArchitectureSplit:
    """Mixin for an ``nn.Module`` defining ``arch_parameters()``: the weights are everything else."""

    def arch_parameters(self) -> list[nn.Parameter]:
        raise NotImplementedError

    def named_weight_parameters(self) -> list[tuple[str, nn.Parameter]]:
        arch = {id(p) for p in self.arch_parameters()}
        return [(n, p) for n, p in self.named_parameters() if id(p) not in arch]

    def weight_parameters(self) -> list[nn.Parameter]:
        return [p for _, p in self.named_weight_parameters()]


#: Activation recomputation of a search network: none, every cell, or every mixed op (edge).
RECOMPUTE_MODES = ("none", "cell", "edge")


class kept_running_stats:
    """BatchNorm running statistics (and batch counts) of ``module`` as they were on entry, whatever
    the block does: a recomputed forward pass must not update them a second time. Re-enterable: a
    double backward (exact order) recomputes a region more than once."""

    def __init__(self, module: nn.Module) -> None:
        self.bns = [m for m in module.modules()
                    if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
        self.saved: list[list[tuple[torch.Tensor, ...]]] = []

    def __enter__(self) -> None:
        self.saved.append([(m.running_mean.clone(), m.running_var.clone(), m.num_batches_tracked.clone())
                           for m in self.bns])

    def __exit__(self, *exc: Any) -> None:
        with torch.no_grad():
            for m, (mean, var, count) in zip(self.bns, self.saved.pop()):
                m.running_mean.copy_(mean)
                m.running_var.copy_(var)
                m.num_batches_tracked.copy_(count)


def recomputed(module: nn.Module, *args: Any, **kwargs: Any) -> Any:
    """``module(*args, **kwargs)``, keeping none of its activations: backward recomputes them
    (non-reentrant ``torch.utils.checkpoint``), from the same random state (dropout masks) and without
    touching the BatchNorm running statistics twice. The module's parameters are passed as inputs of the
    recomputation, so a pass under ``torch.func.functional_call`` (the second-order architect's
    virtual weights) is recomputed with the weights it ran with, not the module's own. While it runs,
    ``is_recomputing(module)`` is true: a module that recomputes itself (a :class:`~dartsnas.nn.Choice`)
    then runs plainly instead of recursing.

    Lean on purpose (a search step makes hundreds of these calls, and their Python cost was a third of
    the recomputation's time): the weights are swapped in only where they differ from the module's own,
    by the slot of their owner, instead of through ``functional_call``; and checkpoint's per-tensor
    shape check (``determinism_check``) is off, since the recomputed pass is the same code on the same
    inputs and random state."""
    if not torch.is_grad_enabled():
        return module(*args, **kwargs)
    slots = [(owner, name) for owner in module.modules() for name, p in owner._parameters.items() if p is not None]
    params = [owner._parameters[name] for owner, name in slots]
    n = len(params)

    def run(*flat: Any, **kw: Any) -> Any:
        depth = module.__dict__.get(_INSIDE, 0)
        module.__dict__[_INSIDE] = depth + 1
        swapped = []
        try:
            for (owner, name), value in zip(slots, flat[:n]):
                own = owner._parameters[name]
                if own is not value:
                    owner._parameters[name] = value
                    swapped.append((owner, name, own))
            return module(*flat[n:], **kw)
        finally:
            for owner, name, own in reversed(swapped):
                owner._parameters[name] = own
            module.__dict__[_INSIDE] = depth

    return checkpoint(run, *params, *args, use_reentrant=False, preserve_rng_state=True, determinism_check="none",
                      context_fn=lambda: (contextlib.nullcontext(), kept_running_stats(module)), **kwargs)


_INSIDE = "_dartsnas_recomputing"


def is_recomputing(module: nn.Module) -> bool:
    """Whether ``module`` is running inside :func:`recomputed` (its first pass or the recomputation)."""
    return module.__dict__.get(_INSIDE, 0) > 0


def sampled_sum(weights: torch.Tensor, index: int, output: torch.Tensor) -> torch.Tensor:
    """GDAS's mixture of one computed candidate in the NAS-Bench-201 cell's form
    (``NAS201SearchCell.forward_gdas``): ``weights[index] * output`` plus the other weights as scalars.
    Their value is 0 (straight-through one-hot), so the output is the candidate's, but each receives
    the sum of the output's gradient; the others are never computed. (The DARTS space's cell takes
    ``weights[index] * output`` alone, as GDAS's DARTS-space ``MixedOp.forward_gdas``.)"""
    out = weights[index].to(output.dtype) * output
    others = torch.cat([weights[:index], weights[index + 1:]])
    return out + others.sum().to(output.dtype) if others.numel() else out
