"""Pieces every training loop shares: devices, run directories, RNG state, learning-rate schedules."""
from __future__ import annotations

import contextlib
import dataclasses
import gc
import json
import math
import os
import random
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from ..architect import CLIP_EPS, FD_SCHEMES, ORDERS
from ..data.text import batchify, rank_rows
from ..distributed import Distributed, convert_sync_batchnorm
from ..errors import CheckpointError, ConfigError, DartsError, Interrupted
from .checkpoint import CHECKPOINT, GENOTYPE, METRICS, MetricsLog, atomic_write_text, save_checkpoint

#: Without --checkpoint-every, a mid-epoch checkpoint is written after this much work.
CHECKPOINT_SECONDS = 300.0


@dataclass
class RunOptions:
    """Options of every training command: crash safety and reproducibility (may change on resume)."""

    checkpoint_every: int | None = None  # steps between mid-epoch checkpoints [None: every few minutes]
    skip_nonfinite: int = 0              # bad batches (non-finite loss or gradient) skipped before stopping
    deterministic: bool = False          # torch.use_deterministic_algorithms (CUDA: slower kernels)
    sync_bn: bool = False                # data parallel: BatchNorm statistics over the global batch

    ALWAYS_RESUMABLE = ("checkpoint_every", "skip_nonfinite", "deterministic", "sync_bn")

    def validate_run_options(self) -> None:
        if self.checkpoint_every is not None and self.checkpoint_every < 1:
            raise ConfigError(f"--checkpoint-every must be >= 1, got {self.checkpoint_every}")
        if self.skip_nonfinite < 0:
            raise ConfigError(f"--skip-nonfinite must be >= 0, got {self.skip_nonfinite}")


@dataclass
class ImageDataFields:
    """Options of a user's own images (``imagefolder``, ``arrays``, torch Datasets from Python)."""

    image_size: int | None = None        # resize the shorter side to S and centre-crop (mixed sizes need it)
    skip_bad_images: bool = False        # skip unreadable image files (and say how many) instead of stopping
    flip: bool = True                    # random horizontal flips in training (off for text, digits, ...)
    memory_gb: float = 2.0               # decoded images up to this size are held in memory, larger ones streamed
    workers: int = 2                     # decoding processes of streamed images

    def validate_image_data(self) -> None:
        if self.image_size is not None and self.image_size < 1:
            raise ConfigError(f"--image-size must be >= 1, got {self.image_size}")
        if self.memory_gb < 0:
            raise ConfigError(f"--memory-gb must be >= 0, got {self.memory_gb}")
        if self.workers < 0:
            raise ConfigError(f"--workers must be >= 0, got {self.workers}")

    def own_data_options(self, info: dict[str, Any] | None = None) -> Any:
        """The loading options these fields give; ``info`` (a trained model's data) fixes the classes,
        statistics and resize of evaluation and prediction."""
        from ..data import OwnDataOptions
        if info is None:
            return OwnDataOptions(image_size=self.image_size, skip_bad_images=self.skip_bad_images, flip=self.flip,
                                  memory_gb=self.memory_gb)
        return OwnDataOptions(image_size=info["resize"], skip_bad_images=self.skip_bad_images, flip=self.flip,
                              memory_gb=self.memory_gb, stats=(tuple(info["mean"]), tuple(info["std"])),
                              classes=info["classes"])


#: Data fields that may change when a run resumes (they change where images live, not which).
DATA_RESUMABLE = ("data_dir", "memory_gb", "workers", "skip_bad_images")


@dataclass
class CurvatureOptions:
    """Watching the curvature of a search (Zela et al., 2020): the dominant eigenvalue of the α-Hessian
    of the validation loss every ``hessian_every`` epochs (0: never) over ``hessian_batches`` fixed
    validation batches, and DARTS-ES (``early_stop="hessian"``) naming epoch ``es_start`` or later
    (11, counted from 1: RobustDARTS's ``es_start_epoch`` 10 counted from 0)."""

    hessian_every: int = 0
    hessian_batches: int = 2
    hessian_steps: int = 20              # Lanczos iterations (Hessian-vector products) per eigenvalue
    early_stop: str | None = None
    es_start: int = 11

    def validate_curvature(self) -> None:
        if self.hessian_every < 0:
            raise ConfigError(f"--hessian-every must be >= 0, got {self.hessian_every}")
        if self.hessian_batches < 1:
            raise ConfigError(f"--hessian-batches must be >= 1, got {self.hessian_batches}")
        if self.hessian_steps < 1:
            raise ConfigError(f"--hessian-steps must be >= 1, got {self.hessian_steps}")
        if self.early_stop not in (None, "hessian"):
            raise ConfigError(f"--early-stop must be hessian, got {self.early_stop!r}")
        if self.early_stop == "hessian" and self.hessian_every < 1:
            raise ConfigError("--early-stop hessian watches the dominant eigenvalue: give --hessian-every N too")


