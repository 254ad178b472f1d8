"""What an epoch counts (mean loss, accuracy, clipped steps) and the evaluation of a classifier,
accumulated on the device so that a step never waits for the host."""
from __future__ import annotations

import contextlib
from typing import Any

import torch
import torch.nn.functional as F

from ..architect import CLIP_EPS
from ..distributed import Distributed
from ..spaces.base import kept_running_stats


class EpochMeter:
    """Mean loss and accuracy of an epoch, accumulated on the device (no host sync per step).

    Data parallel, each rank counts its own batches (a mid-epoch checkpoint keeps every rank's);
    :meth:`reduce`, on every rank at the epoch's end, makes the totals global.
    """

    def __init__(self, device: torch.device, dist: Distributed | None = None) -> None:
        self.dist = dist or Distributed()
        self.loss_sum = torch.zeros((), device=device)
        self.correct = torch.zeros((), device=device, dtype=torch.long)
        self.seen = 0

    def state_dict(self) -> dict[str, Any]:
        return {"loss_sum": self.loss_sum.cpu(), "correct": self.correct.cpu(), "seen": self.seen}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.loss_sum = state["loss_sum"].to(self.loss_sum.device)
        self.correct = state["correct"].to(self.correct.device)
        self.seen = int(state["seen"])

    def reduce(self) -> None:
        """Replace this rank's counts by the totals over the ranks (every rank, at the epoch's end)."""
        if self.dist.enabled:
            seen = torch.tensor(self.seen, device=self.loss_sum.device)
            self.loss_sum, self.correct = self.dist.sum(self.loss_sum), self.dist.sum(self.correct)
            self.seen = int(self.dist.sum(seen).item())

    def update(self, loss: torch.Tensor, logits: torch.Tensor, targets: torch.Tensor) -> None:
        self.loss_sum += loss.detach() * targets.shape[0]
        self.correct += (logits.detach().argmax(1) == targets).sum()
        self.seen += targets.shape[0]

    @property
    def accuracy(self) -> float:
        return self.correct.item() / max(self.seen, 1)

    @property
    def loss(self) -> float:
        return (self.loss_sum / max(self.seen, 1)).item()


class ClipMeter:
    """How often an epoch's weight steps clipped their gradient (norm above ``max_norm``) and by what
    factor ``clip_grad_norm_`` scaled it when it did, accumulated on the device.

    Data parallel, the norm is the global gradient's (DDP averages before clipping), so every rank
    counts the same steps and nothing needs reducing.
    """

    def __init__(self, max_norm: float, device: torch.device) -> None:
        self.max_norm = max_norm
        self.sums = torch.zeros(2, dtype=torch.float64, device=device)  # clipped steps, sum of their factors
        self.steps = 0

    def update(self, grad_norm: torch.Tensor) -> None:
        factor = torch.clamp(self.max_norm / (grad_norm.detach().double() + CLIP_EPS), max=1.0)
        clipped = (factor < 1).double()
        self.sums += torch.stack([clipped, clipped * factor])
        self.steps += 1

    def state_dict(self) -> dict[str, Any]:
        return {"sums": self.sums.cpu(), "steps": self.steps}

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        if state is not None:  # absent from checkpoints written before clipping was counted
            self.sums = state["sums"].to(self.sums.device)
            self.steps = int(state["steps"])

    def summary(self) -> dict[str, float]:
        """``clip_fraction`` of the steps clipped, ``clip_factor`` the mean factor of those (1.0 if none)."""
        clipped, factors = self.sums.tolist()
        return {"clip_fraction": clipped / max(self.steps, 1),
                "clip_factor": factors / clipped if clipped else 1.0}


@torch.no_grad()
def evaluate(model: torch.nn.Module, loader: Any, dist: Distributed | None = None, *, batch_stats: bool = False,
             batches: int | None = None) -> dict[str, float]:
    """Mean loss, top-1 and top-5 accuracy (fractions in [0, 1]) over one pass of ``loader`` (or its
    first ``batches``; data parallel: each rank's share, totalled over the ranks). ``batch_stats``: in
    training mode, BatchNorm normalising by the batch's statistics (DARTS-PT's measurements), the
    running ones left as they were."""
    was_training = model.training
    model.train(batch_stats)
    dev = loader.device
    loss_sum, top1, top5 = (torch.zeros((), device=dev) for _ in range(3))
    seen = 0
    kept = kept_running_stats(model) if batch_stats else contextlib.nullcontext()
    restart = getattr(loader, "restart", lambda: None) if batches is not None else (lambda: None)
    restart()  # a capped pass reads the first batches, and leaves no pass half read behind it
    with kept:
        seen = _evaluate_pass(model, loader, batches, loss_sum, top1, top5)
    restart()
    model.train(was_training)
    if dist is not None and dist.enabled:
        loss_sum, top1, top5, n = dist.sum(torch.stack([loss_sum, top1, top5, torch.tensor(float(seen), device=dev)]))
        seen = int(n.item())
    return {"loss": (loss_sum / seen).item(), "top1": (top1 / seen).item(), "top5": (top5 / seen).item()}


def _evaluate_pass(model: torch.nn.Module, loader: Any, batches: int | None, loss_sum: torch.Tensor,
                   top1: torch.Tensor, top5: torch.Tensor) -> int:
    seen = 0
    for i, (x, y) in enumerate(loader):
        if batches is not None and i >= batches:
            break
        if y.shape[0] == 0:  # a rank's empty share of a last, short global batch
            continue
        logits = model(x)
        loss_sum += F.cross_entropy(logits.float(), y, reduction="sum")
        hits = logits.topk(min(5, logits.shape[1]), dim=1).indices == y[:, None]
        top1 += hits[:, 0].sum()
        top5 += hits.any(1).sum()
        seen += y.shape[0]
    return seen


class ClassifierEpoch:
    """The epoch state of a classifier's steps: loss and accuracy, and (when given) the clipping."""

    def __init__(self, meter: EpochMeter, clips: ClipMeter | None = None) -> None:
        self.meter, self.clips = meter, clips

    def update(self, loss: torch.Tensor, logits: torch.Tensor, targets: torch.Tensor,
               grad_norm: torch.Tensor | None = None) -> None:
        self.meter.update(loss, logits, targets)
        if self.clips is not None:
            self.clips.update(grad_norm)

    def state_dict(self) -> dict[str, Any]:
        return {"meter": self.meter.state_dict(), **({"clip": self.clips.state_dict()} if self.clips else {})}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.meter.load_state_dict(state["meter"])
        if self.clips is not None:
            self.clips.load_state_dict(state.get("clip"))

    def summary(self, run: Any, steps: int, seconds: float) -> dict[str, Any]:
        """The epoch's totals over every rank (a non-finite mean loss stops the run)."""
        self.meter.reduce()
        loss = run.check_epoch_loss(self.meter.loss, steps)
        return {"train_loss": loss, "train_acc": self.meter.accuracy, "steps": steps,
                **(self.clips.summary() if self.clips is not None else {}),
                "images_per_s": self.meter.seen / max(seconds, 1e-9)}
