"""Bad input and faults as a new user meets them: one clear line, and no data lost or half written."""
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from dartsnas.cli import main
from dartsnas.errors import ConfigError
from dartsnas.flags import load_config_file
from dartsnas.jobs import Job, run_job
from dartsnas.train.rundir import LOCK, lock_holder, process_alive
from dartsnas.train.search_config import SearchConfig

TINY = ["search", "cnn", "--dataset", "digits", "--init-channels", "4", "--layers", "3", "--batch-size", "16",
        "--steps-per-epoch", "2", "--epochs", "1", "--quiet"]


def files(run: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(run.iterdir()) if p.is_file()}


def one_line_error(capsys, match: str) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert match in err, err
    return err


@pytest.fixture(scope="module")
def macs_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("macs") / "run"
    assert main([*TINY, "--cost", "macs", "--cost-target", "1M", "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def latency_file(tmp_path_factory):
    """A latency table of the digits' 8x8 one-channel images, timed as briefly as it allows."""
    out = tmp_path_factory.mktemp("latency") / "table.json"
    assert main(["latency-table", "--init-channels", "4", "--layers", "3", "--image-size", "8", "--in-channels", "1",
                 "--repeats", "1", "--warmup", "0", "--rounds", "1", "--quiet", "--out", str(out)]) == 0
    return out


def test_overwrite_with_another_cost_checks_everything_first_and_builds_its_own_table(macs_run, latency_file,
                                                                                      tmp_path, capsys):
    run = tmp_path / "run"
    os.system(f"cp -r {macs_run} {run}")
    before = files(run)
    assert "latency" not in json.loads(before["cost_table.json"])["cells"][0]
    # a latency table for other images: refused, and the old run is as it was (nothing deleted first)
    wrong = tmp_path / "wrong.json"
    table = json.loads(latency_file.read_text())
    table["network"]["image_size"] = [16, 16]
    wrong.write_text(json.dumps(table))
    capsys.readouterr()
    assert main([*TINY, "--overwrite", "--cost", "latency", "--cost-target", "1", "--latency-table", str(wrong),
                 "--out", str(run)]) == 1
    one_line_error(capsys, "the table is for image_size [16, 16]")
    assert files(run) == before
    # the right table: the run is replaced, and its cost table is the latency table, not the stale one
    assert main([*TINY, "--overwrite", "--cost", "latency", "--cost-target", "1", "--latency-table",
                 str(latency_file), "--out", str(run)]) == 0
    cells = json.loads((run / "cost_table.json").read_text())["cells"]
    assert "latency" in cells[0] and json.loads((run / "config.json").read_text())["cost"] == "latency"
    assert not (run / LOCK).exists()


def test_an_out_that_cannot_be_written_is_one_line_and_nothing_runs(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main([*TINY, "--out", str(blocker / "run")]) == 1
    one_line_error(capsys, f"--out {blocker / 'run'}: cannot be written")
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "ro"
        locked.mkdir(mode=0o500)
        assert main([*TINY, "--out", str(locked / "run")]) == 1
        one_line_error(capsys, "cannot be written (Permission denied)")


def test_an_early_failure_leaves_no_directory_and_keeps_an_overwritten_run(macs_run, tmp_path, capsys):
    """Data found unusable after the run directory was checked (here: the cost network does not fit
    8x8 images): nothing is written, and the run --overwrite would replace is intact."""
    fresh = tmp_path / "fresh"
    assert main([*TINY, "--cost", "macs", "--cost-target", "1M", "--cost-network", "imagenet",
                 "--out", str(fresh)]) == 1
    one_line_error(capsys, "the cost's final network imagenet downsamples 32x: 8x8 images are too small")
    assert not fresh.exists()
    run = tmp_path / "run"
    os.system(f"cp -r {macs_run} {run}")
    before = files(run)
    assert main([*TINY, "--overwrite", "--cost", "macs", "--cost-target", "1M", "--cost-network", "imagenet",
                 "--out", str(run)]) == 1
    assert files(run) == before


def test_latency_table_refuses_a_directory_out_and_images_its_network_cannot_take(tmp_path, capsys):
    assert main(["latency-table", "--network", "imagenet", "--image-size", "16", "--out", str(tmp_path / "t.json")]) == 1
    one_line_error(capsys, "--network imagenet downsamples 32x: 16x16 images are too small")
    assert main(["latency-table", "--image-size", "8", "--out", str(tmp_path)]) == 1
    one_line_error(capsys, f"--out {tmp_path} is a directory")
    assert sorted(tmp_path.iterdir()) == []


def test_infinite_numbers_are_refused_except_where_they_mean_something(tmp_path, capsys):
    assert main([*TINY, "--cost", "macs", "--cost-target", "1e400", "--out", str(tmp_path / "a")]) == 1
    one_line_error(capsys, "--cost-target must be a finite number, got inf")
    assert not (tmp_path / "a").exists()
    # --grad-clip inf (no clipping) is allowed, and config.json stays JSON
    assert main([*TINY, "--grad-clip", "inf", "--out", str(tmp_path / "b")]) == 0

    def refuse(name):
        raise ValueError(f"{name} is not JSON")
    config = json.loads((tmp_path / "b" / "config.json").read_text(), parse_constant=refuse)
    assert config["grad_clip"] == "inf"
    assert SearchConfig.from_dict({k: v for k, v in config.items() if k != "kind"}).grad_clip == float("inf")
    # and the run resumes with the same config (the string reads back as inf)
    assert main([*TINY, "--grad-clip", "inf", "--epochs", "2", "--resume", "--out", str(tmp_path / "b")]) == 0


def test_a_config_file_takes_amounts_with_a_suffix_as_the_flag_does(tmp_path):
    good = tmp_path / "c.toml"
    good.write_text('cost = "macs"\ncost_target = "300K"\n')
    assert load_config_file(good, SearchConfig) == {"cost": "macs", "cost_target": 3e5}
    bad = tmp_path / "bad.toml"
    bad.write_text('cost_target = "lots"\n')
    with pytest.raises(ConfigError, match=r"--config .*bad.toml: cost_target: 'lots' is not a number"):
        load_config_file(bad, SearchConfig)


def test_a_directory_with_a_live_run_is_refused_and_a_dead_ones_lock_taken_over(tmp_path, capsys):
    import socket
    run = tmp_path / "run"
    run.mkdir()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (run / LOCK).write_text(json.dumps({"pid": sleeper.pid, "host": socket.gethostname()}))
        assert lock_holder(run)["pid"] == sleeper.pid
        assert main([*TINY, "--out", str(run)]) == 1
        one_line_error(capsys, f"a run is alive there (pid {sleeper.pid}")
        assert sorted(p.name for p in run.iterdir()) == [LOCK]
    finally:
        sleeper.kill()
        sleeper.wait()
    assert lock_holder(run) is None
    assert main([*TINY, "--out", str(run)]) == 0
    assert (run / "checkpoint.pt").is_file() and not (run / LOCK).exists()


def test_a_job_waits_for_the_live_process_in_its_directory(tmp_path, capsys):
    import socket
    out = tmp_path / "job"
    out.mkdir()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(1.5)"])
    (out / LOCK).write_text(json.dumps({"pid": sleeper.pid, "host": socket.gethostname()}))
    config = SearchConfig(dataset="digits", init_channels=4, layers=3, batch_size=16, steps_per_epoch=2, epochs=1)
    summary = run_job(Job("one", "search-cnn", config.to_dict(), str(out)))
    assert sleeper.poll() is not None  # it ran only after the holder had gone
    assert summary["status"] == "done" and "waiting for pid" in capsys.readouterr().out


DRIVER = textwrap.dedent("""
    import os, subprocess, sys, time
    env = {**os.environ, "DARTSNAS_JOB_PARENT": str(os.getpid())}
    child = subprocess.Popen([sys.executable, "-c", sys.argv[1]], env=env)
    open(sys.argv[2], "w").write(str(child.pid))
    time.sleep(60)
""")
JOB = textwrap.dedent("""
    import os, signal, sys, time
    from dartsnas.jobs import end_with_parent
    def stop(signum, frame):
        open(sys.argv[1] if len(sys.argv) > 1 else os.environ["STOPPED"], "w").write("stopped")
        sys.exit(0)
    signal.signal(signal.SIGTERM, stop)
    end_with_parent(int(os.environ["DARTSNAS_JOB_PARENT"]))
    time.sleep(60)
""")


def test_a_job_stops_when_its_driver_is_killed(tmp_path):
    """SIGKILL of a select driver leaves no job running: the job sees its parent go and stops (at a
    step boundary, for a run: SIGTERM's path)."""
    pid_file, stopped = tmp_path / "pid", tmp_path / "stopped"
    driver = subprocess.Popen([sys.executable, "-c", DRIVER, JOB, str(pid_file)], env={**os.environ,
                                                                                      "STOPPED": str(stopped)})
    deadline = time.monotonic() + 30
    while not (pid_file.is_file() and pid_file.read_text()) and time.monotonic() < deadline:
        time.sleep(0.1)
    child = int(pid_file.read_text())
    time.sleep(1.0)  # the job is up and watching
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    while not stopped.is_file() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert stopped.read_text() == "stopped"
    for _ in range(50):
        if not process_alive(child):
            break
        time.sleep(0.1)
    else:
        pytest.fail("the job outlived its driver")

