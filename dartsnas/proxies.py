"""Zero-cost proxies (Abdelfattah et al., ICLR 2021, "Zero-Cost Proxies for Lightweight NAS"): scores of
an untrained network from one minibatch, to rank candidates before any training.

Each proxy is the authors' (SamsungLabs/zero-cost-nas, ``foresight/pruners/measures/``): only the
weights of ``Conv2d`` and ``Linear`` layers count (``p_utils.get_layer_metric_array``), a layer's
tensor is summed and the layers' sums added (``predictive.find_measures``' ``sum_arr``); every proxy
runs on a copy of the network in training mode (BatchNorm on batch statistics), the loss the mean
cross-entropy of the minibatch:

- ``grad_norm``: Σ_layers ‖∂L/∂θ‖₂ (``grad_norm.py``);
- ``snip``: Σ |θ ⊙ ∂L/∂θ| (``snip.py``, the mask's gradient);
- ``grasp``: −Σ θ ⊙ (H g), g = ∂L/∂θ on the same batch, H the Hessian over those weights, T = 1, one
  iteration (``grasp.py``);
- ``fisher``: per output channel of each layer, 0.5 · mean over the batch of (Σ_spatial a · ∂L/∂a)²,
  a the layer's output (bias included); each channel's value counted once per weight of its filter
  (``fisher.py`` lines 63-105: the fan-in factor);
- ``jacob_cov``: J = ∂(Σ outputs)/∂x, one row per image; −Σ_i [ln(v_i + 1e-5) + 1/(v_i + 1e-5)] over
  the eigenvalues v of corrcoef(J) (``jacob_cov.py``; NaN where the correlation is undefined);
- ``synflow``: the network without BatchNorm, every parameter and buffer made |·|, float64, input
  ones(1, C, H, W): Σ |θ ⊙ ∂R/∂θ| with R = Σ outputs (``synflow.py``, bn=False);
- ``params`` (millions) and ``flops`` (millions of multiply-adds of one image): the cost columns.

Departures, on purpose: ``jacob_cov`` takes the symmetric eigensolver (theirs ``np.linalg.eig``, the
same eigenvalues up to rounding); ``synflow`` removes every BatchNorm (theirs keeps the four of
NAS-Bench-201's reduction blocks, ``nasbench2_ops.py`` lines 79-80, which their copy rebuilds with BN);
each candidate's weights are drawn from its own seeded stream (theirs seeds once for the whole list), so
a candidate's score does not depend on what was scored before it.
"""
from __future__ import annotations

import copy
import math
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .registry import Registry

#: Proxy functions by name: f(net, inputs, targets) -> float.
PROXIES: Registry = Registry("zero-cost proxy")
JACOB_K = 1e-5


