"""Class-folder image datasets: ImageNet's layout (train/<wnid>/*.JPEG, val/<wnid>/*.JPEG) or any
folder of a user's own images in that layout (``--dataset imagefolder``).

Images are decoded and augmented with Pillow in DataLoader worker processes (the ImageNet recipe:
random-resized crop + flip + colour jitter for training; resize 256 / centre crop 224 for
evaluation), handed over as uint8 tensors, and normalised on the training device. Pillow is an
optional dependency (``pip install 'dartsnas[images]'``); torchvision is not needed.
"""
from __future__ import annotations

import math
import os
import random
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from ..errors import DataError
from .augment import normalize
from .images import BatchOrder
from .classfolders import SPLIT_DIRS, class_folders

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _pil():
    try:
        from PIL import Image, ImageEnhance
    except ImportError:
        raise DataError("image folders need Pillow: pip install 'dartsnas[images]'") from None
    return Image, ImageEnhance


def find_split(root: str | os.PathLike, split: str) -> Path:
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"image folder {root} not found (expected {root}/train/<class>/*.jpg and {root}/val/<class>/)")
    for name in SPLIT_DIRS[split]:
        if (root / name).is_dir():
            return root / name
    raise DataError(f"{root}: no {split} split (expected one of {', '.join(SPLIT_DIRS[split])}/ holding class folders)")


def list_images(folder: Path, classes: list[str] | None = None) -> tuple[list[tuple[str, int]], list[str]]:
    """(path, class index) for every image under ``folder/<class>/``, classes sorted by name."""
    files, labels, classes = class_folders(folder, classes)
    return list(zip(files, labels)), classes


def random_resized_crop_box(width: int, height: int, rng: random.Random, scale=(0.08, 1.0),
                            ratio=(3 / 4, 4 / 3)) -> tuple[int, int, int, int]:
    """A crop box of random area fraction and aspect ratio (Szegedy et al., 2015), as (left, top, w, h)."""
    area = width * height
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1])))
        w, h = int(round(math.sqrt(target * aspect))), int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            return rng.randint(0, width - w), rng.randint(0, height - h), w, h
    # Fall back to a centre crop clamped to the allowed aspect ratios.
    aspect = width / height
    if aspect < ratio[0]:
        w, h = width, int(round(width / ratio[0]))
    elif aspect > ratio[1]:
        w, h = int(round(height * ratio[1])), height
    else:
        w, h = width, height
    return (width - w) // 2, (height - h) // 2, w, h


def color_jitter(img: Any, rng: random.Random, brightness: float = 0.4, contrast: float = 0.4,
                 saturation: float = 0.4, hue: float = 0.2) -> Any:
    """Random brightness, contrast, saturation and hue changes in a random order (the DARTS ImageNet recipe)."""
    Image, ImageEnhance = _pil()
    steps = [("b", brightness), ("c", contrast), ("s", saturation), ("h", hue)]
    rng.shuffle(steps)
    for kind, amount in steps:
        if amount <= 0:
            continue
        if kind == "h":
            shift = int(round(rng.uniform(-amount, amount) * 255))
            h, s, v = img.convert("HSV").split()
            h = h.point(lambda p: (p + shift) % 256)
            img = Image.merge("HSV", (h, s, v)).convert("RGB")
        else:
            factor = rng.uniform(max(0.0, 1 - amount), 1 + amount)
            enhancer = {"b": ImageEnhance.Brightness, "c": ImageEnhance.Contrast, "s": ImageEnhance.Color}[kind]
            img = enhancer(img).enhance(factor)
    return img


class ImageFolderDataset(Dataset):
    """Decoded, augmented uint8 [3, S, S] images of one split; random draws seeded per (epoch, index)."""

    def __init__(self, samples: list[tuple[str, int]], *, train: bool, image_size: int = 224,
                 resize: int | None = None, jitter: bool = True, seed: int = 0) -> None:
        self.samples, self.train, self.image_size = samples, train, image_size
        self.resize = resize if resize is not None else int(round(image_size * 256 / 224))
        self.jitter, self.seed, self.epoch = jitter, seed, 0

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        Image, _ = _pil()
        path, label = self.samples[i]
        try:
            with Image.open(path) as f:
                img = f.convert("RGB")
        except (OSError, ValueError) as e:
            raise DataError(f"{path}: cannot decode image ({e})") from None
        S = self.image_size
        if self.train:
            rng = random.Random((self.seed * 1_000_003 + self.epoch) * 10_000_019 + i)
            left, top, w, h = random_resized_crop_box(img.width, img.height, rng)
            img = img.resize((S, S), Image.BILINEAR, box=(left, top, left + w, top + h))
            if rng.random() < 0.5:
                img = img.transpose(Image.FLIP_LEFT_RIGHT)
            if self.jitter:
                img = color_jitter(img, rng)
        else:
            scale = self.resize / min(img.width, img.height)
            img = img.resize((max(S, round(img.width * scale)), max(S, round(img.height * scale))), Image.BILINEAR)
            left, top = (img.width - S) // 2, (img.height - S) // 2
            img = img.crop((left, top, left + S, top + S))
        return torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1), label