def cosine_lr(epoch: int, epochs: int, lr: float, lr_min: float) -> float:
    """Cosine annealing from ``lr`` at epoch 0 towards ``lr_min`` (SGDR without restarts).

    Closed form rather than a stateful scheduler, so a resumed run with a changed ``--epochs``
    simply follows the new schedule from the epoch it resumes at.
    """
    return lr_min + (lr - lr_min) * (1 + math.cos(math.pi * epoch / epochs)) / 2


def autocast(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA (no loss scaler needed with bf16); a no-op elsewhere."""
    if enabled and device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {name}: CUDA is not available on this machine")
    return device


DATA_INFO, CLASSES = "data.json", "classes.json"
#: Written first by every run: which command the directory belongs to, before any checkpoint exists.
RUN_MARKER = "run.json"
RUN_FILES = (CHECKPOINT, METRICS, GENOTYPE, "model.pt", RUN_MARKER, DATA_INFO, CLASSES)


def check_run_dir(out: Path, kind: str, *, resume: bool, overwrite: bool) -> bool:
    """Refuse to clobber a run unless asked. Returns whether there is a checkpoint to resume from:
    ``--resume`` on a directory that has none yet (a run killed before its first checkpoint, or never
    started: a requeued job's same command line) starts the run from the beginning, unless the
    directory belongs to another command."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} exists and is not a directory")
    if resume:
        if (out / CHECKPOINT).is_file():
            return True
        marker = out / RUN_MARKER
        if marker.is_file():
            try:
                owner = json.loads(marker.read_text(encoding="utf-8")).get("kind")
            except (ValueError, AttributeError, UnicodeDecodeError):
                owner = None
            if owner != kind:
                raise CheckpointError(f"{out}: holds a {owner!r} run, not a {kind!r} one: nothing to resume")
        elif any((out / name).exists() for name in RUN_FILES):
            raise CheckpointError(f"{out}: nothing to resume (no {CHECKPOINT}) and the run's files are of "
                                  "an unknown command: pass --overwrite to replace them")
        return False
    if not overwrite and any((out / name).exists() for name in RUN_FILES):
        raise ConfigError(f"--out {out} already holds a run: pass --resume to continue it "
                          "or --overwrite to replace it")
    return False


def start_run_dir(out: Path, kind: str) -> None:
    """Create the run directory, removing the files of a run being overwritten, and mark it as
    ``kind``'s (so that a --resume before the first checkpoint knows whose it is)."""
    out.mkdir(parents=True, exist_ok=True)
    for name in RUN_FILES:
        (out / name).unlink(missing_ok=True)
    atomic_write_text(out / RUN_MARKER, json.dumps({"kind": kind}) + "\n")


@contextlib.contextmanager
def stop_signals(handler: Callable[[int, Any], None]) -> Iterator[None]:
    """``handler`` for SIGTERM and SIGINT while the block runs (main thread only; elsewhere Python
    cannot install handlers), the previous handlers restored afterwards."""
    previous = {}
    if threading.current_thread() is threading.main_thread():
        previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def seed_everything(seed: int) -> None:
    """Seed torch (every device), Python and NumPy: a run's randomness follows from --seed alone."""
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)


