"""NAS-Bench-201's space: the cell and its arch string, the benchmark's numbering and isomorphism, its
search network and final network against xautodl's counts, searches with the methods, training."""
import json

import pytest
import torch

from dartsnas.cli import main
from dartsnas.cost201 import CostTable201
from dartsnas.errors import ConfigError, GenotypeError
from dartsnas.genotype201 import (CELLS201, Cell201, all_cells, benchmark_cells, benchmark_index, derive_cell201,
                                  unique_cells)
from dartsnas.nets import NetworkConfig, build_network
from dartsnas.nets.nb201 import benchmark_cost
from dartsnas.nets.summary import count_macs
from dartsnas.ops import NB201_OPS
from dartsnas.spaces.conv import MixedOp
from dartsnas.spaces.nb201 import NB201SearchSpaceConfig, SearchNetwork201
from dartsnas.train.nb201 import NB201SearchConfig, nb201_search_recipe

BEST = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|"
TINY = ["--dataset", "digits", "--epochs", "2", "--steps-per-epoch", "2", "--init-channels", "4", "--layers", "1",
        "--batch-size", "16", "--quiet"]


def test_the_arch_string_round_trips_and_bad_strings_get_one_clear_error():
    cell = Cell201.from_str(BEST)
    assert cell.to_str() == BEST and str(cell) == BEST and cell.nodes == 3 and len(cell.edges) == 6
    assert cell.edges[3] == ("skip_connect", 0)
    # a node's edges in any order; JSON dict or the bare string
    assert Cell201.from_str("|nor_conv_3x3~0|+|nor_conv_3x3~1|nor_conv_3x3~0|+|nor_conv_3x3~2|skip_connect~0|"
                            "nor_conv_3x3~1|") == cell
    assert Cell201.from_json(json.dumps(cell.to_dict())) == cell == Cell201.from_json(BEST)
    for bad, message in [("|nor_conv_3x3~0|+|nor_conv_3x3~0|", "node 2 has no edge from node"),
                         ("|conv~0|", "unknown op 'conv'"),
                         ("|skip_connect~1|", "input 1 does not exist yet"),
                         ("|skip_connect~0|+|none~0|none~0|", "input 0 repeats"),
                         ("skip_connect~0", "is not |op~input"),
                         ("|skip_connect0|", "is not op~input")]:
        with pytest.raises(GenotypeError, match=message):
            Cell201.from_str(bad)
    with pytest.raises(GenotypeError, match="unknown field"):
        Cell201.from_dict({"arch": BEST, "normal": []})


def test_the_benchmark_numbering_is_the_authors_shuffled_enumeration():
    # exps/NAS-Bench-201/main.py asserts these three after random.seed(88); random.shuffle
    cells = benchmark_cells()
    assert len(cells) == 15625
    assert cells[0].to_str() == "|avg_pool_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|nor_conv_1x1~0|skip_connect~1|" \
                                "skip_connect~2|"
    assert cells[9].to_str() == "|avg_pool_3x3~0|+|none~0|none~1|+|skip_connect~0|none~1|nor_conv_3x3~2|"
    assert cells[123].to_str() == "|avg_pool_3x3~0|+|avg_pool_3x3~0|nor_conv_1x1~1|+|none~0|avg_pool_3x3~1|" \
                                  "nor_conv_3x3~2|"
    assert all(benchmark_index(cells[i]) == i for i in (0, 9, 123, 15624))
    # gen_all's order before the shuffle: the last edge fastest
    first = list(all_cells())[:2]
    assert [c.to_str() for c in first] == ["|none~0|+|none~0|none~1|+|none~0|none~1|none~2|",
                                           "|none~0|+|none~0|none~1|+|none~0|none~1|skip_connect~2|"]
    assert Cell201.from_index(Cell201.from_str(BEST).index()) == Cell201.from_str(BEST)


def test_isomorphic_cells_share_a_unique_string_and_the_space_has_6466_classes():
    assert len(unique_cells()) == 6466  # the NAS-Bench-201 paper's count
    # a skip passes its input on, a none is "#", sums are sorted: node 1's op feeds nothing here
    a = Cell201.from_str("|nor_conv_3x3~0|+|skip_connect~0|none~1|+|none~0|none~1|nor_conv_1x1~2|")
    b = Cell201.from_str("|nor_conv_1x1~0|+|skip_connect~0|none~1|+|none~0|none~1|nor_conv_1x1~2|")
    assert a.unique_str() == "#+#+(#+0)@nor_conv_1x1" and a.unique_str() == b.unique_str()
    c = Cell201.from_str("|nor_conv_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|none~0|none~1|skip_connect~2|")
    d = Cell201.from_str("|nor_conv_1x1~0|+|nor_conv_3x3~0|skip_connect~1|+|none~0|none~1|skip_connect~2|")
    assert c.unique_str() == d.unique_str()  # the two convs in parallel, summed in either order
    series = Cell201.from_str("|nor_conv_3x3~0|+|none~0|nor_conv_1x1~1|+|none~0|none~1|skip_connect~2|")
    assert series.unique_str() != c.unique_str()
    assert not Cell201.from_str("|none~0|+|none~0|skip_connect~1|+|none~0|skip_connect~1|skip_connect~2|").is_connected()


