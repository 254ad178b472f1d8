import json
import subprocess
import sys

import pytest
import torch

from dartsnas.cli import main
from dartsnas.errors import CheckpointError, ConfigError, GenotypeError
from dartsnas.train.checkpoint import load_checkpoint, read_metrics
from dartsnas.train.final import RECIPES, TrainConfig, evaluate_checkpoint, learning_rate, recipe, train

TINY = dict(init_channels=8, layers=5, batch_size=64, epochs=3, lr=0.05)


def test_short_real_training_on_digits_beats_chance_resumes_and_evaluates(tmp_path, capsys):
    out = tmp_path / "run"
    flags = ["--dataset", "digits", "--init-channels", "8", "--layers", "5", "--quiet", "--out", str(out)]
    assert main(["train", "cnn", *flags, "--epochs", "2"]) == 0
    assert main(["train", "cnn", "--out", str(out), "--resume", "--epochs", "3", "--quiet"]) == 0
    records = read_metrics(out / "metrics.jsonl")
    assert [r["epoch"] for r in records] == [1, 2, 3]
    for key in ("train_loss", "train_acc", "test_loss", "test_top1", "test_top5", "lr", "drop_path_prob", "seconds"):
        assert key in records[-1]
    assert records[-1]["test_top1"] > 0.6  # chance is 0.1
    capsys.readouterr()
    assert main(["eval", str(out)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result) == {"loss", "top1", "top5"} and 0 <= result["top1"] <= result["top5"] <= 1
    assert result["top1"] == pytest.approx(records[-1]["test_top1"])


def test_resumed_training_is_bit_identical(tmp_path):
    cfg = lambda epochs: recipe("digits", **{**TINY, "epochs": epochs, "steps_per_epoch": 4})
    train(cfg(2), tmp_path / "a", quiet=True)
    train(cfg(1), tmp_path / "b", quiet=True)
    train(cfg(2), tmp_path / "b", resume=True, quiet=True)
    a, b = load_checkpoint(tmp_path / "a"), load_checkpoint(tmp_path / "b")
    for name, t in a["model"].items():
        assert torch.equal(t, b["model"][name]), name


def test_drop_path_is_scheduled_and_recipes_are_the_papers():
    cifar = TrainConfig()
    assert (cifar.epochs, cifar.batch_size, cifar.lr, cifar.weight_decay, cifar.cutout, cifar.drop_path,
            cifar.auxiliary_weight, cifar.init_channels, cifar.layers) == (600, 96, 0.025, 3e-4, 16, 0.2, 0.4, 36, 20)
    imagenet = recipe("imagenet")
    assert (imagenet.epochs, imagenet.batch_size, imagenet.lr, imagenet.weight_decay, imagenet.label_smoothing,
            imagenet.drop_path, imagenet.network, imagenet.init_channels, imagenet.layers) == \
        (250, 128, 0.1, 3e-5, 0.1, 0.0, "imagenet", 48, 14)
    assert learning_rate(imagenet, 2) == pytest.approx(0.1 * 0.97 ** 2)
    assert learning_rate(cifar, 600) == pytest.approx(0.0) and learning_rate(cifar, 0) == pytest.approx(0.025)
    assert set(RECIPES) >= {"cifar10", "imagenet", "digits"}


def test_training_on_cifar_files_in_the_original_format(tmp_path, cifar_dir):
    metrics = train(TrainConfig(dataset="cifar10", data_dir=str(cifar_dir), verify=False, init_channels=4,
                                layers=3, batch_size=8, epochs=1), tmp_path / "run", quiet=True).metrics
    assert metrics[0]["steps"] == 3  # 24 images, batch 8, drop_last
    assert json.loads(json.dumps(evaluate_checkpoint(tmp_path / "run", verify=False)))["top5"] >= 0


def test_errors_before_training(tmp_path):
    with pytest.raises(GenotypeError, match="unknown genotype 'NOPE'"):
        train(recipe("digits", genotype="NOPE", **TINY), tmp_path / "a", quiet=True)
    with pytest.raises(ConfigError, match="drop_path must lie in"):
        train(recipe("digits", drop_path=1.5), tmp_path / "b", quiet=True)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    search_run = tmp_path / "s"
    from dartsnas.train.search import SearchConfig, search
    search(SearchConfig(dataset="digits", init_channels=4, layers=3, batch_size=16, epochs=1, steps_per_epoch=1),
           search_run, quiet=True)
    with pytest.raises(CheckpointError, match="not a trained conv network"):
        evaluate_checkpoint(search_run / "checkpoint.pt")
    res = subprocess.run([sys.executable, "-m", "dartsnas", "train", "cnn", "--genotype", str(tmp_path / "missing.json"),
                          "--dataset", "digits", "--out", str(tmp_path / "c")], capture_output=True, text=True)
    assert res.returncode == 1 and "unknown genotype" in res.stderr and "Traceback" not in res.stderr


def test_a_search_run_directory_is_a_genotype(tmp_path):
    from dartsnas.train.search import SearchConfig, search
    result = search(SearchConfig(dataset="digits", init_channels=4, layers=3, batch_size=16, epochs=1,
                                 steps_per_epoch=1), tmp_path / "s", quiet=True)
    train(recipe("digits", genotype=str(tmp_path / "s"), init_channels=4, layers=3, epochs=1, steps_per_epoch=1),
          tmp_path / "t", quiet=True)
    assert load_checkpoint(tmp_path / "t")["genotype"] == result.genotype.to_dict()


@pytest.mark.filterwarnings("ignore:CUDA is not available")
def test_autocast_is_bf16_on_cuda_only():
    from dartsnas.train.final import autocast
    with autocast(torch.device("cpu"), True):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32  # the CPU path stays float32
    ctx = autocast(torch.device("cuda"), True)
    assert isinstance(ctx, torch.autocast) and ctx.fast_dtype == torch.bfloat16
    assert not isinstance(autocast(torch.device("cuda"), False), torch.autocast)


def test_compile_flag_reaches_every_cell_and_is_kept_in_the_checkpoint(tmp_path, monkeypatch):
    from dartsnas.nets.conv import NetworkCIFAR
    calls = []
    monkeypatch.setattr(NetworkCIFAR, "compile_cells", lambda self, **kw: calls.append(len(self.cells)))
    flags = ["--dataset", "digits", "--init-channels", "4", "--layers", "3", "--epochs", "1", "--steps-per-epoch", "1",
             "--quiet", "--out", str(tmp_path)]
    assert main(["train", "cnn", *flags, "--compile"]) == 0
    assert calls == [3] and load_checkpoint(tmp_path)["config"]["compile"] is True


def test_without_per_step_checks_a_non_finite_training_epoch_still_stops_the_run(tmp_path, monkeypatch):
    """As on a GPU without --skip-nonfinite: no step is checked, the epoch's mean loss is."""
    from dartsnas.errors import DartsError
    from dartsnas.train.final import Training
    monkeypatch.setattr(Training, "checks_every_step", property(lambda self: False))
    run = Training(recipe("digits", **{**TINY, "epochs": 1, "steps_per_epoch": 2}), tmp_path, quiet=True)
    with torch.no_grad():
        run.model.stem[0].weight.fill_(float("nan"))
    with pytest.raises(DartsError, match="non-finite mean training loss at epoch 1, step 2"):
        run.train_epoch()
