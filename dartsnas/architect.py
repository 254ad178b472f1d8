"""The bilevel architecture step (paper, sections 2.2 and 2.3), for any search model.

A search model exposes ``arch_parameters()`` (its α), ``named_weight_parameters()`` (its w) and
``loss(*batch)``. The gradient of the validation loss with respect to α is computed in one of
three ways (``order``):

``first``
    ∇α L_val(w, α): treat w as a constant (DARTS first order).
``second``
    the paper's approximation (equations 6-8), with the virtual step w' the weight step that
    really happens: w' = w − ξ(c·g + λw + μ·buf), g = ∇w L_train(w, α), ξ the current weight
    learning rate, λ, μ, buf the weight optimizer's weight decay, momentum and momentum buffer
    (Nesterov's w' = w − ξ((1 + μ)(c·g + λw) + μ²·buf) scales the implicit term by 1 + μ),
    c = min(1, max_norm / (‖g‖ + 1e-6)) the factor of ``clip_grad_norm_`` (1 without clipping),
    taken as a constant of the step:
    ∇α L_val(w', α) − ξ·c·(∇α L_train(w⁺, α) − ∇α L_train(w⁻, α)) / (2ε),
    w± = w ± ε ∇w' L_val(w', α), ε = fd_step / ||∇w' L_val(w', α)||.
``exact``
    the exact gradient of L_val(w'(α), α) through the same one-step unrolled weights, by double
    backward, c included: clipping makes the step's length independent of α, and ``exact``
    differentiates through that (``differentiate_clip=False`` holds c constant, as ``second``
    does). Same number of passes as ``second``, at the memory cost of a second-order graph.

L_train is the weight step's own objective: ``train_loss(model, *batch)`` when the search loop's
weight step adds regularisers to ``model.loss`` (the recurrent search's TAR), else ``model.loss``.

None of these changes the model: the virtual weights are passed with ``torch.func.functional_call``,
BatchNorm running statistics are frozen during the α step, and the weight optimizer's state is
only read.

Data parallel, each rank holds a shard of the batches; ``sync`` averages gradients over the ranks
(:meth:`dartsnas.distributed.Distributed.average`). The gradient of the training loss that makes the
virtual step (and so its clip factor) and the vector v of the finite difference are averaged where
they are computed (the virtual weights and ε must be the same on every rank, and the global
batch's); everything after is linear in the per-rank losses, so the α gradient is averaged once, at
the end. The result equals one process running the whole global batch.
"""
from __future__ import annotations

import math
from contextlib import nullcontext
from typing import Any, Callable, Protocol, Sequence

import torch
from torch import nn
from torch.func import functional_call

from .autodiff import frozen_batchnorm_stats, requires_grad_off, same_random_draws
from .errors import ConfigError

Batch = Sequence[Any]
ORDERS = ("first", "second", "exact")
#: Averages a list of tensors over data-parallel ranks (``differentiable`` keeps it in the graph).
Sync = Callable[..., list[torch.Tensor]]


def _no_sync(tensors: Sequence[torch.Tensor], differentiable: bool = False) -> list[torch.Tensor]:
    return list(tensors)


class SearchModel(Protocol):
    def arch_parameters(self) -> list[nn.Parameter]: ...
    def named_weight_parameters(self) -> list[tuple[str, nn.Parameter]]: ...
    def loss(self, *batch: Any) -> torch.Tensor: ...


def _split(out: Any) -> tuple[torch.Tensor, Any]:
    """A model's ``loss`` returns the loss, or (loss, extra) such as a recurrent state to carry."""
    if isinstance(out, tuple):
        return out[0], (out[1] if len(out) == 2 else out[1:])
    return out, None


#: The lower level's objective, ``fn(model, *batch)``: the loss the weight step minimises.
TrainLoss = Callable[..., Any]


def _model_loss(model: Any, *batch: Any) -> Any:
    return model.loss(*batch)


