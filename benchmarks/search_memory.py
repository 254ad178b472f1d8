"""Peak memory and step time of a search step for each activation-recomputation mode, and of the
curvature monitor's eigenvalue for each Hessian-vector product.

    python benchmarks/search_memory.py                       # C16 L8 b32 and C16 L20 b32, every mode, both orders
    python benchmarks/search_memory.py --configs 16,8,32 --orders first --modes none edge
    python benchmarks/search_memory.py --eigenvalue          # C16 L8 batch 64, 10 Lanczos steps: autograd, forward, fd,
                                                             # each plain and through recomputed edges, against 10 search
                                                             # steps of each (--configs C,L,B: another size)
    python benchmarks/search_memory.py --configs 16,8,32 --size 128 --stem imagenet --orders first
    python benchmarks/search_memory.py --device cuda
    python benchmarks/search_memory.py --configs 16,8,32 --modes none edge --reference DIR   # beside the original

``--reference DIR`` (a checkout of quark0/darts, see _reference.py) measures the original's step too, in the
same run, with the same peak, and prints each mode's memory and speed-up against it; skipped without it.

Each measurement runs in a fresh process. On CPU the peak is the process's resident high-water mark
(VmHWM) above its resident size once the model, optimisers and batches exist (VmRSS), so that the
figure is what the step itself needs; on CUDA, torch.cuda.max_memory_allocated over the steps. One
JSON line per measurement, then the ratios of each mode to ``none``.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _harness import reference_jobs, run_isolated, time_steps, versus_original  # noqa: E402

CONFIGS = ["16,8,32", "16,20,32"]


def _status(field: str) -> float:
    """A VmRSS / VmHWM line of /proc/self/status, in GiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 2**20
    raise RuntimeError(f"no {field} in /proc/self/status")


