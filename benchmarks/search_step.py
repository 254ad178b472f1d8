"""Throughput and peak memory of one DARTS search step (α step + w step).

Prints one JSON line per (configuration, order): images/s = batch size / seconds of one full
search step, and peak memory (process RSS on CPU, max allocated on CUDA). Each measurement runs in
a fresh subprocess so peaks do not leak between configurations.

    python benchmarks/search_step.py                  # the issue's CPU configurations, 2 threads
    python benchmarks/search_step.py --device cuda --configs 16,8,64
    python benchmarks/search_step.py --configs 16,8,64 --orders first --partial-channels 1 4   # PC-DARTS
    python benchmarks/search_step.py --scaling        # step time against batch, C and nodes N
    python benchmarks/search_step.py --device cuda --configs 16,8,64 --compare   # fast path vs plain fp32 NCHW
    python benchmarks/search_step.py --configs 16,8,32 --orders first --methods darts gdas p-darts   # successors
    python benchmarks/search_step.py --configs 16,8,32 --recompute none edge --reference DIR   # beside the original
    python benchmarks/search_step.py --configs 16,8,32 --orders first --recompute none edge --profile   # op kinds' shares

--reference DIR (a checkout of quark0/darts, see _reference.py) measures the original's step too, in the same
run, and prints dartsnas's speed-up and memory ratio against it (whole-process peak RSS); skipped without it.

--methods: darts (every op on every edge), gdas (one sampled op per edge) and p-darts, whose three
stage networks replace the configuration's L: 5 cells with the 8 ops, 11 with 5 and 17 with 3 per edge
(the kept sets: skip_connect and the costliest convolutions, an upper bound of what pruning leaves);
drnas (a Dirichlet draw of every edge's mixing weights per pass), beta-darts (DARTS's step with the
Beta-Decay term in α's objective) and darts-pt (a step of DARTS-PT's fine-tuning, half of the edges
decided; a measurement is one forward pass of the validation split, without gradient).

A configuration is C,L,batch or C,L,batch,N (N intermediate nodes per cell, default 4).
"""
from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _harness import peak_memory_gb, reference_jobs, run_isolated, time_steps, versus_original  # noqa: E402

CONFIGS = ["8,5,16", "16,8,32"]  # C,L,batch at 32x32, as in the original's figures
#: P-DARTS's stages (Chen et al., 2019): cells, and the ops every edge keeps (an upper bound in cost)
PDARTS_STAGES = {"p-darts-1": (5, None), "p-darts-2": (11, ("skip_connect", "sep_conv_3x3", "sep_conv_5x5",
                                                               "dil_conv_3x3", "dil_conv_5x5")),
                 "p-darts-3": (17, ("skip_connect", "sep_conv_3x3", "sep_conv_5x5"))}
# --scaling: from C=8, L=5, batch 16, N=4, one factor at a time (batch, then C, then nodes).
SCALING = ["8,5,8", "8,5,16", "8,5,32", "8,5,64", "4,5,16", "16,5,16", "32,5,16",
           "8,5,16,2", "8,5,16,3", "8,5,16,5", "8,5,16,6"]


