"""What a run does around its epochs besides training, each with its own resumable state.

A hook is any object with the methods of :class:`Hook` (it need not inherit from it): the loop calls
``epoch_start`` before an epoch's steps, ``epoch_end`` after its evaluation (with ``run.epoch``
already counting it), ``epoch_saved`` after the epoch's metrics line and checkpoint, and ``stops``
before each epoch. A hook with a ``key`` keeps ``state_dict()`` under that key of the checkpoint.
"""
from __future__ import annotations

import time
from typing import Any, Callable

import torch

from ..errors import ConfigError


class Hook:
    """The no-op hook: a hook overrides what it needs."""

    key: str | None = None

    def epoch_start(self, run: Any, record: dict[str, Any]) -> None:
        pass

    def epoch_end(self, run: Any, record: dict[str, Any]) -> None:
        pass

    def epoch_saved(self, run: Any, record: dict[str, Any]) -> None:
        pass

    def stops(self) -> bool:
        return False

    def state_dict(self) -> Any:
        return None

    def load_state_dict(self, state: Any) -> None:
        pass


class CurvatureWatch(Hook):
    """The dominant eigenvalue of the α-Hessian of the validation loss every ``every`` epochs (and at
    the last) over fixed validation ``batches``, recorded in the epoch's metrics; with ``early_stop``,
    DARTS-ES (Zela et al., 2020) stops the search and names the epoch whose genotype it keeps."""

    key = "early_stop"

    def __init__(self, model: torch.nn.Module, batches: list, *, every: int, steps: int, seed: int, epochs: int,
                 genotype: Callable[[], dict[str, Any]], early_stop: str | None = None, es_start: int = 11,
                 sync: Callable | None = None, hvp: str = "autograd") -> None:
        from ..curvature import EarlyStopHessian
        self.model, self.batches, self.every, self.steps, self.seed = model, batches, every, steps, seed
        self.hvp = hvp
        self.epochs, self.genotype, self.sync = epochs, genotype, sync
        self.stopper = EarlyStopHessian(start=es_start, last_epoch=epochs) if early_stop == "hessian" else None

    def due(self, epoch: int) -> bool:
        """After ``epoch`` epochs: whether this epoch's eigenvalue is computed (every N, and the last)."""
        return bool(self.every) and (epoch % self.every == 0 or epoch == self.epochs)

    def epoch_end(self, run: Any, record: dict[str, Any]) -> None:
        from ..curvature import dominant_eigenvalue
        if not self.due(run.epoch):
            return
        t0 = time.perf_counter()
        value = dominant_eigenvalue(self.model, self.batches, steps=self.steps, seed=self.seed, sync=self.sync,
                                    hvp=self.hvp)
        record.update({"hessian_eigenvalue": round(value, 6), "hessian_seconds": round(time.perf_counter() - t0, 3)})
        if self.stopper is not None and self.stopper.update(run.epoch, value, self.genotype()):
            record["early_stop"] = dict(self.stopper.stopped)

    def stops(self) -> bool:
        return self.stopper is not None and self.stopper.stopped is not None

    @property
    def stopped(self) -> dict[str, Any] | None:
        return self.stopper.stopped if self.stopper is not None else None

    def kept_genotype(self) -> dict[str, Any]:
        """The genotype of the epoch DARTS-ES named."""
        return self.stopper.genotypes[self.stopper.stopped["epoch"]]

    def reason(self) -> str:
        return self.stopper.reason()

    def state_dict(self) -> Any:
        return self.stopper.state_dict() if self.stopper is not None else None

    def load_state_dict(self, state: Any) -> None:
        if self.stopper is not None:
            self.stopper.load_state_dict(state)


class TensorBoardLog(Hook):
    """Each epoch's numbers (and α histograms) also as TensorBoard events under RUN_DIR/tensorboard."""

    def __init__(self) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ConfigError("--tensorboard needs the tensorboard package: pip install 'dartsnas[tensorboard]' "
                              "(metrics.jsonl is written either way)") from None
        self.writer_class, self.writer = SummaryWriter, None

    def open(self, out: Any, epoch: int) -> None:
        """Start writing after ``epoch`` epochs (events of later epochs, from a run cut short, are purged)."""
        self.writer = self.writer_class(log_dir=str(out / "tensorboard"), purge_step=epoch + 1)

    def epoch_saved(self, run: Any, record: dict[str, Any]) -> None:
        if self.writer is None or not run.dist.is_main:
            return
        step = record["epoch"]
        for key, value in record.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and key != "epoch":
                self.writer.add_scalar(key, value, step)
        for cell, rows in record.get("alphas", {}).items():
            self.writer.add_histogram(f"alpha/{cell}", torch.tensor(rows), step)
        self.writer.flush()


def watch_curvature(config: Any, model: torch.nn.Module, batches: list, genotype: Callable[[], dict[str, Any]],
                    dist: Any) -> CurvatureWatch:
    """The curvature watch a search config asks for (inert without --hessian-every)."""
    return CurvatureWatch(model, batches, every=config.hessian_every, steps=config.hessian_steps,
                          seed=int(config.seed), epochs=config.epochs, genotype=genotype,
                          early_stop=config.early_stop, es_start=config.es_start, sync=dist.average,
                          hvp=config.hessian_hvp)


def curvature_text(record: dict[str, Any]) -> str:
    """The eigenvalue's part of an epoch line (empty when none was computed)."""
    return f" | λmax {record['hessian_eigenvalue']:.4g}" if "hessian_eigenvalue" in record else ""
