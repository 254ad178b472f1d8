"""Cost tables: what a searched cell will cost in the final network (issue 23, first part)."""
import random

import pytest
import torch

from dartsnas.cost import CostTable, op_cost
from dartsnas.errors import ConfigError
from dartsnas.genotype import Genotype
from dartsnas.nets import NetworkConfig, build_network
from dartsnas.nets.summary import summarize
from dartsnas.ops import DARTS_OPS
from dartsnas.spaces.cnn import sample_genotype


def test_op_costs_are_the_hand_counts():
    C, H = 8, 6
    # sep_conv_3x3: twice (ReLU, depthwise 3x3, pointwise 1x1, BN); the first at the stride
    assert op_cost("sep_conv_3x3", C, H, H, 1) == (2 * (9 * C + C * C) * H * H, 2 * (9 * C + C * C + 2 * C))
    assert op_cost("sep_conv_3x3", C, H, H, 2) == ((9 * C + C * C) * 9 + (9 * C + C * C) * 9, 2 * (9 * C + C * C + 2 * C))
    # dil_conv_5x5: one depthwise 5x5 (dilated) and one pointwise
    assert op_cost("dil_conv_5x5", C, H, H, 1) == ((25 * C + C * C) * H * H, 25 * C + C * C + 2 * C)
    # skip_connect: free at stride 1; at stride 2 FactorizedReduce's two 1x1 convs to C/2 each, and a BN
    assert op_cost("skip_connect", C, H, H, 1) == (0, 0)
    assert op_cost("skip_connect", C, H, H, 2) == (2 * C * (C // 2) * 9, 2 * C * (C // 2) + 2 * C)
    assert op_cost("max_pool_3x3", C, H, H, 2) == (0, 0) and op_cost("none", C, H, H, 1) == (0, 0)


@pytest.mark.parametrize("network,size", [("cifar", (32, 32)), ("imagenet", (64, 48))])
def test_a_genotypes_cost_from_the_table_is_what_summary_counts(network, size):
    table = CostTable.build(DARTS_OPS, 4, network=network, init_channels=8, layers=5, image_size=size)
    rng = random.Random(0)
    for genotype in [sample_genotype(rng) for _ in range(4)]:
        net = build_network(network, NetworkConfig(genotype, init_channels=8, layers=5))
        real = summarize(net, (3, *size))
        assert table.of_genotype(genotype) == {"macs": real["macs"], "params": real["params"]}
    assert table.fixed["macs"] > 0 and table.fixed["params"] > 0


def test_expected_cost_of_a_sharp_distribution_is_its_genotypes_cost_and_differentiable():
    table = CostTable.build(DARTS_OPS, 3, init_channels=4, layers=3, image_size=(16, 16))
    genotype = sample_genotype(random.Random(1), nodes=3)
    logits, betas = {}, {}
    for kind in ("normal", "reduce"):
        a = torch.zeros(9, len(DARTS_OPS), dtype=torch.float64)
        b = torch.full((9,), -40.0, dtype=torch.float64)
        for k, (op, j) in enumerate(getattr(genotype, kind)):
            e = [0, 2, 5][k // 2] + j
            a[e, DARTS_OPS.index(op)] = 40.0
            b[e] = 0.0
        logits[kind], betas[kind] = a, b

    def edge_weights(b):
        return torch.cat([torch.softmax(b[s:s + n], 0) for s, n in ((0, 2), (2, 3), (5, 4))])
    for kind in ("macs", "params"):
        got = table.expected(kind, torch.softmax(logits["normal"], -1), torch.softmax(logits["reduce"], -1),
                             edge_weights(betas["normal"]), edge_weights(betas["reduce"]))
        assert float(got) == pytest.approx(table.of_genotype(genotype)[kind], rel=1e-9)
    # the gradient in α (through softmax and the renormalisation without none) against finite differences
    alpha = torch.randn(9, len(DARTS_OPS), dtype=torch.float64, requires_grad=True)
    beta = torch.randn(9, dtype=torch.float64, requires_grad=True)
    f = lambda a, b: table.expected("macs", torch.softmax(a, -1), torch.softmax(a.flip(0), -1),  # noqa: E731
                                    edge_weights(b), None)
    grad_alpha, grad_beta = torch.autograd.grad(f(alpha, beta), (alpha, beta))
    for x, grad in ((alpha, grad_alpha), (beta, grad_beta)):
        numerical = torch.zeros_like(x)
        for i in range(x.numel()):
            step = torch.zeros_like(x).view(-1)
            step[i] = 1e-6
            step = step.view_as(x)
            plus = f(alpha + step, beta) if x is alpha else f(alpha, beta + step)
            minus = f(alpha - step, beta) if x is alpha else f(alpha, beta - step)
            numerical.view(-1)[i] = (plus - minus) / 2e-6
        assert grad.abs().max() > 1 and (numerical - grad).abs().max() < 1e-7 * grad.abs().max()
    assert float(grad_alpha[:, DARTS_OPS.index("none")].abs().max()) < 1e-9  # none is never derived: no cost
    more_sep = alpha.detach().clone()
    more_sep[:, DARTS_OPS.index("sep_conv_5x5")] += 3
    assert f(more_sep, beta) > f(alpha, beta)  # heavier ops, higher cost


def test_tables_round_trip_and_name_bad_input():
    table = CostTable.build(("skip_connect", "sep_conv_3x3"), 2, init_channels=4, layers=3, image_size=(8, 8))
    again = CostTable.from_dict(table.to_dict())
    g = Genotype((("skip_connect", 0), ("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("skip_connect", 2)), (2, 3),
                 (("sep_conv_3x3", 0), ("sep_conv_3x3", 1), ("skip_connect", 2), ("sep_conv_3x3", 0)), (2, 3))
    assert again.of_genotype(g) == table.of_genotype(g)
    with pytest.raises(ConfigError, match="'max_pool_3x3' is not a candidate of normal edge 0"):
        table.of_genotype(Genotype((("max_pool_3x3", 0),) + g.normal[1:], (2, 3), g.reduce, (2, 3)))
    with pytest.raises(ConfigError, match="cost must be one of macs, params, latency, got 'time'"):
        table.expected("time", torch.ones(5, 2) / 2, torch.ones(5, 2) / 2)
    with pytest.raises(ConfigError, match="holds no latency .* dartsnas latency-table"):
        table.expected("latency", torch.ones(5, 2) / 2, torch.ones(5, 2) / 2)
    with pytest.raises(ConfigError, match="not a cost table"):
        CostTable.from_dict({"cells": []})


@pytest.mark.parametrize("order", ["first", "second"])
def test_the_architect_adds_a_penalty_gradient_to_the_alpha_gradient(tiny_net, order):
    from dartsnas.architect import Architect
    net = tiny_net(nodes=2)
    opt = torch.optim.SGD(net.weight_parameters(), lr=0.1, momentum=0.9)
    g = torch.Generator().manual_seed(0)
    train, val = [(torch.randn(4, 3, 8, 8, generator=g), torch.randint(0, 5, (4,), generator=g)) for _ in range(2)]
    arch = Architect(net, opt, order=order, grad_clip=5.0)
    plain = arch.alpha_grad(train, val, 0.1)
    before = [a.detach().clone() for a in net.arch_parameters()]
    arch.terms.append(lambda: 3 * net.alpha_normal.square().sum())
    got = arch.step(train, val, 0.1)
    torch.testing.assert_close(got[0], plain[0] + 6 * before[0])
    torch.testing.assert_close(got[1], plain[1])  # the penalty does not involve α_reduce


def test_a_cost_aware_search_records_its_costs_keeps_its_table_and_lowers_the_cost(tmp_path):
    import json

    from dartsnas.train.search import SearchConfig, search
    from dartsnas.train.checkpoint import read_metrics
    base = dict(dataset="digits", init_channels=4, layers=3, nodes=2, batch_size=32, steps_per_epoch=4, epochs=2,
                arch_lr=0.05, cost_channels=8, cost_layers=5)
    plain = search(SearchConfig(**base), tmp_path / "plain", quiet=True)
    cheap = search(SearchConfig(**base, cost="macs", cost_target=1e5, cost_penalty="linear", cost_weight=5.0),
                   tmp_path / "cheap", quiet=True)
    table = CostTable.from_dict(json.loads((tmp_path / "cheap" / "cost_table.json").read_text()))
    records = read_metrics(tmp_path / "cheap" / "metrics.jsonl")
    assert records[-1]["derived_cost"] == table.of_genotype(cheap.genotype)["macs"]
    assert records[-1]["expected_cost"] < records[0]["expected_cost"]
    assert table.of_genotype(cheap.genotype)["macs"] < table.of_genotype(plain.genotype)["macs"]
    assert "expected_cost" not in plain.metrics[-1]
    # resumed from its first epoch, with its table: the same run
    search(SearchConfig(**{**base, "epochs": 1}, cost="macs", cost_target=1e5, cost_penalty="linear",
                        cost_weight=5.0), tmp_path / "cut", quiet=True)
    resumed = search(SearchConfig(**base, cost="macs", cost_target=1e5, cost_penalty="linear", cost_weight=5.0),
                     tmp_path / "cut", resume=True, quiet=True)
    strip = lambda rs: [{k: v for k, v in r.items() if k not in ("seconds", "images_per_s")} for r in rs]  # noqa: E731
    assert strip(resumed.metrics) == strip(records)
    with pytest.raises(ConfigError, match="cost needs cost_target"):
        SearchConfig(cost="macs").validate()
    # no penalty, the budget kept by derivation alone: the run's genotype and `dartsnas derive` fit it
    from dartsnas.train.search import derive_from_checkpoint
    plain_cost = table.of_genotype(plain.genotype)["macs"]
    target = table.fixed["macs"] + 0.5 * (plain_cost - table.fixed["macs"])
    kept = search(SearchConfig(**base, cost="macs", cost_target=target, cost_weight=0.0, cost_derive="budget"),
                  tmp_path / "kept", quiet=True)
    assert table.of_genotype(kept.genotype)["macs"] <= target < plain_cost
    assert kept.metrics[-1]["derived_cost"] == table.of_genotype(kept.genotype)["macs"]
    assert derive_from_checkpoint(tmp_path / "kept") == kept.genotype
    assert derive_from_checkpoint(tmp_path / "plain") == plain.genotype
    with pytest.raises(ConfigError, match="cost_derive budget needs cost"):
        SearchConfig(cost_derive="budget").validate()


def test_the_budget_reads_k_m_g_suffixes_at_the_command_line_and_in_files(tmp_path, capsys):
    from dartsnas.cli import build_parser
    from dartsnas.config import parse_amount
    from dartsnas.train.search import SearchConfig
    assert parse_amount("300M") == 3e8 and parse_amount("2.5m") == 2.5e6 and parse_amount("7k") == 7e3
    assert parse_amount("1e5") == 1e5
    args = build_parser().parse_args(["search", "cnn", "--cost", "macs", "--cost-target", "300M", "--out", "x"])
    assert args.cost_target == 3e8
    with pytest.raises(SystemExit):
        build_parser().parse_args(["search", "cnn", "--cost-target", "lots", "--out", "x"])
    assert "'lots' is not a number" in capsys.readouterr().err
    assert SearchConfig(cost="params", cost_target="2.5M").cost_target == 2.5e6
    with pytest.raises(ConfigError, match="cost_target: 'lots' is not a number"):
        SearchConfig(cost_target="lots")


def test_derivation_within_a_budget_gives_up_the_weakest_pick_per_cost_saved():
    ops = ("skip_connect", "sep_conv_3x3", "sep_conv_5x5")
    table = CostTable.build(ops, 1, init_channels=4, layers=3, image_size=(8, 8))
    w = torch.tensor([[0.1, 0.3, 0.6], [0.05, 0.45, 0.5]])  # both edges prefer sep_conv_5x5, edge 1 barely
    wr = torch.tensor([[0.01, 0.01, 0.98], [0.01, 0.01, 0.98]])  # the reduction cell insists on it
    top = Genotype((("sep_conv_5x5", 0), ("sep_conv_5x5", 1)), (2,), (("sep_conv_5x5", 0), ("sep_conv_5x5", 1)), (2,))
    cost = table.of_genotype(top)["macs"]
    assert table.within(top, "macs", cost, w, wr) == top  # within the budget already: unchanged
    summed = table.summed("macs")
    step = summed["normal"][1][2] - summed["normal"][1][1]  # sep 5x5 -> 3x3 on the normal cell's edge 1
    got = table.within(top, "macs", cost - step, w, wr)
    assert got.normal == (("sep_conv_5x5", 0), ("sep_conv_3x3", 1)) and got.reduce == top.reduce
    floor = table.within(top, "macs", 1, w, wr)  # below the floor: everything as cheap as it gets
    assert all(op == "skip_connect" for op, _ in floor.normal)
    assert table.of_genotype(floor)["macs"] == min(
        table.of_genotype(Genotype(((a, 0), (b, 1)), (2,), ((c, 0), (d, 1)), (2,)))["macs"]
        for a in ops for b in ops for c in ops for d in ops)
    assert sum(op == "skip_connect" for op, _ in table.within(top, "macs", 1, w, wr, max_skip=1).normal) == 1


def test_derivation_within_a_budget_on_random_alphas_fits_and_keeps_cells_valid():
    table = CostTable.build(DARTS_OPS, 4, init_channels=8, layers=5, image_size=(8, 8))
    from dartsnas.genotype import derive_genotype
    g = torch.Generator().manual_seed(1)
    for _ in range(5):
        wn, wr = (torch.randn(14, 8, generator=g).mul(2).softmax(-1) for _ in range(2))
        top = derive_genotype(wn, wr, DARTS_OPS)
        cost = table.of_genotype(top)["macs"]
        target = table.fixed["macs"] + 0.5 * (cost - table.fixed["macs"])
        got = table.within(top, "macs", target, wn, wr)
        assert table.of_genotype(got)["macs"] <= target
        for cell in (got.normal, got.reduce):
            assert all(cell[2 * i][1] != cell[2 * i + 1][1] and max(cell[2 * i][1], cell[2 * i + 1][1]) < i + 2
                       for i in range(4))


def test_the_derived_penalty_pushes_only_while_the_derived_cell_is_over_budget():
    from dartsnas.methods.budget import CostBudget
    expected = torch.tensor(3.0, requires_grad=True)
    over = CostBudget(cost="macs", cost_target=2.0, cost_weight=4.0, cost_penalty="derived")
    grad, = torch.autograd.grad(over.budget_penalty(expected, derived=2.5), expected)
    assert float(grad) == 2.0  # λ / target
    grad, = torch.autograd.grad(over.budget_penalty(expected, derived=1.5), expected)
    assert float(grad) == 0.0  # the derived cell fits, whatever the expectation
    hinge = CostBudget(cost="macs", cost_target=4.0, cost_penalty="hinge")
    grad, = torch.autograd.grad(hinge.budget_penalty(expected, derived=9.0), expected)
    assert float(grad) == 0.0  # the expectation fits, whatever the cell
    linear = CostBudget(cost="macs", cost_target=4.0, cost_penalty="linear")
    assert float(torch.autograd.grad(linear.budget_penalty(expected, 0.0), expected)[0]) == 0.25
