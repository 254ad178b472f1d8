"""Fault injection: real runs killed with SIGKILL at chosen points (mid-step, mid-checkpoint-write,
between epochs) or stopped by SIGTERM, then resumed, must end bit-identical to uninterrupted runs."""
import signal
import subprocess
import sys
import time

import pytest
import torch

from dartsnas.cli import main
from dartsnas.train.checkpoint import load_checkpoint, read_metrics
from test_recurrent import PTB

# Runs the CLI in a fresh process that SIGKILLs itself on the N-th pass through a chosen point.
KILLER = r"""
import os, signal, sys
point, n = sys.argv[1], int(sys.argv[2])
seen = [0]
def hit():
    seen[0] += 1
    if seen[0] == n:
        os.kill(os.getpid(), signal.SIGKILL)
if point == "mid-step":            # after the backward pass, before the weight update
    import torch.nn.utils
    clip = torch.nn.utils.clip_grad_norm_
    def patched(*a, **k):
        hit()
        return clip(*a, **k)
    torch.nn.utils.clip_grad_norm_ = patched
elif point == "mid-checkpoint":    # the new checkpoint written to its temporary file, not yet renamed
    replace = os.replace
    def patched(src, dst):
        if str(dst).endswith("checkpoint.pt"):
            hit()
        return replace(src, dst)
    os.replace = patched
elif point == "between-epochs":    # the epoch's metrics line written, its checkpoint not yet
    from dartsnas.train.checkpoint import MetricsLog
    append = MetricsLog.append
    def patched(self, record):
        append(self, record)
        hit()
    MetricsLog.append = patched
from dartsnas.cli import main
sys.exit(main(sys.argv[3:]))
"""

DIGITS = ["--dataset", "digits", "--init-channels", "4", "--layers", "3", "--batch-size", "32", "--epochs", "2",
          "--steps-per-epoch", "4", "--checkpoint-every", "2", "--quiet"]
RNN = ["--data-dir", str(PTB), "--train-split", "valid", "--val-split", "test", "--emsize", "12", "--nhid", "12",
       "--batch-size", "64", "--eval-batch-size", "256", "--epochs", "2", "--steps-per-epoch", "4",
       "--checkpoint-every", "2", "--quiet"]
COMMANDS = {
    "search-cnn": ["search", "cnn", *DIGITS],
    "train-cnn": ["train", "cnn", "--genotype", "DARTS_V2", "--auxiliary-weight", "0.4", "--drop-path", "0.2", *DIGITS],
    "search-rnn": ["search", "rnn", *RNN],
    "train-rnn": ["train", "rnn", "--genotype", "DARTS_V2", "--test-split", "test", "--test-batch-size", "256",
                  "--nonmono", "1", *RNN],
}
TIMINGS = {"seconds", "images_per_s", "tokens_per_s"}


def needs(command):
    if command.endswith("rnn") and not (PTB / "valid.txt").is_file():
        pytest.skip("shared PTB splits not found")


def run(args, *, point=None, n=0):
    script = ["-c", KILLER, point or "none", str(n)]
    return subprocess.run([sys.executable, *script, *args], capture_output=True, text=True, timeout=300)


_baselines = {}


def baseline(command, tmp_path_factory):
    if command not in _baselines:
        out = tmp_path_factory.mktemp(command) / "run"
        proc = run([*COMMANDS[command], "--out", str(out)])
        assert proc.returncode == 0, proc.stderr
        _baselines[command] = out
    return _baselines[command]


