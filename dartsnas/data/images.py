"""The image dataset type every source becomes, and the resumable batch loaders (augmentation on
the device, streamed images decoded by worker processes)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator

import torch

from ..errors import ConfigError, DataError
from .augment import cutout, normalize, random_crop, random_flip
from .streaming import stream_batches


@dataclass
class ImageDataset:
    """A whole image split: images [N, C, H, W] (a uint8 tensor, a float one in [0, 1], or
    :class:`~dartsnas.data.streaming.StreamedImages` decoded on demand) and int64 labels [N].

    ``classes`` names the labels; ``resize`` is the size images were resized and centre-cropped to
    when they were read (None: used as they are). Both travel with a trained model, so that exported
    networks and ``predict`` see images prepared the same way.
    """

    name: str
    images: Any
    labels: torch.Tensor
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    crop_padding: int = 4
    flip: bool = True
    description: str = ""
    classes: tuple[str, ...] | None = None
    resize: int | None = None

    def __post_init__(self) -> None:
        shape = tuple(self.images.shape)
        if len(shape) != 4:
            raise DataError(f"{self.name}: images must be [N, C, H, W], got shape {shape}")
        if isinstance(self.images, torch.Tensor) and not (self.images.dtype == torch.uint8
                                                           or self.images.is_floating_point()):
            raise DataError(f"{self.name}: images must be uint8 or float, got {self.images.dtype}")
        if self.labels.shape != (shape[0],):
            raise DataError(f"{self.name}: labels must be a tensor [{shape[0]}] matching the images, "
                            f"got shape {tuple(self.labels.shape)}")

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def in_channels(self) -> int:
        return self.images.shape[1]

    @property
    def image_size(self) -> tuple[int, int]:
        return (self.images.shape[2], self.images.shape[3])

    @property
    def in_memory(self) -> bool:
        return isinstance(self.images, torch.Tensor)

    def info(self) -> dict[str, Any]:
        """What a trained model needs to know of its data to read new images (saved with it)."""
        return {"dataset": self.name, "classes": list(self.classes or [str(i) for i in range(self.num_classes)]),
                "in_channels": self.in_channels, "image_size": list(self.image_size), "resize": self.resize,
                "mean": list(self.mean), "std": list(self.std)}


class BatchOrder:
    """The order batches are taken in: a subset of example indices shuffled by an explicit generator
    each pass, and the position in the pass, both part of :meth:`state_dict` so that a resumed run
    sees exactly the batches an uninterrupted one would. Subclasses make a batch of indices.

    Data parallel (``world_size`` > 1): every rank walks the same shuffled order in global batches of
    ``batch_size * world_size`` and keeps its own ``batch_size`` rows; an epoch is one pass over the
    subset for all ranks together. Training loaders then drop a last incomplete global batch
    (``drop_last``), so that every rank's gradient is over the same number of examples.
    """

    def __init__(self, n: int, indices: torch.Tensor | None = None, *, batch_size: int, shuffle: bool = True,
                 drop_last: bool = False, seed: int = 0, rank: int = 0, world_size: int = 1) -> None:
        if batch_size < 1:
            raise ConfigError(f"{{batch_size}} must be >= 1, got {batch_size}", names=("batch_size",))
        if not 0 <= rank < world_size:
            raise ConfigError(f"rank {rank} outside a world of {world_size}")
        self.indices = torch.arange(n) if indices is None else indices.clone()
        if len(self.indices) == 0:
            raise DataError("a loader needs at least one example (the split or the dataset is empty)")
        self.batch_size = batch_size
        self.rank, self.world_size = rank, world_size
        self.global_batch = batch_size * world_size
        if world_size > 1 and drop_last and len(self.indices) < self.global_batch:
            raise ConfigError(f"{len(self.indices)} examples do not fill one global batch of "
                              f"{batch_size} x {world_size} processes: lower --batch-size")
        self.shuffle, self.drop_last = shuffle, drop_last
        self.generator = torch.Generator().manual_seed(seed)
        self._order: torch.Tensor | None = None
        self._pos = 0
        self._stream: Iterator[torch.Tensor] | None = None  # decoded batches, for loaders that stream
        self._stream_pos = -1

    def __len__(self) -> int:
        n = len(self.indices)
        if self.drop_last and n >= self.global_batch:
            return n // self.global_batch
        return -(-n // self.global_batch)

    def _new_epoch(self) -> None:
        if self.shuffle:
            self._order = self.indices[torch.randperm(len(self.indices), generator=self.generator)]
        else:
            self._order = self.indices
        self._pos = 0
        self._close_stream()

    def _exhausted(self) -> bool:
        limit = min(len(self) * self.global_batch, len(self.indices))
        return self._order is None or self._pos >= limit

    def next_batch(self) -> Any:
        """The next batch, starting a new (reshuffled) pass over the subset when one is used up."""
        if self._exhausted():
            self._new_epoch()
        pos = self._pos
        idx = self._order[pos:pos + self.global_batch]
        self._pos += self.global_batch
        return self._make(idx, pos)

    def restart(self) -> None:
        """Drop the pass under way: the next batch starts a new one (DARTS-PT's capped measurements
        each read the same first batches)."""
        self._order = None
        self._close_stream()

    def __iter__(self) -> Iterator[Any]:
        """One pass over the subset (continuing a pass a restored state left unfinished)."""
        if self._exhausted():
            self._new_epoch()
        while not self._exhausted():
            yield self.next_batch()

    def _rows(self, idx: torch.Tensor) -> torch.Tensor:
        """This rank's rows of a global batch."""
        first = self.rank * self.batch_size
        return idx[first:first + self.batch_size]

    def _make(self, idx: torch.Tensor, pos: int) -> Any:
        raise NotImplementedError

    def _streamed(self, pos: int, images: Any, workers: int) -> torch.Tensor:
        """This rank's images of the global batch at ``pos``, decoded by ``workers`` processes that
        run ahead through the rest of the pass (``images.batch(rows)``, see ``stream_batches``); they
        are (re)started wherever the batch taken is not the one they were going to give."""
        limit = min(len(self) * self.global_batch, len(self.indices))
        if self._stream is None or self._stream_pos != pos:
            self._close_stream()
            batches = [self._rows(self._order[p:p + self.global_batch]).tolist()
                       for p in range(pos, limit, self.global_batch)]
            self._stream = stream_batches(images, batches, workers)
        self._stream_pos = pos + self.global_batch
        batch = next(self._stream)
        if self._stream_pos >= limit:  # the pass's last batch: its workers end now, not at garbage collection
            self._close_stream()
        return batch

    def _close_stream(self) -> None:
        if self._stream is not None:
            self._stream.close()
            self._stream = None

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state(),
                "order": None if self._order is None else self._order.clone(),
                "pos": self._pos}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
        self._order = state["order"]
        self._pos = int(state["pos"])
        self._close_stream()


