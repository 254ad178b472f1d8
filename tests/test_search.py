import json
import subprocess
import sys

import pytest
import torch

from dartsnas.cli import main
from dartsnas.errors import CheckpointError, ConfigError
from dartsnas.genotype import Genotype
from dartsnas.train.checkpoint import load_checkpoint, read_metrics
from dartsnas.train.common import cosine_lr
from dartsnas.train.search import SearchConfig, derive_from_checkpoint, search

TINY = dict(dataset="digits", init_channels=4, layers=3, batch_size=16, steps_per_epoch=3)
TINY_FLAGS = ["--dataset", "digits", "--init-channels", "4", "--layers", "3", "--batch-size", "16",
              "--steps-per-epoch", "3", "--quiet"]


def test_cli_search_writes_genotype_metrics_checkpoint_then_resumes(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["search", "cnn", *TINY_FLAGS, "--epochs", "1", "--out", str(out)]) == 0
    genotype = Genotype.from_json((out / "genotype.json").read_text())
    assert len(genotype.normal) == 8 and genotype.normal_concat == (2, 3, 4, 5)
    (record,) = read_metrics(out / "metrics.jsonl")
    assert record["epoch"] == 1 and record["steps"] == 3
    for key in ("train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds", "skip_connect_normal"):
        assert key in record
    for cell in ("normal", "reduce"):
        rows = torch.tensor(record["alphas"][cell])
        assert rows.shape == (14, 8)
        torch.testing.assert_close(rows.sum(1), torch.ones(14), atol=1e-4, rtol=0)
    assert record["genotype"] == genotype.to_dict()
    state = load_checkpoint(out / "checkpoint.pt")
    assert state["epoch"] == 1 and state["kind"] == "search-cnn"
    for key in ("model", "w_optimizer", "architect", "loaders", "rng", "config"):
        assert key in state

    capsys.readouterr()
    assert main(["derive", str(out / "checkpoint.pt")]) == 0
    assert Genotype.from_json(capsys.readouterr().out) == genotype

    assert main(["search", "cnn", "--out", str(out), "--resume", "--epochs", "2", "--quiet"]) == 0
    records = read_metrics(out / "metrics.jsonl")
    assert [r["epoch"] for r in records] == [1, 2]
    assert load_checkpoint(out / "checkpoint.pt")["epoch"] == 2


@pytest.mark.slow
def test_resumed_search_is_bit_identical_to_an_uninterrupted_one(tmp_path):
    straight = search(SearchConfig(**TINY, epochs=2), tmp_path / "a", quiet=True)
    search(SearchConfig(**TINY, epochs=1), tmp_path / "b", quiet=True)
    resumed = search(SearchConfig(**TINY, epochs=2), tmp_path / "b", resume=True, quiet=True)
    assert resumed.genotype == straight.genotype
    a, b = load_checkpoint(tmp_path / "a"), load_checkpoint(tmp_path / "b")
    for name, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][name]), name
    strip = lambda rs: [{k: v for k, v in r.items() if k not in ("seconds", "images_per_s")} for r in rs]
    assert strip(straight.metrics) == strip(resumed.metrics)


def test_a_crash_after_the_metrics_line_does_not_duplicate_it_on_resume(tmp_path):
    search(SearchConfig(**TINY, epochs=1), tmp_path, quiet=True)
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"epoch": 2, "partial": True}) + "\n" + '{"epoch": 3, "trunc')
    search(SearchConfig(**TINY, epochs=2), tmp_path, resume=True, quiet=True)
    records = read_metrics(tmp_path / "metrics.jsonl")
    assert [r["epoch"] for r in records] == [1, 2] and "partial" not in records[1]


@pytest.mark.parametrize("order", ["second", "exact"])
def test_higher_order_search_runs(tmp_path, order):
    result = search(SearchConfig(**{**TINY, "steps_per_epoch": 2}, epochs=1, order=order), tmp_path, quiet=True)
    assert result.metrics[0]["train_loss"] > 0


