"""Language-model maths shared by the recurrent search and the final recurrent training: AWD-LSTM's
random window lengths, the weight step's objective (NLL + TAR, + AR), one training pass over a stream
and the evaluation of a stream. Neither loop imports the other.
"""
from __future__ import annotations

import math
from typing import Any, Callable

import torch
import torch.nn.functional as F

from ..autodiff import requires_grad_off
from ..data.text import batchify, get_window, rank_rows
from ..distributed import Distributed
from .meters import ClipMeter



def stream_rows(run: Any, tokens: torch.Tensor, rows: int) -> torch.Tensor:
    """``run``'s rank's rows of ``tokens`` batchified into ``rows`` streams, on its device."""
    return rank_rows(batchify(tokens, rows), run.dist.rank, run.dist.world_size).to(run.device)

def window_length(bptt: int, max_delta: int, generator: torch.Generator) -> int:
    """AWD-LSTM's random BPTT length: around bptt (bptt/2 with probability 0.05), at least 5."""
    base = bptt if torch.rand((), generator=generator).item() < 0.95 else bptt / 2
    length = int(base + 5 * torch.randn((), generator=generator).item())
    return min(max(5, length), bptt + max_delta)


@torch.no_grad()
def evaluate_lm(model: torch.nn.Module, data: torch.Tensor, bptt: int, dist: Distributed | None = None) -> float:
    """Mean next-token NLL over a batchified stream [B, N], the state carried across windows
    (data parallel: over every rank's rows, ``data`` being this rank's)."""
    was_training = model.training
    model.eval()
    sums = torch.zeros(2, dtype=torch.float64, device=data.device)  # NLL, tokens
    if data.shape[0] > 0:
        hidden = model.init_hidden(data.shape[0])
        for start in range(0, data.shape[1] - 1, bptt):
            x, y = get_window(data, start, bptt)
            log_prob, hidden, _, _ = model(x, hidden)
            sums[0] += F.nll_loss(log_prob, y, reduction="sum").double()
            sums[1] += y.numel()
    model.train(was_training)
    if dist is not None:
        sums = dist.sum(sums)
    return (sums[0] / sums[1]).item()


def tar_ar_penalty(raw: torch.Tensor, dropped: torch.Tensor | None, tar: float, ar: float) -> torch.Tensor:
    """β·mean((h_t - h_{t-1})²) + α·mean(dropped h²) (Merity et al., 2017; DARTS's rnn/train.py):
    TAR on the cell's outputs, AR on them after the output dropout."""
    penalty = tar * (raw[1:] - raw[:-1]).pow(2).mean() if tar else raw.new_zeros(())
    if ar and dropped is not None:
        penalty = penalty + ar * dropped.pow(2).mean()
    return penalty


def lm_weight_loss(model: torch.nn.Module, inputs: torch.Tensor, targets: torch.Tensor, hidden: torch.Tensor,
                   tar: float, ar: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The weight step's objective NLL + TAR (+ AR) on a window; returns it, the NLL and the new state.

    One function for the weight step and the architect's virtual step, so that the second-order
    hypergradient differentiates the objective the weights really follow.
    """
    log_prob, new_hidden, raw, dropped = model(inputs, hidden)
    nll = F.nll_loss(log_prob, targets)
    return nll + tar_ar_penalty(raw, dropped, tar, ar), nll, new_hidden


class LMEpoch:
    """Where a pass over a stream is (position, hidden state, the caller's carried tensors) and what
    it has counted (NLL x tokens, tokens, clipping): a mid-epoch checkpoint keeps all of it."""

    def __init__(self, hidden: torch.Tensor, clips: ClipMeter, carried: dict[str, torch.Tensor]) -> None:
        self.hidden, self.clips, self.carried = hidden, clips, carried
        self.pos, self.tokens = 0, 0
        # The NLL sum stays on the device: reading it back each step would stall a GPU.
        self.total = torch.zeros((), dtype=torch.float64, device=hidden.device)

    def state_dict(self) -> dict[str, Any]:
        return {"pos": self.pos, "total": float(self.total), "tokens": self.tokens, "hidden": self.hidden.detach().cpu(),
                "carried": {k: v.detach().cpu() for k, v in self.carried.items()}, "clip": self.clips.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.pos, self.tokens = int(state["pos"]), int(state["tokens"])
        self.total.fill_(float(state["total"]))
        self.clips.load_state_dict(state.get("clip"))
        self.hidden = state["hidden"].to(self.hidden.device)
        self.carried.update({k: v.to(self.hidden.device) for k, v in state["carried"].items()})


def train_lm_epoch(run: Any, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                   params: list[torch.Tensor], data: torch.Tensor, cfg: Any, lengths: torch.Generator,
                   before_step: Callable[[torch.Tensor, torch.Tensor, torch.Tensor, int, float], None] | None = None,
                   frozen: list[torch.Tensor] | None = None,
                   carried: dict[str, torch.Tensor] | None = None,
                   net: torch.nn.Module | None = None) -> dict[str, float]:
    """One pass over a batchified stream in random-length windows: SGD on NLL + TAR (+ AR), through
    ``run``'s loop (:meth:`~dartsnas.train.loop.Run.run_steps`).

    The learning rate of each step is scaled by its window length (AWD-LSTM). ``before_step``
    (the architecture step of a search) runs first on each window; ``frozen`` tensors (α) get no
    gradient from the weight step; ``carried`` holds the caller's tensors that mid-epoch
    checkpoints must keep (the search's validation-stream state). ``net`` runs the weight step's
    forward (the model in DistributedDataParallel; ``data`` is then this rank's rows).
    """
    model.train()
    n = data.shape[1]
    approx = max(1, (n - 2) // cfg.bptt)
    cap = cfg.steps_per_epoch or approx
    group = optimizer.param_groups[0]
    check = run.checks_every_step
    state = LMEpoch(model.init_hidden(data.shape[0]), ClipMeter(cfg.grad_clip, data.device),
                    carried if carried is not None else {})

    def step(i: int) -> tuple[int, bool, dict[str, Any]]:
        seq_len = window_length(cfg.bptt, cfg.max_seq_len_delta, lengths)
        group["lr"] = cfg.lr * seq_len / cfg.bptt
        x, y = get_window(data, state.pos, seq_len)
        hidden = state.hidden.detach()
        if before_step is not None:
            before_step(x, y, hidden, state.pos, group["lr"])
            if check:
                run.check_arch_finite(i + 1, frozen or [])
        with requires_grad_off(frozen or []):
            loss, nll, new_hidden = lm_weight_loss(net or model, x, y, hidden, cfg.tar, cfg.ar)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        ok = not check or run.all_finite(loss, grad_norm)
        state.hidden = hidden  # a skipped step's state is not carried on
        if ok:
            optimizer.step()
            state.clips.update(grad_norm)
            state.hidden = new_hidden
            state.total += nll.detach().double() * y.numel()
            state.tokens += y.numel()
        group["lr"] = cfg.lr
        state.pos += seq_len
        return y.numel(), ok, {"loss": nll.detach()}

    steps, seconds = run.run_steps(state, step, cap, unit="tok", shown_total=min(cap, approx),
                                   more=lambda: state.pos < n - 2)
    sums = run.dist.sum(torch.stack([state.total, state.total.new_tensor(float(state.tokens))])).tolist()
    train_loss = run.check_epoch_loss(sums[0] / max(sums[1], 1.0), steps)
    return {"train_loss": train_loss, "train_ppl": math.exp(min(train_loss, 50)), "steps": steps,
            **state.clips.summary(), "tokens_per_s": sums[1] / max(seconds, 1e-9)}
