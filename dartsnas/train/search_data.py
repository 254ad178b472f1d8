"""A conv search's batches: w's and α's from one training split cut at ``train_portion`` (or α's own
images), or PC-DARTS's ImageNet search's seeded samples of every class, decoded per batch."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch

from ..data import BatchLoader, data_root, is_folder_dataset, load_splits, search_split
from ..data.folder import FolderBatches, ImageFolderDataset, find_split, folder_info, list_images
from ..data.splits import sample_per_class


@dataclass
class SearchLoaders:
    """A search's batches: w's (``train``), α's (``val``), the α images in order (``eval``, and
    ``fixed(batch_size)``, the eigenvalue's batches), with what the network and the run need."""

    train: Any
    val: Any
    eval: Any
    fixed: Callable[[int], Any]
    num_classes: int
    in_channels: int
    image_size: tuple[int, int]
    info: dict[str, Any]
    description: list[str]


def image_search_loaders(config: Any, common: dict[str, Any], drop_last: bool, train_data: Any,
                         val_data: Any) -> SearchLoaders:
    """Images held in memory or streamed: the training split cut at ``train_portion`` (or α's own images)."""
    data, alpha_data = load_splits(config.dataset, config.data_dir, download=config.download, verify=config.verify,
                                   options=config.own_data_options(), test=val_data is not None,
                                   train_data=train_data, test_data=val_data, test_what="val_data")
    description = [data.description]
    if alpha_data is None:
        train_idx, val_idx = search_split(data, config.train_portion, config.seed)
    else:
        description.append(alpha_data.description)
        train_idx, val_idx = None, None
    alpha_data = alpha_data or data
    in_order = lambda batch_size: BatchLoader(alpha_data, val_idx, batch_size=batch_size,  # noqa: E731
                                              shuffle=False, augment=False, **common)
    return SearchLoaders(
        train=BatchLoader(data, train_idx, batch_size=config.batch_size, seed=config.seed, drop_last=drop_last,
                          **common),
        val=BatchLoader(alpha_data, val_idx, batch_size=config.batch_size, seed=config.seed + 1, drop_last=drop_last,
                        **common),
        eval=in_order(max(config.batch_size, 256)), fixed=in_order, num_classes=data.num_classes,
        in_channels=data.in_channels, image_size=data.image_size, info=data.info(), description=description)


def imagenet_search_loaders(config: Any, common: dict[str, Any], drop_last: bool, train_data: Any,
                            val_data: Any) -> SearchLoaders:
    """PC-DARTS's ImageNet search data: seeded samples of every class of the training folders (w's and
    α's, disjoint), decoded per batch by worker processes with a random-resized crop and a flip."""
    root = data_root(config.data_dir)
    samples, classes = list_images(find_split(root, "train"))
    labels = torch.tensor([label for _, label in samples], dtype=torch.int64)
    w_idx, alpha_idx = sample_per_class(labels, tuple(config.sample), config.seed)
    size = config.image_size or 224
    train_ds = ImageFolderDataset(samples, train=True, image_size=size, jitter=False, seed=config.seed)
    plain_ds = ImageFolderDataset(samples, train=False, image_size=size)
    in_order = lambda batch_size: FolderBatches(plain_ds, alpha_idx, batch_size=batch_size,  # noqa: E731
                                                shuffle=False, **common)
    description = [f"{root}: {len(classes)} classes, {len(samples)} training images; sampled per class: "
                   f"{len(w_idx)} train w ({config.sample[0]:g}), {len(alpha_idx)} train α ({config.sample[1]:g})"]
    return SearchLoaders(
        train=FolderBatches(train_ds, w_idx, batch_size=config.batch_size, seed=config.seed, drop_last=drop_last,
                            **common),
        val=FolderBatches(train_ds, alpha_idx, batch_size=config.batch_size, seed=config.seed + 1,
                          drop_last=drop_last, **common),
        eval=in_order(max(config.batch_size, 256)), fixed=in_order, num_classes=len(classes), in_channels=3,
        image_size=(size, size), info=folder_info("imagenet", classes, size), description=description)


def search_loaders(config: Any, common: dict[str, Any], drop_last: bool, train_data: Any,
                   val_data: Any) -> SearchLoaders:
    """The search's batches of ``config.dataset``: ImageNet's class folders sampled, or images."""
    build = imagenet_search_loaders if is_folder_dataset(config.dataset) else image_search_loaders
    return build(config, common, drop_last, train_data, val_data)
