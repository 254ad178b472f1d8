"""NAS-Bench-201's and NATS-Bench's files: small files generated here in each exact format (made-up
numbers) are read by dartsnas and by the official APIs (nas-bench-201, nats_bench), which must give the
same answers for every cell, index and string; bad files get one clear line."""
import bz2
import io
import json
import pickle
import zlib
from collections import OrderedDict

import numpy as np
import pytest
import torch

from dartsnas.bench201 import Benchmark201, BenchmarkError, cell_record, run_record, write_nats_dir, write_nats_file, \
    write_pth
from dartsnas.cli import main
from dartsnas.genotype201 import benchmark_cells

nas_201_api = pytest.importorskip("nas_201_api")
nats_bench = pytest.importorskip("nats_bench")

META = [c.to_str() for c in benchmark_cells()]
EVALUATED = [0, 9, 123, 4000, 15624]
DATASETS = {"cifar10-valid": ["x-valid", "ori-test"], "cifar10": ["ori-test"],
            "cifar100": ["x-valid", "x-test", "ori-test"], "ImageNet16-120": ["x-valid", "x-test", "ori-test"]}
SEEDS = {"12": [111, 777], "200": [777, 888, 999]}


def made_up(*key) -> float:
    return (zlib.crc32(repr(key).encode()) % 100000) / 1000.0  # 0..100


def runs_of(index, hp, legacy=False, numpy_scalars=False):
    """A cell's runs at hp epochs (2 for '12', 3 for '200', to stay small), per dataset and seed; legacy:
    v1.0's layout (no times, a latency per batch, the 200-epoch x-valid/x-test at the last epoch only)."""
    epochs = {"12": 2, "200": 3}[hp]
    runs = {}
    for dataset, sets in DATASETS.items():
        for seed in (SEEDS[hp] if dataset == "cifar10-valid" or hp == "200" else SEEDS[hp][:1]):
            key = (index, hp, dataset, seed)
            rec = run_record(dataset=dataset, seed=seed, arch=META[index], epochs=epochs, num_classes=10, channels=16,
                             cells=5, train=[(made_up(*key, "tl", e) / 20, made_up(*key, "ta", e)) for e in range(epochs)],
                             evals={s: [(made_up(*key, s, "l", e) / 20, made_up(*key, s, "a", e)) for e in range(epochs)]
                                    for s in sets},
                             train_times=[1.5] * epochs, eval_times={s: [0.5] * epochs for s in sets},
                             params=made_up(index, "p") / 50, latency=made_up(index, "lat") / 1e4,
                             flops=made_up(index, "f", seed if hp == "200" else 0) * 2)  # NATS: seed 888's where they differ
            if legacy:
                rec["train_times"], rec["eval_times"] = None, {}
                rec["latency"] = [made_up(index, "lat", b) / 1e4 for b in range(3)]
                if hp == "200" and dataset != "cifar10":
                    last = {"cifar10-valid": ["ori-test"]}.get(dataset, ["x-valid", "x-test"])
                    for name in last:
                        for e in range(epochs - 1):
                            del rec["eval_acc1es"][f"{name}@{e}"], rec["eval_losses"][f"{name}@{e}"]
            if numpy_scalars:
                rec["params"] = np.float64(rec["params"])
                rec["latency"] = [np.float64(x) for x in rec["latency"]]
                rec["train_times"] = OrderedDict(rec["train_times"]) if rec["train_times"] else None
            runs[(dataset, seed)] = rec
    return runs


def infos(legacy=False, numpy_scalars=False):
    out = {}
    for index in EVALUATED:
        out[index] = {hp: cell_record(index, META[index], runs_of(index, hp, legacy, numpy_scalars)) for hp in ("12", "200")}
        if legacy:  # v1.0's 12-epoch results: cifar10-valid only
            less = out[index]["12"]
            less["all_results"] = {k: v for k, v in less["all_results"].items() if k[0] == "cifar10-valid"}
            less["dataset_seed"] = {"cifar10-valid": less["dataset_seed"]["cifar10-valid"]}
    return out


