"""Final convolutional networks built from a genotype (paper, section 3.2): CIFAR and ImageNet.

A discrete cell keeps, for every intermediate node, the two (op, input) pairs of the genotype and
sums them; its output concatenates the nodes listed in ``*_concat``. Cells are stacked with
reductions at L/3 and 2L/3 and an auxiliary classifier after the 2L/3 cell (training only).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import ConfigError, GenotypeError
from ..genotype import Genotype
from ..ops import CONV_OPS, FactorizedReduce, ReLUConvBN, build_op
from ..registry import Registry

NETWORKS: Registry = Registry("network")
#: Each network's size as the paper trains it (``train cnn``'s recipes, ``summary``'s defaults).
FINAL_NETWORKS = {"cifar": dict(init_channels=36, layers=20, num_classes=10, image_size=32),
                  "imagenet": dict(init_channels=48, layers=14, num_classes=1000, image_size=224),
                  "nb201": dict(init_channels=16, layers=5, num_classes=10, image_size=32)}


def drop_path(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    """Zero whole examples of a path with probability ``p``, scaling survivors by 1/(1-p).

    The per-example path dropout of FractalNet (Larsson et al., 2017), as DARTS applies it to every
    non-identity op of a training cell. Identity in eval mode or when ``p == 0``.
    """
    if not training or p <= 0.0:
        return x
    keep = 1.0 - p
    mask = torch.empty((x.shape[0],) + (1,) * (x.dim() - 1), device=x.device, dtype=x.dtype).bernoulli_(keep)
    return x * mask / keep


class Cell(nn.Module):
    """A discrete cell: the genotype's two chosen ops per node, summed (BatchNorm affine)."""

    def __init__(self, edges: tuple[tuple[str, int], ...], concat: tuple[int, ...], C_prev_prev: int,
                 C_prev: int, C: int, reduction: bool, reduction_prev: bool) -> None:
        super().__init__()
        self.reduction = reduction
        self.preprocess0 = (FactorizedReduce(C_prev_prev, C) if reduction_prev
                            else ReLUConvBN(C_prev_prev, C, 1, 1, 0))
        self.preprocess1 = ReLUConvBN(C_prev, C, 1, 1, 0)
        self.indices = [idx for _, idx in edges]
        self.concat = list(concat)
        self.ops = nn.ModuleList(build_op(name, C, 2 if reduction and idx < 2 else 1, affine=True)
                                 for name, idx in edges)
        self.multiplier = len(concat)

    def forward(self, s0: torch.Tensor, s1: torch.Tensor, drop_prob: float = 0.0) -> torch.Tensor:
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        for i in range(len(self.ops) // 2):
            s = None
            for k in (2 * i, 2 * i + 1):
                op = self.ops[k]
                h = op(states[self.indices[k]])
                if not isinstance(op, nn.Identity):
                    h = drop_path(h, drop_prob, self.training)
                s = h if s is None else s + h
            states.append(s)
        return torch.cat([states[i] for i in self.concat], dim=1)


class GDASReductionCell(nn.Module):
    """GDAS's fixed reduction cell (Dong & Yang, CVPR 2019, GDAS-FRC): four branches concatenated, two
    factorised stride-2 convolutions (ReLU, grouped 1x3 then 3x1, BN, ReLU, 1x1, BN) of each input and
    a 3x3 max pool of each, so 4C channels at half the size. Searched with it, only the normal cell is
    searched. The convolutions have 8 groups (fewer where C is not a multiple of 8: gcd(8, C))."""

    multiplier = 4
    reduction = True

    def __init__(self, C_prev_prev: int, C_prev: int, C: int, reduction_prev: bool, affine: bool = True) -> None:
        super().__init__()
        self.preprocess0 = (FactorizedReduce(C_prev_prev, C, affine=affine) if reduction_prev
                            else ReLUConvBN(C_prev_prev, C, 1, 1, 0, affine=affine))
        self.preprocess1 = ReLUConvBN(C_prev, C, 1, 1, 0, affine=affine)
        groups = math.gcd(8, C)

        def factorised() -> nn.Module:
            return nn.Sequential(
                nn.ReLU(inplace=False),
                nn.Conv2d(C, C, (1, 3), stride=(1, 2), padding=(0, 1), groups=groups, bias=False),
                nn.Conv2d(C, C, (3, 1), stride=(2, 1), padding=(1, 0), groups=groups, bias=False),
                nn.BatchNorm2d(C, affine=affine), nn.ReLU(inplace=False),
                nn.Conv2d(C, C, 1, bias=False), nn.BatchNorm2d(C, affine=affine))

        self.convs = nn.ModuleList([factorised(), factorised()])
        self.pools = nn.ModuleList([nn.Sequential(nn.MaxPool2d(3, stride=2, padding=1), nn.BatchNorm2d(C, affine=affine))
                                    for _ in range(2)])

    def forward(self, s0: torch.Tensor, s1: torch.Tensor, drop_prob: float = 0.0) -> torch.Tensor:
        inputs = (self.preprocess0(s0), self.preprocess1(s1))
        branches = [conv(x) for conv, x in zip(self.convs, inputs)] + [pool(x) for pool, x in zip(self.pools, inputs)]
        return torch.cat([drop_path(b, drop_prob, self.training) for b in branches], dim=1)


#: Fixed reduction cells by the name a genotype's ``reduce_cell`` gives.
FIXED_REDUCTION = {"gdas": GDASReductionCell}


class AuxiliaryHead(nn.Module):
    """Auxiliary classifier (Szegedy et al.) on the 2L/3 cell's output, as in DARTS.

    The paper's head: a 5x5 average pool (``pool_stride`` 3 for CIFAR, 8x8 -> 2x2; 2 for ImageNet,
    7x7 -> 2x2), a 1x1 conv to 128 channels, a 2x2 conv to 768 (no BatchNorm after it in the ImageNet
    head, as in the paper's experiments) and a linear classifier. The 2x2 conv needs at least a 2x2
    map: where the windowed pool would leave less (inputs under 5 pixels, or 5-7 pixels at stride 3,
    5-6 at stride 2: 17-28 px CIFAR-style images, 150-192 px ImageNet ones), the map is average-pooled
    to 2x2 instead. Larger maps leave more than 1x1 after the conv; a global average pool follows.
    """

    def __init__(self, C: int, num_classes: int, pool_stride: int, second_bn: bool) -> None:
        super().__init__()
        self.pool_stride = pool_stride
        self.pre = nn.ReLU(inplace=False)
        layers: list[nn.Module] = [nn.Conv2d(C, 128, 1, bias=False), nn.BatchNorm2d(128), nn.ReLU(inplace=True),
                                   nn.Conv2d(128, 768, 2, bias=False)]
        if second_bn:
            layers.append(nn.BatchNorm2d(768))
        layers.append(nn.ReLU(inplace=True))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(768, num_classes)

    def windowed(self, height: int, width: int) -> bool:
        """Whether the paper's 5x5 pool leaves at least the 2x2 map the 2x2 conv needs."""
        return min(height, width) >= 5 + self.pool_stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pre(x)
        if self.windowed(*x.shape[-2:]):
            x = nn.functional.avg_pool2d(x, 5, stride=self.pool_stride, padding=0, count_include_pad=False)
        else:
            x = nn.functional.adaptive_avg_pool2d(x, 2)
        x = nn.functional.adaptive_avg_pool2d(self.features(x), 1)
        return self.classifier(torch.flatten(x, 1))


@dataclass
class NetworkConfig:
    """A final network: the genotype, width C, depth L and the task's classes and channels."""

    genotype: Genotype
    init_channels: int = 36
    layers: int = 20
    num_classes: int = 10
    in_channels: int = 3
    auxiliary: bool = True


def check_genotype(genotype: Genotype) -> None:
    """Fail before training on ops that are not registered or inputs that do not exist."""
    for cell in ("normal", "reduce") if genotype.reduce_cell is None else ("normal",):
        edges = getattr(genotype, cell)
        if len(edges) % 2 or not edges:
            raise GenotypeError(f"{cell} cell: {len(edges)} pairs is not 2 per intermediate node")
        for pos, (op, idx) in enumerate(edges):
            if op not in CONV_OPS:
                raise GenotypeError(f"{cell} cell, pair {pos}: unknown op {op!r}")
            if not 0 <= idx < 2 + pos // 2:
                raise GenotypeError(f"{cell} cell, pair {pos}: input {idx} does not exist yet")
        nodes = 2 + len(edges) // 2
        for idx in getattr(genotype, f"{cell}_concat"):
            if not 0 <= idx < nodes:
                raise GenotypeError(f"{cell}_concat: node {idx} does not exist")


RESIZE_HINT = "--image-size S resizes a folder's images"


def check_input_size(network: str, downsampling: int, height: int, width: int, hint: str = "") -> None:
    """Refuse, before any training, images smaller than a network's downsampling: its last cells would
    see less than one pixel. ``hint`` says how the user gets larger images."""
    if min(height, width) < downsampling:
        raise ConfigError(f"{network} downsamples {downsampling}x: {height}x{width} images are too small; "
                          f"the smallest size that works is {downsampling}x{downsampling}" + (f" ({hint})" if hint else ""))


class _CellStack(nn.Module):
    """Cells with reductions at L/3 and 2L/3, an auxiliary head after cell 2L/3, and a classifier."""

    downsampling = 4  # the stem's stride times the two reduction cells' 2x each
    aux_stride = 3
    aux_second_bn = True

    def _build_cells(self, config: NetworkConfig, C_prev_prev: int, C_prev: int, reduction_prev: bool) -> None:
        check_genotype(config.genotype)
        if config.layers < 3:
            raise ConfigError(f"layers must be >= 3 (reductions at L/3 and 2L/3), got {config.layers}")
        g, C_curr = config.genotype, config.init_channels
        self.aux_index = 2 * config.layers // 3
        self.cells = nn.ModuleList()
        C_aux = C_prev
        for i in range(config.layers):
            reduction = i in (config.layers // 3, 2 * config.layers // 3)
            if reduction:
                C_curr *= 2
            edges, concat = (g.reduce, g.reduce_concat) if reduction else (g.normal, g.normal_concat)
            if reduction and g.reduce_cell is not None:
                cell = FIXED_REDUCTION[g.reduce_cell](C_prev_prev, C_prev, C_curr, reduction_prev)
            else:
                cell = Cell(edges, concat, C_prev_prev, C_prev, C_curr, reduction, reduction_prev)
            self.cells.append(cell)
            reduction_prev = reduction
            C_prev_prev, C_prev = C_prev, cell.multiplier * C_curr
            if i == self.aux_index:
                C_aux = C_prev
        self.auxiliary_head = (AuxiliaryHead(C_aux, config.num_classes, self.aux_stride, self.aux_second_bn)
                               if config.auxiliary else None)
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(C_prev, config.num_classes)
        # Set by the training loop each epoch (scheduled drop path); 0 disables it.
        self.drop_path_prob = 0.0

    def stem_forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def forward_with_aux(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits and, in training mode with an auxiliary head, the auxiliary logits."""
        aux = None
        s0, s1 = self.stem_forward(x)
        for i, cell in enumerate(self.cells):
            s0, s1 = s1, cell(s0, s1, self.drop_path_prob)
            if i == self.aux_index and self.auxiliary_head is not None and self.training:
                aux = self.auxiliary_head(s1)
        logits = self.classifier(torch.flatten(self.global_pooling(s1), 1))
        return logits, aux

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_with_aux(x)[0]

    def compile_cells(self, **options) -> None:
        """Run every cell through torch.compile (parameter names, hence checkpoints, unchanged).

        Cells of one stage have the same shapes and share a compiled graph: about a dozen graphs for
        the 20-cell CIFAR network per mode (training, training with drop path, evaluation). The
        drop-path probability is a symbolic float, so its schedule does not recompile. Opt-in: on
        the 2-core CPU it is no faster than eager (benchmarks/train_step.py --compile).
        """
        import torch._dynamo
        torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
        for cell in self.cells:
            cell.compile(**options)


@NETWORKS.register("cifar")
class NetworkCIFAR(_CellStack):
    """The CIFAR-10 network: 3x3 stem to 3C channels, L cells (defaults C=36, L=20)."""

    def __init__(self, config: NetworkConfig) -> None:
        super().__init__()
        self.config = config
        C_stem = 3 * config.init_channels
        self.stem = nn.Sequential(nn.Conv2d(config.in_channels, C_stem, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(C_stem))
        self._build_cells(config, C_stem, C_stem, reduction_prev=False)

    def stem_forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        s = self.stem(x)
        return s, s


@NETWORKS.register("imagenet")
class NetworkImageNet(_CellStack):
    """The ImageNet mobile network: two stride-2 stem stages (224 -> 28), L cells (C=48, L=14)."""

    downsampling = 32  # the 8x stem, then two reduction cells
    aux_stride = 2
    aux_second_bn = False  # omitted in the paper's ImageNet experiments

    def __init__(self, config: NetworkConfig) -> None:
        super().__init__()
        self.config = config
        C = config.init_channels
        self.stem0 = nn.Sequential(
            nn.Conv2d(config.in_channels, C // 2, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(C // 2), nn.ReLU(inplace=True),
            nn.Conv2d(C // 2, C, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(C))
        self.stem1 = nn.Sequential(nn.ReLU(inplace=False), nn.Conv2d(C, C, 3, stride=2, padding=1, bias=False),
                                   nn.BatchNorm2d(C))
        self._build_cells(config, C, C, reduction_prev=True)

    def stem_forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        s0 = self.stem0(x)
        return s0, self.stem1(s0)


def build_network(name: str, config: NetworkConfig) -> nn.Module:
    """Build a registered final network (``cifar`` or ``imagenet``) by name."""
    return NETWORKS.get(name)(config)
