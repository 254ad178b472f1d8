"""The successors' rules as their authors' code has them: GDAS's derivation and step order, P-DARTS's
skip cap, α's gradient clipping, PC-DARTS's ImageNet stem and warm-up, and the named recipes."""
import copy
import json

import pytest
import torch

from dartsnas.architect import Architect
from dartsnas.cli import main
from dartsnas.errors import ConfigError
from dartsnas.genotype import derive_genotype
from dartsnas.methods.gdas import GumbelSampler
from dartsnas.ops import DilatedDepthwiseConv2d, FactorizedReduce
from dartsnas.spaces import ConvSearchSpaceConfig, SearchNetwork
from dartsnas.train.bilevel import search_step
from dartsnas.train.search_config import SEARCH_RECIPES, search_recipe

OPS = ("none", "skip_connect", "sep_conv_3x3")
OPS_DARTS = ConvSearchSpaceConfig().ops


def rows(*values):
    return torch.tensor(values, dtype=torch.float64)


def test_p_darts_skip_cap_drops_the_weakest_chosen_skip_and_the_node_rechooses_op_and_edges():
    """P-DARTS's delete_min_sk_prob / keep_1_on / keep_2_branches (train_search.py): the chosen skip of
    least weight goes, then its node picks its two edges and their ops again from what is left."""
    # node 0: edges from inputs 0, 1; node 1: edges from inputs 0, 1, 2 (columns: none, skip, sep)
    w = rows([0.1, 0.60, 0.30],   # node 0 <- 0: skip
             [0.0, 0.55, 0.40],   # node 0 <- 1: skip
             [0.0, 0.45, 0.05],   # node 1 <- 0: skip (the weakest chosen one)
             [0.0, 0.10, 0.50],   # node 1 <- 1: sep
             [0.9, 0.05, 0.40])   # node 1 <- 2: none is never chosen; sep
    free = derive_genotype(w, w, OPS)
    assert free.normal == (("skip_connect", 0), ("skip_connect", 1), ("sep_conv_3x3", 1), ("skip_connect", 0))
    capped = derive_genotype(w, w, OPS, max_skip=2)
    # node 1 lost its skip; its edge from input 0 is now worth 0.05, so it takes inputs 1 and 2
    assert capped.normal == (("skip_connect", 0), ("skip_connect", 1), ("sep_conv_3x3", 1), ("sep_conv_3x3", 2))
    # one more: of the chosen skips (0.60, 0.55) the weaker goes, and node 0 takes sep on that edge
    assert derive_genotype(w, w, OPS, max_skip=1).normal[:2] == (("skip_connect", 0), ("sep_conv_3x3", 1))
    assert derive_genotype(w, w, OPS, max_skip=2).reduce == free.reduce  # the cap is the normal cell's


def test_gdas_derivation_keeps_the_two_strongest_op_input_pairs_maybe_of_one_input():
    """GDAS's genotype() (search_model_gdas_nasnet.py): every non-none (op, input) pair of a node
    ranked by softmax(α), the top two kept; DARTS's top-k takes two distinct inputs."""
    w = rows([0.05, 0.45, 0.50],   # node 0 <- 0: sep, then skip, both stronger than ...
             [0.80, 0.10, 0.10],   # node 0 <- 1: ... anything here but none
             [0.00, 0.30, 0.20],   # node 1 <- 0
             [0.00, 0.20, 0.35],   # node 1 <- 1
             [0.00, 0.30, 0.30])   # node 1 <- 2: ties with node 1 <- 0's skip, which comes first
    gdas = derive_genotype(w, w, OPS, pairs=True)
    assert gdas.normal == (("sep_conv_3x3", 0), ("skip_connect", 0), ("sep_conv_3x3", 1), ("skip_connect", 0))
    top_k = derive_genotype(w, w, OPS)
    assert top_k.normal[:2] == (("sep_conv_3x3", 0), ("skip_connect", 1))
    net = SearchNetwork(ConvSearchSpaceConfig(init_channels=4, layers=3, nodes=2, ops=OPS, derivation="gdas"))
    with torch.no_grad():
        net.alpha_normal.copy_(w.log().clamp_min(-30).float())
    assert net.genotype().normal[:2] == (("sep_conv_3x3", 0), ("skip_connect", 0))
    with pytest.raises(ConfigError, match="derivation"):
        ConvSearchSpaceConfig(derivation="argmax").validate()


