"""Any map-style torch Dataset of (CHW image, label), passed from the Python API."""
from __future__ import annotations

from typing import Sequence

import torch
from torch.utils.data import Dataset

from ..errors import DataError
from .build import OwnDataOptions, check_classes, finish_dataset
from .decoding import as_image
from .images import ImageDataset
from .streaming import StreamedImages


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
    first = as_image(dataset[0][0], 0)
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
            image = as_image(item[0], i)
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
        check_classes(label_tensor, names, True, what)
    if not in_memory:
        images = StreamedImages((n, C, H, W), dataset=dataset, dtype=first.dtype)
    where = "in memory" if in_memory else "streamed"
    return finish_dataset("python", images, label_tensor, names, options,
                   f"{what}: {n} images {C}x{H}x{W}, {len(names)} classes, {where}", stats)
