"""DARTS over a network of your own: a small CNN for the bundled handwritten digits with four decisions
left open, searched, fixed, trained from scratch, and compared with the same network whose decisions
are drawn at random (same training budget, several seeds).

    python examples/search_your_model.py                      # about 4 minutes on 2 CPU cores
    python examples/search_your_model.py --order second --seeds 0 1 2 3 4 5 6 7

The four choices: the first block's operation (3x3, 5x5, dilated 3x3 or separable 3x3 convolution),
whether the second block is worth its cost (3x3 or 5x5 convolution, or nothing), which earlier map
feeds the second block (the stem's or the first block's), and the pooling before the classifier.
Prints one JSON line per trained network and a summary line.
"""
from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile

import torch
import torch.nn.functional as F
from torch import nn

from dartsnas.data import load_dataset
from dartsnas.nn import Choice, InputChoice, fix
from dartsnas.train.search_model import search_model


def conv(C: int, k: int, dilation: int = 1, C_in: int | None = None) -> nn.Module:
    return nn.Sequential(nn.Conv2d(C_in or C, C, k, padding=dilation * (k // 2), dilation=dilation, bias=False),
                         nn.BatchNorm2d(C), nn.ReLU())


def separable(C: int, k: int) -> nn.Module:
    return nn.Sequential(nn.Conv2d(C, C, k, padding=k // 2, groups=C, bias=False), nn.Conv2d(C, C, 1, bias=False),
                         nn.BatchNorm2d(C), nn.ReLU())


class DigitsNet(nn.Module):
    """An ordinary PyTorch network: the choices sit where a designer would hesitate; forward is plain."""

    def __init__(self, C: int = 16, classes: int = 10) -> None:
        super().__init__()
        self.stem = conv(C, 3, C_in=1)
        self.block1 = Choice({"conv3x3": conv(C, 3), "conv5x5": conv(C, 5), "dil3x3": conv(C, 3, 2),
                              "sep3x3": separable(C, 3)})
        self.feed = InputChoice(2)  # which earlier map feeds block 2: the stem's (0) or block 1's (1)
        self.block2 = Choice({"conv3x3": conv(C, 3), "conv5x5": conv(C, 5), "none": nn.Identity()})
        self.pool = Choice({"max": nn.MaxPool2d(2), "avg": nn.AvgPool2d(2)})
        self.head = nn.Linear(C, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.stem(x)
        a = self.block1(s)
        b = self.block2(self.feed([s, a])) + a
        return self.head(self.pool(b).mean((2, 3)))


CANDIDATES = {"block1": ["conv3x3", "conv5x5", "dil3x3", "sep3x3"], "feed": [[0], [1]],
              "block2": ["conv3x3", "conv5x5", "none"], "pool": ["max", "avg"]}


def digits(split: str) -> torch.utils.data.TensorDataset:
    data = load_dataset("digits", split)
    x = (data.images.float() / 255 - data.mean[0]) / data.std[0]
    return torch.utils.data.TensorDataset(x, data.labels)


def train_from_scratch(choices: dict, seed: int, epochs: int, train: torch.utils.data.Dataset,
                       test: torch.utils.data.Dataset) -> tuple[float, int]:
    """Test accuracy and parameter count of the fixed network trained from new weights (SGD, cosine)."""
    torch.manual_seed(seed)
    net = fix(DigitsNet(), choices)
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9, weight_decay=3e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    loader = torch.utils.data.DataLoader(train, batch_size=64, shuffle=True,
                                         generator=torch.Generator().manual_seed(seed))
    for _ in range(epochs):
        net.train()
        for x, y in loader:
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(net(x), y).backward()
            opt.step()
        sched.step()
    net.eval()
    x, y = test.tensors
    with torch.no_grad():
        return float((net(x).argmax(1) == y).float().mean()), sum(p.numel() for p in net.parameters())


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--search-epochs", type=int, default=15)
    p.add_argument("--train-epochs", type=int, default=20)
    p.add_argument("--order", default="first", choices=("first", "second", "exact"))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--out", default=None, help="search run directory [a temporary one]")
    args = p.parse_args()
    train, test = digits("train"), digits("test")
    with tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(0)
        found = search_model(DigitsNet(), train, out_dir=args.out or f"{tmp}/search", epochs=args.search_epochs,
                             batch_size=64, lr=0.05, order=args.order, arch_lr=3e-3, quiet=True)
    print(json.dumps({"searched_choices": found.choices, "search_val_acc": round(found.metrics[-1]["val_acc"], 4)}),
          flush=True)
    results = {"searched": [], "random": []}
    for seed in args.seeds:
        rng = random.Random(seed)
        drawn = {name: rng.choice(options) for name, options in CANDIDATES.items()}
        for kind, choices in (("searched", found.choices), ("random", drawn)):
            acc, params = train_from_scratch(choices, seed, args.train_epochs, train, test)
            results[kind].append(acc)
            print(json.dumps({"kind": kind, "seed": seed, "choices": choices, "params": params,
                              "test_acc": round(acc, 4)}), flush=True)
    summary = {kind: {"mean": round(statistics.mean(v), 4), "std": round(statistics.pstdev(v), 4), "n": len(v)}
               for kind, v in results.items()}
    print(json.dumps({"summary": summary, "search_epochs": args.search_epochs, "train_epochs": args.train_epochs,
                      "order": args.order}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
