"""Your own images: class folders (``imagefolder``), NumPy arrays (``arrays``) or any torch Dataset.

Each becomes an :class:`~dartsnas.data.images.ImageDataset` the search and training loops read like
CIFAR-10: channels and classes come from the data, per-channel mean and std from the training
images. Images of one size are used as they are; mixed sizes need ``image_size`` S (shorter side
resized to S, then a centre S x S crop). Training augmentation is a random crop of the zero-padded
image (padding S/8) and, unless switched off, a horizontal flip, in batches on the device.

Memory rule: when the decoded training and test images together take at most ``memory_gb`` GiB
(uint8, float32 for float inputs), they are decoded once and held in memory (on the GPU when there
is one); above that, class folders and torch Datasets stream through DataLoader worker processes,
decoded again each epoch, with the same batched augmentation after them. NumPy arrays are in memory
already.
"""
from __future__ import annotations

import os
from pathlib import Path

from ..errors import DataError
from .arrays import load_arrays
from .build import OwnDataOptions
from .classfolders import load_folder
from .images import ImageDataset


def load_own_data(name: str, path: str | os.PathLike, options: OwnDataOptions, *, train: bool = True,
                  test: bool = True) -> tuple[ImageDataset | None, ImageDataset | None]:
    """The training split and (with ``test``, where the data has one) the test split of a user's images:
    ``name`` is ``imagefolder`` (``path`` a folder with train/<class>/ and optional val/<class>/) or
    ``arrays`` (``path`` an .npz file). The test split is normalised with the training images'
    statistics, or ``options.stats``; without ``train`` (a trained model's evaluation) those and
    ``options.classes`` must be given."""
    if not train and (options.stats is None or options.classes is None):
        raise DataError("the test split alone needs the trained model's statistics and classes")
    if name == "imagefolder":
        return load_folder(Path(path), options, train=train, test=test)
    if name == "arrays":
        return load_arrays(Path(path), options, train=train, test=test)
    raise DataError(f"unknown dataset kind {name!r}")
