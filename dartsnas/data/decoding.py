"""Decoding image files: grey or RGB by content, the optional resize, worker processes for many files."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ..errors import DataError


GREY_MODES = ("1", "L", "LA", "I", "I;16", "F")


@dataclass
class Decoding:
    """How an image file becomes a [C, H, W] uint8 tensor: grey or RGB, and the optional resize."""

    channels: int
    image_size: int | None = None  # shorter side resized to it, then a centre crop

    def __call__(self, path: str | os.PathLike) -> torch.Tensor:
        from PIL import Image
        with Image.open(path) as img:
            img = img.convert("L" if self.channels == 1 else "RGB")
            if self.image_size is not None:
                img = resize_and_centre_crop(img, self.image_size)
            array = np.asarray(img, dtype=np.uint8)
        array = array[:, :, None] if array.ndim == 2 else array
        return torch.from_numpy(array.copy()).permute(2, 0, 1)


def resize_and_centre_crop(img: Any, size: int) -> Any:
    """Shorter side to ``size`` (bilinear, antialiased), then the central ``size`` x ``size`` square."""
    from PIL import Image
    scale = size / min(img.width, img.height)
    w, h = max(size, round(img.width * scale)), max(size, round(img.height * scale))
    if (w, h) != (img.width, img.height):
        img = img.resize((w, h), Image.BILINEAR)
    left, top = (w - size) // 2, (h - size) // 2
    return img.crop((left, top, left + size, top + size))


class _Decoded(Dataset):
    """Decodes files in worker processes; a failure comes back as its message, not an exception
    (an exception raised in a worker reaches the user as a multi-line traceback)."""

    def __init__(self, paths: Sequence[str], decoding: Decoding) -> None:
        self.paths, self.decoding = list(paths), decoding

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[int, torch.Tensor | None, str]:
        try:
            return i, self.decoding(self.paths[i]), ""
        except Exception as e:  # Pillow raises OSError, ValueError, SyntaxError, ... for bad files
            return i, None, f"{e.__class__.__name__}: {e}".splitlines()[0]


def identity(item: Any) -> Any:
    return item


def as_image(image: Any, index: int) -> torch.Tensor:
    """A Dataset item's image as a CHW tensor, uint8 or float in [0, 1]."""
    if isinstance(image, np.ndarray):
        image = torch.from_numpy(image)
    if not isinstance(image, torch.Tensor):
        raise DataError(f"dataset item {index}: the image is a {type(image).__name__}, expected a CHW tensor")
    if image.dim() != 3:
        raise DataError(f"dataset item {index}: image of shape {tuple(image.shape)}, expected CHW")
    if image.dtype == torch.uint8:
        return image
    if not image.is_floating_point():
        raise DataError(f"dataset item {index}: image dtype {image.dtype}, expected uint8 or float in [0, 1]")
    bad = int((~torch.isfinite(image)).sum())
    if bad:
        raise DataError(f"dataset item {index}: the image holds {bad} NaN or infinite values")
    return image.float()


class _ColourCheck(Dataset):
    """Whether a file has a pixel whose channels differ (None: undecodable, reported when decoded)."""

    def __init__(self, paths: Sequence[str]) -> None:
        self.paths = list(paths)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> bool | None:
        from PIL import Image
        try:
            with Image.open(self.paths[i]) as img:
                rgb = np.asarray(img.convert("RGB"))
        except Exception:  # Pillow raises OSError, ValueError, SyntaxError, ... for bad files
            return None
        return bool((rgb[..., 0] != rgb[..., 1]).any() or (rgb[..., 1] != rgb[..., 2]).any())


def colour_by_content(colour_mode_files: Sequence[str], workers: int = 0) -> tuple[int, set[str]]:
    """(channels, files read as grey) of a dataset whose files ``colour_mode_files`` are saved in a colour
    mode (RGB, palette, CMYK...), the rest grey: 3 channels as soon as one of them has a pixel whose
    channels differ; else 1, and those files are grey images saved in colour (converting them loses
    nothing, and the first layer's compute falls 3x). The scan stops at the first colour image."""
    if not colour_mode_files:
        return 1, set()
    workers = workers or (min(4, os.cpu_count() or 1) if len(colour_mode_files) > 2000 else 0)
    loader = DataLoader(_ColourCheck(colour_mode_files), batch_size=None, num_workers=workers,
                        collate_fn=identity)
    for is_colour in loader:
        if is_colour:
            return 3, set()
    return 1, set(colour_mode_files)


def decode_all(files: list[str], labels: list[int], decoding: Decoding, skip_bad: bool,
                workers: int = 0) -> tuple[torch.Tensor, list[str], list[int], int]:
    """Every file decoded into one uint8 tensor (worker processes for large sets)."""
    workers = workers or (min(4, os.cpu_count() or 1) if len(files) > 2000 else 0)
    loader = DataLoader(_Decoded(files, decoding), batch_size=None, num_workers=workers, collate_fn=identity)
    images, kept, kept_labels, bad = [], [], [], 0
    for i, image, error in loader:
        if image is None:
            if not skip_bad:
                raise DataError(f"{files[i]}: cannot decode image ({error}); --skip-bad-images skips such files")
            bad += 1
            continue
        images.append(image)
        kept.append(files[i])
        kept_labels.append(labels[i])
    if not images:
        raise DataError("no image could be decoded")
    return torch.stack(images), kept, kept_labels, bad