def scored_layers(net: nn.Module) -> list[nn.Module]:
    """The layers whose weights the proxies count: every Conv2d and Linear, in module order."""
    return [m for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def _loss_grads(net: nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(θ, ∂L/∂θ) per scored layer (a layer that did not run: a zero gradient)."""
    weights = [m.weight for m in scored_layers(net)]
    loss = F.cross_entropy(_logits(net(inputs)), targets)
    grads = torch.autograd.grad(loss, weights, allow_unused=True)
    return [(w.detach(), torch.zeros_like(w) if g is None else g) for w, g in zip(weights, grads)]


def _logits(out: Any) -> torch.Tensor:
    return out[0] if isinstance(out, (tuple, list)) else out


@PROXIES.register("grad_norm")
def grad_norm(net: nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> float:
    return float(sum(g.norm() for _, g in _loss_grads(net, inputs, targets)))


@PROXIES.register("snip")
def snip(net: nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> float:
    return float(sum((w * g).abs().sum() for w, g in _loss_grads(net, inputs, targets)))


@PROXIES.register("grasp")
def grasp(net: nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> float:
    weights = [m.weight for m in scored_layers(net)]
    g = torch.autograd.grad(F.cross_entropy(_logits(net(inputs)), targets), weights, allow_unused=True)
    g = [torch.zeros_like(w) if x is None else x.detach() for w, x in zip(weights, g)]
    grad_f = torch.autograd.grad(F.cross_entropy(_logits(net(inputs)), targets), weights, allow_unused=True,
                                 create_graph=True)
    z = sum((a * b).sum() for a, b in zip(g, grad_f) if a is not None and b is not None and b.requires_grad)
    if not torch.is_tensor(z) or not z.requires_grad:
        return 0.0
    hg = torch.autograd.grad(z, weights, allow_unused=True)
    return float(-sum((w.detach() * h).sum() for w, h in zip(weights, hg) if h is not None))


@PROXIES.register("fisher")
def fisher(net: nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> float:
    acts: list[tuple[nn.Module, torch.Tensor]] = []

    def keep(module: nn.Module, _: Any, out: torch.Tensor) -> None:
        out.retain_grad()
        acts.append((module, out))

    handles = [m.register_forward_hook(keep) for m in scored_layers(net)]
    try:
        F.cross_entropy(_logits(net(inputs)), targets).backward()
    finally:
        for h in handles:
            h.remove()
    total = 0.0
    for module, a in acts:
        if a.grad is None:
            continue
        a, grad = a.detach(), a.grad.detach()
        per = (a * grad).sum(dim=tuple(range(2, a.dim()))) if a.dim() > 2 else a * grad  # (N, channels)
        channel = 0.5 * per.pow(2).mean(0)
        fan_in = module.weight[0].numel()
        total += float(channel.abs().sum()) * fan_in
    return total


@PROXIES.register("jacob_cov")
def jacob_cov(net: nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> float:
    x = inputs.detach().clone().requires_grad_(True)
    y = _logits(net(x))
    (jac,) = torch.autograd.grad(y, x, torch.ones_like(y))
    jac = jac.reshape(jac.shape[0], -1).double()
    try:
        corr = torch.corrcoef(jac)
        if not torch.isfinite(corr).all():
            return math.nan
        v = torch.linalg.eigvalsh(corr)
        score = -float(torch.sum(torch.log(v + JACOB_K) + 1.0 / (v + JACOB_K)))
    except RuntimeError:
        return math.nan
    return score if math.isfinite(score) else math.nan


def without_batchnorm(net: nn.Module) -> nn.Module:
    """``net`` with every BatchNorm replaced by the identity (in place)."""
    for name, child in list(net.named_children()):
        if isinstance(child, nn.modules.batchnorm._BatchNorm):
            setattr(net, name, nn.Identity())
        else:
            without_batchnorm(child)
    return net


@PROXIES.register("synflow")
def synflow(net: nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> float:
    net = without_batchnorm(net).double()
    with torch.no_grad():
        for t in net.state_dict().values():
            if t.is_floating_point():
                t.abs_()
    weights = [m.weight for m in scored_layers(net)]
    out = _logits(net(torch.ones((1, *inputs.shape[1:]), dtype=torch.float64, device=inputs.device)))
    grads = torch.autograd.grad(out.sum(), weights, allow_unused=True)
    return float(sum((w.detach() * g).abs().sum() for w, g in zip(weights, grads) if g is not None))


@PROXIES.register("params")
def params(net: nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> float:
    return sum(p.numel() for p in net.parameters()) / 1e6


@PROXIES.register("flops")
def flops(net: nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> float:
    from torch.utils.flop_counter import FlopCounterMode
    net.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        net(inputs[:1])
    return counter.get_total_flops() / 2 / 1e6  # multiply-adds


#: The zero-cost paper's proxies, then the cost columns.
ALL_PROXIES = ("grad_norm", "snip", "grasp", "fisher", "jacob_cov", "synflow", "params", "flops")


def score(build: Callable[[], nn.Module], inputs: torch.Tensor, targets: torch.Tensor,
          names: Sequence[str] = ALL_PROXIES, seed: int = 0) -> dict[str, float]:
    """Every proxy of ``names`` for the network ``build()`` makes (its weights drawn from ``seed``),
    each on its own copy in training mode."""
    for name in names:
        PROXIES.get(name)  # an unknown name fails before any work
    with torch.random.fork_rng(devices=[]):  # the caller's random stream is left as it was
        torch.manual_seed(seed)
        net = build().to(inputs.device)
    scores = {}
    for name in names:
        copy_ = copy.deepcopy(net).train()
        scores[name] = PROXIES.get(name)(copy_, inputs, targets)
    return scores
