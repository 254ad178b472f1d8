"""What every search model shares: its weights are all its parameters except α."""
from __future__ import annotations

from torch import nn


class ArchitectureSplit:
    """Mixin for an ``nn.Module`` defining ``arch_parameters()``: the weights are everything else."""

    def arch_parameters(self) -> list[nn.Parameter]:
        raise NotImplementedError

    def named_weight_parameters(self) -> list[tuple[str, nn.Parameter]]:
        arch = {id(p) for p in self.arch_parameters()}
        return [(n, p) for n, p in self.named_parameters() if id(p) not in arch]

    def weight_parameters(self) -> list[nn.Parameter]:
        return [p for _, p in self.named_weight_parameters()]
