"""Behaviour before and after a change: every command on tiny settings, run by a base commit's code
and by this checkout's, must write the same results to the last bit.

    python benchmarks/equivalence_before_after.py [--base REV] [--only NAME ...]

For each case both trees run the same command line in their own run directory; then every JSON and
JSON-lines file the base wrote (genotype.json, metrics.jsonl, choices.json, selection results, ...)
is compared after dropping wall-clock fields, and every tensor of model.pt and of the checkpoint's
model. One more case writes a mid-epoch checkpoint with the base's code (SIGTERM after step 2) and
resumes it with this checkout's: its metrics must equal the base's uninterrupted run.

Prints one JSON line per case and a summary; exits 1 if anything differs. PTB cases need
``$DARTSNAS_PTB`` (default ../shared/data/ptb) and are skipped without it.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: The last commit before issue 31's redesign (spaces and methods as registered units).
DEFAULT_BASE = "425fd35"
#: Fields that measure the machine, not the run.
TIMING = {"seconds", "images_per_s", "tokens_per_s", "examples_per_s", "hessian_seconds", "elapsed_s", "wall_s"}
PTB = Path(os.environ.get("DARTSNAS_PTB", ROOT.parent / "shared" / "data" / "ptb"))

TINY_CNN = ["--dataset", "digits", "--init-channels", "4", "--layers", "3", "--batch-size", "32",
            "--steps-per-epoch", "3", "--seed", "1", "--quiet"]
TINY_RNN = ["--data-dir", str(PTB), "--train-split", "valid", "--val-split", "test", "--emsize", "16", "--nhid", "16",
            "--batch-size", "64", "--eval-batch-size", "128", "--steps-per-epoch", "3", "--quiet"]

SEARCH_MODEL = """
import sys, torch, torch.nn as nn
from sklearn.datasets import load_digits
from dartsnas.nn import Choice
from dartsnas.train.search_model import search_model
d = load_digits()
x = torch.tensor(d.data[:256], dtype=torch.float32) / 16
y = torch.tensor(d.target[:256])
data = torch.utils.data.TensorDataset(x, y)
torch.manual_seed(0)
net = nn.Sequential(nn.Linear(64, 32), Choice([nn.ReLU(), nn.Tanh(), nn.Identity()], key="act"), nn.Linear(32, 10))
search_model(net, data, out_dir=sys.argv[1], epochs=2, batch_size=32, steps_per_epoch=4, quiet=True,
             **OPTIONS)
"""
SEARCH_MODEL_SECOND = SEARCH_MODEL.replace("**OPTIONS", "order='second'")
SEARCH_MODEL_GDAS = SEARCH_MODEL.replace("**OPTIONS", "sampler='gdas'")
SEARCH_MODEL_COST = SEARCH_MODEL.replace("**OPTIONS", "cost='params', cost_target=1500, cost_penalty='linear'")

# Runs the base's search with SIGTERM sent to itself after the second step of epoch 1.
INTERRUPT = """
import os, signal, sys
from dartsnas.cli import main
from dartsnas.train import loop
done = loop.Run.step_done
def step_done(self, step, progress):
    if self.epoch == 0 and step == 2:
        os.kill(os.getpid(), signal.SIGTERM)
    return done(self, step, progress)