def rng_state() -> dict[str, Any]:
    """The global RNG states of torch (CPU and every CUDA device), Python and NumPy, as tensors and
    plain data (loadable with weights_only=True)."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "python": random.getstate(),
             "numpy": [name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(gauss)]}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "python" in state:
        version, internal, gauss = state["python"]
        random.setstate((version, tuple(internal), gauss))
    if "numpy" in state:
        name, keys, pos, has_gauss, gauss = state["numpy"]
        np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def check_resumable(saved: Any, asked: Any, path: Path, log: Callable[[str], None]) -> None:
    """Refuse to resume when a config field differs, except the type's ``RESUMABLE_CHANGES``."""
    for f in dataclasses.fields(asked):
        a, b = getattr(saved, f.name), getattr(asked, f.name)
        if a == b:
            continue
        if f.name not in type(asked).RESUMABLE_CHANGES + RunOptions.ALWAYS_RESUMABLE:
            raise CheckpointError(f"{path}: checkpoint was written with {f.name}={a!r}, "
                                  f"this run asks for {f.name}={b!r}")
        log(f"{f.name} changed from {a} to {b} on resume")


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
def evaluate(model: torch.nn.Module, loader: Any, dist: Distributed | None = None) -> dict[str, float]:
    """Mean loss, top-1 and top-5 accuracy (fractions in [0, 1]) over one pass of ``loader``
    (data parallel: each rank's share, totalled over the ranks)."""
    was_training = model.training
    model.eval()
    dev = loader.device
    loss_sum, top1, top5 = (torch.zeros((), device=dev) for _ in range(3))
    seen = 0
    for x, y in loader:
        if y.shape[0] == 0:  # a rank's empty share of a last, short global batch
            continue
        logits = model(x)
        loss_sum += F.cross_entropy(logits.float(), y, reduction="sum")
        hits = logits.topk(min(5, logits.shape[1]), dim=1).indices == y[:, None]
        top1 += hits[:, 0].sum()
        top5 += hits.any(1).sum()
        seen += y.shape[0]
    model.train(was_training)
    if dist is not None and dist.enabled:
        loss_sum, top1, top5, n = dist.sum(torch.stack([loss_sum, top1, top5, torch.tensor(float(seen), device=dev)]))
        seen = int(n.item())
    return {"loss": (loss_sum / seen).item(), "top1": (top1 / seen).item(), "top5": (top5 / seen).item()}