# xautodl 1.0.0, counted with it installed: TinyNetworkDarts(16, 5, 4, 10, NAS_BENCH_201, False, True)'s parameters,
# and get_model_infos(TinyNetwork(16, 5, cell, 10), (1, 3, 32, 32)) -> (MFLOPs, MB of parameters)
AUTHORS_SEARCH_PARAMS = 1692856
AUTHORS_COSTS = {"best-cifar10": (184.73025, 1.288506), "resnet": (78.56193, 0.559386), "all-skip": (7.78305, 0.073306)}


@pytest.mark.parametrize("name", list(AUTHORS_COSTS))
def test_the_benchmark_network_counts_what_the_authors_network_counts(name):
    net = build_network("nb201", NetworkConfig(CELLS201.get(name), init_channels=16, layers=5, auxiliary=False))
    cost = benchmark_cost(net)
    assert cost["flops"] == pytest.approx(AUTHORS_COSTS[name][0], abs=1e-9)
    assert cost["params"] == pytest.approx(AUTHORS_COSTS[name][1], abs=1e-12)
    assert net(torch.zeros(2, 3, 32, 32)).shape == (2, 10)


def test_the_search_network_is_the_authors_and_derives_one_op_per_edge():
    net = SearchNetwork201(NB201SearchSpaceConfig())
    assert sum(p.numel() for p in net.parameters()) == AUTHORS_SEARCH_PARAMS
    assert [p.shape for p in net.arch_parameters()] == [(6, 5)]
    edge = net.cells[0].edges[0]
    assert [type(op).__name__ for op in edge.ops] == ["Zero", "Identity", "ReLUConvBN", "ReLUConvBN", "AvgPool2d"]
    assert edge.ops[3][1].bias is not None and not edge.ops[3][2].affine  # bias=not affine, as xautodl's
    with torch.no_grad():
        net.alpha_normal.copy_(torch.eye(6, 5) * 3)
    picks = [op for op, _ in net.genotype().edges]
    assert picks[:5] == list(NB201_OPS) and picks[5] == "none"  # argmax, none included
    assert derive_cell201(net.alpha_normal, (NB201_OPS,) * 6) == net.genotype()


def test_gdas_mixes_in_the_nas_bench_201_cells_form():
    """NAS201SearchCell.forward_gdas: h_k·op_k(x) + Σ_{j≠k} h_j, so every straight-through weight gets the
    sum of the output's gradient (the DARTS-space form gives the others none)."""
    torch.manual_seed(0)
    x = torch.randn(2, 4, 5, 5)
    for form, others in (("nb201", True), ("darts", False)):
        op = MixedOp(4, 1, NB201_OPS, pool_bn=False, sampled_form=form)
        w = torch.tensor([0.0, 0.0, 0.0, 1.0, 0.0], requires_grad=True)
        out = op(x, w, index=3)
        torch.testing.assert_close(out, op.ops[3](x))
        out.sum().backward()
        total = torch.ones_like(out).sum() if others else torch.tensor(0.0)
        torch.testing.assert_close(w.grad[0], total)


@pytest.fixture(scope="module")
def nb201_runs(tmp_path_factory):
    """Tiny searches in the space, one per method family, run once for the module."""
    root = tmp_path_factory.mktemp("nb201")
    runs = {}
    for name, extra in {"darts": [], "gdas": ["--sampler", "gdas", "--partial-channels", "2"],
                        "budget": ["--cost", "macs", "--cost-target", "1M", "--regularizer", "darts-minus",
                                   "--order", "second"]}.items():
        out = root / name
        assert main(["search", "nb201", *TINY, *extra, "--out", str(out)]) == 0
        runs[name] = out
    return runs


def test_every_method_searches_the_space_and_derives_a_cell(nb201_runs, capsys):
    for name, out in nb201_runs.items():
        cell = Cell201.from_json((out / "genotype.json").read_text())
        records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        assert len(records) == 2 and records[-1]["genotype"] == cell.to_dict(), name
        assert list(records[-1]["alphas"]) == ["normal"] and len(records[-1]["alphas"]["normal"]) == 6
        capsys.readouterr()
        assert main(["derive", str(out)]) == 0
        assert json.loads(capsys.readouterr().out) == cell.to_dict()
    assert "edge_weights" in json.loads((nb201_runs["gdas"] / "metrics.jsonl").read_text().splitlines()[-1])
    config = json.loads((nb201_runs["gdas"] / "config.json").read_text())
    assert (config["sampler"], config["nesterov"], config["weight_decay"]) == ("gdas", True, 5e-4)


