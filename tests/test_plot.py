import pytest

from dartsnas.cli import main
from dartsnas.errors import ConfigError
from dartsnas.genotype import load_genotype
from dartsnas.layout import cell_layout
from dartsnas.plot import genotype_layouts, op_colors, plot_genotype, to_dot


def test_conv_layout_as_data():
    normal, reduce = genotype_layouts(load_genotype("DARTS_V2"))
    assert (normal.name, reduce.name) == ("normal", "reduce")
    labels = [n[0] for n in normal.nodes]
    assert labels == ["c_{k-2}", "c_{k-1}", "0", "1", "2", "3", "c_{k}"]
    xs = {n[0]: n[1] for n in normal.nodes}
    assert xs["c_{k-2}"] == xs["c_{k-1}"] < xs["0"] < xs["1"] < xs["2"] < xs["3"] < xs["c_{k}"]  # left to right
    ops = [e for e in normal.edges if e[2]]
    assert ops[:2] == [("c_{k-2}", "0", "sep_conv_3x3"), ("c_{k-1}", "0", "sep_conv_3x3")]
    assert ("0", "3", "dil_conv_3x3") in ops and len(ops) == 8
    assert sorted(e[0] for e in normal.edges if e[1] == "c_{k}") == ["0", "1", "2", "3"]


def test_recurrent_layout_as_data():
    (cell,) = genotype_layouts(load_genotype("DARTS_V2", "rnn"))
    labels = [n[0] for n in cell.nodes]
    assert labels[:2] == ["x_{t}", "h_{t-1}"] and labels[-1] == "h_{t}" and labels[2:-1] == [str(i) for i in range(9)]
    assert ("x_{t}", "0", "") in cell.edges and ("h_{t-1}", "0", "") in cell.edges
    ops = [e for e in cell.edges if e[2]]
    assert ops[0] == ("0", "1", "sigmoid") and ops[-1] == ("5", "8", "relu") and len(ops) == 8
    assert sorted(int(e[0]) for e in cell.edges if e[1] == "h_{t}") == list(range(1, 9))


def test_layout_of_a_cell_with_more_nodes():
    nasnet = load_genotype("NASNet")
    layout = cell_layout("reduce", nasnet.reduce, nasnet.reduce_concat, k=2, inputs=("a", "b"), output="out")
    assert len([n for n in layout.nodes if n[3] == "node"]) == 5
    # pairs 6, 7 feed node 3: ('skip_connect', 3) reads state 3 = node "1", ('avg_pool_3x3', 2) node "0"
    assert ("1", "3", "skip_connect") in layout.edges and ("0", "3", "avg_pool_3x3") in layout.edges
    assert sorted(e[0] for e in layout.edges if e[1] == "out") == ["2", "3", "4"]


@pytest.mark.parametrize("fmt,magic", [("png", b"\x89PNG"), ("svg", b"<?xml"), ("pdf", b"%PDF")])
def test_rendered_files_have_the_format_and_a_sensible_size(tmp_path, fmt, magic):
    paths = plot_genotype(load_genotype("DARTS_V2"), tmp_path / f"cells.{fmt}")
    assert [p.name for p in paths] == [f"cells_normal.{fmt}", f"cells_reduce.{fmt}"]
    for p in paths:
        data = p.read_bytes()
        assert data.startswith(magic) and len(data) > 5_000
    if fmt == "png":
        width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
        assert width > height > 200


def test_dot_output_and_consistent_colours(tmp_path):
    text = to_dot(genotype_layouts(load_genotype("DARTS_V2"))[0])
    colors = op_colors()
    assert text.startswith('digraph "normal"') and "rankdir=LR" in text
    assert f'"c_{{k-2}}" -> "0" [label="sep_conv_3x3", color="{colors["sep_conv_3x3"]}"]' in text
    assert len(set(colors[o] for o in ("sep_conv_3x3", "skip_connect", "max_pool_3x3", "tanh", "relu"))) == 5