def _reset_peak() -> None:
    """Restart VmHWM from the current resident size (Linux: write 5 to clear_refs)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


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
    if args.original:  # the original's step: the same peak above its baseline (model, optimisers, batches built)
        from _reference import conv_step
        step = conv_step(args.original, C, L, B, args.order, args.size)
        _reset_peak()
        base = _status("VmRSS")
        sec = time_steps(step, args.steps, args.warmup, False)
        peak = _status("VmHWM")
        return {"bench": "search_memory", "impl": "original", "C": C, "L": L, "batch": B, "size": args.size,
                "what": "search_step", "order": args.order, "recompute": "none", "threads": args.threads,
                "s_per_step": round(sec, 3), "peak_above_baseline_gb": round(peak - base, 3),
                "peak_rss_gb": round(peak, 3)}
    torch.manual_seed(0)
    model = SearchNetwork(ConvSearchSpaceConfig(init_channels=C, layers=L, recompute=args.mode,
                                                partial_channels=args.k, stem=args.stem)).to(device)
    model.to(memory_format=torch.channels_last)
    w_opt = torch.optim.SGD(model.weight_parameters(), lr=0.025, momentum=0.9, weight_decay=3e-4)
    arch = Architect(model, w_opt, order=args.order, grad_clip=5.0)
    g = torch.Generator().manual_seed(1)
    batches = [(torch.randn(B, 3, args.size, args.size, generator=g).to(device).contiguous(
        memory_format=torch.channels_last), torch.randint(0, 10, (B,), generator=g).to(device)) for _ in range(2)]
    if cuda:
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated() / 2**30
    else:
        _reset_peak()
        base = _status("VmRSS")
    row = {"bench": "search_memory", "C": C, "L": L, "batch": B, "size": args.size, "stem": args.stem,
           "partial_channels": args.k,
           "device": args.device, "threads": args.threads}
    if args.eigenvalue:
        t0 = time.perf_counter()
        value = dominant_eigenvalue(model, batches[:1], steps=args.lanczos, hvp=args.hvp)
        seconds = time.perf_counter() - t0
        row.update({"what": "eigenvalue", "hvp": args.hvp, "recompute": args.mode, "lanczos_steps": args.lanczos,
                    "eigenvalue": round(value, 5), "seconds": round(seconds, 2)})
    else:
        def step() -> None:
            search_step(model, arch, w_opt, batches[0], batches[1], 0.025, 5.0)

        sec = time_steps(step, args.steps, args.warmup, cuda)
        row.update({"what": "search_step", "order": args.order, "recompute": args.mode, "s_per_step": round(sec, 3)})
    peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else _status("VmHWM")
    row["peak_above_baseline_gb"] = round(peak - base, 3)
    if not cuda:
        row["peak_rss_gb"] = round(peak, 3)  # the whole process's
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configs", nargs="+", default=CONFIGS, help="C,L,batch triples")
    p.add_argument("--orders", nargs="+", default=["first", "second"])
    p.add_argument("--modes", nargs="+", default=["none", "cell", "edge"])
    p.add_argument("--partial-channels", type=int, default=1, dest="k_all")
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--stem", default="cifar", choices=("cifar", "imagenet"), help="the search network's stem")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--eigenvalue", action="store_true",
                   help="the eigenvalue (C16 L8 batch 64, or the first --configs entry) instead of search steps")
    p.add_argument("--lanczos", type=int, default=10)
    p.add_argument("--hvps", nargs="+", default=["autograd", "forward", "fd"],
                   help="--eigenvalue: the Hessian-vector products measured (each with every --modes but cell)")
    p.add_argument("--reference", metavar="DIR", help="a checkout of the original DARTS code: measure its step too")
    p.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--original", help=argparse.SUPPRESS)
    p.add_argument("--config", help=argparse.SUPPRESS)
    p.add_argument("--order", default="first", help=argparse.SUPPRESS)
    p.add_argument("--mode", default="none", help=argparse.SUPPRESS)
    p.add_argument("--hvp", default="autograd", help=argparse.SUPPRESS)
    p.add_argument("--k", type=int, default=1, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        print(json.dumps(measure(args)), flush=True)
        return
    common = ["--size", str(args.size), "--stem", args.stem, "--device", args.device, "--threads", str(args.threads), "--steps",
              str(args.steps), "--warmup", str(args.warmup), "--k", str(args.k_all), "--lanczos", str(args.lanczos)]
    if args.eigenvalue:
        config = args.configs[0] if args.configs != CONFIGS else "16,8,64"
        pairs = [(hvp, mode) for hvp in args.hvps for mode in args.modes if mode != "cell"]
        jobs = [["--eigenvalue", "--config", config, "--hvp", hvp, "--mode", mode, *common] for hvp, mode in pairs]
        modes = sorted({mode for _, mode in pairs})  # 10 search steps of each: the target
        jobs += [["--config", config, "--order", "first", "--mode", mode, *common] for mode in modes]
        rows = run_isolated(__file__, jobs)
        steps = {row["recompute"]: row["s_per_step"] for row in rows[len(pairs):]}
        exact = next((r["eigenvalue"] for r in rows if r.get("hvp") == "autograd"), None)
        for row in rows[:len(pairs)]:
            print(json.dumps({"bench": "eigenvalue_vs_ten_search_steps", "hvp": row["hvp"], "recompute": row["recompute"],
                              "seconds": row["seconds"], "ten_search_steps_seconds": round(10 * steps[row["recompute"]], 2),
                              "peak_above_baseline_gb": row["peak_above_baseline_gb"], "eigenvalue": row["eigenvalue"],
                              "autograd_eigenvalue": exact}))
        return
    jobs = [["--config", c, "--order", o, "--mode", m, *common] for c in args.configs for o in args.orders for m in args.modes]
    jobs += reference_jobs(args.reference, args.device, args.configs, args.orders, common)
    rows = run_isolated(__file__, jobs)
    versus_original(rows, ("C", "L", "batch", "order"), ("recompute",), "peak_above_baseline_gb")
    rows = [row for row in rows if row.get("impl") != "original"]
    for row in rows:
        ref = next((r for r in rows if r["C"] == row["C"] and r["L"] == row["L"] and r["batch"] == row["batch"]
                    and r["order"] == row["order"] and r["recompute"] == "none"), None)
        if ref is None:
            continue
        if row is not ref:
            print(json.dumps({"bench": "search_memory_ratio", "C": row["C"], "L": row["L"], "batch": row["batch"],
                              "order": row["order"], "recompute": row["recompute"],
                              "memory_vs_none": round(row["peak_above_baseline_gb"] / ref["peak_above_baseline_gb"], 3),
                              "time_vs_none": round(row["s_per_step"] / ref["s_per_step"], 3)}))


if __name__ == "__main__":
    main()
