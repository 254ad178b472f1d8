"""``dartsnas derive RUN --method pt``: DARTS-PT's selection (``methods/pt.py``) on a finished search.

The search's last checkpoint is copied into the selection's own run directory (``RUN/pt`` unless
``out`` says otherwise) with ``select = "pt"`` in its config, and the run resumes there: the
selection's epochs follow the search's, checkpointed after each like any run's, so a selection that is
killed continues where it stopped when the same command runs again. The search's directory is not
changed. Any conv or NAS-Bench-201 search but P-DARTS's, GDAS's and budgeted ones: plain, SDARTS-RS,
DARTS-, PC-DARTS, DrNAS, β-DARTS runs alike.
"""
from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any, Callable

from ..errors import CheckpointError, ConfigError
from .checkpoint import CHECKPOINT, METRICS, load_checkpoint, save_checkpoint
from .rundir import CLASSES, DATA_INFO, RUN_MARKER

#: The selection's flags, by config field.
PT_FIELDS = ("pt_interval", "pt_crit", "pt_lr", "pt_batches")


def select_pt(run: str | Path, out: str | Path | None = None, *, quiet: bool = False,
              log: Callable[[str], None] = print, train_data: Any = None, val_data: Any = None,
              **options: Any) -> Any:
    """Run (or continue) DARTS-PT on the finished search ``run`` (a directory or its checkpoint.pt);
    ``options``: the selection's fields (``pt_interval``, ``pt_crit``, ``pt_lr``, ``pt_batches``; None:
    the default). Returns the selected genotype."""
    from .nb201 import SEARCH_KIND as NB201, NB201Search, NB201SearchConfig
    from .search import KIND, Search, SearchConfig
    unknown = set(options) - set(PT_FIELDS)
    if unknown:
        raise ConfigError(f"DARTS-PT has no option {sorted(unknown)[0]!r} (it takes {', '.join(PT_FIELDS)})")
    options = {k: v for k, v in options.items() if v is not None}
    source = Path(run)
    run_dir = source if source.is_dir() else source.parent
    out = Path(out) if out is not None else run_dir / "pt"
    classes = {KIND: (SearchConfig, Search), NB201: (NB201SearchConfig, NB201Search)}
    if (out / CHECKPOINT).is_file():  # a selection begun: continue it, with the settings it began with
        state = load_checkpoint(out)
        config_cls, search_cls = classes[state["kind"]]
        config = config_cls.from_dict(state["config"])
        for name, value in options.items():
            if getattr(config, name) != value:
                raise ConfigError(f"{out}: the selection runs with {{{name}}} {getattr(config, name)!r}; it cannot "
                                  f"continue with {value!r} (another --out starts a new one)", names=(name,))
    else:
        state = load_checkpoint(source)
        if state.get("kind") not in classes:
            raise CheckpointError(f"{source}: a {state.get('kind')!r} checkpoint, not a conv or nb201 search's")
        config_cls, search_cls = classes[state["kind"]]
        searched = config_cls.from_dict(state["config"])
        if searched.select == "pt":
            raise ConfigError(f"{run_dir}: this search already selected by DARTS-PT (its genotype.json)")
        if int(state["epoch"]) < searched.epochs or state.get("in_epoch") is not None:
            raise CheckpointError(f"{source}: the search stopped after epoch {state['epoch']} of {searched.epochs}; "
                                  "finish it first (search --resume)")
        if searched.dataset == "python" and train_data is None:
            raise ConfigError("the search ran on Python datasets: pass them again (select_pt(..., train_data=...))")
        config = dataclasses.replace(searched, select="pt", **options)
        config.validate()
        _start(run_dir, out, state, config)
    result = search_cls.launch(config, out, resume=True, quiet=quiet, log=log, train_data=train_data, val_data=val_data)
    return result.genotype


def _start(run_dir: Path, out: Path, state: dict[str, Any], config: Any) -> None:
    """The selection's directory: the search's records and tables, its checkpoint with the new config."""
    out.mkdir(parents=True, exist_ok=True)
    for name in (METRICS, DATA_INFO, CLASSES, "cost_table.json"):
        if (run_dir / name).is_file():
            shutil.copyfile(run_dir / name, out / name)
    (out / RUN_MARKER).write_text(json.dumps({"kind": state["kind"]}) + "\n", encoding="utf-8")
    saved = {k: v for k, v in state.items() if k != "format_version"}
    save_checkpoint(out / CHECKPOINT, {**saved, "config": config.to_dict()})  # last: its presence means begun