loop.Run.step_done = step_done
sys.exit(main(sys.argv[1:]))
"""


def cases(out: Path) -> list[dict]:
    arrays = out / "arrays.npz"
    imagenet = out / "imagenet"
    genotype = ["--genotype", "DARTS_V2"]
    return [
        {"name": "search-cnn-first", "argv": ["search", "cnn", *TINY_CNN, "--epochs", "2"]},
        {"name": "search-cnn-second-sdarts-hessian",
         "argv": ["search", "cnn", *TINY_CNN, "--epochs", "2", "--order", "second", "--regularizer", "sdarts-rs",
                  "--hessian-every", "1", "--hessian-steps", "3", "--checkpoint-every", "2"]},
        {"name": "search-cnn-dartsminus-s2-es",
         "argv": ["search", "cnn", *TINY_CNN, "--epochs", "3", "--regularizer", "darts-minus", "--ops", "s2",
                  "--max-skip", "1", "--hessian-every", "1", "--hessian-steps", "3", "--early-stop", "hessian",
                  "--es-start", "1"]},
        {"name": "search-cnn-pcdarts-arrays",
         "argv": ["search", "cnn", *TINY_CNN, "--epochs", "2", "--partial-channels", "2", "--arch-start-epoch", "1",
                  "--dataset", "arrays", "--data-dir", str(arrays), "--steps-per-epoch", "4"]},
        {"name": "train-cnn", "argv": ["train", "cnn", *TINY_CNN, *genotype, "--epochs", "2", "--cutout", "4"]},
        {"name": "train-cnn-selection",
         "argv": ["train", "cnn", *TINY_CNN, *genotype, "--epochs", "1", "--train-portion", "0.8",
                  "--label-smoothing", "0.1", "--lr-schedule", "exponential"]},
        {"name": "random-search-cnn",
         "argv": ["random-search", "cnn", *TINY_CNN, "--samples", "2", "--epochs", "1", "--devices", "cpu"]},
        {"name": "search-cnn-exact", "argv": ["search", "cnn", *TINY_CNN, "--epochs", "1", "--order", "exact"]},
        {"name": "search-cnn-pdarts",
         "argv": ["search", "cnn", *TINY_CNN, "--progressive", "--stage-layers", "3", "4", "--stage-ops", "8", "4",
                  "--stage-dropout", "0.1", "0.3", "--stage-epochs", "2", "--stage-warmup", "1",
                  "--regularizer", "darts-minus"]},
        {"name": "search-cnn-pdarts-pc-second",
         "argv": ["search", "cnn", *TINY_CNN, "--progressive", "--stage-layers", "3", "3", "--stage-ops", "8", "3",
                  "--stage-dropout", "0.2", "0.4", "--stage-epochs", "1", "--stage-warmup", "0",
                  "--partial-channels", "2", "--order", "second", "--regularizer", "sdarts-rs"]},
        {"name": "search-cnn-gdas",
         "argv": ["search", "cnn", *TINY_CNN, "--epochs", "2", "--sampler", "gdas", "--tau-max", "5"]},
        {"name": "search-cnn-gdas-frc",
         "argv": ["search", "cnn", *TINY_CNN, "--epochs", "2", "--sampler", "gdas", "--reduce-cell", "gdas"]},
        {"name": "search-cnn-cost-macs-budget",
         "argv": ["search", "cnn", *TINY_CNN, "--epochs", "2", "--cost", "macs", "--cost-target", "2M",
                  "--cost-layers", "5", "--cost-channels", "8", "--cost-derive", "budget"]},
        {"name": "search-cnn-cost-params-pc-hinge",
         "argv": ["search", "cnn", *TINY_CNN, "--epochs", "2", "--cost", "params", "--cost-target", "20K",
                  "--cost-layers", "5", "--cost-channels", "8", "--cost-penalty", "hinge", "--partial-channels", "2",
                  "--order", "second"]},
        {"name": "search-cnn-sdarts-pc-exact-hessian",
         "argv": ["search", "cnn", *TINY_CNN, "--epochs", "2", "--regularizer", "sdarts-rs", "--partial-channels",
                  "2", "--order", "exact", "--hessian-every", "1", "--hessian-steps", "2", "--hessian-hvp",
                  "forward", "--recompute", "edge"]},
        {"name": "search-cnn-second-recompute-edge",
         "argv": ["search", "cnn", *TINY_CNN, "--epochs", "2", "--order", "second", "--recompute", "edge"]},
        {"name": "search-cnn-pc-recompute-edge",
         "argv": ["search", "cnn", *TINY_CNN, "--epochs", "2", "--partial-channels", "2", "--recompute", "edge"]},
        {"name": "search-cnn-gdas-recompute-cell",
         "argv": ["search", "cnn", *TINY_CNN, "--epochs", "2", "--sampler", "gdas", "--recompute", "cell"]},
        {"name": "search-cnn-imagenet",
         "argv": ["search", "cnn", "--dataset", "imagenet", "--data-dir", str(imagenet), "--image-size", "32",
                  "--init-channels", "4", "--layers", "3", "--nodes", "2", "--batch-size", "2", "--epochs", "2",
                  "--arch-start-epoch", "1", "--sample", "0.34", "0.34", "--workers", "0", "--seed", "1",
                  "--quiet"]},
        {"name": "derive-pdarts", "after": "search-cnn-pdarts", "argv": ["derive", "<RUN>", "--max-skip", "1"]},
        {"name": "derive-cost-budget", "after": "search-cnn-cost-macs-budget", "argv": ["derive", "<RUN>"]},
        {"name": "search-model", "python": SEARCH_MODEL_SECOND},
        {"name": "search-model-gdas", "python": SEARCH_MODEL_GDAS},
        {"name": "search-model-cost", "python": SEARCH_MODEL_COST},
        {"name": "search-rnn", "ptb": True, "argv": ["search", "rnn", *TINY_RNN, "--epochs", "2"]},
        {"name": "search-rnn-second", "ptb": True,
         "argv": ["search", "rnn", *TINY_RNN, "--epochs", "1", "--order", "second", "--hessian-every", "1",
                  "--hessian-steps", "3"]},
        {"name": "train-rnn", "ptb": True,
         "argv": ["train", "rnn", *TINY_RNN, *genotype, "--epochs", "2", "--test-batch-size", "64"]},
    ]


def write_arrays(path: Path) -> None:
    import numpy as np
    from sklearn.datasets import load_digits
    d = load_digits()
    x = (d.images[:300] * 16).clip(0, 255).astype(np.uint8)  # N x H x W grey
    np.savez(path, x_train=x[:240], y_train=d.target[:240], x_test=x[240:], y_test=d.target[240:])


def write_imagenet(root: Path) -> None:
    """ImageNet's layout, train/<wnid>/*.JPEG, 3 classes of 6 generated images (colour = class)."""
    import numpy as np
    from PIL import Image
    rng = np.random.default_rng(0)
    for wnid, colour in {"n01440764": (200, 30, 30), "n01443537": (30, 200, 30), "n01484850": (30, 30, 200)}.items():
        (root / "train" / wnid).mkdir(parents=True)
        for i in range(6):
            h, w = int(rng.integers(36, 60)), int(rng.integers(36, 60))
            pixels = np.clip(np.array(colour) + rng.normal(0, 20, (h, w, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / "train" / wnid / f"img_{i}.JPEG", quality=90)


def export_tree(rev: str, dest: Path) -> Path:
    """The tracked files of ``rev`` (no work tree, no git bookkeeping)."""
    dest.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev], check=True, capture_output=True).stdout
    tar = dest / "tree.tar"
    tar.write_bytes(archive)
    with tarfile.open(tar) as t:
        t.extractall(dest, filter="data")
    tar.unlink()
    return dest


