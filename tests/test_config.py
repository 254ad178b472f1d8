"""The one config system: fields declared once with their flags, bounds and round trips."""
import dataclasses
import json

import pytest

from dartsnas.cli import _config, build_parser, main
from dartsnas.config import Config, flag_of
from dartsnas.flags import load_config_file
from dartsnas.errors import CheckpointError, ConfigError
from dartsnas.train.final import TrainConfig
from dartsnas.train.final_rnn import RNNTrainConfig
from dartsnas.train.commands import RUNS
from dartsnas.train.search import KIND as SEARCH_KIND
from dartsnas.train.search import SearchConfig
from dartsnas.train.search_model import ModelSearchConfig
from dartsnas.train.search_rnn import RNNSearchConfig

CONFIGS = (SearchConfig, TrainConfig, RNNSearchConfig, RNNTrainConfig, ModelSearchConfig)


@pytest.mark.parametrize("cls", CONFIGS)
def test_every_field_is_declared_with_its_flag_and_round_trips_through_json(cls):
    config = cls()
    flags = [flag_of(f) for f in dataclasses.fields(cls) if f.metadata.get("cli", True)]
    assert len(flags) == len(set(flags))
    assert all(f.metadata and "group" in f.metadata for f in dataclasses.fields(cls))
    data = json.loads(json.dumps(config.to_dict()))
    assert cls.from_dict(data) == config
    if "data_dir" in data and cls in (RNNSearchConfig, RNNTrainConfig):
        config = dataclasses.replace(config, data_dir="corpus")  # the recurrent commands need one
    config.validate()


def test_a_command_changes_a_group_default_and_keeps_its_help_and_bounds():
    fields = {cls: {f.name: f for f in dataclasses.fields(cls)} for cls in (SearchConfig, TrainConfig)}
    assert SearchConfig().batch_size == 64 and TrainConfig().batch_size == 96
    assert fields[SearchConfig]["batch_size"].metadata == fields[TrainConfig]["batch_size"].metadata
    with pytest.raises(ConfigError, match=r"^batch_size must be >= 1, got 0$"):
        TrainConfig(batch_size=0).validate()


@pytest.mark.parametrize("config, field, flag", [
    (SearchConfig(dataset="digits", early_stop="hessian"), "early_stop hessian watches the dominant eigenvalue: give "
     "hessian_every N too", "--early-stop hessian watches the dominant eigenvalue: give --hessian-every N too"),
    (SearchConfig(train_portion=1.0), "train_portion must lie strictly between 0 and 1, got 1.0",
     "--train-portion must lie strictly between 0 and 1, got 1.0"),
    (TrainConfig(lr_min=0.5), "lr_min 0.5 is above lr 0.025", "--lr-min 0.5 is above --lr 0.025"),
    (TrainConfig(dataset="imagenet", train_portion=0.5), "train_portion below 1 is not available for imagenet",
     "--train-portion below 1 is not available for imagenet"),
    (RNNTrainConfig(data_dir="x", emsize=10), "tied weights need emsize == nhid, got 10 and 850",
     "tied weights need --emsize == --nhid, got 10 and 850"),
    (SearchConfig(dataset="ptb"), "dataset must be one of cifar10, digits, imagenet, imagefolder, arrays, got 'ptb'",
     "--dataset must be one of cifar10, digits, imagenet, imagefolder, arrays, got 'ptb'"),
    (SearchConfig(sample=(0.1,)), "sample needs two parts of a class in (0, 1), for w and α, got [0.1]",
     "--sample needs two parts of a class in (0, 1), for w and α, got [0.1]"),
    (ModelSearchConfig(grad_clip=0.0), "grad_clip must be > 0 (inf: no clipping), got 0.0",
     "--grad-clip must be > 0 (inf: no clipping), got 0.0"),
])
def test_errors_name_the_field_in_python_and_the_flag_at_the_command_line(config, field, flag):
    with pytest.raises(ConfigError) as error:
        config.validate()
    assert str(error.value) == field and error.value.at_command_line() == flag


