"""DARTS over a user's own model: Choice / InputChoice, SearchableModel, search_model, fix."""
import json
import signal

import pytest
import torch
from torch import nn

import dartsnas
from dartsnas.architect import Architect
from dartsnas.errors import ConfigError, Interrupted
from dartsnas.nn import Choice, ChosenInputs, InputChoice, SearchableModel, fix
from dartsnas.train.search_model import ModelSearch, ModelSearchConfig, search_model


class Net(nn.Module):
    """A small user network with a kernel-size choice, a choice shared by two blocks and an input choice."""

    def __init__(self, act=nn.ReLU, classes=3):
        super().__init__()
        self.stem = nn.Conv2d(1, 4, 3, padding=1)
        self.conv = Choice({"3x3": nn.Conv2d(4, 4, 3, padding=1), "5x5": nn.Conv2d(4, 4, 5, padding=2),
                            "pool": nn.AvgPool2d(3, 1, 1)})
        self.a = Choice([nn.Conv2d(4, 4, 1), nn.Identity()], key="shared")
        self.b = Choice([nn.Conv2d(4, 4, 1), nn.Identity()], key="shared")
        self.which = InputChoice(2)
        self.act = act()
        self.head = nn.Linear(4, classes)

    def forward(self, x):
        s = self.act(self.stem(x))
        c = self.act(self.conv(s))
        d = self.b(self.act(self.a(c)))
        return self.head(self.which([s, d]).mean((2, 3)))


