"""CIFAR-10 from the official python-pickle batches (``cifar-10-batches-py``).

Each file present is checked against its official md5; the pickles are read with an unpickler that
only rebuilds numpy arrays and plain containers, so a tampered file cannot run code.
"""
from __future__ import annotations

import hashlib
import io
import os
import pickle
import shutil
import tarfile
import tempfile
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import DataError
from .images import ImageDataset

ARCHIVE_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
ARCHIVE_MD5 = "c58f30108f718f92721af3b95e74349a"
FOLDER = "cifar-10-batches-py"
TRAIN_FILES = ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5")
TEST_FILES = ("test_batch",)
MD5 = {
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "test_batch": "40351d587109b95175f43aff81a1287e",
    "batches.meta": "5ff9c542aee3614f3951f8cda6e48888",
}
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
# Per-channel statistics of the 50,000 training images (as used by the DARTS code).
MEAN = (0.49139968, 0.48215827, 0.44653124)
STD = (0.24703233, 0.24348505, 0.26158768)


class _ArrayUnpickler(pickle.Unpickler):
    """Rebuilds only numpy arrays and dtypes: everything else a pickle may name is refused."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
        ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
        ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def md5sum(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with open(path, "rb") as f:
            raw = _ArrayUnpickler(io.BytesIO(f.read()), encoding="bytes").load()
    except OSError as e:
        raise DataError(f"{path}: cannot read: {e.strerror or e}") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError,
            KeyError, MemoryError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: truncated or corrupted CIFAR-10 batch ({e.__class__.__name__}: {e})") from None
    if not isinstance(raw, dict) or b"data" not in raw or b"labels" not in raw:
        raise DataError(f"{path}: not a CIFAR-10 batch (expected a dict with b'data' and b'labels')")
    data, labels = raw[b"data"], raw[b"labels"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        shape = getattr(data, "shape", None)
        raise DataError(f"{path}: b'data' must be uint8 [N, 3072], got {type(data).__name__} {shape}")
    try:
        labels = np.asarray(labels, dtype=np.int64)
    except (TypeError, ValueError):
        raise DataError(f"{path}: b'labels' must be a list of integers") from None
    if labels.shape != (data.shape[0],):
        raise DataError(f"{path}: {labels.size} labels for {data.shape[0]} images")
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise DataError(f"{path}: labels must lie in 0..9, found {labels.min()}..{labels.max()}")
    return data.reshape(-1, 3, 32, 32), labels


def find_batches_dir(root: str | os.PathLike) -> Path:
    """The ``cifar-10-batches-py`` folder under ``root``, or ``root`` itself if it holds batches."""
    root = Path(root)
    if (root / FOLDER).is_dir():
        return root / FOLDER
    if root.is_dir() and any((root / name).is_file() for name in (*TRAIN_FILES, *TEST_FILES)):
        return root
    raise DataError(
        f"CIFAR-10 not found in {root}: expected {FOLDER}/ holding data_batch_1..5 and test_batch "
        "(pass --download to fetch the official archive, or point --data-dir at the folder)")


def load_cifar10(root: str | os.PathLike, split: str = "train", *, download: bool = False,
                 verify: bool = True) -> ImageDataset:
    """The training batches found (any of data_batch_1..5) or the test batch, as one dataset."""
    if split not in ("train", "test"):
        raise DataError(f"CIFAR-10 split must be 'train' or 'test', got {split!r}")
    if download:
        download_cifar10(root)
    folder = find_batches_dir(root)
    names = TRAIN_FILES if split == "train" else TEST_FILES
    present = [n for n in names if (folder / n).is_file()]
    if not present:
        raise DataError(f"{folder}: no CIFAR-10 {split} batch ({', '.join(names)}) found")
    images, labels = [], []
    for name in present:
        path = folder / name
        if verify:
            digest = md5sum(path)
            if digest != MD5[name]:
                raise DataError(
                    f"{path}: md5 {digest} does not match the official {MD5[name]} (corrupted or "
                    "truncated download; pass --no-verify only for your own files in this format)")
        x, y = _read_batch(path)
        images.append(x)
        labels.append(y)
    found = f"{', '.join(present)} ({len(present)} of {len(names)} {split} batches)"
    return ImageDataset(
        name="cifar10", images=torch.from_numpy(np.concatenate(images)),
        labels=torch.from_numpy(np.concatenate(labels)), num_classes=10, mean=MEAN, std=STD,
        crop_padding=4, flip=True, description=f"CIFAR-10 {split} from {folder}: {found}", classes=CLASSES)


def download_cifar10(root: str | os.PathLike) -> Path:
    """Fetch and unpack the official archive into ``root`` (md5-checked) unless already there."""
    root = Path(root)
    if (root / FOLDER).is_dir() and all((root / FOLDER / n).is_file() for n in MD5):
        return root / FOLDER
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root) as tmp:
        archive = Path(tmp) / "cifar-10-python.tar.gz"
        try:
            with urllib.request.urlopen(ARCHIVE_URL, timeout=60) as resp, open(archive, "wb") as f:
                shutil.copyfileobj(resp, f)
        except OSError as e:
            raise DataError(f"cannot download CIFAR-10 from {ARCHIVE_URL}: {e}") from None
        digest = md5sum(archive)
        if digest != ARCHIVE_MD5:
            raise DataError(f"downloaded archive has md5 {digest}, expected {ARCHIVE_MD5}")
        with tarfile.open(archive) as tar:
            for member in tar.getmembers():
                if not (member.isfile() or member.isdir()) or member.name.startswith(("/", "..")) \
                        or ".." in Path(member.name).parts:
                    raise DataError(f"unexpected entry {member.name!r} in the CIFAR-10 archive")
            tar.extractall(tmp)
        os.replace(Path(tmp) / FOLDER, root / FOLDER)
    return root / FOLDER
