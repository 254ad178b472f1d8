"""Activation recomputation (--recompute cell|edge): the same numbers as keeping the activations."""
import pytest
import torch
from torch import nn

from dartsnas.architect import Architect
from dartsnas.methods.sdarts import perturb_mixing_weights
from dartsnas.spaces import ConvSearchSpaceConfig, SearchNetwork
from dartsnas.spaces.base import recomputed
from dartsnas.train.bilevel import search_step


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


@pytest.mark.slow  # 40 s of the 2-core budget; the slow set (CI's second command) runs it
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


class _UserNet(nn.Module):
    """A user model whose choices hold BatchNorm and dropout, one key shared by two choices."""

    def __init__(self):
        super().__init__()
        from dartsnas.nn import Choice, InputChoice

        def block(k):
            return nn.Sequential(nn.Conv2d(4, 4, k, padding=k // 2), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout(0.3))
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.conv = Choice({"3x3": block(3), "5x5": block(5), "pool": nn.AvgPool2d(3, 1, 1)})
        self.a = Choice([block(1), nn.Identity()], key="shared")
        self.b = Choice([block(1), nn.Identity()], key="shared")
        self.which = InputChoice(2)
        self.head = nn.Linear(4, 5)

    def forward(self, x):
        s = torch.relu(self.stem(x))
        d = self.b(self.a(self.conv(s)))
        return self.head(self.which([s, d]).mean((2, 3)))


def _user_step(recompute, order):
    from dartsnas.nn import Choice, SearchableModel
    torch.manual_seed(0)
    space = SearchableModel(_UserNet())
    with torch.no_grad():
        for a in space.arch_parameters():
            a.normal_(0, 0.5, generator=torch.Generator().manual_seed(1))
    for _, m in space.model.named_modules():
        if isinstance(m, Choice):
            m.recompute = recompute
    opt = torch.optim.SGD(space.weight_parameters(), lr=0.1, momentum=0.9, weight_decay=3e-4)
    train, val = _batches()
    architect = Architect(space, opt, order=order, lr=3e-4, betas=(0.5, 0.999), weight_decay=1e-3, grad_clip=5.0)
    torch.manual_seed(3)  # the dropout masks
    grads = architect.alpha_grad(train, val, 0.1)
    search_step(space, architect, opt, train, val, 0.1, 5.0)
    return space, grads


@pytest.mark.parametrize("order", ["first", "second", "exact"])
def test_per_choice_recomputation_of_a_user_model_equals_the_plain_step(order):
    plain, g_plain = _user_step(False, order)
    lean, g_lean = _user_step(True, order)
    for a, b in zip(g_plain, g_lean):
        assert a.abs().max() > 0 and torch.equal(a, b)
    for key, value in plain.state_dict().items():  # weights, α, BatchNorm statistics (one update a pass)
        assert torch.equal(value, lean.state_dict()[key]), key
    assert int(lean.model.conv.candidates["3x3"][1].num_batches_tracked) == \
        int(plain.model.conv.candidates["3x3"][1].num_batches_tracked) > 0


def _kept_bytes(fn):
    """Bytes autograd keeps for backward while ``fn`` runs (recomputed regions keep theirs to themselves)."""
    kept = []

    def pack(t):
        kept.append(t.numel() * t.element_size())
        return t
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return sum(kept), out


def test_recomputation_keeps_fewer_activations():
    x, y = _batches()[0]
    conv = {mode: _kept_bytes(lambda: _net(mode).loss(x, y))[0] for mode in ("none", "cell", "edge")}
    assert conv["edge"] < 0.5 * conv["none"] and conv["cell"] < 0.5 * conv["none"]
    from dartsnas.nn import SearchableModel
    for recompute in (False, True):
        torch.manual_seed(0)
        space = SearchableModel(_UserNet())
        for m in (space.model.conv, space.model.a, space.model.b):
            m.recompute = recompute
        conv[recompute] = _kept_bytes(lambda: space.loss(x, y))[0]
    assert conv[True] < 0.5 * conv[False]


def test_edge_recomputation_keeps_nothing_of_the_cells_preprocessing():
    """--recompute edge recomputes each cell's ReLU-conv-BN preprocessing too: autograd keeps none of its
    tensors outside the recomputed region (the plain run keeps its ReLU, conv and BatchNorm inputs)."""
    x, y = _batches()[0]
    kept = {}
    for mode in ("none", "edge"):
        net, inside, sizes = _net(mode), [False], []
        for cell in net.cells:
            for pre in (cell.preprocess0, cell.preprocess1):
                pre.register_forward_pre_hook(lambda *_: inside.__setitem__(0, True))
                pre.register_forward_hook(lambda *_: inside.__setitem__(0, False))

        def pack(t, inside=inside, sizes=sizes):
            if inside[0]:
                sizes.append(t.numel())
            return t
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            net.loss(x, y)
        kept[mode] = sum(sizes)
    assert kept["none"] > 0 and kept["edge"] == 0


def test_search_model_recompute_choice_gives_the_plain_run(tmp_path):
    import json

    from dartsnas.train.search_model import search_model
    g = torch.Generator().manual_seed(0)
    data = torch.utils.data.TensorDataset(torch.randn(48, 3, 8, 8, generator=g), torch.randint(0, 5, (48,), generator=g))
    runs = {}
    for mode in ("none", "choice"):
        torch.manual_seed(0)
        result = search_model(_UserNet(), data, out_dir=tmp_path / mode, epochs=2, batch_size=8, order="second",
                              recompute=mode, quiet=True)
        assert all(c.recompute == (mode == "choice") for c in (result.model.model.conv, result.model.model.a))
        runs[mode] = [{k: v for k, v in json.loads(line).items() if k not in ("seconds", "examples_per_s")}
                      for line in (tmp_path / mode / "metrics.jsonl").read_text().splitlines()]
    assert runs["none"] == runs["choice"]
