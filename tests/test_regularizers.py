"""The robust DARTS variants: SDARTS-RS, DARTS-, the RobustDARTS op sets; one step each against a hand
computation, resume bit-identical with each."""
import copy
import json
import dataclasses
import signal

import pytest
import torch

from dartsnas.architect import Architect
from dartsnas.errors import ConfigError, Interrupted
from dartsnas.ops import OP_SETS, Noise
from dartsnas.methods.darts_minus import darts_minus_beta
from dartsnas.methods.sdarts import perturb_mixing_weights, sdarts_epsilon
from dartsnas.spaces import ConvSearchSpaceConfig, SearchNetwork
from dartsnas.train.bilevel import search_step
from dartsnas.train.search import Search, SearchConfig


def test_schedules():
    assert [darts_minus_beta(e, 4) for e in range(4)] == [1.0, 0.75, 0.5, 0.25]
    assert sdarts_epsilon(0, 10) == pytest.approx(0.03) and sdarts_epsilon(5, 10) == pytest.approx(0.165)


def test_perturbed_mixing_weights_by_hand():
    w = torch.tensor([[0.7, 0.2, 0.1], [0.05, 0.05, 0.9]])
    g = torch.Generator().manual_seed(0)
    noise = (2 * torch.rand(w.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64) - 1) * 0.3
    expected = (w.double() + noise).clamp(0, 1)
    expected = (expected / expected.sum(-1, keepdim=True)).float()
    torch.testing.assert_close(perturb_mixing_weights(w, 0.3, g), expected)
    # a row the clamp empties keeps its largest perturbed entry: here every entry is pushed below 0
    empty = perturb_mixing_weights(torch.tensor([[-5.0, -4.0, -6.0]]), 0.1, torch.Generator().manual_seed(1))
    assert torch.equal(empty, torch.tensor([[0.0, 1.0, 0.0]]))


def _net(tiny_net, **kw):
    net = tiny_net(**kw)
    with torch.no_grad():
        for a in net.arch_parameters():
            a.normal_(0, 0.5)
    return net


def _batches():
    g = torch.Generator().manual_seed(2)
    return [(torch.randn(8, 3, 8, 8, generator=g), torch.randint(0, 5, (8,), generator=g)) for _ in range(2)]


