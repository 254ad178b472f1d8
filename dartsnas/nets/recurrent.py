"""Recurrent cells and the language model around them (paper, sections 3.1.2 and 3.2).

Every node of a DARTS recurrent cell is a highway-gated transform of one earlier node s_j:
``[c, h] = s_j W_i``, ``s_i = s_j + sigmoid(c) * (act(h) - s_j)``; the first node transforms
(x_t, h_{t-1}) with tanh, and h_t is the mean of the nodes in ``concat``. The language model is
an embedding, one such cell and a decoder tied to the embedding, with the AWD-LSTM dropouts used by
the reference code (variational masks on x and h, locked dropout on inputs and outputs,
embedding-row dropout).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..genotype import RecurrentGenotype
from ..ops import RNN_OPS

INIT_RANGE = 0.04


def dropout_mask(shape: Sequence[int], p: float, like: torch.Tensor) -> torch.Tensor:
    """Bernoulli(1 - p) / (1 - p) mask of ``shape``: inverted dropout, one draw reused as needed."""
    return like.new_empty(shape).bernoulli_(1 - p) / (1 - p)


def embedded_dropout(embed: nn.Embedding, words: torch.Tensor, p: float) -> torch.Tensor:
    """Drop whole words: zero rows of the embedding matrix (Gal and Ghahramani, 2016)."""
    weight = embed.weight
    if p > 0:
        weight = weight * dropout_mask((weight.shape[0], 1), p, weight)
    return F.embedding(words, weight)


def locked_dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """The same dropout mask at every time step of a [T, B, D] sequence."""
    if not training or p <= 0:
        return x
    return x * dropout_mask((1, x.shape[1], x.shape[2]), p, x)


class HighwayCell(nn.Module):
    """Parameters and time loop shared by the search cell and the derived cell."""

    def __init__(self, ninp: int, nhid: int, nodes: int, dropout_h: float, dropout_x: float) -> None:
        super().__init__()
        self.nhid, self.dropout_h, self.dropout_x = nhid, dropout_h, dropout_x
        self.W0 = nn.Parameter(torch.empty(ninp + nhid, 2 * nhid).uniform_(-INIT_RANGE, INIT_RANGE))
        self.Ws = nn.ParameterList(nn.Parameter(torch.empty(nhid, 2 * nhid).uniform_(-INIT_RANGE, INIT_RANGE))
                                   for _ in range(nodes))

    def init_state(self, xw: torch.Tensor, h_prev: torch.Tensor, h_mask: torch.Tensor | None,
                   w0h: torch.Tensor) -> torch.Tensor:
        """The fixed first node: a tanh highway transform of x_t (already projected: ``xw``) and h_{t-1}."""
        h_in = h_prev * h_mask if h_mask is not None else h_prev
        c0, h0 = torch.split(xw + h_in @ w0h, self.nhid, dim=-1)
        return h_prev + torch.sigmoid(c0) * (torch.tanh(h0) - h_prev)

    def step_context(self) -> tuple:
        """What every time step of one forward needs and can be computed once: the h-part of W0."""
        return (self.W0[self.W0.shape[0] - self.nhid:],)

    def step(self, xw: torch.Tensor, h_prev: torch.Tensor, h_mask: torch.Tensor | None,
             context: tuple) -> torch.Tensor:
        """h_t from the projected input x_t W0x, h_{t-1}, the variational h mask and ``step_context()``."""
        raise NotImplementedError

    def compile_step(self, **options) -> None:
        """Run ``step`` through torch.compile: the time loop is hundreds of small kernels per step,
        which compilation fuses (measured in benchmarks/rnn_search_step.py). Every time step has the
        same shapes, so one graph serves the whole sequence; the few variants (first step, α step,
        w step, evaluation) each compile once."""
        import torch._dynamo
        torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
        self._compiled_step = torch.compile(self.step, dynamic=False, **options)

    def forward(self, inputs: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
        """All hidden states [T, B, nhid] for inputs [T, B, ninp] from the state ``hidden`` [B, nhid]."""
        h_mask = None
        if self.training:
            x_mask = dropout_mask((inputs.shape[1], inputs.shape[2]), self.dropout_x, inputs)
            h_mask = dropout_mask((hidden.shape[0], self.nhid), self.dropout_h, hidden)
            inputs = inputs * x_mask
        # x_t's share of the first node's projection for every t at once: one large matmul, not T small ones.
        xw = inputs @ self.W0[:self.W0.shape[0] - self.nhid]
        context = self.step_context()
        step = getattr(self, "_compiled_step", None) or self.step
        outputs = []
        for t in range(inputs.shape[0]):
            hidden = step(xw[t], hidden, h_mask, context)
            outputs.append(hidden)
        return torch.stack(outputs)


class DerivedCell(HighwayCell):
    """The discrete recurrent cell of a genotype: one (activation, input) per node."""

    def __init__(self, ninp: int, nhid: int, genotype: RecurrentGenotype, dropout_h: float = 0.25,
                 dropout_x: float = 0.75) -> None:
        super().__init__(ninp, nhid, genotype.nodes, dropout_h, dropout_x)
        self.genotype = genotype
        self.acts = [RNN_OPS.get(op) for op, _ in genotype.recurrent]

    def step(self, xw, h_prev, h_mask, context):
        states = [self.init_state(xw, h_prev, h_mask, context[0])]
        for i, (_, pred) in enumerate(self.genotype.recurrent):
            s_prev = states[pred]
            inp = s_prev * h_mask if h_mask is not None else s_prev
            c, h = torch.split(inp @ self.Ws[i], self.nhid, dim=-1)
            states.append(s_prev + torch.sigmoid(c) * (self.acts[i](h) - s_prev))
        return torch.stack([states[i] for i in self.genotype.concat], -1).mean(-1)


@dataclass
class RNNConfig:
    """Sizes and dropouts of a recurrent language model; defaults are the paper's PTB model."""

    vocab_size: int = 10000
    emsize: int = 850
    nhid: int = 850
    dropout: float = 0.75     # on the cell's outputs (locked)
    dropout_h: float = 0.25   # variational, on h inside the cell
    dropout_x: float = 0.75   # variational, on x_t inside the cell
    dropout_i: float = 0.2    # on the embeddings (locked)
    dropout_e: float = 0.1    # embedding rows (whole words)


