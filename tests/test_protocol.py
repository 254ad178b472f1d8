import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter

import pytest

from dartsnas.cli import main
from dartsnas.genotype import Genotype, RecurrentGenotype, load_genotype
from dartsnas.ops import DARTS_OPS, RNN_DARTS_OPS
from dartsnas.jobs import Job, run_jobs
from dartsnas.protocol import leaderboard, sample_genotypes
from dartsnas.spaces.cnn import sample_genotype
from dartsnas.spaces.rnn import sample_recurrent_genotype

pytest.importorskip("sklearn")  # the bundled digits

# A short training of a tiny network on the bundled digits: the selection budget of the tests.
BUDGET = ["--dataset", "digits", "--init-channels", "4", "--layers", "3", "--epochs", "1", "--steps-per-epoch", "2",
          "--batch-size", "32", "--auxiliary-weight", "0", "--quiet"]


def test_conv_samples_are_valid_cover_every_choice_and_repeat_by_seed():
    rng = random.Random(0)
    ops, inputs = Counter(), Counter()
    for _ in range(2000):
        g = sample_genotype(rng)
        again = Genotype.from_json(g.to_json())  # the library's own validation accepts every sample
        assert again == g and g.nodes == 4
        for cell in (g.normal, g.reduce):
            for i in range(4):
                (op_a, a), (op_b, b) = cell[2 * i], cell[2 * i + 1]
                assert a != b and 0 <= a < i + 2 and 0 <= b < i + 2    # 2 distinct predecessors
                ops.update([op_a, op_b])
                inputs.update([(i, a), (i, b)])
    assert set(ops) == set(DARTS_OPS) - {"none"}
    assert set(inputs) == {(i, j) for i in range(4) for j in range(i + 2)}
    assert sample_genotypes("cnn", 5, seed=7) == sample_genotypes("cnn", 5, seed=7)
    assert sample_genotypes("cnn", 5, seed=7) != sample_genotypes("cnn", 5, seed=8)


def test_recurrent_samples_are_valid_cover_every_choice_and_repeat_by_seed():
    rng = random.Random(0)
    ops, inputs = Counter(), Counter()
    for _ in range(2000):
        g = sample_recurrent_genotype(rng)
        assert RecurrentGenotype.from_json(g.to_json()) == g and g.concat == tuple(range(1, 9))
        for i, (op, j) in enumerate(g.recurrent, 1):
            assert 0 <= j < i
            ops[op] += 1
            inputs[(i, j)] += 1
    assert set(ops) == set(RNN_DARTS_OPS) - {"none"}
    assert set(inputs) == {(i, j) for i in range(1, 9) for j in range(i)}
    assert sample_genotypes("rnn", 3, seed=1, nodes=3)[0].nodes == 3


def test_random_search_no_train_writes_reproducible_samples(tmp_path, capsys):
    assert main(["random-search", "cnn", "--samples", "3", "--seed", "4", "--no-train", "--out", str(tmp_path / "a")]) == 0
    assert main(["random-search", "cnn", "--samples", "3", "--seed", "4", "--no-train", "--out", str(tmp_path / "b")]) == 0
    files = sorted((tmp_path / "a" / "samples").iterdir())
    assert [f.name for f in files] == ["sample_000.json", "sample_001.json", "sample_002.json"]
    for f in files:
        assert f.read_text() == (tmp_path / "b" / "samples" / f.name).read_text()
        load_genotype(str(f))
    assert main(["random-search", "cnn", "--samples", "3", "--no-train", "--out", str(tmp_path / "a")]) == 1
    assert "already holds samples" in capsys.readouterr().err


def test_random_search_sampling_options_are_config_fields_with_bounds(tmp_path, capsys):
    from dartsnas.protocol import SamplingConfig
    out = tmp_path / "s"
    assert main(["random-search", "cnn", "--samples", "2", "--nodes", "2", "--ops", "S2", "--no-train",
                 "--out", str(out)]) == 0
    for f in sorted((out / "samples").iterdir()):
        g = load_genotype(str(f))
        assert len(g.normal) == 4 and {op for op, _ in g.normal + g.reduce} <= {"skip_connect", "sep_conv_3x3"}
    capsys.readouterr()
    for flags, message in ((["--samples", "0"], "--samples must be >= 1, got 0"),
                           (["--samples", "2", "--nodes", "0"], "--nodes must be >= 1, got 0"),
                           ([], "--samples is required")):
        assert main(["random-search", "cnn", *flags, "--no-train", "--out", str(tmp_path / "x")]) == 1
        assert capsys.readouterr().err.strip() == f"dartsnas: error: {message}" + (
            ": the number of genotypes K" if not flags else "")
    assert SamplingConfig(samples=3).nodes is None  # the space's own


