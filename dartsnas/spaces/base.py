"""What every search model shares: its weights are all its parameters except α."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def mixing_weights(logits: torch.Tensor) -> torch.Tensor:
    """softmax over the last dimension in the parameter's own precision, at least float32: a float64
    model keeps float64 (exact gradient checks), a half-precision one is lifted to float32."""
    if logits.dtype not in (torch.float32, torch.float64):
        logits = logits.float()
    return F.softmax(logits, dim=-1)


class ArchitectureSplit:
    """Mixin for an ``nn.Module`` defining ``arch_parameters()``: the weights are everything else."""

    def arch_parameters(self) -> list[nn.Parameter]:
        raise NotImplementedError

    def named_weight_parameters(self) -> list[tuple[str, nn.Parameter]]:
        arch = {id(p) for p in self.arch_parameters()}
        return [(n, p) for n, p in self.named_parameters() if id(p) not in arch]

    def weight_parameters(self) -> list[nn.Parameter]:
        return [p for _, p in self.named_weight_parameters()]
