"""A user's own images: class folders, .npz arrays and torch Datasets, in memory or streamed."""
import dataclasses
import json
import shutil

import numpy as np
import pytest
import torch

import dartsnas
from dartsnas.cli import main
from dartsnas.data import BatchLoader, OwnDataOptions, load_dataset, load_splits, search_split, stratified_split
from dartsnas.data.bundled import write_digits_folder
from dartsnas.errors import ConfigError, DataError

TINY = ["--init-channels", "4", "--layers", "3", "--batch-size", "32", "--epochs", "1", "--steps-per-epoch", "2",
        "--quiet"]


def test_stratified_split_keeps_every_class_in_proportion_in_both_parts():
    labels = torch.arange(10).repeat_interleave(torch.tensor([50, 20, 30, 10, 40, 60, 2, 30, 30, 28]))
    a, b = stratified_split(labels, 0.5, seed=0)
    assert len(set(a.tolist()) & set(b.tolist())) == 0 and len(a) + len(b) == len(labels)
    counts = torch.bincount(labels)
    for part in (a, b):
        share = torch.bincount(labels[part], minlength=10) / counts
        assert torch.all((share - 0.5).abs() <= 0.5 / counts + 1e-9)  # within one image of half
    assert torch.equal(stratified_split(labels, 0.5, seed=0)[0], a)
    assert not torch.equal(stratified_split(labels, 0.5, seed=1)[0], a)


def test_image_folder_reads_classes_channels_and_statistics_from_the_data(digits_folder):
    train, test = load_splits("imagefolder", digits_folder)
    bundled = load_dataset("digits", "train")
    assert train.classes == tuple(str(d) for d in range(10)) and train.num_classes == 10
    assert train.images.shape == bundled.images.shape == (1438, 1, 8, 8) and train.images.dtype == torch.uint8
    assert len(test) == 359 and test.mean == train.mean  # the test split is normalised like the training one
    pixels = train.images.double() / 255
    assert train.mean[0] == pytest.approx(pixels.mean().item(), abs=1e-6)
    assert train.std[0] == pytest.approx(pixels.std(unbiased=False).item(), abs=1e-6)
    # the same pixels as the bundled copy, sorted by class folder
    assert torch.equal(torch.sort(train.images.flatten(1).sum(1)).values, torch.sort(bundled.images.flatten(1).sum(1)).values)
    # stratified w/α split: both halves hold every class in proportion
    a, b = search_split(train, 0.5, seed=0)
    for part in (a, b):
        share = torch.bincount(train.labels[part], minlength=10) / torch.bincount(train.labels)
        assert share.min() > 0.45 and share.max() < 0.55


def test_non_image_files_hidden_files_and_unicode_names(tmp_path):
    root = write_digits_folder(tmp_path / "d", per_class=3)
    (root / "train" / ".DS_Store").write_bytes(b"\0\0")
    (root / "train" / "3" / "Thumbs.db").write_bytes(b"x")
    (root / "train" / "3" / "notes.txt").write_text("not an image")
    (root / "train" / "3" / "._0001.png").write_bytes(b"macOS resource fork")
    shutil.copy(next((root / "train" / "3").glob("*.png")), root / "train" / "3" / "ünïcödé Ω 数字.png")
    (root / "train" / "été").mkdir()
    for p in list((root / "train" / "4").glob("*.png")):
        p.rename(root / "train" / "été" / p.name)
    (root / "train" / "4").rmdir()
    (root / "val" / "4").rename(root / "val" / "été")
    train, _ = load_splits("imagefolder", root)
    assert len(train) == 31 and "été" in train.classes
    assert (train.labels == train.classes.index("3")).sum() == 4