def test_cli_plots_builtins_run_directories_and_checkpoints(tmp_path, capsys):
    assert main(["plot", "DARTS_V2", "--space", "rnn", "--out", str(tmp_path / "r.png")]) == 0
    assert (tmp_path / "r_recurrent.png").stat().st_size > 5_000
    run = tmp_path / "run"
    from dartsnas.train.search import SearchConfig, search
    search(SearchConfig(dataset="digits", init_channels=4, layers=3, batch_size=16, epochs=1, steps_per_epoch=1),
           run, quiet=True)
    assert main(["plot", str(run), "--out", str(tmp_path / "run.svg")]) == 0
    assert main(["plot", str(run / "checkpoint.pt"), "--format", "dot", "--out", str(tmp_path / "ck")]) == 0
    assert (tmp_path / "ck_reduce.dot").read_text().startswith("digraph")
    capsys.readouterr()
    assert main(["plot", "NOPE", "--out", str(tmp_path / "x.png")]) == 1
    assert "unknown genotype 'NOPE'" in capsys.readouterr().err
    (tmp_path / "bad.json").write_text("{")
    assert main(["plot", str(tmp_path / "bad.json"), "--out", str(tmp_path / "x.png")]) == 1
    assert "malformed JSON" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="unknown format 'gif'"):
        plot_genotype(load_genotype("DARTS_V1"), tmp_path / "x.gif")


@pytest.fixture(scope="module")
def search_run(tmp_path_factory):
    from dartsnas.train.search import SearchConfig, search
    run = tmp_path_factory.mktemp("plots") / "run"
    search(SearchConfig(dataset="digits", init_channels=4, layers=3, batch_size=16, epochs=3, steps_per_epoch=2),
           run, quiet=True)
    return run


def test_alphas_curves_and_evolution_of_a_real_run(search_run, tmp_path, capsys):
    from PIL import Image
    assert main(["plot", str(search_run), "--alphas", "--out", str(tmp_path / "a.png")]) == 0
    for cell in ("normal", "reduce"):
        with Image.open(tmp_path / f"a_{cell}.png") as im:
            assert im.format == "PNG" and im.width > 800 and im.height > 300
    assert main(["plot", str(search_run), "--curves", "--out", str(tmp_path / "c.svg")]) == 0
    text = (tmp_path / "c.svg").read_text()
    assert text.startswith("<?xml") and "train_loss" in text and "val_acc" in text
    assert main(["plot", str(search_run), "--evolution", "--out", str(tmp_path / "e.gif")]) == 0
    with Image.open(tmp_path / "e.gif") as gif:
        assert gif.format == "GIF" and gif.n_frames == 3  # one frame per epoch


def test_run_directory_errors(tmp_path, capsys):
    assert main(["plot", str(tmp_path), "--curves", "--out", str(tmp_path / "c.png")]) == 1
    assert "no metrics.jsonl records to plot" in capsys.readouterr().err
    (tmp_path / "metrics.jsonl").write_text('{"epoch": 1, "train_loss": 1.0}\n')
    assert main(["plot", str(tmp_path), "--alphas", "--out", str(tmp_path / "a.png")]) == 1
    assert "metrics hold no α" in capsys.readouterr().err
    assert main(["plot", str(tmp_path / "nope"), "--evolution", "--out", str(tmp_path / "e.gif")]) == 1
    assert "not a run directory" in capsys.readouterr().err


def test_graphviz_engine(tmp_path, monkeypatch):
    import shutil
    from dartsnas import plot
    if shutil.which("dot"):
        (path, _) = plot_genotype(load_genotype("DARTS_V2"), tmp_path / "g.png", engine="graphviz")
        assert path.read_bytes().startswith(b"\x89PNG")
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(ConfigError, match="needs Graphviz's dot program"):
        plot.plot_genotype(load_genotype("DARTS_V2"), tmp_path / "h.png", engine="graphviz")
