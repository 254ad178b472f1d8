"""Every image size in every network: a training step with the auxiliary head, a search step, an ONNX
export with a prediction; sizes below a network's downsampling get a one-line error before training.

The networks are tiny (their shapes, not their widths, decide whether a size works) and built once per
module: a convolutional network takes any input size, so one instance serves every size.
"""
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dartsnas.architect import Architect
from dartsnas.cli import main
from dartsnas.errors import ConfigError
from dartsnas.export import Deployable, load_predictor, write_export
from dartsnas.genotype import load_genotype
from dartsnas.nets import NETWORKS, AuxiliaryHead, NetworkConfig, build_network, check_input_size
from dartsnas.spaces import ConvSearchSpaceConfig, SearchNetwork

SQUARE = [(s, s) for s in range(8, 65)]
# non-square and odd, both orientations; then a spread of larger sizes up to 512, common mobile sizes among them
OTHER = [(9, 31), (31, 9), (28, 17), (17, 28), (33, 64), (64, 45), (13, 100), (47, 47)]
LARGE = [(96, 96), (127, 127), (150, 150), (160, 160), (176, 176), (192, 192), (200, 200), (224, 224),
         (255, 300), (320, 240), (512, 512)]
SIZES = SQUARE + OTHER + LARGE
# the search network has no auxiliary head (the 150-200 px sizes broke the ImageNet head): a spread is enough
SEARCH_SIZES = SQUARE + OTHER + [(96, 96), (127, 127), (255, 300), (512, 512)]
CLASSES = 3


def _ids(sizes):
    return [f"{h}x{w}" for h, w in sizes]


@pytest.fixture(scope="module")
def final_nets():
    torch.manual_seed(0)
    g = load_genotype("DARTS_V2")
    return {name: build_network(name, NetworkConfig(g, init_channels=4, layers=3, num_classes=CLASSES, in_channels=1))
            for name in ("cifar", "imagenet")}


def _train_step(net, H, W):
    net.train()
    net.drop_path_prob = 0.1
    x, y = torch.randn(2, 1, H, W), torch.tensor([0, 2])
    logits, aux = net.forward_with_aux(x)
    assert logits.shape == (2, CLASSES) and aux is not None and aux.shape == (2, CLASSES)
    loss = F.cross_entropy(logits, y) + 0.4 * F.cross_entropy(aux, y)
    net.zero_grad(set_to_none=True)
    loss.backward()
    assert torch.isfinite(loss)
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.auxiliary_head.parameters())


@pytest.mark.parametrize("size", SIZES, ids=_ids(SIZES))
def test_a_training_step_with_the_auxiliary_head_at_every_size(final_nets, size):
    for name, net in final_nets.items():
        if min(size) < NETWORKS.get(name).downsampling:
            with pytest.raises(ConfigError, match=f"{size[0]}x{size[1]} images are too small; the smallest size "
                                                  f"that works is {net.downsampling}x{net.downsampling}"):
                check_input_size(name, net.downsampling, *size)
            continue
        check_input_size(name, net.downsampling, *size)
        _train_step(net, *size)


@pytest.fixture(scope="module")
def search_setup():
    torch.manual_seed(0)
    net = SearchNetwork(ConvSearchSpaceConfig(init_channels=2, layers=3, nodes=2, num_classes=CLASSES, in_channels=1))
    w_opt = torch.optim.SGD(net.weight_parameters(), lr=0.05, momentum=0.9)
    return net, w_opt, Architect(net, w_opt, order="first", lr=0.01)


@pytest.mark.parametrize("size", SEARCH_SIZES, ids=_ids(SEARCH_SIZES))
def test_a_search_step_at_every_size(search_setup, size):
    """The architect's first-order α step and the weight step at the odd and non-square sizes; elsewhere
    one backward pass gives both gradients (the same shapes through every op, at half the cost)."""
    net, w_opt, architect = search_setup
    check_input_size("search", net.downsampling, *size)
    torch.manual_seed(size[0] * 1000 + size[1])
    train = (torch.randn(2, 1, *size), torch.tensor([0, 1]))
    before = [a.detach().clone() for a in net.arch_parameters()]
    if size in OTHER:
        val = (torch.randn(2, 1, *size), torch.tensor([2, 1]))
        grads = architect.step(train, val, xi=0.05)
        w_opt.zero_grad(set_to_none=True)
        net.loss(*train).backward()
    else:
        w_opt.zero_grad(set_to_none=True)
        net.loss(*train).backward()
        grads = [a.grad for a in net.arch_parameters()]
        architect.optimizer.step()
        architect.optimizer.zero_grad(set_to_none=True)
    w_opt.step()
    assert all(torch.isfinite(g).all() and g.abs().sum() > 0 for g in grads)
    assert all(not torch.equal(a, b) for a, b in zip(net.arch_parameters(), before))
    assert all(torch.isfinite(p).all() for p in net.weight_parameters())


# an export takes seconds: MNIST's size, an odd non-square one, and a mobile size that crashed
EXPORTED = [("cifar", (28, 28)), ("cifar", (17, 45)), ("imagenet", (150, 150))]


