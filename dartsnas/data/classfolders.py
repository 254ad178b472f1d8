"""A user's images in class folders (``imagefolder``): ROOT/train/<class>/ and an optional val/<class>/."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch

from ..errors import DataError
from .build import OwnDataOptions, check_classes, finish_dataset
from .decoding import GREY_MODES, Decoding, colour_by_content, decode_all
from .images import ImageDataset
from .streaming import StreamedImages


#: Files with these suffixes are read as images; anything else (.DS_Store, Thumbs.db, notes) is ignored.
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


#: Folder names of the splits under a class-folder root.
SPLIT_DIRS = {"train": ("train",), "test": ("val", "validation", "test")}


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


def load_folder(root: Path, options: OwnDataOptions, *, train: bool,
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
            images, files, labels, bad = decode_all(files, labels, decoding, options.skip_bad_images)
            skipped += bad
        else:
            images = StreamedImages((len(files), channels, H, W), files=files, decoding=decoding)
        label_tensor = torch.tensor(labels, dtype=torch.int64)
        check_classes(label_tensor, classes, split == "train", f"{root / split}")
        where = "in memory" if in_memory else "streamed"
        converted = len(grey_content.intersection(files))
        description = (f"{root}: {split} {len(files)} images {channels}x{H}x{W}, {len(classes)} classes, {where}"
                       + (f" ({skipped} unreadable files skipped)" if skipped and split == "train" else "")
                       + (f" ({converted} files saved in colour hold grey pixels only: read as grey)"
                          if converted else ""))
        stats = options.stats if split == "train" or not train else (out["train"].mean, out["train"].std)
        out[split] = finish_dataset("imagefolder", images, label_tensor, classes, options, description, stats)
    return out.get("train"), out.get("test")
