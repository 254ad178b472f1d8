"""Latency tables measured on the target, and searches aimed at a time budget (issue 23)."""
import json

import pytest
import torch

from dartsnas.cli import main
from dartsnas.cost import CostTable
from dartsnas.errors import ConfigError
from dartsnas.latency import LatencyConfig, Timer, latency_table
from dartsnas.nets import NetworkConfig, build_network
from dartsnas.spaces.cnn import sample_genotype

OPS = ("skip_connect", "sep_conv_3x3", "max_pool_3x3")
TINY = dict(init_channels=4, layers=3, nodes=2, ops=OPS, repeats=3, warmup=1)


@pytest.fixture(scope="module")
def torch_table():
    """A digits-shaped table (1 channel, 8x8, 10 classes), timed in PyTorch."""
    return latency_table(LatencyConfig(**TINY, image_size=(8,), in_channels=1, threads=1))


def test_a_table_times_every_op_at_every_shape_and_says_how(torch_table):
    t = torch_table
    assert t.kinds == ("macs", "params", "latency")
    m = t.measurement
    assert m["runtime"] == "torch" and m["threads"] == 1 and m["unit"] == "ms" and m["repeats"] == 3
    assert m["rounds"] == 3
    assert m["machine"]["cpus"] >= 1 and m["device"] == "cpu" and m["device_name"]
    # the normal cell's 5 edges and both reduction cells' (2 strided + 3 plain per cell) at their shapes
    assert [len(c["latency"]) for c in t.cells] == [5, 5, 5]
    # timings move with the machine's load: assert what no load can turn over
    figures = {name: [edge[i] for c in t.cells for edge in c["latency"]] for i, name in enumerate(OPS)}
    assert all(v >= 0 for values in figures.values() for v in values)
    assert sum(figures["sep_conv_3x3"]) > 0
    assert [c["edges"][0] for c in t.cells] == [[4, 8, 8, 1], [8, 8, 8, 2], [16, 4, 4, 2]]
    assert [c["edges"][4] for c in t.cells] == [[4, 8, 8, 1], [8, 4, 4, 1], [16, 2, 2, 1]]
    # an op at one shape is timed once: equal figures wherever it recurs
    assert t.cells[0]["latency"][0] == t.cells[0]["latency"][4]
    # the fixed part makes the reference network's prediction its measured time
    assert t.of_genotype(t.reference_genotype())["latency"] == pytest.approx(m["reference_network_ms"])
    # counted costs are those of a table without timing
    counted = CostTable.build(OPS, 2, init_channels=4, layers=3, image_size=(8, 8), in_channels=1)
    g = sample_genotype(__import__("random").Random(0), nodes=2, ops=OPS)
    assert {k: v for k, v in t.of_genotype(g).items() if k != "latency"} == counted.of_genotype(g)
    again = CostTable.from_dict(json.loads(json.dumps(t.to_dict())))
    assert again.of_genotype(g) == t.of_genotype(g) and again.measurement == m


def test_the_expected_latency_is_differentiable_and_sharp_alphas_give_the_genotypes(torch_table):
    t = torch_table
    g = sample_genotype(__import__("random").Random(3), nodes=2, ops=OPS)
    names = t.op_names
    sharp = []
    for cell, kind in ((g.normal, "normal"), (g.reduce, "reduce")):
        a = torch.full((5, len(OPS)), -30.0)
        for node in range(2):
            for op, j in cell[2 * node:2 * node + 2]:
                e = [0, 2][node] + j
                a[e, names[kind][e].index(op)] = 30.0
        sharp.append(a)
    beta = []
    for cell in (g.normal, g.reduce):
        b = torch.full((5,), 1e-9)
        for node in range(2):
            for _, j in cell[2 * node:2 * node + 2]:
                b[[0, 2][node] + j] = 0.5
        beta.append(b)
    got = t.expected("latency", sharp[0].softmax(-1), sharp[1].softmax(-1), *beta)
    assert float(got) == pytest.approx(t.of_genotype(g)["latency"], rel=1e-5)
    alpha = torch.randn(5, len(OPS), dtype=torch.float64, requires_grad=True)
    fixed = torch.randn(5, len(OPS), dtype=torch.float64).softmax(-1)
    torch.autograd.gradcheck(lambda a: t.expected("latency", a.softmax(-1), fixed), (alpha,))


