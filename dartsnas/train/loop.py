"""The one loop every search and training runs through.

A command is a subclass of :class:`Run` that builds its model, data and optimisers, and gives

- ``train_epoch()``: its step function handed to :meth:`Run.run_steps` with an epoch state (its meters,
  kept in mid-epoch checkpoints), returning the epoch's training numbers;
- ``epoch_start()`` (learning rate and schedules), ``evaluate()``, ``epoch_summary(record)`` (the
  metrics line's extra fields and its text), ``finish()`` (the run's result files);
- ``state_dict()`` / ``load_state_dict()`` of what it owns (model, optimisers, loaders);
- ``hooks``: what runs around the epochs with its own state (curvature watch, TensorBoard).

The loop owns the rest, once for every command: in-epoch resume, the progress bar, the non-finite
guard, checkpoint cadence, stop signals, determinism, the metrics line and the end of the run.
"""
from __future__ import annotations

import contextlib
import gc
import math
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol

import torch

from ..config import check_resumable
from ..distributed import Distributed, convert_sync_batchnorm
from ..errors import CheckpointError, DartsError, Interrupted
from .common import resolve_device
from .hooks import Hook, TensorBoardLog
from .progress import Progress
from .rng import RankStreams
from .rundir import CONFIG, RunDir

#: Without --checkpoint-every, a mid-epoch checkpoint is written after this much work.
CHECKPOINT_SECONDS = 300.0


class EpochState(Protocol):
    """What a command's steps accumulate within an epoch (meters, stream position, carried state)."""

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


@contextlib.contextmanager
def stop_signals(handler: Callable[[int, Any], None]) -> Iterator[None]:
    """``handler`` for SIGTERM and SIGINT while the block runs (main thread only; elsewhere Python
    cannot install handlers), the previous handlers restored afterwards."""
    previous = {}
    if threading.current_thread() is threading.main_thread():
        previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


@contextlib.contextmanager
def deterministic_kernels(enabled: bool) -> Iterator[None]:
    """torch.use_deterministic_algorithms for the block (cuBLAS needs a fixed workspace for it)."""
    was = torch.are_deterministic_algorithms_enabled()
    if enabled:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(was)


class FiniteGuard:
    """Non-finite losses, gradients and α: a bad weight step is skipped while ``--skip-nonfinite``
    allows (the count is kept across resumes), anything else stops the run with the last good
    checkpoint kept. Checks cost a host sync, so on a GPU they run per step only when skipping is
    allowed; otherwise the epoch's mean loss is where a bad step is caught."""

    def __init__(self, allowed: int, device: torch.device, dist: Distributed, checkpoint: Path,
                 log: Callable[[str], None]) -> None:
        self.allowed, self.dist, self.checkpoint, self.log = allowed, dist, checkpoint, log
        self.every_step = device.type == "cpu" or allowed > 0
        self.skipped = 0

    def all_finite(self, *tensors: torch.Tensor) -> bool:
        """Whether every tensor is finite on every rank (a batch bad anywhere is skipped everywhere)."""
        ok = all(bool(torch.isfinite(t).all()) for t in tensors)
        return not self.dist.any(not ok)

    def bad(self, where: str, what: str = "loss or gradient") -> None:
        if self.skipped < self.allowed and what == "loss or gradient":
            self.skipped += 1
            self.log(f"non-finite {what} at {where}: batch skipped ({self.skipped} of --skip-nonfinite {self.allowed})")
            return
        raise DartsError(f"non-finite {what} at {where}: stopped; the last good checkpoint ({self.checkpoint}) is kept")