def run_case(case: dict, tree: Path, out: Path, work: Path) -> tuple[int, str]:
    env = {**os.environ, "PYTHONPATH": str(tree), "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}
    if "python" in case:
        cmd = [sys.executable, "-c", case["python"], str(out)]
    elif "after" in case:  # a command reading an earlier case's run directory; its output is compared
        run_dir = str(out.parent / case["after"])
        cmd = [sys.executable, "-c", "import sys; from dartsnas.cli import main; sys.exit(main(sys.argv[1:]))",
               *[run_dir if a == "<RUN>" else a for a in case["argv"]]]
        p = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True)
        return p.returncode, p.stdout if p.returncode == 0 else (p.stdout + p.stderr)[-2000:]
    else:
        cmd = [sys.executable, "-c", case.get("driver", "import sys; from dartsnas.cli import main; "
                                                         "sys.exit(main(sys.argv[1:]))"),
               *case["argv"], "--out", str(out), *case.get("extra", [])]
    p = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True)
    return p.returncode, (p.stdout + p.stderr)[-2000:]


def strip(value, root: str):
    """Without wall-clock fields; the run directory's own path spelt <RUN> (the two runs write to two)."""
    if isinstance(value, dict):
        return {k: strip(v, root) for k, v in value.items() if k not in TIMING}
    if isinstance(value, list):
        return [strip(v, root) for v in value]
    if isinstance(value, str):
        return value.replace(root, "<RUN>")
    return value


def read_json_file(path: Path, root: Path):
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".jsonl":
        return [strip(json.loads(line), str(root)) for line in text.splitlines() if line.strip()]
    return strip(json.loads(text), str(root))


def first_difference(a, b, where: str = "") -> str:
    if isinstance(a, dict) and isinstance(b, dict):
        for k in list(a) + [k for k in b if k not in a]:
            if a.get(k) != b.get(k):
                return first_difference(a.get(k), b.get(k), f"{where}.{k}")
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b)):
            if x != y:
                return first_difference(x, y, f"{where}[{i}]")
    return f"{where or 'value'}: {str(a)[:80]} != {str(b)[:80]}"


def compare_tensors(a: Path, b: Path, key: str | None) -> str | None:
    import torch
    sa, sb = torch.load(a, weights_only=True), torch.load(b, weights_only=True)
    if key is not None:
        sa, sb = sa[key], sb[key]
    if sa.keys() != sb.keys():
        return f"{a.name}: different tensors"
    for k in sa:
        if not torch.equal(sa[k], sb[k]):
            return f"{a.name}: {k} differs (max |diff| {(sa[k].double() - sb[k].double()).abs().max().item():.3g})"
    return None


#: Config fields added after the base commit, with the value that keeps the base's behaviour: a run's
#: config.json that holds one at that value (and the base's does not) is the same run.
ADDED_FIELDS = {"recipe": "none", "derivation": "top-k", "arch_grad_clip": None, "search_network": "darts",
                "nesterov": False, "select": "top-k", "pt_interval": 5, "pt_crit": "acc", "pt_lr": None,
                "pt_batches": None, "beta_decay_slope": 0.5, "dirichlet_reg": "l2", "dirichlet_kl": 1e-3,
                "stage_partial_channels": []}


