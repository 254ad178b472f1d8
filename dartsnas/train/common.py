"""Small helpers of the runs: devices, autocast, learning-rate schedules, torch Datasets from Python.
The loop is in :mod:`.loop`, the config groups in :mod:`dartsnas.config`."""
from __future__ import annotations

import contextlib
import dataclasses
import math
from typing import Any

import torch

from ..data.table import PYTHON_DATASET
from ..errors import ConfigError


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
        raise ConfigError(f"{{device}} {name}: CUDA is not available on this machine", names=("device",))
    return device


def python_data_config(config: Any, data: Any, second: Any, second_name: str = "val_data") -> Any:
    """``config`` marked as running on torch Datasets passed from Python (or refused without them)."""
    if data is not None:
        return dataclasses.replace(config, dataset=PYTHON_DATASET)
    if second is not None:
        raise ConfigError(f"{second_name} needs train_data")
    if config.dataset == PYTHON_DATASET:
        raise ConfigError("dataset 'python' stands for torch Datasets passed from Python: give train_data")
    return config

