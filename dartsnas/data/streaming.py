"""Images too large for memory: decoded on demand, batch by batch, in DataLoader worker processes."""
from __future__ import annotations

from typing import Any, Sequence

import torch
from torch.utils.data import DataLoader, Dataset

from ..errors import DataError
from .decoding import Decoding, as_image, identity


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
            return as_image(self.dataset[i][0], i)
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


def stream_batches(images: StreamedImages, batches: list[list[int]], workers: int) -> Any:
    """An iterator of uint8 batches for the given index lists, decoded by ``workers`` processes."""
    loader = DataLoader(_BatchSource(images), batch_size=None, sampler=batches, num_workers=workers,
                        collate_fn=identity)
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
