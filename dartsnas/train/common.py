"""Config groups every command shares (run options, own images, curvature) and small helpers of the
runs: devices, autocast, learning-rate schedules, resume checks. The loop itself is in :mod:`.loop`."""
from __future__ import annotations

import contextlib
import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from ..architect import FD_SCHEMES, ORDERS
from ..errors import CheckpointError, ConfigError



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


# Moved in the redesign of the training loop; the old names keep working.
# ruff: noqa: F401
from .loop import CHECKPOINT_SECONDS, Run, stop_signals  # noqa: E402,F401
from .meters import ClipMeter, EpochMeter, evaluate  # noqa: E402,F401
from .rng import rng_state, seed_everything, set_rng_state  # noqa: E402,F401
from .rundir import CLASSES, DATA_INFO, RUN_FILES, RUN_MARKER, check_run_dir, start_run_dir  # noqa: E402,F401