@pytest.mark.parametrize("name,size", EXPORTED, ids=[f"{n}-{h}x{w}" for n, (h, w) in EXPORTED])
def test_onnx_export_and_prediction_at_sizes_that_crashed_or_are_odd(final_nets, tmp_path, name, size):
    pytest.importorskip("onnxruntime")
    net = final_nets[name]
    _train_step(net, *size)  # BatchNorm statistics of this size
    model = Deployable(net, [0.5], [0.25]).eval()
    meta = {"classes": ["a", "b", "c"], "in_channels": 1, "image_size": list(size), "resize": None,
            "mean": [0.5], "std": [0.25], "network": name}
    out = write_export(model, meta, "onnx", tmp_path / "net.onnx")
    run, stored = load_predictor(out)
    x = torch.rand(3, 1, *size)
    with torch.no_grad():
        expected = model(x).numpy()
    np.testing.assert_allclose(run(x).numpy(), expected, rtol=1e-4, atol=1e-4)
    assert stored["image_size"] == list(size)


def test_the_papers_heads_are_unchanged_at_32_and_224_pixels():
    """At CIFAR's 32 px the head sees 8x8 (pool 5 stride 3 -> 2x2), at ImageNet's 224 px 7x7 (stride 2
    -> 2x2): the original code's head, computed here by hand; below, the pool goes to 2x2 adaptively."""
    torch.manual_seed(0)
    for stride, second_bn, side in ((3, True, 8), (2, False, 7)):
        head = AuxiliaryHead(6, CLASSES, stride, second_bn).eval()
        x = torch.randn(2, 6, side, side)
        pooled = F.avg_pool2d(F.relu(x), 5, stride=stride, padding=0, count_include_pad=False)
        assert pooled.shape[-2:] == (2, 2)
        expected = head.classifier(head.features(pooled).flatten(1))  # 2x2 conv: 1x1 left
        torch.testing.assert_close(head(x), expected, rtol=0, atol=0)
        assert head.windowed(side, side) and not head.windowed(side - 1, side - 1)
        small = torch.randn(2, 6, side - 1, side - 1)
        expected = head.classifier(head.features(F.adaptive_avg_pool2d(F.relu(small), 2)).flatten(1))
        torch.testing.assert_close(head(small), expected, rtol=0, atol=0)
    for name, image, aux_side in (("cifar", 32, 8), ("imagenet", 224, 7)):
        net = build_network(name, NetworkConfig(load_genotype("DARTS_V2"), init_channels=4, layers=6, in_channels=1))
        seen = []
        net.auxiliary_head.register_forward_pre_hook(lambda m, args: seen.append(tuple(args[0].shape[-2:])))
        net.train().forward_with_aux(torch.randn(2, 1, image, image))
        assert seen == [(aux_side, aux_side)] and net.auxiliary_head.windowed(*seen[0])


def _folder(root, size, per_class=3, mode="L"):
    from PIL import Image
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for c in range(3):
            (root / split / str(c)).mkdir(parents=True)
            for i in range(per_class):
                grey = rng.integers(0, 256, size, dtype=np.uint8)
                Image.fromarray(grey, "L").convert(mode).save(root / split / str(c) / f"{i}.png")
    return root


TINY = ["--init-channels", "4", "--layers", "3", "--batch-size", "4", "--epochs", "1", "--steps-per-epoch", "1",
        "--quiet", "--device", "cpu"]


def test_train_cnn_on_28x28_images_with_the_default_auxiliary_weight(tmp_path):
    """The command that crashed in its first step (MNIST's size, the default auxiliary weight)."""
    root = _folder(tmp_path / "mnist", (28, 28))
    data = ["--dataset", "imagefolder", "--data-dir", str(root)]
    assert main(["train", "cnn", "--genotype", "DARTS_V2", *data, *TINY, "--out", str(tmp_path / "run")]) == 0
    from dartsnas.train.checkpoint import load_checkpoint
    assert load_checkpoint(tmp_path / "run" / "model.pt")["config"]["auxiliary_weight"] == 0.4
    assert json.loads((tmp_path / "run" / "data.json").read_text())["image_size"] == [28, 28]


@pytest.mark.parametrize("command,network,smallest", [
    (["search", "cnn"], "the search network", 4),
    (["train", "cnn", "--genotype", "DARTS_V2", "--network", "imagenet"], "--network imagenet", 32),
    (["train", "cnn", "--genotype", "DARTS_V2"], "--network cifar", 4),
])
def test_too_small_images_are_one_line_errors_naming_the_size_and_the_smallest_that_works(
        tmp_path, capsys, command, network, smallest):
    side = 3 if smallest == 4 else 28
    root = _folder(tmp_path / "small", (side, side))
    out = tmp_path / "run"
    capsys.readouterr()
    assert main([*command, "--dataset", "imagefolder", "--data-dir", str(root), *TINY, "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert err == (f"dartsnas: error: {network} downsamples {smallest}x: {side}x{side} images are too small; the "
                   f"smallest size that works is {smallest}x{smallest} (--image-size S resizes a folder's images)\n")
    assert not (out / "checkpoint.pt").exists() and not (out / "metrics.jsonl").exists()
