"""Directions for a faster memory-lean search step that were measured and not taken (docs/speed.md).

    python benchmarks/recompute_directions.py                # all three, each in a fresh process, 2 threads
    python benchmarks/recompute_directions.py --only grouped_edges

- ``grouped_edges``: the separable convolutions of the E edges that leave one node, run as one grouped
  convolution chain over E x C channels (the input repeated E times) against E separate chains;
  forward and backward with weight gradients.
- ``polyphase_dilation``: a dilation-2 depthwise convolution as an undilated one over the four
  polyphase sub-images stacked in the batch, against today's zero-inserted kernel; and whether the
  weight gradients are bit-identical.
- ``selective_recompute``: ``--recompute edge`` with a per-op policy (torch.utils.checkpoint's selective
  checkpointing: the convolutions' outputs kept, everything cheap recomputed), against full recomputation,
  on a C16 L8 batch 32 first-order search step: seconds and peak memory above the baseline.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _harness import run_isolated, time_steps  # noqa: E402

DIRECTIONS = ("grouped_edges", "polyphase_dilation", "selective_recompute")


def _ms(fn, steps: int = 5) -> float:
    return round(1e3 * time_steps(fn, steps, 2, False), 2)


def grouped_edges() -> list[dict]:
    import torch
    import torch.nn.functional as F

    cl = torch.channels_last

    def chain(x, w1, p1, w2, p2, k, groups):
        C = x.shape[1]
        y = F.relu(F.batch_norm(F.conv2d(F.conv2d(x, w1, None, 1, k // 2, 1, C), p1, groups=groups), None, None,
                                training=True))
        return F.batch_norm(F.conv2d(F.conv2d(y, w2, None, 1, k // 2, 1, C), p2, groups=groups), None, None, training=True)

    rows = []
    for C, H, E, k in [(16, 32, 4, 3), (16, 32, 4, 5), (32, 16, 4, 3), (64, 8, 4, 5)]:
        g = torch.Generator().manual_seed(0)
        x = torch.randn(32, C, H, H, generator=g).contiguous(memory_format=cl).requires_grad_()
        weights = [[torch.randn(C, 1, k, k, generator=g), torch.randn(C, C, 1, 1, generator=g),
                    torch.randn(C, 1, k, k, generator=g), torch.randn(C, C, 1, 1, generator=g)] for _ in range(E)]
        separate = [[w.clone().requires_grad_() for w in ws] for ws in weights]
        stacked = [torch.cat([ws[i] for ws in weights]).contiguous(memory_format=cl).requires_grad_() for i in range(4)]
        t_sep = _ms(lambda: sum(chain(x, *ws, k, 1).sum() for ws in separate).backward())
        t_grp = _ms(lambda: chain(x.repeat(1, E, 1, 1), *stacked, k, E).sum().backward())
        rows.append({"bench": "grouped_edges", "C": C, "H": H, "edges": E, "kernel": k, "separate_ms": t_sep,
                     "grouped_ms": t_grp, "grouped_over_separate": round(t_grp / t_sep, 2)})
    return rows


def polyphase_dilation() -> list[dict]:
    import torch
    import torch.nn.functional as F

    def zero_inserted(x, w, pad):
        k = w.shape[-1]
        e = w.new_zeros(w.shape[0], 1, 2 * (k - 1) + 1, 2 * (k - 1) + 1)
        e[:, :, ::2, ::2] = w
        return F.conv2d(x, e, None, 1, pad, 1, w.shape[0])

    def polyphase(x, w, pad):
        B, C, H, W = x.shape
        xp = x.reshape(B, C, H // 2, 2, W // 2, 2).permute(0, 3, 5, 1, 2, 4).reshape(4 * B, C, H // 2, W // 2)
        y = F.conv2d(xp.contiguous(memory_format=torch.channels_last), w, None, 1, pad // 2, 1, C)
        return y.reshape(B, 2, 2, C, H // 2, W // 2).permute(0, 3, 4, 1, 5, 2).reshape(B, C, H, W)

    rows = []
    for C, H, k in [(16, 32, 3), (16, 32, 5), (32, 16, 5)]:
        g = torch.Generator().manual_seed(0)
        x = torch.randn(32, C, H, H, generator=g).contiguous(memory_format=torch.channels_last).requires_grad_()
        w = torch.randn(C, 1, k, k, generator=g).requires_grad_()
        pad = 2 * (k // 2)
        grad = torch.randn(32, C, H, H, generator=g)
        a, b = zero_inserted(x, w, pad), polyphase(x, w, pad)
        ga, gb = torch.autograd.grad(a, (x, w), grad), torch.autograd.grad(b, (x, w), grad)
        rows.append({"bench": "polyphase_dilation", "C": C, "H": H, "kernel": k,
                     "zero_inserted_ms": _ms(lambda: torch.autograd.grad(zero_inserted(x, w, pad), (x, w), grad)),
                     "polyphase_ms": _ms(lambda: torch.autograd.grad(polyphase(x, w, pad), (x, w), grad)),
                     "values_identical": torch.equal(a, b), "input_grads_identical": torch.equal(ga[0], gb[0]),
                     "weight_grads_identical": torch.equal(ga[1], gb[1])})
    return rows


def selective_recompute(policy: str) -> list[dict]:
    import torch
    from torch.utils.checkpoint import CheckpointPolicy, checkpoint, create_selective_checkpoint_contexts

    import dartsnas.spaces.conv as conv
    from dartsnas.architect import Architect
    from dartsnas.spaces import ConvSearchSpaceConfig, SearchNetwork
    from dartsnas.spaces.base import kept_running_stats
    from dartsnas.train.bilevel import search_step
    from search_memory import _reset_peak, _status

    keep = {torch.ops.aten.convolution.default}

    def choose(ctx, op, *args, **kwargs):
        return CheckpointPolicy.MUST_SAVE if op in keep else CheckpointPolicy.PREFER_RECOMPUTE

    def selective(module, *args):
        if not torch.is_grad_enabled():
            return module(*args)

        def contexts():
            forward, recompute = create_selective_checkpoint_contexts(choose)
            stack = contextlib.ExitStack()

            class Recompute:  # the running statistics are kept outside the policy's dispatch mode
                def __enter__(self):
                    stack.enter_context(kept_running_stats(module))
                    stack.enter_context(recompute)

                def __exit__(self, *exc):
                    return stack.__exit__(*exc)
            return forward, Recompute()
        params = list(module.parameters())
        return checkpoint(lambda *flat: module(*flat[len(params):]), *params, *args, use_reentrant=False,
                          preserve_rng_state=True, determinism_check="none", context_fn=contexts)

    if policy == "keep_convolutions":
        conv.recomputed = selective
    torch.manual_seed(0)
    model = SearchNetwork(ConvSearchSpaceConfig(init_channels=16, layers=8, recompute="edge")).to(
        memory_format=torch.channels_last)
    w_opt = torch.optim.SGD(model.weight_parameters(), lr=0.025, momentum=0.9, weight_decay=3e-4)
    arch = Architect(model, w_opt, order="first", grad_clip=5.0)
    g = torch.Generator().manual_seed(1)
    batches = [(torch.randn(32, 3, 32, 32, generator=g).contiguous(memory_format=torch.channels_last),
                torch.randint(0, 10, (32,), generator=g)) for _ in range(2)]
    _reset_peak()
    base = _status("VmRSS")
    sec = time_steps(lambda: search_step(model, arch, w_opt, batches[0], batches[1], 0.025, 5.0), 2, 1, False)
    return [{"bench": "selective_recompute", "C": 16, "L": 8, "batch": 32, "order": "first", "policy": policy,
             "s_per_step": round(sec, 3), "peak_above_baseline_gb": round(_status("VmHWM") - base, 3)}]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", nargs="+", choices=DIRECTIONS, default=list(DIRECTIONS))
    p.add_argument("--one", help=argparse.SUPPRESS)
    p.add_argument("--policy", default="recompute_all", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        import torch
        torch.set_num_threads(2)
        rows = selective_recompute(args.policy) if args.one == "selective_recompute" else globals()[args.one]()
        print(json.dumps(rows), flush=True)
        return
    jobs = [[name, *(["--policy", policy] if policy else [])] for name in args.only
            for policy in (("recompute_all", "keep_convolutions") if name == "selective_recompute" else (None,))]
    run_isolated(__file__, jobs)  # each prints one JSON list of rows


if __name__ == "__main__":
    main()
