"""The run directory: which command owns it, refusing to clobber a run, the files a run writes.

Data parallel, rank 0 alone writes; the other ranks wait at a barrier so that every rank sees the
same files afterwards.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..distributed import Distributed
from ..errors import CheckpointError, ConfigError
from .checkpoint import CHECKPOINT, GENOTYPE, METRICS, MetricsLog, atomic_write_text, load_checkpoint, save_checkpoint

DATA_INFO, CLASSES = "data.json", "classes.json"
#: The fully resolved config of the run (every field, defaults included), rewritten on each start and resume.
CONFIG = "config.json"
#: Written first by every run: which command the directory belongs to, before any checkpoint exists.
RUN_MARKER = "run.json"
RUN_FILES = (CHECKPOINT, METRICS, GENOTYPE, "model.pt", RUN_MARKER, DATA_INFO, CLASSES, CONFIG)


def check_run_dir(out: Path, kind: str, *, resume: bool, overwrite: bool) -> bool:
    """Refuse to clobber a run unless asked. Returns whether there is a checkpoint to resume from:
    ``--resume`` on a directory that has none yet (a run killed before its first checkpoint, or never
    started: a requeued job's same command line) starts the run from the beginning, unless the
    directory belongs to another command."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} exists and is not a directory")
    if resume:
        if (out / CHECKPOINT).is_file():
            return True
        marker = out / RUN_MARKER
        if marker.is_file():
            try:
                owner = json.loads(marker.read_text(encoding="utf-8")).get("kind")
            except (ValueError, AttributeError, UnicodeDecodeError):
                owner = None
            if owner != kind:
                raise CheckpointError(f"{out}: holds a {owner!r} run, not a {kind!r} one: nothing to resume")
        elif any((out / name).exists() for name in RUN_FILES):
            raise CheckpointError(f"{out}: nothing to resume (no {CHECKPOINT}) and the run's files are of "
                                  "an unknown command: pass --overwrite to replace them")
        return False
    if not overwrite and any((out / name).exists() for name in RUN_FILES):
        raise ConfigError(f"--out {out} already holds a run: pass --resume to continue it "
                          "or --overwrite to replace it")
    return False


def start_run_dir(out: Path, kind: str) -> None:
    """Create the run directory, removing the files of a run being overwritten, and mark it as
    ``kind``'s (so that a --resume before the first checkpoint knows whose it is)."""
    out.mkdir(parents=True, exist_ok=True)
    for name in RUN_FILES:
        (out / name).unlink(missing_ok=True)
    atomic_write_text(out / RUN_MARKER, json.dumps({"kind": kind}) + "\n")


class RunDir:
    """One run's directory, owned by the command ``kind``."""

    def __init__(self, out: str | Path, kind: str, dist: Distributed) -> None:
        self.out, self.kind, self.dist = Path(out), kind, dist
        self.metrics = MetricsLog(self.out / METRICS)

    @property
    def checkpoint(self) -> Path:
        return self.out / CHECKPOINT

    def open(self, *, resume: bool, overwrite: bool) -> dict[str, Any] | None:
        """Check the directory (every rank, before rank 0 changes anything); the checkpoint to resume
        from, or None for a fresh run."""
        has_checkpoint = check_run_dir(self.out, self.kind, resume=resume, overwrite=overwrite)
        self.dist.barrier()
        if not has_checkpoint:
            return None
        saved = load_checkpoint(self.checkpoint, kind=self.kind)
        self.dist.barrier()
        if self.dist.is_main:
            for torn in self.out.glob(".*.tmp"):  # a write cut short by a crash; its target is intact
                torn.unlink(missing_ok=True)
        return saved

    def start(self) -> None:
        """A fresh run: rank 0 creates (or clears) the directory."""
        if self.dist.is_main:
            start_run_dir(self.out, self.kind)
        self.dist.barrier()

    def write_text(self, name: str, text: str) -> None:
        """A result file (rank 0 writes it atomically; the others wait for it)."""
        if self.dist.is_main:
            atomic_write_text(self.out / name, text)
        self.dist.barrier()

    def write_json(self, name: str, data: Any, indent: int | None = 1) -> None:
        self.write_text(name, json.dumps(data, ensure_ascii=False, indent=indent) + "\n")

    def write_data_info(self, info: dict[str, Any]) -> None:
        """data.json (classes, channels, image size, resize, normalisation) and classes.json: what a
        trained model needs to read new images as it read its own."""
        self.write_json(DATA_INFO, info)
        self.write_json(CLASSES, info["classes"], indent=None)

    def save_checkpoint(self, state: dict[str, Any]) -> None:
        """Atomically: the previous checkpoint stays until the new one is complete (rank 0 writes)."""
        if self.dist.is_main:
            save_checkpoint(self.checkpoint, state)

    def append_metrics(self, record: dict[str, Any]) -> None:
        if self.dist.is_main:
            self.metrics.append(record)

    def keep_epochs(self, epoch: int) -> None:
        """After a resume: drop metrics written after the checkpoint's epoch."""
        if self.dist.is_main:
            self.metrics.keep_epochs(epoch)