def tiny_search():
    torch.manual_seed(0)
    net = SearchNetwork(ConvSearchSpaceConfig(init_channels=4, layers=3, num_classes=3)).double()
    opt = torch.optim.SGD(net.weight_parameters(), lr=0.1, momentum=0.9)
    g = torch.Generator().manual_seed(1)
    batch = lambda: (torch.randn(4, 3, 8, 8, generator=g, dtype=torch.float64),  # noqa: E731
                     torch.randint(0, 3, (4,), generator=g))
    return net, opt, batch(), batch()


def test_gdas_steps_w_first_then_alpha_on_the_updated_weights():
    """GDAS.py search_func: the w step on the base batch, then the α step on the arch batch."""
    net, opt, train, val = tiny_search()
    twin = copy.deepcopy(net)
    twin_opt = torch.optim.SGD(twin.weight_parameters(), lr=0.1, momentum=0.9)
    arch = Architect(net, opt, grad_clip=5.0)
    search_step(net, arch, opt, train, val, 0.1, 5.0, weights_first=True)
    # by hand, in that order
    twin_opt.zero_grad()
    twin.loss(*train).backward()
    torch.nn.utils.clip_grad_norm_(twin.weight_parameters(), 5.0)
    twin_opt.step()
    grads = torch.autograd.grad(twin.loss(*val), twin.arch_parameters())
    adam = torch.optim.Adam(twin.arch_parameters(), lr=3e-4, betas=(0.5, 0.999), weight_decay=1e-3)
    for p, gr in zip(twin.arch_parameters(), grads):
        p.grad = gr
    adam.step()
    for a, b in zip(net.parameters(), twin.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-15)
    # DARTS's order (α first) differs
    net2, opt2, train2, val2 = tiny_search()
    search_step(net2, Architect(net2, opt2, grad_clip=5.0), opt2, train2, val2, 0.1, 5.0)
    assert not torch.equal(net2.alpha_normal, net.alpha_normal)


def test_alpha_gradient_clipping_scales_the_adam_step_as_clip_grad_norm():
    """P-DARTS / PC-DARTS ImageNet: clip_grad_norm_(α, max) before the Adam step. A clip far below the
    gradient's norm: Adam's ε then shows the scale (Adam alone is nearly scale-free)."""
    net, opt, train, val = tiny_search()
    clipped, plain = copy.deepcopy(net), copy.deepcopy(net)
    grads = torch.autograd.grad(net.loss(*val), net.arch_parameters())
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
    max_norm = 1e-9
    assert norm > 1e3 * max_norm
    Architect(net, opt, arch_grad_clip=max_norm).step(train, val, 0.1)
    for model, scale in ((clipped, max_norm / (norm + 1e-6)), (plain, 1.0)):
        adam = torch.optim.Adam(model.arch_parameters(), lr=3e-4, betas=(0.5, 0.999), weight_decay=1e-3)
        for p, g in zip(model.arch_parameters(), grads):
            p.grad = g * scale
        adam.step()
    torch.testing.assert_close(net.alpha_normal, clipped.alpha_normal, rtol=0, atol=1e-15)
    torch.testing.assert_close(net.alpha_reduce, clipped.alpha_reduce, rtol=0, atol=1e-15)
    assert (net.alpha_normal - plain.alpha_normal).abs().max() > 1e-5


def test_pc_darts_imagenet_stem_is_three_c_wide_and_the_first_cell_reduces_s0():
    """model_search_imagenet.py: C_curr = 3C; stem0 3 -> 3C/2 -> 3C (stride 4), stem1 3C -> 3C (stride 8)."""
    net = SearchNetwork(ConvSearchSpaceConfig(init_channels=16, layers=8, stem="imagenet", partial_channels=2))
    x = torch.randn(1, 3, 64, 64)
    s0 = net.stem0(x)
    s1 = net.stem1(s0)
    assert [m.out_channels for m in net.stem0 if isinstance(m, torch.nn.Conv2d)] == [24, 48]
    assert s0.shape == (1, 48, 16, 16) and s1.shape == (1, 48, 8, 8)
    first = net.cells[0]
    assert isinstance(first.preprocess0, FactorizedReduce)
    assert first.preprocess0(s0).shape == first.preprocess1(s1).shape == (1, 16, 8, 8)
    assert [i for i, c in enumerate(net.cells) if c.reduction] == [2, 5]


