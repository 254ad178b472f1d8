"""How often the weight step clips its gradient in real searches, and what the clipped virtual step
changes: per epoch, the fraction of steps whose gradient norm exceeded --grad-clip and the mean clip
factor of those steps (from metrics.jsonl), and the derived genotype with the virtual step clipped as
the weight step is (dartsnas) against the unclipped virtual step of earlier versions, same seed.

    python benchmarks/clip_effect.py rnn --data-dir ../shared/data/ptb --epochs 2       # PTB, 300/300 batch 256
    python benchmarks/clip_effect.py cnn --epochs 8                                      # bundled digits, clip 5

Each run is a fresh process; one JSON line per run, then one comparing the two genotypes.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path


def run_one(args: argparse.Namespace) -> dict:
    import torch

    from dartsnas.architect import _model_loss
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    if args.space == "rnn":
        from dartsnas.train.search_rnn import RNNSearch, RNNSearchConfig
        cfg = RNNSearchConfig(data_dir=args.data_dir, train_split="valid", val_split="test", emsize=args.size,
                              nhid=args.size, batch_size=args.batch_size, epochs=args.epochs, order=args.order,
                              seed=args.seed, steps_per_epoch=args.steps_per_epoch)
        run = RNNSearch(cfg, out, quiet=True)
    else:
        from dartsnas.train.search import Search, SearchConfig
        cfg = SearchConfig(dataset="digits", init_channels=8, layers=5, batch_size=64, lr=0.05, epochs=args.epochs,
                           order=args.order, seed=args.seed, steps_per_epoch=args.steps_per_epoch)
        run = Search(cfg, out, quiet=True)
    if args.unclipped:  # the virtual step of earlier versions: no clipping, the bare model loss
        run.architect.grad_clip, run.architect.train_loss = None, _model_loss
    result = run.execute()
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    genotype = result[0] if isinstance(result, tuple) else result.genotype
    return {"space": args.space, "order": args.order, "virtual_step": "unclipped" if args.unclipped else "clipped",
            "grad_clip": cfg.grad_clip, "seed": args.seed,
            "epochs": [{k: r[k] for k in ("epoch", "steps", "clip_fraction", "clip_factor") if k in r}
                       | {"val": round(r.get("val_ppl", r.get("val_acc", 0.0)), 4), "seconds": r["seconds"]}
                       for r in records],
            "genotype": genotype.to_dict()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("space", choices=("rnn", "cnn"))
    p.add_argument("--data-dir", help="PTB folder (valid.txt trains w, test.txt steers α)")
    p.add_argument("--size", type=int, default=300, help="emsize = nhid of the recurrent search [300]")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--steps-per-epoch", type=int, default=None)
    p.add_argument("--order", default="second")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--variants", nargs="+", choices=("clipped", "unclipped"), default=["clipped", "unclipped"],
                   help="virtual steps to run [both]")
    p.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--unclipped", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        print(json.dumps(run_one(args)), flush=True)
        return
    if args.space == "rnn" and not args.data_dir:
        p.error("rnn needs --data-dir (a folder with PTB's valid.txt and test.txt)")
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for unclipped in [v == "unclipped" for v in args.variants]:
            argv = [a for a in sys.argv[1:] if a not in ("--variants", *args.variants)]
            argv += ["--one", "--out", str(Path(tmp) / f"run{int(unclipped)}")]
            if unclipped:
                argv.append("--unclipped")
            done = subprocess.run([sys.executable, __file__, *argv], capture_output=True, text=True)
            if done.returncode != 0:  # a search that breaks down is a result too
                lines = (done.stderr.strip() or "no output").splitlines()
                error = next((line for line in reversed(lines) if line.startswith("dartsnas.errors")), lines[-1])
                result = {"space": args.space, "virtual_step": "unclipped" if unclipped else "clipped",
                          "failed": error}
            else:
                result = json.loads(done.stdout.strip().splitlines()[-1])
            print(json.dumps(result), flush=True)
            results.append(result)
    if len(results) < 2 or any("failed" in r for r in results):
        return
    a, b = (r["genotype"] for r in results)
    cells = [k for k in a if not k.endswith("concat")]
    differ = {k: sum(x != y for x, y in zip(a[k], b[k])) for k in cells}
    print(json.dumps({"genotypes_equal": a == b, "edges_that_differ": differ,
                      "edges": {k: len(a[k]) for k in cells}}), flush=True)


if __name__ == "__main__":
    main()