class Run:
    """A resumable search or training writing into its run directory (see the module docstring)."""

    kind: str = ""
    what: str = "run"  # "does not match this <what>" when a checkpoint is of another model
    config: Any
    model: torch.nn.Module
    net: Any = None  # the model as the weight step runs it (in DistributedDataParallel when distributed)

    # -- setting up ----------------------------------------------------------------------------------

    def open(self, config: Any, out_dir: str | Path, *, resume: bool, overwrite: bool, quiet: bool,
             log: Callable[[str], None], tensorboard: bool = False) -> dict[str, Any] | None:
        """Validate the config, the run directory and the options before anything is written; on
        ``resume``, load the checkpoint and check that it fits. Returns it (None for a fresh run)."""
        config.validate()
        self.hooks: list[Any] = [TensorBoardLog()] if tensorboard else []
        device = resolve_device(config.device)
        self.dist = Distributed.from_env(device)
        self.device = self.dist.local(device)
        self.config, self.quiet, self._log = config, quiet or not self.dist.is_main, log
        self.dir = RunDir(out_dir, self.kind, self.dist)
        self.out, self.metrics = self.dir.out, self.dir.metrics
        self.epoch = 0
        self.streams = RankStreams(self.dist, config.seed)
        self.guard = FiniteGuard(config.skip_nonfinite, self.device, self.dist, self.dir.checkpoint, self.log)
        self.in_epoch: dict[str, Any] | None = None        # progress inside the epoch, for mid-epoch checkpoints
        self.resume_in_epoch: dict[str, Any] | None = None
        self.stop_signal: int | None = None
        self._last_save = time.monotonic()
        saved = self.dir.open(resume=resume, overwrite=overwrite)
        if resume and saved is None:
            self.log(f"{self.out}: no checkpoint yet, starting the run from the beginning")
        if saved is None:
            return None
        check_resumable(type(config).from_dict(saved["config"]), config, self.dir.checkpoint, self.log)
        self.resume_in_epoch = saved.get("in_epoch")
        ranks = saved.get("in_epoch_ranks")
        writers = len(ranks) if ranks is not None else 1
        if self.resume_in_epoch is not None and writers != self.dist.world_size:
            raise CheckpointError(f"{self.dir.checkpoint}: written inside an epoch by {writers} "
                                  f"process(es); resume it with as many (this run has {self.dist.world_size})")
        if ranks is not None:
            self.resume_in_epoch = ranks[self.dist.rank]
        self.guard.skipped = int(saved.get("skipped_nonfinite", 0))
        return saved

    def begin(self, saved: dict[str, Any] | None, data_info: dict[str, Any] | None = None) -> None:
        """After the run is built: restore the checkpoint, write the resolved config (and the data's
        description; a fresh run's wait for its first record), open TensorBoard."""
        if saved is not None:
            try:
                self.load_state_dict(saved)
                self.epoch = int(saved["epoch"])
                for hook in self.hooks:
                    if hook.key is not None and hook.key in saved:
                        hook.load_state_dict(saved[hook.key])
                self.streams.load_state_dict(saved, self.epoch)
            except (KeyError, RuntimeError, ValueError, TypeError) as e:
                raise CheckpointError(f"{self.dir.checkpoint}: does not match this {self.what} "
                                      f"({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
            self.dir.keep_epochs(self.epoch)
            self.log(f"resumed from {self.dir.checkpoint} after epoch {self.epoch}")
        self.dir.write_json(CONFIG, {"kind": self.kind, **self.config.to_dict()})
        if data_info is not None:
            self.dir.write_data_info(data_info)
        for hook in self.hooks:
            if isinstance(hook, TensorBoardLog):
                hook.open(self.out, self.epoch)

    def log(self, message: str) -> None:
        if not self.quiet:
            self._log(message)

    def place_model(self, model: torch.nn.Module, channels_last: bool = False, split: bool = True) -> torch.nn.Module:
        """A freshly built model (identical on every rank) made ready to train here: SyncBatchNorm with
        --sync-bn when data parallel, on this rank's device, channels_last if asked; then (``split``)
        each rank gets its own random stream (dropout, drop path)."""
        if self.dist.enabled and self.config.sync_bn:
            convert_sync_batchnorm(model)
        model.to(self.device)
        if channels_last:
            model.to(memory_format=torch.channels_last)
        if split:
            self.streams.split()
        return model

    def write_text(self, name: str, text: str) -> None:
        self.dir.write_text(name, text)

    # -- what a command gives ----------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        raise NotImplementedError

    def load_state_dict(self, state: dict[str, Any]) -> None:
        raise NotImplementedError

    def epoch_start(self) -> dict[str, Any]:
        return {}

    def train_epoch(self) -> dict[str, Any]:
        raise NotImplementedError

    def evaluate(self) -> dict[str, Any]:
        return {}

    def epoch_summary(self, record: dict[str, Any]) -> Callable[[dict[str, Any]], str]:
        """Add the epoch's extra fields to ``record``; returns what formats its line (seconds known)."""
        raise NotImplementedError

    def finish(self) -> Any:
        raise NotImplementedError

    def describe(self) -> str:
        """The run's first line: the command, its model and data (a command's own), then :meth:`where`."""
        raise NotImplementedError

    def total_epochs(self) -> int:
        """The run's epochs: the config's, and any a method adds after them (DARTS-PT's selection)."""
        return self.config.epochs

    def where(self) -> str:
        return f"device {self.device}{self.dist.describe()}, out {self.out}"

    # -- the loop ------------------------------------------------------------------------------------

    @classmethod
    def launch(cls, *args: Any, **kwargs: Any) -> Any:
        """Build the run and run it. A run that fails while it is being built (data found bad, a
        table that does not fit) leaves nothing behind: its directory is released, and removed if
        the run made it."""
        run = cls.__new__(cls)
        try:
            run.__init__(*args, **kwargs)
        except BaseException:
            if getattr(run, "dir", None) is not None:
                run.dir.close()
            raise
        return run.execute()

    def execute(self) -> Any:
        """The epochs, under the stop-signal handlers and the determinism switch; leaves the process
        group afterwards if the run joined it."""
        def on_signal(signum: int, frame: Any) -> None:
            if self.stop_signal is not None and signum == signal.SIGINT:  # Ctrl-C twice: stop now
                raise KeyboardInterrupt
            self.stop_signal = signum

        try:
            with deterministic_kernels(self.config.deterministic), stop_signals(on_signal):
                return self.fit()
        finally:
            # DistributedDataParallel must go before its process group: a reducer outliving the group
            # aborts the process at exit ("terminate called without an active exception").
            self.net = None
            gc.collect()
            self.dist.close()
            self.dir.close()

    def fit(self) -> Any:
        """Epochs until the last (or a hook stops the run), then the run's result files."""
        self.log(self.describe())
        while self.epoch < self.total_epochs() and not any(hook.stops() for hook in self.hooks):
            start = time.perf_counter()
            record: dict[str, Any] = {"epoch": self.epoch + 1, **self.epoch_start()}
            for hook in self.hooks:
                hook.epoch_start(self, record)
            record.update(self.train_epoch())
            record.update(self.evaluate())
            self.epoch += 1
            for hook in self.hooks:
                hook.epoch_end(self, record)
            line = self.epoch_summary(record)
            record["seconds"] = round(time.perf_counter() - start, 3)
            self.dir.append_metrics(record)  # the metrics line first: a crash before the checkpoint is undone
            self.in_epoch = None
            self.save()
            for hook in self.hooks:
                hook.epoch_saved(self, record)
            self.log(line(record))
        return self.finish()

    def run_steps(self, state: EpochState, step: Callable[[int], tuple[int, bool, dict[str, Any]]], steps: int, *,
                  unit: str = "img", shown_total: int | None = None,
                  more: Callable[[], bool] | None = None) -> tuple[int, float]:
        """The steps of one epoch, from where a mid-epoch checkpoint left off: ``step(i)`` runs step i
        and returns (items, whether its update was finite, numbers for the bar); a non-finite step is
        skipped or stops the run. At most ``steps`` steps, while ``more()``. Returns the steps taken
        and the seconds they took."""
        first = 0
        saved = self.take_in_epoch()
        if saved is not None:
            state.load_state_dict(saved)
            first = int(saved["step"])
        bar = Progress(steps if shown_total is None else shown_total, f"epoch {self.epoch + 1}/{self.total_epochs()}",
                       unit=unit, enabled=not self.quiet)
        i = first
        while i < steps and (more is None or more()):
            items, ok, shown = step(i)
            if not ok:
                self.bad_step(i + 1)  # raises unless --skip-nonfinite allows one more
            i += 1
            bar.update(items, **shown)
            self.step_done(i, state.state_dict)
        bar.close()
        return i, time.perf_counter() - bar.start

    def epoch_steps(self, loader: Any, cap: int | None) -> int:
        """Steps of this epoch: one pass over ``loader``, at most ``cap`` (``--steps-per-epoch``)."""
        return len(loader) if cap is None else min(len(loader), cap)

    def take_in_epoch(self) -> dict[str, Any] | None:
        """The progress a mid-epoch checkpoint restored (once), or None to start the epoch afresh."""
        state, self.resume_in_epoch = self.resume_in_epoch, None
        return state

    def step_done(self, step: int, progress: Callable[[], dict[str, Any]]) -> None:
        """After ``step`` steps of the current epoch: write a mid-epoch checkpoint when one is due
        (``--checkpoint-every`` steps, else every few minutes) or a stop signal arrived; ``progress``
        gives the epoch state (meters, carried hidden state, stream position)."""
        every = self.config.checkpoint_every
        due = step % every == 0 if every else time.monotonic() - self._last_save >= CHECKPOINT_SECONDS
        if self.dist.enabled:  # all ranks checkpoint and stop together (torchrun signals each of them)
            if self.dist.any(due or self.stop_signal is not None):
                due = True
                if self.dist.any(self.stop_signal is not None) and self.stop_signal is None:
                    self.stop_signal = signal.SIGTERM
        if due or self.stop_signal is not None:
            self.in_epoch = {"step": step, **progress()}
            self.save()
            self.in_epoch = None
        if self.stop_signal is not None:
            name = signal.Signals(self.stop_signal).name
            raise Interrupted(f"{name}: stopped after step {step} of epoch {self.epoch + 1}; checkpoint written "
                              f"to {self.dir.checkpoint} (--resume continues)", 128 + self.stop_signal)

    def save(self) -> None:
        """Write the checkpoint. Every rank calls it (the state may need collectives); rank 0 writes."""
        state = {"kind": self.kind, "config": self.config.to_dict(), "epoch": self.epoch, **self.state_dict(),
                 "in_epoch": self.in_epoch, "skipped_nonfinite": self.guard.skipped}
        for hook in self.hooks:
            kept = hook.state_dict() if hook.key is not None else None
            if kept is not None:
                state[hook.key] = kept
        state.update(self.streams.state_dict())
        if self.dist.enabled and self.in_epoch is not None:
            state["in_epoch_ranks"] = self.dist.gather_objects(self.in_epoch)
        self.dir.save_checkpoint(state)
        self._last_save = time.monotonic()

    # -- the non-finite guard ------------------------------------------------------------------------

    @property
    def checks_every_step(self) -> bool:
        """Whether a training step looks for non-finite values (see :class:`FiniteGuard`)."""
        return self.guard.every_step

    def all_finite(self, *tensors: torch.Tensor) -> bool:
        return self.guard.all_finite(*tensors)

    def bad_step(self, step: int, what: str = "loss or gradient") -> None:
        """A non-finite value at ``step`` of this epoch: skip it while --skip-nonfinite allows, else stop."""
        self.guard.bad(f"epoch {self.epoch + 1}, step {step}", what)

    def check_epoch_loss(self, loss: float, steps: int) -> float:
        """The epoch's mean training loss, stopping the run if it is not finite."""
        if not math.isfinite(loss):
            self.bad_step(steps, "mean training loss")
        return loss


def batch_source(loader: Any) -> Callable[[], Any]:
    """The next training batch, one call per step: a resumable loader continues its pass and starts a
    new one when the pass ends (an epoch cut by --steps-per-epoch stops mid-pass, the next one goes
    on from there); an epoch-resumable loader (ImageNet folders) gives one pass per epoch."""
    if hasattr(loader, "next_batch"):
        return loader.next_batch
    batches = iter(loader)
    return lambda: next(batches)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


__all__ = ["CHECKPOINT_SECONDS", "EpochState", "FiniteGuard", "Hook", "Run", "batch_source", "deterministic_kernels",
           "set_lr", "stop_signals"]
