import os
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from dartsnas.data.bundled import write_digits_folder
from dartsnas.spaces import ConvSearchSpaceConfig, SearchNetwork

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

if os.environ.get("PYTEST_XDIST_WORKER"):
    # Tests run in parallel processes (pytest -n N): one thread each, and so for the processes they
    # start, so that N processes share the cores instead of fighting over them.
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)


class SmoothMaxPool(nn.Module):
    """Log-sum-exp pooling: a smooth stand-in for max pooling (same window, stride, padding)."""

    def __init__(self, pool: nn.MaxPool2d, temperature: float = 4.0) -> None:
        super().__init__()
        self.k, self.s, self.p, self.t = pool.kernel_size, pool.stride, pool.padding, temperature

    def forward(self, x):
        # exp(t*x) averaged over the window, padding excluded, then back through log / t
        e = torch.exp(self.t * x)
        avg = nn.functional.avg_pool2d(e, self.k, self.s, self.p, count_include_pad=False)
        return torch.log(avg) / self.t


def make_smooth(module: nn.Module) -> nn.Module:
    """Swap ReLU for softplus and max pooling for log-sum-exp pooling, in place.

    Both are piecewise: a finite difference that crosses a kink is not a derivative, so the
    second-order approximation can only converge to the exact hypergradient on a smooth network.
    """
    for name, child in module.named_children():
        if isinstance(child, nn.ReLU):
            setattr(module, name, nn.Softplus(beta=4.0))
        elif isinstance(child, nn.MaxPool2d):
            setattr(module, name, SmoothMaxPool(child))
        else:
            make_smooth(child)
    return module


@pytest.fixture
def tiny_net():
    def make(dtype=torch.float32, seed=0, **kw):
        torch.manual_seed(seed)
        cfg = ConvSearchSpaceConfig(**{"init_channels": 4, "layers": 3, "num_classes": 5, **kw})
        return SearchNetwork(cfg).to(dtype)
    return make


def stepped_search_net(tiny_net, smooth: bool = False, nesterov: bool = False, step: bool = True):
    """A float64 tiny search network with random α after one real w step (SGD has momentum buffers;
    none with ``step`` False), its optimizer and a (train, val) batch pair: the setting of the
    hypergradient tests."""
    net = tiny_net(dtype=torch.float64)
    if smooth:
        make_smooth(net)
    with torch.no_grad():
        for a in net.arch_parameters():
            a.normal_(0, 0.5)
    opt = torch.optim.SGD(net.weight_parameters(), lr=0.1, momentum=0.9, weight_decay=3e-4, nesterov=nesterov)
    g = torch.Generator().manual_seed(1)
    train = (torch.randn(8, 3, 8, 8, generator=g, dtype=torch.float64), torch.randint(0, 5, (8,), generator=g))
    val = (torch.randn(8, 3, 8, 8, generator=g, dtype=torch.float64), torch.randint(0, 5, (8,), generator=g))
    if step:
        net.loss(*train).backward()
        opt.step()
        opt.zero_grad()
    return net, opt, train, val


def write_cifar_batch(path: Path, images: np.ndarray, labels: list[int], protocol: int = 2) -> None:
    """A batch file in the original format: a pickled dict of bytes keys, data uint8 [N, 3072]."""
    record = {b"batch_label": b"generated batch", b"labels": [int(v) for v in labels],
              b"data": images.reshape(len(images), -1).astype(np.uint8),
              b"filenames": [f"img_{i}.png".encode() for i in range(len(images))]}
    with open(path, "wb") as f:
        pickle.dump(record, f, protocol=protocol)


@pytest.fixture
def cifar_dir(tmp_path):
    """A tiny cifar-10-batches-py folder: 2 training batches of 12 images and a test batch of 8."""
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name, n in (("data_batch_1", 12), ("data_batch_2", 12), ("test_batch", 8)):
        write_cifar_batch(folder / name, rng.integers(0, 256, (n, 3, 32, 32)), list(rng.integers(0, 10, n)))
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog",
                                      b"frog", b"horse", b"ship", b"truck"],
                     b"num_cases_per_batch": 10000, b"num_vis": 3072}, f, protocol=2)
    return tmp_path


def count_host_reads(monkeypatch) -> list[int]:
    """From now until ``monkeypatch.undo()``, count the tensor reads that on a GPU make the host wait
    for the device (.item(), .tolist(), bool(), float(), int()). torch.optim's step counters and the
    BPTT window-length generator live on the CPU on every device, so their reads are not counted."""
    reads = [0]

    def counted(name):
        original = getattr(torch.Tensor, name)

        def read(*args, **kwargs):
            caller = sys._getframe(1)
            if not (caller.f_globals["__name__"].startswith("torch.optim") or caller.f_code.co_name == "window_length"):
                reads[0] += 1
            return original(*args, **kwargs)
        return read
    for name in ("item", "tolist", "__bool__", "__float__", "__int__"):
        monkeypatch.setattr(torch.Tensor, name, counted(name))
    return reads


@pytest.fixture(scope="session")
def digits_folder(tmp_path_factory):
    """The bundled digits written once per session as PNG class folders."""
    return write_digits_folder(tmp_path_factory.mktemp("digits_png"))