class _LossOf(nn.Module):
    """Lets ``functional_call`` evaluate ``fn(model, *batch)`` (``model.loss``, not ``forward``) with
    substituted weights; its whole output with ``full``, else the loss alone."""

    def __init__(self, model: nn.Module, full: bool = False, fn: TrainLoss = _model_loss) -> None:
        super().__init__()
        self.model, self.full, self.fn = model, full, fn

    def forward(self, *batch: Any) -> Any:
        out = self.fn(self.model, *batch)
        return out if self.full else _split(out)[0]


def _loss_at(model: nn.Module, names: Sequence[str], weights: Sequence[torch.Tensor],
             batch: Batch, full: bool = False, fn: TrainLoss = _model_loss) -> Any:
    """``fn(model, *batch)`` (``model.loss``) evaluated with ``weights`` in place of the model's (loss
    only unless ``full``). Tied weights (an embedding shared with the decoder) stay tied."""
    params = {f"model.{n}": w for n, w in zip(names, weights)}
    return functional_call(_LossOf(model, full, fn), params, tuple(batch))


#: ``clip_grad_norm_``'s guard against a zero norm, kept so that the factor is the real step's.
CLIP_EPS = 1e-6


def clip_factor(grads: Sequence[torch.Tensor], max_norm: float | None) -> torch.Tensor | None:
    """c = min(1, max_norm / (‖g‖ + 1e-6)), the factor ``torch.nn.utils.clip_grad_norm_`` scales the
    gradients ``grads`` by (2-norm over all of them, computed as it does); None without clipping.

    A device tensor: reading it would stall a GPU. Differentiable when ``grads`` are (``exact``).
    """
    if max_norm is None or math.isinf(max_norm):
        return None
    total = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(list(grads))))
    return torch.clamp(max_norm / (total + CLIP_EPS), max=1.0)


def first_order_alpha_grad(model: SearchModel, val_batch: Batch) -> tuple[list[torch.Tensor], Any]:
    """∇α L_val(w, α) with w held constant (and the extra output of the validation loss)."""
    alphas = model.arch_parameters()
    weights = [p for _, p in model.named_weight_parameters()]
    with frozen_batchnorm_stats(model), requires_grad_off(weights):
        loss, extra = _split(model.loss(*val_batch))
        return list(torch.autograd.grad(loss, alphas)), extra


def virtual_step(weights: Sequence[torch.Tensor], grads: Sequence[torch.Tensor], xi: float,
                 momentum: Sequence[float], weight_decay: Sequence[float],
                 buffers: Sequence[torch.Tensor | None],
                 clip: torch.Tensor | None = None, nesterov: Sequence[bool] = ()) -> list[torch.Tensor]:
    """The weight step ``clip_grad_norm_`` then ``torch.optim.SGD.step()`` (no dampening) would take:
    w − ξ·b with b = μ·buf + d and d = c·g + λ·w per tensor (b = d at the first step, no buffer yet),
    or w − ξ(d + μ·b) where ``nesterov`` (per tensor), in SGD's order of operations; ``clip`` is c
    (:func:`clip_factor`; None for 1).

    Tensors sharing (λ, μ) are stepped together by foreach kernels (hundreds of small tensors per
    network: one Python loop per op would cost more than the arithmetic).
    """
    if clip is not None:  # (the foreach product with a tensor has no working backward for the tensor)
        grads = [g * clip for g in grads] if clip.requires_grad else torch._foreach_mul(list(grads), clip)
    nesterov = list(nesterov) or [False] * len(weights)
    groups: dict[tuple[float, float, bool, bool], list[int]] = {}
    for i, (mu, wd, buf, nest) in enumerate(zip(momentum, weight_decay, buffers, nesterov)):
        groups.setdefault((float(wd), float(mu), buf is not None, bool(nest) and bool(mu)), []).append(i)
    out: list[torch.Tensor] = [torch.empty(0)] * len(weights)
    for (wd, mu, has_buffer, nest), idx in groups.items():
        w = [weights[i] for i in idx]
        d = [grads[i] for i in idx]
        if wd:
            d = torch._foreach_add(d, w, alpha=wd)
        b = torch._foreach_add(torch._foreach_mul([buffers[i] for i in idx], mu), d) if mu and has_buffer else d
        if nest:
            d = torch._foreach_add(d, b, alpha=mu)
        for i, t in zip(idx, torch._foreach_add(w, d if nest else b, alpha=-xi)):
            out[i] = t
    return out


