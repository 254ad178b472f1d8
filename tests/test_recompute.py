"""Activation recomputation (--recompute cell|edge): the same numbers as keeping the activations."""
import pytest
import torch
from torch import nn

from dartsnas.architect import Architect
from dartsnas.regularizers import perturb_mixing_weights
from dartsnas.spaces import ConvSearchSpaceConfig, SearchNetwork
from dartsnas.spaces.base import recomputed
from dartsnas.train.search import search_step


def _net(recompute, seed=0, **kw):
    torch.manual_seed(seed)
    config = ConvSearchSpaceConfig(**{"init_channels": 4, "layers": 3, "num_classes": 5, "nodes": 3, **kw},
                                   recompute=recompute)
    net = SearchNetwork(config)
    with torch.no_grad():
        for a in net.arch_parameters():
            a.normal_(0, 0.5, generator=torch.Generator().manual_seed(seed + 1))
    return net


def _batches():
    g = torch.Generator().manual_seed(2)
    return [(torch.randn(6, 3, 8, 8, generator=g), torch.randint(0, 5, (6,), generator=g)) for _ in range(2)]


def _one_step(recompute, order, regularizer="none", **kw):
    """A model after one search step (α step of ``order``, then the weight step) and that step's α gradient."""
    net = _net(recompute, auxiliary_skip=regularizer == "darts-minus", **kw)
    if regularizer == "darts-minus":
        net.aux_beta = 0.7
    opt = torch.optim.SGD(net.weight_parameters(), lr=0.1, momentum=0.9, weight_decay=3e-4)
    train, val = _batches()
    net.loss(*train).backward()  # momentum buffers, as after a first step
    opt.step()
    opt.zero_grad()
    architect = Architect(net, opt, order=order, lr=3e-4, betas=(0.5, 0.999), weight_decay=1e-3, grad_clip=5.0)
    smoothing = torch.Generator().manual_seed(7)
    perturb = None
    if regularizer == "sdarts-rs":
        perturb = lambda: tuple(perturb_mixing_weights(w, 0.1, smoothing) for w in net.arch_weights())  # noqa: E731
    grads = architect.alpha_grad(train, val, 0.1)
    search_step(net, architect, opt, train, val, 0.1, 5.0, perturb=perturb)
    return net, grads


@pytest.mark.parametrize("mode", ["cell", "edge"])
@pytest.mark.parametrize("order", ["first", "second", "exact"])
def test_gradients_and_the_step_equal_the_plain_run_bit_for_bit(mode, order):
    plain, g_plain = _one_step("none", order)
    lean, g_lean = _one_step(mode, order)
    for a, b in zip(g_plain, g_lean):
        assert torch.equal(a, b)
    state_plain, state_lean = plain.state_dict(), lean.state_dict()
    for key in state_plain:  # weights, α and the BatchNorm statistics (updated once per pass, not twice)
        assert torch.equal(state_plain[key], state_lean[key]), key


@pytest.mark.parametrize("kw", [dict(partial_channels=2), dict(regularizer="darts-minus"),
                                dict(regularizer="sdarts-rs")], ids=["pc-darts", "darts-minus", "sdarts-rs"])
def test_recomputation_with_partial_channels_and_the_regularisers(kw):
    plain, _ = _one_step("none", "second", **kw)
    for mode in ("cell", "edge"):
        lean, _ = _one_step(mode, "second", **kw)
        for key, value in plain.state_dict().items():
            assert torch.equal(value, lean.state_dict()[key]), (mode, key)


def test_recomputed_keeps_dropout_masks_and_updates_running_statistics_once():
    torch.manual_seed(0)
    block = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout(0.5))
    copy = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout(0.5))
    copy.load_state_dict(block.state_dict())
    x = torch.randn(2, 3, 5, 5, requires_grad=True)
    torch.manual_seed(1)
    plain = block(x)
    plain.square().sum().backward()
    grads = [p.grad.clone() for p in block.parameters()] + [x.grad.clone()]
    x.grad = None
    torch.manual_seed(1)
    lean = recomputed(copy, x)
    lean.square().sum().backward()
    assert torch.equal(plain, lean)
    for a, b in zip(grads, [p.grad for p in copy.parameters()] + [x.grad]):
        assert torch.equal(a, b)
    for key, value in block.state_dict().items():
        assert torch.equal(value, copy.state_dict()[key]), key  # running statistics: one update
    assert int(copy[1].num_batches_tracked) == 1


def test_recompute_is_a_search_option_and_a_bad_mode_is_named():
    from dartsnas.errors import ConfigError
    from dartsnas.train.search import SearchConfig
    assert SearchConfig(recompute="edge").space().recompute == "edge"
    with pytest.raises(ConfigError, match="recompute must be one of none, cell, edge"):
        SearchConfig(recompute="layer").validate()
