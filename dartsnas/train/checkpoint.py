"""Crash-safe run-directory files: atomic writes, weights-only checkpoint loading, metrics.jsonl.

A checkpoint is a plain dict of tensors and Python data, written to a temporary file in the same
directory, fsynced and renamed over the previous one, so a crash leaves either the old or the new
checkpoint, never half of one. Loading uses ``torch.load(weights_only=True)``: nothing in a
checkpoint can run code.
"""
from __future__ import annotations

import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable

import torch

from ..errors import CheckpointError, ConfigError

FORMAT_VERSION = 1
CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.jsonl"
GENOTYPE = "genotype.json"


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def check_writable_dir(path: str | os.PathLike, flag: str = "--out") -> None:
    """Refuse, before any work, a directory that cannot be made or written into (tried: made if
    missing, a probe file written and removed); the error names the flag and the reason."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{flag} {path} exists and is not a directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-test.", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise ConfigError(f"{flag} {path}: cannot be written ({e.strerror or e})") from None


def check_writable_file(path: str | os.PathLike, flag: str = "--out") -> None:
    """Refuse, before any work, an output file that cannot be written: a directory, or in a
    directory that cannot be made or written."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{flag} {path} is a directory; give a file name")
    check_writable_dir(path.parent, flag=f"{flag} {path}: its directory")


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` via a fsynced temporary file renamed into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_dir(path.parent)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> None:
    """Serialise ``state`` (stamped with the format version) and write it atomically."""
    buffer = io.BytesIO()
    torch.save({"format_version": FORMAT_VERSION, **state}, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def model_file(path: str | os.PathLike) -> Path:
    """The file to evaluate for ``path``: itself, or a run directory's model.pt (else its checkpoint.pt)."""
    path = Path(path)
    if path.is_dir():
        return path / "model.pt" if (path / "model.pt").is_file() else path / CHECKPOINT
    return path


def _load_failure(error: Exception) -> str:
    """What went wrong in a safe load, in a few words, without torch's advice to load the file
    unsafely (weights_only=False would unpickle, i.e. run, whatever the file holds)."""
    text = str(error).strip()
    if "WeightsUnpickler error:" in text:  # the safe unpickler met something it will not rebuild
        detail = text.split("WeightsUnpickler error:", 1)[1].strip()
        return "holds data a safe load refuses" + (f": {_first_sentence(detail)}" if detail else "")
    return _first_sentence(text) if text else error.__class__.__name__


def _first_sentence(text: str) -> str:
    return text.splitlines()[0].split(". ")[0].rstrip(".")


def load_checkpoint(path: str | os.PathLike, *, kind: str | None = None) -> dict[str, Any]:
    """Load a dartsnas checkpoint safely; refuse foreign, corrupted or other-version files."""
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for a damaged or foreign file
        raise CheckpointError(f"{path}: unreadable, not loaded: truncated, corrupted or not a dartsnas "
                              f"checkpoint ({_load_failure(e)})") from None
    if not isinstance(state, dict) or "format_version" not in state:
        raise CheckpointError(f"{path}: not a dartsnas checkpoint")
    if state["format_version"] != FORMAT_VERSION:
        raise CheckpointError(f"{path}: checkpoint format version {state['format_version']}, "
                              f"this dartsnas reads version {FORMAT_VERSION}")
    if kind is not None and state.get("kind") != kind:
        raise CheckpointError(f"{path}: checkpoint of a {state.get('kind')!r} run, expected {kind!r}")
    return state


class MetricsLog:
    """Append-only JSON lines, one record per epoch; each append is one fsynced write."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)

    def append(self, record: dict[str, Any]) -> None:
        line = (json.dumps(record) + "\n").encode("utf-8")
        with open(self.path, "ab") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())

    def read(self) -> list[dict[str, Any]]:
        return read_metrics(self.path)

    def keep_epochs(self, last_epoch: int) -> None:
        """Drop records after ``last_epoch`` (written after the checkpoint a run resumes from)."""
        kept = [r for r in self.read() if r.get("epoch", 0) <= last_epoch]
        atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in kept))


def read_metrics(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Parse metrics.jsonl; a torn last line (a crash mid-append) is ignored, any other bad line refused."""
    path = Path(path)
    if not path.is_file():
        return []
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    records = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if i == len(lines) - 1:
                break
            raise CheckpointError(f"{path}: line {i + 1} is not valid JSON") from None
    return records


def tensors_to_lists(rows: Iterable[torch.Tensor], digits: int = 6) -> list[list[float]]:
    return [[round(float(v), digits) for v in row.detach().cpu()] for row in rows]
