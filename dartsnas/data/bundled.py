"""A real dataset that needs no download: scikit-learn's 8x8 handwritten digits.

1,797 grey-scale images of 10 classes (the UCI optical-recognition test set). It lets the README's
first command run a real search anywhere, offline, in minutes on a laptop CPU.
"""
from __future__ import annotations

import numpy as np
import torch

from pathlib import Path

from ..errors import DataError
from .images import ImageDataset


def _sklearn_digits():
    try:
        from sklearn.datasets import load_digits as _sk_load_digits
    except ImportError:
        raise DataError("the digits dataset needs scikit-learn: pip install 'dartsnas[digits]'") from None
    return _sk_load_digits()


def write_digits_folder(root: str | Path, per_class: int | None = None) -> Path:
    """The digits as PNG class folders, the layout of a user's own images: ``root/train/<digit>/*.png``
    and ``root/val/<digit>/*.png`` (the test split: every fifth image, as :func:`load_digits`);
    ``per_class`` caps the images per class and split. Needs Pillow."""
    from PIL import Image
    bunch = _sklearn_digits()
    root = Path(root)
    counts: dict[tuple[str, int], int] = {}
    for i, (image, label) in enumerate(zip(bunch.images, bunch.target)):
        split = "val" if i % 5 == 4 else "train"
        n = counts.get((split, int(label)), 0)
        if per_class is not None and n >= per_class:
            continue
        counts[(split, int(label))] = n + 1
        folder = root / split / str(label)
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.rint(image * (255.0 / 16.0)).astype(np.uint8)).save(folder / f"{i:04d}.png")
    return root


def load_digits(split: str = "train") -> ImageDataset:
    """Every fifth image (index % 5 == 4) is the test split, the rest the training split."""
    if split not in ("train", "test"):
        raise DataError(f"digits split must be 'train' or 'test', got {split!r}")
    bunch = _sklearn_digits()
    # Pixel values are 0..16: rescale to the uint8 range shared by every image pipeline.
    images = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)[:, None]
    labels = bunch.target.astype(np.int64)
    test = np.arange(len(labels)) % 5 == 4
    keep = test if split == "test" else ~test
    train_pixels = images[~test].astype(np.float64) / 255.0
    mean, std = float(train_pixels.mean()), float(train_pixels.std())
    return ImageDataset(
        name="digits", images=torch.from_numpy(images[keep].copy()),
        labels=torch.from_numpy(labels[keep].copy()), num_classes=10, mean=(mean,), std=(std,),
        crop_padding=1, flip=False,  # a mirrored digit is another glyph
        description=f"scikit-learn digits {split}: {int(keep.sum())} images 1x8x8",
        classes=tuple(str(d) for d in range(10)))
