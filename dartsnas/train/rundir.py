"""The run directory: which command owns it, refusing to clobber a run, the files a run writes.

A fresh run writes nothing until its first epoch's record (then its checkpoint): its config, data
description and tables wait in memory until then. So a run that fails early (bad data found at
the first batch, a cost table that does not fit) leaves no half-written directory, and ``--overwrite``
removes the old run only once the new one has an epoch to replace it with. A lock file
(``.lock``: the pid and host of the process running there) keeps a second process out of a
directory whose run is alive; a dead holder's lock is taken over.

Data parallel, rank 0 alone writes; the other ranks wait at a barrier so that every rank sees the
same files afterwards.
"""
from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Any

from ..distributed import Distributed
from ..errors import CheckpointError, ConfigError
from .checkpoint import (CHECKPOINT, GENOTYPE, METRICS, MetricsLog, atomic_write_text, check_writable_dir,
                         load_checkpoint, save_checkpoint)

DATA_INFO, CLASSES = "data.json", "classes.json"
#: The fully resolved config of the run (every field, defaults included), rewritten on each start and resume.
CONFIG = "config.json"
#: Written first by every run: which command the directory belongs to, before any checkpoint exists.
RUN_MARKER = "run.json"
#: A run's files, removed when a run is overwritten (with the tables and stages some commands write:
#: an old run's cost table must not be read as the new run's).
RUN_FILES = (CHECKPOINT, METRICS, GENOTYPE, "model.pt", RUN_MARKER, DATA_INFO, CLASSES, CONFIG,
             "cost_table.json", "stages.json", "choices.json", "choice_costs.json")
LOCK = ".lock"


def lock_holder(out: Path) -> dict[str, object] | None:
    """The live process (pid, host) whose run holds ``out``, or None: no lock, or a lock of this
    process, or of a process that is gone (on this host)."""
    try:
        holder = json.loads((out / LOCK).read_text(encoding="utf-8"))
        pid, host = int(holder["pid"]), str(holder["host"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if host != socket.gethostname():
        return holder  # another machine's process: its liveness cannot be seen from here
    if pid == os.getpid() or not process_alive(pid):
        return None
    return holder


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie, ended but not yet reaped by its parent, does not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        pass  # no /proc (macOS), or the process is gone
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # alive, another user's
    return True


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
        self.started = False  # whether the directory holds this run (a resumed one, or after its first record)
        self.pending: dict[str, str] = {}  # a fresh run's files, written with its first record
        self.locked = self.made = False

    @property
    def checkpoint(self) -> Path:
        return self.out / CHECKPOINT

    def open(self, *, resume: bool, overwrite: bool) -> dict[str, Any] | None:
        """Check the directory (every rank, before rank 0 changes anything) and lock it; the checkpoint
        to resume from, or None for a fresh run."""
        has_checkpoint = check_run_dir(self.out, self.kind, resume=resume, overwrite=overwrite)
        if self.dist.is_main:
            self.made = not self.out.exists()
            check_writable_dir(self.out)
            self.lock()
        self.dist.barrier()
        self.started = has_checkpoint
        if not has_checkpoint:
            return None
        saved = load_checkpoint(self.checkpoint, kind=self.kind)
        self.dist.barrier()
        if self.dist.is_main:
            for torn in self.out.glob(".*.tmp"):  # a write cut short by a crash; its target is intact
                torn.unlink(missing_ok=True)
        return saved

    def lock(self) -> None:
        holder = lock_holder(self.out)
        if holder is not None:
            raise ConfigError(f"--out {self.out}: a run is alive there (pid {holder.get('pid')} on "
                              f"{holder.get('host')}): wait for it to end, or stop it (if it is gone, "
                              f"remove {self.out / LOCK})")
        atomic_write_text(self.out / LOCK, json.dumps({"pid": os.getpid(), "host": socket.gethostname()}) + "\n")
        self.locked = True

    def close(self) -> None:
        """The run ended (finished, stopped or failed): release the directory; one this run made and
        never wrote to (it failed before its first record) is removed."""
        if not self.locked:
            return
        self.locked = False
        if lock_holder(self.out) is None:
            (self.out / LOCK).unlink(missing_ok=True)
        if self.made and not self.started:
            try:
                self.out.rmdir()
            except OSError:
                pass  # not empty: something else is there

    def write_started(self) -> None:
        """Rank 0 clears the directory (an overwritten run's files), marks it and writes what waited."""
        if self.started:
            return
        if self.dist.is_main:
            start_run_dir(self.out, self.kind)
            for name, text in self.pending.items():
                atomic_write_text(self.out / name, text)
        self.pending.clear()
        self.started = True
        self.dist.barrier()

    def write_text(self, name: str, text: str) -> None:
        """A result file (rank 0 writes it atomically; the others wait for it); a fresh run's waits
        for its first record."""
        if not self.started:
            self.pending[name] = text
            return
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
        self.write_started()
        if self.dist.is_main:
            save_checkpoint(self.checkpoint, state)

    def append_metrics(self, record: dict[str, Any]) -> None:
        self.write_started()
        if self.dist.is_main:
            self.metrics.append(record)

    def keep_epochs(self, epoch: int) -> None:
        """After a resume: drop metrics written after the checkpoint's epoch."""
        if self.dist.is_main:
            self.metrics.keep_epochs(epoch)