def test_the_command_writes_the_table_and_a_latency_search_aims_at_it(tmp_path, capsys):
    out = tmp_path / "table.json"
    flags = ["--init-channels", "4", "--layers", "3", "--nodes", "2", "--ops", *OPS, "--repeats", "2",
             "--warmup", "0", "--in-channels", "1", "--image-size", "8", "--threads", "1"]
    assert main(["latency-table", *flags, "--out", str(out), "--quiet"]) == 0
    line = json.loads(capsys.readouterr().out)
    assert line["runtime"] == "torch" and line["op_shapes"] == 5 * len(OPS) and line["threads"] == 1
    table = CostTable.read(out)
    assert table.kinds[-1] == "latency"
    target = 0.5 * table.of_genotype(table.reference_genotype())["latency"]
    search = ["search", "cnn", "--dataset", "digits", "--init-channels", "4", "--layers", "3", "--nodes", "2",
              "--ops", *OPS, "--batch-size", "16", "--steps-per-epoch", "2", "--epochs", "2", "--quiet",
              "--cost", "latency", "--cost-target", str(target), "--latency-table", str(out)]
    assert main([*search, "--out", str(tmp_path / "run")]) == 0
    records = [json.loads(r) for r in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    kept = CostTable.read(tmp_path / "run" / "cost_table.json")
    assert kept.measurement == table.measurement  # the run keeps the table it aimed with
    genotype = json.loads((tmp_path / "run" / "genotype.json").read_text())
    from dartsnas.genotype import Genotype
    assert records[-1]["derived_cost"] == round(table.of_genotype(Genotype.from_dict(genotype))["latency"], 4)
    assert records[-1]["expected_cost"] > 0
    # a table for other images, another op set, or none at all: named
    data = json.loads(out.read_text())
    data["network"]["image_size"] = [16, 16]
    (tmp_path / "t16.json").write_text(json.dumps(data))
    capsys.readouterr()
    assert main([*search[:-1], str(tmp_path / "t16.json"), "--out", str(tmp_path / "big")]) == 1
    assert "t16.json: the table is for image_size [16, 16], the search has [8, 8]" in capsys.readouterr().err
    assert main(["latency-table", *flags, "--ops", "skip_connect", "sep_conv_3x3", "--out", str(tmp_path / "t2.json"),
                 "--quiet"]) == 0
    capsys.readouterr()
    assert main([*search[:-1], str(tmp_path / "t2.json"), "--out", str(tmp_path / "other")]) == 1
    assert "t2.json: the table's normal candidate ops" in capsys.readouterr().err
    assert main([*search[:-2], "--out", str(tmp_path / "none")]) == 1
    assert "--cost latency needs --latency-table" in capsys.readouterr().err
    (tmp_path / "bad.json").write_text("{not json")
    assert main([*search[:-1], str(tmp_path / "bad.json"), "--out", str(tmp_path / "bad")]) == 1
    assert "bad.json: not a cost table" in capsys.readouterr().err
    # multiply-adds counted in the latency table's final network
    assert main([*search[:-6], "--cost", "macs", "--cost-target", "1e5", "--latency-table", str(out),
                 "--out", str(tmp_path / "macs")]) == 0
    assert CostTable.read(tmp_path / "macs" / "cost_table.json").network == table.network


@pytest.mark.slow
def test_onnxruntime_tables_and_summary_time_the_exported_graph(tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    t = latency_table(LatencyConfig(init_channels=4, layers=3, nodes=1, ops=("skip_connect", "sep_conv_3x3"),
                                    image_size=(8,), repeats=3, warmup=1, runtime="onnxruntime", threads=1))
    m = t.measurement
    import onnxruntime
    assert m["runtime"] == "onnxruntime" and m["runtime_version"] == onnxruntime.__version__
    assert m["distinct_op_shapes"] == 6
    sep = [edge[1] for c in t.cells for edge in c["latency"]]
    assert t.op_names["normal"][0] == ["skip_connect", "sep_conv_3x3"] and all(v >= 0 for v in sep) and sum(sep) > 0
    assert main(["summary", "--genotype", "DARTS_V2", "--init-channels", "4", "--layers", "3", "--image-size", "8",
                 "--latency", "onnxruntime", "--repeats", "3", "--threads", "1"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["latency_ms"] > 0 and info["latency"]["runtime"] == "onnxruntime" and info["latency"]["threads"] == 1
    assert main(["summary", "--latency", "torch", "--threads", "0"]) == 1
    assert "--threads must be >= 1" in capsys.readouterr().err


def test_timer_takes_the_median_and_bad_settings_are_named():
    net = build_network("cifar", NetworkConfig(__import__("dartsnas").genotype.CONV_GENOTYPES.get("DARTS_V2"),
                                               init_channels=4, layers=3))
    timer = Timer("torch", "cpu", threads=1, repeats=5, warmup=1)
    assert timer(net, (3, 8, 8)) > 0
    assert torch.get_num_threads() >= 1  # restored after timing with one thread
    with pytest.raises(ConfigError, match="runtime must be one of torch, onnxruntime"):
        Timer("tensorrt")
    with pytest.raises(ConfigError, match="device must be cpu, cuda or cuda:N, got 'tpu'"):
        LatencyConfig(device="tpu").validate()
    with pytest.raises(ConfigError, match="image_size takes S or H W"):
        LatencyConfig(image_size=(8, 8, 8)).validate()
    assert LatencyConfig(network="imagenet").layers == 14 and LatencyConfig(network="imagenet").size == (224, 224)
