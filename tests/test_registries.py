"""The registries select: every registered search space x search method pair takes a tiny search step
through the command line, or is refused with one line that names what does not combine."""
import json
import os
from pathlib import Path

import pytest

from dartsnas.cli import main
from dartsnas.methods import SEARCH_METHODS, method_name, methods_of
from dartsnas.spaces import SEARCH_SPACES, SearchSpace
from dartsnas.train.checkpoint import read_metrics
from dartsnas.train.search_config import SearchConfig

PTB = Path(os.environ.get("DARTSNAS_PTB", Path(__file__).resolve().parents[2] / "shared" / "data" / "ptb"))

TINY = {"cnn": ["--dataset", "digits", "--init-channels", "4", "--layers", "3", "--batch-size", "16",
                "--steps-per-epoch", "1", "--epochs", "1", "--quiet"],
        "nb201": ["--dataset", "digits", "--init-channels", "4", "--layers", "1", "--batch-size", "16",
                  "--steps-per-epoch", "1", "--epochs", "1", "--quiet"],
        "rnn": ["--data-dir", str(PTB), "--train-split", "valid", "--val-split", "test", "--emsize", "8", "--nhid", "8",
                "--batch-size", "16", "--eval-batch-size", "256", "--steps-per-epoch", "1", "--epochs", "1", "--quiet"]}

#: The flags that select each method; a method a space's search has no flags for is refused by them.
SELECT = {
    "darts": [],
    "p-darts": ["--progressive", "--stage-layers", "3", "3", "--stage-ops", "8", "8", "--stage-dropout", "0.1", "0.1",
                "--stage-epochs", "1", "--stage-warmup", "0", "--epochs", "2"],
    "gdas": ["--sampler", "gdas"],
    "gdas-frc": ["--sampler", "gdas", "--reduce-cell", "gdas"],
    "pc-darts": ["--partial-channels", "2"],
    "sdarts-rs": ["--regularizer", "sdarts-rs"],
    "darts-minus": ["--regularizer", "darts-minus"],
    "budget": ["--cost", "params", "--cost-target", "20K", "--cost-layers", "5", "--cost-channels", "8"],
    "drnas": ["--sampler", "dirichlet"],
    "drnas-progressive": ["--sampler", "dirichlet", "--stage-partial-channels", "2", "1", "--stage-ops", "8", "3",
                          "--stage-epochs", "1", "--stage-warmup", "0", "--epochs", "2"],
    "beta-decay": ["--regularizer", "beta-decay"],
    "pt": ["--select", "pt", "--pt-interval", "1", "--pt-batches", "1", "--nodes", "1"],
}


def test_every_registered_method_has_its_flags_here():
    assert set(SEARCH_METHODS.names()) == set(SELECT)
    assert set(SEARCH_SPACES.names()) == set(TINY)
    assert all(isinstance(space, SearchSpace) for space in SEARCH_SPACES.values())


@pytest.mark.parametrize("method", list(SELECT))
@pytest.mark.parametrize("space", ["cnn", "nb201", "rnn"])
def test_each_space_and_method_takes_a_step_or_is_refused_in_one_line(space, method, tmp_path, capsys):
    if space == "rnn" and not PTB.is_dir():
        pytest.skip(f"no PTB at {PTB}")
    out = tmp_path / "run"
    try:
        code = main(["search", space, *TINY[space], *SELECT[method], "--out", str(out)])
    except SystemExit as e:  # argparse: a flag this space's search does not have
        code = e.code
    err = capsys.readouterr().err.strip()
    if code == 0:
        config = json.loads((out / "config.json").read_text())
        records = read_metrics(out / "metrics.jsonl")
        assert records and records[-1]["steps"] == 1
        if space == "cnn":
            run_methods = [m.name for m in methods_of(SearchConfig.from_dict(
                {k: v for k, v in config.items() if k != "kind"}))]
            assert method in run_methods and run_methods[0] == "darts"
    else:
        # the conv search takes every method; NAS-Bench-201's all but P-DARTS's and DrNAS's stages and GDAS's fixed cell
        assert space == "rnn" or (space, method) in {("nb201", "p-darts"), ("nb201", "gdas-frc"),
                                                     ("nb201", "drnas-progressive")}, err
        assert len(err.splitlines()) == 1 and err.startswith("dartsnas: error: unrecognized arguments: "), err


def test_methods_sets_what_it_adds_to_a_conv_search(tmp_path):
    config = SearchConfig(dataset="digits", regularizer="sdarts-rs", partial_channels=2, cost="macs", cost_target=1e6)
    names = [m.name for m in methods_of(config)]
    assert names == ["darts", "pc-darts", "sdarts-rs", "budget"]
    assert method_name(config.to_dict()) == "pc-darts+sdarts-rs, macs budget"
    assert method_name({**config.to_dict(), "order": "second"}) == "pc-darts+sdarts-rs (second order), macs budget"
    space = config.space()
    assert (space.partial_channels, space.auxiliary_skip) == (2, False)
    assert SearchConfig(regularizer="darts-minus").space().auxiliary_skip
