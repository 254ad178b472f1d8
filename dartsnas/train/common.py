"""Pieces every training loop shares: devices, run directories, RNG state, learning-rate schedules."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from ..errors import CheckpointError, ConfigError
from .checkpoint import CHECKPOINT, GENOTYPE, METRICS


def cosine_lr(epoch: int, epochs: int, lr: float, lr_min: float) -> float:
    """Cosine annealing from ``lr`` at epoch 0 towards ``lr_min`` (SGDR without restarts).

    Closed form rather than a stateful scheduler, so a resumed run with a changed ``--epochs``
    simply follows the new schedule from the epoch it resumes at.
    """
    return lr_min + (lr - lr_min) * (1 + math.cos(math.pi * epoch / epochs)) / 2


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {name}: CUDA is not available on this machine")
    return device


RUN_FILES = (CHECKPOINT, METRICS, GENOTYPE, "model.pt")


def check_run_dir(out: Path, *, resume: bool, overwrite: bool) -> None:
    """Refuse to clobber a run unless asked; ``--resume`` needs a checkpoint to resume from."""
    if resume:
        if not (out / CHECKPOINT).is_file():
            raise CheckpointError(f"{out}: nothing to resume (no {CHECKPOINT})")
        return
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} exists and is not a directory")
    if not overwrite and any((out / name).exists() for name in RUN_FILES):
        raise ConfigError(f"--out {out} already holds a run: pass --resume to continue it "
                          "or --overwrite to replace it")


def start_run_dir(out: Path) -> None:
    """Create the run directory, removing the files of a run being overwritten."""
    out.mkdir(parents=True, exist_ok=True)
    for name in RUN_FILES:
        (out / name).unlink(missing_ok=True)



def rng_state() -> dict[str, Any]:
    """The global torch RNG states (CPU and every CUDA device), for a checkpoint."""
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
