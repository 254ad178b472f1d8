import itertools
import json
import math

import pytest
import torch

from dartsnas.cli import main
from dartsnas.data.text import Corpus
from dartsnas.genotype import RecurrentGenotype
from dartsnas.train import final_rnn
from dartsnas.train.checkpoint import load_checkpoint, read_metrics
from dartsnas.train.final_rnn import RNNTrainConfig, train_rnn
from dartsnas.train.search_rnn import RNNSearchConfig, search_rnn
from conftest import count_host_reads
from test_recurrent import PTB, needs_ptb

TINY = dict(data_dir=str(PTB), train_split="valid", val_split="test", emsize=16, nhid=16, batch_size=64,
            eval_batch_size=128, steps_per_epoch=3)


@pytest.mark.slow
@needs_ptb
def test_search_rnn_writes_genotype_metrics_checkpoint_and_resumes_bit_identically(tmp_path, capsys):
    flags = ["--data-dir", str(PTB), "--train-split", "valid", "--val-split", "test", "--emsize", "16", "--nhid", "16",
             "--batch-size", "64", "--eval-batch-size", "128", "--steps-per-epoch", "3", "--quiet"]
    assert main(["search", "rnn", *flags, "--epochs", "1", "--out", str(tmp_path / "b")]) == 0
    assert main(["search", "rnn", "--out", str(tmp_path / "b"), "--resume", "--epochs", "2", "--quiet"]) == 0
    genotype, _ = search_rnn(RNNSearchConfig(**TINY, epochs=2), tmp_path / "a", quiet=True)
    saved = RecurrentGenotype.from_json((tmp_path / "b" / "genotype.json").read_text())
    assert saved == genotype and len(genotype.recurrent) == 8
    a, b = load_checkpoint(tmp_path / "a"), load_checkpoint(tmp_path / "b")
    for name, t in a["model"].items():
        assert torch.equal(t, b["model"][name]), name
    records = read_metrics(tmp_path / "b" / "metrics.jsonl")
    assert [r["epoch"] for r in records] == [1, 2]
    rows = torch.tensor(records[-1]["alphas"]["recurrent"])
    assert rows.shape == (36, 5) and torch.allclose(rows.sum(1), torch.ones(36), atol=1e-4)
    assert math.isfinite(records[-1]["val_ppl"])


@pytest.mark.slow
@needs_ptb
def test_second_order_recurrent_search_runs(tmp_path):
    _, records = search_rnn(RNNSearchConfig(**{**TINY, "steps_per_epoch": 2}, epochs=1, order="second"),
                            tmp_path, quiet=True)
    assert records[0]["steps"] == 2


@pytest.mark.slow
@needs_ptb
def test_short_real_training_beats_the_unigram_perplexity_by_30_percent(tmp_path, capsys):
    corpus = Corpus(PTB, splits=("valid", "test"))
    counts = torch.bincount(corpus["valid"], minlength=corpus.vocab_size).double() + 1  # add-one unigram
    unigram = math.exp(-(counts / counts.sum()).log()[corpus["test"]].mean().item())
    # Model selection on the training split itself: the test split is only ever evaluated.
    cfg = RNNTrainConfig(data_dir=str(PTB), train_split="valid", val_split="valid", test_split="test", emsize=128,
                         nhid=128, batch_size=32, eval_batch_size=128, test_batch_size=64, epochs=5, dropout=0.2,
                         dropout_h=0.1, dropout_x=0.1, dropout_i=0.1, dropout_e=0.0)
    records = train_rnn(cfg, tmp_path, quiet=True)
    test_ppl = records[-1]["test_ppl"]
    assert test_ppl < 0.7 * unigram, (test_ppl, unigram)
    capsys.readouterr()
    assert main(["eval", str(tmp_path), "--batch-size", "64"]) == 0
    assert json.loads(capsys.readouterr().out)["ppl"] == pytest.approx(test_ppl, rel=1e-6)


@needs_ptb
def test_switch_to_averaged_sgd_on_the_non_monotone_trigger_and_resume(tmp_path, monkeypatch):
    # Validation losses per epoch (then the final test evaluation): no improvement after epoch 2.
    losses = itertools.chain([5.0, 4.0, 4.5, 4.6, 4.7], itertools.repeat(4.9))
    monkeypatch.setattr(final_rnn, "evaluate_lm", lambda model, data, bptt, **kw: next(losses))
    cfg = RNNTrainConfig(**{**TINY, "steps_per_epoch": 1}, test_split="test", test_batch_size=128, nonmono=1,
                         epochs=5)
    records = final_rnn.RNNTraining(cfg, tmp_path, quiet=True).fit()
    # epoch 4: 4.6 > min(losses before the last 1) = 4.0 -> switch; epoch 5 runs averaged SGD
    assert [r.get("optimizer") for r in records[:5]] == ["sgd", "sgd", "sgd", "sgd", "asgd"]
    assert [bool(r.get("switched_to_asgd")) for r in records[:5]] == [False, False, False, True, False]
    state = load_checkpoint(tmp_path)
    assert state["asgd"] and any("ax" in s for s in state["optimizer"]["state"].values())
    run = final_rnn.RNNTraining(RNNTrainConfig(**{**cfg.to_dict(), "epochs": 6}), tmp_path, resume=True, quiet=True)
    assert run.asgd and run.epoch == 5


