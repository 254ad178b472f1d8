"""NAS-Bench-201's network (Dong & Yang, ICLR 2020; xautodl ``TinyNetwork``): a 3x3 stem to C
channels, three stages of N cells at C, 2C and 4C with a residual reduction block between them,
BN-ReLU, global pooling and the classifier. The benchmark trains C=16, N=5 (17 blocks).

The parts are xautodl's: ``cell_infers/tiny_network.py``, ``cell_infers/cells.py`` (InferCell) and
``cell_operations.py`` (ResNetBasicblock, the ops). One departure, for odd map sizes only: the
reduction block's shortcut pools with ``ceil_mode`` so that it meets its stride-2 conv's
ceil(H/2) (xautodl's floor fails there); on even sizes, the benchmark's, nothing changes.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..errors import GenotypeError
from ..genotype import ZERO_OP
from ..ops import CONV_OPS, ReLUConvBN, build_op
from .conv import NETWORKS, NetworkConfig


class ResNetBlock(nn.Module):
    """xautodl's ResNetBasicblock: two ReLU-conv-BN 3x3 convs (the first strided) plus a shortcut,
    2x2 average pooling and a 1x1 conv when strided."""

    def __init__(self, c_in: int, c_out: int, stride: int, affine: bool = True) -> None:
        super().__init__()
        self.conv_a = ReLUConvBN(c_in, c_out, 3, stride, 1, affine)
        self.conv_b = ReLUConvBN(c_out, c_out, 3, 1, 1, affine)
        if stride == 2:
            self.downsample: nn.Module | None = nn.Sequential(
                nn.AvgPool2d(2, stride=2, padding=0, ceil_mode=True), nn.Conv2d(c_in, c_out, 1, bias=False))
        elif c_in != c_out:
            self.downsample = ReLUConvBN(c_in, c_out, 1, 1, 0, affine)
        else:
            self.downsample = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x if self.downsample is None else self.downsample(x)
        return residual + self.conv_b(self.conv_a(x))


def stage_layout(C: int, N: int) -> list[tuple[int, bool]]:
    """(channels, is a reduction block) of every block: N cells at C, a block to 2C, N cells, a block
    to 4C, N cells (xautodl's ``layer_channels`` and ``layer_reductions``)."""
    return ([(C, False)] * N + [(2 * C, True)] + [(2 * C, False)] * N + [(4 * C, True)] + [(4 * C, False)] * N)


class InferCell201(nn.Module):
    """A NAS-Bench-201 cell of a genotype (xautodl InferCell): every edge's op, ``none`` edges
    contributing nothing (their zero output is not computed)."""

    def __init__(self, genotype, C: int) -> None:
        super().__init__()
        self.edges = list(genotype.edges)
        self.nodes = genotype.nodes
        self.ops = nn.ModuleList([build_op(op, C, 1, affine=True) for op, _ in self.edges])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        states, row = [x], 0
        for i in range(1, self.nodes + 1):
            total = None
            for j in range(i):
                op, _ = self.edges[row + j]
                if op != ZERO_OP:
                    y = self.ops[row + j](states[j])
                    total = y if total is None else total + y
            row += i
            states.append(torch.zeros_like(x) if total is None else total)
        return states[-1]


@NETWORKS.register("nb201")
class Network201(nn.Module):
    """The benchmark's network for a NAS-Bench-201 genotype (``config.layers`` is N, cells per stage)."""

    downsampling = 4  # two stride-2 residual blocks

    def __init__(self, config: NetworkConfig) -> None:
        super().__init__()
        genotype = config.genotype
        if not hasattr(genotype, "to_str"):
            raise GenotypeError("the nb201 network builds a NAS-Bench-201 cell (an arch string such as "
                                "|nor_conv_3x3~0|+|...|), not a DARTS genotype")
        for op, _ in genotype.edges:
            if op not in CONV_OPS:
                raise GenotypeError(f"unknown op {op!r} (known: {', '.join(CONV_OPS.names())})")
        self.config = config
        C, N = config.init_channels, config.layers
        self.stem = nn.Sequential(nn.Conv2d(config.in_channels, C, 3, padding=1, bias=False), nn.BatchNorm2d(C))
        self.cells = nn.ModuleList()
        C_prev = C
        for C_curr, reduction in stage_layout(C, N):
            self.cells.append(ResNetBlock(C_prev, C_curr, 2) if reduction else InferCell201(genotype, C_curr))
            C_prev = C_curr
        self.lastact = nn.Sequential(nn.BatchNorm2d(C_prev), nn.ReLU(inplace=True))
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(C_prev, config.num_classes)
        self.drop_path_prob = 0.0  # read by the training loop; the benchmark's recipe has none

    def forward_with_aux(self, x: torch.Tensor) -> tuple[torch.Tensor, None]:
        """Logits and no auxiliary logits (the benchmark's network has no auxiliary head)."""
        s = self.stem(x)
        for cell in self.cells:
            s = cell(s)
        return self.classifier(torch.flatten(self.global_pooling(self.lastact(s)), 1)), None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_with_aux(x)[0]

    def compile_cells(self, **options) -> None:
        """Run every block through torch.compile."""
        for i, cell in enumerate(self.cells):
            self.cells[i] = torch.compile(cell, **options)


def benchmark_cost(model: nn.Module, image_size: tuple[int, int] = (32, 32), in_channels: int = 3) -> dict[str, float]:
    """FLOPs (millions, per image) and parameters (millions) as NAS-Bench-201 records them (xautodl
    ``utils/flop_benchmark.py`` ``get_model_infos``): every conv's kh·kw·Cin·Cout/groups multiply-adds per
    output position plus its bias, every linear layer's in·out plus its bias; no pooling, BN or
    activation; parameters counted in 1e6."""
    total = [0.0]

    def conv(m: nn.Conv2d, _: Any, out: torch.Tensor) -> None:
        positions = out.shape[0] * out.shape[2] * out.shape[3]
        total[0] += m.kernel_size[0] * m.kernel_size[1] * m.in_channels * m.out_channels / m.groups * positions
        if m.bias is not None:
            total[0] += m.out_channels * positions

    def linear(m: nn.Linear, _: Any, out: torch.Tensor) -> None:
        total[0] += out.shape[0] * (m.in_features * m.out_features + (m.out_features if m.bias is not None else 0))

    hooks = [m.register_forward_hook(conv if isinstance(m, nn.Conv2d) else linear)
             for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, in_channels, *image_size))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return {"flops": total[0] / 1e6, "params": sum(p.numel() for p in model.parameters()) / 1e6}
