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
from typing import Any, Callable

from ..errors import ConfigError
from ..registry import Registry
from .bundled import load_digits
from .cifar import load_cifar10
from .images import BatchLoader, DatasetBatches, ImageDataset
from .build import OwnDataOptions
from .own import load_own_data
from .torchdata import from_torch_dataset
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
                options: OwnDataOptions | None = None, train: bool = True, test: bool = True,
                train_data: Any = None, test_data: Any = None,
                test_what: str = "test_data") -> tuple[ImageDataset | None, ImageDataset | None]:
    """The training and test splits of a dataset held in memory or streamed, each only if asked for:
    a named one, a user's own images (normalised with their training images' statistics, or
    ``options.stats``, a trained model's), or torch Datasets passed from Python (``train_data``,
    ``test_data``: the second is the search's α images, named ``test_what`` in errors). The one
    dispatch of the search and the training."""
    options = options or OwnDataOptions()
    if name == PYTHON_DATASET:
        return _python_splits(options, train, test, train_data, test_data, test_what)
    if name in OWN_DATASETS:
        return load_own_data(name, data_root(data_dir), options, train=train, test=test)
    common = dict(data_dir=data_dir, download=download, verify=verify)
    return (load_dataset(name, "train", **common) if train else None,
            load_dataset(name, "test", **common) if test else None)


def _python_splits(options: OwnDataOptions, train: bool, test: bool, train_data: Any, test_data: Any,
                   test_what: str) -> tuple[ImageDataset | None, ImageDataset | None]:
    train_ds = from_torch_dataset(train_data, options, what="train_data") if train else None
    if not test or test_data is None:
        if train_ds is None:
            raise ConfigError("a model trained on torch Datasets is evaluated on test_data (a torch Dataset)")
        return train_ds, None
    classes, stats = ((train_ds.classes, (train_ds.mean, train_ds.std)) if train_ds is not None
                      else (options.classes, options.stats))
    return train_ds, from_torch_dataset(test_data, options, classes=classes, stats=stats, what=test_what)


def is_folder_dataset(name: str) -> bool:
    """Whether ``name`` is read from ImageNet's class folders, decoded per image (not held in memory)."""
    entry = dataset_entry(name)
    return entry is not None and entry.kind == "folder"


__all__ = ["DATASET_TABLE", "OWN_DATASETS", "PAPER_SPLIT", "PYTHON_DATASET", "OwnDataOptions", "dataset_entry",
           "datasets_for", "from_torch_dataset", "is_folder_dataset", "load_splits", "random_split", "search_split",
           "split_by_dataset", "stratified_split", "BatchLoader", "DATASETS", "DatasetBatches", "ImageDataset", "load_cifar10",
           "load_dataset", "load_digits", "split_portion"]