def without_added_fields(a, b):
    """``b`` without the added fields at their neutral values that ``a`` lacks, at any depth (a run's
    config, or the config a protocol file or job file holds)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return {k: without_added_fields(a.get(k), v) for k, v in b.items()
                if not (k in ADDED_FIELDS and k not in a and v == ADDED_FIELDS[k])}
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [without_added_fields(x, y) for x, y in zip(a, b)]
    return b


def compare_dirs(base: Path, new: Path) -> list[str]:
    problems = []
    files = sorted(p for p in base.rglob("*") if p.suffix in (".json", ".jsonl") and "tensorboard" not in p.parts)
    for path in files:
        rel = path.relative_to(base)
        other = new / rel
        if not other.is_file():
            problems.append(f"{rel}: missing after the change")
        else:
            a, b = read_json_file(path, base), read_json_file(other, new)
            b = without_added_fields(a, b)
            if a != b:
                problems.append(f"{rel}: differs ({first_difference(a, b)})")
    for path in sorted(base.rglob("model.pt")):
        issue = compare_tensors(path, new / path.relative_to(base), "model")
        if issue:
            problems.append(f"{path.relative_to(base)}: {issue}")
    for path in sorted(base.rglob("checkpoint.pt")):
        issue = compare_tensors(path, new / path.relative_to(base), "model")
        if issue:
            problems.append(f"{path.relative_to(base)}: {issue}")
    if not files:
        problems.append("the base wrote no result files")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", default=DEFAULT_BASE, help=f"commit to compare against [{DEFAULT_BASE}]")
    parser.add_argument("--only", nargs="*", help="case names to run")
    args = parser.parse_args()
    failures = 0
    with tempfile.TemporaryDirectory(prefix="dartsnas-equiv-") as tmp:
        tmp = Path(tmp)
        base_tree = export_tree(args.base, tmp / "base-tree")
        new_tree = tmp / "new-tree"  # a copy: editing the checkout while this runs changes nothing
        shutil.copytree(ROOT / "dartsnas", new_tree / "dartsnas", ignore=shutil.ignore_patterns("__pycache__"))
        work = tmp / "work"
        work.mkdir()
        write_arrays(work / "arrays.npz")
        write_imagenet(work / "imagenet")
        todo = [c for c in cases(work) if not args.only or c["name"] in args.only]
        for case in todo:
            if case.get("ptb") and not PTB.is_dir():
                print(json.dumps({"case": case["name"], "skipped": f"no PTB at {PTB}"}))
                continue
            t0 = time.perf_counter()
            rc_a, log_a = run_case(case, base_tree, work / "base" / case["name"], work)
            rc_b, log_b = run_case(case, new_tree, work / "new" / case["name"], work)
            if rc_a != 0 or rc_b != 0:
                problems = [f"exit {rc_a} before, {rc_b} after", log_a if rc_a else log_b]
            elif "after" in case:
                problems = [] if log_a == log_b else [f"output differs: {log_a[:200]!r} != {log_b[:200]!r}"]
            else:
                problems = compare_dirs(work / "base" / case["name"], work / "new" / case["name"])
            failures += bool(problems)
            print(json.dumps({"case": case["name"], "identical": not problems, "problems": problems,
                              "seconds": round(time.perf_counter() - t0, 1)}), flush=True)
        if not args.only or "resume-across" in args.only:
            # A mid-epoch checkpoint of the base resumed by this checkout = the base's uninterrupted run.
            t0 = time.perf_counter()
            argv = ["search", "cnn", *TINY_CNN, "--epochs", "2", "--checkpoint-every", "1"]
            full, cut = work / "base" / "resume-full", work / "new" / "resume-cut"
            rc_full, log = run_case({"argv": argv}, base_tree, full, work)
            rc_cut, log_cut = run_case({"argv": argv, "driver": INTERRUPT}, base_tree, cut, work)
            rc_res, log_res = run_case({"argv": ["search", "cnn", "--resume", "--quiet"]}, new_tree, cut, work)
            problems = []
            if rc_full != 0 or rc_cut != 143 or rc_res != 0:
                problems = [f"exits {rc_full}, {rc_cut} (want 143), {rc_res}", log_res or log_cut or log]
            else:
                problems = compare_dirs(full, cut)
            failures += bool(problems)
            print(json.dumps({"case": "resume-across", "identical": not problems, "problems": problems,
                              "seconds": round(time.perf_counter() - t0, 1)}), flush=True)
    print(json.dumps({"base": args.base, "failures": failures}))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