def test_recipes_set_the_authors_defaults_and_any_flag_overrides_them():
    pdarts = search_recipe(progressive=True)  # --progressive implies P-DARTS's recipe
    assert (pdarts.recipe, pdarts.batch_size, pdarts.arch_lr, pdarts.lr_min, pdarts.arch_grad_clip, pdarts.epochs,
            pdarts.max_skip) == ("pdarts", 96, 6e-4, 0.0, 5.0, 75, 2)
    assert search_recipe(progressive=True, batch_size=32).batch_size == 32
    gdas = search_recipe(sampler="gdas")
    assert (gdas.recipe, gdas.epochs, gdas.batch_size, gdas.weight_decay, gdas.layers, gdas.derivation,
            gdas.search_network, gdas.nesterov) == ("gdas", 250, 256, 5e-4, 6, "gdas", "gdas", True)
    assert search_recipe(sampler="gdas", reduce_cell="gdas").recipe == "gdas-frc"
    assert search_recipe(recipe="darts").order == "second" and search_recipe(recipe="darts-v1").order == "first"
    pc = search_recipe(recipe="pcdarts")
    assert (pc.partial_channels, pc.batch_size, pc.lr, pc.arch_lr, pc.arch_start_epoch, pc.arch_grad_clip) == \
        (4, 256, 0.1, 6e-4, 15, None)
    # PC-DARTS's ImageNet search warms up only above batch 256, as its script does; a flag is a flag
    assert search_recipe("imagenet").warmup_epochs == 5
    assert search_recipe("imagenet", batch_size=256).warmup_epochs == 0
    assert search_recipe("imagenet", batch_size=256, warmup_epochs=3).warmup_epochs == 3
    assert search_recipe(recipe="pcdarts-imagenet").dataset == "imagenet"
    assert search_recipe().recipe == "none" and search_recipe().batch_size == 64  # dartsnas's defaults
    with pytest.raises(ConfigError, match="recipe"):
        search_recipe(recipe="enas")
    assert set(SEARCH_RECIPES) == {"darts", "darts-v1", "pdarts", "pcdarts", "pcdarts-imagenet", "gdas", "gdas-frc",
                                   "beta-darts", "drnas"}
    assert search_recipe(recipe="beta-darts").regularizer == "beta-decay"


def test_a_gdas_search_records_its_recipe_and_derivation_and_derive_can_take_the_other(tmp_path, capsys):
    out = tmp_path / "gdas"
    assert main(["search", "cnn", "--recipe", "gdas", "--dataset", "digits", "--init-channels", "4", "--epochs", "1",
                 "--batch-size", "16", "--steps-per-epoch", "2", "--quiet", "--out", str(out)]) == 0
    config = json.loads((out / "config.json").read_text())
    assert (config["recipe"], config["derivation"], config["layers"], config["weight_decay"], config["sampler"],
            config["search_network"], config["nesterov"]) == ("gdas", "gdas", 6, 5e-4, "gdas", "gdas", True)
    capsys.readouterr()
    assert main(["derive", str(out)]) == 0
    assert json.loads(capsys.readouterr().out) == json.loads((out / "genotype.json").read_text())
    assert main(["derive", str(out), "--derivation", "top-k"]) == 0
    top_k = json.loads(capsys.readouterr().out)
    assert all(len({j for _, j in top_k["normal"][2 * i:2 * i + 2]}) == 2 for i in range(4))  # distinct inputs


