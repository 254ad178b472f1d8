"""Augmentation of whole uint8 image batches on whatever device holds them.

The original code augments one PIL image at a time in DataLoader workers; here a batch of
[B, C, H, W] uint8 tensors is cropped, flipped and cut out with a handful of tensor ops, on the GPU
when the data lives there. Random draws come from an explicit generator (CPU) so runs are
reproducible and resumable.
"""
from __future__ import annotations

from typing import Sequence

import torch


#: (first row, rows drawn): this batch is rows [first, first + B) of a global batch of ``rows drawn``
#: images split across data-parallel ranks; every rank draws for the whole global batch and keeps its
#: rows, so the augmentation does not depend on how many processes share the batch.
Shard = tuple[int, int]


def _draws(B: int, shard: Shard | None) -> tuple[int, slice]:
    first, total = shard if shard is not None else (0, B)
    return total, slice(first, first + B)


def _rand(shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    return torch.rand(shape, generator=generator).to(device, non_blocking=True)


def random_crop(images: torch.Tensor, padding: int, generator: torch.Generator | None = None,
                shard: Shard | None = None) -> torch.Tensor:
    """Zero-pad by ``padding`` pixels and crop back to the original size at a random offset per image."""
    if padding <= 0:
        return images
    B, C, H, W = images.shape
    total, keep = _draws(B, shard)
    padded = torch.nn.functional.pad(images, (padding, padding, padding, padding))
    offsets = torch.randint(0, 2 * padding + 1, (total, 2), generator=generator)[keep].to(images.device)
    rows = offsets[:, :1] + torch.arange(H, device=images.device)  # [B, H]
    cols = offsets[:, 1:] + torch.arange(W, device=images.device)  # [B, W]
    b = torch.arange(B, device=images.device)[:, None, None, None]
    c = torch.arange(C, device=images.device)[None, :, None, None]
    return padded[b, c, rows[:, None, :, None], cols[:, None, None, :]]


def random_flip(images: torch.Tensor, generator: torch.Generator | None = None,
                shard: Shard | None = None) -> torch.Tensor:
    """Mirror each image left-right with probability 1/2."""
    total, keep = _draws(images.shape[0], shard)
    flip = _rand((total,), generator, images.device)[keep] < 0.5
    return torch.where(flip[:, None, None, None], images.flip(-1), images)


def cutout(images: torch.Tensor, size: int, generator: torch.Generator | None = None,
           shard: Shard | None = None) -> torch.Tensor:
    """Zero a ``size`` x ``size`` square at a random centre per image, clipped at the border
    (DeVries and Taylor, 2017); applied after normalisation, as in the DARTS recipe."""
    if size <= 0:
        return images
    B, _, H, W = images.shape
    total, keep = _draws(B, shard)
    centre = torch.stack([torch.randint(0, H, (total,), generator=generator),
                          torch.randint(0, W, (total,), generator=generator)], 1)[keep].to(images.device)
    ys = torch.arange(H, device=images.device)
    xs = torch.arange(W, device=images.device)
    y0 = (centre[:, 0] - size // 2).clamp(0, H)[:, None]
    y1 = (centre[:, 0] + size // 2).clamp(0, H)[:, None]
    x0 = (centre[:, 1] - size // 2).clamp(0, W)[:, None]
    x1 = (centre[:, 1] + size // 2).clamp(0, W)[:, None]
    in_y = (ys >= y0) & (ys < y1)  # [B, H]
    in_x = (xs >= x0) & (xs < x1)  # [B, W]
    mask = in_y[:, :, None] & in_x[:, None, :]
    return images.masked_fill(mask[:, None], 0)


def normalize(images: torch.Tensor, mean: Sequence[float], std: Sequence[float],
              dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 [0, 255] (or float [0, 1]) -> float, per-channel (x/255 - mean) / std."""
    m = torch.tensor(mean, device=images.device, dtype=dtype).view(1, -1, 1, 1)
    s = torch.tensor(std, device=images.device, dtype=dtype).view(1, -1, 1, 1)
    x = images.to(dtype)
    return ((x / 255.0 if images.dtype == torch.uint8 else x) - m) / s
