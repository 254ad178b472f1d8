"""The original DARTS code (quark0/darts, a checkout at DIR) as the benchmarks' reference: its search
step built from its own modules, measured by the same harness in a fresh process.

    git clone https://github.com/quark0/darts DIR
    python benchmarks/search_step.py --reference DIR
    python benchmarks/search_memory.py --reference DIR
    python benchmarks/rnn_search_step.py --reference DIR

It is patched only to run on a CPU with today's PyTorch, nothing in its files is changed:
``Tensor.cuda`` and ``Module.cuda`` return their object (the code calls ``.cuda()`` on α, on the
criterion and on every unrolled model), ``embed._backend.Embedding.apply`` (PyTorch 0.3's, in their
``rnn/utils.py`` line 67) is ``F.embedding``, and ``clip_grad_norm`` (removed from PyTorch) is called by
its new name ``clip_grad_norm_`` in the step below, which is the loop body of their
``cnn/train_search.py`` lines 136-155 and ``rnn/train_search.py`` lines 180-236.
"""
from __future__ import annotations

import importlib
import os
import sys
from types import ModuleType
from typing import Callable

#: the original's modules that import each other by bare name
_SHARED = ("operations", "genotypes", "model_search", "model", "architect", "utils")


def _load(directory: str, part: str, names: tuple[str, ...]) -> list[ModuleType]:
    import torch

    path = os.path.join(directory, part)
    if not os.path.isfile(os.path.join(path, "model_search.py")):
        raise SystemExit(f"--reference {directory}: no {part}/model_search.py there (a checkout of quark0/darts?)")
    torch.Tensor.cuda = lambda self, *a, **k: self  # type: ignore[method-assign]
    torch.nn.Module.cuda = lambda self, *a, **k: self  # type: ignore[method-assign]
    torch.nn.Embedding._backend = _Backend  # type: ignore[attr-defined]
    for shared in _SHARED:
        sys.modules.pop(shared, None)
    sys.path.insert(0, path)
    try:
        return [importlib.import_module(name) for name in names]
    finally:
        sys.path.remove(path)


class _Embedding:
    @staticmethod
    def apply(words, weight, padding_idx, max_norm, norm_type, scale_grad_by_freq, sparse):  # noqa: ANN001, ANN205
        import torch.nn.functional as F
        return F.embedding(words, weight, None if padding_idx < 0 else padding_idx, max_norm, norm_type,
                           scale_grad_by_freq, sparse)


class _Backend:
    Embedding = _Embedding


class _Args:
    """The argparse namespace their Architect reads (their train_search.py defaults)."""

    def __init__(self, **values: float) -> None:
        self.__dict__.update(values)


def conv_step(directory: str, C: int, L: int, B: int, order: str, size: int) -> Callable[[], None]:
    """One search step of the original conv search (α step, then the weight step) on random data."""
    import torch
    from torch import nn

    model_search, architect = _load(directory, "cnn", ("model_search", "architect"))
    torch.manual_seed(0)
    criterion = nn.CrossEntropyLoss()
    model = model_search.Network(C, 10, L, criterion)
    optimizer = torch.optim.SGD(model.parameters(), 0.025, momentum=0.9, weight_decay=3e-4)
    arch = architect.Architect(model, _Args(momentum=0.9, weight_decay=3e-4, arch_learning_rate=3e-4,
                                            arch_weight_decay=1e-3))
    g = torch.Generator().manual_seed(1)
    batches = [(torch.randn(B, 3, size, size, generator=g), torch.randint(0, 10, (B,), generator=g)) for _ in range(2)]

    def step() -> None:
        (x, y), (xv, yv) = batches
        arch.step(x, y, xv, yv, 0.025, optimizer, unrolled=order == "second")
        optimizer.zero_grad()
        loss = criterion(model(x), y)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        optimizer.step()

    return step


def rnn_step(directory: str, size: int, B: int, order: str, bptt: int, vocab: int) -> Callable[[], None]:
    """One search step of the original recurrent search (α step, then the weight step with TAR) on random tokens."""
    import torch
    from torch import nn

    model_search, architect = _load(directory, "rnn", ("model_search", "architect"))
    torch.manual_seed(0)
    model = model_search.RNNModelSearch(vocab, size, size, size, 0.75, 0.25, 0.75, 0.2, 0.0)
    optimizer = torch.optim.SGD(model.parameters(), lr=20.0, weight_decay=5e-7)
    arch = architect.Architect(model, _Args(wdecay=5e-7, clip=0.25, arch_lr=3e-3, arch_wdecay=1e-3))
    window = lambda: (torch.randint(0, vocab, (bptt, B)), torch.randint(0, vocab, (bptt * B,)))
    state = {"h": model.init_hidden(B), "hv": model.init_hidden(B)}

    def step() -> None:
        (x, y), (xv, yv) = window(), window()
        h = [t.detach() for t in state["h"]]
        hv, _ = arch.step(h, x, y, [t.detach() for t in state["hv"]], xv, yv, optimizer, order == "second")
        state["hv"] = hv
        optimizer.zero_grad()
        log_prob, h, rnn_hs, _ = model(x, h, return_h=True)
        loss = nn.functional.nll_loss(log_prob.view(-1, log_prob.size(2)), y)
        loss = loss + sum(1e-3 * (rnn_h[1:] - rnn_h[:-1]).pow(2).mean() for rnn_h in rnn_hs[-1:])
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 0.25)
        optimizer.step()
        state["h"] = h

    return step
