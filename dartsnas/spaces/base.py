"""What every search model shares: its weights are all its parameters except α; activation recomputation."""
from __future__ import annotations

import contextlib
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call
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
    then runs plainly instead of recursing."""
    if not torch.is_grad_enabled():
        return module(*args, **kwargs)
    named = list(module.named_parameters())
    names, params = [name for name, _ in named], [p for _, p in named]
    n = len(params)

    def run(*flat: Any, **kw: Any) -> Any:
        depth = module.__dict__.get(_INSIDE, 0)
        module.__dict__[_INSIDE] = depth + 1
        try:
            return functional_call(module, dict(zip(names, flat[:n])), flat[n:], kw)
        finally:
            module.__dict__[_INSIDE] = depth

    return checkpoint(run, *params, *args, use_reentrant=False, preserve_rng_state=True,
                      context_fn=lambda: (contextlib.nullcontext(), kept_running_stats(module)), **kwargs)


_INSIDE = "_dartsnas_recomputing"


def is_recomputing(module: nn.Module) -> bool:
    """Whether ``module`` is running inside :func:`recomputed` (its first pass or the recomputation)."""
    return module.__dict__.get(_INSIDE, 0) > 0


#: How a search mixes the candidates of an edge: all of them weighted by softmax(α) (DARTS), or one
#: sampled by hard Gumbel-softmax (GDAS).
SAMPLERS = ("none", "gdas")


class GumbelSampler:
    """GDAS's sampler (Dong & Yang, CVPR 2019): per row of α, the candidate that maximises
    log softmax(α) + Gumbel noise (so drawn with probability softmax(α), whatever τ), and its
    straight-through weights ``one_hot - p.detach() + p`` with p = softmax((log softmax(α) + g) / τ):
    the forward pass sees exactly one candidate (weight 1), the gradient flows through the relaxed p,
    sharper as τ falls. The noise comes from its own seeded generator (on the CPU, so it is the same
    on every device and rank) whose state a checkpoint keeps. Outside training it picks argmax α, noise-free."""

    def __init__(self, seed: int, tau: float = 10.0) -> None:
        self.tau = float(tau)
        self.generator = torch.Generator().manual_seed(int(seed))

    def sample(self, alpha: torch.Tensor, training: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """(straight-through weights, picked index per row) for α of shape (..., candidates)."""
        if not training:
            index = alpha.detach().argmax(-1)
            return F.one_hot(index, alpha.shape[-1]).to(alpha.dtype), index
        logp = torch.log_softmax(alpha if alpha.dtype in (torch.float32, torch.float64) else alpha.float(), -1)
        while True:  # an exponential draw of exactly 0 gives infinite noise: draw again, as GDAS does
            noise = torch.empty(alpha.shape, dtype=logp.dtype).exponential_(generator=self.generator)
            gumbel = -noise.log()
            if torch.isfinite(gumbel).all():
                break
        probs = F.softmax((logp + gumbel.to(logp.device)) / self.tau, dim=-1)
        index = probs.detach().argmax(-1)
        hard = F.one_hot(index, alpha.shape[-1]).to(probs.dtype)
        return hard - probs.detach() + probs, index

    def state_dict(self) -> dict[str, Any]:
        return {"tau": self.tau, "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.tau = float(state["tau"])
        self.generator.set_state(state["generator"])


def gdas_tau(epoch: int, epochs: int, tau_max: float, tau_min: float) -> float:
    """GDAS's temperature at ``epoch`` (0-based): linear from ``tau_max`` at the first epoch to
    ``tau_min`` at the last."""
    return tau_min + (tau_max - tau_min) * (epochs - 1 - min(epoch, epochs - 1)) / max(epochs - 1, 1)


def sampled_sum(weights: torch.Tensor, index: int, output: torch.Tensor) -> torch.Tensor:
    """GDAS's mixture of one computed candidate: ``weights[index] * output`` plus the other weights as
    scalars. Their value is 0 (straight-through one-hot), so the output is the candidate's, but each
    receives the sum of the output's gradient, as in GDAS's code; the others are never computed."""
    out = weights[index].to(output.dtype) * output
    others = torch.cat([weights[:index], weights[index + 1:]])
    return out + others.sum().to(output.dtype) if others.numel() else out
