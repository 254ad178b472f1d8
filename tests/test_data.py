import hashlib
import os
import pickle

import numpy as np
import pytest
import torch

from dartsnas.data import BatchLoader, load_dataset
from dartsnas.data import cifar
from dartsnas.data.augment import cutout, normalize, random_crop, random_flip
from dartsnas.errors import DataError
from conftest import write_cifar_batch


def test_generated_batches_fail_the_official_md5(cifar_dir):
    with pytest.raises(DataError, match=r"data_batch_1: md5 [0-9a-f]{32} does not match the official c99cafc1"):
        cifar.load_cifar10(cifar_dir, "train")


def test_md5_verified_load_of_a_partial_directory(cifar_dir, monkeypatch):
    folder = cifar_dir / "cifar-10-batches-py"
    sums = {n: hashlib.md5((folder / n).read_bytes()).hexdigest() for n in os.listdir(folder)}
    monkeypatch.setattr(cifar, "MD5", {**cifar.MD5, **sums})
    ds = load_dataset("cifar10", "train", data_dir=cifar_dir)
    assert ds.images.shape == (24, 3, 32, 32) and ds.images.dtype == torch.uint8
    assert "data_batch_1, data_batch_2 (2 of 5 train batches)" in ds.description
    # channel-major rows of 3072 bytes become [3, 32, 32] images
    with open(folder / "data_batch_2", "rb") as f:
        raw = pickle.load(f, encoding="bytes")
    assert torch.equal(ds.images[12], torch.from_numpy(raw[b"data"][0].reshape(3, 32, 32)))
    assert ds.labels[12:].tolist() == raw[b"labels"]
    test = load_dataset("cifar10", "test", data_dir=folder)  # the batches folder itself also works
    assert len(test) == 8


def test_truncated_batch_is_reported(cifar_dir):
    path = cifar_dir / "cifar-10-batches-py" / "data_batch_2"
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(DataError, match="data_batch_2: truncated or corrupted CIFAR-10 batch"):
        cifar.load_cifar10(cifar_dir, "train", verify=False)


def test_pickle_that_would_run_code_is_refused(cifar_dir):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))
    path = cifar_dir / "cifar-10-batches-py" / "data_batch_1"
    path.write_bytes(pickle.dumps({b"data": Evil(), b"labels": []}, protocol=2))
    with pytest.raises(DataError, match="refusing to load posix.system|refusing to load os.system"):
        cifar.load_cifar10(cifar_dir, "train", verify=False)


def test_wrong_shapes_and_missing_data(cifar_dir, tmp_path):
    folder = cifar_dir / "cifar-10-batches-py"
    write_cifar_batch(folder / "data_batch_1", np.zeros((4, 3, 32, 32)), [0, 1, 2])
    with pytest.raises(DataError, match="3 labels for 4 images"):
        cifar.load_cifar10(cifar_dir, "train", verify=False)
    with pytest.raises(DataError, match="CIFAR-10 not found in .*--download"):
        cifar.load_cifar10(tmp_path / "nothing", "train")
    (folder / "test_batch").unlink()
    with pytest.raises(DataError, match="no CIFAR-10 test batch"):
        cifar.load_cifar10(cifar_dir, "test", verify=False)


def test_digits_is_bundled_real_data():
    train, test = load_dataset("digits", "train"), load_dataset("digits", "test")
    assert (len(train), len(test)) == (1438, 359)
    assert train.images.shape[1:] == (1, 8, 8) and not train.flip
    assert sorted(train.labels.unique().tolist()) == list(range(10))
    assert int(train.images.max()) == 255


def test_random_crop_returns_windows_of_the_zero_padded_image():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(1, 256, (16, 2, 6, 6), dtype=torch.uint8)
    out = random_crop(x, 2, g)
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for b in range(16):
        windows = [padded[b, :, i:i + 6, j:j + 6] for i in range(5) for j in range(5)]
        assert any(torch.equal(out[b], w) for w in windows)
    assert (out == 0).any()  # some crops reach into the padding


