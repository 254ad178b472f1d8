"""Candidate operations of the DARTS convolutional search space (paper, section 3.1.1).

Every op is registered by name in :data:`CONV_OPS` as a constructor ``(C, stride, affine) -> Module``
mapping C channels to C channels, halving the resolution when ``stride == 2``. A user adds an op
with ``@CONV_OPS.register("my_op")`` and passes its name in the op set of a search space.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Callable

import torch
from torch import nn

from .errors import ConfigError
from .registry import Registry

OpFactory = Callable[[int, int, bool], nn.Module]
CONV_OPS: Registry[OpFactory] = Registry("conv op")

#: The paper's eight candidate ops, in the original implementation's order.
DARTS_OPS: tuple[str, ...] = (
    "none",
    "max_pool_3x3",
    "avg_pool_3x3",
    "skip_connect",
    "sep_conv_3x3",
    "sep_conv_5x5",
    "dil_conv_3x3",
    "dil_conv_5x5",
)

#: NAS-Bench-201's five candidate ops, in its order (xautodl cell_operations.py NAS_BENCH_201).
NB201_OPS: tuple[str, ...] = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")

#: Named op sets: the DARTS space and the reduced spaces in which RobustDARTS (Zela et al., 2020) shows
#: plain DARTS collapsing, the same op set on every edge.
OP_SETS: dict[str, tuple[str, ...]] = {
    "darts": DARTS_OPS,
    "s2": ("skip_connect", "sep_conv_3x3"),
    "s3": ("none", "skip_connect", "sep_conv_3x3"),
    "s4": ("noise", "sep_conv_3x3"),
    "nb201": NB201_OPS,
}

_SKIP, _MAX, _AVG = "skip_connect", "max_pool_3x3", "avg_pool_3x3"
_SEP3, _DIL3, _DIL5 = "sep_conv_3x3", "dil_conv_3x3", "dil_conv_5x5"
#: Op sets that differ from edge to edge: one tuple of op names per edge of a 4-node cell (node-major
#: edge order), per cell type. RobustDARTS's S1 keeps on each edge the two ops that plain DARTS ranked
#: highest in their full-space searches (the pairs of their code's spaces.py).
EDGE_OP_SETS: dict[str, dict[str, tuple[tuple[str, ...], ...]]] = {
    "s1": {
        "normal": ((_SKIP, _DIL3), (_SKIP, _DIL5), (_SKIP, _DIL5), (_SKIP, _SEP3), (_SKIP, _DIL3),
                   (_MAX, _SKIP), (_SKIP, _SEP3), (_SKIP, _SEP3), (_SKIP, _DIL3), (_SKIP, _SEP3),
                   (_MAX, _SKIP), (_SKIP, _DIL3), (_DIL3, _DIL5), (_DIL3, _DIL5)),
        "reduce": ((_MAX, _AVG), (_MAX, _DIL3), (_MAX, _AVG), (_MAX, _AVG), (_SKIP, _DIL5),
                   (_MAX, _AVG), (_MAX, _SEP3), (_SKIP, _DIL3), (_SKIP, _DIL5), (_MAX, _AVG),
                   (_MAX, _AVG), (_SKIP, _DIL5), (_SKIP, _DIL5), (_SKIP, _DIL5)),
    },
}


def resolve_op_set(ops: Sequence[str] | str) -> tuple[str, ...]:
    """An op set as a user gives it: a named set alone (``darts``, ``s1``-``s4``, in any case, so
    RobustDARTS's ``S3`` too; in Python also as a plain string) becomes its ops (``s1``, whose ops
    differ per edge, stays a name); anything else is a list of op names, kept as given."""
    if isinstance(ops, str):
        ops = (ops,)
    if len(ops) == 1 and isinstance(ops[0], str):
        name = ops[0].lower()
        if name in OP_SETS:
            return OP_SETS[name]
        if name in EDGE_OP_SETS:
            return (name,)
    return tuple(ops)


def unknown_op_error(op: str) -> ConfigError:
    """The error for an op name that is neither registered nor a named op set."""
    sets = ", ".join(sorted({*OP_SETS, *EDGE_OP_SETS}))
    return ConfigError(f"unknown op {op!r}: the ops are {', '.join(CONV_OPS.names())}; or one named op set "
                       f"alone: {sets} (any case)")


def nonzero_ops(ops: Sequence[str]) -> list[str]:
    """The ops of ``ops`` a derived cell can hold (all but 'none'); an error if none is left."""
    active = [op for op in ops if op != "none"]
    if not active:
        raise ConfigError("the op set needs at least one op other than 'none'")
    return active


def edge_ops(ops: Sequence[str], num_edges: int, cell: str) -> tuple[tuple[str, ...], ...]:
    """The op names of each of a cell's ``num_edges`` edges (``cell``: "normal" or "reduce"): the op
    set on every edge, or a per-edge set of EDGE_OP_SETS named as ``ops=("s1",)``."""
    if len(ops) == 1 and ops[0] in EDGE_OP_SETS:
        table = EDGE_OP_SETS[ops[0]][cell]
        if len(table) != num_edges:
            raise ConfigError(f"op set {ops[0]!r} names the ops of the {len(table)} edges of a 4-node cell; "
                              f"this cell has {num_edges} edges (use --nodes 4)")
        return table
    return (tuple(ops),) * num_edges


class Zero(nn.Module):
    """The ``none`` op: an all-zero output of the (possibly strided) input's shape.

    ``is_zero`` lets a mixed op skip it: its output times any weight is zero, so leaving it out
    changes neither the forward value nor any gradient.
    """

    is_zero = True

    def __init__(self, stride: int) -> None:
        super().__init__()
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            return x.mul(0.0)
        return x[:, :, :: self.stride, :: self.stride].mul(0.0)


class DilatedDepthwiseConv2d(nn.Conv2d):
    """A dilated depthwise conv computed as an undilated one with a zero-inserted kernel.

    Same parameters and state dict as ``nn.Conv2d``; same values. PyTorch's CPU kernels for the
    weight gradient of dilated depthwise convs are several times slower than the undilated
    path, which more than pays for the zeros (measured in benchmarks/search_step.py). Used only
    when the weight needs a gradient, so inference and MAC counts see the true dilated conv.
    """

    def _conv_forward(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        dh, dw = self.dilation
        # Only the weight gradient is slow: inference (and MAC counting) keeps the dilated conv.
        needs_weight_grad = torch.is_grad_enabled() and weight.requires_grad
        if (dh, dw) == (1, 1) or x.is_cuda or not needs_weight_grad:
            return super()._conv_forward(x, weight, bias)
        kh, kw = weight.shape[-2:]
        expanded = weight.new_zeros(*weight.shape[:2], dh * (kh - 1) + 1, dw * (kw - 1) + 1)
        expanded[:, :, ::dh, ::dw] = weight
        return nn.functional.conv2d(x, expanded, bias, self.stride, self.padding, 1, self.groups)


class PreReLU(nn.Sequential):
    """A Sequential whose first module is a ReLU, so a caller holding relu(x) can skip it.

    In a search cell every conv op of every edge leaving a node starts with ReLU of that node:
    the cell computes it once per node and calls :meth:`forward_preactivated` (same values,
    a fraction of the ReLU work and of the memory autograd keeps for it).
    """

    def forward_preactivated(self, x_relu: torch.Tensor) -> torch.Tensor:
        for module in list(self)[1:]:
            x_relu = module(x_relu)
        return x_relu


class ReLUConvBN(PreReLU):
    """ReLU -> Conv -> BatchNorm, the pre-activation order used throughout DARTS."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int, stride: int, padding: int,
                 affine: bool = True) -> None:
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(c_in, c_out, kernel_size, stride=stride, padding=padding, bias=False),
            nn.BatchNorm2d(c_out, affine=affine),
        )


