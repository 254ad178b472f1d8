"""The paper's protocol (sections 3.3 and 3.4): several searches, selection by a short training,
and random search in the same space as the baseline.

Every unit of work (one search of one seed, one short training of one candidate) is a *job*
(:mod:`dartsnas.jobs`): a command, its config and its run directory, run in a process of its own.
"""
from __future__ import annotations

import dataclasses
import json
import math
import random
from pathlib import Path
from typing import Any, Callable, Sequence

from .config import Config, option
from .errors import ConfigError, DartsError
from .genotype import load_genotype
from .methods import method_name
from .spaces import SEARCH_SPACES
from .jobs import Job, default_devices, remove_path, run_jobs
from .train.checkpoint import GENOTYPE, atomic_write_text

PROTOCOL = "protocol.json"


# ----------------------------------------------------------------------------- random sampling
def sample_genotypes(space: str, count: int, seed: int, *, nodes: int | None = None,
                     ops: Sequence[str] | None = None) -> list[Any]:
    """``count`` genotypes of ``space`` (its uniform sampler), reproducible from ``seed`` (one explicit
    generator)."""
    if count < 1:
        raise ConfigError(f"--samples must be >= 1, got {count}")
    if nodes is not None and nodes < 1:
        raise ConfigError(f"--nodes must be >= 1, got {nodes}")
    rng = random.Random(seed)
    kind = SEARCH_SPACES.get(space)
    return [kind.sample(rng, nodes or kind.default_nodes, ops or kind.default_ops) for _ in range(count)]


# ----------------------------------------------------------------------------- selection
def candidate_method(spec: str, space: str) -> str:
    """What produced a candidate: a search run's method (its directory's config.json, also for the
    genotype.json inside one), ``random`` for random-search's samples, ``built-in``, else ``genotype file``."""
    if spec in SEARCH_SPACES.get(space).builtins:
        return "built-in"
    path = Path(spec)
    run_dir = path if path.is_dir() else path.parent
    config_file = run_dir / "config.json"
    if config_file.is_file():
        try:
            config = json.loads(config_file.read_text())
        except (OSError, ValueError):
            config = {}
        if str(config.get("kind", "")).startswith("search"):
            return method_name(config)
    if path.parent.name == "samples" and path.name.startswith("sample_"):
        return "random"
    return "genotype file"


