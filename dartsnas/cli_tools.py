"""The command line's reports on final networks: ``summary`` (size, multiply-adds, latency) and
``latency-table`` (the per-op latency table of a budgeted search)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .flags import given_fields
from .genotype import load_genotype
from .spaces import SEARCH_SPACES


RNN_DEFAULTS = {"ptb": dict(emsize=850, vocab_size=10000), "wt2": dict(emsize=700, vocab_size=33278)}


def summary(args: argparse.Namespace) -> int:
    """dartsnas summary: parameters and multiply-adds (and latency) of a final network, as JSON."""
    import json
    if args.network in RNN_DEFAULTS:
        from .nets.summary import count_parameters
        d = {k: getattr(args, k) if getattr(args, k) is not None else v for k, v in RNN_DEFAULTS[args.network].items()}
        model = SEARCH_SPACES.get("rnn").final_network(load_genotype(args.genotype, "rnn"), vocab_size=d["vocab_size"],
                                                       emsize=d["emsize"], nhid=d["emsize"])
        print(json.dumps({"network": args.network, "genotype": args.genotype, "emsize": d["emsize"],
                          "nhid": d["emsize"], "vocab_size": d["vocab_size"],
                          "params": count_parameters(model)["params"]}))
        return 0
    from .nets import FINAL_NETWORKS
    from .nets.summary import summarize
    d = {k: getattr(args, k) if getattr(args, k) is not None else v
         for k, v in FINAL_NETWORKS[args.network].items()}
    d["in_channels"] = args.in_channels
    for k, v in d.items():
        if v < 1:
            raise ConfigError(f"--{k.replace('_', '-')} must be >= 1, got {v}")
    space = "nb201" if args.network == "nb201" else "cnn"
    genotype = load_genotype(args.genotype, space)
    net = SEARCH_SPACES.get(space).final_network(genotype, network=args.network, init_channels=d["init_channels"],
                                                 layers=d["layers"], num_classes=d["num_classes"],
                                                 in_channels=d["in_channels"])
    shape = (d["in_channels"], d["image_size"], d["image_size"])
    info = {"network": args.network, "genotype": args.genotype, "init_channels": d["init_channels"],
            "layers": d["layers"], "num_classes": d["num_classes"], **summarize(net, shape)}
    if space == "nb201":  # the benchmark's own counts (FLOPs with biases, in millions)
        from .nets.nb201 import benchmark_cost
        info["benchmark"] = benchmark_cost(net, (d["image_size"], d["image_size"]), d["in_channels"])
    if args.latency is not None:
        from .latency import LatencyConfig, Timer
        timing = LatencyConfig(runtime=args.latency, device=args.device, threads=args.threads, repeats=args.repeats)
        timing.validate()
        timer = Timer(args.latency, args.device, args.threads, repeats=args.repeats, rounds=timing.rounds)
        info.update(latency_ms=timer(net, shape), latency=timer.describe())
    print(json.dumps(info))
    return 0


def latency_table(args: argparse.Namespace) -> int:
    """dartsnas latency-table: every candidate op timed at every shape of the final network."""
    import json
    from .latency import LatencyConfig, latency_table as measure
    from .train.checkpoint import atomic_write_text, check_writable_file
    config = LatencyConfig(**given_fields(LatencyConfig, args))
    config.validate()
    check_writable_file(args.out)  # before minutes of timing
    log = None if args.quiet else (lambda line: print(line, file=sys.stderr))
    table = measure(config, log=log)
    atomic_write_text(args.out, json.dumps(table.to_dict()) + "\n")
    m = table.measurement
    print(json.dumps({"out": str(args.out), "runtime": m["runtime"], "device": m["device_name"],
                      "threads": m["threads"], "op_shapes": m["distinct_op_shapes"],
                      "reference_network_ms": round(m["reference_network_ms"], 4),
                      "fixed_ms": round(table.fixed["latency"], 4)}))
    return 0


def add_derive(sub: Any) -> None:
    """The derive command's flags."""
    p = sub.add_parser("derive", help="print the genotype a search checkpoint derives to")
    p.add_argument("checkpoint", type=Path, help="checkpoint.pt or a run directory")
    p.add_argument("--max-skip", type=int, default=None, help="override the run's skip_connect cap")
    p.add_argument("--derivation", choices=("top-k", "gdas"), default=None,
                   help="override the run's: top-k (DARTS) or gdas (the two strongest (op, input) pairs per node)")
    p.add_argument("--method", choices=("top-k", "pt"), default="top-k",
                   help="top-k: what α derives to; pt: DARTS-PT's selection on the supernet (a run in --out, "
                        "resumed if run again; its lines on stderr) [top-k]")
    p.add_argument("--out", type=Path, default=None, help="pt: the selection's run directory [RUN/pt]")
    p.add_argument("--pt-interval", type=int, default=None, help="pt: fine-tuning epochs between decisions [5]")
    p.add_argument("--pt-crit", choices=("acc", "loss"), default=None, help="pt: judged by validation accuracy or loss [acc]")
    p.add_argument("--pt-lr", type=float, default=None, help="pt: the fine-tuning's constant lr [the search's lr / 10]")
    p.add_argument("--pt-batches", type=int, default=None, help="pt: validation batches per measurement [all]")


def derive(args: argparse.Namespace) -> int:
    """dartsnas derive: the genotype of a search checkpoint (top-k of α, or DARTS-PT's selection)."""
    from .train.search import derive_from_checkpoint
    if args.method == "pt":
        from .train.pt import select_pt
        genotype = select_pt(args.checkpoint, args.out, log=lambda line: print(line, file=sys.stderr),
                             pt_interval=args.pt_interval, pt_crit=args.pt_crit, pt_lr=args.pt_lr,
                             pt_batches=args.pt_batches)
        print(genotype.to_json())
        return 0
    print(derive_from_checkpoint(args.checkpoint, max_skip=args.max_skip, derivation=args.derivation).to_json())
    return 0
