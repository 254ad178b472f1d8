"""Run every dartsnas command shown in README.md and docs/, on tiny settings, so the docs cannot drift.

    python benchmarks/check_docs.py [--keep DIR]

Each command line of a fenced code block (the same extraction as tests/test_docs.py, which checks
that they parse) runs as written in one scratch directory, in page order, so that a command finds
the run directories the earlier ones wrote, with tiny settings appended (the last flag wins):
one epoch of one step, narrow networks, small batches. The data the docs name is stood in for
offline: ``my_images`` by the bundled digits as class folders, ``~/data`` (and $DARTSNAS_DATA) by
generated files in CIFAR-10's original format (read with --no-verify), ``~/data/penn`` by the
Penn Treebank splits in ../shared/data/ptb (valid also as train). A torchrun launch runs as one
process. Prints one JSON line per command and a summary; exits 1 if any command failed.
"""
from __future__ import annotations

import argparse
import json
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from test_docs import documented_commands  # noqa: E402

PTB = Path(os.environ.get("DARTSNAS_PTB", ROOT.parent / "shared" / "data" / "ptb"))
CNN = ["--epochs", "1", "--steps-per-epoch", "1", "--init-channels", "4", "--layers", "3", "--batch-size", "8"]
RNN = ["--epochs", "1", "--steps-per-epoch", "1", "--emsize", "16", "--nhid", "16", "--batch-size", "8",
       "--eval-batch-size", "8"]
TINY = {("search", "cnn"): CNN, ("train", "cnn"): CNN, ("select", "cnn"): CNN, ("random-search", "cnn"): CNN,
        ("search", "rnn"): RNN, ("train", "rnn"): [*RNN, "--test-batch-size", "8"],
        ("select", "rnn"): RNN, ("random-search", "rnn"): RNN}
#: latency-table's final network, narrow (its ops exported one by one) and timed briefly
LATENCY = ["--init-channels", "4", "--layers", "3", "--repeats", "2", "--warmup", "0", "--quiet"]


def fake_cifar(root: Path) -> None:
    """A cifar-10-batches-py folder in the original format: 5 training batches and a test batch."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        record = {b"batch_label": name.encode(), b"labels": [int(v) for v in rng.integers(0, 10, 40)],
                  b"data": rng.integers(0, 256, (40, 3072)).astype(np.uint8),
                  b"filenames": [f"img_{i}.png".encode() for i in range(40)]}
        with open(folder / name, "wb") as f:
            pickle.dump(record, f, protocol=2)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": [f"class{i}".encode() for i in range(10)], b"num_cases_per_batch": 40,
                     b"num_vis": 3072}, f, protocol=2)


def stand_ins(work: Path) -> dict[str, str]:
    """The files the docs' commands name, stood in for; returns the path replacements."""
    data = work / "data"
    fake_cifar(data)
    penn = data / "penn"
    penn.mkdir()
    for name, source in (("train.txt", "valid.txt"), ("valid.txt", "valid.txt"), ("test.txt", "test.txt")):
        shutil.copyfile(PTB / source, penn / name)
    from dartsnas.data.bundled import write_digits_folder
    write_digits_folder(work / "my_images")
    (work / "search.toml").write_text('dataset = "digits"\norder = "first"\n')
    return {"~/data": str(data)}


def tiny(argv: list[str]) -> list[str]:
    extra = list(TINY.get(tuple(argv[:2]), LATENCY if argv[:1] == ["latency-table"] else []))
    if "--progressive" in argv:  # the run's epochs are the stages': three short ones instead of --epochs
        extra = [*extra[2:], "--stage-layers", "3", "4", "5", "--stage-epochs", "1", "--stage-warmup", "0"]
    dataset = argv[argv.index("--dataset") + 1] if "--dataset" in argv else None
    if argv[:2] in (["search", "cnn"], ["train", "cnn"], ["select", "cnn"], ["random-search", "cnn"]) and \
            dataset in (None, "cifar10") and "--config" not in argv:
        extra.append("--no-verify")
    if argv[:1] in (["search"], ["train"], ["select"], ["random-search"]):
        extra += ["--quiet", "--overwrite"]
    if argv[:1] == ["eval"]:
        extra.append("--no-verify")  # the stand-in CIFAR-10 files are not the official ones
    return argv + extra


def expand(argv: list[str], cwd: Path) -> list[str]:
    """Shell globs (runs/seeds/seed_*) expanded as the shell would, in ``cwd``."""
    out = []
    for word in argv:
        matches = sorted(str(p.relative_to(cwd)) for p in cwd.glob(word.rstrip("/"))
                         if p.is_dir() or not word.endswith("/")) if "*" in word else []
        out += matches or [word]
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keep", type=Path, help="run in this directory and keep it")
    args = parser.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="dartsnas-docs-"))
    work.mkdir(parents=True, exist_ok=True)
    replace = stand_ins(work)
    env = {**os.environ, "DARTSNAS_DATA": str(work / "data"), "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "2"}
    failures = 0
    for page, argv in documented_commands():
        argv = [replace.get(a, a) if not a.startswith("~/data") else a.replace("~/data", replace["~/data"])
                for a in argv]
        command = tiny(expand(argv, work))
        t0 = time.perf_counter()
        p = subprocess.run([sys.executable, "-m", "dartsnas", *command], cwd=work, env=env, capture_output=True,
                           text=True)
        ok = p.returncode == 0
        failures += not ok
        row = {"page": page, "command": "dartsnas " + " ".join(argv), "ok": ok,
               "seconds": round(time.perf_counter() - t0, 1)}
        if not ok:
            row["error"] = (p.stderr or p.stdout).strip().splitlines()[-1:] if (p.stderr or p.stdout) else []
        print(json.dumps(row), flush=True)
    print(json.dumps({"commands": len(documented_commands()), "failures": failures, "dir": str(work)}))
    if args.keep is None:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