def legacy_pth(path):
    """v1.0's shape, pickled as its writers did: numpy scalars named numpy.core.multiarray (numpy 1) in
    torch's legacy (non-zip) format."""
    data = {"meta_archs": META, "total_archs": len(META), "evaluated_indexes": sorted(EVALUATED),
            "arch2infos": {i: {"less": e["12"], "full": e["200"]} for i, e in infos(legacy=True, numpy_scalars=True).items()}}
    buffer = io.BytesIO()
    torch.save(data, buffer, _use_new_zipfile_serialization=False)
    raw = buffer.getvalue().replace(b"cnumpy._core.multiarray\nscalar\n", b"cnumpy.core.multiarray\nscalar\n")
    assert b"cnumpy.core.multiarray\nscalar\n" in raw
    path.write_bytes(raw)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench")
    write_pth(root / "NAS-Bench-201-v1_1.pth", META, infos())
    legacy_pth(root / "NAS-Bench-201-v1_0.pth")
    write_nats_file(root / "NATS-tss-v1_0-3ffb9.pickle.pbz2", META, infos(numpy_scalars=True))
    write_nats_dir(root / "NATS-tss-v1_0-3ffb9-simple", META, infos(numpy_scalars=True))
    return root


def official(path):
    if path.suffix == ".pth":
        import os
        os.environ["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"] = "1"  # the API's torch.load predates weights_only
        try:
            return nas_201_api.NASBench201API(str(path), verbose=False), "nb201"
        finally:
            del os.environ["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"]
    return nats_bench.create(str(path), "tss", fast_mode=path.is_dir(), verbose=False), "nats"


KEYS = ("train-loss", "train-accuracy", "valid-loss", "valid-accuracy", "test-loss", "test-accuracy", "valtest-loss",
        "valtest-accuracy")


@pytest.mark.parametrize("name", ["NAS-Bench-201-v1_1.pth", "NAS-Bench-201-v1_0.pth", "NATS-tss-v1_0-3ffb9.pickle.pbz2",
                                  "NATS-tss-v1_0-3ffb9-simple"])
def test_dartsnas_and_the_official_api_give_the_same_answers_for_every_cell(files, name):
    path = files / name
    api, kind = official(path)
    bench = Benchmark201(path)
    assert len(bench) == 15625 and bench.meta_archs == META
    for index in EVALUATED:
        arch = META[index]
        assert api.query_index_by_arch(arch) == bench.index_of(arch) == index == bench.index_of(str(index))
        assert api.arch(index) == bench.meta_archs[index]
        for hp in ("12", "200"):
            datasets = ["cifar10-valid"] if (hp == "12" and "v1_0" in name) else list(DATASETS)
            for dataset in datasets:
                for iepoch in (None, 0):
                    theirs = api.get_more_info(index, dataset, iepoch=iepoch, hp=hp, is_random=False)
                    ours = bench.query(arch if iepoch is None else index, dataset, hp, iepoch)
                    assert {k: ours[k] for k in KEYS if k in ours} == pytest.approx(
                        {k: float(theirs[k]) for k in KEYS if k in theirs}, rel=1e-12), (index, hp, dataset, iepoch)
                cost = api.get_cost_info(index, dataset, hp=hp)
                assert ours["flops"] == pytest.approx(cost["flops"]) and ours["params"] == pytest.approx(cost["params"])
                assert ours["latency"] == pytest.approx(cost["latency"])


def test_the_query_command_prints_json_and_takes_the_file_first_or_second(files, capsys):
    path = files / "NAS-Bench-201-v1_1.pth"
    assert main(["bench201", "query", str(path), META[9], "--dataset", "cifar100", "--epochs", "12"]) == 0
    first = json.loads(capsys.readouterr().out)
    assert (first["index"], first["dataset"], first["hp"]) == (9, "cifar100", "12")
    assert {"valid-accuracy", "test-accuracy", "valtest-accuracy", "flops", "params", "latency"} <= set(first)
    assert main(["bench201", str(path), "query", "9", "--dataset", "cifar100", "--epochs", "12"]) == 0
    assert json.loads(capsys.readouterr().out) == first