FD_SCHEMES = ("central", "forward")


def unrolled_weights(model: SearchModel, train_batch: Batch, *, xi: float, momentum: Sequence[float],
                     weight_decay: Sequence[float], buffers: Sequence[torch.Tensor | None],
                     grad_clip: float | None = None, train_loss: TrainLoss = _model_loss,
                     sync: Sync = _no_sync, alpha_grad: bool = False, nesterov: Sequence[bool] = ()
                     ) -> tuple[list[torch.Tensor], torch.Tensor | None, list[torch.Tensor] | None]:
    """w' of the virtual step: the weights after the step the weight optimizer would take on
    ``train_batch`` (gradient averaged over ranks, clipped, then SGD). Returns w' (detached), the
    clip factor (None without clipping) and, with ``alpha_grad``, ∇α L_train(w, α) from the same pass.
    """
    weights = [p for _, p in model.named_weight_parameters()]
    alphas = model.arch_parameters()
    # Without the α gradient, α is a constant of the pass: autograd saves nothing for it.
    with nullcontext() if alpha_grad else requires_grad_off(alphas):
        out = torch.autograd.grad(_LossOf(model, fn=train_loss)(*train_batch), [*weights, *alphas] if alpha_grad else weights)
    grads, g_alpha = sync(out[:len(weights)]), (list(out[len(weights):]) if alpha_grad else None)
    with torch.no_grad():
        clip = clip_factor(grads, grad_clip)
        return (virtual_step([w.detach() for w in weights], grads, xi, momentum, weight_decay, buffers, clip, nesterov),
                clip, g_alpha)


def second_order_alpha_grad(model: SearchModel, train_batch: Batch, val_batch: Batch, *, xi: float,
                            momentum: Sequence[float], weight_decay: Sequence[float],
                            buffers: Sequence[torch.Tensor | None],
                            fd_step: float = 0.01, scheme: str = "central",
                            grad_clip: float | None = None, train_loss: TrainLoss = _model_loss,
                            sync: Sync = _no_sync, nesterov: Sequence[bool] = ()) -> tuple[list[torch.Tensor], Any]:
    """The paper's second-order approximation (equation 8), through the weight step that happens.

    ``scheme="central"`` is the paper's central difference (∇α L_train(w⁺) − ∇α L_train(w⁻)) / 2ε:
    two extra passes. ``"forward"`` is the one-sided (∇α L_train(w⁺) − ∇α L_train(w)) / ε, whose
    ∇α L_train(w) comes almost free with the training gradient the virtual step needs anyway: one
    pass fewer, an O(ε) instead of O(ε²) truncation error. With ``grad_clip`` the virtual step clips
    as the weight step does and the implicit term is scaled by the clip factor c (a constant of
    the step).
    """
    names, weights = zip(*model.named_weight_parameters())
    alphas = model.arch_parameters()
    forward = scheme == "forward"
    with frozen_batchnorm_stats(model):
        with same_random_draws(None) as rng_train:
            # the forward scheme takes the α gradient at w too, for the one-sided difference
            unrolled, clip, g_zero = unrolled_weights(model, train_batch, xi=xi, momentum=momentum,
                                                      weight_decay=weight_decay, buffers=buffers,
                                                      grad_clip=grad_clip, train_loss=train_loss,
                                                      sync=sync, alpha_grad=forward, nesterov=nesterov)
        unrolled = [u.requires_grad_() for u in unrolled]
        val_loss, extra = _split(_loss_at(model, names, unrolled, val_batch, full=True))
        out = torch.autograd.grad(val_loss, [*alphas, *unrolled])
        dalpha, v = list(out[:len(alphas)]), sync(out[len(alphas):])
        del unrolled, out
        with torch.no_grad():
            # Nesterov's step moves w' by ξ(1 + μ)·c·g: its tensors' directions are scaled by 1 + μ
            v = [vi * (1 + mu) if nest else vi for vi, mu, nest in zip(v, momentum, nesterov)] if any(nesterov) else v
            # ε = fd_step / ‖v‖ stays a device tensor: no host-device synchronisation in the step.
            # v = 0 gives εv = 0, so both passes see w and the difference is exactly zero.
            norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(v)))
            eps = fd_step / norm.clamp_min(torch.finfo(norm.dtype).tiny)
            shift = torch._foreach_mul(v, eps)
            del v
            w_plus = torch._foreach_add([w.detach() for w in weights], shift)
        with same_random_draws(rng_train if forward else None) as rng:
            g_plus = torch.autograd.grad(_loss_at(model, names, w_plus, train_batch, fn=train_loss), alphas)
        if forward:
            g_minus, width = g_zero, eps
        else:
            with torch.no_grad():
                torch._foreach_add_(w_plus, shift, alpha=-2.0)  # reuse the w+ storage: w- = w+ - 2εv
            with same_random_draws(rng):
                g_minus = torch.autograd.grad(_loss_at(model, names, w_plus, train_batch, fn=train_loss), alphas)
            width = 2 * eps
        with torch.no_grad():
            scale = xi / width if clip is None else xi * clip / width
            return [da - scale * (gp - gm) for da, gp, gm in zip(dalpha, g_plus, g_minus)], extra


