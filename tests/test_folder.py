import json
import random

import numpy as np
import pytest
import torch
from PIL import Image

from dartsnas.cli import main
from dartsnas.data.folder import (FolderLoader, color_jitter, folder_datasets, random_resized_crop_box)
from dartsnas.errors import DataError
from dartsnas.train.checkpoint import read_metrics


@pytest.fixture
def image_root(tmp_path):
    """train/ and val/ with 3 classes of generated JPEGs of assorted sizes (colour = class)."""
    rng = np.random.default_rng(0)
    colours = {"n01440764": (200, 30, 30), "n01443537": (30, 200, 30), "n01484850": (30, 30, 200)}
    for split, count in (("train", 6), ("val", 2)):
        for wnid, colour in colours.items():
            (tmp_path / split / wnid).mkdir(parents=True)
            for i in range(count):
                h, w = int(rng.integers(40, 90)), int(rng.integers(40, 90))
                pixels = np.clip(np.array(colour) + rng.normal(0, 20, (h, w, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(tmp_path / split / wnid / f"img_{i}.JPEG", quality=90)
    return tmp_path


def test_datasets_decode_and_crop_to_the_requested_size(image_root):
    train, test, classes = folder_datasets(image_root, image_size=32)
    assert classes == ["n01440764", "n01443537", "n01484850"]
    assert (len(train), len(test)) == (18, 6)
    x, y = train[0]
    assert x.shape == (3, 32, 32) and x.dtype == torch.uint8 and y == 0
    a, b = test[5], test[5]
    assert torch.equal(a[0], b[0]) and a[1] == 2  # evaluation transform is deterministic
    red = test[0][0].float().mean((1, 2))
    assert red[0] > red[1] and red[0] > red[2]


def test_random_resized_crop_boxes_stay_inside_with_bounded_area():
    rng = random.Random(0)
    for _ in range(500):
        W, H = rng.randint(10, 300), rng.randint(10, 300)
        left, top, w, h = random_resized_crop_box(W, H, rng)
        assert 0 <= left and 0 <= top and left + w <= W and top + h <= H and w > 0 and h > 0


def test_color_jitter_changes_colours_but_not_size():
    img = Image.fromarray(np.full((8, 8, 3), 120, np.uint8))
    out = color_jitter(img, random.Random(3))
    assert out.size == (8, 8) and not np.array_equal(np.asarray(out), np.asarray(img))


def test_loader_normalises_on_device_and_resumes_its_order(image_root):
    train, _, _ = folder_datasets(image_root, image_size=16)
    loader = FolderLoader(train, batch_size=4, shuffle=True, drop_last=True, workers=0, seed=1)
    state = loader.state_dict()
    first = [y for _, y in loader]
    assert len(first) == 4 and loader.dataset.epoch == 1
    x, _ = next(iter(loader))
    assert x.dtype == torch.float32 and x.shape == (4, 3, 16, 16) and x.min() < 0
    loader.load_state_dict(state)
    assert all(torch.equal(a, b) for a, b in zip(first, (y for _, y in loader)))


def test_train_and_eval_on_an_imagenet_folder_with_worker_processes(image_root, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "cnn", "--dataset", "imagenet", "--data-dir", str(image_root), "--image-size", "64",
                 "--init-channels", "8", "--layers", "3", "--batch-size", "6", "--epochs", "1", "--workers", "2",
                 "--quiet", "--out", str(out)]) == 0
    (record,) = read_metrics(out / "metrics.jsonl")
    assert record["steps"] == 3 and 0 <= record["test_top1"] <= 1
    capsys.readouterr()
    assert main(["eval", str(out)]) == 0
    assert json.loads(capsys.readouterr().out)["top5"] == 1.0  # 3 classes: the true one is always in the top 5


def test_folder_errors_name_the_problem(image_root, tmp_path):
    with pytest.raises(DataError, match="not found"):
        folder_datasets(tmp_path / "nothing")
    (image_root / "val" / "n09999999").mkdir()
    with pytest.raises(DataError, match="n09999999 not in the training split"):
        folder_datasets(image_root)
    (image_root / "val" / "n09999999").rmdir()
    bad = image_root / "train" / "n01440764" / "img_0.JPEG"
    bad.write_bytes(b"not a jpeg")
    train, _, _ = folder_datasets(image_root)
    with pytest.raises(DataError, match="img_0.JPEG: cannot decode image"):
        train[0]


def test_sample_per_class_is_disjoint_seeded_and_takes_each_class_share():
    from dartsnas.data.splits import sample_per_class
    from dartsnas.errors import ConfigError
    labels = torch.arange(4).repeat_interleave(40)  # 4 classes of 40
    w, a = sample_per_class(labels, (0.1, 0.025), seed=3)
    assert len(w) == 16 and len(a) == 4 and not set(w.tolist()) & set(a.tolist())
    assert torch.bincount(labels[w]).tolist() == [4] * 4 and torch.bincount(labels[a]).tolist() == [1] * 4
    again = sample_per_class(labels, (0.1, 0.025), seed=3)
    assert torch.equal(again[0], w) and not torch.equal(sample_per_class(labels, (0.1, 0.025), seed=4)[0], w)
    with pytest.raises(ConfigError, match="sample takes 0.8 \\+ 0.3 of every class"):
        sample_per_class(labels, (0.8, 0.3), seed=0)


def test_folder_batches_resume_mid_pass_with_the_same_crops(image_root):
    from dartsnas.data.folder import FolderBatches, ImageFolderDataset, list_images
    samples, _ = list_images(image_root / "train")
    make = lambda: FolderBatches(ImageFolderDataset(samples, train=True, image_size=16, jitter=False, seed=1),  # noqa: E731
                                 torch.arange(0, 18, 2), batch_size=2, seed=5, workers=0)
    loader = make()
    batches = [loader.next_batch() for _ in range(3)]
    state = loader.state_dict()
    rest = [loader.next_batch() for _ in range(4)]  # crosses into the second pass: new crops
    assert loader.passes == 2
    other = make()
    other.load_state_dict(state)
    for (x, y), (x2, y2) in zip(rest, (other.next_batch() for _ in range(4))):
        assert torch.equal(x, x2) and torch.equal(y, y2)
    assert batches[0][0].shape == (2, 3, 16, 16) and batches[0][0].dtype == torch.float32
    assert set(torch.cat([y for _, y in batches]).tolist()) <= {0, 1, 2}


def test_imagenet_search_takes_pc_darts_recipe_and_resumes_bit_identical(image_root, tmp_path):
    from dartsnas.train.checkpoint import load_checkpoint
    from dartsnas.train.search_config import search_recipe
    pc = search_recipe("imagenet")
    assert (pc.stem, pc.partial_channels, pc.batch_size, pc.lr, pc.arch_lr, pc.arch_start_epoch, pc.warmup_epochs,
            tuple(pc.sample)) == ("imagenet", 2, 1024, 0.5, 6e-3, 35, 5, (0.1, 0.025))
    flags = ["search", "cnn", "--dataset", "imagenet", "--data-dir", str(image_root), "--image-size", "32",
             "--init-channels", "4", "--layers", "3", "--nodes", "2", "--batch-size", "2", "--epochs", "2",
             "--arch-start-epoch", "0", "--sample", "0.34", "0.34", "--workers", "1", "--quiet"]
    assert main([*flags, "--out", str(tmp_path / "a")]) == 0
    config = json.loads((tmp_path / "a" / "config.json").read_text())
    assert (config["stem"], config["partial_channels"], config["lr_min"], config["arch_grad_clip"],
            config["recipe"]) == ("imagenet", 2, 0.0, 5.0, "pcdarts-imagenet")
    records = read_metrics(tmp_path / "a" / "metrics.jsonl")
    assert [r["steps"] for r in records] == [3, 3]  # 3 classes x 2 images train w, in batches of 2
    # batch 2: no warm-up (the script warms up only above batch 256), the cosine from 0.5 to 0
    assert config["warmup_epochs"] == 0 and [r["lr"] for r in records] == pytest.approx([0.5, 0.25])
    assert (tmp_path / "a" / "genotype.json").is_file()
    # cut after the first epoch, resumed: the same α, weights and metrics
    assert main([*flags, "--epochs", "1", "--out", str(tmp_path / "b")]) == 0
    assert main([*flags, "--out", str(tmp_path / "b"), "--resume"]) == 0
    a, b = load_checkpoint(tmp_path / "a"), load_checkpoint(tmp_path / "b")
    for name, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][name]), name
    strip = lambda rs: [{k: v for k, v in r.items() if k not in ("seconds", "images_per_s")} for r in rs]  # noqa: E731
    assert strip(records) == strip(read_metrics(tmp_path / "b" / "metrics.jsonl"))


