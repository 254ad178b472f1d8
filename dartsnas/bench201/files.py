"""NAS-Bench-201's and NATS-Bench's benchmark files, read and written without unpickling code.

The formats (as the official APIs read them: ``nas_201_api`` 2.1, ``nats_bench`` 1.8):

- NAS-Bench-201 v1.0 / v1.1 (``NAS-Bench-201-v1_*.pth``): ``torch.save`` of a dict with
  ``meta_archs`` (the arch strings in the benchmark's order), ``arch2infos`` (index ->
  ``{"less": ..., "full": ...}``, the 12- and 200-epoch results) and ``evaluated_indexes``;
- NATS-Bench's topology file (``NATS-tss-v1_0-3ffb9.pickle.pbz2``): a bz2-compressed pickle of the same
  keys, ``arch2infos`` index -> ``{"12": ..., "200": ...}``;
- its ``-simple`` (or ``-full``) directory: ``meta.pickle.pbz2`` with ``meta_archs``, and one
  ``{index:06d}.pickle.pbz2`` of ``{"12": ..., "200": ...}`` per cell.

Each result is an ArchResults state dict (``arch_str``, ``dataset_seed``, ``all_results`` keyed by
(dataset, seed) -> a ResultsCount state dict: ``train_losses``, ``eval_acc1es``, ``flop``, ...). The
official files hold plain containers, ``collections.OrderedDict`` and numpy scalars only: a ``.pth``
is read with ``torch.load(weights_only=True)`` (numpy's scalar and dtype allowed), a pickle by an
unpickler that admits those and refuses anything else, naming the file. Numbers come back as Python
floats and ints.
"""
from __future__ import annotations

import bz2
import collections
import io
import os
import pickle
from pathlib import Path
from typing import Any

import torch

from ..errors import DartsError
from ..train.checkpoint import atomic_write_bytes

#: The hp keys of NAS-Bench-201's files and what NATS-Bench (and dartsnas) call them.
PTH_HPS = {"less": "12", "full": "200"}
META_FILE = "meta.pickle.pbz2"


class BenchmarkError(DartsError):
    """A benchmark file is missing, truncated, of another format, or lacks what a query asks."""


def _numpy_globals() -> dict[tuple[str, str], Any]:
    """The numpy objects a benchmark file may name (scalars and dtypes), under numpy 1's and 2's names."""
    try:
        import numpy as np
    except ImportError:  # pragma: no cover - torch installs numpy
        return {}
    from numpy._core.multiarray import scalar  # numpy >= 2 (``numpy.core`` in numpy 1's pickles)
    found = {("numpy.core.multiarray", "scalar"): scalar, ("numpy._core.multiarray", "scalar"): scalar,
             ("numpy", "dtype"): np.dtype}
    for name in dir(np.dtypes):
        if name.endswith("DType"):
            found[("numpy.dtypes", name)] = getattr(np.dtypes, name)
    return found


class _SafeUnpickler(pickle.Unpickler):
    """Rebuilds containers, numbers, OrderedDicts and numpy scalars; anything else is refused."""

    def __init__(self, file: Any, source: str) -> None:
        super().__init__(file)
        self.source = source
        self.allowed = {("collections", "OrderedDict"): collections.OrderedDict, **_numpy_globals()}

    def find_class(self, module: str, name: str) -> Any:
        found = self.allowed.get((module, name))
        if found is None:
            raise BenchmarkError(f"{self.source}: holds a {module}.{name} object, which a benchmark file of numbers "
                                 "does not; refused (nothing in it is run)" +
                                 ("; a -full directory holds network weights: read the -simple one"
                                  if module.startswith("torch") else ""))
        return found