def leaderboard(results: dict[str, dict[str, Any]], genotypes: dict[str, str],
                methods: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """Rows best first: finished candidates by validation score (top-1 up, perplexity down), then
    candidates without a score, then failed ones; each with the method that produced it."""
    def key(row: dict[str, Any]) -> tuple:
        score = row.get("score")
        if row.get("status") != "done" or score is None or not math.isfinite(score):
            return (1 if row.get("status") == "done" else 2, 0.0, row["name"])
        return (0, -score if row.get("metric") == "val_top1" else score, row["name"])

    methods = methods or {}
    rows = sorted((dict(r, genotype=genotypes[name], method=methods.get(name, "")) for name, r in results.items()),
                  key=key)
    for rank, row in enumerate(rows, 1):
        row["rank"] = rank
    return rows


def markdown_table(rows: Sequence[dict[str, Any]]) -> str:
    metric = next((r["metric"] for r in rows if "metric" in r), "score")
    lines = [f"| rank | candidate | method | {metric} | epochs | status |", "| --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        score = r.get("score")
        shown = "" if score is None else (f"{score:.4f}" if metric == "val_top1" else f"{score:.2f}")
        status = f"failed: {r.get('error', '')}".replace("|", "/") if r["status"] == "failed" else r["status"]
        lines.append(f"| {r['rank']} | {r['name']} | {r.get('method', '')} | {shown} | {r.get('epochs', '')} | {status} |")
    return "\n".join(lines) + "\n"


def _candidate_name(spec: str, taken: set[str]) -> str:
    path = Path(spec)
    base = path.name if path.is_dir() else (path.stem if path.suffix == ".json" else spec)
    if path.is_dir() and path.name in ("", "."):
        base = path.resolve().name
    base = "".join(c if c.isalnum() or c in "-_." else "_" for c in base) or "candidate"
    name, k = base, 2
    while name in taken:
        name, k = f"{base}_{k}", k + 1
    taken.add(name)
    return name


def select(candidates: Sequence[str], space: str, config: Any, out: str | Path, *,
           devices: Sequence[str] | None = None, resume: bool = False, overwrite: bool = False,
           log: Callable[[str], None] = print, prerank: tuple[str, int] | None = None,
           launcher: Any = None) -> list[dict[str, Any]]:
    """Train every candidate genotype with ``config`` (a TrainConfig or RNNTrainConfig: the short
    budget), rank them on the validation split, write ``leaderboard.json``, ``leaderboard.md`` and
    the winner's ``genotype.json`` into ``out``; returns the leaderboard rows. ``prerank`` (a
    zero-cost proxy, K): only the K candidates it scores highest are trained (``prerank.json``).
    ``launcher`` (:class:`~dartsnas.cluster.LauncherConfig`): where the trainings run."""
    out = Path(out)
    command = SEARCH_SPACES.get(space).train_kind
    protocol_file = out / PROTOCOL
    if protocol_file.exists() and not (resume or overwrite):
        raise ConfigError(f"--out {out} already holds a selection: pass --resume to continue it "
                          "or --overwrite to replace it")
    if resume:
        if not protocol_file.is_file():
            raise ConfigError(f"{out}: nothing to resume (no {PROTOCOL})")
        saved = json.loads(protocol_file.read_text())
        if saved.get("command") != command:
            raise ConfigError(f"{protocol_file}: a {saved.get('command')!r} selection, not {command!r}")
        genotypes, base, methods = saved["genotypes"], saved["config"], saved.get("methods", {})
    else:
        if not candidates:
            raise ConfigError("select needs at least one candidate genotype")
        if getattr(config, "train_portion", 0.0) >= 1.0:
            raise ConfigError("select needs a held-out validation split: --train-portion must be below 1")
        config.validate()
        taken: set[str] = set()
        genotypes, methods = {}, {}
        loaded = {_candidate_name(spec, taken): (spec, load_genotype(spec, space)) for spec in candidates}
        if prerank is not None:  # every candidate is checked before anything trains
            from .zero_cost import prerank as rank
            kept, scores = rank({n: g for n, (_, g) in loaded.items()}, space, config, *prerank, seed=config.seed)
            out.mkdir(parents=True, exist_ok=True)
            atomic_write_text(out / "prerank.json", json.dumps({"proxy": prerank[0], "keep": prerank[1], "scores": scores,
                                                                "kept": kept}, indent=1) + "\n")
            log(f"pre-ranked by {prerank[0]}: {len(kept)} of {len(loaded)} candidates kept")
            loaded = {n: loaded[n] for n in kept}
        (out / "genotypes").mkdir(parents=True, exist_ok=True)
        for name, (spec, genotype) in loaded.items():
            path = out / "genotypes" / f"{name}.json"
            atomic_write_text(path, genotype.to_json() + "\n")
            genotypes[name] = str(path)
            methods[name] = candidate_method(spec, space)
        if overwrite:
            for stale in ("runs", "leaderboard.json", "leaderboard.md", GENOTYPE, "slurm"):
                remove_path(out / stale)
        base = config.to_dict()
        atomic_write_text(protocol_file, json.dumps({"command": command, "config": base, "genotypes": genotypes,
                                                      "methods": methods}, indent=1) + "\n")
    jobs = [Job(name, command, {**base, "genotype": path}, str(out / "runs" / name))
            for name, path in genotypes.items()]

    def write(results: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
        rows = leaderboard(results, genotypes, methods)
        atomic_write_text(out / "leaderboard.json", json.dumps(rows, indent=1) + "\n")
        atomic_write_text(out / "leaderboard.md", markdown_table(rows))
        return rows

    where = launcher.launcher if launcher is not None and launcher.on_cluster else \
        f"devices {', '.join(devices or default_devices())}"
    log(f"select {space}: {len(jobs)} candidates, {where}, out {out}")
    rows = write(run_jobs(jobs, devices, log=log, on_result=write, launcher=launcher, folder=out / "slurm"))
    best = rows[0] if rows and rows[0]["status"] == "done" and rows[0].get("score") is not None else None
    if best is None:
        raise DartsError(f"no candidate finished: see {out / 'leaderboard.md'} and the logs in {out / 'runs'}")
    winner = load_genotype(best["genotype"], space)
    atomic_write_text(out / GENOTYPE, winner.to_json() + "\n")
    log(f"winner {best['name']} ({best['metric']} {best['score']:.4f}); genotype written to {out / GENOTYPE}")
    return rows


@dataclasses.dataclass
class SamplingConfig(Config):
    """random-search's sampling: how many genotypes, with how many nodes, from which ops (None: the
    search space's own, 4 nodes and the DARTS ops for cnn, 8 and the recurrent ops for rnn)."""

    samples: int | None = option(None, "number of genotypes K (required)", group="sampling", min=1,
                                 default_text="")
    nodes: int | None = option(None, "intermediate nodes", group="sampling", min=1, default_text="the space's")
    ops: tuple[str, ...] | None = option(None, "op set, or a named one (darts, s1-s4)", group="sampling",
                                         metavar="OP", default_text="the space's")

    def check(self) -> None:
        super().check()
        if self.samples is None:
            raise ConfigError("{samples} is required: the number of genotypes K", names=("samples",))


def random_search(space: str, samples: int, seed: int, out: str | Path, config: Any | None = None, *,
                  nodes: int | None = None, ops: Sequence[str] | None = None, devices: Sequence[str] | None = None,
                  resume: bool = False, overwrite: bool = False, log: Callable[[str], None] = print,
                  prerank: tuple[str, int] | None = None, launcher: Any = None) -> list[Path] | list[dict[str, Any]]:
    """Sample ``samples`` genotypes (``out/samples/sample_NNN.json``); with a training ``config``,
    select among them as :func:`select` does. Returns the sample files, or the leaderboard."""
    out = Path(out)
    folder = out / "samples"
    if not resume:
        if folder.is_dir() and any(folder.iterdir()) and not overwrite:
            raise ConfigError(f"--out {out} already holds samples: pass --resume to continue "
                              "or --overwrite to replace them")
        remove_path(folder)
        folder.mkdir(parents=True)
        width = max(3, len(str(samples - 1)))
        for k, genotype in enumerate(sample_genotypes(space, samples, seed, nodes=nodes, ops=ops)):
            atomic_write_text(folder / f"sample_{k:0{width}d}.json", genotype.to_json() + "\n")
        log(f"random-search {space}: {samples} genotypes (seed {seed}) written to {folder}")
    paths = sorted(folder.glob("sample_*.json"))
    if not paths:
        raise ConfigError(f"{folder}: no sample_*.json to resume from")
    if config is None:
        return paths
    # --resume after a --no-train run starts the selection over the samples already written.
    return select([str(p) for p in paths], space, config, out, devices=devices,
                  resume=resume and (out / PROTOCOL).is_file(), overwrite=overwrite or not resume, log=log,
                  prerank=prerank, launcher=launcher)


def search_seeds(space: str, config: Any, seeds: Sequence[int], out: str | Path, *,
                 devices: Sequence[str] | None = None, resume: bool = False, overwrite: bool = False,
                 log: Callable[[str], None] = print, launcher: Any = None) -> dict[int, Path]:
    """One search per seed into ``out/seed_S`` (in parallel over ``devices``); returns the genotype files."""
    out = Path(out)
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"--seeds repeats a seed: {' '.join(map(str, seeds))}")
    config.validate()
    jobs = []
    for s in seeds:
        run_dir = out / f"seed_{s}"
        job = Job(f"seed_{s}", SEARCH_SPACES.get(space).search_kind, dataclasses.replace(config, seed=s).to_dict(),
                  str(run_dir))
        started = run_dir.exists() and any(run_dir.iterdir())
        if started and not resume and not overwrite:
            raise ConfigError(f"--out {out} already holds {run_dir.name}: pass --resume to continue "
                              "or --overwrite to replace it")
        if overwrite and not resume:
            for path in (run_dir, job.done_file, job.log_file):
                remove_path(path)
        jobs.append(job)
    if overwrite and not resume:
        remove_path(out / "slurm")  # the cluster's record of the replaced jobs
    results = run_jobs(jobs, devices, log=log, launcher=launcher, folder=out / "slurm")
    failed = [name for name, r in results.items() if r["status"] != "done"]
    if failed:
        raise DartsError(f"search failed for {', '.join(failed)}: see the logs beside the run directories in {out}")
    return {s: out / f"seed_{s}" / GENOTYPE for s in seeds}
