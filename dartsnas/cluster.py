"""Many jobs on a SLURM cluster through submitit (Meta's launcher library; DeiT's, DINO's and
detectron2's): the protocol's jobs (:mod:`dartsnas.jobs`) submitted as one job array, gathered from
their ``.done.json`` files as the local launcher's are, and one data-parallel run across nodes.

- **Submission is idempotent.** Each job's SLURM id and attempts are kept in ``FOLDER/jobs.json``
  (beside the runs); run again, the command gathers: a job done is read, a job queued or running is
  waited for, a failed one is submitted again until ``--max-attempts`` (then reported with the tail of
  its log). Killing the gathering process loses nothing.
- **Time limits and preemption.** A task runs its job as a child process (``python -m dartsnas.jobs``,
  as locally). SLURM's signal before the time limit (``--signal USR2@N``) or a preemption reaches
  submitit in the task, which calls :meth:`JobTask.checkpoint`: the child is stopped at its next step
  boundary (SIGTERM, the run's own checkpoint) and the task is requeued; it resumes from that
  checkpoint bit-identically, as a killed local job does. Timeouts are requeued at most
  ``--max-attempts`` times.
- **Data parallel across nodes.** ``--nnodes N --gpus-per-node G`` runs one job of N x G tasks; each
  exports the torch.distributed environment from SLURM's variables (submitit's
  ``TorchDistributedEnvironment``), so its child joins the process group as under torchrun.

``--launcher submitit-local`` runs the same path through submitit's local executor (jobs as processes
here, time limits and requeues included): a cluster setup tried without a cluster.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from .config import Config, option
from .errors import ConfigError, DartsError, Submitted
from .jobs import PARENT_ENV, Job, remove_path
from .train.checkpoint import atomic_write_text

GROUP = "cluster"
LAUNCHERS = ("local", "slurm", "submitit-local")
STATE = "jobs.json"
#: SLURM's states of a job that is still to run or running (sacct's State column).
WAITING = {"PENDING", "REQUEUED", "CONFIGURING", "RESIZING", "SUSPENDED", "REQUEUE_HOLD", "REQUEUE_FED"}
RUNNING = {"RUNNING", "COMPLETING", "STAGE_OUT", "SIGNALING"}
#: How long a stopped job may take to reach its step boundary and write its checkpoint.
STOP_SECONDS = 300
#: How long a job sacct does not know yet (just submitted) counts as pending.
UNKNOWN_SECONDS = 600


@dataclass
class LauncherConfig(Config):
    """Where the jobs of a command run, and what each asks of the cluster (the ``[launcher]`` table
    of a --config file, or top-level keys there, or the flags)."""

    launcher: str = option("local", "local: jobs run here, one per --devices entry; slurm: submitted to SLURM "
                           "as one job array through submitit (pip install 'dartsnas[cluster]'); submitit-local: "
                           "the same path through submitit's local executor", group=GROUP, choices=LAUNCHERS)
    partition: str | None = option(None, "SLURM partition", group=GROUP, default_text="the cluster's default")
    account: str | None = option(None, "SLURM account", group=GROUP, default_text="none")
    time_limit: int = option(240, "minutes a job may run; near the limit it checkpoints and is requeued",
                             group=GROUP, min=1)
    gpus_per_job: int = option(1, "GPUs of each job (0: CPU jobs)", group=GROUP, min=0)
    cpus_per_job: int = option(8, "CPU cores of each job (a data-parallel run: of each process)", group=GROUP, min=1)
    mem: str | None = option(None, "memory of each job, as sbatch --mem (32G)", group=GROUP, default_text="the "
                             "partition's default")
    array_parallelism: int = option(64, "jobs of the array that run at once, at most", group=GROUP, min=1)
    sbatch: tuple[str, ...] = option(help="more sbatch options, each KEY=VALUE or a flag (qos=high "
                                     "constraint=volta32gb exclusive)", factory=tuple, group=GROUP, metavar="OPT")
    submit_only: bool = option(False, "submit and exit; the same command run again gathers (submitting only "
                               "what is neither done nor queued)", group=GROUP)
    max_attempts: int = option(3, "a failed job is submitted again by a later gathering, and a timed-out one "
                               "requeued, up to this many times in all", group=GROUP, min=1)
    poll_seconds: float = option(30.0, "how often the gathering asks SLURM about the jobs", group=GROUP, above=0)
    nnodes: int = option(1, "search / train: the nodes of one data-parallel run", group=GROUP, min=1)
    gpus_per_node: int = option(1, "search / train: its processes per node, one GPU each (CPU processes with "
                                "--gpus-per-job 0)", group=GROUP, min=1)

    def check(self) -> None:
        super().check()
        if self.submit_only and not self.on_cluster:
            raise ConfigError("{submit_only} submits to a cluster: give {launcher} slurm (or submitit-local)",
                              names=("submit_only", "launcher"))
        for opt in self.sbatch:
            if not opt.lstrip("-") or opt.lstrip("-").startswith("="):
                raise ConfigError(f"{{sbatch}}: {opt!r} is not an sbatch option (KEY=VALUE or a flag)",
                                  names=("sbatch",))

    @property
    def on_cluster(self) -> bool:
        return self.launcher != "local"

    def sbatch_options(self) -> dict[str, Any]:
        """--sbatch's options as submitit's additional parameters (a flag: True)."""
        out: dict[str, Any] = {}
        for opt in self.sbatch:
            key, eq, value = opt.lstrip("-").partition("=")
            out[key.replace("-", "_")] = value if eq else True
        return out


def launcher_fields() -> set[str]:
    return {f.name for f in dataclasses.fields(LauncherConfig)}


def require_submitit(launcher: str) -> Any:
    """submitit, or one clear line; with slurm, sbatch on PATH too."""
    try:
        import submitit
    except ImportError:
        raise ConfigError(f"--launcher {launcher} needs submitit: pip install 'dartsnas[cluster]'") from None
    if launcher == "slurm" and shutil.which("sbatch") is None:
        raise ConfigError("--launcher slurm: no sbatch on PATH (run the command where jobs are submitted: the "
                          "cluster's login node)")
    return submitit


def make_executor(options: LauncherConfig, folder: Path, *, tasks: int = 1, nodes: int = 1, name: str = "dartsnas"
                  ) -> Any:
    """submitit's executor for ``options`` writing its scripts, pickles and logs into ``folder``."""
    submitit = require_submitit(options.launcher)
    gpus = options.gpus_per_job if nodes == 1 and tasks == 1 else (options.gpus_per_node if options.gpus_per_job else 0)
    if options.launcher == "submitit-local":
        executor = submitit.LocalExecutor(folder=str(folder), max_num_timeout=options.max_attempts - 1)
        executor.update_parameters(timeout_min=options.time_limit, tasks_per_node=tasks, gpus_per_node=gpus,
                                   signal_delay_s=_signal_delay(options))
        return executor
    executor = submitit.SlurmExecutor(folder=str(folder), max_num_timeout=options.max_attempts - 1)
    params = dict(job_name=name, time=options.time_limit, nodes=nodes, ntasks_per_node=tasks,
                  cpus_per_task=options.cpus_per_job, array_parallelism=options.array_parallelism,
                  signal_delay_s=_signal_delay(options), stderr_to_stdout=True)
    if gpus:
        params["gpus_per_node"] = gpus
    for key in ("partition", "account", "mem"):
        if getattr(options, key) is not None:
            params[key] = getattr(options, key)
    if options.sbatch:
        params["additional_parameters"] = options.sbatch_options()
    executor.update_parameters(**params)
    return executor


