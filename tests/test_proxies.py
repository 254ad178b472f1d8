"""Zero-cost proxies against hand computations on a two-layer linear network (the authors' formulas,
written out with the loss's gradients by hand), rank correlations against scipy, the command and the
pre-ranking of random-search."""
import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from dartsnas.proxies import PROXIES, score
from dartsnas.zero_cost import rank_correlations

W1 = torch.tensor([[0.5, -1.0], [0.3, 0.8], [-0.7, 0.2]], dtype=torch.float64)  # hidden 3 x input 2
W2 = torch.tensor([[1.0, -0.5, 0.4], [0.2, 0.9, -1.1]], dtype=torch.float64)  # classes 2 x hidden 3
X = torch.tensor([[1.0, 2.0], [-0.5, 0.3], [0.7, -1.2]], dtype=torch.float64)
Y = torch.tensor([0, 1, 1])


def _net() -> nn.Module:
    net = nn.Sequential(nn.Linear(2, 3, bias=False), nn.Linear(3, 2, bias=False)).double()
    with torch.no_grad():
        net[0].weight.copy_(W1)
        net[1].weight.copy_(W2)
    return net


def _by_hand():
    """The loss's gradients by hand: z = W2 W1 x, δ_n = softmax(z_n) − e_y / N (mean CE)."""
    h = X @ W1.T
    z = h @ W2.T
    delta = (torch.softmax(z, 1) - torch.nn.functional.one_hot(Y, 2)) / len(Y)
    g2 = delta.T @ h
    gh = delta @ W2  # ∂L/∂h
    g1 = gh.T @ X
    return h, z, delta, gh, g1, g2


def test_grad_norm_snip_fisher_by_hand():
    h, z, delta, gh, g1, g2 = _by_hand()
    assert PROXIES.get("grad_norm")(_net(), X, Y) == pytest.approx(float(g1.norm() + g2.norm()), rel=1e-10)
    assert PROXIES.get("snip")(_net(), X, Y) == pytest.approx(float((W1 * g1).abs().sum() + (W2 * g2).abs().sum()),
                                                               rel=1e-10)
    # per output channel 0.5·mean_n (a·∂L/∂a)², times the layer's fan-in (2 and 3)
    fisher = 2 * float((0.5 * (h * gh).pow(2).mean(0)).sum()) + 3 * float((0.5 * (z * delta).pow(2).mean(0)).sum())
    assert PROXIES.get("fisher")(_net(), X, Y) == pytest.approx(fisher, rel=1e-10)


def test_grasp_against_the_dense_hessian():
    _, _, _, _, g1, g2 = _by_hand()
    theta = torch.cat([W1.flatten(), W2.flatten()])

    def loss(t):
        w1, w2 = t[:6].view(3, 2), t[6:].view(2, 3)
        return torch.nn.functional.cross_entropy(X @ w1.T @ w2.T, Y)

    hessian = torch.autograd.functional.hessian(loss, theta)
    g = torch.cat([g1.flatten(), g2.flatten()])
    assert PROXIES.get("grasp")(_net(), X, Y) == pytest.approx(float(-theta @ hessian @ g), rel=1e-9)


def test_synflow_jacob_cov_params_flops_by_hand():
    # |W|, input ones: R = 1ᵀ|W2||W1|1; each layer's Σ|θ·∂R/∂θ| is R (R is linear in each layer)
    r = float(torch.ones(2, dtype=torch.float64) @ W2.abs() @ W1.abs() @ torch.ones(2, dtype=torch.float64))
    assert PROXIES.get("synflow")(_net(), X, Y) == pytest.approx(2 * r, rel=1e-12)
    # a linear network's input gradients are one row repeated: corrcoef all ones, eigenvalues {3, 0, 0}
    k = 1e-5
    by_hand = -((math.log(3 + k) + 1 / (3 + k)) + 2 * (math.log(k) + 1 / k))
    assert PROXIES.get("jacob_cov")(_net(), X, Y) == pytest.approx(by_hand, rel=1e-6)
    assert PROXIES.get("params")(_net(), X, Y) == pytest.approx(12 / 1e6)
    assert PROXIES.get("flops")(_net(), X, Y) == pytest.approx((6 + 6) / 1e6)  # multiply-adds of one input