@pytest.mark.parametrize("case,message", [
    ("empty", "empty class folder"),
    ("single", "a single class folder"),
    ("truncated", "cannot decode image"),
    ("garbage", "not a readable image"),
    ("mixed", "images of different sizes: .* is 8x8, .* is 12x9: pass --image-size"),
    ("unknown-val-class", "class folder\\(s\\) zz not in the training split"),
])
def test_bad_folders_are_one_line_errors_naming_the_file_and_nothing_is_written(tmp_path, capsys, case, message):
    from PIL import Image
    root = write_digits_folder(tmp_path / "d", per_class=2)
    if case == "empty":
        (root / "train" / "empty").mkdir()
    elif case == "single":
        for d in list((root / "train").iterdir())[1:]:
            shutil.rmtree(d)
    elif case in ("truncated", "garbage"):
        bad = root / "train" / "5" / "bad.png"
        data = next((root / "train" / "5").glob("*.png")).read_bytes()
        bad.write_bytes(data[: len(data) // 2] if case == "truncated" else b"\x89PNG but not really")
        message = f"{bad}: {message}"
    elif case == "mixed":
        Image.new("L", (12, 9)).save(root / "train" / "2" / "big.png")
    else:
        (root / "val" / "zz").mkdir()
        shutil.copy(next((root / "val" / "1").glob("*.png")), root / "val" / "zz" / "x.png")
    out = tmp_path / "run"
    assert main(["train", "cnn", "--dataset", "imagefolder", "--data-dir", str(root), *TINY, "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("dartsnas: error: ") and err.count("\n") == 1 and "Traceback" not in err
    import re
    assert re.search(message, err), err
    assert not out.exists()


def test_skip_bad_images_reports_the_count_and_image_size_resizes_mixed_sizes(tmp_path):
    from PIL import Image
    root = write_digits_folder(tmp_path / "d", per_class=3)
    (root / "train" / "5" / "bad.png").write_bytes(b"garbage")
    data = next((root / "train" / "6").glob("*.png")).read_bytes()
    (root / "train" / "6" / "cut.png").write_bytes(data[:40])
    Image.new("RGB", (20, 12), (255, 0, 0)).save(root / "train" / "2" / "wide.png")
    with pytest.raises(DataError, match="bad.png: not a readable image"):
        load_splits("imagefolder", root, options=OwnDataOptions(image_size=8))
    train, test = load_splits("imagefolder", root, options=OwnDataOptions(image_size=8, skip_bad_images=True))
    assert "(2 unreadable files skipped)" in train.description
    assert train.images.shape == (31, 3, 8, 8)  # a colour image makes every image RGB
    wide = train.images[train.labels == 2][-1]
    assert wide[0].float().mean() > 250 and wide[1:].float().mean() < 5  # resized red, centre-cropped
    assert test.images.shape[1:] == (3, 8, 8)


def test_streamed_images_give_the_batches_held_in_memory_give_and_resume_mid_pass(digits_folder):
    memory, _ = load_splits("imagefolder", digits_folder, test=False)
    streamed, _ = load_splits("imagefolder", digits_folder, options=OwnDataOptions(memory_gb=0), test=False)
    assert memory.in_memory and not streamed.in_memory and "streamed" in streamed.description
    assert streamed.mean == memory.mean and streamed.std == memory.std
    idx, _ = search_split(memory, 0.5, 0)
    for workers in (0, 2):
        a = BatchLoader(memory, idx, batch_size=64, seed=3, cutout=2)
        b = BatchLoader(streamed, idx, batch_size=64, seed=3, cutout=2, workers=workers)
        n = 0
        for (xa, ya), (xb, yb) in zip(a, b):
            assert torch.equal(xa, xb) and torch.equal(ya, yb)
            n += 1
        assert n == len(a) == 12
        a.next_batch()
        state = a.state_dict()
        expected, _ = a.next_batch()
        c = BatchLoader(streamed, idx, batch_size=64, seed=99, cutout=2, workers=workers)
        c.load_state_dict(state)
        assert torch.equal(c.next_batch()[0], expected)


def _npz(path, **arrays):
    np.savez(path, **arrays)
    return path


def test_arrays_in_keras_layout(tmp_path):
    from sklearn.datasets import load_digits
    bunch = load_digits()
    x = np.rint(bunch.images * 255 / 16).astype(np.uint8)
    y = bunch.target.astype(np.int64)
    grey = _npz(tmp_path / "grey.npz", x_train=x[:1500], y_train=y[:1500], x_test=x[1500:], y_test=y[1500:])
    train, test = load_splits("arrays", grey)
    assert train.images.shape == (1500, 1, 8, 8) and len(test) == 297 and train.classes[-1] == "9"
    rgb = np.repeat(x[..., None], 3, axis=3)
    names = np.array(["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"])
    colour = _npz(tmp_path / "rgb.npz", x_train=rgb, y_train=y, classes=names)
    train, test = load_splits("arrays", colour)
    assert train.images.shape == (1797, 3, 8, 8) and test is None and train.classes[3] == "three"
    assert torch.equal(train.images[:, 0], train.images[:, 2])


@pytest.mark.parametrize("arrays,message", [
    (dict(x_train=np.zeros((4, 8, 8), np.uint8), y_train=np.array([0, 1, 5, 1])), "class '2' has no"),
    (dict(x_train=np.zeros((4, 8, 8), np.uint8), y_train=np.array([0, 1, -1, 1])), r"y_train\[2\] = -1 is outside 0..1"),
    (dict(x_train=np.zeros((4, 8, 8), np.uint8), y_train=np.array([0, 1, 0, 1]), x_test=np.zeros((2, 8, 8), np.uint8),
          y_test=np.array([0, 2])), r"y_test\[1\] = 2 is outside 0..1"),
    (dict(x_train=np.zeros((5, 8, 8), np.uint8), y_train=np.array([0, 1, 0, 1])), "x_train holds 5 images but y_train 4"),
    (dict(x_train=np.zeros((4, 8, 8), np.uint8), y_train=np.zeros(4, np.int64)), "a single class"),
    (dict(x_train=np.zeros((4, 8, 8), np.uint8), y_train=np.array([0.0, 1, 0, 1])), "integer labels"),
    (dict(x_train=np.full((4, 8, 8), 3.0), y_train=np.array([0, 1, 0, 1])), "uint8 0..255 or float in"),
    (dict(images=np.zeros((4, 8, 8), np.uint8)), "no 'x_train' array"),
    # a negative label is named, not taken for a missing class
    (dict(x_train=np.zeros((4, 8, 8), np.uint8), y_train=np.array([-1, 0, -1, 0])), r"y_train\[0\] = -1 is outside 0..0"),
    (dict(x_train=np.where(np.arange(256).reshape(4, 8, 8) % 50 == 7, np.nan, 0.5), y_train=np.array([0, 1, 0, 1])),
     r"x_train holds 5 NaN or infinite values \(the first in image 0\)"),
    (dict(x_train=np.zeros((4, 8, 8), np.float32), y_train=np.array([0, 1, 0, 1]),
          x_test=np.full((2, 8, 8), np.inf, np.float32), y_test=np.array([0, 1])), "x_test holds 128 NaN or infinite"),
])
def test_bad_arrays_are_clear_errors(tmp_path, arrays, message):
    path = _npz(tmp_path / "a.npz", **arrays)
    with pytest.raises(DataError, match=message):
        load_splits("arrays", path)


def test_an_unreadable_npz_is_named(tmp_path):
    bad = tmp_path / "broken.npz"
    bad.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(DataError, match="broken.npz: not a readable .npz file"):
        load_splits("arrays", bad)
    with pytest.raises(DataError, match="missing.npz: no such file"):
        load_splits("arrays", tmp_path / "missing.npz")


class Shapes(torch.utils.data.Dataset):
    """A dataset built in a few lines: bright squares vs. bright crosses, 12x12 RGB floats in [0, 1]."""

    def __init__(self, n, seed):
        g = torch.Generator().manual_seed(seed)
        self.labels = torch.randint(0, 2, (n,), generator=g)
        self.noise = torch.rand(n, 3, 12, 12, generator=g) * 0.3

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        x = self.noise[i].clone()
        if self.labels[i] == 0:
            x[:, 3:9, 3:9] += 0.6
        else:
            x[:, 5:7, :] += 0.6
            x[:, :, 5:7] += 0.6
        return x.clamp(0, 1), int(self.labels[i])


def test_python_api_searches_and_trains_on_torch_datasets(tmp_path):
    config = dartsnas.SearchConfig(init_channels=4, layers=3, batch_size=16, epochs=1, steps_per_epoch=2)
    result = dartsnas.search(config, tmp_path / "search", train_data=Shapes(64, 0), quiet=True)
    assert result.genotype.normal and json.loads((tmp_path / "search" / "classes.json").read_text()) == ["0", "1"]
    # α on a dataset of its own, both streamed from the Datasets (memory limit 0)
    logged = []
    dartsnas.search(dataclasses.replace(config, memory_gb=0, workers=0), tmp_path / "streamed",
                    train_data=Shapes(64, 0), val_data=Shapes(32, 1), log=logged.append)
    assert "train_data: 64 images 3x12x12, 2 classes, streamed" in logged[0]
    assert "val_data: 32 images" in logged[1] and "32 val images" in logged[2]
    trained = dartsnas.train_network(dartsnas.recipe("python", genotype=str(tmp_path / "search"), init_channels=4, layers=3,
                                             batch_size=16, epochs=1, steps_per_epoch=2, auxiliary_weight=0),
                             tmp_path / "train", train_data=Shapes(64, 0), test_data=Shapes(32, 1), quiet=True)
    assert trained.model_path.is_file() and "test_top1" in trained.metrics[0]
    info = json.loads((tmp_path / "train" / "data.json").read_text())
    assert info["dataset"] == "python" and info["in_channels"] == 3 and info["image_size"] == [12, 12]
    scores = dartsnas.evaluate_checkpoint(tmp_path / "train", test_data=Shapes(32, 1))
    assert scores["top1"] == pytest.approx(trained.metrics[-1]["test_top1"])
    with pytest.raises(ConfigError, match="give train_data"):
        dartsnas.search(dartsnas.SearchConfig(dataset="python"), tmp_path / "x", quiet=True)
    with pytest.raises(DataError, match="item 0 has float values outside"):
        dartsnas.search(config, tmp_path / "y", train_data=[(torch.full((1, 4, 4), 2.0), 0)] * 4, quiet=True)


def test_colour_is_decided_by_content_not_by_file_mode(tmp_path):
    """Grey digits some of which are saved as RGB stay one channel (the data line counts them); one image
    whose channels differ makes the dataset RGB."""
    from PIL import Image
    root = write_digits_folder(tmp_path / "d", per_class=3)
    resaved = sorted((root / "train").rglob("*.png"))[::4] + sorted((root / "val").rglob("*.png"))[:2]
    originals = {p: np.asarray(Image.open(p)) for p in resaved}
    for p in resaved:
        Image.open(p).convert("RGB").save(p)
        assert Image.open(p).mode == "RGB"
    train, test = load_splits("imagefolder", root)
    n_train = sum(1 for p in resaved if "train" in p.parts)
    assert train.images.shape[1] == 1 and test.images.shape[1] == 1
    assert f"({n_train} files saved in colour hold grey pixels only: read as grey)" in train.description
    assert "(2 files saved in colour" in test.description
    files = sorted((root / "train").rglob("*.png"), key=lambda p: (int(p.parent.name), p.name))
    for p in resaved[:3]:  # the same pixels as the grey originals
        assert np.array_equal(train.images[files.index(p), 0].numpy(), originals[p])
    tinted = np.stack([originals[resaved[0]]] * 3, axis=-1)
    tinted[0, 0] = (255, 0, 0)
    Image.fromarray(tinted, "RGB").save(resaved[0])
    train, _ = load_splits("imagefolder", root)
    assert train.images.shape[1] == 3 and "grey pixels only" not in train.description


def test_torch_datasets_with_negative_labels_or_non_finite_values_are_named():
    from dartsnas.data import from_torch_dataset
    images = torch.rand(4, 1, 8, 8)
    with pytest.raises(DataError, match="train_data: item 0 has label -1, outside 0..0"):
        from_torch_dataset([(images[i], [-1, 0, -1, 0][i]) for i in range(4)], OwnDataOptions())
    images[2, 0, 3, 3] = float("nan")
    with pytest.raises(DataError, match="dataset item 2: the image holds 1 NaN or infinite values"):
        from_torch_dataset([(images[i], i % 2) for i in range(4)], OwnDataOptions())


def test_named_op_sets_in_any_case_and_the_error_lists_them(capsys, tmp_path):
    from dartsnas.ops import OP_SETS
    from dartsnas.train.search import SearchConfig
    assert SearchConfig(ops=("S3",)).ops == OP_SETS["s3"] and SearchConfig(ops=("S1",)).ops == ("s1",)
    assert main(["search", "cnn", "--dataset", "digits", "--ops", "S9", "--out", str(tmp_path / "run")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("dartsnas: error: unknown op 'S9': the ops are none, ") and err.count("\n") == 1
    assert "named op set alone: darts, nb201, s1, s2, s3, s4 (any case)" in err
