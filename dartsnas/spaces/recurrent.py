"""The DARTS recurrent search space (paper, section 3.1.2).

Node i (1..N) takes every earlier node through a mixed op applied inside the highway gate: with
``[c, h] = s_j W_i`` for each predecessor j, ``s_i = sum_j sum_o softmax(α_ij)_o (s_j + sigmoid(c) *
(o(h) - s_j))``. Node states are batch-normalised (no affine) during search, as the reference does,
and h_t is the mean of the last ``concat`` nodes.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from ..errors import ConfigError
from ..genotype import RecurrentGenotype, derive_recurrent_genotype, num_edges
from ..nets.recurrent import HighwayCell, RNNConfig, RNNLanguageModel
from ..ops import RNN_DARTS_OPS, RNN_OPS
from .base import ArchitectureSplit, mixing_weights


@dataclass
class RecurrentSearchSpaceConfig:
    """The search model: sizes and dropouts of the reference search (300/300, dropout_e 0)."""

    vocab_size: int = 10000
    emsize: int = 300
    nhid: int = 300
    nodes: int = 8
    dropout: float = 0.75
    dropout_h: float = 0.25
    dropout_x: float = 0.75
    dropout_i: float = 0.2
    dropout_e: float = 0.0
    ops: tuple[str, ...] = field(default_factory=lambda: RNN_DARTS_OPS)

    def validate(self) -> None:
        for name in ("vocab_size", "emsize", "nhid", "nodes"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.emsize != self.nhid:
            raise ConfigError(f"tied weights need {{emsize}} == {{nhid}}, got {self.emsize} and {self.nhid}",
                              names=("emsize", "nhid"))
        for op in self.ops:
            RNN_OPS.get(op)
        if all(op == "none" for op in self.ops):
            raise ConfigError("the op set needs at least one op other than 'none'")


class SearchRecurrentCell(HighwayCell):
    """All candidate activations on every (earlier node -> node) edge, mixed by softmax(α)."""

    def __init__(self, config: RecurrentSearchSpaceConfig) -> None:
        super().__init__(config.emsize, config.nhid, config.nodes, config.dropout_h, config.dropout_x)
        self.nodes = config.nodes
        self.active_columns = [k for k, name in enumerate(config.ops) if name != "none"]
        self.active_fns = [RNN_OPS.get(config.ops[k]) for k in self.active_columns]
        self.bn = nn.BatchNorm1d(config.nhid, affine=False)
        self.weights: torch.Tensor | None = None  # softmax(α), set by the model for each forward

    def step_context(self) -> tuple:
        """Per node, the mixing weights of its active ops [i + 1, K, 1, 1] and their sums [i + 1, 1, 1]:
        the same at every time step, so sliced out of softmax(α) once per forward."""
        w = self.weights[:, self.active_columns]
        mix, row = [], 0
        for i in range(self.nodes):
            w_i = w[row:row + i + 1]
            mix.append((w_i[:, :, None, None], w_i.sum(1)[:, None, None]))
            row += i + 1
        return (*super().step_context(), tuple(mix))

    def step(self, xw, h_prev, h_mask, context):
        w0h, mix = context
        states = self.bn(self.init_state(xw, h_prev, h_mask, w0h)).unsqueeze(0)  # [nodes so far, B, nhid]
        for i in range(self.nodes):
            inp = states * h_mask if h_mask is not None else states
            c, h = torch.split(inp @ self.Ws[i], self.nhid, dim=-1)
            c = torch.sigmoid(c)
            w_ops, w_sum = mix[i]
            # sum_k w_k (s_j + c (act_k(h) - s_j)) = W s_j + c (sum_k w_k act_k(h) - W s_j), W = sum_k w_k:
            # mix the activations first, then one highway combination per edge (same value, far fewer kernels).
            acts = torch.stack([act(h) for act in self.active_fns], 1)      # [i + 1, K, B, nhid]
            mixed = (acts * w_ops.to(acts.dtype)).sum(1)
            ws = w_sum.to(acts.dtype) * states
            s = self.bn((ws + c * (mixed - ws)).sum(0))
            states = torch.cat([states, s.unsqueeze(0)], 0)
        return states[1:].mean(0)


class RecurrentSearchModel(ArchitectureSplit, RNNLanguageModel):
    """The recurrent search language model with its α (one row per edge, one column per op)."""

    def __init__(self, config: RecurrentSearchSpaceConfig | None = None) -> None:
        config = config or RecurrentSearchSpaceConfig()
        config.validate()
        rnn = RNNConfig(vocab_size=config.vocab_size, emsize=config.emsize, nhid=config.nhid,
                        dropout=config.dropout, dropout_h=config.dropout_h, dropout_x=config.dropout_x,
                        dropout_i=config.dropout_i, dropout_e=config.dropout_e)
        super().__init__(rnn, SearchRecurrentCell(config))
        self.space = config
        self.alpha = nn.Parameter(1e-3 * torch.randn(num_edges(config.nodes, num_inputs=1), len(config.ops)))

    def arch_parameters(self) -> list[nn.Parameter]:
        return [self.alpha]

    def arch_weights(self) -> torch.Tensor:
        return mixing_weights(self.alpha)

    def forward(self, inputs, hidden):
        # softmax(α) is handed to the cell for this forward only: kept on the module, it would hold the
        # graph alive between steps and make the model impossible to deepcopy.
        self.cell.weights = self.arch_weights()
        try:
            return super().forward(inputs, hidden)
        finally:
            self.cell.weights = None

    def genotype(self) -> RecurrentGenotype:
        return derive_recurrent_genotype(self.arch_weights(), self.space.ops)  # = spaces.rnn's derive
