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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ..errors import DataError
from .images import ImageDataset

#: Files with these suffixes are read as images; anything else (.DS_Store, Thumbs.db, notes) is ignored.
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
GREY_MODES = ("1", "L", "LA", "I", "I;16", "F")
#: Folder names of the splits under a class-folder root.
SPLIT_DIRS = {"train": ("train",), "test": ("val", "validation", "test")}
#: Statistics of a streamed dataset come from this many training images (a seeded sample).
STATS_SAMPLE = 2000
DEFAULT_MEMORY_GB = 2.0


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


def _identity(item: Any) -> Any:
    return item


class StreamedImages(Dataset):
    """Images decoded on demand (in DataLoader workers), shaped like an in-memory [N, C, H, W] tensor.

    ``files``: image paths decoded with ``decoding``; or ``dataset``: a torch Dataset of (image, label).
    """

    def __init__(self, shape: tuple[int, int, int, int], *, files: Sequence[str] | None = None,
                 decoding: Decoding | None = None, dataset: Dataset | None = None,
                 dtype: torch.dtype = torch.uint8) -> None:
        self.shape, self.files, self.decoding, self.dataset, self.dtype = shape, files, decoding, dataset, dtype

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, i: int) -> torch.Tensor:
        if self.dataset is not None:
            return _as_image(self.dataset[i][0], i)
        try:
            return self.decoding(self.files[i])
        except Exception as e:  # Pillow raises OSError, ValueError, SyntaxError, ... for bad files
            raise DataError(f"{self.files[i]}: cannot decode image ({e.__class__.__name__}: {e})") from None

    def batch(self, rows: list[int]) -> tuple[torch.Tensor, str]:
        """The images at ``rows`` stacked, or an empty tensor and the message of the first failure
        (run in a worker process, where an exception would reach the user as a traceback)."""
        if not rows:  # a rank's empty share of a last, short global batch
            return torch.empty((0, *self.shape[1:]), dtype=self.dtype), ""
        try:
            return torch.stack([self[i] for i in rows]), ""
        except Exception as e:
            return torch.empty(0), (str(e).splitlines() or [e.__class__.__name__])[0]


def _as_image(image: Any, index: int) -> torch.Tensor:
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


# -- statistics, splits ------------------------------------------------------------------------------


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


# -- loading ---------------------------------------------------------------------------------------


@dataclass
class OwnDataOptions:
    """What the commands' data flags say about a user's images."""

    image_size: int | None = None
    skip_bad_images: bool = False
    flip: bool = True
    memory_gb: float = DEFAULT_MEMORY_GB
    stats: tuple[tuple[float, ...], tuple[float, ...]] | None = None  # a trained model's, for evaluation
    classes: Sequence[str] | None = None                               # a trained model's, for evaluation


def _padding(size: tuple[int, int]) -> int:
    return max(1, round(min(size) / 8))  # CIFAR's 4 of 32


def _finish(name: str, images: Any, labels: torch.Tensor, classes: Sequence[str], options: OwnDataOptions,
            description: str, stats: tuple | None) -> ImageDataset:
    mean, std = stats if stats is not None else channel_stats(images)
    return ImageDataset(name=name, images=images, labels=labels, num_classes=len(classes), mean=mean, std=std,
                        crop_padding=_padding(tuple(images.shape[2:])), flip=options.flip,
                        description=description, classes=tuple(classes), resize=options.image_size)


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
        return _load_folder(Path(path), options, train=train, test=test)
    if name == "arrays":
        return _load_arrays(Path(path), options, train=train, test=test)
    raise DataError(f"unknown dataset kind {name!r}")


def class_folders(folder: Path, classes: Sequence[str] | None) -> tuple[list[str], list[int], list[str]]:
    """(files, labels, class names) of ``folder/<class>/...``; hidden and non-image files ignored."""
    found = sorted(d.name for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))
    if classes is None:
        if not found:
            raise DataError(f"{folder}: no class folders (expected {folder}/<class>/<image files>)")
        if len(found) == 1:
            raise DataError(f"{folder}: a single class folder ({found[0]}): classification needs at least two")
        classes = found
    else:
        unknown = sorted(set(found) - set(classes))
        if unknown:
            raise DataError(f"{folder}: class folder(s) {', '.join(unknown[:5])} not in the training split")
    index = {c: i for i, c in enumerate(classes)}
    files, labels = [], []
    for c in found:
        images = sorted(str(p) for p in (folder / c).rglob("*")
                        if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()
                        and not any(part.startswith(".") for part in p.relative_to(folder).parts))
        if not images:
            raise DataError(f"{folder / c}: empty class folder (no {', '.join(IMAGE_EXTENSIONS[:4])}... files)")
        files += images
        labels += [index[c]] * len(images)
    return files, labels, list(classes)


