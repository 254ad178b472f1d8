"""Training throughput of a final network: images/s of one SGD step (forward, backward with the
auxiliary head and drop path, clip, update) and peak memory, one JSON line per configuration.

    python benchmarks/train_step.py                       # NetworkCIFAR DARTS_V2 C=36 L=20 batch 96
    python benchmarks/train_step.py --compare             # also the plain path (NCHW, float32), and the ratio
    python benchmarks/train_step.py --compile             # cells through torch.compile (compiled in the warm-up)
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _harness import peak_memory_gb, time_steps  # noqa: E402


def measure(args: argparse.Namespace) -> dict:
    import torch
    import torch.nn.functional as F

    from dartsnas.genotype import load_genotype
    from dartsnas.nets import NetworkConfig, build_network
    from dartsnas.train.common import autocast

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    net = build_network(args.network, NetworkConfig(load_genotype(args.genotype), init_channels=args.init_channels,
                                                    layers=args.layers, num_classes=10)).to(device)
    fmt = torch.contiguous_format if args.no_channels_last else torch.channels_last
    net.to(memory_format=fmt)
    net.drop_path_prob = 0.1
    if args.compile:
        net.compile_cells()
    opt = torch.optim.SGD(net.parameters(), lr=0.025, momentum=0.9, weight_decay=3e-4)
    x = torch.randn(args.batch_size, 3, args.size, args.size, device=device).contiguous(memory_format=fmt)
    y = torch.randint(0, 10, (args.batch_size,), device=device)
    amp = autocast(device, not args.no_amp)  # bf16 on CUDA; CPU stays float32

    def step():
        with amp:
            logits, aux = net.forward_with_aux(x)
            loss = F.cross_entropy(logits.float(), y) + 0.4 * F.cross_entropy(aux.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 5.0)
        opt.step()

    sec = time_steps(step, args.steps, args.warmup, device.type == "cuda")
    return {"bench": "train_step", "network": args.network, "genotype": args.genotype, "C": args.init_channels,
            "L": args.layers, "batch": args.batch_size, "size": args.size, "device": args.device,
            "threads": args.threads, "channels_last": not args.no_channels_last,
            "amp": not args.no_amp and device.type == "cuda", "compile": args.compile, "s_per_step": round(sec, 3),
            "images_per_s": round(args.batch_size / sec, 2), **peak_memory_gb(device.type == "cuda")}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--network", default="cifar")
    p.add_argument("--genotype", default="DARTS_V2")
    p.add_argument("--init-channels", type=int, default=36)
    p.add_argument("--layers", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=96)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--no-channels-last", action="store_true")
    p.add_argument("--no-amp", action="store_true", help="float32 on CUDA too")
    p.add_argument("--compile", action="store_true", help="torch.compile every cell (untimed warm-up steps compile)")
    p.add_argument("--compare", action="store_true",
                   help="also run the plain path (NCHW, float32, eager) and print the ratio")
    p.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        print(json.dumps(measure(args)), flush=True)
        return
    base = [sys.executable, __file__, "--one"] + [a for a in sys.argv[1:] if a != "--compare"]
    plain = [a for a in base if a != "--compile"] + ["--no-channels-last", "--no-amp"]
    runs = [base] + ([plain] if args.compare else [])
    results = []
    for cmd in runs:
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        results.append(json.loads(out))
        print(out.strip(), flush=True)
    if len(results) == 2:
        print(json.dumps({"bench": "train_step_compare", "fast_over_plain":
                          round(results[0]["images_per_s"] / results[1]["images_per_s"], 3)}))


if __name__ == "__main__":
    main()
