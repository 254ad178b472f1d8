"""The records a benchmark file holds, as NAS-Bench-201's writers make them (``ResultsCount`` and
``ArchResults`` state dicts, xautodl ``nas_201_api/api_utils.py``): one run of one cell on one dataset
with one seed, and a cell's runs at one training budget."""
from __future__ import annotations

from typing import Any, Mapping, Sequence

#: The evaluation sets of a run: the held-out part of the training split, the test split, and both.
EVAL_SETS = ("x-valid", "x-test", "ori-test")


def run_record(*, dataset: str, seed: int, arch: str, epochs: int, num_classes: int, channels: int, cells: int,
               train: Sequence[tuple[float, float]], evals: Mapping[str, Sequence[tuple[float, float]]],
               train_times: Sequence[float], eval_times: Mapping[str, Sequence[float]], params: float, flops: float,
               latency: float | None) -> dict[str, Any]:
    """One ResultsCount state dict: ``train`` and each of ``evals`` hold (loss, accuracy %) per epoch,
    the times seconds per epoch, ``params`` and ``flops`` in millions, ``latency`` in seconds."""
    if len(train) != epochs or any(len(v) != epochs for v in evals.values()):
        raise ValueError(f"a run of {epochs} epochs needs {epochs} records per set")
    return {
        "name": dataset, "net_state_dict": None,
        "train_acc1es": {e: float(acc) for e, (_, acc) in enumerate(train)}, "train_acc5es": None,
        "train_losses": {e: float(loss) for e, (loss, _) in enumerate(train)},
        "train_times": {e: float(t) for e, t in enumerate(train_times)},
        "arch_config": {"channel": channels, "num_cells": cells, "arch_str": arch, "class_num": num_classes},
        "params": float(params), "flop": float(flops), "seed": f"{seed:04d}", "epochs": epochs,
        "latency": None if latency is None else [float(latency)],
        "eval_names": list(evals),
        "eval_acc1es": {f"{name}@{e}": float(acc) for name, rows in evals.items() for e, (_, acc) in enumerate(rows)},
        "eval_losses": {f"{name}@{e}": float(loss) for name, rows in evals.items() for e, (loss, _) in enumerate(rows)},
        "eval_times": {f"{name}@{e}": float(t) for name, rows in eval_times.items() for e, t in enumerate(rows)},
    }


def cell_record(index: int, arch: str, runs: Mapping[tuple[str, int], dict[str, Any]]) -> dict[str, Any]:
    """One ArchResults state dict: a cell's runs by (dataset, seed)."""
    seeds: dict[str, list[int]] = {}
    for dataset, seed in runs:
        seeds.setdefault(dataset, []).append(int(seed))
    return {"arch_index": int(index), "arch_str": arch, "all_results": {(d, int(s)): r for (d, s), r in runs.items()},
            "dataset_seed": {d: sorted(s) for d, s in seeds.items()}, "clear_net_done": True}