@pytest.mark.slow
def test_search_learns_on_real_digits(tmp_path):
    cfg = SearchConfig(dataset="digits", init_channels=8, layers=3, batch_size=64, epochs=3, lr=0.05)
    result = search(cfg, tmp_path, quiet=True)
    assert result.metrics[-1]["val_acc"] > 0.5  # chance is 0.1
    assert result.metrics[-1]["train_loss"] < result.metrics[0]["train_loss"]


def test_run_directory_and_option_errors(tmp_path):
    search(SearchConfig(**TINY, epochs=1), tmp_path / "run", quiet=True)
    with pytest.raises(ConfigError, match="already holds a run"):
        search(SearchConfig(**TINY, epochs=1), tmp_path / "run", quiet=True)
    search(SearchConfig(**TINY, epochs=1, seed=1), tmp_path / "run", overwrite=True, quiet=True)
    with pytest.raises(CheckpointError, match="layers=3.*layers=5"):
        search(SearchConfig(**{**TINY, "layers": 5}, epochs=2), tmp_path / "run", resume=True, quiet=True)
    # --resume where no checkpoint was written yet (a requeued job's same command line) starts afresh ...
    logged = []
    fresh = search(SearchConfig(**TINY, epochs=1), tmp_path / "empty", resume=True, log=logged.append)
    assert "no checkpoint yet, starting the run from the beginning" in logged[0] and len(fresh.metrics) == 1
    assert json.loads((tmp_path / "empty" / "run.json").read_text()) == {"kind": "search-cnn"}
    # ... but a directory another command started, or one holding unknown run files, is not taken over
    (tmp_path / "trained").mkdir()
    (tmp_path / "trained" / "run.json").write_text('{"kind": "train-cnn"}\n')
    with pytest.raises(CheckpointError, match="holds a 'train-cnn' run, not a 'search-cnn' one"):
        search(SearchConfig(**TINY), tmp_path / "trained", resume=True, quiet=True)
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "metrics.jsonl").write_text('{"epoch": 1}\n')
    with pytest.raises(CheckpointError, match="nothing to resume"):
        search(SearchConfig(**TINY), tmp_path / "old", resume=True, quiet=True)
    assert (tmp_path / "old" / "metrics.jsonl").read_text() == '{"epoch": 1}\n'
    for bad, msg in [({"batch_size": 0}, "batch_size must be >= 1"), ({"lr": -1.0}, "lr must be > 0"),
                     ({"train_portion": 1.0}, "train_portion"), ({"order": "third"}, "order must be one of"),
                     ({"lr_min": 1.0}, "lr_min 1.0 is above lr")]:
        with pytest.raises(ConfigError, match=f"^{msg}") as error:
            search(SearchConfig(**{**TINY, **bad}), tmp_path / "x", quiet=True)
        assert error.value.at_command_line().startswith("--" + msg.replace("_", "-").replace(" lr", " --lr"))
    assert not (tmp_path / "x").exists()  # nothing written for a refused configuration


def test_corrupted_checkpoint_is_refused_with_a_clear_message(tmp_path):
    search(SearchConfig(**TINY, epochs=1), tmp_path, quiet=True)
    path = tmp_path / "checkpoint.pt"
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="checkpoint.pt: unreadable, not loaded: truncated, corrupted") as e:
        derive_from_checkpoint(path)
    assert "weights_only" not in str(e.value)


def test_a_checkpoint_the_safe_load_refuses_is_unreadable_without_advice_to_unpickle_it(tmp_path):
    class Payload:
        def __reduce__(self):
            return (print, ("this must never run",))
    path = tmp_path / "checkpoint.pt"
    torch.save({"format_version": 1, "kind": "search-cnn", "x": Payload()}, path)
    with pytest.raises(CheckpointError, match="checkpoint.pt: unreadable, not loaded.*safe load refuses") as e:
        derive_from_checkpoint(path)
    assert "weights_only" not in str(e.value) and "allowlist" not in str(e.value)


