import json
import random

import pytest
import torch

from dartsnas.cli import main
from dartsnas.errors import GenotypeError
from dartsnas.genotype import Genotype, load_genotype
from dartsnas.nets import NETWORKS, NetworkConfig, build_network, drop_path
from dartsnas.nets.summary import count_parameters
from dartsnas.ops import DARTS_OPS


def _summary(capsys, *args):
    capsys.readouterr()
    assert main(["summary", *args]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("genotype,network,params,with_aux,macs", [
    ("DARTS_V2", "cifar", 3_349_342, 3_825_768, 528.4e6),
    ("DARTS_V1", "cifar", 3_169_414, None, None),
    ("DARTS_V2", "imagenet", 4_718_752, None, 529.9e6),
])
def test_sizes_match_the_paper_and_the_original_code(capsys, genotype, network, params, with_aux, macs):
    info = _summary(capsys, "--genotype", genotype, "--network", network)
    assert info["params"] == pytest.approx(params, rel=0.01)
    if with_aux:
        assert info["params_with_aux"] == pytest.approx(with_aux, rel=0.01)
    if macs:
        assert info["macs"] == pytest.approx(macs, rel=0.01)
    if network == "imagenet":
        assert info["macs"] < 600e6  # the mobile setting's budget


def random_genotype(seed: int, nodes: int = 4) -> Genotype:
    rng = random.Random(seed)
    ops = [op for op in DARTS_OPS if op != "none"]
    cell = lambda: [[rng.choice(ops), j] for i in range(nodes) for j in rng.sample(range(2 + i), 2)]
    concat = list(range(2, 2 + nodes))
    return Genotype.from_dict({"normal": cell(), "normal_concat": concat, "reduce": cell(), "reduce_concat": concat})


@pytest.mark.parametrize("genotype", ["DARTS_V1", "DARTS_V2", "random", "NASNet", "five_nodes"])
@pytest.mark.parametrize("network,size", [("cifar", 32), ("imagenet", 64)])
def test_forward_backward_shapes(genotype, network, size):
    g = {"random": random_genotype(0), "five_nodes": random_genotype(1, nodes=5)}.get(genotype) \
        or load_genotype(genotype)
    torch.manual_seed(0)
    net = build_network(network, NetworkConfig(g, init_channels=8, layers=5, num_classes=7))
    net.drop_path_prob = 0.2
    logits, aux = net.forward_with_aux(torch.randn(2, 3, size, size))
    assert logits.shape == (2, 7) and aux.shape == (2, 7)
    (logits.sum() + 0.4 * aux.sum()).backward()
    assert all(p.grad is not None for p in net.auxiliary_head.parameters())
    net.eval()
    logits, aux = net.forward_with_aux(torch.randn(2, 3, size, size))
    assert logits.shape == (2, 7) and aux is None  # the auxiliary head runs in training only


def test_small_grey_images_and_no_auxiliary_head():
    net = build_network("cifar", NetworkConfig(load_genotype("DARTS_V2"), init_channels=4, layers=3,
                                               in_channels=1, auxiliary=True))
    assert net.forward_with_aux(torch.randn(2, 1, 8, 8))[1].shape == (2, 10)
    bare = build_network("cifar", NetworkConfig(load_genotype("DARTS_V2"), init_channels=4, layers=3, auxiliary=False))
    assert bare.auxiliary_head is None and count_parameters(bare)["params"] == count_parameters(bare)["params_with_aux"]


def test_drop_path_scales_survivors_and_is_off_in_eval():
    torch.manual_seed(0)
    x = torch.ones(10000, 2, 3, 3)
    y = drop_path(x, 0.2, training=True)
    per_example = y.flatten(1)
    assert set(per_example[:, 0].unique().tolist()) == {0.0, 1.25}
    assert (per_example == per_example[:, :1]).all()  # whole examples are dropped
    assert abs((per_example[:, 0] == 0).float().mean().item() - 0.2) < 0.02
    assert torch.equal(drop_path(x, 0.2, training=False), x)
    assert torch.equal(drop_path(x, 0.0, training=True), x)


def test_drop_path_only_on_non_identity_ops_of_a_training_cell():
    g = load_genotype("DARTS_V2")
    net = build_network("cifar", NetworkConfig(g, init_channels=4, layers=3, auxiliary=False)).double()
    net.drop_path_prob = 0.999999  # every non-identity path dropped (almost surely)
    cell = net.cells[0]
    s = torch.randn(4, 12, 8, 8, dtype=torch.float64)
    out = cell(s, s, net.drop_path_prob)
    states = [cell.preprocess0(s), cell.preprocess1(s)]
    # DARTS_V2 normal: node 4 = sep_conv(1) + skip(0), node 5 = skip(0) + dil_conv(2)
    C = 4
    torch.testing.assert_close(out[:, 2 * C:3 * C], states[0])
    torch.testing.assert_close(out[:, 3 * C:4 * C], states[0])
    assert torch.count_nonzero(out[:, :2 * C]) == 0
    net.eval()
    assert torch.count_nonzero(net.cells[0](s, s, net.drop_path_prob)[:, :2 * C]) > 0


def test_bad_genotypes_fail_before_training():
    g = load_genotype("DARTS_V2")
    bad_op = Genotype((("sep_conv_9x9", 0),) + g.normal[1:], g.normal_concat, g.reduce, g.reduce_concat)
    with pytest.raises(GenotypeError, match="unknown op 'sep_conv_9x9'"):
        build_network("cifar", NetworkConfig(bad_op))
    bad_in = Genotype(g.normal, g.normal_concat, (("max_pool_3x3", 3),) + g.reduce[1:], g.reduce_concat)
    with pytest.raises(GenotypeError, match="input 3 does not exist"):
        build_network("cifar", NetworkConfig(bad_in))
    assert set(NETWORKS.names()) == {"cifar", "imagenet", "nb201"}
    with pytest.raises(GenotypeError, match="builds a NAS-Bench-201 cell"):
        build_network("nb201", NetworkConfig(g))


def test_imagenet_stem_reduces_224_to_28():
    net = build_network("imagenet", NetworkConfig(load_genotype("DARTS_V2"), init_channels=8, layers=3))
    s0, s1 = net.stem_forward(torch.randn(1, 3, 224, 224))
    assert s0.shape[-1] == 56 and s1.shape[-1] == 28


@pytest.mark.slow
def test_compiled_cells_compute_what_eager_cells_do_and_keep_parameter_names():
    torch.manual_seed(0)
    config = NetworkConfig(load_genotype("DARTS_V2"), init_channels=4, layers=3)
    eager, compiled = build_network("cifar", config), build_network("cifar", config)
    compiled.load_state_dict(eager.state_dict())
    compiled.compile_cells()
    assert list(compiled.state_dict()) == list(eager.state_dict())
    eager.eval(), compiled.eval()
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        expected, got = eager(x), compiled(x)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    assert all(cell._compiled_call_impl is None for cell in eager.cells)
    assert all(cell._compiled_call_impl is not None for cell in compiled.cells)