class Hand(nn.Module):
    """The network written by hand for the picks conv=5x5, shared=0, which=[1]."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(1, 4, 3, padding=1)
        self.conv = nn.Conv2d(4, 4, 5, padding=2)
        self.a = nn.Conv2d(4, 4, 1)
        self.b = nn.Conv2d(4, 4, 1)
        self.head = nn.Linear(4, 3)


def _data(n, seed, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, 6, 6, generator=g, dtype=dtype), torch.randint(0, 3, (n,), generator=g)


def test_choice_output_and_alpha_gradient_are_the_weighted_sum_by_hand():
    torch.manual_seed(0)
    choice = Choice({"a": nn.Linear(3, 2), "b": nn.Linear(3, 2)}).double()
    with torch.no_grad():
        choice.alpha.copy_(torch.tensor([0.3, -0.4]))
    x, r = torch.randn(5, 3, dtype=torch.float64), torch.randn(5, 2, dtype=torch.float64)
    out = choice(x)
    w = torch.softmax(choice.alpha.detach(), 0)
    outs = [m(x).detach() for m in choice.candidates.values()]
    torch.testing.assert_close(out.detach(), w[0] * outs[0] + w[1] * outs[1], rtol=0, atol=1e-15)
    (grad,) = torch.autograd.grad((out * r).sum(), choice.alpha)
    # d/dα_k of sum_j softmax(α)_j o_j is w_k (o_k - out)
    expected = torch.stack([w[k] * ((outs[k] - out.detach()) * r).sum() for k in range(2)])
    torch.testing.assert_close(grad, expected, rtol=1e-12, atol=1e-14)
    pick = InputChoice(3).double()
    with torch.no_grad():
        pick.alpha.copy_(torch.tensor([1.0, 0.0, -1.0]))
    xs = [torch.randn(4, 2, dtype=torch.float64, requires_grad=True) for _ in range(3)]
    y = pick(xs)
    w = torch.softmax(pick.alpha.detach(), 0)
    torch.testing.assert_close(y, sum(wi * xi for wi, xi in zip(w, xs)), rtol=0, atol=1e-15)
    (gx,) = torch.autograd.grad(y.sum(), xs[2])
    torch.testing.assert_close(gx, torch.full((4, 2), float(w[2]), dtype=torch.float64))


def test_shared_keys_share_one_alpha_and_the_model_is_searchable_without_changes():
    torch.manual_seed(0)
    net = Net()
    space = SearchableModel(net)
    names = [n for n, _ in space.choices()]
    assert names == ["conv", "shared", "which"]
    assert net.a.alpha is net.b.alpha and len(space.arch_parameters()) == 3
    arch = {id(p) for p in space.arch_parameters()}
    weights = [p for _, p in space.named_weight_parameters()]
    assert not any(id(p) in arch for p in weights)
    assert sum(p.numel() for p in space.parameters()) == sum(p.numel() for p in weights) + 3 + 2 + 2
    x, y = _data(4, 0)
    loss = space.loss(x, y)
    (grad,) = torch.autograd.grad(loss, net.a.alpha)
    assert grad.abs().sum() > 0  # both uses feed one gradient
    assert torch.equal(space(x), net(x))


def test_fix_keeps_the_pick_and_computes_what_the_search_model_computes_with_it_weighted_one():
    torch.manual_seed(0)
    net = Net().eval()
    space = SearchableModel(net)
    with torch.no_grad():  # push every α onto one candidate: softmax gives exactly 1 and 0
        net.conv.alpha.copy_(torch.tensor([-1e4, 0.0, -1e4]))
        net.a.alpha.copy_(torch.tensor([0.0, -1e4]))
        net.which.alpha.copy_(torch.tensor([-1e4, 0.0]))
    assert space.picks() == {"conv": "5x5", "shared": "0", "which": [1]}
    plain = fix(space).eval()
    x, _ = _data(6, 1)
    assert torch.equal(plain(x), net(x))
    hand = Hand()
    assert [k for k in plain.state_dict()] == [k for k in hand.state_dict()]
    assert sum(p.numel() for p in plain.parameters()) == sum(p.numel() for p in hand.parameters())
    assert isinstance(plain.which, ChosenInputs) and not any("alpha" in k for k in plain.state_dict())
    # a given choices dict (as choices.json holds) overrides α; the searched model is left as it was
    other = fix(net, {"conv": "pool", "shared": "1", "which": [0]})
    assert isinstance(other.conv, nn.AvgPool2d) and isinstance(other.a, nn.Identity) and other.which.indices == [0]
    assert isinstance(net.conv, Choice)


@pytest.mark.parametrize("build,message", [
    (lambda: Choice({"a": nn.Linear(3, 2), "b": nn.Linear(3, 4)})(torch.randn(2, 3)),
     r"choice Choice: candidate 'b' has shape \[2, 4\] but candidate 'a' \[2, 2\]"),
    (lambda: InputChoice(2, key="skip")([torch.randn(2, 3), torch.randn(2, 4)]), "choice skip: input #1 has shape"),
    (lambda: InputChoice(2)([torch.randn(2, 3)]), "1 inputs given, 2 expected"),
    (lambda: Choice([nn.Identity()]), "at least two candidates"),
    (lambda: SearchableModel(nn.Linear(2, 2)), "holds no Choice"),
    (lambda: SearchableModel(nn.Sequential(Choice([nn.Identity(), nn.Tanh()], key="k"),
                                           Choice([nn.Identity(), nn.Tanh(), nn.ReLU()], key="k"))),
     "choices with key 'k' differ"),
    (lambda: fix(Net(), {"conv": "7x7", "shared": "0", "which": [0]}), r"choice conv: no candidate '7x7'"),
    (lambda: fix(Net(), {"convv": "3x3", "shared": "0", "which": [0]}), "unknown choice\\(s\\) convv"),
    (lambda: fix(Net(), {"conv": "3x3", "shared": "0"}), "no pick for which"),
    (lambda: fix(Net(), {"conv": "3x3", "shared": "0", "which": [5]}), "choice which: pick \\[5\\]"),
])
def test_mistakes_are_clear_errors_naming_the_choice(build, message):
    with pytest.raises(ConfigError, match=message):
        build()


def test_a_choice_no_forward_pass_reaches_is_refused(tmp_path):
    class Unused(Net):
        def __init__(self):
            super().__init__()
            self.spare = Choice([nn.Identity(), nn.Tanh()])

    x, y = _data(32, 0)
    with pytest.raises(ConfigError, match="choice spare: no forward pass reached it"):
        search_model(Unused(), torch.utils.data.TensorDataset(x, y), out_dir=tmp_path / "r", epochs=1, batch_size=8,
                     quiet=True)


@pytest.mark.parametrize("order", ["second", "exact"])
def test_higher_orders_on_a_float64_user_model_against_exact(order):
    torch.manual_seed(0)
    net = Net(act=nn.Tanh).double()  # smooth: the finite difference converges
    for c in (net.conv, net.a, net.which):
        with torch.no_grad():
            c.alpha.normal_(0, 0.5)
    space = SearchableModel(net)
    opt = torch.optim.SGD(space.weight_parameters(), lr=0.1, momentum=0.9, weight_decay=3e-4)
    train, val = _data(16, 0, torch.float64), _data(16, 1, torch.float64)
    space.loss(*train).backward()
    opt.step()
    opt.zero_grad()
    exact = Architect(space, opt, order="exact", grad_clip=5.0).alpha_grad(train, val, xi=0.5)
    first = Architect(space, opt, order="first").alpha_grad(train, val, xi=0.5)
    got = Architect(space, opt, order=order, fd_step=1e-4, grad_clip=5.0).alpha_grad(train, val, xi=0.5)
    flat = lambda gs: torch.cat([g.flatten() for g in gs])  # noqa: E731
    cos = lambda a, b: float(flat(a) @ flat(b) / (flat(a).norm() * flat(b).norm()))  # noqa: E731
    assert cos(got, exact) >= 0.999 and cos(first, exact) < 0.999


def _dataset(n=96, seed=0):
    return torch.utils.data.TensorDataset(*_data(n, seed))


def test_search_model_writes_the_run_directory_and_plots(tmp_path):
    torch.manual_seed(0)
    result = search_model(Net(), _dataset(), out_dir=tmp_path / "run", epochs=2, batch_size=16, order="second",
                          quiet=True)
    run = tmp_path / "run"
    assert sorted(p.name for p in run.iterdir()) == ["checkpoint.pt", "choices.json", "config.json", "metrics.jsonl",
                                                    "run.json"]
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2] and records[0]["steps"] == 3
    assert set(records[-1]["choice_alphas"]) == {"conv", "shared", "which"}
    assert sum(records[-1]["choice_alphas"]["conv"].values()) == pytest.approx(1.0, abs=1e-5)
    assert json.loads((run / "choices.json").read_text()) == records[-1]["choices"] == result.choices
    assert "val_acc" in records[-1] and "train_acc" in records[-1]
    plain = fix(Net(), json.loads((run / "choices.json").read_text()))
    assert not any(isinstance(m, (Choice, InputChoice)) for m in plain.modules())
    assert not any(isinstance(m, (Choice, InputChoice)) for m in result.fixed().modules())
    pytest.importorskip("matplotlib")
    from dartsnas.cli import main
    assert main(["plot", str(run), "--alphas", "--out", str(tmp_path / "a.png")]) == 0
    assert (tmp_path / "a.png").stat().st_size > 1000


def test_search_model_resumes_bit_identical_mid_epoch(tmp_path):
    from dartsnas.train.checkpoint import load_checkpoint

    def run(out, **kw):
        torch.manual_seed(0)
        return ModelSearch(Net(), ModelSearchConfig(epochs=2, batch_size=16, order="second", checkpoint_every=100),
                           out, train_data=_dataset(), quiet=True, **kw)

    run(tmp_path / "whole").execute()
    interrupted = run(tmp_path / "cut")
    interrupted.stop_signal = signal.SIGTERM  # as if preempted: checkpoint after the next step
    with pytest.raises(Interrupted):
        interrupted.execute()
    assert load_checkpoint(tmp_path / "cut")["in_epoch"]["step"] == 1
    run(tmp_path / "cut", resume=True).execute()
    a, b = load_checkpoint(tmp_path / "whole"), load_checkpoint(tmp_path / "cut")
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    strip = lambda path: [{k: v for k, v in json.loads(line).items() if k not in ("seconds", "examples_per_s")}  # noqa: E731
                          for line in (path / "metrics.jsonl").read_text().splitlines()]
    assert strip(tmp_path / "whole") == strip(tmp_path / "cut")


def test_steps_per_epoch_shorter_than_a_pass_continues_the_pass_then_starts_the_next(tmp_path):
    # 48 training examples in batches of 16 make a pass of 3 batches; 2 steps per epoch over 3 epochs
    # cross a pass boundary inside epoch 2 (this stopped with StopIteration before)
    torch.manual_seed(0)
    result = search_model(Net(), _dataset(), out_dir=tmp_path / "run", epochs=3, batch_size=16, steps_per_epoch=2,
                          quiet=True)
    assert [r["steps"] for r in result.metrics] == [2, 2, 2]


def test_python_api_names():
    assert dartsnas.nn.Choice is Choice and dartsnas.SearchableModel is SearchableModel
    assert dartsnas.search_model is search_model
    with pytest.raises(ConfigError, match="unknown search option\\(s\\) epoch"):
        search_model(Net(), _dataset(), out_dir="unused", epoch=3)


def test_a_models_candidates_are_counted_at_the_shapes_they_are_called_with():
    from dartsnas.choice_cost import ChoiceCosts
    torch.manual_seed(0)
    model = SearchableModel(Net())
    costs = ChoiceCosts.measure(model, (torch.randn(1, 1, 6, 6),))
    # by hand, on 6x6 maps: a k x k conv from 4 to 4 channels is 16 k^2 x 36 multiply-adds, 16 k^2 + 4 weights
    assert costs.choices["conv"] == {"candidates": ["3x3", "5x5", "pool"], "macs": [5184, 14400, 0],
                                     "params": [148, 404, 0]}
    assert costs.choices["shared"]["macs"] == [2 * 576, 0] and costs.choices["shared"]["params"] == [40, 0]
    assert "which" not in costs.choices  # choosing inputs costs nothing of its own
    assert costs.fixed == {"macs": 1296 + 12, "params": 40 + 15}  # stem and head
    hand = {"conv": "5x5", "shared": "0", "which": [1]}
    assert costs.of_picks(hand) == {"macs": 1308 + 14400 + 1152, "params": 55 + 404 + 40}
    assert costs.of_picks(hand)["params"] == sum(p.numel() for p in Hand().parameters())
    # the expectation: softmax(α)-weighted candidate costs; its α gradient against autograd and by hand
    alpha = model.groups["conv"][0][1].alpha
    expected = costs.expected("macs", model)
    p = alpha.detach().softmax(-1)
    shared = model.groups["shared"][0][1].alpha.detach().softmax(-1)
    assert float(expected.detach()) == pytest.approx(1308 + float(p @ torch.tensor([5184., 14400, 0]))
                                            + float(shared @ torch.tensor([1152., 0])))
    grad, = torch.autograd.grad(expected, alpha)
    c = torch.tensor([5184., 14400, 0])
    torch.testing.assert_close(grad, p * (c - p @ c))
    with pytest.raises(ConfigError, match="holds no latency"):
        costs.expected("latency", model)
    assert ChoiceCosts.from_dict(json.loads(json.dumps(costs.to_dict()))) == costs


def test_a_models_candidates_timed_predict_the_fixed_model():
    from dartsnas.choice_cost import ChoiceCosts
    from dartsnas.latency import Timer
    torch.manual_seed(0)
    model = SearchableModel(Net())
    costs = ChoiceCosts.measure(model, (torch.randn(1, 1, 6, 6),), Timer("torch", threads=1, repeats=5, warmup=1))
    assert costs.kinds == ("macs", "params", "latency") and costs.measurement["runtime"] == "torch"
    assert all(v > 0 for v in costs.choices["conv"]["latency"])
    assert costs.of_picks(model.picks())["latency"] == pytest.approx(  # the fixed part makes it so
        costs.fixed["latency"] + sum(c["latency"][c["candidates"].index(model.picks()[n])]
                                     for n, c in costs.choices.items()))


def test_search_model_aims_at_a_budget_and_resumes_with_its_table(tmp_path):
    def run(out, epochs=3, **kw):
        torch.manual_seed(0)
        return search_model(Net(), _dataset(), out_dir=tmp_path / out, epochs=epochs, batch_size=16, arch_lr=0.05,
                            quiet=True, **kw)

    budget = dict(cost="macs", cost_target="2k", cost_penalty="linear", cost_weight=5.0)
    plain, cheap = run("plain"), run("cheap", **budget)
    table = json.loads((tmp_path / "cheap" / "choice_costs.json").read_text())
    from dartsnas.choice_cost import ChoiceCosts
    costs = ChoiceCosts.from_dict(table)
    assert cheap.metrics[-1]["derived_cost"] == costs.of_picks(cheap.choices)["macs"]
    assert costs.of_picks(cheap.choices)["macs"] < costs.of_picks(plain.choices)["macs"]
    assert cheap.metrics[-1]["expected_cost"] < cheap.metrics[0]["expected_cost"]
    assert cheap.choices["conv"] == "pool" and "expected_cost" not in plain.metrics[-1]
    run("cut", epochs=1, **budget)
    resumed = run("cut", resume=True, **budget)
    strip = lambda rs: [{k: v for k, v in r.items() if k not in ("seconds", "examples_per_s")} for r in rs]  # noqa: E731
    assert strip(resumed.metrics) == strip(cheap.metrics)
    with pytest.raises(ConfigError, match="cost needs cost_target"):
        run("none", cost="macs")
    # the derived penalty: pushed while the picks cost more than the budget
    gated = run("gated", **{**budget, "cost_penalty": "derived"})
    assert gated.metrics[-1]["derived_cost"] <= costs.of_picks(plain.choices)["macs"]
    assert gated.metrics[-1]["expected_cost"] < gated.metrics[0]["expected_cost"]


def test_a_choice_called_twice_costs_twice():
    from dartsnas.choice_cost import ChoiceCosts

    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.block = Choice({"3x3": nn.Conv2d(2, 2, 3, padding=1, bias=False), "id": nn.Identity()})
            self.head = nn.Linear(2, 2, bias=False)

        def forward(self, x):
            return self.head(self.block(self.block(x)).mean((2, 3)))

    costs = ChoiceCosts.measure(SearchableModel(Twice()), (torch.randn(1, 2, 4, 4),))
    assert costs.choices["block"]["macs"] == [2 * 2 * 2 * 9 * 16, 0]  # two calls of 4 x 9 x 16
    assert costs.choices["block"]["params"] == [36, 0] and costs.fixed == {"macs": 4, "params": 4}
