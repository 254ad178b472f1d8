"""A user's images as NumPy arrays (``arrays``): an .npz file with x_train, y_train[, x_test, y_test, classes]."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..errors import DataError
from .build import OwnDataOptions, check_classes, finish_dataset
from .images import ImageDataset


def load_arrays(path: Path, options: OwnDataOptions, *, train: bool,
                 test: bool) -> tuple[ImageDataset | None, ImageDataset | None]:
    if not path.is_file():
        raise DataError(f"{path}: no such file (--dataset arrays reads an .npz with x_train, y_train[, x_test, y_test])")
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except Exception as e:  # zipfile.BadZipFile, ValueError (pickled objects), OSError, EOFError ...
        raise DataError(f"{path}: not a readable .npz file ({e.__class__.__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None
    for key in ("x_train", "y_train"):
        if key not in arrays:
            raise DataError(f"{path}: no {key!r} array (found: {', '.join(sorted(arrays)) or 'none'})")
    if ("x_test" in arrays) != ("y_test" in arrays):
        raise DataError(f"{path}: x_test and y_test go together (found only {'x_test' if 'x_test' in arrays else 'y_test'})")
    y_train = _labels(arrays["y_train"], path, "y_train")
    if options.classes is not None:
        classes = list(options.classes)
    elif "classes" in arrays:
        classes = [str(c) for c in arrays["classes"].reshape(-1).tolist()]
    else:
        classes = [str(i) for i in range(int(y_train.max()) + 1 if len(y_train) else 0)]
    if classes:
        _label_range(y_train, len(classes), path, "y_train")  # a negative label first: it is not a class
    if len(classes) < 2:
        raise DataError(f"{path}: y_train holds a single class: classification needs at least two")
    x_train = _images(arrays["x_train"], path, "x_train", len(y_train))
    check_classes(y_train, classes, True, f"{path} (y_train)")
    description = f"{path}: train {len(y_train)} images {'x'.join(map(str, x_train.shape[1:]))}, {len(classes)} classes"
    train_ds = finish_dataset("arrays", x_train, y_train, classes, options, description, options.stats)
    if not test or "x_test" not in arrays:
        if not train:
            raise DataError(f"{path}: no x_test / y_test arrays to evaluate on")
        return train_ds, None
    y_test = _labels(arrays["y_test"], path, "y_test")
    x_test = _images(arrays["x_test"], path, "x_test", len(y_test))
    if x_test.shape[1:] != x_train.shape[1:]:
        raise DataError(f"{path}: x_test images are {tuple(x_test.shape[1:])}, x_train images {tuple(x_train.shape[1:])}")
    _label_range(y_test, len(classes), path, "y_test")
    test_ds = finish_dataset("arrays", x_test, y_test, classes, options, f"{path}: test {len(y_test)} images",
                      (train_ds.mean, train_ds.std))
    return (train_ds if train else None), test_ds


def _labels(y: np.ndarray, path: Path, key: str) -> torch.Tensor:
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"{path}: {key} must be a 1-D array of integer labels, got {y.dtype} {y.shape}")
    return torch.from_numpy(y.astype(np.int64))


def _label_range(y: torch.Tensor, k: int, path: Path, key: str) -> None:
    bad = (y < 0) | (y >= k)
    if bad.any():
        i = int(torch.nonzero(bad)[0])
        raise DataError(f"{path}: {key}[{i}] = {int(y[i])} is outside 0..{k - 1}: labels index the "
                        f"{k} class{'es' if k != 1 else ''}")


def _images(x: np.ndarray, path: Path, key: str, n: int) -> torch.Tensor:
    if x.ndim == 3:
        x = x[:, None]                      # N x H x W: grey
    elif x.ndim == 4:
        x = np.ascontiguousarray(x.transpose(0, 3, 1, 2))  # N x H x W x C -> N x C x H x W
    else:
        raise DataError(f"{path}: {key} must be N x H x W or N x H x W x C, got shape {x.shape}")
    if len(x) != n:
        raise DataError(f"{path}: {key} holds {len(x)} images but {key.replace('x_', 'y_')} {n} labels")
    if x.dtype == np.uint8:
        return torch.from_numpy(x)
    if np.issubdtype(x.dtype, np.floating):
        finite = np.isfinite(x)
        bad = int(finite.size - np.count_nonzero(finite))
        if bad:
            first = int(np.argwhere(~finite.reshape(len(x), -1).all(axis=1))[0, 0])
            raise DataError(f"{path}: {key} holds {bad} NaN or infinite values (the first in image {first}); "
                            "images must be finite, uint8 0..255 or float in [0, 1]")
        if x.size and (x.min() < 0 or x.max() > 1):
            raise DataError(f"{path}: {key} is {x.dtype} with values in [{x.min():.3g}, {x.max():.3g}]; "
                            "images must be uint8 0..255 or float in [0, 1]")
        return torch.from_numpy(x.astype(np.float32))
    raise DataError(f"{path}: {key} has dtype {x.dtype}; images must be uint8 0..255 or float in [0, 1]")