def test_averaged_weights_are_swapped_in_and_restored():
    model = torch.nn.Linear(2, 1)
    opt = torch.optim.ASGD(model.parameters(), lr=0.1, t0=0, lambd=0.0)
    before = model.weight.detach().clone()
    for _ in range(3):  # torch.optim.ASGD: the average equals the weights for the first two steps
        opt.zero_grad()
        model(torch.ones(1, 2)).sum().backward()
        opt.step()
    current = model.weight.detach().clone()
    with final_rnn.averaged_weights(model, opt):
        torch.testing.assert_close(model.weight, opt.state[model.weight]["ax"])
        assert not torch.equal(model.weight, current)
    assert torch.equal(model.weight, current) and not torch.equal(before, current)


@needs_ptb
def test_non_finite_loss_stops_naming_the_step_and_keeps_the_last_good_checkpoint(tmp_path):
    from dartsnas.errors import DartsError
    cfg = RNNTrainConfig(**{**TINY, "steps_per_epoch": 2}, test_split="test", test_batch_size=128, epochs=1)
    train_rnn(cfg, tmp_path, quiet=True)
    good = load_checkpoint(tmp_path)
    run = final_rnn.RNNTraining(RNNTrainConfig(**{**cfg.to_dict(), "epochs": 2}), tmp_path, resume=True, quiet=True)
    with torch.no_grad():
        run.model.cell.W0.fill_(float("nan"))
    with pytest.raises(DartsError, match="non-finite loss or gradient at epoch 2, step 1"):
        run.fit()
    kept = load_checkpoint(tmp_path)
    assert kept["epoch"] == 1 and all(torch.isfinite(t).all() for t in kept["model"].values())
    assert torch.equal(kept["model"]["cell.W0"], good["model"]["cell.W0"])


@pytest.mark.slow
@needs_ptb
def test_compile_flag_reaches_the_cell_of_both_recurrent_commands(tmp_path, monkeypatch):
    from dartsnas.nets.recurrent import HighwayCell
    calls = []
    monkeypatch.setattr(HighwayCell, "compile_step", lambda self, **kw: calls.append(type(self).__name__))
    flags = ["--data-dir", str(PTB), "--train-split", "valid", "--val-split", "test", "--emsize", "16", "--nhid", "16",
             "--batch-size", "64", "--eval-batch-size", "128", "--steps-per-epoch", "1", "--epochs", "1", "--quiet",
             "--compile"]
    assert main(["search", "rnn", *flags, "--out", str(tmp_path / "s")]) == 0
    assert main(["train", "rnn", *flags, "--test-split", "test", "--test-batch-size", "64", "--out", str(tmp_path / "t")]) == 0
    assert calls == ["SearchRecurrentCell", "DerivedCell"]
    assert load_checkpoint(tmp_path / "s")["config"]["compile"] is True


@needs_ptb
@pytest.mark.parametrize("order", ["first", "second"])
def test_recurrent_search_steps_read_nothing_back_from_a_gpu(tmp_path, monkeypatch, order):
    """Off the CPU a step must not wait for the device: count tensor reads at each step boundary."""
    from dartsnas.train.search_rnn import RNNSearch
    monkeypatch.setattr(RNNSearch, "checks_every_step", property(lambda self: False))  # as on a GPU
    run = RNNSearch(RNNSearchConfig(**{**TINY, "steps_per_epoch": 4}, epochs=1, order=order), tmp_path, quiet=True)
    reads, at_boundary = count_host_reads(monkeypatch), []
    monkeypatch.setattr(run, "step_done", lambda step, state: at_boundary.append(reads[0]))
    record = run.train_epoch()
    monkeypatch.undo()
    assert record["steps"] == 4 and math.isfinite(record["train_loss"])
    assert at_boundary == [at_boundary[0]] * 4, at_boundary


@needs_ptb
def test_without_per_step_checks_a_non_finite_epoch_still_stops_the_run(tmp_path, monkeypatch):
    from dartsnas.errors import DartsError
    from dartsnas.train.search_rnn import RNNSearch
    monkeypatch.setattr(RNNSearch, "checks_every_step", property(lambda self: False))  # as on a GPU
    run = RNNSearch(RNNSearchConfig(**{**TINY, "steps_per_epoch": 2}, epochs=1), tmp_path, quiet=True)
    with torch.no_grad():
        run.model.cell.W0.fill_(float("nan"))
    with pytest.raises(DartsError, match="non-finite mean training loss at epoch 1, step 2"):
        run.train_epoch()