def assert_same(a, b, path="state"):
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), path
    elif isinstance(a, dict):
        assert set(a) == set(b), path
        for k in a:
            assert_same(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{path}[{i}]")
    else:
        assert a == b, path


def assert_same_run(a, b):
    assert_same(load_checkpoint(a), load_checkpoint(b))
    strip = lambda rs: [{k: v for k, v in r.items() if k not in TIMINGS} for r in rs]
    assert strip(read_metrics(a / "metrics.jsonl")) == strip(read_metrics(b / "metrics.jsonl"))
    for name in ("genotype.json", "model.pt"):
        assert (a / name).is_file() == (b / name).is_file()
        if name == "genotype.json" and (a / name).is_file():
            assert (a / name).read_text() == (b / name).read_text()
    if (a / "model.pt").is_file():
        assert_same(load_checkpoint(a / "model.pt")["model"], load_checkpoint(b / "model.pt")["model"])


@pytest.mark.parametrize("command,point,n", [
    ("search-cnn", "mid-step", 7),        # epoch 2, step 3: resumes from the step-2 checkpoint of epoch 2
    ("search-cnn", "mid-checkpoint", 3),  # the end-of-epoch-1 checkpoint torn; metrics line already written
    pytest.param("search-cnn", "between-epochs", 1, marks=pytest.mark.slow),  # epoch 1's line written, its checkpoint not
    pytest.param("train-cnn", "mid-step", 6, marks=pytest.mark.slow),
    pytest.param("search-rnn", "mid-step", 3, marks=pytest.mark.slow),
    pytest.param("train-rnn", "mid-checkpoint", 4, marks=pytest.mark.slow),
])
def test_sigkill_then_resume_ends_bit_identical(command, point, n, tmp_path, tmp_path_factory):
    needs(command)
    reference = baseline(command, tmp_path_factory)
    out = tmp_path / "run"
    killed = run([*COMMANDS[command], "--out", str(out)], point=point, n=n)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert (out / "checkpoint.pt").is_file()
    assert main([*COMMANDS[command][:2], "--out", str(out), "--resume", "--quiet"]) == 0
    assert_same_run(reference, out)
    assert not list(out.glob(".*.tmp"))  # the torn temporary file was cleared on resume


@pytest.mark.slow
def test_killed_before_its_first_checkpoint_the_same_command_line_with_resume_restarts(tmp_path, tmp_path_factory):
    """A scheduler requeues a preempted job with the same command line, --resume included: a run killed
    in its first step (no checkpoint yet) starts again from the beginning and ends as an uninterrupted one."""
    reference = baseline("search-cnn", tmp_path_factory)
    out = tmp_path / "run"
    command = [*COMMANDS["search-cnn"], "--out", str(out), "--resume"]
    killed = run(command, point="mid-step", n=1)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    # nothing is written before the first epoch's record: only the dead process's lock is left, and
    # the rerun takes it over
    assert sorted(p.name for p in out.iterdir()) == [".lock"]
    assert main(command) == 0
    assert not (out / ".lock").exists()
    assert_same_run(reference, out)


def test_sigterm_checkpoints_at_a_step_boundary_and_exits_cleanly(tmp_path, tmp_path_factory):
    reference = baseline("search-cnn", tmp_path_factory)
    out = tmp_path / "run"
    args = [a for a in COMMANDS["search-cnn"] if a != "--quiet"]
    proc = subprocess.Popen([sys.executable, "-m", "dartsnas", *args, "--checkpoint-every", "100", "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (out / "metrics.jsonl").is_file() and time.time() < deadline:  # wait until training is under way
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    if proc.returncode == 0:
        pytest.skip("the run finished before the signal arrived")
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "SIGTERM: stopped after step" in err and "Traceback" not in err
    state = load_checkpoint(out)
    assert state["in_epoch"] is not None or state["epoch"] >= 1
    assert main(["search", "cnn", "--out", str(out), "--resume", "--quiet", "--checkpoint-every", "2"]) == 0
    assert_same_run(reference, out)


@pytest.mark.slow
def test_deterministic_runs_are_bit_identical_and_the_switch_is_restored(tmp_path):
    args = [*COMMANDS["search-cnn"], "--deterministic", "--seed", "3"]
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    assert main([*args, "--out", str(tmp_path / "b")]) == 0
    assert_same_run(tmp_path / "a", tmp_path / "b")
    assert not torch.are_deterministic_algorithms_enabled()


def test_skip_nonfinite_skips_bad_batches_then_stops(tmp_path, monkeypatch, capsys):
    from dartsnas.nets.conv import NetworkCIFAR
    forward = NetworkCIFAR.forward_with_aux
    calls = [0]

    def poisoned(self, x):  # training steps 2, 5 and 6 (epoch 1 step 2, epoch 2 steps 1 and 2) go bad
        logits, aux = forward(self, x)
        if not self.training:
            return logits, aux
        calls[0] += 1
        return (logits * float("nan"), aux) if calls[0] in (2, 5, 6) else (logits, aux)

    monkeypatch.setattr(NetworkCIFAR, "forward_with_aux", poisoned)
    args = [a for a in COMMANDS["train-cnn"] if a != "--quiet"]
    assert main([*args, "--skip-nonfinite", "1", "--epochs", "1", "--out", str(tmp_path / "a")]) == 0
    assert "non-finite loss or gradient at epoch 1, step 2: batch skipped (1 of --skip-nonfinite 1)" in capsys.readouterr().out
    record = read_metrics(tmp_path / "a" / "metrics.jsonl")[0]
    assert record["train_loss"] == record["train_loss"]  # finite: the bad batch is not averaged in
    calls[0] = 0
    assert main([*args, "--skip-nonfinite", "2", "--out", str(tmp_path / "b")]) == 1
    err = capsys.readouterr().err
    assert "non-finite loss or gradient at epoch 2, step 2: stopped" in err
    state = load_checkpoint(tmp_path / "b")
    assert state["skipped_nonfinite"] == 1 and state["epoch"] == 1  # the last good checkpoint is kept
    for t in state["model"].values():
        assert torch.isfinite(t.float()).all()


def test_truncated_checkpoint_is_refused_and_a_torn_metrics_line_tolerated(tmp_path, capsys):
    out = tmp_path / "run"
    args = [*COMMANDS["search-cnn"][:-1]]
    assert main([*args, "--epochs", "1", "--out", str(out), "--quiet"]) == 0
    with open(out / "metrics.jsonl", "a") as f:
        f.write('{"epoch": 2, "train_lo')  # a crash mid-append
    assert main(["search", "cnn", "--out", str(out), "--resume", "--epochs", "2", "--quiet"]) == 0
    assert [r["epoch"] for r in read_metrics(out / "metrics.jsonl")] == [1, 2]
    data = (out / "checkpoint.pt").read_bytes()
    (out / "checkpoint.pt").write_bytes(data[: len(data) // 2])
    assert main(["search", "cnn", "--out", str(out), "--resume", "--epochs", "3", "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "checkpoint.pt: unreadable, not loaded: truncated, corrupted" in err and "weights_only" not in err


@pytest.mark.parametrize("args,message", [
    (["train", "cnn", "--dataset", "digits", "--lr", "-0.1"], "--lr must be > 0, got -0.1"),
    (["search", "cnn", "--dataset", "digits", "--batch-size", "0"], "--batch-size must be >= 1, got 0"),
    (["train", "cnn", "--dataset", "digits", "--network", "imagenet"], "--network imagenet downsamples 32x: 8x8 images are too small; the smallest size that works is 32x32"),
    (["train", "cnn", "--dataset", "cifar10", "--data-dir", "/nonexistent/cifar"], "/nonexistent/cifar"),
    (["train", "cnn", "--dataset", "digits", "--genotype", "DARTS_V9"], "DARTS_V9"),
    (["search", "cnn", "--dataset", "digits", "--checkpoint-every", "0"], "--checkpoint-every must be >= 1, got 0"),
    (["train", "cnn", "--dataset", "digits", "--skip-nonfinite", "-1"], "--skip-nonfinite must be >= 0, got -1"),
    (["search", "cnn", "--dataset", "digits", "--seed", "1", "--seeds", "1", "2"], "either --seed or --seeds"),
    (["train", "cnn", "--dataset", "digits", "--train-portion", "1.5"], "--train-portion must lie in (0, 1]"),
    (["train", "cnn", "--config", "/nonexistent/c.toml"], "--config /nonexistent/c.toml: cannot be read"),
])
def test_bad_input_is_one_line_exit_1_and_nothing_written(args, message, tmp_path, capsys):
    out = tmp_path / "run"
    assert main([*args, "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("dartsnas: error: ") and message in err and err.count("\n") == 1, err
    assert not out.exists() or not any(out.iterdir())


def test_resuming_into_another_commands_run_directory_is_refused(tmp_path, capsys):
    out = tmp_path / "run"
    assert main([*COMMANDS["search-cnn"], "--epochs", "1", "--steps-per-epoch", "1", "--out", str(out)]) == 0
    before = (out / "checkpoint.pt").read_bytes()
    assert main(["train", "cnn", "--dataset", "digits", "--out", str(out), "--resume"]) == 1
    assert "checkpoint of a 'search-cnn' run, expected 'train-cnn'" in capsys.readouterr().err
    assert (out / "checkpoint.pt").read_bytes() == before
