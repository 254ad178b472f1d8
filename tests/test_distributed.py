"""Data parallelism: two gloo processes on CPU, launched with torchrun as a user would."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dartsnas.cli import main
from dartsnas.data import BatchLoader, load_dataset
from dartsnas.distributed import Distributed, SyncBatchNorm, convert_sync_batchnorm
from test_recurrent import PTB, needs_ptb

WORKER = Path(__file__).with_name("dist_worker.py")
ORDERS = ["first", "second", "exact"]
REGULARIZERS = ["sdarts-rs", "darts-minus"]


def torchrun(*args: str, cwd: Path, nproc: int = 2) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                             f"--nproc_per_node={nproc}", *args], cwd=cwd, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def one_step(tmp_path: Path, name: str, *args: str, nproc: int = 1) -> dict:
    out = tmp_path / f"{name}.pt"
    if nproc == 1:
        subprocess.run([sys.executable, str(WORKER), str(out), *args], check=True, timeout=600,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    else:
        torchrun(str(WORKER), str(out), *args, cwd=tmp_path, nproc=nproc)
    return torch.load(out, weights_only=True)


@pytest.mark.slow
def test_two_ranks_with_sync_bn_take_the_step_one_process_takes_on_twice_the_batch_recomputed_costed_or_not(tmp_path):
    # Clipping is active (the global norm is about 2.2): the virtual step's clip factor must be the
    # global gradient's, as the DDP weight step's is, not each rank's own. Each regularizer changes the
    # step (SDARTS-RS's noise must be the same on both ranks; DARTS-'s skip sits in every edge).
    flags = ["--orders", *ORDERS, "--grad-clip", "1.0", "--regularizers", "none", *REGULARIZERS]
    alone = one_step(tmp_path, "alone", "--batch", "16", *flags)
    pair = one_step(tmp_path, "pair", "--batch", "8", "--sync-bn", *flags, nproc=2)
    for order in ORDERS:
        a, b = alone["none"][order], pair["none"][order]
        assert a["grad_norm"] > 1.5
        torch.testing.assert_close(b["grad_norm"], a["grad_norm"], rtol=1e-4, atol=0)
        for x, y in zip(a["alpha_grad"], b["alpha_grad"]):
            assert x.abs().max() > 1e-3
            torch.testing.assert_close(y, x, rtol=1e-4, atol=1e-6, msg=f"{order}: α gradient")
    for regularizer in ("none", *REGULARIZERS):
        for order in alone[regularizer]:  # weights, α and BatchNorm statistics after the step
            for key, x in alone[regularizer][order]["state"].items():
                torch.testing.assert_close(pair[regularizer][order]["state"][key], x, rtol=1e-4, atol=1e-6,
                                           msg=f"{regularizer}, {order}: {key}")
        if regularizer != "none":
            assert any(not torch.equal(alone[regularizer]["second"]["state"][k], v)
                       for k, v in alone["none"]["second"]["state"].items())
    # Recomputing every mixed op's activations in backward changes no number under DDP either.
    lean = one_step(tmp_path, "lean", "--batch", "8", "--sync-bn", *flags, "--recompute", "edge", nproc=2)
    for regularizer in ("none", *REGULARIZERS):
        for order in pair[regularizer]:
            for x, y in zip(pair[regularizer][order]["alpha_grad"], lean[regularizer][order]["alpha_grad"]):
                assert torch.equal(x, y), (regularizer, order)
            for key, x in pair[regularizer][order]["state"].items():
                assert torch.equal(lean[regularizer][order]["state"][key], x), (regularizer, order, key)
    # A cost penalty on α (search cnn --cost) is the same on both ranks: the pair steps as one process.
    cost_flags = ["--orders", "first", "second", "--grad-clip", "1.0", "--cost"]
    alone_cost = one_step(tmp_path, "alone_cost", "--batch", "16", *cost_flags)["none"]
    pair_cost = one_step(tmp_path, "pair_cost", "--batch", "8", "--sync-bn", *cost_flags, nproc=2)["none"]
    for order in ("first", "second"):
        for key, x in alone_cost[order]["state"].items():
            torch.testing.assert_close(pair_cost[order]["state"][key], x, rtol=1e-4, atol=1e-6, msg=f"{order}: {key}")
        assert not torch.equal(alone_cost[order]["state"]["alpha_normal"], alone["none"][order]["state"]["alpha_normal"])
    # Without SyncBatchNorm each rank normalises by its own half-batch: the gradients differ.
    unsynced = one_step(tmp_path, "unsynced", "--batch", "8", "--orders", "first", nproc=2)["none"]
    diff = max((a - b).abs().max() for a, b in zip(alone["none"]["first"]["alpha_grad"], unsynced["first"]["alpha_grad"]))
    assert diff > 1e-4


def test_sharded_loader_gives_each_rank_its_rows_of_the_global_batch():
    data = load_dataset("digits", "train")
    whole = BatchLoader(data, batch_size=12, seed=5, cutout=3, drop_last=True)
    ranks = [BatchLoader(data, batch_size=4, seed=5, cutout=3, drop_last=True, rank=r, world_size=3) for r in range(3)]
    assert len(whole) == len(ranks[0]) == len(data) // 12
    for _ in range(3):  # crops, flips and cutout drawn for the global batch
        x, y = whole.next_batch()
        parts = [loader.next_batch() for loader in ranks]
        torch.testing.assert_close(torch.cat([p[0] for p in parts]), x, rtol=0, atol=0)
        assert torch.equal(torch.cat([p[1] for p in parts]), y)


def test_sharded_loader_refuses_a_subset_smaller_than_one_global_batch():
    data = load_dataset("digits", "train")
    with pytest.raises(Exception, match="do not fill one global batch of 8 x 2 processes"):
        BatchLoader(data, torch.arange(10), batch_size=8, drop_last=True, rank=1, world_size=2)


def test_sync_batchnorm_alone_is_batchnorm_and_conversion_keeps_the_state():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4),
                              torch.nn.Sequential(torch.nn.BatchNorm2d(4, affine=False)))
    net[1].weight.data.uniform_()
    net[1].running_mean.fill_(0.3)
    reference = {k: v.clone() for k, v in net.state_dict().items()}
    x = torch.randn(6, 3, 8, 8)
    expected = net(x)
    torch.manual_seed(0)
    sync = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4),
                               torch.nn.Sequential(torch.nn.BatchNorm2d(4, affine=False)))
    sync.load_state_dict(reference)
    convert_sync_batchnorm(sync)
    assert isinstance(sync[1], SyncBatchNorm) and isinstance(sync[2][0], SyncBatchNorm)
    torch.testing.assert_close(sync(x), expected)
    for key, value in net.state_dict().items():  # the running statistics moved the same way
        torch.testing.assert_close(sync.state_dict()[key], value)


def test_single_process_distributed_is_a_no_op():
    d = Distributed()
    t = [torch.ones(3), torch.zeros(2)]
    assert d.average(t)[0] is t[0] and not d.enabled and d.is_main
    assert d.any(True) and not d.any(False) and d.gather_objects(7) == [7]
    net = torch.nn.Linear(2, 2)
    assert d.wrap(net) is net


def test_protocol_commands_refuse_torchrun(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("WORLD_SIZE", "2")
    code = main(["random-search", "cnn", "--samples", "1", "--no-train", "--out", str(tmp_path / "r")])
    assert code == 1
    assert "run it without torchrun" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


@pytest.mark.slow
def test_torchrun_train_cnn_writes_model_and_resumes(tmp_path):
    flags = ["-m", "dartsnas", "train", "cnn", "--dataset", "digits", "--genotype", "DARTS_V2", "--init-channels", "4",
             "--layers", "3", "--batch-size", "16", "--steps-per-epoch", "3", "--auxiliary-weight", "0.4",
             "--drop-path", "0.2", "--sync-bn", "--device", "cpu", "--out", "run"]
    first = torchrun(*flags, "--epochs", "1", cwd=tmp_path)
    assert "x 2 processes (data parallel)" in first.stdout
    torchrun(*flags, "--epochs", "2", "--resume", cwd=tmp_path)
    run = tmp_path / "run"
    assert sorted(p.name for p in run.iterdir()) == ["checkpoint.pt", "classes.json", "config.json", "data.json",
                                                     "metrics.jsonl", "model.pt", "run.json"]
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2]
    assert all(0 <= r["test_top1"] <= 1 for r in records)
    assert records[0]["steps"] == 3
    assert main(["eval", str(run), "--device", "cpu"]) == 0


def test_rank_rows_of_a_stream_evaluate_to_the_whole_stream():
    from dartsnas.data.text import batchify, rank_rows
    from dartsnas.genotype import load_genotype
    from dartsnas.nets.recurrent import RNNConfig, build_rnn_model
    from dartsnas.train.lm import evaluate_lm
    torch.manual_seed(0)
    model = build_rnn_model(load_genotype("DARTS_V2", "rnn"), RNNConfig(vocab_size=50, emsize=8, nhid=8))
    data = batchify(torch.randint(0, 50, (2000,)), 6)
    whole = evaluate_lm(model, data, 7)
    shares = [rank_rows(data, r, 4) for r in range(4)]
    assert [s.shape[0] for s in shares] == [2, 2, 1, 1]
    tokens = [s.shape[0] * (s.shape[1] - 1) for s in shares]
    combined = sum(evaluate_lm(model, s, 7) * n for s, n in zip(shares, tokens)) / sum(tokens)
    assert combined == pytest.approx(whole, rel=1e-6)


@pytest.mark.slow
@needs_ptb
def test_torchrun_recurrent_search_and_training(tmp_path):
    data = ["--data-dir", str(PTB), "--train-split", "valid", "--val-split", "test", "--emsize", "16", "--nhid", "16",
            "--batch-size", "32", "--eval-batch-size", "64", "--steps-per-epoch", "3", "--device", "cpu"]
    search = ["-m", "dartsnas", "search", "rnn", *data, "--sync-bn", "--out", "search"]
    out = torchrun(*search, "--epochs", "2", cwd=tmp_path).stdout
    assert out.count("search rnn: first order") == 1 and "x 2 processes (data parallel)" in out
    run = tmp_path / "search"
    assert sorted(p.name for p in run.iterdir()) == ["checkpoint.pt", "config.json", "genotype.json", "metrics.jsonl",
                                                     "run.json"]
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2]
    assert json.loads((run / "genotype.json").read_text()) == records[-1]["genotype"]

    train = ["-m", "dartsnas", "train", "rnn", *data, "--test-split", "test", "--genotype", "search",
             "--test-batch-size", "16", "--epochs", "1", "--out", "train"]
    torchrun(*train, cwd=tmp_path)
    records = [json.loads(line) for line in (tmp_path / "train" / "metrics.jsonl").read_text().splitlines()]
    assert records[0]["epoch"] == 1 and records[-1]["test_ppl"] > 1  # one epoch, then the test record
    assert len(records) == 2


@pytest.mark.slow
def test_torchrun_search_writes_one_run_directory_and_sigterm_mid_epoch_resumes_bit_identical(tmp_path):
    """An uninterrupted 2-process search, then the same search stopped by SIGTERM to torchrun mid-epoch
    (every rank checkpoints at one agreed step) and resumed: the same weights, metrics and genotype."""
    import signal
    import time
    flags = ["-m", "dartsnas", "search", "cnn", "--dataset", "digits", "--init-channels", "4", "--layers", "3",
             "--nodes", "2", "--batch-size", "8", "--epochs", "2", "--steps-per-epoch", "16", "--checkpoint-every", "3",
             "--device", "cpu"]
    first = torchrun(*flags, "--out", "whole", cwd=tmp_path)
    assert first.stdout.count("search cnn: first order") == 1  # rank 0 alone logs
    assert "x 2 processes (data parallel)" in first.stdout
    search_files = ["checkpoint.pt", "classes.json", "config.json", "data.json", "genotype.json", "metrics.jsonl",
                    "run.json"]
    assert sorted(p.name for p in (tmp_path / "whole").iterdir()) == search_files
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                             *flags, "--out", "cut"], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 300
    while not (tmp_path / "cut" / "checkpoint.pt").exists():  # the step-3 checkpoint: under way, 13 steps left
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    out = proc.communicate(timeout=120)[0]
    assert "SIGTERM: stopped after step" in out
    state = torch.load(tmp_path / "cut" / "checkpoint.pt", weights_only=True)
    steps = [r["step"] for r in state["in_epoch_ranks"]]
    assert len(state["rng_ranks"]) == 2 and state["epoch"] == 0
    assert len(steps) == 2 and steps[0] == steps[1] and 3 <= steps[0] < 16  # both ranks stopped at one step
    torchrun(*flags, "--out", "cut", "--resume", cwd=tmp_path)
    whole = torch.load(tmp_path / "whole" / "checkpoint.pt", weights_only=True)
    resumed = torch.load(tmp_path / "cut" / "checkpoint.pt", weights_only=True)
    for key, value in whole["model"].items():
        torch.testing.assert_close(resumed["model"][key], value, rtol=0, atol=0, msg=key)
    a = [json.loads(line) for line in (tmp_path / "whole" / "metrics.jsonl").read_text().splitlines()]
    b = [json.loads(line) for line in (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in a] == [r["epoch"] for r in b] == [1, 2]
    assert [r["train_loss"] for r in a] == [r["train_loss"] for r in b] and a[-1]["genotype"] == b[-1]["genotype"]
    assert json.loads((tmp_path / "cut" / "genotype.json").read_text()) == b[-1]["genotype"]
    assert sorted(p.name for p in (tmp_path / "cut").iterdir()) == search_files


def test_folder_batches_split_each_global_batch_between_ranks():
    from dartsnas.data.folder import GlobalBatches
    whole = list(GlobalBatches(20, batch_size=6, shuffle=True, drop_last=False, generator=torch.Generator().manual_seed(3)))
    ranks = [GlobalBatches(20, batch_size=2, shuffle=True, drop_last=False, generator=torch.Generator().manual_seed(3),
                           rank=r, world_size=3) for r in range(3)]
    shares = [list(r) for r in ranks]
    # 20 = 3 x 6 + 2: the last global batch is rank 0's alone; the others skip their empty share
    assert [len(r) for r in ranks] == [len(s) for s in shares] == [4, 3, 3]
    for i, batch in enumerate(whole):
        assert sum((s[i] for s in shares if i < len(s)), []) == batch
    dropped = GlobalBatches(23, batch_size=2, shuffle=False, drop_last=True, generator=torch.Generator(), rank=1, world_size=3)
    assert list(dropped) == [[2, 3], [8, 9], [14, 15]]


@pytest.mark.slow
@pytest.mark.parametrize("method", [
    ["--progressive", "--stage-layers", "3", "4", "--stage-ops", "8", "3", "--stage-dropout", "0.1", "0.4",
     "--stage-epochs", "1", "--stage-warmup", "0"],
    ["--sampler", "gdas", "--epochs", "2"], ["--sampler", "dirichlet", "--epochs", "2"],
    ["--select", "pt", "--pt-interval", "1", "--pt-batches", "1", "--epochs", "1"],
    ["--sampler", "dirichlet", "--stage-partial-channels", "2", "1", "--stage-ops", "8", "3", "--stage-epochs", "1",
     "--stage-warmup", "0"]],
    ids=["p-darts", "gdas", "drnas", "darts-pt", "drnas-progressive"])
def test_torchrun_runs_p_darts_across_its_stages_and_gdas_with_ops_left_out(tmp_path, method):
    """Two gloo ranks: P-DARTS rebuilds (and re-wraps) its network between stages; GDAS leaves the
    unsampled ops without gradients (DDP told to look for them). Both ranks draw the same ops (DrNAS:
    the same mixing weights); DARTS-PT's measurements count both ranks' validation images and every rank
    takes the same decisions (5 edges and a node to choose: 6 epochs after the search's one)."""
    flags = ["-m", "dartsnas", "search", "cnn", "--dataset", "digits", "--init-channels", "4", "--layers", "3",
             "--nodes", "2", "--batch-size", "8", "--steps-per-epoch", "3", "--device", "cpu", *method]
    result = torchrun(*flags, "--out", "run", cwd=tmp_path)
    assert "x 2 processes (data parallel)" in result.stdout
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    epochs = 7 if "pt" in method else 2
    assert [r["epoch"] for r in records] == list(range(1, epochs + 1)) and all(r["train_loss"] > 0 for r in records)
    assert json.loads((tmp_path / "run" / "genotype.json").read_text()) == records[-1]["genotype"]
    if "--progressive" in method:
        assert [r["layers"] for r in records] == [3, 4]
    if "--stage-partial-channels" in method:  # widened between the stages on both ranks alike
        assert [r["partial_channels"] for r in records] == [2, 1]