class DilConv(PreReLU):
    """ReLU -> dilated depthwise conv -> pointwise conv -> BatchNorm."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int, stride: int, padding: int,
                 dilation: int, affine: bool = True) -> None:
        super().__init__(
            nn.ReLU(inplace=False),
            DilatedDepthwiseConv2d(c_in, c_in, kernel_size, stride=stride, padding=padding,
                                   dilation=dilation, groups=c_in, bias=False),
            nn.Conv2d(c_in, c_out, 1, bias=False),
            nn.BatchNorm2d(c_out, affine=affine),
        )


class SepConv(nn.Sequential):
    """Two stacked ReLU-depthwise-pointwise-BN blocks; only the first is strided (as in DARTS)."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int, stride: int, padding: int,
                 affine: bool = True) -> None:
        super().__init__(
            DilConv(c_in, c_in, kernel_size, stride, padding, 1, affine),
            DilConv(c_in, c_out, kernel_size, 1, padding, 1, affine),
        )

    def forward_preactivated(self, x_relu: torch.Tensor) -> torch.Tensor:
        return self[1](self[0].forward_preactivated(x_relu))


class FactorizedReduce(nn.Module):
    """Halve the resolution with two 1x1 stride-2 convs on pixel grids offset by one, concatenated.

    Used by ``skip_connect`` on reducing edges and to align the cell input that comes from before a
    reduction cell. ``c_out`` must be even.
    """

    def __init__(self, c_in: int, c_out: int, affine: bool = True) -> None:
        super().__init__()
        if c_out % 2:
            raise ValueError(f"FactorizedReduce needs an even number of output channels, got {c_out}")
        self.relu = nn.ReLU(inplace=False)
        self.conv_1 = nn.Conv2d(c_in, c_out // 2, 1, stride=2, bias=False)
        self.conv_2 = nn.Conv2d(c_in, c_out // 2, 1, stride=2, bias=False)
        self.bn = nn.BatchNorm2d(c_out, affine=affine)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_preactivated(self.relu(x))

    def forward_preactivated(self, x: torch.Tensor) -> torch.Tensor:
        shifted = x[:, :, 1:, 1:]
        if x.shape[-1] % 2 or x.shape[-2] % 2:
            # Odd sizes: pad the shifted grid so both halves have the same spatial size.
            shifted = nn.functional.pad(shifted, (0, x.shape[-1] % 2, 0, x.shape[-2] % 2))
        if x.device.type == "cpu" and 1 < x.shape[1] < 8:
            # PyTorch 2.13's CPU kernel for a stride-2 1x1 convolution with 2-7 input channels writes out of
            # bounds when the input or the weight is channels_last (heap corruption, run-to-run differences;
            # tiny widths and PC-DARTS's channel slices hit it): such convolutions run in NCHW.
            halves = [nn.functional.conv2d(h.contiguous(), c.weight.clone(memory_format=torch.contiguous_format),
                                           stride=2) for h, c in ((x, self.conv_1), (shifted, self.conv_2))]
            out = torch.cat(halves, dim=1)
            if x.is_contiguous(memory_format=torch.channels_last) or not x.is_contiguous():
                out = out.contiguous(memory_format=torch.channels_last)
            return self.bn(out)
        return self.bn(torch.cat([self.conv_1(x), self.conv_2(shifted)], dim=1))


@CONV_OPS.register("none")
def _none(C: int, stride: int, affine: bool) -> nn.Module:
    return Zero(stride)


class Noise(nn.Module):
    """Standard normal noise of the (strided) input's shape: RobustDARTS's harmful op of space S4, an
    op a sound search should never pick."""

    def __init__(self, stride: int) -> None:
        super().__init__()
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            x = x[:, :, ::self.stride, ::self.stride]
        return torch.randn_like(x)


@CONV_OPS.register("noise")
def _noise(C: int, stride: int, affine: bool) -> nn.Module:
    return Noise(stride)


@CONV_OPS.register("max_pool_3x3")
def _max_pool_3x3(C: int, stride: int, affine: bool) -> nn.Module:
    return nn.MaxPool2d(3, stride=stride, padding=1)


@CONV_OPS.register("avg_pool_3x3")
def _avg_pool_3x3(C: int, stride: int, affine: bool) -> nn.Module:
    return nn.AvgPool2d(3, stride=stride, padding=1, count_include_pad=False)


@CONV_OPS.register("skip_connect")
def _skip_connect(C: int, stride: int, affine: bool) -> nn.Module:
    return nn.Identity() if stride == 1 else FactorizedReduce(C, C, affine)


@CONV_OPS.register("sep_conv_3x3")
def _sep_conv_3x3(C: int, stride: int, affine: bool) -> nn.Module:
    return SepConv(C, C, 3, stride, 1, affine)


@CONV_OPS.register("sep_conv_5x5")
def _sep_conv_5x5(C: int, stride: int, affine: bool) -> nn.Module:
    return SepConv(C, C, 5, stride, 2, affine)


@CONV_OPS.register("sep_conv_7x7")
def _sep_conv_7x7(C: int, stride: int, affine: bool) -> nn.Module:
    return SepConv(C, C, 7, stride, 3, affine)


@CONV_OPS.register("dil_conv_3x3")
def _dil_conv_3x3(C: int, stride: int, affine: bool) -> nn.Module:
    return DilConv(C, C, 3, stride, 2, 2, affine)


@CONV_OPS.register("dil_conv_5x5")
def _dil_conv_5x5(C: int, stride: int, affine: bool) -> nn.Module:
    return DilConv(C, C, 5, stride, 4, 2, affine)


# NAS-Bench-201's convolutions (xautodl cell_operations.py ReLUConvBN): ReLU, conv, BN at stride 1 or 2
@CONV_OPS.register("nor_conv_1x1")
def _nor_conv_1x1(C: int, stride: int, affine: bool) -> nn.Module:
    return ReLUConvBN(C, C, 1, stride, 0, affine)


@CONV_OPS.register("nor_conv_3x3")
def _nor_conv_3x3(C: int, stride: int, affine: bool) -> nn.Module:
    return ReLUConvBN(C, C, 3, stride, 1, affine)


@CONV_OPS.register("conv_7x1_1x7")
def _conv_7x1_1x7(C: int, stride: int, affine: bool) -> nn.Module:
    return PreReLU(
        nn.ReLU(inplace=False),
        nn.Conv2d(C, C, (1, 7), stride=(1, stride), padding=(0, 3), bias=False),
        nn.Conv2d(C, C, (7, 1), stride=(stride, 1), padding=(3, 0), bias=False),
        nn.BatchNorm2d(C, affine=affine),
    )


def build_op(name: str, C: int, stride: int, affine: bool) -> nn.Module:
    """Build the registered op ``name`` for C channels (raises ConfigError on an unknown name)."""
    return CONV_OPS.get(name)(C, stride, affine)


def is_preactivated(module: nn.Module) -> bool:
    """True for ops that can take relu(x) instead of x (see :class:`PreReLU`)."""
    return hasattr(module, "forward_preactivated")


def is_zero_op(module: nn.Module) -> bool:
    """True for ops whose output is identically zero (they can be skipped in weighted sums)."""
    return bool(getattr(module, "is_zero", False))


# --------------------------------------------------------------------------------------------
# Recurrent cells (section 3.1.2): an op is the activation applied inside a highway gate.

RNN_OPS: Registry[Callable[[torch.Tensor], torch.Tensor]] = Registry("recurrent op")
#: The paper's recurrent candidate ops, in the reference implementation's order.
RNN_DARTS_OPS: tuple[str, ...] = ("none", "tanh", "relu", "sigmoid", "identity")

RNN_OPS.register("none")(torch.zeros_like)
RNN_OPS.register("tanh")(torch.tanh)
RNN_OPS.register("relu")(torch.relu)
RNN_OPS.register("sigmoid")(torch.sigmoid)
RNN_OPS.register("identity")(lambda x: x)
