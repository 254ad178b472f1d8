"""One prepared run on a CUDA machine: the CUDA tests, the search and training step benchmarks, a short
real search; all figures in one JSON file, written after every stage (a run cut short keeps what it had).

    python benchmarks/gpu_check.py                       # writes $OUT/gpu_check.json (or ./gpu_check.json)
    python benchmarks/gpu_check.py --budget 420          # seconds for the whole run [450]

Through the device tool, from the repository root (nothing can be installed there: it uses the machine's
PyTorch and imports dartsnas from the working tree; scikit-learn, for the digits search, from .whl/ if
carried there):

    run(command="python3 benchmarks/gpu_check.py", timeout_s=540, carry=[".whl"])

Stages, each with its own time limit: environment; ``pytest -m cuda``; ``search_step.py --device cuda
--compare`` at the paper's search size (C=16, L=8, batch 64) for first and second order;
``search_memory.py --device cuda`` (max allocated per recomputation mode);
``train_step.py --device cuda --compare`` and ``--compile``; ``search cnn`` on the bundled digits; the
projected wall time of the paper's first-order CIFAR-10 search (50 epochs of 25,000 + 25,000 images).
Without CUDA it says so and exits with status 2.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"


def stage(name: str, cmd: list[str], timeout: float, results: dict, out: Path, env: dict) -> str:
    """Run ``cmd``; record its status, seconds, JSON lines and output tail under ``results[name]``."""
    t0 = time.perf_counter()
    try:
        done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=max(timeout, 1))
        status, stdout, stderr = ("ok" if done.returncode == 0 else f"exit {done.returncode}"), done.stdout, done.stderr
    except subprocess.TimeoutExpired as e:
        status = f"timed out after {timeout:.0f}s"
        stdout = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        stderr = e.stderr.decode() if isinstance(e.stderr, bytes) else (e.stderr or "")
    lines = []
    for line in stdout.splitlines():
        try:
            lines.append(json.loads(line))
        except ValueError:
            pass
    results[name] = {"status": status, "seconds": round(time.perf_counter() - t0, 1), "json": lines,
                     "tail": (stdout + stderr)[-1500:]}
    out.write_text(json.dumps(results, indent=1))
    print(f"{name}: {status} ({results[name]['seconds']}s)", flush=True)
    return stdout


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--budget", type=float, default=450.0, help="seconds for the whole run [450]")
    p.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", ".")) / "gpu_check.json")
    args = p.parse_args()
    import torch
    if not torch.cuda.is_available():
        print("gpu_check: no CUDA device on this machine (torch.cuda.is_available() is False): nothing to measure. "
              "Run it where `nvidia-smi` shows a GPU.", file=sys.stderr)
        return 2
    start = time.perf_counter()
    left = lambda share: max(10.0, min(share, args.budget - (time.perf_counter() - start)))  # noqa: E731
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    wheels = ROOT / ".whl"
    if wheels.is_dir():  # nothing can be fetched on the device: packages carried as wheels
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--find-links", str(wheels),
                        *sorted({w.name.split("-")[0] for w in wheels.glob("*.whl")})], env=env)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    props = torch.cuda.get_device_properties(0)
    results: dict = {"environment": {"device": torch.cuda.get_device_name(0), "torch": torch.__version__,
                                     "cuda": torch.version.cuda, "memory_gb": round(props.total_memory / 2**30, 1),
                                     "multiprocessors": props.multi_processor_count}}
    args.out.write_text(json.dumps(results, indent=1))
    print(json.dumps(results["environment"]), flush=True)
    py = sys.executable
    stage("cuda_tests", [py, "-m", "pytest", "-q", "-m", "cuda", "tests/test_cuda.py", "-p", "no:cacheprovider"],
          left(120), results, args.out, env)
    stage("search_step", [py, str(BENCH / "search_step.py"), "--device", "cuda", "--configs", "16,8,64", "--orders",
                          "first", "second", "--steps", "10", "--warmup", "3", "--compare"], left(120), results, args.out, env)
    stage("search_memory", [py, str(BENCH / "search_memory.py"), "--device", "cuda", "--configs", "16,8,64",
                            "--orders", "first", "second", "--steps", "5", "--warmup", "2"], left(90), results, args.out, env)
    stage("train_step", [py, str(BENCH / "train_step.py"), "--device", "cuda", "--compare", "--steps", "10",
                         "--warmup", "3"], left(60), results, args.out, env)
    stage("train_step_compile", [py, str(BENCH / "train_step.py"), "--device", "cuda", "--compile", "--steps", "10",
                                 "--warmup", "3"], left(120), results, args.out, env)
    with tempfile.TemporaryDirectory() as tmp:
        stage("digits_search", [py, "-m", "dartsnas", "search", "cnn", "--dataset", "digits", "--init-channels", "8",
                                "--layers", "5", "--batch-size", "64", "--lr", "0.05", "--epochs", "4", "--device", "cuda",
                                "--out", str(Path(tmp) / "digits")], left(60), results, args.out, env)
    first = [r for r in results["search_step"]["json"] if r.get("bench") == "search_step" and r.get("order") == "first"
             and r.get("amp")]
    if first:
        images_per_s = first[0]["images_per_s"]  # one step = a batch of w images and a batch of α images
        hours = 50 * 25_000 / images_per_s / 3600
        results["projection"] = {"paper_first_order_cifar10_search_hours": round(hours, 2),
                                 "from_images_per_s": images_per_s, "device": results["environment"]["device"],
                                 "note": "50 epochs of 25,000 training images (and as many validation images for α) "
                                         "at the search_step rate (C=16, L=8, batch 64, bf16, channels_last); "
                                         "evaluation and data loading not included"}
        args.out.write_text(json.dumps(results, indent=1))
        print(json.dumps(results["projection"]), flush=True)
    print(f"gpu_check: {args.out} ({time.perf_counter() - start:.0f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
