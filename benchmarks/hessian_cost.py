"""What watching the curvature costs: seconds of one dominant-eigenvalue evaluation (Lanczos on
Hessian-vector products over one fixed validation batch) next to one first-order search step, on the
conv search network; one JSON line per configuration, each in a fresh process.

    python benchmarks/hessian_cost.py                         # C=8 L=5 and C=16 L=8, batch 64, 10 and 20 steps
    python benchmarks/hessian_cost.py --device cuda --configs 16,8,64
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _harness import peak_memory_gb, run_isolated, time_steps  # noqa: E402


def measure(args: argparse.Namespace) -> dict:
    import torch

    from dartsnas.architect import Architect
    from dartsnas.curvature import dominant_eigenvalue
    from dartsnas.spaces import ConvSearchSpaceConfig, SearchNetwork
    from dartsnas.train.bilevel import search_step
    torch.set_num_threads(args.threads)
    C, L, B = (int(v) for v in args.config.split(","))
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    torch.manual_seed(0)
    model = SearchNetwork(ConvSearchSpaceConfig(init_channels=C, layers=L)).to(device)
    opt = torch.optim.SGD(model.weight_parameters(), lr=0.025, momentum=0.9, weight_decay=3e-4)
    arch = Architect(model, opt, order="first", grad_clip=5.0)
    batch = lambda: (torch.randn(B, 3, 32, 32, device=device), torch.randint(0, 10, (B,), device=device))  # noqa: E731
    step_s = time_steps(lambda: search_step(model, arch, opt, batch(), batch(), 0.025, 5.0), 3, 1, cuda)
    fixed = [batch()]
    out = {"C": C, "L": L, "batch": B, "device": args.device, "threads": args.threads, "search_step_s": round(step_s, 3)}
    for steps in args.steps:
        dominant_eigenvalue(model, fixed, steps=1)  # warm-up
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        value = dominant_eigenvalue(model, fixed, steps=steps)
        if cuda:
            torch.cuda.synchronize()
        seconds = time.perf_counter() - t0
        out[f"eigenvalue_{steps}_steps_s"] = round(seconds, 3)
        out[f"eigenvalue_{steps}_steps_in_search_steps"] = round(seconds / step_s, 2)
        out[f"eigenvalue_{steps}_steps"] = round(value, 6)
    return {**out, **peak_memory_gb(cuda)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configs", nargs="+", default=["8,5,64", "16,8,64"])
    p.add_argument("--steps", type=int, nargs="+", default=[10, 20])
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--config", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        print(json.dumps(measure(args)), flush=True)
        return
    common = ["--device", args.device, "--threads", str(args.threads), "--steps", *map(str, args.steps)]
    run_isolated(__file__, [["--config", c, *common] for c in args.configs])


if __name__ == "__main__":
    main()
