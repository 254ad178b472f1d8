"""Throughput and peak memory of one recurrent DARTS search step (α step + w step).

tokens/s = batch x BPTT / seconds of one full search step, on random tokens of a 10,000-word
vocabulary; one JSON line per (configuration, order), each measured in a fresh process.

    python benchmarks/rnn_search_step.py        # 64/64 batch 32 and 300/300 batch 256, BPTT 35, 2 threads
    python benchmarks/rnn_search_step.py --compile on --configs 64,32 --orders second

``--reference DIR`` (a checkout of quark0/darts, see _reference.py) measures the original's step in the
same run and prints dartsnas's speed-up against it (skipped without it):

    python benchmarks/rnn_search_step.py --configs 64,32 --compile off on --reference DIR

``--compile on`` runs the cell's time step through torch.compile (the CLI's ``--compile``); the
compilation happens in the warm-up steps, which are not timed.
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _harness import peak_memory_gb, reference_jobs, run_isolated, time_steps, versus_original  # noqa: E402

CONFIGS = ["64,32", "300,256"]  # emsize=nhid, batch


def measure(args: argparse.Namespace) -> dict:
    import torch

    from dartsnas.architect import Architect
    from dartsnas.autodiff import requires_grad_off
    from dartsnas.spaces import RecurrentSearchModel, RecurrentSearchSpaceConfig
    from dartsnas.train.lm import lm_weight_loss

    torch.set_num_threads(args.threads)
    size, B = (int(v) for v in args.config.split(","))
    device = torch.device(args.device)
    T = args.bptt
    if args.original:
        from _reference import rnn_step
        sec = time_steps(rnn_step(args.original, size, B, args.order, T, args.vocab), args.steps, args.warmup, False)
        return {"bench": "rnn_search_step", "impl": "original", "emsize": size, "batch": B, "bptt": T, "order": args.order,
                "compile": False, "threads": args.threads, "s_per_step": round(sec, 3),
                "tokens_per_s": round(B * T / sec, 1), **peak_memory_gb(False)}
    torch.manual_seed(0)
    model = RecurrentSearchModel(RecurrentSearchSpaceConfig(vocab_size=args.vocab, emsize=size, nhid=size)).to(device)
    if args.compiled:
        model.cell.compile_step()
    w_opt = torch.optim.SGD(model.weight_parameters(), lr=20.0, weight_decay=5e-7)
    objective = functools.partial(lm_weight_loss, tar=1e-3, ar=0.0)  # the search's: NLL + TAR, clipped at 0.25
    arch = Architect(model, w_opt, order=args.order, lr=3e-3, betas=(0.9, 0.999), weight_decay=1e-3,
                     grad_clip=0.25, train_loss=objective)
    window = lambda: (torch.randint(0, args.vocab, (T, B), device=device),
                      torch.randint(0, args.vocab, (T * B,), device=device))
    state = {"h": model.init_hidden(B), "hv": model.init_hidden(B)}

    def step() -> None:
        (x, y), (xv, yv) = window(), window()
        arch.step((x, y, state["h"].detach()), (xv, yv, state["hv"].detach()), 20.0)
        state["hv"] = arch.val_extra
        with requires_grad_off(model.arch_parameters()):
            loss, _, h = objective(model, x, y, state["h"].detach())
            w_opt.zero_grad(set_to_none=True)
            loss.backward()
        torch.nn.utils.clip_grad_norm_(model.weight_parameters(), 0.25)
        w_opt.step()
        state["h"] = h.detach()

    if args.compiled:
        step()  # compiles every variant of the time step (first step, α step, w step)
    sec = time_steps(step, args.steps, args.warmup, device.type == "cuda")
    return {"bench": "rnn_search_step", "emsize": size, "nhid": size, "batch": B, "bptt": T, "vocab": args.vocab,
            "order": args.order, "compile": args.compiled, "device": args.device, "threads": args.threads,
            "s_per_step": round(sec, 3),
            "tokens_per_s": round(B * T / sec, 1), **peak_memory_gb(device.type == "cuda")}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configs", nargs="+", default=CONFIGS, help="emsize,batch pairs")
    p.add_argument("--orders", nargs="+", default=["first", "second"])
    p.add_argument("--bptt", type=int, default=35)
    p.add_argument("--vocab", type=int, default=10000)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--compile", nargs="+", choices=["off", "on"], default=["off", "on"],
                   help="eager and/or the cell step through torch.compile (as --compile of the CLI)")
    p.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--config", help=argparse.SUPPRESS)
    p.add_argument("--order", default="first", help=argparse.SUPPRESS)
    p.add_argument("--reference", metavar="DIR", help="a checkout of the original DARTS code: measure its step too")
    p.add_argument("--compiled", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--original", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        print(json.dumps(measure(args)), flush=True)
        return
    common = ["--bptt", str(args.bptt), "--vocab", str(args.vocab), "--device", args.device, "--threads",
              str(args.threads), "--steps", str(args.steps), "--warmup", str(args.warmup)]
    jobs = [["--config", c, "--order", o, *common, *(["--compiled"] if m == "on" else [])]
            for c in args.configs for o in args.orders for m in args.compile]
    jobs += reference_jobs(args.reference, args.device, args.configs, args.orders, common)
    versus_original(run_isolated(__file__, jobs), ("emsize", "batch", "order"), ("compile",), "peak_rss_gb")


if __name__ == "__main__":
    main()
