"""The run commands by kind (``search-cnn``, ``train-rnn``, ...): each search space names its search
and training kinds (``spaces.SearchSpace.search_kind`` / ``train_kind``), and the command line, the
protocol's jobs and ``select`` find the config class, the defaults and the run function here."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from .final import KIND as TRAIN_CNN, TrainConfig, recipe, train
from .final_rnn import KIND as TRAIN_RNN, RNNTrainConfig, train_rnn
from .search import KIND as SEARCH_CNN, search
from .search_config import SearchConfig, search_recipe
from .nb201 import (SEARCH_KIND as SEARCH_NB201, TRAIN_KIND as TRAIN_NB201, NB201SearchConfig, NB201TrainConfig,
                    nb201_search_recipe, nb201_train_recipe, search_nb201, train_nb201)
from .search_rnn import KIND as SEARCH_RNN, RNNSearchConfig, rnn_search_recipe, search_rnn


def _val_top1(records: list[dict[str, Any]]) -> dict[str, Any]:
    return {"metric": "val_top1", "score": records[-1].get("val_top1") if records else None}


def _val_ppl(records: list[dict[str, Any]]) -> dict[str, Any]:
    ppls = [r["val_ppl"] for r in records if "val_ppl" in r]
    return {"metric": "val_ppl", "score": min(ppls) if ppls else None}


@dataclass
class RunCommand:
    """A command that runs into a run directory: its config class, how the given fields make a config
    (a dataset's recipe first), the run, the file it leaves, and how ``select`` scores a short run."""

    kind: str
    config: type
    run: Callable[..., Any]
    make: Callable[..., Any] | None = None
    #: what a finished run reports it wrote: (what, file in the run directory)
    written: tuple[str, str] | None = None
    #: select / random-search: the short training's defaults (the paper's budget)
    selection: dict[str, Any] = field(default_factory=dict)
    score: Callable[[list[dict[str, Any]]], dict[str, Any]] | None = None

    def build(self, **given: Any) -> Any:
        """The config of these fields: the command's recipe for the dataset, then the fields."""
        if self.make is None:
            return self.config(**given)
        return self.make(given.pop("dataset", None), **given)


RUNS: dict[str, RunCommand] = {c.kind: c for c in (
    RunCommand(SEARCH_CNN, SearchConfig, search, make=search_recipe, written=("genotype", "genotype.json")),
    RunCommand(SEARCH_RNN, RNNSearchConfig, search_rnn, make=rnn_search_recipe, written=("genotype", "genotype.json")),
    RunCommand(TRAIN_CNN, TrainConfig, train, make=recipe, written=("weights", "model.pt"),
               selection={"epochs": 100, "train_portion": 0.5}, score=_val_top1),
    RunCommand(TRAIN_RNN, RNNTrainConfig, train_rnn, selection={"epochs": 300}, score=_val_ppl),
    RunCommand(SEARCH_NB201, NB201SearchConfig, search_nb201, make=nb201_search_recipe,
               written=("genotype", "genotype.json")),
    RunCommand(TRAIN_NB201, NB201TrainConfig, train_nb201, make=nb201_train_recipe, written=("weights", "model.pt"),
               selection={"epochs": 12, "train_portion": 0.5}, score=_val_top1),
)}
