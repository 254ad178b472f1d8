"""How examples are split: the search's w / α split, the held-out part of a selection, a user
dataset's held-out test images. Every split is a pair of sorted index tensors, both non-empty."""
from __future__ import annotations

import math
from typing import Any

import torch

from ..errors import ConfigError, DataError
from .table import PAPER_SPLIT


def split_portion(n: int, portion: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices of the first ``portion`` of ``n`` examples and of the rest (both non-empty): the
    split of a training set into the part that trains and the held-out part."""
    n_train = int(math.floor(portion * n))
    if n_train < 1 or n_train >= n:
        raise ConfigError(f"{{train_portion}} {portion} leaves an empty split of the {n} training images",
                          names=("train_portion",))
    order = torch.arange(n)
    return order[:n_train], order[n_train:]


def stratified_split(labels: torch.Tensor, portion: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A seeded split of example indices into ``portion`` and the rest, class by class (each class
    keeps its share in both parts; a class of at least two examples appears in both)."""
    g = torch.Generator().manual_seed(seed)
    first, rest = [], []
    for c in torch.unique(labels).tolist():
        idx = torch.nonzero(labels == c).flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        k = int(round(portion * len(idx)))
        if len(idx) >= 2:
            k = min(max(k, 1), len(idx) - 1)
        first.append(idx[:k])
        rest.append(idx[k:])
    a, b = torch.cat(first).sort().values, torch.cat(rest).sort().values
    if len(a) == 0 or len(b) == 0:
        raise DataError(f"a split of {len(labels)} images at {portion} leaves one part empty")
    return a, b


def split_by_dataset(name: str, labels: torch.Tensor, portion: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The paper's split (first ``portion``, rest) for CIFAR-10 and digits, whose files are in random
    order; a seeded split stratified by class for any other data (class folders are read in class
    order: cutting the list would leave the second part only the last classes)."""
    if name in PAPER_SPLIT:
        return split_portion(len(labels), portion)
    return stratified_split(labels, portion, seed)


def search_split(data: Any, portion: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The w / α split of a search's training images (see :func:`split_by_dataset`)."""
    return split_by_dataset(data.name, data.labels, portion, seed)


def random_split(n: int, portion: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A seeded random split of ``n`` examples of any kind (a model search's data: no labels to
    stratify by), refused when a part would be empty."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    cut = int(portion * n)
    if not 0 < cut < n:
        raise ConfigError(f"{{train_portion}} {portion} leaves an empty split of {n} examples", names=("train_portion",))
    return order[:cut].sort().values, order[cut:].sort().values


def sample_per_class(labels: torch.Tensor, portions: tuple[float, ...], seed: int) -> list[torch.Tensor]:
    """Disjoint seeded samples of every class, the i-th taking ``portions[i]`` of each class (at least
    one image while the class lasts): PC-DARTS's 10% and 2.5% of ImageNet's training images, which
    train w and α. Each sample is a sorted index tensor."""
    if sum(portions) > 1:
        raise ConfigError(f"{{sample}} takes {' + '.join(map(str, portions))} of every class: more than all of it",
                          names=("sample",))
    g = torch.Generator().manual_seed(seed)
    parts: list[list[torch.Tensor]] = [[] for _ in portions]
    for c in torch.unique(labels).tolist():
        idx = torch.nonzero(labels == c).flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        start = 0
        for part, portion in zip(parts, portions):
            k = min(max(int(round(portion * len(idx))), 1), len(idx) - start)
            part.append(idx[start:start + k])
            start += k
    out = [torch.cat(part).sort().values for part in parts]
    if any(len(o) == 0 for o in out):
        raise DataError(f"sampling {', '.join(map(str, portions))} of {len(labels)} images leaves a sample empty")
    return out

