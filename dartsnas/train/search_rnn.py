"""The DARTS search loop for recurrent cells (paper, section 3.1.2; the reference search settings).

Each step takes one α step on a window of the validation stream (its hidden state carried from
window to window through the architect), then one SGD step of the weights on a training window
of random length (AWD-LSTM: 35 most of the time, 17.5 sometimes, jittered), with the learning rate
scaled by the window length and temporal activation regularisation (β) on the cell's outputs.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F

from ..architect import Architect, requires_grad_off
from ..data.text import Corpus, get_window
from ..distributed import Distributed
from ..errors import ConfigError
from ..genotype import RecurrentGenotype
from ..ops import RNN_DARTS_OPS
from ..spaces import RecurrentSearchModel, RecurrentSearchSpaceConfig
from .checkpoint import GENOTYPE, METRICS, MetricsLog, tensors_to_lists
from .common import (ClipMeter, CurvatureOptions, RunOptions, Run, config_from_dict, rng_state, seed_everything,
                     validate_bilevel)
from .progress import Progress

KIND = "search-rnn"


@dataclass
class RNNSearchConfig(RunOptions, CurvatureOptions):
    """A recurrent search; defaults are the reference search on Penn Treebank."""

    data_dir: str | None = None
    train_split: str = "train"
    val_split: str = "valid"
    emsize: int = 300
    nhid: int = 300
    nodes: int = 8
    ops: tuple[str, ...] = field(default_factory=lambda: RNN_DARTS_OPS)
    epochs: int = 50
    batch_size: int = 256
    eval_batch_size: int = 10
    bptt: int = 35
    max_seq_len_delta: int = 20
    lr: float = 20.0
    weight_decay: float = 5e-7
    grad_clip: float = 0.25
    tar: float = 1e-3            # β: temporal activation regularisation
    ar: float = 0.0              # α of AWD-LSTM's activation regularisation (off in the search)
    dropout: float = 0.75
    dropout_h: float = 0.25
    dropout_x: float = 0.75
    dropout_i: float = 0.2
    dropout_e: float = 0.0
    arch_lr: float = 3e-3
    arch_weight_decay: float = 1e-3
    order: str = "first"
    fd_step: float = 0.01
    fd_scheme: str = "central"   # central (the paper's) or forward: one pass fewer
    seed: int = 0
    device: str = "auto"
    steps_per_epoch: int | None = None
    compile: bool = False        # torch.compile of the cell's time step

    RESUMABLE_CHANGES = ("epochs", "device", "data_dir", "compile")

    def validate(self) -> None:
        for name in ("emsize", "nhid", "nodes", "epochs", "batch_size", "eval_batch_size", "bptt"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        for name in ("lr", "arch_lr", "fd_step"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"--{name.replace('_', '-')} must be > 0, got {getattr(self, name)}")
        validate_bilevel(self)
        self.validate_curvature()

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["ops"] = list(self.ops)
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "RNNSearchConfig":
        data = dict(data)
        if "ops" in data:
            data["ops"] = tuple(data["ops"])
        return config_from_dict(cls, data)


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
            log_prob, hidden, _ = model(x, hidden)
            sums[0] += F.nll_loss(log_prob, y, reduction="sum").double()
            sums[1] += y.numel()
    model.train(was_training)
    if dist is not None:
        sums = dist.sum(sums)
    return (sums[0] / sums[1]).item()


def tar_ar_penalty(raw: torch.Tensor, dropped: torch.Tensor | None, tar: float, ar: float) -> torch.Tensor:
    """β·mean((h_t - h_{t-1})²) + α·mean(dropped h²) (Merity et al., 2017)."""
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
    log_prob, new_hidden, raw = model(inputs, hidden)
    nll = F.nll_loss(log_prob, targets)
    return nll + tar_ar_penalty(raw, None, tar, ar), nll, new_hidden


def train_lm_epoch(run: Run, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                   params: list[torch.Tensor], data: torch.Tensor, cfg: Any, lengths: torch.Generator,
                   before_step: Callable[[torch.Tensor, torch.Tensor, torch.Tensor, int, float], None] | None = None,
                   frozen: list[torch.Tensor] | None = None,
                   carried: dict[str, torch.Tensor] | None = None,
                   net: torch.nn.Module | None = None) -> dict[str, float]:
    """One pass over a batchified stream in random-length windows: SGD on NLL + TAR (+ AR).

    The learning rate of each step is scaled by its window length (AWD-LSTM). ``before_step``
    (the architecture step of a search) runs first on each window; ``frozen`` tensors (α) get no
    gradient from the weight step; ``carried`` holds the caller's tensors that mid-epoch
    checkpoints must keep (the search's validation-stream state). ``net`` runs the weight step's
    forward (the model in DistributedDataParallel; ``data`` is then this rank's rows).
    """
    model.train()
    hidden = model.init_hidden(data.shape[0])
    n = data.shape[1]
    approx = max(1, (n - 2) // cfg.bptt)
    cap = cfg.steps_per_epoch or approx
    bar = Progress(min(cap, approx), f"epoch {run.epoch + 1}/{cfg.epochs}", unit="tok", enabled=not run.quiet)
    group = optimizer.param_groups[0]
    # The NLL sum stays on the device: reading it back each step would stall a GPU.
    total = torch.zeros((), dtype=torch.float64, device=data.device)
    tokens, step, pos = 0, 0, 0
    carried = carried if carried is not None else {}
    check = run.checks_every_step
    clips = ClipMeter(cfg.grad_clip, data.device)
    start = run.take_in_epoch()
    if start is not None:
        step, pos, tokens = int(start["step"]), int(start["pos"]), int(start["tokens"])
        total.fill_(float(start["total"]))
        clips.load_state_dict(start.get("clip"))
        hidden = start["hidden"].to(hidden.device)
        carried.update({k: v.to(hidden.device) for k, v in start["carried"].items()})
    while pos < n - 2 and step < cap:
        seq_len = window_length(cfg.bptt, cfg.max_seq_len_delta, lengths)
        group["lr"] = cfg.lr * seq_len / cfg.bptt
        x, y = get_window(data, pos, seq_len)
        hidden = hidden.detach()
        if before_step is not None:
            before_step(x, y, hidden, pos, group["lr"])
            if check:
                run.check_arch_finite(step + 1, frozen or [])
        with requires_grad_off(frozen or []):
            loss, nll, new_hidden = lm_weight_loss(net or model, x, y, hidden, cfg.tar, cfg.ar)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        if not check or run.all_finite(loss, grad_norm):
            optimizer.step()
            clips.update(grad_norm)
            hidden = new_hidden
            total += nll.detach().double() * y.numel()
            tokens += y.numel()
        else:
            run.bad_step(step + 1)  # raises unless --skip-nonfinite allows one more; the state is not carried on
        group["lr"] = cfg.lr
        step += 1
        pos += seq_len
        bar.update(y.numel(), loss=nll.detach())
        run.step_done(step, lambda: {"pos": pos, "total": float(total), "tokens": tokens, "hidden": hidden.detach().cpu(),
                                     "carried": {k: v.detach().cpu() for k, v in carried.items()},
                                     "clip": clips.state_dict()})
    bar.close()
    sums = run.dist.sum(torch.stack([total, total.new_tensor(float(tokens))])).tolist()
    train_loss = run.check_epoch_loss(sums[0] / max(sums[1], 1.0), step)
    tokens = int(sums[1])
    return {"train_loss": train_loss, "train_ppl": math.exp(min(train_loss, 50)), "steps": step,
            **clips.summary(), "tokens_per_s": tokens / max(time.perf_counter() - bar.start, 1e-9)}


class RNNSearch(Run):
    """A resumable recurrent DARTS search writing into ``out_dir``."""

    def __init__(self, config: RNNSearchConfig, out_dir: str | Path, *, resume: bool = False,
                 overwrite: bool = False, quiet: bool = False, log: Callable[[str], None] = print,
                 tensorboard: bool = False) -> None:
        saved = self.open(config, out_dir, KIND, resume=resume, overwrite=overwrite, quiet=quiet, log=log,
                          tensorboard=tensorboard)
        if config.data_dir is None:
            raise ConfigError("--data-dir is required: a folder with train/valid/test text files")
        corpus = Corpus(config.data_dir, splits=(config.train_split, config.val_split))
        self.log(f"corpus {config.data_dir}: vocabulary {corpus.vocab_size:,}, {config.train_split} "
                 f"{corpus[config.train_split].numel():,} tokens, {config.val_split} "
                 f"{corpus[config.val_split].numel():,} tokens")
        rows = config.batch_size * self.dist.world_size  # the global batch's streams
        self.train_data = self.stream_rows(corpus[config.train_split], rows)
        self.val_data = self.stream_rows(corpus[config.val_split], rows)
        self.eval_data = self.stream_rows(corpus[config.val_split], config.eval_batch_size)
        seed_everything(config.seed)
        space = RecurrentSearchSpaceConfig(
            vocab_size=corpus.vocab_size, emsize=config.emsize, nhid=config.nhid, nodes=config.nodes,
            dropout=config.dropout, dropout_h=config.dropout_h, dropout_x=config.dropout_x,
            dropout_i=config.dropout_i, dropout_e=config.dropout_e, ops=tuple(config.ops))
        self.model = self.place_model(RecurrentSearchModel(space))
        if config.compile:
            self.model.cell.compile_step()
        self.w_optimizer = torch.optim.SGD(self.model.weight_parameters(), lr=config.lr,
                                           weight_decay=config.weight_decay)
        # The reference's recurrent architect uses Adam's default betas (the conv one uses 0.5).
        # The virtual step is the weight step: clipped at --grad-clip, on NLL + TAR.
        self.architect = Architect(self.model, self.w_optimizer, order=config.order, lr=config.arch_lr,
                                   betas=(0.9, 0.999), weight_decay=config.arch_weight_decay,
                                   fd_step=config.fd_step, fd_scheme=config.fd_scheme, grad_clip=config.grad_clip,
                                   train_loss=functools.partial(lm_weight_loss, tar=config.tar, ar=config.ar),
                                   sync=self.dist.average)
        self.net = self.dist.wrap(self.model, ignore=self.model.arch_parameters(),
                                  broadcast_buffers=not config.sync_bn)
        self.lengths = torch.Generator().manual_seed(config.seed)
        if config.hessian_every:  # the eigenvalue's fixed validation windows, each from a zero state
            rows = self.val_data.shape[0]
            windows = [get_window(self.val_data, k * config.bptt, config.bptt)
                       for k in range(min(config.hessian_batches, max(1, (self.val_data.shape[1] - 1) // config.bptt)))]
            self.watch_curvature([(x, y, self.model.init_hidden(rows)) for x, y in windows])
        self.epoch = 0
        self.metrics = MetricsLog(self.out / METRICS)
        if saved is not None:
            self.model.load_state_dict(saved["model"])
            self.w_optimizer.load_state_dict(saved["w_optimizer"])
            self.architect.load_state_dict(saved["architect"])
            self.lengths.set_state(saved["lengths"])
            self.epoch = int(saved["epoch"])
            if self.early_stopper is not None and "early_stop" in saved:
                self.early_stopper.load_state_dict(saved["early_stop"])
            self.restore_rng(saved)
            self.resumed()
        else:
            self.start()
        if tensorboard:
            self.use_tensorboard()

    def state_dict(self) -> dict[str, Any]:
        return {"kind": KIND, "config": self.config.to_dict(), "epoch": self.epoch,
                "model": self.model.state_dict(), "w_optimizer": self.w_optimizer.state_dict(),
                "architect": self.architect.state_dict(), "lengths": self.lengths.get_state(),
                "rng": rng_state(), "genotype": self.model.genotype().to_dict(),
                **({"early_stop": self.early_stopper.state_dict()} if self.early_stopper is not None else {})}

    def train_epoch(self) -> dict[str, float]:
        """Alternate α steps on the validation stream (its state carried) and weight steps."""
        cfg = self.config
        state = {"val": self.model.init_hidden(cfg.batch_size)}

        def alpha_step(x: torch.Tensor, y: torch.Tensor, hidden: torch.Tensor, pos: int, lr: float) -> None:
            xv, yv = get_window(self.val_data, pos % (self.val_data.shape[1] - 1), cfg.bptt)
            self.architect.step((x, y, hidden), (xv, yv, state["val"].detach()), lr)
            state["val"] = self.architect.val_extra.detach()

        return train_lm_epoch(self, self.model, self.w_optimizer, self.model.weight_parameters(), self.train_data,
                              cfg, self.lengths, before_step=alpha_step, frozen=self.model.arch_parameters(),
                              carried=state, net=self.net)

    def run(self) -> tuple[RecurrentGenotype, list[dict[str, Any]]]:
        cfg = self.config
        self.log(f"search rnn: {cfg.order} order, {cfg.emsize}/{cfg.nhid}, N={cfg.nodes}, batch {cfg.batch_size}, "
                 f"device {self.device}{self.dist.describe()}, out {self.out}")
        while self.epoch < cfg.epochs and not self.stopped_early():
            start = time.perf_counter()
            record: dict[str, Any] = {"epoch": self.epoch + 1, "lr": cfg.lr}
            record.update(self.train_epoch())
            val_loss = evaluate_lm(self.model, self.eval_data, cfg.bptt, self.dist)
            record.update({"val_loss": val_loss, "val_ppl": math.exp(min(val_loss, 50))})
            self.epoch += 1
            genotype = self.model.genotype()
            self.record_curvature(record, genotype.to_dict())
            record.update({"genotype": genotype.to_dict(),
                           "alphas": {"recurrent": tensors_to_lists(self.model.arch_weights())},
                           "seconds": round(time.perf_counter() - start, 3)})
            curvature = f" | λmax {record['hessian_eigenvalue']:.4g}" if "hessian_eigenvalue" in record else ""
            self.end_epoch(record, f"epoch {record['epoch']}/{cfg.epochs} train ppl {record['train_ppl']:.2f} | "
                                   f"val ppl {record['val_ppl']:.2f}{curvature} | {record['seconds']:.1f}s\n"
                                   f"  genotype {genotype.to_json()}")
        genotype = self.model.genotype()
        if self.stopped_early():
            self.log(self.early_stopper.reason())
            genotype = RecurrentGenotype.from_dict(self.early_stopper.genotypes[self.early_stopper.stopped["epoch"]])
        self.write_text(GENOTYPE, genotype.to_json() + "\n")
        return genotype, self.metrics.read()


def search_rnn(config: RNNSearchConfig, out_dir: str | Path, **kwargs: Any) -> tuple[RecurrentGenotype, list]:
    """Run (or with ``resume=True`` continue) a recurrent search; returns the genotype and metrics."""
    return RNNSearch(config, out_dir, **kwargs).execute()