@pytest.mark.parametrize("C, N, frc, authors", [(4, 1, False, 75806), (8, 1, True, 29058), (16, 2, False, 1343258)])
def test_gdas_search_network_has_the_authors_parts_and_parameter_count(C, N, frc, authors):
    """xautodl 1.0.0's NASNetworkGDAS(_FRC)(C, N, 4, 4, 3, 10, DARTS_SPACE, affine=False, True) has
    ``authors`` parameters (α included; counted with it installed). benchmarks/against_xautodl.py holds
    the forward pass, ∇w and ∇α against it in float64, weights copied across."""
    config = ConvSearchSpaceConfig(init_channels=C, layers=3 * N, num_classes=10, search_network="gdas",
                                   reduce_cell="gdas" if frc else "searched")
    net = SearchNetwork(config)
    assert sum(p.numel() for p in net.parameters()) == authors
    bn, relu = net.lastact
    assert isinstance(bn, torch.nn.BatchNorm2d) and bn.affine and isinstance(relu, torch.nn.ReLU)
    edges = [edge for cell in net.cells for edge in getattr(cell, "edges", ())]
    pools = [op for edge in edges for name, op in zip(OPS_DARTS, edge.ops) if "pool" in name]
    assert pools and all(isinstance(op, (torch.nn.AvgPool2d, torch.nn.MaxPool2d)) for op in pools)  # no BN after
    convs = [m for cell in net.cells for m in cell.modules() if isinstance(m, torch.nn.Conv2d)]
    assert all((m.bias is None) == isinstance(m, DilatedDepthwiseConv2d) for m in convs)  # depthwise ones lack one
    assert net.stem[0].bias is None
    darts = SearchNetwork(ConvSearchSpaceConfig(init_channels=C, layers=3 * N, num_classes=10,
                                                reduce_cell="gdas" if frc else "searched"))
    assert darts.lastact is None and all(m.bias is None for m in darts.modules() if isinstance(m, torch.nn.Conv2d))
    x = torch.randn(2, 3, 8, 8)
    assert net(x).shape == (2, 10)


def test_gdas_search_network_biases_cancel_in_training_batch_norm_but_not_in_evaluation():
    """Why GDAS's biases are built: before a non-affine BatchNorm they change nothing in training, but the
    running mean holds only part of them, so the evaluation figures differ."""
    torch.manual_seed(0)
    net = SearchNetwork(ConvSearchSpaceConfig(init_channels=4, layers=3, num_classes=5, search_network="gdas")).double()
    zeroed = copy.deepcopy(net)
    with torch.no_grad():
        for m in zeroed.modules():
            if isinstance(m, torch.nn.Conv2d) and m.bias is not None:
                m.bias.zero_()
    x = torch.randn(4, 3, 8, 8, dtype=torch.float64)
    torch.testing.assert_close(zeroed(x), net(x), rtol=1e-12, atol=1e-12)
    net.eval(), zeroed.eval()
    assert (zeroed(x) - net(x)).abs().max() > 1e-3


def test_the_imagenet_warm_up_is_flat(tmp_path):
    from dartsnas.train.search import Search
    config = search_recipe("digits", init_channels=4, layers=3, batch_size=16, steps_per_epoch=1, epochs=4,
                           warmup_epochs=2, lr=0.1, lr_min=0.0)
    run = Search(config, tmp_path / "r", quiet=True)
    lrs = []
    for epoch in range(4):
        run.epoch = epoch
        lrs.append(run.epoch_start()["lr"])
    assert lrs == pytest.approx([0.05, 0.1, 0.1 * (1 + 0.0) / 2, 0.1 * (1 + torch.cos(torch.tensor(0.75 * torch.pi))
                                                                         .item()) / 2])


def test_gumbel_sampler_is_unchanged_by_the_form_of_the_mixed_op():
    sampler = GumbelSampler(seed=3, tau=1.0)
    weights, index = sampler.sample(torch.zeros(2, 4))
    assert torch.equal(weights.detach(), torch.nn.functional.one_hot(index, 4).float())


def test_the_recurrent_search_recipes_are_darts_script_with_its_order():
    from dartsnas.train.commands import RUNS
    build = RUNS["search-rnn"].build
    darts, v1, plain = build(recipe="darts"), build(recipe="darts-v1"), build()
    assert (darts.order, v1.order, plain.order, plain.recipe, darts.recipe) == ("second", "first", "first", "none", "darts")
    assert (darts.lr, darts.batch_size, darts.grad_clip, darts.weight_decay, darts.arch_lr, darts.tar, darts.dropout_x) \
        == (20.0, 256, 0.25, 5e-7, 3e-3, 1e-3, 0.75)
    assert build(recipe="darts", order="first", bptt=20).order == "first"  # a flag overrides the recipe
    with pytest.raises(ConfigError, match="recipe"):
        build(recipe="enas")
