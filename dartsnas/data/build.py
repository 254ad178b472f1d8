"""From a user's decoded images to an :class:`~dartsnas.data.images.ImageDataset`: the loading
options, per-channel statistics, crop padding and the class checks every source shares."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch

from ..errors import DataError
from .images import ImageDataset
from .streaming import StreamedImages


#: Statistics of a streamed dataset come from this many training images (a seeded sample).
STATS_SAMPLE = 2000


DEFAULT_MEMORY_GB = 2.0


@dataclass
class OwnDataOptions:
    """What the commands' data flags say about a user's images."""

    image_size: int | None = None
    skip_bad_images: bool = False
    flip: bool = True
    memory_gb: float = DEFAULT_MEMORY_GB
    stats: tuple[tuple[float, ...], tuple[float, ...]] | None = None  # a trained model's, for evaluation
    classes: Sequence[str] | None = None                               # a trained model's, for evaluation


def channel_stats(images: torch.Tensor | StreamedImages, *, seed: int = 0,
                  sample: int = STATS_SAMPLE) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of images scaled to [0, 1] (all of an in-memory tensor; a seeded
    sample of ``sample`` images of a streamed set)."""
    if isinstance(images, StreamedImages):
        n = len(images)
        rows = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:sample].sort().values.tolist()
        stacked, error = images.batch(rows)
        if error:
            raise DataError(error)
        images = stacked
    C = images.shape[1]
    total = torch.zeros(C, dtype=torch.float64)
    squares = torch.zeros(C, dtype=torch.float64)
    scale = 255.0 if images.dtype == torch.uint8 else 1.0
    for chunk in images.split(4096):
        x = chunk.to(torch.float64) / scale
        total += x.sum((0, 2, 3))
        squares += x.square().sum((0, 2, 3))
    count = images.shape[0] * images.shape[2] * images.shape[3]
    mean = total / count
    std = (squares / count - mean.square()).clamp_min(0).sqrt().clamp_min(1e-3)  # a constant channel: no division by 0
    return tuple(round(v, 6) for v in mean.tolist()), tuple(round(v, 6) for v in std.tolist())


def _padding(size: tuple[int, int]) -> int:
    return max(1, round(min(size) / 8))  # CIFAR's 4 of 32


def finish_dataset(name: str, images: Any, labels: torch.Tensor, classes: Sequence[str], options: OwnDataOptions,
            description: str, stats: tuple | None) -> ImageDataset:
    mean, std = stats if stats is not None else channel_stats(images)
    return ImageDataset(name=name, images=images, labels=labels, num_classes=len(classes), mean=mean, std=std,
                        crop_padding=_padding(tuple(images.shape[2:])), flip=options.flip,
                        description=description, classes=tuple(classes), resize=options.image_size)


def check_classes(labels: torch.Tensor, classes: Sequence[str], train: bool, where: str) -> None:
    if train:
        counts = torch.bincount(labels, minlength=len(classes))
        empty = [classes[i] for i in torch.nonzero(counts == 0).flatten().tolist()]
        if empty:
            raise DataError(f"{where}: class {empty[0]!r} has no readable images")
