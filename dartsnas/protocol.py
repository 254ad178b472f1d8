"""The paper's protocol (sections 3.3 and 3.4): several searches, selection by a short training,
and random search in the same space as the baseline.

Every unit of work (one search of one seed, one short training of one candidate) is a *job*: a
command, its config and its run directory. Jobs run as separate processes (``python -m
dartsnas.protocol JOB.json``), one at a time per device, from a
:class:`concurrent.futures.ThreadPoolExecutor` with one worker per device: a job that crashes or is
killed takes only itself down, and a finished job leaves a ``.done.json`` beside its run directory
so that re-running the protocol skips it (an unfinished one resumes from its checkpoint).
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import math
import os
import queue
import random
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from .errors import ConfigError, DartsError, Interrupted
from .genotype import CONV_GENOTYPES, RNN_GENOTYPES, Genotype, RecurrentGenotype, edge_row, load_genotype, num_edges
from .ops import DARTS_OPS, RNN_DARTS_OPS, edge_ops
from .train.checkpoint import CHECKPOINT, GENOTYPE, METRICS, atomic_write_text, read_metrics
from .train.common import stop_signals

SPACES = ("cnn", "rnn")
PROTOCOL = "protocol.json"


# ----------------------------------------------------------------------------- random sampling
def _active(ops: Sequence[str]) -> list[str]:
    active = [op for op in ops if op != "none"]
    if not active:
        raise ConfigError("the op set needs at least one op other than 'none'")
    return active


def sample_genotype(rng: random.Random, nodes: int = 4, ops: Sequence[str] = DARTS_OPS) -> Genotype:
    """A uniform conv cell pair: each node takes 2 distinct predecessors, each through a non-zero op
    of that edge (``ops``: one op set, or a per-edge one such as ``("s1",)``)."""

    def cell(kind: str) -> tuple[tuple[str, int], ...]:
        names = edge_ops(ops, num_edges(nodes), kind)
        edges = []
        for i in range(nodes):
            for j in sorted(rng.sample(range(i + 2), 2)):
                edges.append((rng.choice(_active(names[edge_row(i, j, 2)])), j))
        return tuple(edges)

    concat = tuple(range(2, 2 + nodes))
    return Genotype(normal=cell("normal"), normal_concat=concat, reduce=cell("reduce"), reduce_concat=concat)


def sample_recurrent_genotype(rng: random.Random, nodes: int = 8,
                              ops: Sequence[str] = RNN_DARTS_OPS) -> RecurrentGenotype:
    """A uniform recurrent cell: node i (1-based) takes one state < i through a non-zero op."""
    active = _active(ops)
    return RecurrentGenotype(recurrent=tuple((rng.choice(active), rng.randrange(i)) for i in range(1, nodes + 1)),
                             concat=tuple(range(1, nodes + 1)))


def sample_genotypes(space: str, count: int, seed: int, *, nodes: int | None = None,
                     ops: Sequence[str] | None = None) -> list[Genotype | RecurrentGenotype]:
    """``count`` genotypes of ``space``, reproducible from ``seed`` (one explicit generator)."""
    if count < 1:
        raise ConfigError(f"--samples must be >= 1, got {count}")
    if nodes is not None and nodes < 1:
        raise ConfigError(f"--nodes must be >= 1, got {nodes}")
    rng = random.Random(seed)
    if space == "cnn":
        return [sample_genotype(rng, nodes or 4, ops or DARTS_OPS) for _ in range(count)]
    return [sample_recurrent_genotype(rng, nodes or 8, ops or RNN_DARTS_OPS) for _ in range(count)]


# ----------------------------------------------------------------------------- jobs
def _runners() -> dict[str, tuple[type, Callable[..., Any]]]:
    from .train.final import TrainConfig, train
    from .train.final_rnn import RNNTrainConfig, train_rnn
    from .train.search import SearchConfig, search
    from .train.search_rnn import RNNSearchConfig, search_rnn
    return {"train-cnn": (TrainConfig, train), "train-rnn": (RNNTrainConfig, train_rnn),
            "search-cnn": (SearchConfig, search), "search-rnn": (RNNSearchConfig, search_rnn)}


@dataclass
class Job:
    """One command (``train-cnn``, ``train-rnn``, ``search-cnn``, ``search-rnn``) of the protocol."""

    name: str
    command: str
    config: dict[str, Any]
    out: str

    def beside(self, suffix: str) -> Path:
        """A file next to the run directory: ``runs/NAME{suffix}``."""
        return Path(self.out).with_name(Path(self.out).name + suffix)

    @property
    def done_file(self) -> Path:
        return self.beside(".done.json")

    @property
    def log_file(self) -> Path:
        return self.beside(".log")

    def result(self) -> dict[str, Any] | None:
        """The finished job's summary, or None while it has not finished."""
        if not self.done_file.is_file():
            return None
        try:
            return json.loads(self.done_file.read_text())
        except (OSError, ValueError):
            return None