def _probe(files: list[str], labels: list[int], skip_bad: bool) -> tuple[list[str], list[int], list, int]:
    """Sizes and modes from the files' headers; unreadable files refused (or skipped)."""
    from PIL import Image, UnidentifiedImageError
    kept, kept_labels, info, bad = [], [], [], 0
    for path, label in zip(files, labels):
        try:
            with Image.open(path) as img:
                info.append((img.size, img.mode))
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
            if not skip_bad:
                raise DataError(f"{path}: not a readable image ({e.__class__.__name__}); "
                                "--skip-bad-images skips such files") from None
            bad += 1
            continue
        kept.append(path)
        kept_labels.append(label)
    return kept, kept_labels, info, bad


def _load_folder(root: Path, options: OwnDataOptions, *, train: bool,
                 test: bool) -> tuple[ImageDataset | None, ImageDataset | None]:
    try:
        import PIL  # noqa: F401
    except ImportError:
        raise DataError("image folders need Pillow: pip install 'dartsnas[images]'") from None
    if not root.is_dir():
        raise DataError(f"image folder {root} not found (expected {root}/train/<class>/<images>, "
                        f"optionally {root}/val/<class>/)")
    train_dir = root / "train"
    if not train_dir.is_dir():
        raise DataError(f"{root}: no train/ folder (expected {root}/train/<class>/<images>)")
    test_dir = next((root / n for n in SPLIT_DIRS["test"] if (root / n).is_dir()), None)
    splits = {"train": class_folders(train_dir, options.classes)} if train else {}
    classes = splits["train"][2] if train else list(options.classes)
    if test and test_dir is not None:
        splits["test"] = class_folders(test_dir, classes)
    elif not train:
        raise DataError(f"{root}: no val/ (or validation/, test/) folder of class folders to evaluate on")
    probed, skipped = {}, 0
    for split, (files, labels, _) in splits.items():
        files, labels, info, bad = _probe(files, labels, options.skip_bad_images)
        if not files:
            raise DataError(f"{root / split}: no readable images")
        probed[split] = (files, labels, info)
        skipped += bad
    every = [(f, i) for files, _, infos in probed.values() for f, i in zip(files, infos)]
    channels, grey_content = colour_by_content([f for f, (_, mode) in every if mode not in GREY_MODES])
    if options.image_size is None:
        (first, (size0, _)) = every[0]
        other = next(((f, s) for f, (s, _) in every if s != size0), None)
        if other is not None:
            raise DataError(f"images of different sizes: {first} is {size0[0]}x{size0[1]}, {other[0]} is "
                            f"{other[1][0]}x{other[1][1]}: pass --image-size S to resize them (shorter side "
                            "to S, then a centre crop)")
        H, W = size0[1], size0[0]
    else:
        H = W = options.image_size
    decoding = Decoding(channels, options.image_size)
    n_total = sum(len(p[0]) for p in probed.values())
    in_memory = n_total * channels * H * W <= options.memory_gb * 2**30
    out: dict[str, ImageDataset] = {}
    for split in ("train", "test"):
        if split not in probed:
            continue
        files, labels, _ = probed[split]
        if in_memory:
            images, files, labels, bad = _decode_all(files, labels, decoding, options.skip_bad_images)
            skipped += bad
        else:
            images = StreamedImages((len(files), channels, H, W), files=files, decoding=decoding)
        label_tensor = torch.tensor(labels, dtype=torch.int64)
        _check_classes(label_tensor, classes, split == "train", f"{root / split}")
        where = "in memory" if in_memory else "streamed"
        converted = len(grey_content.intersection(files))
        description = (f"{root}: {split} {len(files)} images {channels}x{H}x{W}, {len(classes)} classes, {where}"
                       + (f" ({skipped} unreadable files skipped)" if skipped and split == "train" else "")
                       + (f" ({converted} files saved in colour hold grey pixels only: read as grey)"
                          if converted else ""))
        stats = options.stats if split == "train" or not train else (out["train"].mean, out["train"].std)
        out[split] = _finish("imagefolder", images, label_tensor, classes, options, description, stats)
    return out.get("train"), out.get("test")


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
                        collate_fn=_identity)
    for is_colour in loader:
        if is_colour:
            return 3, set()
    return 1, set(colour_mode_files)


def _decode_all(files: list[str], labels: list[int], decoding: Decoding, skip_bad: bool,
                workers: int = 0) -> tuple[torch.Tensor, list[str], list[int], int]:
    """Every file decoded into one uint8 tensor (worker processes for large sets)."""
    workers = workers or (min(4, os.cpu_count() or 1) if len(files) > 2000 else 0)
    loader = DataLoader(_Decoded(files, decoding), batch_size=None, num_workers=workers, collate_fn=_identity)
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


def _check_classes(labels: torch.Tensor, classes: Sequence[str], train: bool, where: str) -> None:
    if train:
        counts = torch.bincount(labels, minlength=len(classes))
        empty = [classes[i] for i in torch.nonzero(counts == 0).flatten().tolist()]
        if empty:
            raise DataError(f"{where}: class {empty[0]!r} has no readable images")