def test_an_undecodable_image_in_an_imagenet_search_leaves_nothing_and_keeps_the_overwritten_run(image_root, tmp_path,
                                                                                                 capsys):
    """The folders are decoded per batch, so a bad file shows at the first batch: by then nothing is
    written yet, and an --overwrite has not removed the run it was to replace."""
    flags = ["search", "cnn", "--dataset", "imagenet", "--data-dir", str(image_root), "--image-size", "48",
             "--init-channels", "4", "--layers", "3", "--nodes", "2", "--batch-size", "2", "--epochs", "1",
             "--arch-start-epoch", "0", "--sample", "0.5", "0.5", "--workers", "0", "--quiet"]
    kept = tmp_path / "kept"
    assert main([*flags, "--out", str(kept)]) == 0
    before = {p.name: p.read_bytes() for p in kept.iterdir()}
    for path in (image_root / "train").rglob("*.JPEG"):
        path.write_bytes(b"not an image")
    capsys.readouterr()
    assert main([*flags, "--out", str(tmp_path / "fresh")]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1 and "not an image" not in err, err
    assert not (tmp_path / "fresh").exists()
    assert main([*flags, "--overwrite", "--out", str(kept)]) == 1
    assert {p.name: p.read_bytes() for p in kept.iterdir()} == before