def test_the_command_line_prints_flags(tmp_path, capsys):
    assert main(["search", "cnn", "--dataset", "digits", "--early-stop", "hessian", "--out", str(tmp_path)]) == 1
    assert capsys.readouterr().err.strip() == ("dartsnas: error: --early-stop hessian watches the dominant eigenvalue: "
                                              "give --hessian-every N too")
    assert main(["train", "cnn", "--dataset", "digits", "--batch-size", "0", "--out", str(tmp_path)]) == 1
    assert capsys.readouterr().err.strip() == "dartsnas: error: --batch-size must be >= 1, got 0"
    # the search space's own bound is named as a flag too
    assert main(["search", "cnn", "--dataset", "digits", "--layers", "2", "--out", str(tmp_path / "l2")]) == 1
    assert capsys.readouterr().err.strip() == ("dartsnas: error: --layers must be >= 3 (reductions at L/3 and "
                                               "2L/3), got 2")


def _parse(*argv):
    return build_parser().parse_args(list(argv))


@pytest.mark.parametrize("suffix, text", [
    (".json", '{"dataset": "digits", "lr": 0.1, "ops": ["skip_connect", "sep_conv_3x3"], "max-skip": 1}'),
    (".toml", 'dataset = "digits"\nlr = 0.1\nops = ["skip_connect", "sep_conv_3x3"]\nmax-skip = 1\n'),
])
def test_config_files_set_fields_and_flags_override_them(tmp_path, suffix, text):
    path = tmp_path / f"c{suffix}"
    path.write_text(text)
    config = _config(RUNS[SEARCH_KIND], _parse("search", "cnn", "--config", str(path), "--lr", "0.2",
                                                        "--out", str(tmp_path / "run")))
    assert config == SearchConfig(dataset="digits", lr=0.2, ops=("skip_connect", "sep_conv_3x3"), max_skip=1)


@pytest.mark.parametrize("text, message", [
    ('{"batch_sise": 3}', r"c.json: unknown option 'batch_sise' \(not a field of SearchConfig\)"),
    ('{"batch_size": "big"}', r"c.json: batch_size must be int, got 'big'"),
    ('{"max_skip": 1.5}', r"c.json: max_skip must be int or null, got 1.5"),
    ('{"lr": 1', r"c.json: not valid JSON"),
    ('[1, 2]', r"c.json: must hold a table of options, not list"),
])
def test_bad_config_files_are_named_with_the_key(tmp_path, text, message):
    (tmp_path / "c.json").write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config_file(tmp_path / "c.json", SearchConfig)


def test_a_runs_config_json_runs_the_same_config_again(tmp_path):
    from dartsnas.train.search import search
    config = SearchConfig(dataset="digits", init_channels=4, layers=3, batch_size=16, epochs=1, steps_per_epoch=1,
                          ops="s2", seed=3)
    search(config, tmp_path / "run", quiet=True)
    written = json.loads((tmp_path / "run" / "config.json").read_text())
    assert written["kind"] == "search-cnn" and written["ops"] == ["skip_connect", "sep_conv_3x3"]
    again = _config(RUNS[SEARCH_KIND], _parse("search", "cnn", "--config", str(tmp_path / "run" / "config.json"),
                                                       "--out", str(tmp_path / "b")))
    assert again == config


def test_unknown_checkpoint_fields_and_several_differing_fields_are_named(tmp_path):
    with pytest.raises(CheckpointError, match="unknown config field"):
        SearchConfig.from_dict({"nope": 1})
    from dartsnas.config import check_resumable
    with pytest.raises(CheckpointError, match=r"written with layers=8, seed=0, this run asks for layers=5, seed=1"):
        check_resumable(SearchConfig(), SearchConfig(layers=5, seed=1, epochs=3), tmp_path / "c.pt", print)


def test_base_config_has_no_fields():
    assert dataclasses.fields(Config) == ()