def measure(args: argparse.Namespace) -> dict:
    import torch

    from dartsnas.architect import Architect
    from dartsnas.spaces import ConvSearchSpaceConfig, SearchNetwork
    from dartsnas.train.common import autocast
    from dartsnas.train.bilevel import search_step

    torch.set_num_threads(args.threads)
    C, L, B, *rest = (int(v) for v in args.config.split(","))
    N = rest[0] if rest else 4
    device = torch.device(args.device)
    if args.original:
        from _reference import conv_step
        sec = time_steps(conv_step(args.original, C, L, B, args.order, args.size), args.steps, args.warmup, False)
        return {"bench": "search_step", "impl": "original", "method": "darts", "C": C, "L": L, "batch": B, "size": args.size,
                "order": args.order, "threads": args.threads, "s_per_step": round(sec, 3),
                "images_per_s": round(B / sec, 2), "steps": args.steps, **peak_memory_gb(False)}
    torch.manual_seed(0)
    space = ConvSearchSpaceConfig(init_channels=C, layers=L, nodes=N, partial_channels=args.k, recompute=args.mode)
    if args.method in PDARTS_STAGES:
        L, kept = PDARTS_STAGES[args.method]
        space.layers = L
        if kept is not None:
            space.edge_op_sets = {cell: (kept,) * len(space.edge_ops(cell)) for cell in ("normal", "reduce")}
    model = SearchNetwork(space).to(device)
    fmt = torch.contiguous_format if args.no_channels_last else torch.channels_last
    model.to(memory_format=fmt)
    w_opt = torch.optim.SGD(model.weight_parameters(), lr=0.025, momentum=0.9, weight_decay=3e-4)
    arch = Architect(model, w_opt, order=args.order, fd_scheme=args.fd_scheme, grad_clip=5.0)  # as the w step clips
    if args.method == "gdas":  # the sampler lives on the network (methods.gdas), no longer in its config
        from dartsnas.methods.gdas import GumbelSampler
        model.sampler = GumbelSampler(0)
    elif args.method == "drnas":
        from dartsnas.methods.drnas import DirichletSampler
        model.sampler = DirichletSampler(0)
    elif args.method == "beta-darts":
        from dartsnas.methods.beta_decay import beta_decay
        arch.terms.append(lambda: 24.5 * beta_decay([model.alpha_normal, model.alpha_reduce]))
    elif args.method == "darts-pt":
        from dartsnas.methods.pt import Projection
        model.projection = Projection(model.alpha_normal.shape[0], ("normal", "reduce"))
        for cell in ("normal", "reduce"):
            model.projection.decided[cell][::2] = [3] * len(model.projection.decided[cell][::2])
    batch = lambda: (torch.randn(B, 3, args.size, args.size, device=device).contiguous(memory_format=fmt),
                     torch.randint(0, 10, (B,), device=device))
    amp = autocast(device, not args.no_amp)  # bf16 on CUDA; CPU stays float32

    def step() -> None:
        with amp:
            search_step(model, arch, w_opt, batch(), batch(), 0.025, 5.0)

    sec = time_steps(step, args.steps, args.warmup, device.type == "cuda")
    profiled = peak_memory_gb(device.type == "cuda")  # before the profiler's own memory
    if args.profile:
        from _profile import op_shares
        profiled.update(op_shares(step))
    return {"bench": "search_step", "method": args.method, "C": C, "L": L, "batch": B, "nodes": N, "size": args.size,
            "ops_per_edge": len(space.edge_ops("normal")[0]), "order": args.order,
            "partial_channels": args.k, "recompute": args.mode,
            **({"fd_scheme": args.fd_scheme} if args.order == "second" else {}), "device": args.device, "threads": args.threads,
            "channels_last": not args.no_channels_last, "amp": not args.no_amp and device.type == "cuda",
            "s_per_step": round(sec, 3),
            "images_per_s": round(B / sec, 2), "steps": args.steps, **profiled}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configs", nargs="+", default=CONFIGS, help="C,L,batch triples")
    p.add_argument("--scaling", action="store_true", help="the scaling configurations (batch, C, nodes)")
    p.add_argument("--orders", nargs="+", default=["first", "second"])
    p.add_argument("--fd-scheme", default="central", choices=("central", "forward"),
                   help="finite difference of the second-order steps")
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--no-channels-last", action="store_true", help="NCHW activations (the plain path)")
    p.add_argument("--no-amp", action="store_true", help="float32 on CUDA too (the plain path)")
    p.add_argument("--compare", action="store_true",
                   help="each configuration on the fast path and on the plain (float32, NCHW) one, and the ratio")
    p.add_argument("--partial-channels", nargs="+", type=int, default=[1], metavar="K",
                   help="PC-DARTS K values to measure (1: plain DARTS), e.g. --partial-channels 1 4")
    p.add_argument("--methods", nargs="+", default=["darts"], choices=("darts", "gdas", "p-darts", "drnas", "beta-darts", "darts-pt"),
                   help="search methods to measure (p-darts: its three stage networks) [darts]")
    p.add_argument("--recompute", nargs="+", default=["none"], choices=("none", "cell", "edge"),
                   help="activation recomputation modes to measure [none]")
    p.add_argument("--reference", metavar="DIR", help="a checkout of the original DARTS code: measure its step too")
    p.add_argument("--profile", action="store_true",
                   help="two more steps under torch.profiler: each op kind's share of them (conv kinds by kernel)")
    p.add_argument("--k", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--mode", default="none", help=argparse.SUPPRESS)
    p.add_argument("--original", help=argparse.SUPPRESS)
    p.add_argument("--method", default="darts", help=argparse.SUPPRESS)
    p.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--config", help=argparse.SUPPRESS)
    p.add_argument("--order", default="first", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        print(json.dumps(measure(args)), flush=True)
        return
    common = ["--fd-scheme", args.fd_scheme, "--size", str(args.size), "--device", args.device, "--threads",
              str(args.threads), "--steps", str(args.steps), "--warmup", str(args.warmup)]
    common += (["--no-channels-last"] if args.no_channels_last else []) + (["--no-amp"] if args.no_amp else [])
    common += ["--profile"] if args.profile else []
    configs = SCALING if args.scaling else args.configs
    methods = [m for name in args.methods for m in (PDARTS_STAGES if name == "p-darts" else [name])]
    jobs = [["--config", c, "--order", o, "--k", str(k), "--method", m, "--mode", r, *common]
            for c in configs for o in args.orders for k in args.partial_channels for m in methods for r in args.recompute]
    if not args.compare:
        jobs += reference_jobs(args.reference, args.device, configs, args.orders, common)
    if not args.compare:
        versus_original(run_isolated(__file__, jobs), ("C", "L", "batch", "order"),
                        ("method", "recompute", "partial_channels"), "peak_rss_gb")
        return
    for job in jobs:
        fast, plain = run_isolated(__file__, [job, [*job, "--no-channels-last", "--no-amp"]])
        print(json.dumps({"bench": "search_step_compare", "C": fast["C"], "L": fast["L"], "batch": fast["batch"],
                          "order": fast["order"], "fast_over_plain": round(plain["s_per_step"] / fast["s_per_step"], 3)}))


if __name__ == "__main__":
    main()