def exact_alpha_grad(model: SearchModel, train_batch: Batch, val_batch: Batch, *, xi: float,
                     momentum: Sequence[float], weight_decay: Sequence[float],
                     buffers: Sequence[torch.Tensor | None], grad_clip: float | None = None,
                     differentiate_clip: bool = True, train_loss: TrainLoss = _model_loss,
                     sync: Sync = _no_sync, nesterov: Sequence[bool] = ()) -> tuple[list[torch.Tensor], Any]:
    """d/dα L_val(w'(α), α) through the one-step unrolled weights (double backward).

    With ``grad_clip``, w' is the clipped step and the clip factor c(α) = max_norm / (‖g(α)‖ + 1e-6)
    is differentiated too (the exact derivative of the step that happens: a clipped step has a fixed
    length, so only the change of its direction counts); ``differentiate_clip=False`` holds c
    constant, which is what ``second`` approximates.
    """
    names, weights = zip(*model.named_weight_parameters())
    alphas = model.arch_parameters()
    with frozen_batchnorm_stats(model):
        grads = torch.autograd.grad(_LossOf(model, fn=train_loss)(*train_batch), weights, create_graph=True)
        grads = sync(grads, differentiable=True)
        clip = clip_factor(grads, grad_clip)
        if clip is not None and not differentiate_clip:
            clip = clip.detach()
        detached = [w.detach() for w in weights]
        unrolled = virtual_step(detached, grads, xi, momentum, weight_decay, buffers, clip, nesterov)
        val_loss, extra = _split(_loss_at(model, names, unrolled, val_batch, full=True))
        return list(torch.autograd.grad(val_loss, alphas)), extra