def test_flip_and_cutout():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(32, 3, 8, 8)
    out = random_flip(x, g)
    flipped = [torch.equal(o, i.flip(-1)) for o, i in zip(out, x)]
    assert all(torch.equal(o, i) or f for o, i, f in zip(out, x, flipped))
    assert 0 < sum(flipped) < 32
    ones = torch.ones(64, 3, 32, 32)
    cut = cutout(ones, 16, torch.Generator().manual_seed(1))
    for img in cut:
        zero = img[0] == 0
        rows, cols = zero.any(1).nonzero().flatten(), zero.any(0).nonzero().flatten()
        assert 0 < len(rows) <= 16 and 0 < len(cols) <= 16
        assert zero.sum() == len(rows) * len(cols)  # one axis-aligned rectangle, clipped at the border
        assert torch.equal(zero, img[2] == 0)       # same square on every channel
    assert any(int((img[0] == 0).sum()) == 256 for img in cut)
    assert any(int((img[0] == 0).sum()) < 256 for img in cut)


def test_normalize():
    x = torch.tensor([0, 255], dtype=torch.uint8).view(1, 1, 1, 2)
    torch.testing.assert_close(normalize(x, (0.5,), (0.25,)), torch.tensor([[[[-2.0, 2.0]]]]))


def test_loader_covers_the_subset_once_per_pass_and_resumes_mid_pass():
    ds = load_dataset("digits", "test")
    idx = torch.arange(0, 100)
    loader = BatchLoader(ds, idx, batch_size=32, seed=3, augment=False, shuffle=True)
    labels = torch.cat([y for _, y in loader])
    assert len(loader) == 4 and sorted(labels.tolist()) == sorted(ds.labels[:100].tolist())
    loader.next_batch()  # mid-pass: the state below is not at an epoch boundary
    state = loader.state_dict()
    expected = [loader.next_batch() for _ in range(5)]
    other = BatchLoader(ds, idx, batch_size=32, seed=99, augment=False)
    other.load_state_dict(state)
    for (xa, ya), (xb, yb) in zip(expected, (other.next_batch() for _ in range(5))):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    dropped = BatchLoader(ds, idx, batch_size=32, drop_last=True)
    assert len(dropped) == 3 and sum(len(y) for _, y in dropped) == 96


def _archive(tmp_path, cifar_dir):
    import tarfile
    folder = cifar_dir / "cifar-10-batches-py"
    for name in ("data_batch_3", "data_batch_4", "data_batch_5"):
        write_cifar_batch(folder / name, np.zeros((2, 3, 32, 32)), [1, 2])
    path = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        tar.add(folder, arcname="cifar-10-batches-py")
    return path


def test_download_fetches_checks_and_unpacks_the_archive(tmp_path, cifar_dir, monkeypatch):
    archive = _archive(tmp_path, cifar_dir)
    monkeypatch.setattr(cifar, "ARCHIVE_URL", archive.as_uri())
    monkeypatch.setattr(cifar, "ARCHIVE_MD5", hashlib.md5(archive.read_bytes()).hexdigest())
    root = tmp_path / "fresh"
    ds = cifar.load_cifar10(root, "train", download=True, verify=False)
    assert len(ds) == 12 + 12 + 3 * 2 and "5 of 5" in ds.description
    assert not [p for p in root.iterdir() if p.name != "cifar-10-batches-py"]  # no leftovers


def test_download_with_a_bad_checksum_keeps_nothing(tmp_path, cifar_dir, monkeypatch):
    archive = _archive(tmp_path, cifar_dir)
    monkeypatch.setattr(cifar, "ARCHIVE_URL", archive.as_uri())
    root = tmp_path / "fresh"
    with pytest.raises(DataError, match="downloaded archive has md5 .* expected c58f3010"):
        cifar.load_cifar10(root, "train", download=True)
    assert list(root.iterdir()) == []
