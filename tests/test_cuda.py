"""The GPU path: bf16 autocast, CUDA against CPU, on-device augmentation, no host reads, checkpoints across
devices, compiled training. Marked ``cuda``: ``python -m pytest -m cuda`` runs them; without CUDA they skip."""
import copy
import dataclasses
import signal

import pytest
import torch

from dartsnas.architect import Architect
from dartsnas.data.augment import cutout, random_crop, random_flip
from conftest import count_host_reads

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
pytestmark = pytest.mark.cuda

CUDA = torch.device("cuda")


def _cos(a, b):
    a = torch.cat([t.flatten().double() for t in a])
    b = torch.cat([t.flatten().double() for t in b])
    return float(a @ b / (a.norm() * b.norm()))


def _batch(n, seed, dtype=torch.float32, device="cpu", size=8, classes=5):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, 3, size, size, generator=g, dtype=dtype).to(device),
            torch.randint(0, classes, (n,), generator=g).to(device))


def _net_and_optimizer(tiny_net, dtype, device, **kw):
    net = tiny_net(dtype=dtype, **kw).to(device)
    with torch.no_grad():
        for a in net.arch_parameters():
            a.copy_(torch.linspace(-0.5, 0.5, a.numel(), dtype=dtype).view_as(a))
    opt = torch.optim.SGD(net.weight_parameters(), lr=0.1, momentum=0.9, weight_decay=3e-4)
    return net, opt


@needs_cuda
def test_bf16_autocast_alpha_gradients_agree_with_float32_and_alpha_stays_float32(tiny_net):
    from dartsnas.train.common import autocast
    net, opt = _net_and_optimizer(tiny_net, torch.float32, CUDA, init_channels=8, layers=5)
    train, val = _batch(32, 0, device=CUDA, size=16), _batch(32, 1, device=CUDA, size=16)
    for order in ("first", "second"):
        reference = Architect(net, opt, order=order, grad_clip=5.0).alpha_grad(train, val, 0.025)
        with autocast(CUDA, True):
            mixed = Architect(net, opt, order=order, grad_clip=5.0).alpha_grad(train, val, 0.025)
        assert all(g.dtype == torch.float32 for g in mixed) and all(a.dtype == torch.float32 for a in net.arch_parameters())
        assert _cos(mixed, reference) > 0.99, order


@pytest.mark.parametrize("order", ["first", "second", "exact"])
@needs_cuda
def test_every_order_on_cuda_is_the_cpu_result_in_float64(tiny_net, order):
    grads = {}
    for device in ("cpu", CUDA):
        net, opt = _net_and_optimizer(tiny_net, torch.float64, device)
        train, val = _batch(8, 0, torch.float64, device), _batch(8, 1, torch.float64, device)
        net.loss(*train).backward()
        opt.step()
        opt.zero_grad()
        grads[str(device)] = [g.cpu() for g in Architect(net, opt, order=order, grad_clip=1.0).alpha_grad(train, val, 0.1)]
    for a, b in zip(grads["cpu"], grads["cuda"]):
        torch.testing.assert_close(b, a, rtol=1e-7, atol=1e-10)


