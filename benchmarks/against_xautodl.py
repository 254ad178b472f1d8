"""dartsnas's GDAS search network held against the authors' (xautodl's NASNetworkGDAS), in float64.

Both networks are built at one size, dartsnas's weights are copied into the authors' network
parameter by parameter, and both take one batch with the same Gumbel draw (the authors' formula,
``get_gumbel_prob`` in search_model_gdas_nasnet.py, fed dartsnas's noise). Printed as JSON: the
largest difference of the logits, of ∇w and of ∇α, in training mode (batch statistics) and for the
logits in eval mode (running statistics, after the training pass updated them). The convolution
biases (``bias=not affine``) are copied too.

    pip install --no-deps xautodl      # its numpy pin does not install beside torch 2.x; it needs none
    python benchmarks/against_xautodl.py [--C 4 --N 1 --batch 4 --size 16]

``--reduce-cell gdas`` holds GDAS-FRC's network (NASNetworkGDAS_FRC) instead. ``--nb201`` holds the
NAS-Bench-201 search network against xautodl's TinyNetworkDarts (DARTS's mixture) and its GDAS form
(NAS201SearchCell.forward_gdas) the same way, and compares the benchmark network's parameters and FLOPs
(xautodl's get_model_infos) with dartsnas's for ``--cells`` cells (``all``: every one of the 15,625).
"""
from __future__ import annotations

import argparse
import json

import torch
import torch.nn.functional as F

from dartsnas.methods.gdas import GumbelSampler
from dartsnas.spaces import ConvSearchSpaceConfig, SearchNetwork

#: xautodl's DARTS_SPACE (cell_operations.py) in its order, by dartsnas's names.
GDAS_ORDER = ("none", "skip_connect", "sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5",
              "avg_pool_3x3", "max_pool_3x3")


def authors_network(C: int, N: int, num_classes: int, frc: bool) -> torch.nn.Module:
    from xautodl.models.cell_operations import SearchSpaceNames
    if frc:
        from xautodl.models.cell_searchs.search_model_gdas_frc_nasnet import NASNetworkGDAS_FRC as Net
    else:
        from xautodl.models.cell_searchs.search_model_gdas_nasnet import NASNetworkGDAS as Net
    # GDAS.py: affine False; NASNet-space-search-by-GDAS.sh's track_running_stats 1
    return Net(C, N, 4, 4, 3, num_classes, SearchSpaceNames["darts"], False, True)


def authors_weights(theirs: torch.nn.Module) -> list[torch.Tensor]:
    return [p for name, p in theirs.named_parameters() if not name.startswith("arch_")]


def copy_weights(ours: SearchNetwork, theirs: torch.nn.Module) -> int:
    """Our weights into theirs, in module order (an error at the first that differs in shape). Returns
    the count of convolution biases."""
    mine = [p for p in ours.weight_parameters()]
    j = 0
    with torch.no_grad():
        for name, p in theirs.named_parameters():
            if name.startswith("arch_"):
                continue
            if j >= len(mine) or mine[j].shape != p.shape:
                raise SystemExit(f"parameter {name}: {tuple(p.shape)} against dartsnas's "
                                 f"{tuple(mine[j].shape) if j < len(mine) else 'none'}")
            p.copy_(mine[j])
            j += 1
        if j != len(mine):
            raise SystemExit(f"dartsnas has {len(mine)} weight tensors, the authors' network {j}")
        for a, b in zip(ours.arch_parameters(), authors_alphas(theirs)):
            b.copy_(a)
    return sum(1 for m in ours.modules() if isinstance(m, torch.nn.Conv2d) and m.bias is not None)


def authors_alphas(theirs: torch.nn.Module) -> list[torch.Tensor]:
    if hasattr(theirs, "arch_normal_parameters"):
        return [theirs.arch_normal_parameters, theirs.arch_reduce_parameters]
    return [theirs.arch_parameters]  # GDAS-FRC's


def authors_forward(net: torch.nn.Module, x: torch.Tensor, noise: list[torch.Tensor], tau: float) -> torch.Tensor:
    """NASNetworkGDAS.forward with ``get_gumbel_prob`` fed the given exponential draws."""
    def gumbel_prob(alpha, e):
        logits = (alpha.log_softmax(dim=1) - e.log()) / tau
        probs = F.softmax(logits, dim=1)
        index = probs.max(-1, keepdim=True)[1]
        return torch.zeros_like(logits).scatter_(-1, index, 1.0) - probs.detach() + probs, index

    alphas = authors_alphas(net)
    normal = gumbel_prob(alphas[0], noise[0])
    reduce = gumbel_prob(alphas[1], noise[1]) if len(alphas) > 1 else None
    s0 = s1 = net.stem(x)
    for cell in net.cells:
        if getattr(cell, "reduction", False) and reduce is not None:
            s0, s1 = s1, cell.forward_gdas(s0, s1, *reduce)
        elif hasattr(cell, "forward_gdas") and not getattr(cell, "reduction", False):
            s0, s1 = s1, cell.forward_gdas(s0, s1, *normal)
        else:  # GDAS-FRC's fixed reduction cell
            s0, s1 = s1, cell(s0, s1, -1)
    out = net.global_pooling(net.lastact(s1))
    return net.classifier(out.view(out.size(0), -1))