def test_sdarts_rs_weight_step_sees_the_perturbed_weights_and_the_alpha_step_does_not(tiny_net):
    net = _net(tiny_net)
    train, val = _batches()
    reference, plain = copy.deepcopy(net), copy.deepcopy(net)
    opts = [torch.optim.SGD(n.weight_parameters(), lr=0.1, momentum=0.9) for n in (net, reference)]
    archs = [Architect(n, o, order="first", grad_clip=5.0) for n, o in zip((net, reference), opts)]
    perturbed = tuple(perturb_mixing_weights(w, 0.3, torch.Generator().manual_seed(5)) for w in net.arch_weights())
    search_step(net, archs[0], opts[0], train, val, 0.1, 5.0, perturb=lambda: perturbed)
    assert net.mixing_override is None
    # by hand: the same α step, then a weight step of the network mixing with the perturbed weights
    archs[1].step(train, val, 0.1)
    reference.mixing_override = tuple(w.clone() for w in perturbed)
    opts[1].zero_grad()
    reference.loss(*train).backward()
    reference.mixing_override = None
    torch.nn.utils.clip_grad_norm_(reference.weight_parameters(), 5.0)
    opts[1].step()
    for a, b in zip(net.parameters(), reference.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    # without the perturbation the same step ends elsewhere (and α where the smoothed step put it)
    opt = torch.optim.SGD(plain.weight_parameters(), lr=0.1, momentum=0.9)
    search_step(plain, Architect(plain, opt, order="first", grad_clip=5.0), opt, train, val, 0.1, 5.0)
    assert all(torch.equal(a, b) for a, b in zip(plain.arch_parameters(), net.arch_parameters()))
    assert any(not torch.equal(a, b) for a, b in zip(plain.weight_parameters(), net.weight_parameters()))


def test_darts_minus_adds_beta_times_the_auxiliary_skip_outside_alpha(tiny_net):
    torch.manual_seed(0)
    with_aux = SearchNetwork(ConvSearchSpaceConfig(init_channels=4, layers=3, num_classes=5, auxiliary_skip=True))
    edge = with_aux.cells[1].edges[0]  # a reduction cell's stride-2 edge: a factorised reduction
    assert type(edge.aux).__name__ == "FactorizedReduce" and isinstance(with_aux.cells[0].edges[0].aux, torch.nn.Identity)
    x = torch.randn(2, 8, 8, 8)
    w = with_aux.arch_weights()[1][0]
    plain = edge(x, w)
    with_aux.aux_beta = 0.3  # the network sets every edge's weight of the auxiliary skip
    assert edge.aux_beta == 0.3
    torch.testing.assert_close(edge(x, w), plain + 0.3 * edge.aux(x))
    # the auxiliary skip is no op of α: same α, same genotype as the plain space
    plain = SearchNetwork(ConvSearchSpaceConfig(init_channels=4, layers=3, num_classes=5))
    plain.alpha_normal.data.copy_(with_aux.alpha_normal.data)
    plain.alpha_reduce.data.copy_(with_aux.alpha_reduce.data)
    assert plain.genotype() == with_aux.genotype()
    with pytest.raises(ConfigError, match="regularizer darts-minus and partial_channels do not combine"):
        SearchNetwork(ConvSearchSpaceConfig(init_channels=4, layers=3, partial_channels=2, auxiliary_skip=True))


def test_named_op_sets_and_the_noise_op():
    assert SearchConfig(ops=("s2",)).ops == ("skip_connect", "sep_conv_3x3") == OP_SETS["s2"]
    assert SearchConfig(ops=("s4",)).ops == ("noise", "sep_conv_3x3")
    torch.manual_seed(0)
    out = Noise(2)(torch.zeros(3, 4, 8, 8))
    assert out.shape == (3, 4, 4, 4) and 0.5 < float(out.std()) < 1.5
    net = SearchNetwork(ConvSearchSpaceConfig(init_channels=4, layers=3, ops=OP_SETS["s4"]))
    assert net(torch.randn(2, 3, 8, 8)).shape == (2, 10)
    with pytest.raises(ConfigError, match="regularizer must be one of"):
        SearchConfig(regularizer="sdarts-adv").validate()


@pytest.mark.parametrize("regularizer,order,partial", [("sdarts-rs", "second", 2), ("darts-minus", "first", 1)])
def test_resume_mid_epoch_is_bit_identical(tmp_path, regularizer, order, partial):
    from dartsnas.train.checkpoint import load_checkpoint
    config = SearchConfig(dataset="digits", init_channels=4, layers=3, nodes=2, batch_size=16, steps_per_epoch=3,
                          epochs=2, regularizer=regularizer, ops=("s3",), checkpoint_every=100, order=order,
                          partial_channels=partial)
    Search(config, tmp_path / "whole", quiet=True).execute()
    run = Search(config, tmp_path / "cut", quiet=True)
    run.stop_signal = signal.SIGTERM  # preempted: checkpoint after the first step
    with pytest.raises(Interrupted):
        run.execute()
    Search(dataclasses.replace(config), tmp_path / "cut", resume=True, quiet=True).execute()
    a, b = load_checkpoint(tmp_path / "whole"), load_checkpoint(tmp_path / "cut")
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    if regularizer == "sdarts-rs":  # its noise stream, resumed where it was
        assert torch.equal(a["smoothing"], b["smoothing"])
    else:
        assert "smoothing" not in a  # a method not selected keeps nothing in the checkpoint


def test_s1_has_its_own_op_pair_on_every_edge(tmp_path):
    import random

    from dartsnas.cli import main
    from dartsnas.genotype import derive_genotype
    from dartsnas.ops import CONV_OPS, EDGE_OP_SETS
    from dartsnas.plot import plot_alphas
    from dartsnas.spaces.cnn import sample_genotype
    table = EDGE_OP_SETS["s1"]
    assert all(len(table[c]) == 14 and all(len(pair) == 2 for pair in table[c]) for c in ("normal", "reduce"))
    assert table["normal"][5] == ("max_pool_3x3", "skip_connect") and table["reduce"][6] == ("max_pool_3x3", "sep_conv_3x3")
    assert {op for c in table.values() for pair in c for op in pair} <= set(CONV_OPS.names())
    torch.manual_seed(0)
    net = SearchNetwork(ConvSearchSpaceConfig(init_channels=4, layers=3, ops=("s1",), num_classes=10, in_channels=1))
    assert net.alpha_normal.shape == net.alpha_reduce.shape == (14, 2)
    # each edge holds its pair's modules: the pooling ops of S1 come wrapped with a BatchNorm
    reduction_edge = net.cells[1].edges[1]  # reduce edge 1: max_pool_3x3, dil_conv_3x3
    assert [type(op).__name__ for op in reduction_edge.ops] == ["Sequential", "DilConv"]
    # column 1 strongest everywhere: every edge's second op, by the table, at the two strongest edges of each node
    with torch.no_grad():
        net.alpha_normal.copy_(torch.tensor([[0.0, 1.0 + e / 100] for e in range(14)]))
        net.alpha_reduce.copy_(torch.tensor([[0.0, 1.0 + e / 100] for e in range(14)]))
    g = net.genotype()
    assert g.normal[:2] == ((table["normal"][1][1], 1), (table["normal"][0][1], 0))
    assert g.reduce[2:4] == ((table["reduce"][4][1], 2), (table["reduce"][3][1], 1))
    assert g.normal[-2:] == tuple((table["normal"][r][1], r - 9) for r in (13, 12))
    # --max-skip excludes skip_connect on the right column of each edge
    capped = derive_genotype(*net.arch_weights(), net.config.edge_ops("normal"), max_skip=0,
                             reduce_op_names=net.config.edge_ops("reduce"))
    assert not any(op == "skip_connect" for op, _ in capped.normal)
    with pytest.raises(ConfigError, match="4-node cell; this cell has 9 edges"):
        ConvSearchSpaceConfig(nodes=3, ops=("s1",)).validate()
    sampled = sample_genotype(random.Random(3), 4, ("s1",))
    for kind in ("normal", "reduce"):
        for pos, (op, j) in enumerate(getattr(sampled, kind)):
            assert op in table[kind][[0, 2, 5, 9][pos // 2] + j]
    # a search in S1 through the command line; its α plots with each edge's own ops
    out = tmp_path / "s1"
    assert main(["search", "cnn", "--dataset", "digits", "--ops", "s1", "--init-channels", "4", "--layers", "3",
                 "--batch-size", "16", "--steps-per-epoch", "2", "--epochs", "1", "--quiet", "--out", str(out)]) == 0
    genotype = json.loads((out / "genotype.json").read_text())
    for pos, (op, j) in enumerate(genotype["normal"]):
        assert op in table["normal"][[0, 2, 5, 9][pos // 2] + j]
    paths = plot_alphas(out, tmp_path / "alphas.png")
    assert [p.name for p in paths] == ["alphas_normal.png", "alphas_reduce.png"] and all(p.stat().st_size for p in paths)