class Run:
    """What search and training runs share: quiet-aware logging, the run directory (written by rank 0
    alone when data parallel), checkpoints, signals and the process group."""

    config: Any
    out: Path
    quiet: bool
    epoch: int
    metrics: MetricsLog
    dist: Distributed
    device: torch.device
    net: Any = None  # the model as the weight step runs it (in DistributedDataParallel when distributed)
    _log: Callable[[str], None]

    def log(self, message: str) -> None:
        if not self.quiet:
            self._log(message)

    tensorboard: Any = None
    _writer_class: Any = None

    def use_tensorboard(self) -> None:
        """Also write each epoch's numbers (and α histograms) as TensorBoard events under the run directory."""
        if self._writer_class is not None:
            self.tensorboard = self._writer_class(log_dir=str(self.out / "tensorboard"), purge_step=self.epoch + 1)

    def _write_tensorboard(self, record: dict[str, Any]) -> None:
        step = record["epoch"]
        for key, value in record.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and key != "epoch":
                self.tensorboard.add_scalar(key, value, step)
        for cell, rows in record.get("alphas", {}).items():
            self.tensorboard.add_histogram(f"alpha/{cell}", torch.tensor(rows), step)
        self.tensorboard.flush()

    def open(self, config: Any, out_dir: str | Path, kind: str, *, resume: bool, overwrite: bool, quiet: bool,
             log: Callable[[str], None], tensorboard: bool = False) -> dict[str, Any] | None:
        """Validate the config, the run directory and the options before anything is written; on
        ``resume``, load the checkpoint and check that it fits."""
        from .checkpoint import load_checkpoint
        config.validate()
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise ConfigError("--tensorboard needs the tensorboard package: pip install 'dartsnas[tensorboard]' "
                                  "(metrics.jsonl is written either way)") from None
            self._writer_class = SummaryWriter
        config.validate_run_options()
        device = resolve_device(config.device)
        self.dist = Distributed.from_env(device)
        self.device = self.dist.local(device)
        self.config, self.out, self.quiet, self._log = config, Path(out_dir), quiet or not self.dist.is_main, log
        self.in_epoch: dict[str, Any] | None = None        # progress inside the epoch, for mid-epoch checkpoints
        self.resume_in_epoch: dict[str, Any] | None = None
        self.skipped_nonfinite = 0
        self._stop_signal: int | None = None
        self._last_save = time.monotonic()
        self.kind = kind
        has_checkpoint = check_run_dir(self.out, kind, resume=resume, overwrite=overwrite)
        self.dist.barrier()  # every rank has looked at the run directory before rank 0 changes it
        if resume and not has_checkpoint:
            self.log(f"{self.out}: no checkpoint yet, starting the run from the beginning")
        if not has_checkpoint:
            return None
        saved = load_checkpoint(self.out / CHECKPOINT, kind=kind)
        self.dist.barrier()
        if self.dist.is_main:
            for torn in self.out.glob(".*.tmp"):  # a write cut short by a crash; its target is intact
                torn.unlink(missing_ok=True)
        check_resumable(type(config).from_dict(saved["config"]), config, self.out / CHECKPOINT, self.log)
        self.resume_in_epoch = saved.get("in_epoch")
        ranks = saved.get("in_epoch_ranks")
        writers = len(ranks) if ranks is not None else 1
        if self.resume_in_epoch is not None and writers != self.dist.world_size:
            raise CheckpointError(f"{self.out / CHECKPOINT}: written inside an epoch by {writers} "
                                  f"process(es); resume it with as many (this run has {self.dist.world_size})")
        if ranks is not None:
            self.resume_in_epoch = ranks[self.dist.rank]
        self.skipped_nonfinite = int(saved.get("skipped_nonfinite", 0))
        return saved

    def state_dict(self) -> dict[str, Any]:
        raise NotImplementedError

    def start(self) -> None:
        """A fresh run: rank 0 creates (or clears) the run directory."""
        if self.dist.is_main:
            start_run_dir(self.out, self.kind)
        self.dist.barrier()

    def place_model(self, model: torch.nn.Module, channels_last: bool = False) -> torch.nn.Module:
        """A freshly built model (identical on every rank) made ready to train here: SyncBatchNorm with
        --sync-bn when data parallel, on this rank's device, channels_last if asked; then each rank
        gets its own random stream (dropout, drop path)."""
        if self.dist.enabled and self.config.sync_bn:
            convert_sync_batchnorm(model)
        model.to(self.device)
        if channels_last:
            model.to(memory_format=torch.channels_last)
        self.seed_ranks(int(self.config.seed))
        return model

    def stream_rows(self, tokens: torch.Tensor, rows: int) -> torch.Tensor:
        """This rank's rows of ``tokens`` batchified into ``rows`` streams, on this rank's device."""
        return rank_rows(batchify(tokens, rows), self.dist.rank, self.dist.world_size).to(self.device)

    def seed_ranks(self, seed: int) -> None:
        """After the model is built (identically on every rank): data parallel, give each rank its own
        random stream (dropout), rank 0 keeping the single-process one."""
        if self.dist.enabled and self.dist.rank > 0:
            seed_everything(seed + 1_000_003 * self.dist.rank)

    def restore_rng(self, state: dict[str, Any]) -> None:
        """The random state of a checkpoint: this rank's own when the checkpoint has one per rank."""
        ranks = state.get("rng_ranks")
        if ranks is not None and len(ranks) == self.dist.world_size:
            set_rng_state(ranks[self.dist.rank])
        else:
            set_rng_state(state["rng"])
            self.seed_ranks(int(self.config.seed) + self.epoch)

    def save(self) -> None:
        """Write the checkpoint (atomically: the previous one stays until the new one is complete).
        Every rank calls it (the state may need collectives); rank 0 writes."""
        state = {**self.state_dict(), "in_epoch": self.in_epoch, "skipped_nonfinite": self.skipped_nonfinite}
        if self.dist.enabled:  # what differs between ranks: random streams, progress inside the epoch
            state["rng_ranks"] = self.dist.gather_objects(rng_state())
            if self.in_epoch is not None:
                state["in_epoch_ranks"] = self.dist.gather_objects(self.in_epoch)
        if self.dist.is_main:
            save_checkpoint(self.out / CHECKPOINT, state)
        self._last_save = time.monotonic()

    def begin_epoch(self, optimizer: torch.optim.Optimizer, lr: float) -> dict[str, Any]:
        """Set the epoch's learning rate; returns the start of its metrics record."""
        for group in optimizer.param_groups:
            group["lr"] = lr
        return {"epoch": self.epoch + 1, "lr": lr}

    def end_epoch(self, record: dict[str, Any], line: str) -> None:
        """Metrics line first, then the checkpoint: a crash between them is undone on resume."""
        if self.dist.is_main:
            self.metrics.append(record)
        self.in_epoch = None
        self.save()
        if self.tensorboard is not None and self.dist.is_main:
            self._write_tensorboard(record)
        self.log(line)

    hessian_batches: list | None = None
    early_stopper: Any = None

    def watch_curvature(self, batches: list) -> None:
        """Keep ``batches`` (fixed validation batches) for the eigenvalue, and start DARTS-ES if asked."""
        from ..curvature import EarlyStopHessian
        if self.config.hessian_every:
            self.hessian_batches = batches
        if self.config.early_stop == "hessian":
            self.early_stopper = EarlyStopHessian(start=self.config.es_start, last_epoch=self.config.epochs)

    def curvature_due(self) -> bool:
        """After ``self.epoch`` epochs: whether this epoch's eigenvalue is computed (every N, and the last)."""
        every = self.config.hessian_every
        return bool(every) and (self.epoch % every == 0 or self.epoch == self.config.epochs)

    def stopped_early(self) -> bool:
        return self.early_stopper is not None and self.early_stopper.stopped is not None

    def record_curvature(self, record: dict[str, Any], genotype: dict[str, Any]) -> bool:
        """Add the dominant eigenvalue to the epoch's record when due; True when DARTS-ES stops here."""
        from ..curvature import dominant_eigenvalue
        if not self.curvature_due():
            return False
        t0 = time.perf_counter()
        value = dominant_eigenvalue(self.model, self.hessian_batches, steps=self.config.hessian_steps,
                                    seed=int(self.config.seed), sync=self.dist.average)
        record.update({"hessian_eigenvalue": round(value, 6), "hessian_seconds": round(time.perf_counter() - t0, 3)})
        if self.early_stopper is not None and self.early_stopper.update(self.epoch, value, genotype):
            record["early_stop"] = dict(self.early_stopper.stopped)
            return True
        return False

    def write_data_info(self, info: dict[str, Any]) -> None:
        """data.json (classes, channels, image size, resize, normalisation) and classes.json: what a
        trained model needs to read new images as it read its own."""
        self.write_text(DATA_INFO, json.dumps(info, ensure_ascii=False, indent=1) + "\n")
        self.write_text(CLASSES, json.dumps(info["classes"], ensure_ascii=False) + "\n")

    def write_text(self, name: str, text: str) -> None:
        """A result file of the run directory (rank 0 writes it; the others wait for it)."""
        if self.dist.is_main:
            atomic_write_text(self.out / name, text)
        self.dist.barrier()

    def step_done(self, step: int, progress: Callable[[], dict[str, Any]]) -> None:
        """After ``step`` steps of the current epoch: write a mid-epoch checkpoint when one is due
        (``--checkpoint-every`` steps, else every few minutes) or a stop signal arrived; ``progress``
        gives the loop's own state (meters, carried hidden state, stream position)."""
        every = self.config.checkpoint_every
        due = step % every == 0 if every else time.monotonic() - self._last_save >= CHECKPOINT_SECONDS
        if self.dist.enabled:  # all ranks checkpoint and stop together (torchrun signals each of them)
            if self.dist.any(due or self._stop_signal is not None):
                due = True
                if self.dist.any(self._stop_signal is not None) and self._stop_signal is None:
                    self._stop_signal = signal.SIGTERM
        if due or self._stop_signal is not None:
            self.in_epoch = {"step": step, **progress()}
            self.save()
            self.in_epoch = None
        if self._stop_signal is not None:
            name = signal.Signals(self._stop_signal).name
            raise Interrupted(f"{name}: stopped after step {step} of epoch {self.epoch + 1}; checkpoint written "
                              f"to {self.out / CHECKPOINT} (--resume continues)", 128 + self._stop_signal)

    def take_in_epoch(self) -> dict[str, Any] | None:
        """The progress a mid-epoch checkpoint restored (once), or None to start the epoch afresh."""
        state, self.resume_in_epoch = self.resume_in_epoch, None
        return state

    def bad_step(self, step: int, what: str = "loss or gradient") -> None:
        """A non-finite value at ``step`` of this epoch: skip it while --skip-nonfinite allows, else stop."""
        where = f"epoch {self.epoch + 1}, step {step}"
        if self.skipped_nonfinite < self.config.skip_nonfinite and what == "loss or gradient":
            self.skipped_nonfinite += 1
            self.log(f"non-finite {what} at {where}: batch skipped "
                     f"({self.skipped_nonfinite} of --skip-nonfinite {self.config.skip_nonfinite})")
            return
        raise DartsError(f"non-finite {what} at {where}: stopped; the last good checkpoint "
                         f"({self.out / CHECKPOINT}) is kept")

    @contextlib.contextmanager
    def _guard(self) -> Iterator[None]:
        """SIGTERM / SIGINT set a flag that the next step boundary acts on (checkpoint, clean exit);
        ``--deterministic`` switches PyTorch to deterministic kernels. Both are undone afterwards."""
        def on_signal(signum: int, frame: Any) -> None:
            if self._stop_signal is not None and signum == signal.SIGINT:  # Ctrl-C twice: stop now
                raise KeyboardInterrupt
            self._stop_signal = signum

        was_deterministic = torch.are_deterministic_algorithms_enabled()
        if self.config.deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS needs it to be deterministic
            torch.use_deterministic_algorithms(True)
            torch.backends.cudnn.benchmark = False
        try:
            with stop_signals(on_signal):
                yield
        finally:
            torch.use_deterministic_algorithms(was_deterministic)

    @property
    def checks_every_step(self) -> bool:
        """Whether a training step looks for non-finite values: on CPU (free), or when --skip-nonfinite
        may skip them (a host-device sync per step on a GPU). Otherwise the epoch's mean loss does."""
        return self.device.type == "cpu" or self.config.skip_nonfinite > 0

    def check_epoch_loss(self, loss: float, steps: int) -> float:
        """The epoch's mean training loss, stopping the run if it is not finite: without per-step
        checks (see :attr:`checks_every_step`) this is where a bad step is caught."""
        if not math.isfinite(loss):
            self.bad_step(steps, "mean training loss")
        return loss

    def all_finite(self, *tensors: torch.Tensor) -> bool:
        """Whether every tensor is finite on every rank (data parallel, all ranks agree: a batch
        that is bad anywhere is skipped everywhere)."""
        ok = all(bool(torch.isfinite(t).all()) for t in tensors)
        return not self.dist.any(not ok)

    def check_arch_finite(self, step: int, arch: list[torch.Tensor]) -> None:
        """After an α step: non-finite α cannot be skipped, so the run stops (see :meth:`bad_step`)."""
        if not all(bool(torch.isfinite(a).all()) for a in arch):
            self.bad_step(step, "architecture weights α")

    def execute(self) -> Any:
        """``run()`` under the signal handlers and determinism switch of :meth:`_guard`; leaves the
        process group afterwards if the run joined it."""
        try:
            with self._guard():
                return self.run()
        finally:
            # DistributedDataParallel must go before its process group: a reducer outliving the group
            # aborts the process at exit ("terminate called without an active exception").
            self.net = None
            gc.collect()
            self.dist.close()

    def run(self) -> Any:
        raise NotImplementedError

    def epoch_steps(self, loader: Any, cap: int | None) -> int:
        """Steps of this epoch: one pass over ``loader``, at most ``cap`` (``--steps-per-epoch``)."""
        return len(loader) if cap is None else min(len(loader), cap)

    def resumed(self) -> None:
        """After restoring a checkpoint: drop metrics written after it, and say so."""
        if self.dist.is_main:
            self.metrics.keep_epochs(self.epoch)
        self.log(f"resumed from {self.out / CHECKPOINT} after epoch {self.epoch}")