class BatchLoader(BatchOrder):
    """Batches of a subset of an :class:`ImageDataset` in a :class:`BatchOrder`.

    In-memory uint8 images live on ``device``; each batch is gathered, augmented (crop, flip, optional
    cutout) and normalised there. Streamed images are decoded by ``workers`` processes batch by batch,
    in the order this loader takes them, then augmented the same way. Data parallel, each rank's rows
    are augmented as one process seeing the whole global batch would augment them.
    """

    def __init__(self, dataset: ImageDataset, indices: torch.Tensor | None = None, *,
                 batch_size: int, shuffle: bool = True, augment: bool = True, cutout: int = 0,
                 drop_last: bool = False, device: torch.device | str = "cpu", seed: int = 0,
                 channels_last: bool = False, rank: int = 0, world_size: int = 1, workers: int = 2) -> None:
        super().__init__(len(dataset), indices, batch_size=batch_size, shuffle=shuffle, drop_last=drop_last,
                         seed=seed, rank=rank, world_size=world_size)
        self.device = torch.device(device)
        if dataset.in_memory:
            self.images = dataset.images.to(self.device)
        else:
            self.images, self.workers = dataset.images, workers
        self.labels = dataset.labels.to(self.device)
        self.mean, self.std = dataset.mean, dataset.std
        self.crop_padding = dataset.crop_padding
        self.flip = dataset.flip
        self.augment, self.cutout = augment, cutout
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format

    def _gather(self, rows: torch.Tensor, pos: int) -> torch.Tensor:
        """The images at ``rows`` (the global batch starting at ``pos`` of this pass), on the device."""
        if isinstance(self.images, torch.Tensor):
            return self.images.index_select(0, rows.to(self.device, non_blocking=True))
        return self._streamed(pos, self.images, self.workers).to(self.device, non_blocking=True)

    def _make(self, idx: torch.Tensor, pos: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        shard = (self.rank * self.batch_size, len(idx))
        rows = self._rows(idx)
        x = self._gather(rows, pos)
        idx = rows.to(self.device, non_blocking=True)
        if self.augment:
            x = random_crop(x, self.crop_padding, self.generator, shard)
            if self.flip:
                x = random_flip(x, self.generator, shard)
        x = normalize(x, self.mean, self.std)
        if self.augment and self.cutout:
            x = cutout(x, self.cutout, self.generator, shard)
        return x.contiguous(memory_format=self.memory_format), self.labels.index_select(0, idx)

class DatasetBatches(BatchOrder):
    """Batches of any map-style Dataset of (input, target) pairs in a :class:`BatchOrder`: items read in
    this process, stacked by torch's ``default_collate`` and moved to ``device``. No augmentation: the
    Dataset's own transforms apply."""

    def __init__(self, dataset: Any, indices: torch.Tensor | None = None, *, batch_size: int, shuffle: bool = True,
                 drop_last: bool = False, device: torch.device | str = "cpu", seed: int = 0, rank: int = 0,
                 world_size: int = 1) -> None:
        super().__init__(len(dataset), indices, batch_size=batch_size, shuffle=shuffle, drop_last=drop_last,
                         seed=seed, rank=rank, world_size=world_size)
        self.dataset, self.device = dataset, torch.device(device)

    def _make(self, idx: torch.Tensor, pos: int) -> tuple[Any, ...]:
        from torch.utils.data import default_collate
        batch = default_collate([self.dataset[i] for i in self._rows(idx).tolist()])
        return tuple(t.to(self.device, non_blocking=True) if isinstance(t, torch.Tensor) else t for t in batch)
