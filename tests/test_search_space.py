import pytest
import torch
from torch import nn

from dartsnas.errors import ConfigError
from dartsnas.ops import DARTS_OPS
from dartsnas.spaces import ConvSearchSpaceConfig, SearchNetwork


def test_cifar_search_network_has_the_originals_weight_count():
    net = SearchNetwork(ConvSearchSpaceConfig(init_channels=16, layers=8, num_classes=10))
    assert sum(p.numel() for p in net.weight_parameters()) == 1_930_618
    assert [a.shape for a in net.arch_parameters()] == [(14, 8), (14, 8)]
    assert all(a.abs().max() < 1e-2 for a in net.arch_parameters())  # 1e-3 * randn
    assert len(net.weight_parameters()) + 2 == len(list(net.parameters()))


def test_reductions_at_a_third_and_two_thirds_and_non_affine_bn(tiny_net):
    net = tiny_net(layers=6)
    assert [c.reduction for c in net.cells] == [False, False, True, False, True, False]
    bns = [m for m in net.cells.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns and not any(m.affine for m in bns)
    assert net.stem[1].affine  # the stem BN keeps its affine parameters, as the original


@pytest.mark.parametrize("in_channels,size,nodes", [(3, 32, 4), (1, 8, 4), (3, 13, 3), (2, 16, 5)])
def test_any_image_size_channels_and_nodes(tiny_net, in_channels, size, nodes):
    net = tiny_net(in_channels=in_channels, nodes=nodes)
    edges = sum(2 + i for i in range(nodes))
    assert net.alpha_reduce.shape == (edges, 8)
    out = net(torch.randn(2, in_channels, size, size))
    assert out.shape == (2, 5)
    net.loss(torch.randn(2, in_channels, size, size), torch.tensor([0, 4])).backward()
    assert net.alpha_normal.grad is not None and net.alpha_reduce.grad.abs().sum() > 0


def test_cell_output_concatenates_the_intermediate_nodes(tiny_net):
    net = tiny_net(init_channels=4, nodes=4)
    x = net.stem(torch.randn(2, 3, 8, 8))
    w = net.arch_weights()[0]
    assert net.cells[0](x, x, w).shape == (2, 4 * 4, 8, 8)


def test_bad_space_configs():
    for kw, msg in [({"layers": 2}, "layers must be >= 3"), ({"nodes": 0}, "nodes must be >= 1"),
                    ({"ops": ()}, "op set is empty"), ({"ops": ("none",)}, "other than 'none'"),
                    ({"ops": ("skip_connect", "skip_connect")}, "repeated op")]:
        with pytest.raises(ConfigError, match=msg):
            SearchNetwork(ConvSearchSpaceConfig(**kw))


def _saved_activation_bytes(model, x):
    """Bytes autograd keeps for the backward pass of one forward: the activation memory of a step."""
    total = [0]

    def pack(t):
        total[0] += t.numel() * t.element_size()
        return t
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(x).sum()
    return total[0]


def test_partial_channels_shapes_memory_and_alpha_beta_derivation():
    from dartsnas.spaces.conv import MixedOp, SearchNetwork, channel_shuffle
    from dartsnas.spaces.conv_config import ConvSearchSpaceConfig
    torch.manual_seed(0)
    x = torch.randn(2, 8, 6, 6)
    for stride in (1, 2):
        op = MixedOp(8, stride, DARTS_OPS, partial=4)
        out = op(x, torch.full((8,), 1 / 8))
        assert out.shape == (2, 8, 6 // stride, 6 // stride)
        # 2 of 8 channels go through the ops; the other 6 bypass them (max-pooled when reducing).
        bypass = x[:, 2:] if stride == 1 else torch.nn.functional.max_pool2d(x[:, 2:], 2)
        unshuffled = out.view(2, 2, 4, *out.shape[2:]).transpose(1, 2).reshape(out.shape)
        torch.testing.assert_close(unshuffled[:, 2:], bypass)
    assert torch.equal(channel_shuffle(torch.arange(8.).view(1, 8, 1, 1), 4).flatten(),
                       torch.tensor([0., 2, 4, 6, 1, 3, 5, 7]))

    plain = SearchNetwork(ConvSearchSpaceConfig(init_channels=8, layers=5, num_classes=10))
    pc = SearchNetwork(ConvSearchSpaceConfig(init_channels=8, layers=5, num_classes=10, partial_channels=4))
    assert len(pc.arch_parameters()) == 4 and pc.beta_normal.shape == (14,)
    images = torch.randn(8, 3, 16, 16)
    assert pc(images).shape == (8, 10)
    assert _saved_activation_bytes(pc, images) < 0.5 * _saved_activation_bytes(plain, images)

    with torch.no_grad():  # α alone would pick inputs 0 and 1 of node 0's three... β says otherwise
        pc.alpha_normal.zero_()
        pc.alpha_normal[:, DARTS_OPS.index("sep_conv_3x3")] = 2.0
        pc.beta_normal.zero_()
        pc.beta_normal[2 + 1] = 3.0  # node 1: edge from input 1
        pc.beta_normal[2 + 2] = 2.0  # node 1: edge from node 0
    node1 = pc.genotype().normal[2:4]
    assert sorted(j for _, j in node1) == [1, 2]
    e_normal, _ = pc.edge_weights()
    torch.testing.assert_close(e_normal[:2].sum(), torch.tensor(1.0))  # a softmax per node
    with pytest.raises(ConfigError, match="partial_channels 3 must divide init_channels 8"):
        SearchNetwork(ConvSearchSpaceConfig(init_channels=8, layers=5, partial_channels=3))


def test_mixing_weights_keep_the_models_precision():
    """softmax(α) of a float64 model stays float64 (gradient checks to 1e-12); half precision is lifted."""
    from dartsnas.spaces import RecurrentSearchModel, RecurrentSearchSpaceConfig
    from dartsnas.spaces.base import mixing_weights
    net = SearchNetwork(ConvSearchSpaceConfig(init_channels=4, layers=3, num_classes=5, partial_channels=2)).double()
    rnn = RecurrentSearchModel(RecurrentSearchSpaceConfig(vocab_size=10, emsize=4, nhid=4, nodes=2)).double()
    for w, a in [*zip(net.arch_weights(), net.arch_parameters()), (rnn.arch_weights(), rnn.alpha)]:
        assert w.dtype == torch.float64
        torch.testing.assert_close(w, torch.softmax(a, -1), rtol=0, atol=1e-15)
    assert all(e.dtype == torch.float64 for e in net.edge_weights())
    assert mixing_weights(torch.zeros(2, 3, dtype=torch.bfloat16)).dtype == torch.float32


def test_the_imagenet_stem_searches_large_images_at_an_eighth_of_the_pixels():
    from dartsnas.architect import Architect
    torch.manual_seed(0)
    config = ConvSearchSpaceConfig(init_channels=8, layers=3, num_classes=5, nodes=2, stem="imagenet")
    net = SearchNetwork(config)
    assert config.downsampling == 32 and ConvSearchSpaceConfig().downsampling == 4
    seen = []
    net.cells[0].register_forward_hook(lambda m, inputs, out: seen.append([tuple(t.shape[2:]) for t in inputs[:2]]))
    x, y = torch.randn(2, 3, 128, 128), torch.tensor([0, 3])
    assert net(x).shape == (2, 5)
    assert seen[0] == [(32, 32), (16, 16)]  # s0 after two stride-2 convs, s1 after the third
    opt = torch.optim.SGD(net.weight_parameters(), lr=0.1)
    before = [a.detach().clone() for a in net.arch_parameters()]
    Architect(net, opt, order="second", grad_clip=5.0).step((x, y), (x, y), 0.1)
    assert all(not torch.equal(a, b) for a, b in zip(before, net.arch_parameters()))
    with pytest.raises(ConfigError, match="must be one of cifar, imagenet"):
        ConvSearchSpaceConfig(stem="vit").validate()


def test_search_cnn_on_128_px_folders_with_the_imagenet_stem_and_recomputation(digits_folder, tmp_path, capsys):
    from dartsnas.cli import main
    flags = ["search", "cnn", "--dataset", "imagefolder", "--data-dir", str(digits_folder), "--init-channels", "4",
             "--layers", "3", "--nodes", "2", "--batch-size", "8", "--epochs", "1", "--steps-per-epoch", "1",
             "--stem", "imagenet", "--recompute", "edge", "--quiet"]
    assert main([*flags, "--image-size", "128", "--out", str(tmp_path / "a")]) == 0
    assert (tmp_path / "a" / "genotype.json").is_file()
    assert main([*flags, "--image-size", "24", "--out", str(tmp_path / "b")]) == 1
    assert "the search network with --stem imagenet downsamples 32x: 24x24 images are too small" in capsys.readouterr().err


@pytest.mark.parametrize("side", [28, 27, 13])
def test_partial_channels_search_odd_sized_maps(side):
    # a reduction edge halves an odd side to ceil(H/2) in its ops and in its bypassed channels alike
    net = SearchNetwork(ConvSearchSpaceConfig(init_channels=4, layers=3, nodes=2, num_classes=5, partial_channels=2))
    x = torch.randn(2, 3, side, side)
    out = net(x)
    assert out.shape == (2, 5)
    net.loss(x, torch.tensor([0, 1])).backward()