def _load_arrays(path: Path, options: OwnDataOptions, *, train: bool,
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
    _check_classes(y_train, classes, True, f"{path} (y_train)")
    description = f"{path}: train {len(y_train)} images {'x'.join(map(str, x_train.shape[1:]))}, {len(classes)} classes"
    train_ds = _finish("arrays", x_train, y_train, classes, options, description, options.stats)
    if not test or "x_test" not in arrays:
        if not train:
            raise DataError(f"{path}: no x_test / y_test arrays to evaluate on")
        return train_ds, None
    y_test = _labels(arrays["y_test"], path, "y_test")
    x_test = _images(arrays["x_test"], path, "x_test", len(y_test))
    if x_test.shape[1:] != x_train.shape[1:]:
        raise DataError(f"{path}: x_test images are {tuple(x_test.shape[1:])}, x_train images {tuple(x_train.shape[1:])}")
    _label_range(y_test, len(classes), path, "y_test")
    test_ds = _finish("arrays", x_test, y_test, classes, options, f"{path}: test {len(y_test)} images",
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


def from_torch_dataset(dataset: Dataset, options: OwnDataOptions, *, classes: Sequence[str] | None = None,
                       stats: tuple | None = None, what: str = "train_data") -> ImageDataset:
    """An :class:`ImageDataset` of any map-style Dataset of (CHW image, label): held in memory when it
    fits ``options.memory_gb``, else streamed from the Dataset by DataLoader workers."""
    if isinstance(dataset, ImageDataset):
        return dataset
    try:
        n = len(dataset)
    except TypeError:
        raise DataError(f"{what}: a map-style Dataset with __len__ is needed") from None
    if n == 0:
        raise DataError(f"{what}: empty dataset")
    first = _as_image(dataset[0][0], 0)
    C, H, W = first.shape
    bytes_per = first.element_size() * first.numel()
    labels = []
    in_memory = n * bytes_per <= options.memory_gb * 2**30
    images = torch.empty((n, C, H, W), dtype=first.dtype) if in_memory else None
    for i in range(n):  # labels always; the images too when they fit in memory
        item = dataset[i]
        if not isinstance(item, (tuple, list)) or len(item) < 2:
            raise DataError(f"{what}: item {i} is not an (image, label) pair")
        label = item[1]
        label = int(label.item() if isinstance(label, torch.Tensor) else label)
        labels.append(label)
        if in_memory:
            image = _as_image(item[0], i)
            if image.shape != first.shape or image.dtype != first.dtype:
                raise DataError(f"{what}: item {i} is {image.dtype} {tuple(image.shape)}, item 0 "
                                f"{first.dtype} {tuple(first.shape)}: every image needs the same shape and dtype")
            if image.is_floating_point() and image.numel() and (image.min() < 0 or image.max() > 1):
                raise DataError(f"{what}: item {i} has float values outside [0, 1]; pass uint8 0..255 or "
                                "float images in [0, 1] (not normalised ones)")
            images[i] = image
    label_tensor = torch.tensor(labels, dtype=torch.int64)
    k = len(classes) if classes is not None else int(label_tensor.max()) + 1
    if (label_tensor < 0).any() or (label_tensor >= k).any():  # a negative label first: it is not a class
        i = int(torch.nonzero((label_tensor < 0) | (label_tensor >= k))[0])
        raise DataError(f"{what}: item {i} has label {labels[i]}, outside 0..{k - 1}")
    if classes is None and k < 2:
        raise DataError(f"{what}: a single class: classification needs at least two")
    names = list(classes) if classes is not None else [str(i) for i in range(k)]
    if stats is None:
        _check_classes(label_tensor, names, True, what)
    if not in_memory:
        images = StreamedImages((n, C, H, W), dataset=dataset, dtype=first.dtype)
    where = "in memory" if in_memory else "streamed"
    return _finish("python", images, label_tensor, names, options,
                   f"{what}: {n} images {C}x{H}x{W}, {len(names)} classes, {where}", stats)


def stream_batches(images: StreamedImages, batches: list[list[int]], workers: int) -> Any:
    """An iterator of uint8 batches for the given index lists, decoded by ``workers`` processes."""
    loader = DataLoader(_BatchSource(images), batch_size=None, sampler=batches, num_workers=workers,
                        collate_fn=_identity)
    for stacked, error in loader:
        if error:
            raise DataError(error)
        yield stacked


class _BatchSource(Dataset):
    def __init__(self, images: StreamedImages) -> None:
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, rows: list[int]) -> tuple[torch.Tensor, str]:
        return self.images.batch(rows)


__all__ = ["IMAGE_EXTENSIONS", "OwnDataOptions", "StreamedImages", "channel_stats", "from_torch_dataset",
           "load_own_data", "resize_and_centre_crop", "stratified_split"]
