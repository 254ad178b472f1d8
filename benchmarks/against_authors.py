"""dartsnas's P-DARTS stage network and PC-DARTS ImageNet search network held against their authors' code
in float64: the weights copied across parameter by parameter, α (and PC-DARTS's β) copied, one batch in
training mode; printed as JSON: the largest difference of the logits, of ∇w and of ∇α.

    git clone https://github.com/chenxin061/pdarts /tmp/authors/pdarts
    git clone https://github.com/yuhuixu1993/PC-DARTS /tmp/authors/pcdarts
    python benchmarks/against_authors.py --pdarts /tmp/authors/pdarts --pcdarts /tmp/authors/pcdarts

P-DARTS: ``model_search.py`` Network with a stage's switches (a random subset of ``--ops`` ops per edge,
skip dropout 0: dropout draws cannot be matched across two codes). PC-DARTS: ``model_search_imagenet.py``
Network (K=2, the three-conv stem; its ``.cuda()`` calls are made no-ops here to run on the CPU).
GDAS is ``benchmarks/against_xautodl.py``'s.
"""
from __future__ import annotations

import argparse
import importlib
import json
import random
import sys

import torch
import torch.nn.functional as F

from dartsnas.ops import DARTS_OPS
from dartsnas.spaces import ConvSearchSpaceConfig, SearchNetwork


def authors_module(path: str, name: str):
    """``name`` imported from the authors' checkout at ``path`` (their modules import each other by bare name)."""
    for shared in ("operations", "genotypes", "model_search", "model_search_imagenet"):
        sys.modules.pop(shared, None)
    sys.path.insert(0, path)
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(path)


def copy_across(ours: SearchNetwork, theirs: torch.nn.Module) -> None:
    mine = ours.weight_parameters()
    arch = {id(p) for p in getattr(theirs, "_arch_parameters", [])}
    others = [p for p in theirs.parameters() if id(p) not in arch]
    if len(mine) != len(others):
        raise SystemExit(f"dartsnas has {len(mine)} weight tensors, the authors' network {len(others)}")
    with torch.no_grad():
        for a, b in zip(mine, others):
            if a.shape != b.shape:
                raise SystemExit(f"shapes differ: {tuple(a.shape)} against {tuple(b.shape)}")
            b.copy_(a)


def compare(ours: SearchNetwork, theirs: torch.nn.Module, their_arch: list[torch.Tensor], x, y) -> dict[str, float]:
    ours.train(), theirs.train()
    mine, logits = ours(x), theirs(x)
    diff = float((mine - logits).detach().abs().max())
    arch = ours.arch_parameters()
    g_ours = torch.autograd.grad(F.cross_entropy(mine, y), [*ours.weight_parameters(), *arch], allow_unused=True)
    weights = [p for p in theirs.parameters() if all(p is not a for a in their_arch)]
    g_theirs = torch.autograd.grad(F.cross_entropy(logits, y), [*weights, *their_arch], allow_unused=True)
    zero = lambda g, p: torch.zeros_like(p) if g is None else g  # noqa: E731
    g_ours = [zero(g, p) for g, p in zip(g_ours, [*ours.weight_parameters(), *arch])]
    g_theirs = [zero(g, p) for g, p in zip(g_theirs, [*weights, *their_arch])]
    n = len(weights)
    return {"logits_max_abs_diff": diff,
            "grad_w_max_abs_diff": max(float((a - b).abs().max()) for a, b in zip(g_ours[:n], g_theirs[:n])),
            "grad_arch_max_abs_diff": max(float((a - b).abs().max()) for a, b in zip(g_ours[n:], g_theirs[n:])),
            "grad_arch_norm": float(torch.cat([g.flatten() for g in g_ours[n:]]).norm())}


def pdarts(path: str, args: argparse.Namespace) -> dict[str, float]:
    model_search = authors_module(path, "model_search")
    rng = random.Random(args.seed)
    switches = {cell: [[False] * 8 for _ in range(14)] for cell in ("normal", "reduce")}
    for rows in switches.values():
        for row in rows:
            for k in rng.sample(range(8), args.ops):
                row[k] = True
    edge_ops = {cell: tuple(tuple(DARTS_OPS[k] for k in range(8) if row[k]) for row in rows)
                for cell, rows in switches.items()}
    torch.manual_seed(args.seed)
    ours = SearchNetwork(ConvSearchSpaceConfig(init_channels=args.C, layers=args.layers, num_classes=10,
                                               edge_op_sets=edge_ops)).double()
    with torch.no_grad():
        for a in ours.arch_parameters():
            a.normal_(0, 0.5)
    theirs = model_search.Network(args.C, 10, args.layers, torch.nn.CrossEntropyLoss(),
                                  switches_normal=switches["normal"], switches_reduce=switches["reduce"], p=0.0).double()
    copy_across(ours, theirs)
    with torch.no_grad():
        theirs.alphas_normal.copy_(ours.alpha_normal)
        theirs.alphas_reduce.copy_(ours.alpha_reduce)
    gen = torch.Generator().manual_seed(args.seed + 1)
    x = torch.randn(args.batch, 3, args.size, args.size, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 10, (args.batch,), generator=gen)
    return {"network": "pdarts model_search.Network", "layers": args.layers, "ops_per_edge": args.ops,
            **compare(ours, theirs, [theirs.alphas_normal, theirs.alphas_reduce], x, y)}


def pcdarts_imagenet(path: str, args: argparse.Namespace) -> dict[str, float]:
    cuda, torch.Tensor.cuda = torch.Tensor.cuda, lambda self, *a, **k: self  # the authors' alphas are made on cuda
    try:
        model_search = authors_module(path, "model_search_imagenet")
        torch.manual_seed(args.seed)
        ours = SearchNetwork(ConvSearchSpaceConfig(init_channels=args.C, layers=args.layers, num_classes=10,
                                                   stem="imagenet", partial_channels=2)).double()
        with torch.no_grad():
            for a in ours.arch_parameters():
                a.normal_(0, 0.5)
        theirs = model_search.Network(args.C, 10, args.layers, torch.nn.CrossEntropyLoss()).double()
    finally:
        torch.Tensor.cuda = cuda
    copy_across(ours, theirs)
    arch = [a.detach().double().clone().requires_grad_() for a in ours.arch_parameters()]
    theirs.alphas_normal, theirs.alphas_reduce, theirs.betas_normal, theirs.betas_reduce = arch
    theirs._arch_parameters = arch
    gen = torch.Generator().manual_seed(args.seed + 1)
    x = torch.randn(args.batch, 3, args.imagenet_size, args.imagenet_size, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 10, (args.batch,), generator=gen)
    return {"network": "PC-DARTS model_search_imagenet.Network", "layers": args.layers, "image_size": args.imagenet_size,
            **compare(ours, theirs, arch, x, y)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pdarts", help="a checkout of chenxin061/pdarts")
    p.add_argument("--pcdarts", help="a checkout of yuhuixu1993/PC-DARTS")
    p.add_argument("--C", type=int, default=4)
    p.add_argument("--layers", type=int, default=5)
    p.add_argument("--ops", type=int, default=5, help="P-DARTS: ops kept per edge (a stage's)")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--size", type=int, default=16)
    p.add_argument("--imagenet-size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    if args.pdarts:
        print(json.dumps(pdarts(args.pdarts, args)))
    if args.pcdarts:
        print(json.dumps(pcdarts_imagenet(args.pcdarts, args)))


if __name__ == "__main__":
    main()
