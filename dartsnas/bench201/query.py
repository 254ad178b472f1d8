"""Looking a cell up in a NAS-Bench-201 / NATS-Bench file, with the official APIs' answers.

:meth:`Benchmark201.query` gives what ``get_more_info(index, dataset, hp=..., is_random=False)`` and
``get_cost_info`` give (``nas_201_api/api_201.py``, ``nats_bench/api_topology.py``): train loss and
accuracy at the last epoch (or ``iepoch``), averaged over the seeds; the validation and test sets per
dataset (cifar10-valid: ``x-valid`` and ``ori-test``; cifar10: ``ori-test``; any other, as cifar100
and ImageNet16-120: ``x-valid``, ``x-test``, and ``ori-test`` as valtest); FLOPs (M), parameters (MB)
and latency (s) averaged over the seeds (NATS-Bench: the seed-888 run's FLOPs and parameters where
the seeds disagree). Accuracies are percentages, as the benchmark stores them.
"""
from __future__ import annotations

import os
from pathlib import Path
from statistics import fmean
from typing import Any

from ..genotype201 import CELLS201, Cell201
from .files import BenchmarkError, read_cell, read_file

#: The epochs (hp) a benchmark trained its cells for: NAS-Bench-201's 'less' and 'full'.
HPS = ("12", "200")


