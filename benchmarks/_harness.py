"""Shared plumbing of the benchmark scripts: one fresh process per measurement, median step time,
peak memory (process RSS on CPU, max allocated on CUDA)."""
from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable


def time_steps(step: Callable[[], None], steps: int, warmup: int, cuda: bool) -> float:
    """Median seconds of ``step`` over ``steps`` runs after ``warmup`` untimed ones."""
    import torch
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        sync()
        t0 = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def peak_memory_gb(cuda: bool) -> dict[str, float]:
    if cuda:
        import torch
        return {"cuda_max_allocated_gb": round(torch.cuda.max_memory_allocated() / 2**30, 3)}
    return {"peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3)}


def run_isolated(script: str, argument_sets: list[list[str]]) -> list[dict]:
    """Run ``script --one ARGS`` in a fresh process per argument set; print and return its JSON line."""
    results = []
    for args in argument_sets:
        out = subprocess.run([sys.executable, script, "--one", *args], check=True, capture_output=True, text=True)
        line = out.stdout.strip().splitlines()[-1]
        print(line, flush=True)
        results.append(json.loads(line))
    return results


def run_cli(args: list[str]) -> tuple[float, float]:
    """Run ``python -m dartsnas ARGS`` in a fresh process; return (its peak RSS in GB, wall seconds)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "dartsnas", *args], stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise SystemExit(f"dartsnas {' '.join(args)} failed with exit status {proc.returncode}")
    return round(usage.ru_maxrss / 2**20, 3), round(time.perf_counter() - t0, 1)


def rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]


def emit(record: dict) -> dict:
    print(json.dumps(record), flush=True)
    return record


def reference_jobs(reference: str | None, device: str, configs: list[str], orders: list[str],
                   common: list[str]) -> list[list[str]]:
    """The original's measurements for ``--reference DIR`` (one per configuration and order), or none: without
    DIR, or when dartsnas runs on CUDA (the original is patched to run on the CPU only)."""
    if not reference or device.startswith("cuda"):
        return []
    return [["--config", c, "--order", o, "--original", reference, *common] for c in configs for o in orders]


def versus_original(rows: list[dict], same: tuple[str, ...], labels: tuple[str, ...], memory: str) -> None:
    """For each of dartsnas's rows, one JSON line against the original's row of the same ``same`` fields
    (``impl: original``, from ``--reference``): its speed-up (the original's seconds / ours) and the
    ratio of ``memory`` (ours / the original's)."""
    for row in rows:
        ref = next((r for r in rows if r.get("impl") == "original" and all(r[k] == row[k] for k in same)), None)
        if ref is None or row is ref:
            continue
        print(json.dumps({"bench": f"{row['bench']}_vs_original", **{k: row[k] for k in (*same, *labels)},
                          "speedup": round(ref["s_per_step"] / row["s_per_step"], 3),
                          f"{memory}_vs_original": round(row[memory] / ref[memory], 3)}), flush=True)