class RNNLanguageModel(nn.Module):
    """Embedding -> recurrent cell -> tied decoder; returns log-probabilities, the last state and
    the cell's raw outputs (for temporal activation regularisation)."""

    def __init__(self, config: RNNConfig, cell: HighwayCell) -> None:
        super().__init__()
        if config.emsize != config.nhid:
            raise ValueError(f"tied weights need emsize == nhid, got {config.emsize} and {config.nhid}")
        self.config = config
        self.encoder = nn.Embedding(config.vocab_size, config.emsize)
        self.cell = cell
        self.decoder = nn.Linear(config.nhid, config.vocab_size)
        self.decoder.weight = self.encoder.weight  # tied (Press and Wolf, 2017; Inan et al., 2017)
        nn.init.uniform_(self.encoder.weight, -INIT_RANGE, INIT_RANGE)
        nn.init.zeros_(self.decoder.bias)

    def init_hidden(self, batch_size: int) -> torch.Tensor:
        return self.encoder.weight.new_zeros(batch_size, self.config.nhid)

    def forward(self, inputs: torch.Tensor,
                hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(log-probabilities, the state after the window, the cell's outputs ``raw`` (T, B, H), and
        those outputs after the output dropout, which activation regularisation penalises)."""
        cfg = self.config
        emb = embedded_dropout(self.encoder, inputs, cfg.dropout_e if self.training else 0.0)
        emb = locked_dropout(emb, cfg.dropout_i, self.training)
        raw = self.cell(emb, hidden)
        out = locked_dropout(raw, cfg.dropout, self.training)
        log_prob = F.log_softmax(self.decoder(out.view(-1, cfg.nhid)), dim=-1)
        return log_prob, raw[-1], raw, out

    def loss(self, inputs: torch.Tensor, targets: torch.Tensor,
             hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean next-token NLL and the state after the window (carried to the next window)."""
        log_prob, last, _, _ = self(inputs, hidden)
        return F.nll_loss(log_prob, targets), last


def build_rnn_model(genotype: RecurrentGenotype, config: RNNConfig) -> RNNLanguageModel:
    """The final language model of a recurrent genotype."""
    cell = DerivedCell(config.emsize, config.nhid, genotype, config.dropout_h, config.dropout_x)
    return RNNLanguageModel(config, cell)
