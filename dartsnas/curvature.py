"""Watching a search collapse: the dominant eigenvalue of the validation loss's Hessian in α, and the
early-stopping rule built on it (Zela et al., ICLR 2020, "Understanding and Robustifying
Differentiable Architecture Search": DARTS-ES).

The eigenvalue is computed by Lanczos iteration (full reorthogonalisation) on Hessian-vector products
over a fixed set of validation batches, with the model's weights held fixed: the largest Ritz value of
a few dozen products, exact to rounding once the iteration spans the α space. A product is either
∇α(∇α L_val · v) by double backward (``hvp="autograd"``, exact; it keeps the graph of the gradient,
several times a search step's memory), the same product as the forward-mode derivative of ∇α along v
(``hvp="forward"``, forward-over-reverse: exact, the pass carries tangents instead of keeping the
gradient's graph), or the central difference (∇α L(α + εv) - ∇α L(α - εv)) / 2ε (``hvp="fd"``, the
second-order architect's approximation: two plain backward passes, the memory of one search step; its
error is O(ε²) times the third derivative on smooth networks, and ReLU's kinks add more). BatchNorm uses batch statistics without updating the running ones,
and every product sees the same dropout masks, so the operator is the same from product to product.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
import torch.autograd.forward_ad as fwAD
from torch.func import functional_call

from .architect import _LossOf, _split
from .autodiff import frozen_batchnorm_stats, requires_grad_off, same_random_draws


def _flat(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    return torch.cat([t.reshape(-1) for t in tensors])


#: The methods of a Hessian-vector product (see the module docstring).
HVP_METHODS = ("autograd", "forward", "fd")


def hessian_vector_product(model: Any, batches: Sequence[Sequence[Any]], vector: torch.Tensor,
                           rng: dict[str, Any] | None = None, sync: Any = None, method: str = "autograd",
                           fd_step: float = 0.01) -> torch.Tensor:
    """H v with H = ∇²α of the mean of ``model.loss(*batch)`` over ``batches`` (weights fixed);
    ``vector`` and the result are flat over ``model.arch_parameters()``. ``method`` "fd": the central
    difference of ∇α at α ± εv with ε = ``fd_step`` / ‖v‖. Data parallel, ``sync`` averages the
    product over the ranks' shards of the batches."""
    if method not in HVP_METHODS:
        raise ValueError(f"method must be one of {', '.join(HVP_METHODS)}, got {method!r}")
    alphas = model.arch_parameters()
    weights = [p for _, p in model.named_weight_parameters()]
    chunks = list(vector.split([a.numel() for a in alphas]))
    total = torch.zeros_like(vector)
    with frozen_batchnorm_stats(model), requires_grad_off(weights):
        if method == "fd":
            eps = fd_step / max(float(vector.norm()), 1e-12)
            total = (_alpha_gradient(model, batches, alphas, chunks, eps, rng)
                     - _alpha_gradient(model, batches, alphas, chunks, -eps, rng)) / (2 * eps)
        elif method == "forward":
            for batch in batches:
                with same_random_draws(rng):
                    total += _forward_over_reverse(model, batch, alphas, chunks)
        else:
            for batch in batches:
                with same_random_draws(rng):
                    loss = _split(model.loss(*batch))[0]
                grads = torch.autograd.grad(loss, alphas, create_graph=True)
                dot = sum((g * c.view_as(g)).sum() for g, c in zip(grads, chunks))
                total += _flat(torch.autograd.grad(dot, alphas))
    total /= len(batches)
    return sync([total])[0] if sync is not None else total


def _forward_over_reverse(model: Any, batch: Sequence[Any], alphas: list[torch.Tensor],
                          direction: list[torch.Tensor]) -> torch.Tensor:
    """H v of one batch's loss as the forward-mode derivative of ∇α along v: α enters the pass as dual
    tensors (tangent v), and the backward pass that computes ∇α carries their tangents along. No graph
    of the gradient is kept, unlike double backward."""
    arch = {id(a) for a in alphas}
    names = {id(p): "model." + n for n, p in model.named_parameters() if id(p) in arch}
    primals = [a.detach().requires_grad_() for a in alphas]
    with fwAD.dual_level():
        duals = {names[id(a)]: fwAD.make_dual(p, d.view_as(p)) for a, p, d in zip(alphas, primals, direction)}
        loss = functional_call(_LossOf(model), duals, tuple(batch))
        grads = torch.autograd.grad(loss, primals)
        return _flat([fwAD.unpack_dual(g).tangent for g in grads])


def _alpha_gradient(model: Any, batches: Sequence[Sequence[Any]], alphas: list[torch.Tensor],
                    direction: list[torch.Tensor], eps: float, rng: dict[str, Any] | None) -> torch.Tensor:
    """The summed ∇α of the batches' losses at α + eps * direction (α restored afterwards, exactly:
    the saved values are put back rather than the step subtracted)."""
    saved = [a.detach().clone() for a in alphas]
    with torch.no_grad():
        for a, d in zip(alphas, direction):
            a.add_(d.view_as(a), alpha=eps)
    try:
        total = None
        for batch in batches:
            with same_random_draws(rng):
                loss = _split(model.loss(*batch))[0]
            grad = _flat(torch.autograd.grad(loss, alphas))
            total = grad if total is None else total + grad
        return total
    finally:
        with torch.no_grad():
            for a, s in zip(alphas, saved):
                a.copy_(s)