def test_leaderboard_ranks_by_validation_and_puts_failures_last():
    results = {"a": {"name": "a", "status": "done", "metric": "val_top1", "score": 0.5},
               "b": {"name": "b", "status": "failed", "error": "boom"},
               "c": {"name": "c", "status": "done", "metric": "val_top1", "score": 0.7}}
    rows = leaderboard(results, {k: f"{k}.json" for k in results})
    assert [(r["rank"], r["name"]) for r in rows] == [(1, "c"), (2, "a"), (3, "b")]
    ppl = {"x": {"name": "x", "status": "done", "metric": "val_ppl", "score": 90.0},
           "y": {"name": "y", "status": "done", "metric": "val_ppl", "score": 60.0}}
    assert [r["name"] for r in leaderboard(ppl, {"x": "", "y": ""})] == ["y", "x"]


def test_a_failed_job_is_recorded_and_the_others_go_on(tmp_path):
    from dartsnas.train.final import recipe
    good = recipe("digits", init_channels=4, layers=3, epochs=1, steps_per_epoch=1, batch_size=32,
                  auxiliary_weight=0, train_portion=0.5).to_dict()
    bad = {**good, "genotype": str(tmp_path / "missing.json")}
    jobs = [Job("bad", "train-cnn", bad, str(tmp_path / "runs" / "bad")),
            Job("good", "train-cnn", good, str(tmp_path / "runs" / "good"))]
    results = run_jobs(jobs, ["cpu", "cpu"], log=lambda m: None)  # two side by side
    assert results["bad"]["status"] == "failed" and "missing.json" in results["bad"]["error"]
    assert results["good"]["status"] == "done" and 0.0 <= results["good"]["score"] <= 1.0
    assert not (tmp_path / "runs" / "bad.done.json").exists()
    again = run_jobs(jobs, ["cpu"], log=lambda m: None)  # the finished job is skipped, the failed one retried
    assert again["good"] == results["good"] and again["bad"]["status"] == "failed"


@pytest.mark.slow
def test_tiny_protocol_two_seeds_two_random_samples_selection_and_winner(tmp_path, capsys):
    search = ["search", "cnn", "--dataset", "digits", "--init-channels", "4", "--layers", "3", "--batch-size", "32",
              "--epochs", "1", "--steps-per-epoch", "2", "--quiet", "--seeds", "0", "1", "--out", str(tmp_path / "s")]
    assert main(search) == 0
    seeds = [tmp_path / "s" / f"seed_{s}" for s in (0, 1)]
    assert all((d / "genotype.json").is_file() and (d / "checkpoint.pt").is_file() for d in seeds)
    assert main(search) == 1 and "already holds seed_0" in capsys.readouterr().err
    assert main(["random-search", "cnn", "--samples", "2", "--no-train", "--quiet", "--out", str(tmp_path / "r")]) == 0
    candidates = [str(seeds[0]), str(seeds[1]), *sorted(str(p) for p in (tmp_path / "r" / "samples").iterdir())]
    out = tmp_path / "sel"
    assert main(["select", "cnn", *candidates, *BUDGET, "--out", str(out)]) == 0
    rows = json.loads((out / "leaderboard.json").read_text())
    assert [r["name"] for r in rows] and sorted(r["name"] for r in rows) == ["sample_000", "sample_001", "seed_0", "seed_1"]
    assert [r["rank"] for r in rows] == [1, 2, 3, 4] and all(r["status"] == "done" for r in rows)
    assert {r["name"]: r["method"] for r in rows} == {"sample_000": "random", "sample_001": "random", "seed_0": "darts",
                                                      "seed_1": "darts"}
    scores = [r["score"] for r in rows]
    assert scores == sorted(scores, reverse=True)
    winner = load_genotype(str(out / "genotype.json"))
    assert winner == load_genotype(rows[0]["genotype"])
    md = (out / "leaderboard.md").read_text()
    assert md.splitlines()[2].startswith(f"| 1 | {rows[0]['name']} |")
    assert main(["select", "cnn", *candidates, *BUDGET, "--out", str(out)]) == 1  # refuses to clobber
    assert "--resume" in capsys.readouterr().err