@needs_cuda
def test_device_augmentation_is_its_cpu_definition_on_the_same_draws():
    images = torch.randint(0, 256, (16, 3, 12, 12), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    out = {}
    for device in ("cpu", CUDA):
        g = torch.Generator().manual_seed(7)
        x = random_flip(random_crop(images.to(device), 2, g), g)
        out[str(device)] = cutout(x.float(), 4, g).cpu()
    assert torch.equal(out["cpu"], out["cuda"])


@pytest.mark.parametrize("order", ["first", "second"])
@needs_cuda
def test_a_cuda_search_step_reads_nothing_back_to_the_host(tiny_net, monkeypatch, order):
    from dartsnas.train.bilevel import search_step
    net, opt = _net_and_optimizer(tiny_net, torch.float32, CUDA)
    arch = Architect(net, opt, order=order, grad_clip=5.0)
    train, val = _batch(8, 0, device=CUDA), _batch(8, 1, device=CUDA)
    search_step(net, arch, opt, train, val, lr=0.1, grad_clip=5.0)  # warm-up: lazy CUDA initialisation
    torch.cuda.synchronize()
    reads = count_host_reads(monkeypatch)
    search_step(net, arch, opt, train, val, lr=0.1, grad_clip=5.0)
    monkeypatch.undo()
    assert reads == [0]


@pytest.mark.parametrize("first,then", [("cuda", "cpu"), ("cpu", "cuda")])
@needs_cuda
def test_a_mid_epoch_checkpoint_resumes_on_the_other_device(tmp_path, first, then):
    from dartsnas.errors import Interrupted
    from dartsnas.train.checkpoint import load_checkpoint
    from dartsnas.train.search import Search, SearchConfig
    config = SearchConfig(dataset="digits", init_channels=4, layers=3, batch_size=16, epochs=1, steps_per_epoch=4,
                          device=first, checkpoint_every=100)
    run = Search(config, tmp_path, quiet=True)
    run.stop_signal = signal.SIGTERM  # as if preempted: checkpoint after the next step, then stop
    with pytest.raises(Interrupted):
        run.execute()
    saved = load_checkpoint(tmp_path)
    assert saved["in_epoch"]["step"] == 1 and saved["epoch"] == 0
    resumed = Search(dataclasses.replace(config, device=then), tmp_path, resume=True, quiet=True).execute()
    assert len(resumed.metrics) == 1 and resumed.metrics[0]["steps"] == 4
    assert all(torch.isfinite(torch.tensor(row)).all() for row in resumed.metrics[0]["alphas"]["normal"])


@needs_cuda
def test_compiled_training_step_equals_eager(tiny_net):
    from dartsnas.genotype import load_genotype
    from dartsnas.nets import NetworkConfig, build_network
    torch.manual_seed(0)
    eager = build_network("cifar", NetworkConfig(load_genotype("DARTS_V2"), init_channels=8, layers=5,
                                                 num_classes=5)).to(CUDA)
    compiled = copy.deepcopy(eager)
    compiled.compile_cells()
    x, y = _batch(16, 0, device=CUDA, size=16)
    results = []
    for net in (eager, compiled):
        opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
        logits, aux = net.forward_with_aux(x)
        loss = torch.nn.functional.cross_entropy(logits, y) + 0.4 * torch.nn.functional.cross_entropy(aux, y)
        loss.backward()
        opt.step()
        results.append((logits.detach(), [p.detach().clone() for p in net.parameters()]))
    torch.testing.assert_close(results[1][0], results[0][0], rtol=1e-3, atol=1e-3)
    for a, b in zip(results[0][1], results[1][1]):
        torch.testing.assert_close(b, a, rtol=1e-3, atol=1e-4)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a machine without CUDA")
def test_gpu_check_without_cuda_says_so_and_exits(tmp_path):
    import subprocess
    import sys
    from pathlib import Path
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"
    done = subprocess.run([sys.executable, str(script), "--out", str(tmp_path / "g.json")], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 2 and "no CUDA device on this machine" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "g.json").exists()


@pytest.mark.parametrize("mode", ["cell", "edge"])
@pytest.mark.parametrize("order", ["first", "second", "exact"])
@needs_cuda
def test_recomputation_on_cuda_gives_the_plain_gradients(tiny_net, mode, order):
    grads, stats = {}, {}
    for recompute in ("none", mode):
        net, opt = _net_and_optimizer(tiny_net, torch.float64, CUDA, recompute=recompute)
        train, val = _batch(8, 0, torch.float64, CUDA), _batch(8, 1, torch.float64, CUDA)
        grads[recompute] = Architect(net, opt, order=order, grad_clip=5.0).alpha_grad(train, val, 0.1)
        net.loss(*train).backward()
        stats[recompute] = {k: v.clone() for k, v in net.state_dict().items() if "running" in k}
    for a, b in zip(grads["none"], grads[mode]):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-12)
    for key, value in stats["none"].items():
        torch.testing.assert_close(value, stats[mode][key], rtol=1e-6, atol=1e-12)