def test_cli_errors_are_one_line_without_traceback(tmp_path):
    res = subprocess.run([sys.executable, "-m", "dartsnas", "search", "cnn", "--dataset", "cifar10",
                          "--data-dir", str(tmp_path / "none"), "--out", str(tmp_path / "r")],
                         capture_output=True, text=True)
    assert res.returncode == 1
    assert res.stderr.startswith("dartsnas: error: CIFAR-10 not found") and "Traceback" not in res.stderr
    assert not (tmp_path / "r").exists()


def test_cosine_schedule_matches_the_closed_form():
    assert cosine_lr(0, 50, 0.025, 0.001) == pytest.approx(0.025)
    assert cosine_lr(25, 50, 0.025, 0.001) == pytest.approx(0.013)
    assert cosine_lr(50, 50, 0.025, 0.001) == pytest.approx(0.001)


def test_conv_search_stops_on_a_non_finite_loss_without_writing_a_checkpoint(tmp_path):
    from dartsnas.errors import DartsError
    from dartsnas.train.search import Search
    run = Search(SearchConfig(**TINY, epochs=1), tmp_path, quiet=True)
    with torch.no_grad():
        run.model.classifier.weight.fill_(float("inf"))
    with pytest.raises(DartsError, match="non-finite (loss or gradient|architecture weights α) at epoch 1, step 1: stopped"):
        run.fit()
    assert not (tmp_path / "checkpoint.pt").exists() and not (tmp_path / "genotype.json").exists()


def test_partial_channel_search_with_an_alpha_warm_up(tmp_path):
    from dartsnas.train.search import Search
    config = SearchConfig(**{**TINY, "init_channels": 8}, epochs=2, partial_channels=4, arch_start_epoch=1)
    run = Search(config, tmp_path)
    alpha0 = run.model.alpha_normal.detach().clone()
    beta0 = run.model.beta_normal.detach().clone()
    run.epoch = 0
    run.train_epoch()  # epoch 0 < arch_start_epoch: only w trains
    assert torch.equal(run.model.alpha_normal, alpha0) and torch.equal(run.model.beta_normal, beta0)
    run.fit()
    state = load_checkpoint(tmp_path)
    assert not torch.equal(state["model"]["alpha_normal"], alpha0)
    assert not torch.equal(state["model"]["beta_normal"], beta0)  # β learns with α
    assert len(read_metrics(tmp_path / "metrics.jsonl")[-1]["edge_weights"]["normal"]) == 14


@pytest.mark.parametrize("order", ["second", "exact"])
def test_search_step_under_bf16_autocast_keeps_alpha_and_its_gradient_in_float32(tiny_net, order):
    """The CUDA fast path autocasts the search step to bf16; CPU autocast runs the same code here."""
    from dartsnas.architect import Architect
    from dartsnas.train.bilevel import search_step
    net = tiny_net(num_classes=5)
    opt = torch.optim.SGD(net.weight_parameters(), lr=0.1, momentum=0.9)
    arch = Architect(net, opt, order=order, lr=0.01)
    g = torch.Generator().manual_seed(0)
    batch = lambda: (torch.randn(8, 3, 8, 8, generator=g), torch.randint(0, 5, (8,), generator=g))
    train, val = batch(), batch()
    before = [a.detach().clone() for a in net.arch_parameters()]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        grads = arch.alpha_grad(train, val, xi=0.1)
        assert net(train[0]).dtype == torch.bfloat16  # the convolutions did run in bf16
        loss, _, grad_norm, ok = search_step(net, arch, opt, train, val, 0.1, 5.0, finite=lambda *t: True)
    assert ok and torch.isfinite(loss) and torch.isfinite(grad_norm)
    assert all(g.dtype == torch.float32 and torch.isfinite(g).all() and g.abs().max() > 0 for g in grads)
    assert all(a.dtype == torch.float32 for a in net.arch_parameters())
    assert all(not torch.equal(a, b) for a, b in zip(net.arch_parameters(), before))
    assert all(p.dtype == torch.float32 for p in net.weight_parameters())
