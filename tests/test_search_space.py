import pytest
import torch
from torch import nn

from dartsnas.errors import ConfigError
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
