"""Size of a final network: parameters (with and without the auxiliary head) and multiply-adds."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_parameters(model: nn.Module) -> dict[str, int]:
    """``params`` excludes the auxiliary head (the paper's convention), ``params_with_aux`` does not."""
    total = sum(p.numel() for p in model.parameters())
    head = getattr(model, "auxiliary_head", None)
    aux = sum(p.numel() for p in head.parameters()) if head is not None else 0
    return {"params": total - aux, "params_with_aux": total}


@torch.no_grad()
def count_macs(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Multiply-adds of one eval-mode forward pass on one input (torch.utils.flop_counter / 2).

    The counter sees matrix products and convolutions only (a multiply-add counted once); pooling,
    BatchNorm, activations and additions are not counted. Tools that count those too report more
    (the paper's 574M for DARTS_V2 on ImageNet, against 529.9M here).
    """
    was_training = model.training
    model.eval()
    param = next(model.parameters())
    counter = FlopCounterMode(display=False)
    with counter:
        model(torch.zeros((1, *input_shape), device=param.device, dtype=param.dtype))
    model.train(was_training)
    return counter.get_total_flops() // 2


def summarize(model: nn.Module, input_shape: tuple[int, ...]) -> dict[str, Any]:
    return {**count_parameters(model), "macs": count_macs(model, input_shape),
            "input_shape": list(input_shape)}
