"""Your own images end to end through the command line: search, train, export, predict.

Real images (the bundled digits as PNG class folders); the exported files are checked against the
PyTorch network on those images by onnxruntime and by TorchScript in a process without dartsnas.
"""
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from dartsnas.cli import main
from dartsnas.errors import CheckpointError, ConfigError
from dartsnas.export import export_model, load_trained, read_image

TINY = ["--init-channels", "4", "--layers", "3", "--batch-size", "32", "--epochs", "1", "--steps-per-epoch", "2",
        "--quiet"]


@pytest.fixture(scope="module")
def trained(digits_folder, tmp_path_factory):
    """search cnn -> train cnn on the digits folders, through the CLI."""
    root = tmp_path_factory.mktemp("e2e")
    data = ["--dataset", "imagefolder", "--data-dir", str(digits_folder)]
    assert main(["search", "cnn", *data, *TINY, "--out", str(root / "search")]) == 0
    assert main(["train", "cnn", "--genotype", str(root / "search"), *data, *TINY, "--out", str(root / "train")]) == 0
    return root


def _val_images(digits_folder, n=12):
    return sorted((digits_folder / "val").rglob("*.png"))[:: 359 // n][:n]


def test_the_run_directories_say_how_to_read_images(trained):
    for run in ("search", "train"):
        info = json.loads((trained / run / "data.json").read_text())
        assert info["classes"] == [str(d) for d in range(10)] and info["in_channels"] == 1
        assert info["image_size"] == [8, 8] and info["resize"] is None and 0.2 < info["mean"][0] < 0.4
        assert json.loads((trained / run / "classes.json").read_text()) == info["classes"]


def test_onnx_export_runs_in_onnxruntime_with_the_pytorch_logits(trained, digits_folder, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    out = tmp_path / "digits.onnx"
    assert main(["export", str(trained / "train"), "--format", "onnx", "--out", str(out)]) == 0
    model, meta = load_trained(trained / "train")
    images = _val_images(digits_folder)
    x = torch.stack([read_image(p, meta) for p in images])
    with torch.no_grad():
        expected = model(x).numpy()
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    for batch in (x[:1], x[:5], x):  # the batch dimension is dynamic
        got = session.run(None, {"images": batch.numpy()})[0]
        np.testing.assert_allclose(got, expected[: len(batch)], rtol=0, atol=1e-4)
    stored = json.loads(session.get_modelmeta().custom_metadata_map["dartsnas"])
    assert stored["classes"] == meta["classes"] and stored["mean"] == meta["mean"]
    assert session.get_inputs()[0].shape[1:] == [1, 8, 8] and not list(tmp_path.glob("*.data"))


def test_torchscript_export_runs_without_dartsnas(trained, digits_folder, tmp_path):
    out = tmp_path / "digits.pt"
    export_model(trained / "train", "torchscript", out)
    model, meta = load_trained(trained / "train")
    x = torch.stack([read_image(p, meta) for p in _val_images(digits_folder)])
    torch.save(x, tmp_path / "x.pt")
    with torch.no_grad():
        torch.save(model(x), tmp_path / "expected.pt")
    script = f"""
import sys, json, torch
sys.modules["dartsnas"] = None  # importing dartsnas would fail here
extra = {{"dartsnas.json": ""}}
m = torch.jit.load({str(out)!r}, _extra_files=extra)
x = torch.load({str(tmp_path / 'x.pt')!r})
print(json.dumps({{"diff": (m(x) - torch.load({str(tmp_path / 'expected.pt')!r})).abs().max().item(),
                  "classes": json.loads(extra["dartsnas.json"])["classes"]}}))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["diff"] < 1e-4 and result["classes"] == meta["classes"]


def test_predict_prints_one_json_line_per_image_from_the_run_and_the_exported_files(trained, digits_folder,
                                                                                      tmp_path, capsys):
    images = [str(p) for p in _val_images(digits_folder, 3)]
    onnx = export_model(trained / "train", "onnx", tmp_path / "m.onnx")
    script = export_model(trained / "train", "torchscript", tmp_path / "m.ts")
    outputs = []
    for source in (trained / "train", onnx, script):
        capsys.readouterr()
        assert main(["predict", str(source), *images, "--top", "3"]) == 0
        lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        assert [row["file"] for row in lines] == images
        for row in lines:
            assert len(row["top"]) == 3 and row["top"][0]["class"] in [str(d) for d in range(10)]
            probs = [c["prob"] for c in row["top"]]
            assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1.0001
        outputs.append(lines)
    for other in outputs[1:]:
        for a, b in zip(outputs[0], other):
            assert [c["class"] for c in a["top"]] == [c["class"] for c in b["top"]]
            assert all(abs(x["prob"] - y["prob"]) < 1e-4 for x, y in zip(a["top"], b["top"]))
    assert main(["predict", str(trained / "train"), str(tmp_path / "nope.png")]) == 1
    assert "nope.png: no such image file" in capsys.readouterr().err


def test_export_refuses_what_it_cannot_export(trained, tmp_path):
    with pytest.raises(CheckpointError, match="not a trained conv network"):
        export_model(trained / "search", "onnx", tmp_path / "x.onnx")
    with pytest.raises(ConfigError, match="--format must be one of onnx, torchscript"):
        export_model(trained / "train", "tflite", tmp_path / "x.tflite")
    assert not list(tmp_path.iterdir())


def test_export_onto_a_directory_or_under_a_file_is_one_line_before_any_work(trained, tmp_path, capsys):
    (tmp_path / "taken").mkdir()
    assert main(["export", str(trained / "train"), "--format", "torchscript", "--out", str(tmp_path / "taken")]) == 1
    err = capsys.readouterr().err
    assert err.strip() == f"dartsnas: error: --out {tmp_path / 'taken'} is a directory; give a file name"
    (tmp_path / "file").write_text("x")
    assert main(["export", str(trained / "train"), "--format", "torchscript",
                 "--out", str(tmp_path / "file" / "m.pt")]) == 1
    err = capsys.readouterr().err
    assert "its directory" in err and "exists and is not a directory" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "taken"] and not list((tmp_path / "taken").iterdir())
