"""Datasets by name: ``load_dataset("cifar10" | "digits", split, ...)``; a user's own images
(``imagefolder``, ``arrays``, torch Datasets) through :func:`load_splits` and :mod:`.own`."""
from __future__ import annotations

import os
from typing import Callable

import torch

from ..registry import Registry
from .bundled import load_digits
from .cifar import load_cifar10
from .images import BatchLoader, DatasetBatches, ImageDataset, split_portion
from .own import OwnDataOptions, from_torch_dataset, load_own_data, stratified_split

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


#: Datasets of a user's own images: read from --data-dir, statistics computed from the training images.
OWN_DATASETS = ("imagefolder", "arrays")
#: The data passed to the Python API as torch Datasets.
PYTHON_DATASET = "python"
#: Datasets whose search split is the paper's (first part / rest, their files being in random order).
PAPER_SPLIT = ("cifar10", "digits")


def load_splits(name: str, data_dir: str | os.PathLike | None, *, download: bool = False, verify: bool = True,
                options: OwnDataOptions | None = None, train: bool = True,
                test: bool = True) -> tuple[ImageDataset | None, ImageDataset | None]:
    """The training and test splits of a named dataset (each only if asked for). A user's own images
    are normalised with their training images' statistics, or ``options.stats`` (a trained model's)."""
    if name in OWN_DATASETS:
        return load_own_data(name, data_root(data_dir), options or OwnDataOptions(), train=train, test=test)
    common = dict(data_dir=data_dir, download=download, verify=verify)
    return (load_dataset(name, "train", **common) if train else None,
            load_dataset(name, "test", **common) if test else None)


def search_split(data: ImageDataset, portion: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The w / α split of a search's training images: the paper's (first ``portion``, rest) for CIFAR-10
    and digits, a seeded split stratified by class for any other data (class folders are read in
    class order: cutting the list would give α only the last classes)."""
    if data.name in PAPER_SPLIT:
        return split_portion(len(data), portion)
    return stratified_split(data.labels, portion, seed)


__all__ = ["OWN_DATASETS", "OwnDataOptions", "from_torch_dataset", "load_splits", "search_split", "stratified_split",
           "BatchLoader", "DATASETS", "DatasetBatches", "ImageDataset", "load_cifar10", "load_dataset", "load_digits", "split_portion"]