def test_a_budgeted_search_prices_the_derived_cell_as_its_network_counts(nb201_runs):
    out = nb201_runs["budget"]
    record = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    table = CostTable201.from_dict(json.loads((out / "cost_table.json").read_text()))
    cell = Cell201.from_dict(record["genotype"])
    net = build_network("nb201", NetworkConfig(cell, init_channels=16, layers=5, in_channels=1, auxiliary=False))
    assert table.of_genotype(cell)["macs"] == count_macs(net.eval(), (1, 8, 8)) == record["derived_cost"]
    # the expectation at one-hot weights is that cell's cost
    one_hot = torch.nn.functional.one_hot(torch.tensor([NB201_OPS.index(op) for op, _ in cell.edges]), 5).double()
    assert float(table.expected("macs", one_hot)) == pytest.approx(record["derived_cost"])


def test_train_nb201_takes_the_benchmark_recipe_and_a_searched_cell(nb201_runs, tmp_path, capsys):
    config = NB201SearchConfig()
    assert (config.epochs, config.batch_size, config.nesterov, config.weight_decay, config.layers) == \
        (50, 64, True, 5e-4, 5)
    assert (nb201_search_recipe(recipe="darts").order, nb201_search_recipe(recipe="gdas").epochs) == ("second", 250)
    out = tmp_path / "train"
    assert main(["train", "nb201", "--dataset", "digits", "--genotype", str(nb201_runs["darts"]), "--epochs", "1",
                 "--steps-per-epoch", "2", "--init-channels", "4", "--layers", "1", "--batch-size", "32", "--quiet",
                 "--out", str(out)]) == 0
    saved = json.loads((out / "config.json").read_text())
    assert (saved["network"], saved["nesterov"], saved["lr"], saved["cutout"], saved["auxiliary_weight"]) == \
        ("nb201", True, 0.1, 0, 0.0)
    capsys.readouterr()
    assert main(["eval", str(out)]) == 0
    assert 0 <= json.loads(capsys.readouterr().out)["top1"] <= 1


def test_the_conv_space_options_are_refused_in_nb201():
    with pytest.raises(ConfigError, match="progressive"):
        NB201SearchConfig(progressive=True).validate()
    with pytest.raises(ConfigError, match="latency"):
        NB201SearchConfig(cost="latency", cost_target=1.0).validate()
    with pytest.raises(SystemExit):  # not a flag of search nb201
        main(["search", "nb201", "--stem", "imagenet", "--out", "x"])


def test_a_search_reports_its_derived_cells_benchmark_figures_every_epoch(nb201_runs, tmp_path):
    from dartsnas.bench201 import cell_record, run_record, write_nats_dir
    from dartsnas.genotype201 import benchmark_index
    records = [json.loads(line) for line in (nb201_runs["darts"] / "metrics.jsonl").read_text().splitlines()]
    cells = {Cell201.from_dict(r["genotype"]) for r in records}
    meta = [c.to_str() for c in benchmark_cells()]
    infos = {}
    for n, cell in enumerate(sorted(cells, key=str)):
        run = run_record(dataset="cifar10", seed=777, arch=cell.to_str(), epochs=1, num_classes=10, channels=16,
                         cells=5, train=[(1.0, 50.0)], evals={"ori-test": [(1.2, 40.0 + n)]}, train_times=[1.0],
                         eval_times={"ori-test": [0.1]}, params=0.1, flops=10.0, latency=None)
        infos[benchmark_index(cell)] = {"200": cell_record(benchmark_index(cell), cell.to_str(),
                                                           {("cifar10", 777): run})}
    write_nats_dir(tmp_path / "bench", meta, infos)
    out = tmp_path / "run"
    assert main(["search", "nb201", *TINY, "--bench201", str(tmp_path / "bench"), "--out", str(out)]) == 0
    again = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["genotype"] for r in again] == [r["genotype"] for r in records]  # same seed, same cells
    for r in again:
        cell = Cell201.from_dict(r["genotype"])
        n = sorted(cells, key=str).index(cell)
        assert r["bench201"] == {"index": benchmark_index(cell), "arch": cell.to_str(), "test-accuracy": 40.0 + n}
    assert main(["search", "nb201", *TINY, "--bench201", str(tmp_path / "none"), "--out", str(tmp_path / "r2")]) == 1
    assert not (tmp_path / "r2").exists()


def test_derive_and_plot_take_a_nas_bench_201_run(nb201_runs, tmp_path, capsys):
    assert main(["derive", str(nb201_runs["darts"]), "--derivation", "gdas"]) == 1
    assert "--derivation is the conv space's" in capsys.readouterr().err
    assert main(["plot", str(nb201_runs["darts"]), "--format", "dot", "--out", str(tmp_path / "cell.dot")]) == 0
    dot = (tmp_path / "cell_cell.dot").read_text()
    cell = Cell201.from_json((nb201_runs["darts"] / "genotype.json").read_text())
    assert dot.count("->") == sum(op != "none" for op, _ in cell.edges)
    capsys.readouterr()
    assert main(["genotype", "best-cifar10", "--space", "nb201"]) == 0
    assert json.loads(capsys.readouterr().out) == {"arch": BEST}
