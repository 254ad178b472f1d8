"""The protocol's jobs: one command (a kind of ``train.commands.RUNS``), its config and its run
directory each. Jobs run as separate processes (``python -m dartsnas.jobs JOB.json``), one at a time
per device, from a :class:`concurrent.futures.ThreadPoolExecutor` with one worker per device: a job
that crashes or is killed takes only itself down, and a finished job leaves a ``.done.json`` beside
its run directory so that re-running the protocol skips it (an unfinished one resumes from its
checkpoint). A job ends with its driver: killed, even by SIGKILL, the driver leaves no job running
(the job sees its parent go and stops at its next step boundary, checkpointed), and a rerun's job
waits for a run directory whose process is still alive instead of running beside it."""
from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from .errors import ConfigError, DartsError, Interrupted
from .train.checkpoint import CHECKPOINT, GENOTYPE, METRICS, atomic_write_text, read_metrics
from .train.commands import RUNS
from .train.loop import stop_signals
from .train.rundir import lock_holder

#: How often a job looks whether its driver is still there, and whether a run directory is free.
POLL_SECONDS = 0.5
#: The driver's pid, given to each job process: the job ends when that process is gone.
PARENT_ENV = "DARTSNAS_JOB_PARENT"


@dataclass
class Job:
    """One command (a kind of ``train.commands.RUNS``: ``train-cnn``, ``search-rnn``, ...) of the protocol."""

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

    def write_spec(self, device: str) -> Path:
        """The job file its process reads (``runs/NAME.job.json``), the job to run on ``device``."""
        spec = self.beside(".job.json")
        atomic_write_text(spec, json.dumps(dataclasses.asdict(
            dataclasses.replace(self, config={**self.config, "device": device}))) + "\n")
        return spec

    def result(self) -> dict[str, Any] | None:
        """The finished job's summary, or None while it has not finished."""
        if not self.done_file.is_file():
            return None
        try:
            return json.loads(self.done_file.read_text())
        except (OSError, ValueError):
            return None


def remove_path(path: Path) -> None:
    """A file or a directory tree, if it is there (what --overwrite replaces)."""
    import shutil
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


def summarize(job: Job) -> dict[str, Any]:
    """What the leaderboard needs of a finished job: its selection score and epoch count."""
    records = [r for r in read_metrics(Path(job.out) / METRICS) if "epoch" in r]
    out: dict[str, Any] = {"name": job.name, "status": "done", "epochs": len(records)}
    score = RUNS[job.command].score
    if score is not None:
        out.update(score(records))
    else:
        out["genotype"] = str(Path(job.out) / GENOTYPE)
    return out


def run_job(job: Job) -> dict[str, Any]:
    """Run one job in this process: resume it if its checkpoint exists, else start it afresh (once
    no other live process runs in its directory: a killed driver's job finishing its step)."""
    command = RUNS[job.command]
    config = command.config.from_dict(job.config)
    out = Path(job.out)
    ranks = int(os.environ.get("WORLD_SIZE", "1"))
    holder = lock_holder(out) if ranks == 1 else None  # a data-parallel job's ranks share the directory
    if holder is not None:
        print(f"{job.name}: waiting for pid {holder.get('pid')} on {holder.get('host')} to leave {out}", flush=True)
        while lock_holder(out) is not None:
            time.sleep(POLL_SECONDS)
    resume = (out / CHECKPOINT).is_file()
    command.run(config, out, resume=resume, overwrite=not resume, quiet=False)  # per-epoch lines into the log
    summary = summarize(job)
    if int(os.environ.get("RANK", "0")) == 0:
        atomic_write_text(job.done_file, json.dumps(summary) + "\n")
    return summary


def default_devices() -> list[str]:
    """One worker per CUDA device, or one CPU worker."""
    import torch
    if torch.cuda.is_available():
        return [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    return ["cpu"]


def run_jobs(jobs: Sequence[Job], devices: Sequence[str] | None = None, *,
             log: Callable[[str], None] = print, on_result: Callable[[dict[str, Any]], Any] | None = None,
             threads: int | None = None, launcher: Any = None, folder: str | Path | None = None
             ) -> dict[str, dict[str, Any]]:
    """Run ``jobs`` in separate processes, at most one per entry of ``devices`` at a time
    (``["cpu", "cpu"]`` runs two CPU jobs side by side). Finished jobs are skipped; a failed job is
    recorded as ``{"status": "failed", "error": ...}`` and the others go on. ``threads`` fixes every
    CPU job's thread count (else the cores are shared out), so that its numbers do not depend on how
    many jobs run beside it. A ``launcher`` (:class:`~dartsnas.cluster.LauncherConfig`) other than
    local submits them to the cluster instead, as one array whose state lives in ``folder``."""
    if launcher is not None and launcher.on_cluster:
        from .cluster import run_on_cluster
        return run_on_cluster(jobs, launcher, Path(folder), log=log, on_result=on_result, threads=threads)
    devices = list(devices or default_devices())
    if not devices:
        raise ConfigError("--devices needs at least one device")
    free: queue.Queue[str] = queue.Queue()
    for d in devices:
        free.put(d)
    cpu_workers = sum(d == "cpu" for d in devices)
    fixed_threads = threads
    threads = threads or max(1, (os.cpu_count() or 1) // max(cpu_workers, 1))

    def work(job: Job) -> dict[str, Any]:
        device = free.get()
        try:
            Path(job.out).parent.mkdir(parents=True, exist_ok=True)
            spec = job.write_spec(device)
            env = {**os.environ, PARENT_ENV: str(os.getpid())}
            if fixed_threads is not None:
                env["OMP_NUM_THREADS"] = str(fixed_threads)
            elif device == "cpu" and cpu_workers > 1:
                env.setdefault("OMP_NUM_THREADS", str(threads))
            log(f"{job.name}: running on {device} (log: {job.log_file})")
            with open(job.log_file, "a") as logf:
                with lock:
                    if stop:  # a stop signal arrived: start nothing new
                        return {"name": job.name, "status": "interrupted"}
                    proc = subprocess.Popen([sys.executable, "-m", "dartsnas.jobs", str(spec)], stdout=logf,
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


def end_with_parent(parent: int) -> None:
    """Stop this process (SIGTERM: the run checkpoints at its next step boundary) once ``parent``, the
    driver that started it, is gone, whatever killed it; portable, by a watching thread."""
    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(POLL_SECONDS)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="end-with-parent", daemon=True).start()


def _main(argv: Sequence[str]) -> int:
    """The job process: ``python -m dartsnas.jobs JOB.json``."""
    if len(argv) != 1:
        print("usage: python -m dartsnas.jobs JOB.json", file=sys.stderr)
        return 2
    parent = os.environ.get(PARENT_ENV)
    if parent is not None:
        end_with_parent(int(parent))
    if hasattr(signal, "SIGUSR2"):  # a cluster's signal before a time limit: the launcher stops the job (SIGTERM)
        signal.signal(signal.SIGUSR2, signal.SIG_IGN)
    try:
        job = Job(**json.loads(Path(argv[0]).read_text()))
        if job.command not in RUNS:
            raise ConfigError(f"{argv[0]}: unknown command {job.command!r}")
        print(json.dumps(run_job(job)))
    except DartsError as e:
        print(f"dartsnas: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(_main(sys.argv[1:]))
