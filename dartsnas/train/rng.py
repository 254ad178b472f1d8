"""Random streams of a run: seeding, the global states a checkpoint keeps, one stream per rank."""
from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch

from ..distributed import Distributed

#: Rank r > 0 of a data-parallel run seeds its own stream with seed + RANK_STRIDE * r.
RANK_STRIDE = 1_000_003


def seed_everything(seed: int) -> None:
    """Seed torch (every device), Python and NumPy: a run's randomness follows from --seed alone."""
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)


def rng_state() -> dict[str, Any]:
    """The global RNG states of torch (CPU and every CUDA device), Python and NumPy, as tensors and
    plain data (loadable with weights_only=True)."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "python": random.getstate(),
             "numpy": [name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(gauss)]}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "python" in state:
        version, internal, gauss = state["python"]
        random.setstate((version, tuple(internal), gauss))
    if "numpy" in state:
        name, keys, pos, has_gauss, gauss = state["numpy"]
        np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class RankStreams:
    """The global random streams of one rank: rank 0 keeps the single-process stream, every other
    rank gets its own (dropout and drop path must differ between ranks; the model's initialisation
    must not, so :meth:`split` runs after the model is built)."""

    def __init__(self, dist: Distributed, seed: int) -> None:
        self.dist, self.seed = dist, int(seed)

    def split(self, offset: int = 0) -> None:
        if self.dist.enabled and self.dist.rank > 0:
            seed_everything(self.seed + offset + RANK_STRIDE * self.dist.rank)

    def state_dict(self) -> dict[str, Any]:
        """This rank's state under ``rng``; data parallel, every rank's under ``rng_ranks`` (a collective)."""
        state = {"rng": rng_state()}
        if self.dist.enabled:
            state["rng_ranks"] = self.dist.gather_objects(state["rng"])
        return state

    def load_state_dict(self, state: dict[str, Any], epoch: int) -> None:
        """This rank's own state when the checkpoint has one per rank; else the single stream, split
        afresh for the ``epoch`` reached (a checkpoint of another world size)."""
        ranks = state.get("rng_ranks")
        if ranks is not None and len(ranks) == self.dist.world_size:
            set_rng_state(ranks[self.dist.rank])
        else:
            set_rng_state(state["rng"])
            self.split(epoch)