def dominant_eigenvalue(model: Any, batches: Sequence[Sequence[Any]], *, steps: int = 20, seed: int = 0,
                       sync: Any = None, hvp: str = "autograd", fd_step: float = 0.01) -> float:
    """The largest eigenvalue of ∇²α L_val (RobustDARTS's dominant eigenvalue) by ``steps`` Lanczos
    iterations (at most the size of α) from a seeded start vector; ``hvp`` chooses how each
    Hessian-vector product is computed (see :func:`hessian_vector_product`)."""
    alphas = model.arch_parameters()
    n = sum(a.numel() for a in alphas)
    device, dtype = alphas[0].device, alphas[0].dtype
    with same_random_draws(None) as rng:  # one set of dropout masks for every product
        pass
    try:
        product = lambda v: hessian_vector_product(model, batches, v, rng, sync, hvp, fd_step)  # noqa: E731
        return _lanczos(product, n, steps, seed, device, dtype)
    finally:
        with same_random_draws(rng):  # leave the random stream as it was: watching must not steer the run
            pass


def _lanczos(product: Any, n: int, steps: int, seed: int, device: torch.device, dtype: torch.dtype) -> float:
    q = torch.randn(n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).to(device, dtype)
    basis = [q / q.norm()]
    diagonal, offdiagonal = [], []
    for j in range(min(steps, n)):
        w = product(basis[-1])
        a = torch.dot(w, basis[-1])
        diagonal.append(float(a))
        for _ in range(2):  # full reorthogonalisation, twice: Lanczos loses orthogonality in floating point
            w = w - torch.stack(basis).T @ (torch.stack(basis) @ w)
        b = float(w.norm())
        scale = max(abs(d) for d in diagonal) or 1.0
        if j == min(steps, n) - 1 or b <= 1e-10 * scale:  # the Krylov space is exhausted (or steps used)
            break
        offdiagonal.append(b)
        basis.append(w / b)
    T = torch.diag(torch.tensor(diagonal, dtype=torch.float64))
    if offdiagonal:
        off = torch.tensor(offdiagonal[:len(diagonal) - 1], dtype=torch.float64)
        T += torch.diag(off, 1) + torch.diag(off, -1)
    return float(torch.linalg.eigvalsh(T).max())


@dataclass
class EarlyStopHessian:
    """DARTS-ES as RobustDARTS's code applies it (``EVLocalAvg``): the eigenvalues are averaged over a
    centred ``window`` of evaluations (cut short at the start); once the evaluation ``delta`` steps back
    from the newest averaged one lies at epoch ``start`` or later, the search stops when the newest
    local average exceeds that one by more than ``factor``, and returns the genotype of that earlier
    epoch (before the curvature grew). The rule is not applied at ``last_epoch``: the search ends
    there anyway and keeps its last genotype.

    Epochs count from 1 here and from 0 in RobustDARTS's code: its defaults (window 5, factor 1.3,
    delta 4, ``es_start_epoch`` 10) are window 5, factor 1.3, delta 4, start 11 here.
    """

    window: int = 5
    factor: float = 1.3
    delta: int = 4
    start: int = 11
    last_epoch: int | None = None  # the search's last epoch, where the rule is not applied
    evaluations: list[tuple[int, float]] = field(default_factory=list)  # (epoch, eigenvalue)
    genotypes: dict[int, Any] = field(default_factory=dict)
    stopped: dict[str, Any] | None = None  # {"epoch": named epoch, "at": current epoch, "ratio": r}

    def local_averages(self) -> list[tuple[int, float]]:
        """(epoch, local average) for every evaluation whose centred window reaches its right end."""
        h = self.window // 2
        values = [v for _, v in self.evaluations]
        out = []
        for c in range(len(values) - h):
            part = values[max(0, c - h):c + h + 1]
            out.append((self.evaluations[c][0], sum(part) / len(part)))
        return out

    def update(self, epoch: int, eigenvalue: float, genotype: Any) -> bool:
        """Record an evaluation; returns True when the rule says stop (``stopped`` then says why)."""
        if self.stopped is not None:
            return True
        self.evaluations.append((epoch, float(eigenvalue)))
        self.genotypes[epoch] = genotype
        averages = self.local_averages()
        if epoch == self.last_epoch or len(averages) <= self.delta:
            return False
        (now_epoch, now), (then_epoch, then) = averages[-1], averages[-1 - self.delta]
        if then_epoch < self.start or not math.isfinite(now / then if then else math.inf):
            return False
        ratio = now / then
        if ratio > self.factor:
            self.stopped = {"epoch": then_epoch, "at": epoch, "averaged_epoch": now_epoch, "ratio": round(ratio, 4)}
            return True
        return False

    def reason(self) -> str:
        s = self.stopped
        return (f"DARTS-ES: the local average of the dominant eigenvalue at epoch {s['averaged_epoch']} is "
                f"{s['ratio']:.2f}x the one at epoch {s['epoch']} (> {self.factor}): stopped at epoch {s['at']}, "
                f"genotype of epoch {s['epoch']}")

    def state_dict(self) -> dict[str, Any]:
        return {"evaluations": [list(e) for e in self.evaluations],
                "genotypes": {str(k): v for k, v in self.genotypes.items()}, "stopped": self.stopped}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.evaluations = [(int(e), float(v)) for e, v in state["evaluations"]]
        self.genotypes = {int(k): v for k, v in state["genotypes"].items()}
        self.stopped = state["stopped"]
