"""What the choice machinery costs: a search step (α step + w step) of the example network of
examples/search_your_model.py built with dartsnas.nn.Choice / InputChoice, against the same network
with the mixtures written by hand (explicit α parameters, softmax and weighted sums in forward; the
same modules and weights). One JSON line per (order, variant), then the ratios.

    python benchmarks/choice_overhead.py                 # batch 64, 2 threads, first and second order
"""
from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples"))
from _harness import time_steps  # noqa: E402


def hand_written(net):
    """The same network and weights with every mixture spelled out in forward."""
    import torch.nn.functional as F
    from torch import nn

    class Hand(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem, self.head = net.stem, net.head
            self.block1 = nn.ModuleList(net.block1.candidates.values())
            self.block2 = nn.ModuleList(net.block2.candidates.values())
            self.pool = nn.ModuleList(net.pool.candidates.values())
            self.a1, self.af, self.a2, self.ap = (nn.Parameter(m.alpha.detach().clone())
                                                  for m in (net.block1, net.feed, net.block2, net.pool))

        def arch_parameters(self):
            return [self.a1, self.af, self.a2, self.ap]

        def named_weight_parameters(self):
            arch = {id(p) for p in self.arch_parameters()}
            return [(n, p) for n, p in self.named_parameters() if id(p) not in arch]

        def forward(self, x):
            s = self.stem(x)
            w = F.softmax(self.a1, -1)
            a = sum(wi * m(s) for wi, m in zip(w, self.block1))
            wf = F.softmax(self.af, -1)
            inp = wf[0] * s + wf[1] * a
            w2 = F.softmax(self.a2, -1)
            b = sum(wi * m(inp) for wi, m in zip(w2, self.block2)) + a
            wp = F.softmax(self.ap, -1)
            return self.head(sum(wi * m(b) for wi, m in zip(wp, self.pool)).mean((2, 3)))

        def loss(self, x, y):
            return F.cross_entropy(self(x), y)

    return Hand()


def measure(order: str, variant: str, batch: int, steps: int, threads: int) -> dict:
    import torch

    from dartsnas.architect import Architect
    from dartsnas.nn import SearchableModel
    from dartsnas.train.bilevel import search_step
    from search_your_model import DigitsNet
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    net = DigitsNet()
    model = SearchableModel(net) if variant == "choice" else hand_written(net)
    opt = torch.optim.SGD([p for _, p in model.named_weight_parameters()], lr=0.05, momentum=0.9, weight_decay=3e-4)
    arch = Architect(model, opt, order=order, grad_clip=5.0)
    g = torch.Generator().manual_seed(0)
    data = [(torch.randn(batch, 1, 8, 8, generator=g), torch.randint(0, 10, (batch,), generator=g)) for _ in range(2)]
    seconds = time_steps(lambda: search_step(model, arch, opt, data[0], data[1], 0.05, 5.0), steps, 3, False)
    return {"order": order, "variant": variant, "batch": batch, "s_per_step": round(seconds, 4),
            "images_per_s": round(batch / seconds, 1)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--orders", nargs="+", default=["first", "second"])
    p.add_argument("--rounds", type=int, default=3, help="alternate the two variants this many times")
    args = p.parse_args()
    for order in args.orders:
        best = {}
        for _ in range(args.rounds):  # alternate, keep each variant's fastest round: machine noise is one-sided
            for variant in ("choice", "hand"):
                r = measure(order, variant, args.batch, args.steps, args.threads)
                print(json.dumps(r), flush=True)
                best[variant] = min(best.get(variant, r["s_per_step"]), r["s_per_step"])
        print(json.dumps({"order": order, "choice_over_hand_time": round(best["choice"] / best["hand"], 3),
                          "best_s_per_step": best}), flush=True)


if __name__ == "__main__":
    main()
