"""The bilevel search every search command runs (paper, Algorithm 1): one α step on a validation
batch (:class:`~dartsnas.architect.Architect`, with the terms its methods add to α's objective), then
one SGD step of the weights on a training batch. :class:`BilevelSearch` assembles it from a search
model (a space's network, a user model) and the methods a config selects (``methods/``); the conv,
recurrent and own-model searches differ only in their data and their epochs."""
from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn.functional as F

from ..architect import Architect, TrainLoss
from ..autodiff import requires_grad_off
from ..methods import SearchMethod, methods_of
from .hooks import CurvatureWatch, watch_curvature
from .loop import Run


def search_step(model: torch.nn.Module, architect: Architect, w_optimizer: torch.optim.Optimizer,
                train_batch: tuple[torch.Tensor, torch.Tensor], val_batch: tuple[torch.Tensor, torch.Tensor],
                lr: float, grad_clip: float, finite: Callable[..., bool] | None = None,
                update_alpha: bool = True, net: torch.nn.Module | None = None,
                loss_fn: Callable[[Any, Any], torch.Tensor] = F.cross_entropy,
                perturb: Callable[[], Any] | None = None, weights_first: bool = False
                ) -> tuple[torch.Tensor, Any, torch.Tensor, bool]:
    """One step of Algorithm 1: an α step on ``val_batch``, then a w step on ``train_batch`` (with
    ``weights_first``, GDAS's order: the w step, then the α step on the updated weights).

    Returns the training loss, outputs (logits), (pre-clipping) weight-gradient norm and whether w
    was updated, without syncing unless ``finite`` is given: then the weights are updated only if
    ``finite(loss, grad_norm)``. ``update_alpha=False`` is a warm-up (weights only).
    ``net`` runs the weight step's forward (the model in DistributedDataParallel), else ``model``;
    ``loss_fn(outputs, targets)`` is the weight step's loss (a user model's, in a model search);
    ``perturb()`` gives the mixing weights the weight step sees instead of softmax(α) (SDARTS-RS).
    """
    if update_alpha and not weights_first:
        architect.step(train_batch, val_batch, lr)
    x, y = train_batch
    if perturb is not None:
        model.mixing_override = perturb()
    try:
        with requires_grad_off(model.arch_parameters()):
            logits = (net or model)(x)
            loss = loss_fn(logits, y)
            w_optimizer.zero_grad(set_to_none=True)
            loss.backward()
    finally:
        if perturb is not None:
            model.mixing_override = None
    params = [p for group in w_optimizer.param_groups for p in group["params"]]
    grad_norm = torch.nn.utils.clip_grad_norm_(params, grad_clip)
    ok = finite is None or finite(loss, grad_norm)
    if ok:
        w_optimizer.step()
    if update_alpha and weights_first:
        architect.step(train_batch, val_batch, lr)
    return loss.detach(), logits.detach(), grad_norm, ok


class BilevelSearch(Run):
    """A search run: its methods (hooks of the run), the weight optimiser and the architect of its
    search model, the data-parallel wrap, the α finiteness check, DARTS-ES's genotype at the end."""

    methods: list[SearchMethod]
    curvature: CurvatureWatch

    @property
    def weights_first(self) -> bool:
        """Whether a selected method updates w before α in a step (GDAS)."""
        return any(m.weights_first for m in self.methods)

    def select_methods(self) -> None:
        """The methods the config selects, hooked into the run's epochs."""
        self.methods = methods_of(self.config)
        self.hooks += self.methods

    def total_epochs(self) -> int:
        return self.config.epochs + sum(m.extra_epochs(self) for m in self.methods)

    def method(self, name: str) -> SearchMethod | None:
        """The selected method registered as ``name``, if any."""
        return next((m for m in self.methods if m.name == name), None)

    def bilevel(self, model: torch.nn.Module, *, momentum: float = 0.0, nesterov: bool = False,
                train_loss: TrainLoss | None = None) -> None:
        """``model``'s weight optimiser (SGD) and architect (Adam on α, the order and virtual step of the
        config), then each method attached to them."""
        cfg = self.config
        self.model = model
        self.w_optimizer = torch.optim.SGD(model.weight_parameters(), lr=cfg.lr, momentum=momentum,
                                           weight_decay=cfg.weight_decay, nesterov=nesterov)
        self.architect = Architect(model, self.w_optimizer, order=cfg.order, lr=cfg.arch_lr,
                                   betas=tuple(cfg.arch_betas), weight_decay=cfg.arch_weight_decay,
                                   fd_step=cfg.fd_step, fd_scheme=cfg.fd_scheme, grad_clip=cfg.grad_clip,
                                   train_loss=train_loss, sync=self.dist.average,
                                   arch_grad_clip=cfg.arch_grad_clip)
        for method in self.methods:
            method.attach(self)

    def wrap(self) -> None:
        """The weight step's forward runs in DDP (gradients averaged in buckets during backward); α is
        left to the architect. With SyncBatchNorm the statistics already agree across ranks; a method
        that leaves weights without gradients (GDAS) makes DDP look for them."""
        self.net = self.dist.wrap(self.model, ignore=self.model.arch_parameters(),
                                  broadcast_buffers=not self.config.sync_bn,
                                  find_unused=any(m.unused_parameters for m in self.methods))

    def watch(self, batches: list, genotype: Callable[[], dict[str, Any]]) -> None:
        """The curvature watch (inert without --hessian-every) over fixed validation ``batches``."""
        self.curvature = watch_curvature(self.config, self.model, batches, genotype, self.dist)
        self.hooks.append(self.curvature)

    def alpha_moves(self) -> bool:
        """Whether this epoch takes α steps: the last selected method that decides (P-DARTS's stage
        warm-up over DARTS's --arch-start-epoch)."""
        decisions = [d for d in (m.alpha_moves(self) for m in self.methods) if d is not None]
        return decisions[-1] if decisions else True

    def perturbation(self) -> Callable[[], Any] | None:
        """The weight steps' mixing weights instead of softmax(α), where a method perturbs them."""
        return next((p for p in (m.perturb(self) for m in self.methods) if p is not None), None)

    def check_arch_finite(self, step: int, arch: list[torch.Tensor]) -> None:
        """After an α step: non-finite α cannot be skipped, so the run stops."""
        if not all(bool(torch.isfinite(a).all()) for a in arch):
            self.bad_step(step, "architecture weights α")

    def kept_genotype(self, genotype: Any) -> Any:
        """The run's genotype: ``genotype``, or the epoch's DARTS-ES named when it stopped the search."""
        if self.curvature.stops():
            self.log(self.curvature.reason())
            return type(genotype).from_dict(self.curvature.kept_genotype())
        return genotype

    def bilevel_state(self) -> dict[str, Any]:
        """Model and α, both optimisers, and what the methods keep."""
        state = {"model": self.model.state_dict(), "w_optimizer": self.w_optimizer.state_dict(),
                 "architect": self.architect.state_dict()}
        for method in self.methods:
            state.update(method.run_state(self))
        return state

    def load_bilevel_state(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.w_optimizer.load_state_dict(state["w_optimizer"])
        self.architect.load_state_dict(state["architect"])
        for method in self.methods:
            method.load_run_state(state)


def loaders_state(run: Any) -> dict[str, Any]:
    """The positions of a search's two batch streams (w's and α's)."""
    return {"loaders": {"train": run.train_loader.state_dict(), "val": run.val_loader.state_dict()}}


def load_loaders_state(run: Any, state: dict[str, Any]) -> None:
    run.train_loader.load_state_dict(state["loaders"]["train"])
    run.val_loader.load_state_dict(state["loaders"]["val"])