class GlobalBatches(Sampler):
    """This rank's rows of each global batch (``batch_size`` x ``world_size``) of one pass in a shared
    shuffled order, as :class:`~dartsnas.data.BatchLoader` takes them; a rank whose share of a last,
    short batch is empty skips it."""

    def __init__(self, n: int, *, batch_size: int, shuffle: bool, drop_last: bool,
                 generator: torch.Generator, rank: int = 0, world_size: int = 1) -> None:
        self.n, self.batch_size, self.shuffle, self.drop_last = n, batch_size, shuffle, drop_last
        self.generator, self.rank, self.world_size = generator, rank, world_size

    def _starts(self) -> range:
        step = self.batch_size * self.world_size
        end = self.n - self.n % step if self.drop_last else self.n
        return range(0, end, step)

    def __len__(self) -> int:
        first = self.rank * self.batch_size
        return sum(1 for start in self._starts() if start + first < self.n)

    def __iter__(self) -> Iterator[list[int]]:
        order = torch.randperm(self.n, generator=self.generator) if self.shuffle else torch.arange(self.n)
        first = self.rank * self.batch_size
        for start in self._starts():
            rows = order[start + first:start + first + self.batch_size]
            if len(rows):
                yield rows.tolist()


class FolderLoader:
    """Batches of an :class:`ImageFolderDataset` on ``device``, normalised there; resumable per epoch.
    Data parallel, each rank loads only its rows of every global batch (:class:`GlobalBatches`)."""

    def __init__(self, dataset: ImageFolderDataset, *, batch_size: int, shuffle: bool, drop_last: bool,
                 workers: int = 4, device: torch.device | str = "cpu", seed: int = 0,
                 channels_last: bool = False, mean=IMAGENET_MEAN, std=IMAGENET_STD,
                 rank: int = 0, world_size: int = 1) -> None:
        self.dataset, self.device = dataset, torch.device(device)
        self.batch_size, self.mean, self.std = batch_size, mean, std
        self.generator = torch.Generator().manual_seed(seed)
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        batches = GlobalBatches(len(dataset), batch_size=batch_size, shuffle=shuffle, drop_last=drop_last,
                                generator=self.generator, rank=rank, world_size=world_size)
        self.loader = DataLoader(dataset, batch_sampler=batches, num_workers=workers, generator=self.generator,
                                 pin_memory=self.device.type == "cuda", persistent_workers=False)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for x, y in self.loader:
            x = x.to(self.device, non_blocking=True)
            x = normalize(x, self.mean, self.std).contiguous(memory_format=self.memory_format)
            yield x, y.to(self.device, non_blocking=True)
        self.dataset.epoch += 1

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state(), "epoch": self.dataset.epoch}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
        self.dataset.epoch = int(state["epoch"])


class _Decoded:
    """The images of an :class:`ImageFolderDataset`, stacked per batch of rows in a worker process."""

    def __init__(self, dataset: ImageFolderDataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def batch(self, rows: list[int]) -> tuple[torch.Tensor, str]:
        try:
            return torch.stack([self.dataset[i][0] for i in rows]), ""
        except DataError as e:
            return torch.empty(0), str(e)


class FolderBatches(BatchOrder):
    """Batches of a subset of an :class:`ImageFolderDataset` in a :class:`~dartsnas.data.images.BatchOrder`:
    resumable mid-pass, ``next_batch()`` across passes, each rank's rows of a global batch, as the
    in-memory loaders. ``workers`` processes decode and augment the batches in the order they are
    taken; every pass redraws the crops and flips (seeded per pass and image); the device normalises."""

    def __init__(self, dataset: ImageFolderDataset, indices: torch.Tensor | None = None, *, batch_size: int,
                 shuffle: bool = True, drop_last: bool = False, device: torch.device | str = "cpu", seed: int = 0,
                 channels_last: bool = False, rank: int = 0, world_size: int = 1, workers: int = 4,
                 mean=IMAGENET_MEAN, std=IMAGENET_STD) -> None:
        super().__init__(len(dataset), indices, batch_size=batch_size, shuffle=shuffle, drop_last=drop_last,
                         seed=seed, rank=rank, world_size=world_size)
        self.dataset, self.device, self.workers, self.mean, self.std = dataset, torch.device(device), workers, mean, std
        self.labels = torch.tensor([label for _, label in dataset.samples], dtype=torch.int64)
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.passes = 0

    def _new_epoch(self) -> None:
        super()._new_epoch()
        self.passes += 1

    def _make(self, idx: torch.Tensor, pos: int) -> tuple[torch.Tensor, torch.Tensor]:
        rows = self._rows(idx)
        self.dataset.epoch = self.passes  # workers started now draw this pass's crops
        x = self._streamed(pos, _Decoded(self.dataset), self.workers).to(self.device, non_blocking=True)
        x = normalize(x, self.mean, self.std).contiguous(memory_format=self.memory_format)
        return x, self.labels.index_select(0, rows).to(self.device, non_blocking=True)

    def state_dict(self) -> dict:
        return {**super().state_dict(), "passes": self.passes}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.passes = int(state["passes"])


def folder_info(dataset: str, classes: list[str], size: int) -> dict[str, Any]:
    """What a run on ImageNet-layout folders records of its data: evaluation resizes to 256/224 of
    the crop, then centre-crops; ImageNet's statistics normalise."""
    return {"dataset": dataset, "classes": classes, "in_channels": 3, "image_size": [size, size],
            "resize": round(size * 256 / 224), "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)}


def folder_datasets(root: str | os.PathLike, *, image_size: int = 224, seed: int = 0,
                    jitter: bool = True) -> tuple[ImageFolderDataset, ImageFolderDataset, list[str]]:
    """Training and evaluation datasets of a class-folder root, and the class names."""
    train_samples, classes = list_images(find_split(root, "train"))
    test_samples, _ = list_images(find_split(root, "test"), classes)
    return (ImageFolderDataset(train_samples, train=True, image_size=image_size, jitter=jitter, seed=seed),
            ImageFolderDataset(test_samples, train=False, image_size=image_size), classes)