def test_batchnorm_is_removed_for_synflow_and_unused_layers_count_zero():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.bn, self.unused = nn.Linear(2, 2), nn.BatchNorm1d(2), nn.Linear(2, 2)

        def forward(self, x):
            return self.bn(self.a(x))

    torch.manual_seed(0)
    net = Net().double()
    x, y = torch.randn(4, 2, dtype=torch.float64), torch.tensor([0, 1, 0, 1])
    scores = score(lambda: net, x, y, ("synflow", "snip", "grad_norm"))
    w, b = net.a.weight.abs(), net.a.bias.abs()
    # without BN: R = 1ᵀ(|W|1 + |b|), so Σ|θ·∂R/∂θ| over the weight is Σ|W|
    assert scores["synflow"] == pytest.approx(float(w.sum()), rel=1e-12)
    g = torch.autograd.grad(torch.nn.functional.cross_entropy(net(x), y), net.a.weight)[0]
    assert scores["snip"] == pytest.approx(float((net.a.weight * g).abs().sum()), rel=1e-10)  # the unused layer: 0
    assert scores["grad_norm"] == pytest.approx(float(g.norm()), rel=1e-10)
    del b
    with pytest.raises(Exception, match="proxy"):
        score(lambda: net, x, y, ("nope",))


def test_rank_correlations_agree_with_scipy():
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    x = rng.integers(0, 6, 40).astype(float).tolist()  # ties on both sides
    y = (np.array(x) + rng.normal(0, 2, 40)).round().tolist()
    got = rank_correlations(x, y)
    assert got["kendall_tau"] == pytest.approx(stats.kendalltau(x, y).statistic, rel=1e-12)
    assert got["spearman_rho"] == pytest.approx(stats.spearmanr(x, y).statistic, rel=1e-12)
    assert rank_correlations([1.0, math.nan, 3.0], [1.0, 2.0, 0.0])["n"] == 2  # NaN scores left out


def test_proxies_command_and_prerank(tmp_path, capsys):
    from dartsnas.cli import main
    assert main(["proxies", "nb201", "best-cifar10", "all-skip", "--sample", "1", "--dataset", "digits",
                 "--init-channels", "4", "--layers", "1", "--batch-size", "16", "--out", str(tmp_path / "p.jsonl")]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [r["name"] for r in lines] == ["best-cifar10", "all-skip", "sample_000"]
    assert set(lines[0]) == {"name", "grad_norm", "snip", "grasp", "fisher", "jacob_cov", "synflow", "params", "flops"}
    assert lines[1]["params"] < lines[0]["params"] and lines[1]["flops"] < lines[0]["flops"]
    assert [json.loads(x) for x in (tmp_path / "p.jsonl").read_text().splitlines()] == lines
    assert main(["random-search", "nb201", "--samples", "3", "--dataset", "digits", "--init-channels", "4", "--layers",
                 "1", "--epochs", "1", "--batch-size", "16", "--prerank", "params", "--prerank-keep", "1",
                 "--quiet", "--out", str(tmp_path / "rs")]) == 0
    pre = json.loads((tmp_path / "rs" / "prerank.json").read_text())
    assert pre["kept"] == [max(pre["scores"], key=pre["scores"].get)]
    assert json.loads((tmp_path / "rs" / "leaderboard.json").read_text())[0]["name"] == pre["kept"][0]
    assert main(["random-search", "nb201", "--samples", "3", "--prerank", "params", "--out", str(tmp_path / "x")]) == 1
    assert "--prerank-keep" in capsys.readouterr().err