class Benchmark201:
    """A benchmark file (or NATS-Bench directory), opened once; cells are looked up by arch string,
    :class:`~dartsnas.genotype201.Cell201` or index."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.format, self.meta_archs, self._infos, self._dir = read_file(self.path)
        self._index = {arch: i for i, arch in enumerate(self.meta_archs)}
        self._classes: dict[str, int] | None = None
        if len(self._index) != len(self.meta_archs):
            raise BenchmarkError(f"{self.path}: meta_archs repeats an arch string")

    def __len__(self) -> int:
        return len(self.meta_archs)

    def index_of(self, arch: str | int | Cell201) -> int:
        """The index of a cell given as an index, an arch string (in any edge order) or a Cell201."""
        if isinstance(arch, int) and not isinstance(arch, bool):
            if not 0 <= arch < len(self.meta_archs):
                raise BenchmarkError(f"index {arch} out of range: {self.path} holds cells 0..{len(self.meta_archs) - 1}")
            return arch
        text = arch.to_str() if isinstance(arch, Cell201) else str(arch).strip()
        if text in CELLS201:
            text = CELLS201.get(text).to_str()
        if text.lstrip("-").isdigit():
            return self.index_of(int(text))
        index = self._index.get(text)
        if index is None:
            index = self._index.get(Cell201.from_str(text, source="arch").to_str())
        if index is None:
            raise BenchmarkError(f"{text}: not a cell of {self.path}")
        return index

    def results(self, index: int, hp: str = "200") -> dict[str, Any]:
        """The ArchResults dict of cell ``index`` at ``hp`` epochs."""
        entry = self._infos.get(index)
        if entry is None and self._dir is not None:
            entry = read_cell(self._dir, index)
            if entry is not None:
                self._infos[index] = entry
        if entry is None:
            raise BenchmarkError(f"{self.path}: cell {index} ({self.meta_archs[index]}) was not evaluated")
        if str(hp) not in entry:
            raise BenchmarkError(f"{self.path}: cell {index} has no {hp}-epoch results (it has "
                                 f"{', '.join(sorted(entry))})")
        result = entry[str(hp)]
        if not isinstance(result, dict) or "all_results" not in result or "dataset_seed" not in result:
            raise BenchmarkError(f"{self.path}: cell {index}'s {hp}-epoch results are malformed")
        return result

    def evaluated(self) -> list[int]:
        """The indexes of the cells the benchmark holds results of."""
        if self._dir is None:
            return sorted(self._infos)
        return sorted({int(p.name.split(".")[0]) for p in self._dir.glob("*.pickle.pbz2")
                       if p.name.split(".")[0].isdigit()})

    def lookup(self, cell: Cell201) -> int:
        """The index of ``cell``'s results: its own, else an evaluated cell isomorphic to it (a benchmark of
        the unique cells holds one per class)."""
        index = self.index_of(cell)
        evaluated = self.evaluated()
        if index in evaluated:
            return index
        if self._classes is None:
            self._classes = {}
            for i in evaluated:
                self._classes.setdefault(Cell201.from_str(self.meta_archs[i]).unique_str(), i)
        found = self._classes.get(cell.unique_str())
        if found is None:
            raise BenchmarkError(f"{self.path}: neither {cell} nor a cell isomorphic to it was evaluated")
        return found

    def datasets(self, index: int, hp: str = "200") -> list[str]:
        return list(self.results(index, hp)["dataset_seed"])

    def query(self, arch: str | int | Cell201, dataset: str = "cifar10", hp: str = "200",
              iepoch: int | None = None) -> dict[str, Any]:
        """The benchmark's figures of a cell (see the module docstring), as JSON-ready numbers."""
        index = self.index_of(arch)
        result = self.results(index, hp)
        seeds = result["dataset_seed"].get(dataset)
        if not seeds:
            raise BenchmarkError(f"{self.path}: no {dataset} results for cell {index} at {hp} epochs (it has "
                                 f"{', '.join(result['dataset_seed'])})")
        try:
            runs = [result["all_results"][(dataset, seed)] for seed in seeds]
        except KeyError as e:
            raise BenchmarkError(f"{self.path}: cell {index}: no run {e} of {dataset}") from None
        epochs = int(runs[0]["epochs"])
        ie = epochs - 1 if iepoch is None else int(iepoch)
        if not 0 <= ie < epochs:
            raise BenchmarkError(f"epoch {ie} out of range: the cells trained {epochs} epochs (0..{epochs - 1})")
        out: dict[str, Any] = {"index": index, "arch": self.meta_archs[index], "dataset": dataset, "hp": str(hp),
                               "epoch": ie, "seeds": list(seeds)}
        out["train-loss"] = fmean(run["train_losses"][ie] for run in runs)
        out["train-accuracy"] = fmean(run["train_acc1es"][ie] for run in runs)
        sets = ({"valid": "x-valid", "test": "ori-test"} if dataset == "cifar10-valid" else
                {"valid": "x-valid", "test": "ori-test"} if dataset == "cifar10" else
                {"valid": "x-valid", "test": "x-test", "valtest": "ori-test"})
        for name, key in sets.items():
            try:
                loss = fmean(run["eval_losses"][f"{key}@{ie}"] for run in runs)
                acc = fmean(run["eval_acc1es"][f"{key}@{ie}"] for run in runs)
            except (KeyError, TypeError):
                if dataset == "cifar10-valid" and name == "valid":
                    raise BenchmarkError(f"{self.path}: cell {index} has no x-valid@{ie} for cifar10-valid") from None
                continue
            out[f"{name}-loss"], out[f"{name}-accuracy"] = loss, acc
        out.update(self._costs(runs, seeds))
        return out

    def _costs(self, runs: list[dict[str, Any]], seeds: list[int]) -> dict[str, Any]:
        def fixed(values: list[float]) -> list[float]:  # NATS-Bench's fix_legacy_issue
            if self.format.startswith("nats") and len({f"{v:.5f}" for v in values}) > 1:
                if 888 not in seeds:
                    raise BenchmarkError(f"{self.path}: its seeds disagree on the cost and there is no seed 888")
                return [values[seeds.index(888)]]
            return values
        latencies = [sum(r["latency"]) / len(r["latency"]) for r in runs if r.get("latency")]
        latencies = [x for x in latencies if x > 0]
        return {"flops": fmean(fixed([float(r["flop"]) for r in runs])),
                "params": fmean(fixed([float(r["params"]) for r in runs])),
                "latency": fmean(latencies) if latencies else None}