def _signal_delay(options: LauncherConfig) -> int:
    """Seconds before the time limit that the stop signal comes: enough to finish a step and save."""
    return int(min(120, max(5, options.time_limit * 60 // 10)))


class JobTask:
    """What one array task runs: its job's process, the output appended to the job's log. submitit
    calls :meth:`checkpoint` on SLURM's signal (time limit, preemption): the process checkpoints at
    its next step boundary, and the task is requeued to resume it."""

    def __init__(self, spec: str, log: str, distributed: bool = False, threads: int | None = None) -> None:
        self.spec, self.log, self.distributed, self.threads = spec, log, distributed, threads
        self._proc: subprocess.Popen | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {"spec": self.spec, "log": self.log, "distributed": self.distributed, "threads": self.threads}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state, _proc=None)

    def __call__(self) -> dict[str, Any]:
        if self.distributed:  # MASTER_ADDR, MASTER_PORT, RANK, WORLD_SIZE, LOCAL_RANK from SLURM's variables
            import submitit.helpers
            submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
        env = {**os.environ, PARENT_ENV: str(os.getpid())}
        if self.threads is not None:
            env["OMP_NUM_THREADS"] = str(self.threads)
        with open(self.log, "a") as log:
            self._proc = subprocess.Popen([sys.executable, "-m", "dartsnas.jobs", self.spec], stdout=log,
                                          stderr=subprocess.STDOUT, env=env, stdin=subprocess.DEVNULL)
            code = self._proc.wait()
        if code != 0:
            raise RuntimeError(f"the job's process exited with status {code}: {tail(Path(self.log))}")
        job = Job(**json.loads(Path(self.spec).read_text()))
        return job.result() or {}

    def checkpoint(self) -> Any:
        """Stop the job's process at its next step boundary (its checkpoint written), then requeue."""
        import submitit.helpers
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=STOP_SECONDS)
            except subprocess.TimeoutExpired:
                proc.kill()
        return submitit.helpers.DelayedSubmission(self)  # pickled without the process


def tail(path: Path, lines: int = 5) -> str:  # what a failed job is reported with
    try:
        text = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return "(no log)"
    return " | ".join(text[-lines:]) or "(empty log)"


class ClusterRunner:
    """The jobs of one command on the cluster: submission, the state file, the gathering."""

    def __init__(self, options: LauncherConfig, folder: Path, device: str | None = None, *,
                 log: Callable[[str], None] = print, tasks: int = 1, nodes: int = 1, threads: int | None = None) -> None:
        self.options, self.folder, self.log, self.threads = options, Path(folder), log, threads
        self.tasks, self.nodes = tasks, nodes
        self.device = device or ("cuda" if options.gpus_per_job else "cpu")
        require_submitit(options.launcher)
        self.state = self._read_state()
        self.handles: dict[str, Any] = {}

    def _read_state(self) -> dict[str, dict[str, Any]]:
        path = self.folder / STATE
        if not path.is_file():
            return {}
        try:
            return json.loads(path.read_text())
        except ValueError as e:
            raise DartsError(f"{path}: not the launcher's job list ({e}); remove it to submit every "
                             "unfinished job again") from None

    def _write_state(self) -> None:  # the ids and attempts, kept across gatherings
        self.folder.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.folder / STATE, json.dumps(self.state, indent=1, sort_keys=True) + "\n")

    def status(self, job: Job) -> str:
        """done, pending, running, failed (to submit again while attempts remain) or new."""
        if job.result() is not None:
            return "done"
        entry = self.state.get(job.name)
        if entry is None:
            return "new"
        state = self._slurm_state(job.name, entry["job_id"])
        if state in WAITING or (state == "UNKNOWN" and time.time() - entry.get("submitted", 0) < UNKNOWN_SECONDS):
            return "pending"  # sacct may not list a job just submitted
        if state in RUNNING:
            return "running"
        return "failed"

    def refresh(self, jobs: Sequence[Job]) -> None:
        """One sacct call for every submitted job of ``jobs`` (their states then read from its answer)."""
        if self.options.launcher != "slurm":
            return
        submitit = require_submitit(self.options.launcher)
        for job in jobs:
            entry = self.state.get(job.name)
            if entry is not None and job.name not in self.handles:
                self.handles[job.name] = submitit.SlurmJob(folder=str(self.folder), job_id=entry["job_id"])
        if self.handles:
            next(iter(self.handles.values())).watcher.update()

    def _slurm_state(self, name: str, job_id: str) -> str:
        """The job's state: the local controller's, or sacct's in the last :meth:`refresh`."""
        if self.options.launcher == "submitit-local":
            handle = self.handles.get(name)
            if handle is not None and handle._process is not None:
                return "RUNNING" if handle._process.poll() is None else "FINISHED"
            try:  # a local job's id is its controller's pid
                os.kill(int(job_id.split("_")[0]), 0)
                return "RUNNING"
            except (OSError, ValueError):
                return "FINISHED"
        state = self.handles[name].get_info(mode="cache").get("State") or "UNKNOWN"
        return state.split()[0]  # "CANCELLED by 123"

    def submit(self, jobs: Sequence[Job], distributed: bool = False) -> None:
        """``jobs`` as one job array (one job: a plain job)."""
        executor = make_executor(self.options, self.folder, tasks=self.tasks, nodes=self.nodes,
                                 name=f"dartsnas-{jobs[0].command}")  # what squeue shows: dartsnas-train-cnn
        tasks = []
        for job in jobs:
            Path(job.out).parent.mkdir(parents=True, exist_ok=True)
            spec = job.write_spec(self.device)
            tasks.append(JobTask(str(spec), str(job.log_file), distributed, self.threads))
        try:
            if len(tasks) > 1:
                with executor.batch():
                    handles = [executor.submit(task) for task in tasks]
            else:
                handles = [executor.submit(tasks[0])]
        except Exception as e:  # sbatch refused the script (a bad partition, account, option)
            raise DartsError(f"submission failed: {str(e).strip().splitlines()[-1] if str(e).strip() else e}") from None
        for job, handle in zip(jobs, handles):
            entry = self.state.setdefault(job.name, {"attempts": 0})
            entry["job_id"], entry["attempts"] = str(handle.job_id), entry["attempts"] + 1
            entry["submitted"] = time.time()
            self.handles[job.name] = handle
        self._write_state()
        first = str(handles[0].job_id).split("_")[0]
        self.log(f"{self.options.launcher}: {len(jobs)} job(s) submitted" + (f" as array {first}" if len(jobs) > 1
                                                                             else f", id {first}"))

    def failure(self, job: Job) -> dict[str, Any]:
        entry = self.state.get(job.name, {})
        lines = tail(job.log_file)
        if lines in ("(no log)", "(empty log)"):  # it never started: submitit's own output says why
            out = sorted(self.folder.glob(f"{entry.get('job_id', 'none')}*_log.out"))
            lines = tail(out[-1]) if out else lines
        return {"name": job.name, "status": "failed", "error": lines, "job_id": entry.get("job_id"),
                "attempts": entry.get("attempts", 0)}

    def run(self, jobs: Sequence[Job], on_result: Callable[[dict[str, Any]], Any] | None = None,
            distributed: bool = False) -> dict[str, dict[str, Any]]:
        """Submit what is neither done nor queued (nor out of attempts), then gather (or, with
        --submit-only, stop with :class:`~dartsnas.errors.Submitted`)."""
        self.refresh(jobs)
        status = {job.name: self.status(job) for job in jobs}
        fresh = [job for job in jobs if status[job.name] == "new" or (
            status[job.name] == "failed" and self.state[job.name]["attempts"] < self.options.max_attempts)]
        for job in jobs:
            if status[job.name] == "done":
                self.log(f"{job.name}: finished earlier, skipped")
            elif status[job.name] in ("pending", "running"):
                self.log(f"{job.name}: already submitted ({self.state[job.name]['job_id']}), {status[job.name]}")
        if fresh:
            self.submit(fresh, distributed)
            for job in fresh:
                status[job.name] = "pending"
        if self.options.submit_only:
            raise Submitted(f"{self.counts(status)}; run the same command again to gather the results "
                            f"(jobs in {self.folder / STATE})")
        results: dict[str, dict[str, Any]] = {}
        shown = ""
        while True:
            self.refresh([job for job in jobs if job.name not in results])
            for job in jobs:
                if job.name in results:
                    continue
                now = self.status(job)
                status[job.name] = now
                if now == "done":
                    results[job.name] = job.result()
                elif now == "failed":
                    results[job.name] = self.failure(job)
                    self.log(f"{job.name}: failed ({results[job.name]['error']})")
                else:
                    continue
                if on_result is not None:
                    on_result(results)
            line = self.counts(status)
            if line != shown:
                self.log(line)
                shown = line
            if len(results) == len(jobs):
                return {job.name: results[job.name] for job in jobs}
            time.sleep(self.options.poll_seconds)

    def counts(self, status: dict[str, str]) -> str:
        n = {k: sum(s == k for s in status.values()) for k in ("done", "running", "pending", "failed")}
        return f"jobs: {n['done']} done, {n['running']} running, {n['pending']} pending, {n['failed']} failed"