def test_select_refuses_bad_candidates_before_training(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text('{"normal": [["conv_9x9", 0]]}')
    assert main(["select", "cnn", "DARTS_V2", str(bad), *BUDGET, "--out", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert "bad.json" in err and not (tmp_path / "o" / "runs").exists()
    assert main(["select", "cnn", "DARTS_V2", *BUDGET, "--train-portion", "1", "--out", str(tmp_path / "p")]) == 1
    assert "held-out validation" in capsys.readouterr().err


@pytest.mark.slow
def test_select_resumes_after_being_killed_mid_candidate(tmp_path):
    out = tmp_path / "sel"
    budget = [*BUDGET[:BUDGET.index("--epochs")], "--epochs", "3", "--steps-per-epoch", "3", "--batch-size", "32",
              "--auxiliary-weight", "0", "--quiet"]
    cmd = [sys.executable, "-m", "dartsnas", "select", "cnn", "DARTS_V1", "DARTS_V2", *budget, "--out", str(out)]
    proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    first_done = out / "runs" / "DARTS_V1.done.json"
    deadline = time.time() + 240
    while not first_done.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    while not (out / "runs" / "DARTS_V2" / "checkpoint.pt").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "the selection ended before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and the candidate's process, mid-candidate
    proc.wait()
    stamp = first_done.stat().st_mtime_ns
    assert not (out / "runs" / "DARTS_V2.done.json").exists()
    assert main(["select", "cnn", *budget, "--out", str(out), "--resume"]) == 0
    assert first_done.stat().st_mtime_ns == stamp       # the finished candidate was skipped
    rows = json.loads((out / "leaderboard.json").read_text())
    assert {r["name"]: r["epochs"] for r in rows} == {"DARTS_V1": 3, "DARTS_V2": 3}
    assert "resumed from" in (out / "runs" / "DARTS_V2.log").read_text()


@pytest.mark.slow
def test_random_search_rnn_selects_by_validation_perplexity(tmp_path):
    from test_recurrent import PTB
    if not (PTB / "valid.txt").is_file():
        pytest.skip("shared PTB splits not found")
    out = tmp_path / "r"
    assert main(["random-search", "rnn", "--samples", "2", "--nodes", "3", "--seed", "1", "--data-dir", str(PTB),
                 "--train-split", "valid", "--val-split", "test", "--test-split", "test", "--emsize", "16",
                 "--nhid", "16", "--batch-size", "64", "--eval-batch-size", "256", "--test-batch-size", "256",
                 "--epochs", "1", "--steps-per-epoch", "2", "--quiet", "--out", str(out)]) == 0
    rows = json.loads((out / "leaderboard.json").read_text())
    assert [r["metric"] for r in rows] == ["val_ppl", "val_ppl"] and rows[0]["score"] <= rows[1]["score"]
    assert load_genotype(str(out / "genotype.json"), "rnn") == load_genotype(rows[0]["genotype"], "rnn")
    assert load_genotype(str(out / "genotype.json"), "rnn").nodes == 3


@pytest.mark.slow
def test_sigterm_to_the_selection_reaches_the_running_candidate_which_checkpoints(tmp_path):
    out = tmp_path / "sel"
    budget = [*BUDGET[:BUDGET.index("--epochs")], "--epochs", "3", "--steps-per-epoch", "3", "--batch-size", "32",
              "--auxiliary-weight", "0", "--checkpoint-every", "1", "--quiet"]
    proc = subprocess.Popen([sys.executable, "-m", "dartsnas", "select", "cnn", "DARTS_V1", "DARTS_V2", *budget,
                             "--out", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while not (out / "runs" / "DARTS_V1" / "checkpoint.pt").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)  # to the driver only: it passes the signal on
    _, err = proc.communicate(timeout=240)
    if proc.returncode == 0:
        pytest.skip("the selection finished before the signal arrived")
    assert proc.returncode == 128 + signal.SIGTERM and "SIGTERM: the protocol stopped" in err, err
    assert "SIGTERM: stopped after step" in (out / "runs" / "DARTS_V1.log").read_text()
    assert not (out / "runs" / "DARTS_V2").exists()  # nothing new started
    assert main(["select", "cnn", *budget, "--out", str(out), "--resume"]) == 0
    rows = json.loads((out / "leaderboard.json").read_text())
    assert {r["name"]: (r["status"], r["epochs"]) for r in rows} == {"DARTS_V1": ("done", 3), "DARTS_V2": ("done", 3)}
