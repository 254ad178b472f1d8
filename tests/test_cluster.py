"""The cluster launcher: its options (flags, --config, a [launcher] table), the sbatch script's
directives, submission that is not repeated, and, slow: a selection through submitit's local executor
and through stand-in SLURM executables equal to the local one, a time limit's requeue that resumes
bit-identically, a failed job reported with its log, a two-task data-parallel search equal to torchrun's."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dartsnas.cli import _given, build_parser, main
from dartsnas.cluster import ClusterRunner, LauncherConfig, launcher_of
from dartsnas.jobs import Job
from dartsnas.train.commands import RUNS

pytest.importorskip("submitit")
pytest.importorskip("sklearn")

STUB = Path(__file__).with_name("slurm_stub.py")
BUDGET = ["--dataset", "digits", "--init-channels", "4", "--layers", "3", "--epochs", "1", "--steps-per-epoch", "2",
          "--batch-size", "32", "--auxiliary-weight", "0", "--quiet"]
CANDIDATES = ["DARTS_V1", "DARTS_V2", "DARTS"]


@pytest.fixture
def slurm(tmp_path, monkeypatch):
    """sbatch, srun, sacct, squeue, scancel and scontrol stand-ins on PATH; their queue in the returned dir."""
    bin_dir, queue = tmp_path / "bin", tmp_path / "queue"
    bin_dir.mkdir()
    queue.mkdir()
    for name in ("sbatch", "srun", "sacct", "squeue", "scancel", "scontrol"):
        path = bin_dir / name
        path.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{STUB}" {name} "$@"\n')
        path.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("STUB_SLURM_DIR", str(queue))
    return queue


def _args(*argv):
    return build_parser().parse_args(["select", "cnn", "DARTS", "--out", "x", *argv])


def test_launcher_options_come_from_flags_a_config_file_and_its_launcher_table(tmp_path):
    assert launcher_of(_args()).launcher == "local"
    toml = tmp_path / "c.toml"
    toml.write_text('epochs = 3\npartition = "short"\n[launcher]\nlauncher = "slurm"\ngpus_per_job = 2\n'
                    'sbatch = ["qos=high", "exclusive"]\n')
    args = _args("--config", str(toml), "--partition", "gpu")
    options = launcher_of(args)
    assert (options.launcher, options.partition, options.gpus_per_job) == ("slurm", "gpu", 2)  # a flag wins
    assert options.sbatch_options() == {"qos": "high", "exclusive": True}
    assert _given(RUNS["train-cnn"].config, args)["epochs"] == 3  # the training's keys, the launcher's skipped
    assert launcher_of(_args("--config", str(toml))).partition == "short"
    with pytest.raises(Exception, match="--devices is the local launcher's"):
        launcher_of(_args("--launcher", "slurm", "--devices", "cpu"))
    with pytest.raises(Exception, match="sbatch"):
        launcher_of(_args("--sbatch", "=x"))
    with pytest.raises(Exception, match="submits to a cluster"):
        launcher_of(_args("--submit-only"))


def test_missing_submitit_or_sbatch_is_one_clear_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "submitit", None)
    assert main(["select", "cnn", "DARTS", *BUDGET, "--launcher", "slurm", "--out", str(tmp_path / "a")]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "pip install 'dartsnas[cluster]'" in err
    monkeypatch.delitem(sys.modules, "submitit")
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch
    assert main(["select", "cnn", "DARTS", *BUDGET, "--launcher", "slurm", "--out", str(tmp_path / "b")]) == 1
    assert "no sbatch on PATH" in capsys.readouterr().err


def test_one_array_with_the_cluster_settings_not_submitted_twice(tmp_path, slurm, monkeypatch, capsys):
    monkeypatch.setenv("STUB_SLURM_HOLD", "1")  # queued, never run
    argv = ["select", "cnn", *CANDIDATES, *BUDGET, "--launcher", "slurm", "--submit-only", "--partition", "gpu",
            "--account", "lab", "--time-limit", "30", "--gpus-per-job", "1", "--cpus-per-job", "4", "--mem", "16G",
            "--array-parallelism", "2", "--sbatch", "qos=high", "exclusive", "--out", str(tmp_path / "sel")]
    assert main(argv) == 0
    assert "3 pending" in capsys.readouterr().err
    (script,) = slurm.glob("*.sbatch")
    d = json.loads((slurm / "queue.json").read_text())["jobs"][script.stem]["directives"]
    assert {k: d[k] for k in ("partition", "account", "time", "gpus-per-node", "cpus-per-task", "mem", "array",
                              "qos", "exclusive", "signal", "nodes", "ntasks-per-node")} == {
        "partition": "gpu", "account": "lab", "time": "30", "gpus-per-node": "1", "cpus-per-task": "4",
        "mem": "16G", "array": "0-2%2", "qos": "high", "exclusive": True, "signal": "USR2@120", "nodes": "1",
        "ntasks-per-node": "1"}
    assert d["job-name"] == "dartsnas-train-cnn"  # the candidates' trainings
    assert "srun" in script.read_text() and "submitit.core._submit" in script.read_text()
    spec = json.loads((tmp_path / "sel" / "runs" / "DARTS.job.json").read_text())
    assert spec["config"]["device"] == "cuda"
    calls = slurm / "sacct.calls"
    before = len(calls.read_text().splitlines()) if calls.is_file() else 0
    assert main([*argv, "--resume"]) == 0  # run again: queued jobs are gathered, not submitted again
    assert len(calls.read_text().splitlines()) == before + 1  # one sacct call asks about the whole array
    err = capsys.readouterr().err
    assert len(list(slurm.glob("*.sbatch"))) == 1 and "already submitted" not in err  # (the log is --quiet)
    state = json.loads((tmp_path / "sel" / "slurm" / "jobs.json").read_text())
    assert sorted(state) == sorted(CANDIDATES) and all(e["attempts"] == 1 for e in state.values())
    # random search's trainings: one array too
    assert main(["random-search", "cnn", "--samples", "2", *BUDGET, "--launcher", "slurm", "--submit-only",
                 "--out", str(tmp_path / "rs")]) == 0
    assert len(list(slurm.glob("*.sbatch"))) == 2
    assert sorted(json.loads((tmp_path / "rs" / "slurm" / "jobs.json").read_text())) == ["sample_000", "sample_001"]


def test_a_data_parallel_run_is_one_job_of_nodes_by_tasks(tmp_path, slurm, monkeypatch, capsys):
    monkeypatch.setenv("STUB_SLURM_HOLD", "1")
    argv = ["train", "cnn", "--genotype", "DARTS", *BUDGET, "--launcher", "slurm", "--nnodes", "2", "--gpus-per-node",
            "4", "--submit-only", "--out", str(tmp_path / "run")]
    assert main(argv) == 0
    (script,) = slurm.glob("*.sbatch")
    d = json.loads((slurm / "queue.json").read_text())["jobs"][script.stem]["directives"]
    assert (d["nodes"], d["ntasks-per-node"], d["gpus-per-node"]) == ("2", "4", "4") and "array" not in d
    assert (tmp_path / "run.slurm" / "jobs.json").is_file()
    capsys.readouterr()
    assert main(argv) == 1 and "--resume" in capsys.readouterr().err  # a run there: continue or replace it
    assert main([*argv, "--resume"]) == 0 and len(list(slurm.glob("*.sbatch"))) == 1  # queued: not again
    assert main([*argv, "--overwrite"]) == 0 and len(list(slurm.glob("*.sbatch"))) == 2


def _scores(out):
    return {r["name"]: (r["score"], r["epochs"]) for r in json.loads((out / "leaderboard.json").read_text())}


@pytest.fixture(scope="module")
def local_selection(tmp_path_factory):
    out = tmp_path_factory.mktemp("local") / "sel"
    assert main(["select", "cnn", *CANDIDATES, *BUDGET, "--out", str(out)]) == 0
    return _scores(out)


@pytest.mark.slow
def test_submitit_local_selection_equals_the_local_one(tmp_path, local_selection):
    out = tmp_path / "sel"
    assert main(["select", "cnn", *CANDIDATES, *BUDGET, "--launcher", "submitit-local", "--gpus-per-job", "0",
                 "--poll-seconds", "0.2", "--out", str(out)]) == 0
    assert _scores(out) == local_selection
    assert (out / "genotype.json").is_file()


@pytest.mark.slow
def test_slurm_selection_gathers_equal_results_and_reports_a_failure(tmp_path, slurm, local_selection, monkeypatch):
    out = tmp_path / "sel"
    argv = ["select", "cnn", *CANDIDATES, *BUDGET, "--launcher", "slurm", "--gpus-per-job", "0", "--poll-seconds",
            "0.2", "--out", str(out)]
    assert main(argv) == 0
    assert _scores(out) == local_selection
    assert len(list(slurm.glob("*.sbatch"))) == 1  # one array
    assert main([*argv, "--resume"]) == 0 and len(list(slurm.glob("*.sbatch"))) == 1  # all done: nothing submitted
    # a job whose process fails: reported with its log's tail, submitted again only while attempts remain
    bad = tmp_path / "bad"
    argv = ["select", "cnn", "DARTS", *BUDGET, "--launcher", "slurm", "--gpus-per-job", "0", "--poll-seconds", "0.2",
            "--max-attempts", "2", "--data-dir", str(tmp_path / "nowhere"), "--dataset", "imagefolder", "--out", str(bad)]
    assert main(argv) == 1
    row = json.loads((bad / "leaderboard.json").read_text())[0]
    assert row["status"] == "failed" and "nowhere" in row["error"]
    assert main([*argv, "--resume"]) == 1 and main([*argv, "--resume"]) == 1
    assert json.loads((bad / "slurm" / "jobs.json").read_text())["DARTS"]["attempts"] == 2


def _children(pid):
    """The processes whose parent is ``pid`` (Linux's /proc)."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def _strip(path):
    return [{k: v for k, v in json.loads(x).items() if k not in ("seconds", "images_per_s")}
            for x in path.read_text().splitlines()]


@pytest.mark.slow
def test_a_time_limit_checkpoints_requeues_and_resumes_bit_identically(tmp_path):
    config = RUNS["search-cnn"].build(dataset="digits", init_channels=4, layers=3, batch_size=16, epochs=2,
                                      steps_per_epoch=12, checkpoint_every=1, device="cpu")
    RUNS["search-cnn"].run(config, tmp_path / "whole", quiet=True)
    job = Job("cut", "search-cnn", config.to_dict(), str(tmp_path / "cut"))
    runner = ClusterRunner(LauncherConfig(launcher="submitit-local", gpus_per_job=0, poll_seconds=0.2),
                           tmp_path / "slurm", log=lambda m: None)
    runner.submit([job])
    handle = runner.handles["cut"]
    deadline = time.time() + 300
    while not (tmp_path / "cut" / "checkpoint.pt").is_file() and time.time() < deadline:
        time.sleep(0.1)
    (task,) = _children(handle._process.pid)  # the array task under submitit's local controller
    os.kill(task, signal.SIGUSR2)  # the signal SLURM sends before a time limit or a preemption
    result = runner.run([job])["cut"]
    assert result["status"] == "done"
    log = job.log_file.read_text()
    assert "resumed from" in log and "SIGTERM: stopped after step" in log
    assert _strip(tmp_path / "cut" / "metrics.jsonl") == _strip(tmp_path / "whole" / "metrics.jsonl")


@pytest.mark.slow
def test_two_task_data_parallel_search_equals_torchrun(tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # both runs' kernels on one thread per rank
    flags = ["search", "cnn", "--dataset", "digits", "--init-channels", "4", "--layers", "3", "--nodes", "2",
             "--batch-size", "8", "--steps-per-epoch", "3", "--epochs", "2", "--device", "cpu", "--quiet"]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "dartsnas"]
    subprocess.run([*torchrun, *flags, "--out", str(tmp_path / "torchrun")], check=True, cwd=tmp_path,
                   capture_output=True)
    assert main([*flags, "--launcher", "submitit-local", "--gpus-per-job", "0", "--gpus-per-node", "2",
                 "--poll-seconds", "0.2", "--out", str(tmp_path / "slurm")]) == 0
    assert "x 2 processes (data parallel)" in (tmp_path / "slurm.log").read_text()
    assert _strip(tmp_path / "slurm" / "metrics.jsonl") == _strip(tmp_path / "torchrun" / "metrics.jsonl")


@pytest.mark.slow
def test_a_benchmark_build_on_slurm_equals_the_local_build(tmp_path, slurm):
    from dartsnas.bench201.query import Benchmark201
    build = ["bench201", "build", "--dataset", "digits", "--epochs", "1", "--init-channels", "4", "--layers", "1",
             "--batch-size", "64", "--quiet", "--cells", "2"]
    files = {}
    for name, flags in (("local", []), ("slurm", ["--launcher", "slurm", "--gpus-per-job", "0", "--poll-seconds", "0.2"])):
        out = tmp_path / f"{name}.pickle.pbz2"
        assert main([*build, *flags, "--out", str(out)]) == 0
        files[name] = Benchmark201(out)
    cells = files["local"].evaluated()
    assert len(cells) == 2 and files["slurm"].evaluated() == cells
    assert [files[n].query(cells[0], "digits", "1")["test-accuracy"] for n in files] == \
        [files["local"].query(cells[0], "digits", "1")["test-accuracy"]] * 2
    assert len(list(slurm.glob("*.sbatch"))) == 1 and (tmp_path / "slurm.pickle.pbz2.runs" / "slurm" / "jobs.json").is_file()


@pytest.mark.slow
def test_searches_over_seeds_through_submitit_equal_the_local_ones(tmp_path):
    search = ["search", "cnn", "--dataset", "digits", "--init-channels", "4", "--layers", "3", "--batch-size", "32",
              "--epochs", "1", "--steps-per-epoch", "2", "--quiet", "--seeds", "0", "1"]
    assert main([*search, "--out", str(tmp_path / "local")]) == 0
    assert main([*search, "--launcher", "submitit-local", "--gpus-per-job", "0", "--poll-seconds", "0.2",
                 "--out", str(tmp_path / "cluster")]) == 0
    for seed in (0, 1):
        assert _strip(tmp_path / "cluster" / f"seed_{seed}" / "metrics.jsonl") == \
            _strip(tmp_path / "local" / f"seed_{seed}" / "metrics.jsonl")


@pytest.mark.slow
def test_killing_the_gathering_loses_nothing(tmp_path, local_selection):
    out = tmp_path / "sel"
    argv = ["select", "cnn", *CANDIDATES, *BUDGET, "--launcher", "submitit-local", "--gpus-per-job", "0",
            "--poll-seconds", "0.2", "--out", str(out)]
    driver = subprocess.Popen([sys.executable, "-m", "dartsnas", *argv], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    state = out / "slurm" / "jobs.json"
    deadline = time.time() + 120
    while not state.is_file() and time.time() < deadline:
        time.sleep(0.05)
    driver.kill()  # SIGKILL: the gathering goes, the submitted jobs go on
    driver.wait()
    assert state.is_file()
    assert main([*argv, "--resume"]) == 0
    assert _scores(out) == local_selection
    assert all(e["attempts"] == 1 for e in json.loads(state.read_text()).values())  # nothing submitted twice