def summarize(job: Job) -> dict[str, Any]:
    """What the leaderboard needs of a finished job: its selection score and epoch count."""
    records = [r for r in read_metrics(Path(job.out) / METRICS) if "epoch" in r]
    out: dict[str, Any] = {"name": job.name, "status": "done", "epochs": len(records)}
    if job.command == "train-cnn":
        out.update(metric="val_top1", score=records[-1].get("val_top1") if records else None)
    elif job.command == "train-rnn":
        ppls = [r["val_ppl"] for r in records if "val_ppl" in r]
        out.update(metric="val_ppl", score=min(ppls) if ppls else None)
    else:
        out["genotype"] = str(Path(job.out) / GENOTYPE)
    return out


def run_job(job: Job) -> dict[str, Any]:
    """Run one job in this process: resume it if its checkpoint exists, else start it afresh."""
    config_cls, run = _runners()[job.command]
    config = config_cls.from_dict(job.config)
    out = Path(job.out)
    resume = (out / CHECKPOINT).is_file()
    run(config, out, resume=resume, overwrite=not resume, quiet=False)  # per-epoch lines into the log
    summary = summarize(job)
    atomic_write_text(job.done_file, json.dumps(summary) + "\n")
    return summary


def default_devices() -> list[str]:
    """One worker per CUDA device, or one CPU worker."""
    import torch
    if torch.cuda.is_available():
        return [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    return ["cpu"]


def run_jobs(jobs: Sequence[Job], devices: Sequence[str] | None = None, *,
             log: Callable[[str], None] = print, on_result: Callable[[dict[str, Any]], None] | None = None
             ) -> dict[str, dict[str, Any]]:
    """Run ``jobs`` in separate processes, at most one per entry of ``devices`` at a time
    (``["cpu", "cpu"]`` runs two CPU jobs side by side). Finished jobs are skipped; a failed job is
    recorded as ``{"status": "failed", "error": ...}`` and the others go on."""
    devices = list(devices or default_devices())
    if not devices:
        raise ConfigError("--devices needs at least one device")
    free: queue.Queue[str] = queue.Queue()
    for d in devices:
        free.put(d)
    cpu_workers = sum(d == "cpu" for d in devices)
    threads = max(1, (os.cpu_count() or 1) // max(cpu_workers, 1))

    def work(job: Job) -> dict[str, Any]:
        device = free.get()
        try:
            Path(job.out).parent.mkdir(parents=True, exist_ok=True)
            spec = job.beside(".job.json")
            atomic_write_text(spec, json.dumps(dataclasses.asdict(
                dataclasses.replace(job, config={**job.config, "device": device}))) + "\n")
            env = dict(os.environ)
            if device == "cpu" and cpu_workers > 1:
                env.setdefault("OMP_NUM_THREADS", str(threads))
            log(f"{job.name}: running on {device} (log: {job.log_file})")
            with open(job.log_file, "a") as logf:
                with lock:
                    if stop:  # a stop signal arrived: start nothing new
                        return {"name": job.name, "status": "interrupted"}
                    proc = subprocess.Popen([sys.executable, "-m", "dartsnas.protocol", str(spec)], stdout=logf,
                                            stderr=subprocess.STDOUT, env=env, stdin=subprocess.DEVNULL)
                    live.add(proc)
                proc.wait()
                with lock:
                    live.discard(proc)
            result = job.result()
            if stop and result is None:
                return {"name": job.name, "status": "interrupted"}
            if proc.returncode == 0 and result is not None:
                return result
            lines = [ln for ln in job.log_file.read_text(errors="replace").splitlines() if ln.strip()]
            error = lines[-1] if lines else f"exit status {proc.returncode}"
            return {"name": job.name, "status": "failed", "error": error, "returncode": proc.returncode}
        finally:
            free.put(device)

    # SIGTERM / SIGINT: passed on to the running jobs (each checkpoints at its next step boundary and
    # exits), nothing new starts, and the protocol stops; --resume continues it.
    lock, live, stop = threading.Lock(), set(), []

    def on_signal(signum: int, frame: Any) -> None:
        with lock:
            stop.append(signum)
            if signum == signal.SIGTERM:  # a terminal's Ctrl-C already reaches the whole process group
                for proc in live:
                    proc.send_signal(signum)

    with stop_signals(on_signal):
        results = _run_pending(jobs, work, len(devices), log, on_result)
    if stop:
        name = signal.Signals(stop[0]).name
        raise Interrupted(f"{name}: the protocol stopped; running jobs wrote checkpoints (--resume continues)",
                          128 + stop[0])
    return results


def _run_pending(jobs: Sequence[Job], work: Callable[[Job], dict[str, Any]], workers: int,
                 log: Callable[[str], None], on_result: Callable[[dict[str, Any]], None] | None
                 ) -> dict[str, dict[str, Any]]:
    results: dict[str, dict[str, Any]] = {}
    pending = []
    for job in jobs:
        done = job.result()
        if done is not None:
            log(f"{job.name}: finished earlier, skipped")
            results[job.name] = done
        else:
            pending.append(job)
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        futures = {pool.submit(work, job): job for job in pending}
        for future in concurrent.futures.as_completed(futures):
            job = futures[future]
            try:
                result = future.result()
            except OSError as e:  # the process could not be started or its files written
                result = {"name": job.name, "status": "failed", "error": str(e)}
            results[job.name] = result
            log(f"{job.name}: {result['status']}" + (f" ({result['error']})" if result["status"] == "failed" else ""))
            if result["status"] == "interrupted":
                continue
            if on_result is not None:
                on_result(results)
    return {job.name: results[job.name] for job in jobs}


# ----------------------------------------------------------------------------- selection
def search_method(config: dict[str, Any]) -> str:
    """The method a search run's config names: darts, p-darts (--progressive), gdas (--sampler gdas) or
    pc-darts (--partial-channels), with its regulariser, second order and cost budget where set."""
    name = "p-darts" if config.get("progressive") else "gdas" if config.get("sampler") == "gdas" else \
        "pc-darts" if config.get("partial_channels", 1) > 1 else "darts"
    if config.get("regularizer", "none") != "none":
        name += f"+{config['regularizer']}"
    if config.get("order", "first") != "first":
        name += f" ({config['order']} order)"
    if config.get("cost"):
        name += f", {config['cost']} budget"
    return name


def candidate_method(spec: str, space: str) -> str:
    """What produced a candidate: a search run's method (its directory's config.json, also for the
    genotype.json inside one), ``random`` for random-search's samples, ``built-in``, else ``genotype file``."""
    builtins = CONV_GENOTYPES if space == "cnn" else RNN_GENOTYPES
    if spec in builtins:
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
            return search_method(config)
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
           log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Train every candidate genotype with ``config`` (a TrainConfig or RNNTrainConfig: the short
    budget), rank them on the validation split, write ``leaderboard.json``, ``leaderboard.md`` and
    the winner's ``genotype.json`` into ``out``; returns the leaderboard rows."""
    out = Path(out)
    command = f"train-{space}"
    if space not in SPACES:
        raise ConfigError(f"space must be cnn or rnn, got {space!r}")
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
        if space == "cnn" and not config.train_portion < 1.0:
            raise ConfigError("select needs a held-out validation split: --train-portion must be below 1")
        config.validate()
        taken: set[str] = set()
        genotypes, methods = {}, {}
        (out / "genotypes").mkdir(parents=True, exist_ok=True)
        for spec in candidates:  # every candidate is checked before anything trains
            genotype = load_genotype(spec, space)
            name = _candidate_name(spec, taken)
            path = out / "genotypes" / f"{name}.json"
            atomic_write_text(path, genotype.to_json() + "\n")
            genotypes[name] = str(path)
            methods[name] = candidate_method(spec, space)
        if overwrite:
            for stale in ("runs", "leaderboard.json", "leaderboard.md", GENOTYPE):
                _remove(out / stale)
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

    log(f"select {space}: {len(jobs)} candidates, devices {', '.join(devices or default_devices())}, out {out}")
    rows = write(run_jobs(jobs, devices, log=log, on_result=write))
    best = rows[0] if rows and rows[0]["status"] == "done" and rows[0].get("score") is not None else None
    if best is None:
        raise DartsError(f"no candidate finished: see {out / 'leaderboard.md'} and the logs in {out / 'runs'}")
    winner = load_genotype(best["genotype"], space)
    atomic_write_text(out / GENOTYPE, winner.to_json() + "\n")
    log(f"winner {best['name']} ({best['metric']} {best['score']:.4f}); genotype written to {out / GENOTYPE}")
    return rows


def _remove(path: Path) -> None:
    import shutil
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


def random_search(space: str, samples: int, seed: int, out: str | Path, config: Any | None = None, *,
                  nodes: int | None = None, ops: Sequence[str] | None = None, devices: Sequence[str] | None = None,
                  resume: bool = False, overwrite: bool = False,
                  log: Callable[[str], None] = print) -> list[Path] | list[dict[str, Any]]:
    """Sample ``samples`` genotypes (``out/samples/sample_NNN.json``); with a training ``config``,
    select among them as :func:`select` does. Returns the sample files, or the leaderboard."""
    out = Path(out)
    folder = out / "samples"
    if not resume:
        if folder.is_dir() and any(folder.iterdir()) and not overwrite:
            raise ConfigError(f"--out {out} already holds samples: pass --resume to continue "
                              "or --overwrite to replace them")
        _remove(folder)
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
                  resume=resume and (out / PROTOCOL).is_file(), overwrite=overwrite or not resume, log=log)


def search_seeds(space: str, config: Any, seeds: Sequence[int], out: str | Path, *,
                 devices: Sequence[str] | None = None, resume: bool = False, overwrite: bool = False,
                 log: Callable[[str], None] = print) -> dict[int, Path]:
    """One search per seed into ``out/seed_S`` (in parallel over ``devices``); returns the genotype files."""
    out = Path(out)
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"--seeds repeats a seed: {' '.join(map(str, seeds))}")
    config.validate()
    jobs = []
    for s in seeds:
        run_dir = out / f"seed_{s}"
        job = Job(f"seed_{s}", f"search-{space}", dataclasses.replace(config, seed=s).to_dict(), str(run_dir))
        started = run_dir.exists() and any(run_dir.iterdir())
        if started and not resume and not overwrite:
            raise ConfigError(f"--out {out} already holds {run_dir.name}: pass --resume to continue "
                              "or --overwrite to replace it")
        if overwrite and not resume:
            for path in (run_dir, job.done_file, job.log_file):
                _remove(path)
        jobs.append(job)
    results = run_jobs(jobs, devices, log=log)
    failed = [name for name, r in results.items() if r["status"] != "done"]
    if failed:
        raise DartsError(f"search failed for {', '.join(failed)}: see the logs beside the run directories in {out}")
    return {s: out / f"seed_{s}" / GENOTYPE for s in seeds}


def _main(argv: Sequence[str]) -> int:
    """The job process: ``python -m dartsnas.protocol JOB.json``."""
    if len(argv) != 1:
        print("usage: python -m dartsnas.protocol JOB.json", file=sys.stderr)
        return 2
    try:
        job = Job(**json.loads(Path(argv[0]).read_text()))
        if job.command not in _runners():
            raise ConfigError(f"{argv[0]}: unknown command {job.command!r}")
        print(json.dumps(run_job(job)))
    except DartsError as e:
        print(f"dartsnas: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(_main(sys.argv[1:]))
