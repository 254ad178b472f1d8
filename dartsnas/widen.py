"""Net2Wider (Chen, Goodfellow and Shlens, ICLR 2016, "Net2Net") for DrNAS's progressive search: the
weights of an op built at more channels taken from the same op at fewer, so a stage with fewer partial
channels K (wider ops) starts from the last stage's weights instead of from scratch.

Every channel space inside an op gets one map g from its new channels to its old ones: the identity on
the first C_old, a uniform draw from the old ones for the others. A dense convolution reads its input's
map and draws a new one for its output; a depthwise convolution and a BatchNorm keep their input's map
(weights, biases, running statistics). The op's input channels beyond the old width are new channels of
the cell (the mixed op sees the first C/K of them), so their weights are copies of random old ones, and
no replica is divided by its count, as DrNAS's ``net2wider.py`` (lines 7-76: ``InChannelWider``,
``OutChannelWider``, ``BNWider``). Two departures make the copies consistent where theirs are not: a
separable conv's second depthwise convolution keeps the map of its input (theirs draws a new one,
``DARTS-space/operations.py`` line 145), and FactorizedReduce's two convolutions share one input map,
its BatchNorm's statistics following each half's own copies (theirs take the second half's from the
first half's channels, line 206).

A plan maps each tensor's name (relative to the op) to the gathers that make it from the old op's tensor
of the name: applied to the weights and buffers, and to an optimiser's state of the same shapes (SGD's
momentum, Adam's moments).
"""
from __future__ import annotations

from typing import Iterable

import torch
from torch import nn

from .ops import FactorizedReduce

#: One gather: ("index", dim, index) selects along dim; ("rows", dim, index) gathers each row on its own.
Gather = tuple[str, int, torch.Tensor]
Plan = dict[str, list[Gather]]


def channel_map(old: int, new: int, generator: torch.Generator) -> torch.Tensor:
    """g: the first ``old`` channels kept, each of the ``new - old`` others a uniform draw from them."""
    if new < old:
        raise ValueError(f"cannot widen {old} channels to {new}")
    extra = torch.randint(0, old, (new - old,), generator=generator)
    return torch.cat([torch.arange(old), extra])


def _conv(prefix: str, old: nn.Conv2d, new: nn.Conv2d, g_in: torch.Tensor, plan: Plan,
          generator: torch.Generator) -> torch.Tensor:
    if new.groups > 1:  # depthwise (DARTS's only grouped convs): one kernel per channel, its input's map
        if not new.groups == new.in_channels == new.out_channels:
            raise ValueError(f"{prefix}: a grouped convolution that is not depthwise cannot be widened")
        g_out = g_in
        plan[prefix + "weight"] = [("index", 0, g_out)]
    else:
        g_out = channel_map(old.out_channels, new.out_channels, generator)
        plan[prefix + "weight"] = [("index", 0, g_out), ("index", 1, g_in)]
    if new.bias is not None:
        plan[prefix + "bias"] = [("index", 0, g_out)]
    return g_out


def _batch_norm(prefix: str, new: nn.modules.batchnorm._BatchNorm, g_in: torch.Tensor, plan: Plan) -> torch.Tensor:
    for name in ("weight", "bias", "running_mean", "running_var"):
        if getattr(new, name, None) is not None:
            plan[prefix + name] = [("index", 0, g_in)]
    if new.num_batches_tracked is not None:
        plan[prefix + "num_batches_tracked"] = []
    return g_in


def widen_plan(old: nn.Module, new: nn.Module, g_in: torch.Tensor, generator: torch.Generator) -> Plan:
    """The plan that widens ``old`` to ``new`` (the same op at more channels) whose input's map is
    ``g_in``: every tensor of ``new``'s state dict by name."""
    plan: Plan = {}
    _walk(old, new, g_in, generator, "", plan)
    missing = set(new.state_dict()) - set(plan)
    if missing:
        raise ValueError(f"cannot widen {', '.join(sorted(missing))}: no rule for it")
    return plan


def _walk(old: nn.Module, new: nn.Module, g: torch.Tensor, generator: torch.Generator, prefix: str,
          plan: Plan) -> torch.Tensor:
    if type(old) is not type(new):
        raise ValueError(f"{prefix or 'op'}: {type(old).__name__} and {type(new).__name__} are not the same op")
    if isinstance(new, FactorizedReduce):  # two stride-2 1x1 convolutions of the same input, then one BN
        half = old.conv_1.out_channels
        g1 = _conv(prefix + "conv_1.", old.conv_1, new.conv_1, g, plan, generator)
        g2 = _conv(prefix + "conv_2.", old.conv_2, new.conv_2, g, plan, generator)
        return _batch_norm(prefix + "bn.", new.bn, torch.cat([g1, half + g2]), plan)
    if isinstance(new, nn.Conv2d):
        return _conv(prefix, old, new, g, plan, generator)
    if isinstance(new, nn.modules.batchnorm._BatchNorm):  # BatchNorm2d, and SyncBatchNorm with --sync-bn
        return _batch_norm(prefix, new, g, plan)
    children = list(new.named_children())
    if not children:
        return g  # ReLU, pools, identity, zero: channel-wise, no weights
    old_children = dict(old.named_children())
    for name, child in children:  # a sequence of layers, in the order they run
        g = _walk(old_children[name], child, g, generator, f"{prefix}{name}.", plan)
    return g


def apply_gathers(tensor: torch.Tensor, gathers: Iterable[Gather]) -> torch.Tensor:
    """``tensor`` after the plan's gathers of its name (a copy)."""
    out = tensor.detach()
    for kind, dim, index in gathers:
        index = index.to(out.device)
        if kind == "rows":
            shape = list(out.shape)
            shape[dim] = index.shape[dim]
            out = torch.gather(out, dim, index.reshape(index.shape + (1,) * (out.dim() - index.dim())).expand(shape))
        else:
            out = out.index_select(dim, index)
    return out.clone()