def grads(loss: torch.Tensor, params: list[torch.Tensor]) -> list[torch.Tensor]:
    """∂loss/∂params, zero for the candidates the draw left out."""
    out = torch.autograd.grad(loss, params, allow_unused=True)
    return [torch.zeros_like(p) if g is None else g for g, p in zip(out, params)]


def nb201(args: argparse.Namespace) -> None:
    import random
    from xautodl.models.cell_infers.tiny_network import TinyNetwork
    from xautodl.models.cell_operations import SearchSpaceNames
    from xautodl.models.cell_searchs.genotypes import Structure
    from xautodl.models.cell_searchs.search_model_darts import TinyNetworkDarts
    from xautodl.utils.flop_benchmark import get_model_infos
    from dartsnas.genotype201 import benchmark_cells
    from dartsnas.nets import NetworkConfig, build_network
    from dartsnas.nets.nb201 import benchmark_cost
    from dartsnas.spaces.nb201 import NB201SearchSpaceConfig, SearchNetwork201

    torch.manual_seed(args.seed)
    ours = SearchNetwork201(NB201SearchSpaceConfig(init_channels=args.C, layers=args.N, num_classes=args.classes)).double()
    with torch.no_grad():
        ours.alpha_normal.normal_(0, 0.5)
    theirs = TinyNetworkDarts(args.C, args.N, 4, args.classes, SearchSpaceNames["nas-bench-201"], False, True).double()
    copy_weights(ours, theirs)
    gen = torch.Generator().manual_seed(args.seed + 1)
    x = torch.randn(args.batch, 3, args.size, args.size, generator=gen, dtype=torch.float64)
    y = torch.randint(0, args.classes, (args.batch,), generator=gen)
    out = {"network": "TinyNetworkDarts", "C": args.C, "N": args.N, "dtype": "float64"}
    for form in ("darts", "gdas"):
        if form == "gdas":
            ours.sampler = GumbelSampler(args.seed + 2, args.tau)
            replay = torch.Generator().manual_seed(0)
            replay.set_state(ours.sampler.generator.get_state())
            noise = torch.empty(ours.alpha_normal.shape, dtype=torch.float64).exponential_(generator=replay)
        mine = ours(x)
        g_ours = grads(F.cross_entropy(mine, y), [*ours.weight_parameters(), ours.alpha_normal])
        if form == "darts":
            logits = theirs(x)[1]
        else:  # TinyNetworkGDAS.forward with dartsnas's draw
            logp = theirs.arch_parameters.log_softmax(dim=1)
            probs = F.softmax((logp - noise.log()) / args.tau, dim=1)
            index = probs.max(-1, keepdim=True)[1]
            hardwts = torch.zeros_like(probs).scatter_(-1, index, 1.0) - probs.detach() + probs
            feature = theirs.stem(x)
            for cell in theirs.cells:
                feature = cell.forward_gdas(feature, hardwts, index) if hasattr(cell, "forward_gdas") else cell(feature)
            feature = theirs.global_pooling(theirs.lastact(feature))
            logits = theirs.classifier(feature.view(feature.size(0), -1))
        g_theirs = grads(F.cross_entropy(logits, y), [*authors_weights(theirs), theirs.arch_parameters])
        n = len(g_ours) - 1
        out[form] = {"logits_max_abs_diff": float((mine - logits).abs().max()),
                     "grad_w_max_abs_diff": max(float((a - b).abs().max()) for a, b in zip(g_ours[:n], g_theirs[:n])),
                     "grad_alpha_max_abs_diff": float((g_ours[n] - g_theirs[n]).abs().max()),
                     "grad_alpha_norm": float(g_ours[n].norm())}
    cells = list(benchmark_cells())
    if args.cells != "all":
        cells = random.Random(args.seed).sample(cells, int(args.cells))
    worst = {"flops": 0.0, "params": 0.0}
    for cell in cells:
        net = build_network("nb201", NetworkConfig(cell, init_channels=16, layers=5, auxiliary=False))
        flops, params = get_model_infos(TinyNetwork(16, 5, Structure.str2structure(cell.to_str()), 10), (1, 3, 32, 32))
        cost = benchmark_cost(net)
        worst = {"flops": max(worst["flops"], abs(cost["flops"] - flops)),
                 "params": max(worst["params"], abs(cost["params"] - float(params)))}
    out["benchmark_network"] = {"cells": len(cells), "flops_max_abs_diff": worst["flops"],
                                "params_max_abs_diff": worst["params"]}
    print(json.dumps(out))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--C", type=int, default=4)
    p.add_argument("--N", type=int, default=1, help="cells per stage: 3N cells (GDAS's recipe: 2)")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--size", type=int, default=16)
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--tau", type=float, default=10.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--reduce-cell", choices=("searched", "gdas"), default="searched")
    p.add_argument("--nb201", action="store_true", help="NAS-Bench-201's networks instead")
    p.add_argument("--cells", default="200", help="--nb201: cells whose benchmark network is counted (or all)")
    args = p.parse_args()
    if args.nb201:
        return nb201(args)
    frc = args.reduce_cell == "gdas"

    torch.manual_seed(args.seed)
    ours = SearchNetwork(ConvSearchSpaceConfig(init_channels=args.C, layers=3 * args.N, num_classes=args.classes,
                                               ops=GDAS_ORDER, search_network="gdas", reduce_cell=args.reduce_cell)
                         ).double()
    with torch.no_grad():
        for a in ours.arch_parameters():
            a.normal_(0, 0.5)
    theirs = authors_network(args.C, args.N, args.classes, frc).double()
    gen = torch.Generator().manual_seed(args.seed + 1)
    biases = copy_weights(ours, theirs)
    x = torch.randn(args.batch, 3, args.size, args.size, generator=gen, dtype=torch.float64)
    y = torch.randint(0, args.classes, (args.batch,), generator=gen)

    ours.sampler = GumbelSampler(args.seed + 2, args.tau)
    state = ours.sampler.generator.get_state()
    # the sampler's draws, in its order (normal, then reduce): exponential, -log gives the Gumbel noise
    replay = torch.Generator().manual_seed(0)
    replay.set_state(state)
    noise = [torch.empty(a.shape, dtype=torch.float64).exponential_(generator=replay) for a in ours.arch_parameters()]

    ours.train(), theirs.train()
    mine = ours(x)
    loss = F.cross_entropy(mine, y)
    g_ours = grads(loss, [*ours.weight_parameters(), *ours.arch_parameters()])
    logits = authors_forward(theirs, x, noise, args.tau)
    loss_t = F.cross_entropy(logits, y)
    w_theirs = authors_weights(theirs)
    a_theirs = authors_alphas(theirs)
    g_theirs = grads(loss_t, [*w_theirs, *a_theirs])
    n_w = len(w_theirs)

    def maxdiff(a, b):
        return max(float((u - v).abs().max()) for u, v in zip(a, b))

    ours.eval(), theirs.eval()
    ours.sampler = None  # evaluation: argmax α on every edge, in both
    with torch.no_grad():
        hard = [F.one_hot(a.argmax(-1), a.shape[-1]).double() for a in a_theirs]
        s0 = s1 = theirs.stem(x)
        for cell in theirs.cells:
            if hasattr(cell, "forward_gdas"):
                w = hard[1] if cell.reduction else hard[0]
                s0, s1 = s1, cell.forward_gdas(s0, s1, w, w.argmax(-1, keepdim=True))
            else:
                s0, s1 = s1, cell(s0, s1, -1)
        out = theirs.global_pooling(theirs.lastact(s1))
        eval_theirs = theirs.classifier(out.view(out.size(0), -1))
        ours.sampler = GumbelSampler(0)  # eval mode: the sampler picks argmax α, noise-free
        eval_ours = ours(x)
    print(json.dumps({
        "network": "NASNetworkGDAS_FRC" if frc else "NASNetworkGDAS", "C": args.C, "N": args.N,
        "cells": 3 * args.N, "dtype": "float64", "conv_biases": biases,
        "logits_max_abs_diff": float((mine - logits).abs().max()),
        "grad_w_max_abs_diff": maxdiff(g_ours[:n_w], g_theirs[:n_w]),
        "grad_alpha_max_abs_diff": maxdiff(g_ours[n_w:], g_theirs[n_w:]),
        "grad_alpha_norm": float(torch.cat([g.flatten() for g in g_ours[n_w:]]).norm()),
        "eval_logits_max_abs_diff": float((eval_ours - eval_theirs).abs().max()),
    }))


if __name__ == "__main__":
    main()