def test_bad_files_and_queries_get_one_clear_line(files, tmp_path, capsys):
    good = (files / "NAS-Bench-201-v1_1.pth").read_bytes()
    (tmp_path / "cut.pth").write_bytes(good[: len(good) // 2])
    (tmp_path / "cut.pickle.pbz2").write_bytes((files / "NATS-tss-v1_0-3ffb9.pickle.pbz2").read_bytes()[:500])
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pth")
    (tmp_path / "empty").mkdir()
    marker = tmp_path / "ran"
    evil = pickle.dumps({"meta_archs": [], "x": type("E", (), {"__reduce__": lambda s: (exec, (
        f"open({str(marker)!r}, 'w')",))})()}, protocol=4)
    (tmp_path / "evil.pickle.pbz2").write_bytes(bz2.compress(evil))
    cases = {"missing.pth": "no such benchmark file", "cut.pth": "unreadable as a NAS-Bench-201 file",
             "cut.pickle.pbz2": "truncated", "other.pth": "no meta_archs", "empty": "without meta.pickle.pbz2",
             "evil.pickle.pbz2": "holds a builtins.exec object"}
    for name, message in cases.items():
        with pytest.raises(BenchmarkError, match=message):
            Benchmark201(tmp_path / name)
        assert main(["bench201", "query", str(tmp_path / name), "0"]) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err, err
    assert not marker.exists()  # nothing in the file ran
    bench = Benchmark201(files / "NAS-Bench-201-v1_1.pth")
    for args, message in [((1,), "was not evaluated"), ((99999,), "out of range"), (("|conv~0|",), "unknown op"),
                          ((9, "svhn"), "no svhn results"), ((9, "cifar10", "90"), "no 90-epoch results"),
                          ((9, "cifar10", "200", 7), "epoch 7 out of range")]:
        with pytest.raises(Exception, match=message):
            bench.query(*args)


BUILD = ["bench201", "build", "--dataset", "digits", "--epochs", "1", "--init-channels", "4", "--layers", "1",
         "--batch-size", "64", "--quiet"]
NUMBERS = ("train-loss", "train-accuracy", "valid-loss", "valid-accuracy", "test-loss", "test-accuracy",
           "valtest-loss", "valtest-accuracy", "flops", "params")


@pytest.mark.slow
def test_a_build_trains_each_cell_once_resumes_with_more_and_the_official_api_reads_it(tmp_path, capsys):
    out = tmp_path / "digits.pickle.pbz2"
    assert main([*BUILD, "--cells", "1", "--out", str(out)]) == 0
    first = Benchmark201(out).evaluated()
    assert len(first) == 1
    done = next((tmp_path / "digits.pickle.pbz2.runs" / "runs").glob("*.done.json"))
    stamp = done.stat().st_mtime_ns
    assert main([*BUILD, "--cells", "1", "--include", "all-skip", "--resume", "--out", str(out)]) == 0
    assert done.stat().st_mtime_ns == stamp  # the finished job was skipped, not run again
    bench = Benchmark201(out)
    skip = bench.index_of("all-skip")
    assert bench.evaluated() == sorted([*first, skip])
    ours = bench.query("all-skip", "digits", "1")
    assert ours["seeds"] == [777] and 0 < ours["test-accuracy"] <= 100 and ours["flops"] > 0
    api = nats_bench.create(str(out), "tss", fast_mode=False, verbose=False)
    theirs = api.get_more_info(skip, "digits", hp="1", is_random=False)
    cost = api.get_cost_info(skip, "digits", hp="1")
    expected = {**{k: theirs[k] for k in NUMBERS[:8]}, "flops": cost["flops"], "params": cost["params"]}
    assert {k: ours[k] for k in NUMBERS} == pytest.approx(expected, rel=1e-12)
    capsys.readouterr()
    assert main([*BUILD, "--out", str(tmp_path / "x.json")]) == 1
    assert "name a .pth" in capsys.readouterr().err
    assert main([*BUILD, "--cells", "1", "--epochs", "2", "--resume", "--out", str(out)]) == 1
    assert "built with other settings (epochs)" in capsys.readouterr().err


@pytest.mark.slow
def test_a_build_gives_the_same_numbers_in_one_process_or_two(tmp_path):
    files = {}
    for devices in (["cpu"], ["cpu", "cpu"]):
        out = tmp_path / f"{len(devices)}.pickle.pbz2"
        assert main([*BUILD, "--cells", "2", "--seeds", "1", "2", "--devices", *devices, "--out", str(out)]) == 0
        files[len(devices)] = Benchmark201(out)
    cells = files[1].evaluated()
    assert len(cells) == 2 and files[2].evaluated() == cells
    for index in cells:
        one, two = (files[n].query(index, "digits", "1") for n in (1, 2))
        assert {k: one[k] for k in NUMBERS} == {k: two[k] for k in NUMBERS}