class Architect:
    """Updates α with Adam on the validation split (the upper level of the bilevel problem).

    The virtual step of ``second`` and ``exact`` is the step ``w_optimizer`` takes: SGD's learning
    rate (``xi``), momentum and weight decay are read from it; ``grad_clip`` must be the max norm
    the weight step passes to ``clip_grad_norm_`` over the model's weights (None: no clipping), and
    ``train_loss(model, *batch)`` the weight step's objective when it is not ``model.loss``;
    ``arch_grad_clip`` clips α's gradient norm before its Adam step.
    """

    def __init__(self, model: nn.Module, w_optimizer: torch.optim.Optimizer, *, order: str = "first",
                 lr: float = 3e-4, betas: tuple[float, float] = (0.5, 0.999),
                 weight_decay: float = 1e-3, fd_step: float = 0.01, fd_scheme: str = "central",
                 grad_clip: float | None = None, train_loss: TrainLoss | None = None,
                 sync: Sync | None = None, arch_grad_clip: float | None = None) -> None:
        if order not in ORDERS:
            raise ConfigError(f"order must be one of {', '.join(ORDERS)}, got {order!r}")
        if fd_scheme not in FD_SCHEMES:
            raise ConfigError(f"fd_scheme must be one of {', '.join(FD_SCHEMES)}, got {fd_scheme!r}")
        if fd_step <= 0:
            raise ConfigError(f"fd_step must be > 0, got {fd_step}")
        if grad_clip is not None and not grad_clip > 0:
            raise ConfigError(f"grad_clip must be > 0 or None, got {grad_clip}")
        self.model = model
        self.w_optimizer = w_optimizer
        self.order = order
        #: Terms of α's objective besides the validation loss, each a differentiable function of α alone
        #: (the same on every rank): a method's regulariser, a cost budget's penalty.
        self.terms: list[Callable[[], torch.Tensor]] = []
        self.fd_step, self.fd_scheme = fd_step, fd_scheme
        self.grad_clip = grad_clip
        self.arch_grad_clip = arch_grad_clip
        self.train_loss = train_loss or _model_loss
        self.sync = sync or _no_sync
        self.optimizer = torch.optim.Adam(model.arch_parameters(), lr=lr, betas=betas,
                                          weight_decay=weight_decay)
        self.val_extra: Any = None

    def _weight_step_terms(self) -> dict[str, Any]:
        """What the virtual step needs of the weight step: per weight tensor the SGD momentum, weight
        decay, momentum buffer and Nesterov flag of w_optimizer; the clip norm and the training objective."""
        group_of = {}
        for group in self.w_optimizer.param_groups:
            for p in group["params"]:
                group_of[id(p)] = group
        terms: dict[str, Any] = {"momentum": [], "weight_decay": [], "buffers": [], "nesterov": [],
                                 "grad_clip": self.grad_clip, "train_loss": self.train_loss}
        for _, p in self.model.named_weight_parameters():
            group = group_of.get(id(p), {})
            terms["momentum"].append(group.get("momentum", 0.0))
            terms["weight_decay"].append(group.get("weight_decay", 0.0))
            terms["nesterov"].append(group.get("nesterov", False))
            terms["buffers"].append(self.w_optimizer.state.get(p, {}).get("momentum_buffer"))
        return terms

    def virtual_weights(self, train_batch: Batch, xi: float) -> list[torch.Tensor]:
        """The weights after the step ``w_optimizer`` would take on ``train_batch`` at learning rate
        ``xi`` (clipped as configured), in ``named_weight_parameters()`` order; the model is unchanged."""
        with frozen_batchnorm_stats(self.model):
            return unrolled_weights(self.model, train_batch, xi=xi, sync=self.sync, **self._weight_step_terms())[0]

    def alpha_grad(self, train_batch: Batch, val_batch: Batch, xi: float) -> list[torch.Tensor]:
        """The α gradient of the configured order; ``xi`` is the current weight learning rate.

        Whatever the model's ``loss`` returns besides the loss on ``val_batch`` (a recurrent state,
        say) is kept in :attr:`val_extra`. Data parallel, the gradient is the global batch's.
        """
        if self.order == "first":
            grads, self.val_extra = first_order_alpha_grad(self.model, val_batch)
        elif self.order == "second":
            grads, self.val_extra = second_order_alpha_grad(self.model, train_batch, val_batch, xi=xi,
                                                            fd_step=self.fd_step, scheme=self.fd_scheme,
                                                            sync=self.sync,
                                                            **self._weight_step_terms())
        else:
            grads, self.val_extra = exact_alpha_grad(self.model, train_batch, val_batch, xi=xi, sync=self.sync,
                                                     **self._weight_step_terms())
        return self.sync([g.detach() for g in grads])

    def step(self, train_batch: Batch, val_batch: Batch, xi: float) -> list[torch.Tensor]:
        """One Adam step on α: the gradient of the configured order, plus those of the :attr:`terms`
        (functions of α alone, such as a cost penalty), each added in turn."""
        grads = self.alpha_grad(train_batch, val_batch, xi)
        params = self.model.arch_parameters()
        for term in self.terms:
            extra = torch.autograd.grad(term(), params, allow_unused=True)
            grads = [g if e is None else g + e.to(g.dtype) for g, e in zip(grads, extra)]
        for p, g in zip(params, grads):
            p.grad = g
        if self.arch_grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(params, self.arch_grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return grads

    def state_dict(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