def _plain(value: Any) -> Any:
    """Python numbers and containers for numpy scalars and OrderedDicts, recursively."""
    if isinstance(value, dict):
        return {_plain(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return type(value)(_plain(v) for v in value)
    if hasattr(value, "item") and not isinstance(value, torch.Tensor) and type(value).__module__.startswith("numpy"):
        return value.item()
    return value


def load_pickle_bz2(path: Path) -> Any:
    """A bz2-compressed pickle of containers and numbers (one clear error for anything else)."""
    try:
        with bz2.open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise BenchmarkError(f"{path}: no such file") from None
    except (OSError, EOFError, ValueError) as e:
        raise BenchmarkError(f"{path}: not a bz2-compressed benchmark file, or truncated ({e})") from None
    try:
        return _plain(_SafeUnpickler(io.BytesIO(raw), str(path)).load())
    except BenchmarkError:
        raise
    except Exception as e:  # a damaged pickle raises many types
        raise BenchmarkError(f"{path}: truncated or not a benchmark pickle ({e.__class__.__name__}: {e})") from None


def load_pth(path: Path) -> Any:
    """A NAS-Bench-201 ``.pth`` by ``torch.load(weights_only=True)`` with numpy's scalar and dtypes allowed."""
    allowed = [(obj, f"{module}.{name}") for (module, name), obj in _numpy_globals().items()]
    try:
        with torch.serialization.safe_globals(allowed):
            data = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise BenchmarkError(f"{path}: no such file") from None
    except Exception as e:  # torch raises many types for a damaged or foreign file
        text = str(e).strip().splitlines()[0] if str(e).strip() else e.__class__.__name__
        if "WeightsUnpickler" in str(e):
            text = "it holds objects a safe load refuses (" + str(e).split("WeightsUnpickler error:", 1)[-1].strip().splitlines()[0] + ")"
        raise BenchmarkError(f"{path}: unreadable as a NAS-Bench-201 file: {text}") from None
    return _plain(data)


def _check_top(data: Any, path: Path, needed: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise BenchmarkError(f"{path}: not a NAS-Bench-201 / NATS-Bench file (a {type(data).__name__}, not a dict)")
    missing = [k for k in needed if k not in data]
    if missing:
        raise BenchmarkError(f"{path}: not a NAS-Bench-201 / NATS-Bench file: no {', '.join(missing)}")
    if not isinstance(data["meta_archs"], list) or not all(isinstance(a, str) for a in data["meta_archs"]):
        raise BenchmarkError(f"{path}: meta_archs is not a list of arch strings")
    return data


def read_file(path: str | os.PathLike) -> tuple[str, list[str], dict[int, dict[str, Any]], Path | None]:
    """(format, meta_archs, index -> {hp: ArchResults dict}, directory of per-cell files or None) of a
    benchmark file or a NATS-Bench directory; a directory's cells are read when asked for (:func:`read_cell`)."""
    path = Path(path)
    if path.is_dir():
        meta = path / META_FILE
        if not meta.is_file():
            raise BenchmarkError(f"{path}: a directory without {META_FILE}: not a NATS-Bench -simple/-full directory")
        data = _check_top(load_pickle_bz2(meta), meta, ("meta_archs",))
        return "nats-dir", data["meta_archs"], {}, path
    if not path.is_file():
        raise BenchmarkError(f"{path}: no such benchmark file or directory")
    with open(path, "rb") as f:
        head = f.read(4)
    if head.startswith(b"BZh"):
        data = _check_top(load_pickle_bz2(path), path, ("meta_archs", "arch2infos", "evaluated_indexes"))
        fmt, infos = "nats", data["arch2infos"]
    else:
        data = _check_top(load_pth(path), path, ("meta_archs", "arch2infos", "evaluated_indexes"))
        fmt, infos = "nb201", {}
        hps = data.get("dartsnas_hp") if isinstance(data.get("dartsnas_hp"), dict) else PTH_HPS  # a built one's budgets
        for index, entry in data["arch2infos"].items():
            if not isinstance(entry, dict) or set(PTH_HPS) - set(entry):
                raise BenchmarkError(f"{path}: arch2infos[{index}] needs 'less' and 'full' results")
            infos[index] = {str(hps.get(k, PTH_HPS[k])): v for k, v in entry.items() if k in PTH_HPS}
    if not isinstance(infos, dict):
        raise BenchmarkError(f"{path}: arch2infos is not a dict of results")
    return fmt, data["meta_archs"], {int(k): v for k, v in infos.items()}, None


def read_cell(directory: Path, index: int) -> dict[str, Any] | None:
    """A NATS-Bench directory's results of cell ``index`` ({hp: ArchResults dict}); None if absent."""
    for name in (f"{index:06d}.pickle.pbz2", f"{index}.pickle.pbz2"):
        if (directory / name).is_file():
            data = load_pickle_bz2(directory / name)
            if not isinstance(data, dict):
                raise BenchmarkError(f"{directory / name}: not a cell's results ({{hp: results}})")
            return data
    return None


# -- writing ---------------------------------------------------------------------------------------


def write_pth(path: str | os.PathLike, meta_archs: list[str], infos: dict[int, dict[str, Any]],
              epochs: str | None = None) -> None:
    """A NAS-Bench-201 ``.pth`` (v1.1's layout) of ``infos`` (index -> {"12": ..., "200": ...}), written
    whole or not at all; plain containers only, so ``torch.load(weights_only=True)`` reads it. ``epochs``:
    one budget of another length, stored as both 'less' and 'full' (the format has both), named by its
    epochs to dartsnas (an extra key the official API ignores)."""
    back = {v: k for k, v in PTH_HPS.items()}
    if epochs is not None:
        infos = {i: {"12": e[str(epochs)], "200": e[str(epochs)]} for i, e in infos.items()}
    data = {"meta_archs": list(meta_archs), "total_archs": len(meta_archs),
            "arch2infos": {int(i): {back[hp]: r for hp, r in entry.items()} for i, entry in infos.items()},
            "evaluated_indexes": sorted(int(i) for i in infos)}
    if epochs is not None:
        data["dartsnas_hp"] = {"less": str(epochs), "full": str(epochs)}
    buffer = io.BytesIO()
    torch.save(data, buffer)
    atomic_write_bytes(Path(path), buffer.getvalue())


def _bz2_pickle(obj: Any) -> bytes:
    return bz2.compress(pickle.dumps(obj, protocol=4))


def write_nats_file(path: str | os.PathLike, meta_archs: list[str], infos: dict[int, dict[str, Any]]) -> None:
    """NATS-Bench's single topology file (a bz2 pickle) of ``infos``."""
    data = {"meta_archs": list(meta_archs), "total_archs": len(meta_archs),
            "arch2infos": {int(i): dict(e) for i, e in infos.items()}, "evaluated_indexes": {int(i) for i in infos}}
    atomic_write_bytes(Path(path), _bz2_pickle(data))


def write_nats_dir(directory: str | os.PathLike, meta_archs: list[str], infos: dict[int, dict[str, Any]]) -> None:
    """A NATS-Bench ``-simple`` directory: ``meta.pickle.pbz2`` and one file per cell of ``infos``."""
    directory = Path(directory)
    for index, entry in infos.items():
        atomic_write_bytes(directory / f"{int(index):06d}.pickle.pbz2", _bz2_pickle(dict(entry)))
    meta = {"meta_archs": list(meta_archs), "total_archs": len(meta_archs), "arch2infos": None,
            "evaluated_indexes": set()}
    atomic_write_bytes(directory / META_FILE, _bz2_pickle(meta))