def validate_bilevel(config: Any, cli: bool = True) -> None:
    """The checks every bilevel search's config shares (search cnn, search rnn, search_model); errors
    name the command-line flag, or with ``cli=False`` the Python field."""
    flag = (lambda name: "--" + name.replace("_", "-")) if cli else (lambda name: name)
    if config.order not in ORDERS:
        raise ConfigError(f"{flag('order')} must be one of {', '.join(ORDERS)}, got {config.order!r}")
    if config.fd_scheme not in FD_SCHEMES:
        raise ConfigError(f"{flag('fd_scheme')} must be one of {', '.join(FD_SCHEMES)}, got {config.fd_scheme!r}")
    portion = getattr(config, "train_portion", None)
    if portion is not None and not 0.0 < portion < 1.0:
        raise ConfigError(f"{flag('train_portion')} must lie strictly between 0 and 1, got {portion}")
    if config.steps_per_epoch is not None and config.steps_per_epoch < 1:
        raise ConfigError(f"{flag('steps_per_epoch')} must be >= 1, got {config.steps_per_epoch}")


def config_from_dict(cls: type, data: dict[str, Any]) -> Any:
    """Build the config dataclass ``cls`` from a checkpoint's dict, refusing unknown fields."""
    unknown = set(data) - {f.name for f in dataclasses.fields(cls)}
    if unknown:
        raise CheckpointError(f"unknown config field(s) {', '.join(sorted(unknown))}")
    return cls(**data)