def run_on_cluster(jobs: Sequence[Job], options: LauncherConfig, folder: Path, *, log: Callable[[str], None] = print,
                   on_result: Callable[[dict[str, Any]], Any] | None = None, threads: int | None = None
                   ) -> dict[str, dict[str, Any]]:
    """The protocol's jobs on the cluster (or submitit's local executor), one array."""
    return ClusterRunner(options, folder, log=log, threads=threads).run(jobs, on_result)


def run_distributed(kind: str, config: Any, out: Path, options: LauncherConfig, *, resume: bool = False,
                    overwrite: bool = False, log: Callable[[str], None] = print) -> dict[str, Any]:
    """One run (``search-cnn``, ``train-cnn``, ...) as one job of --nnodes x --gpus-per-node processes,
    data parallel (each a torchrun-like rank), gathered as the arrays are; over a run: --resume or --overwrite."""
    out = Path(out)
    job = Job(out.name, kind, config.to_dict(), str(out))
    started = (out.is_dir() and any(out.iterdir())) or job.done_file.exists() or job.beside(".slurm").exists()
    if started and not (resume or overwrite):
        raise ConfigError(f"--out {out} already holds a run: pass --resume to continue it (or gather its job) "
                          "or --overwrite to replace it")
    if overwrite and not resume:
        for path in (out, job.done_file, job.log_file, job.beside(".slurm"), job.beside(".job.json")):
            remove_path(path)
    runner = ClusterRunner(options, job.beside(".slurm"), log=log, tasks=options.gpus_per_node, nodes=options.nnodes)
    result = runner.run([job], distributed=options.nnodes * options.gpus_per_node > 1)[job.name]
    if result.get("status") != "done":
        raise DartsError(f"{kind} failed on the cluster: {result.get('error')} (log: {job.log_file})")
    return result


def add_launcher_flags(parser: Any, data_parallel: bool = True) -> None:
    """The launcher's flags (group ``cluster``) on a command that runs jobs; ``data_parallel``: it runs
    one job that may span nodes (search, train), and takes --nnodes and --gpus-per-node."""
    from .flags import add_flags
    add_flags(parser, LauncherConfig, exclude=() if data_parallel else ("nnodes", "gpus_per_node"))


def launcher_of(args: Any) -> LauncherConfig:
    """The launcher a command's --config file (its top-level keys and ``[launcher]`` table) and flags set."""
    from .flags import given_fields, load_config_file
    values = {}
    if getattr(args, "config", None) is not None:
        values = load_config_file(args.config, LauncherConfig, table="launcher")
    options = LauncherConfig(**{**values, **given_fields(LauncherConfig, args)})
    options.validate()
    if options.on_cluster and getattr(args, "devices", None) is not None:
        raise ConfigError(f"--devices is the local launcher's: with --launcher {options.launcher} each job gets "
                          "--gpus-per-job", names=("launcher",))
    return options
