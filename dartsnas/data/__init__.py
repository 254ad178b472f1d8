"""Datasets by name: ``load_dataset("cifar10" | "digits", split, ...)``; a user's own images
(``imagefolder``, ``arrays``, torch Datasets) through :func:`load_splits` and :mod:`.own`.

The package by responsibility: :mod:`.table` (every dataset name, its kind, the commands that take
it), :mod:`.images` (the dataset type and the batch loaders), :mod:`.decoding` (image files),
:mod:`.streaming` (images decoded on demand in workers), :mod:`.classfolders`, :mod:`.arrays` and
:mod:`.torchdata` (a user's three sources, assembled by :mod:`.build`), :mod:`.splits`, :mod:`.cifar`,
:mod:`.bundled` (digits), :mod:`.folder` (ImageNet), :mod:`.text` (corpora), :mod:`.augment`.
"""
from __future__ import annotations

import os
from typing import Callable

from ..registry import Registry
from .bundled import load_digits
from .cifar import load_cifar10
from .images import BatchLoader, DatasetBatches, ImageDataset
from .own import OwnDataOptions, from_torch_dataset, load_own_data
from .splits import random_split, search_split, split_by_dataset, split_portion, stratified_split
from .table import DATASET_TABLE, OWN_DATASETS, PAPER_SPLIT, PYTHON_DATASET, dataset_entry, datasets_for

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


__all__ = ["DATASET_TABLE", "OWN_DATASETS", "PAPER_SPLIT", "PYTHON_DATASET", "OwnDataOptions", "dataset_entry",
           "datasets_for", "from_torch_dataset", "load_splits", "random_split", "search_split", "split_by_dataset",
           "stratified_split", "BatchLoader", "DATASETS", "DatasetBatches", "ImageDataset", "load_cifar10",
           "load_dataset", "load_digits", "split_portion"]
