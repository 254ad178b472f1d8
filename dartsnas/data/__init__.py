"""Datasets by name: ``load_dataset("cifar10" | "digits", split, ...)``."""
from __future__ import annotations

import os
from typing import Callable

from ..registry import Registry
from .bundled import load_digits
from .cifar import load_cifar10
from .images import BatchLoader, ImageDataset, split_portion

DATASETS: Registry[Callable[..., ImageDataset]] = Registry("dataset")


def data_root(data_dir: str | os.PathLike | None) -> str | os.PathLike:
    """``--data-dir`` when given, else ``$DARTSNAS_DATA``, else ./data."""
    return data_dir if data_dir is not None else os.environ.get("DARTSNAS_DATA", "data")


@DATASETS.register("cifar10")
def _cifar10(split: str, data_dir: str | os.PathLike | None, download: bool, verify: bool) -> ImageDataset:
    return load_cifar10(data_root(data_dir), split, download=download, verify=verify)


@DATASETS.register("digits")
def _digits(split: str, data_dir: str | os.PathLike | None, download: bool, verify: bool) -> ImageDataset:
    return load_digits(split)


def load_dataset(name: str, split: str = "train", *, data_dir: str | os.PathLike | None = None,
                 download: bool = False, verify: bool = True) -> ImageDataset:
    """Load a registered image dataset split (train or test)."""
    return DATASETS.get(name)(split, data_dir, download, verify)


__all__ = ["BatchLoader", "DATASETS", "ImageDataset", "load_cifar10", "load_dataset", "load_digits", "split_portion"]
