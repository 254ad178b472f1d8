"""Console output of training loops: a progress bar on a terminal, one line per epoch otherwise."""
from __future__ import annotations

import math
import sys
import time
from typing import Any, Callable, TextIO


class Progress:
    """A single-line bar (step, metrics, throughput, ETA), drawn only when ``stream`` is a TTY."""

    def __init__(self, total: int, desc: str, *, unit: str = "img", stream: TextIO | None = None,
                 enabled: bool = True, min_interval: float = 0.2,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        self.stream = stream or sys.stdout
        self.enabled = enabled and self.stream.isatty()
        self.total, self.desc, self.unit = total, desc, unit
        self.count = 0
        self.items = 0
        self.clock = clock
        self.start = clock()
        # The first update always draws: perf_counter's origin is arbitrary (often boot), so a
        # "last draw" of 0.0 would hide the bar until the clock passed min_interval.
        self._last = -math.inf
        self.min_interval = min_interval

    def update(self, items: int, **metrics: Any) -> None:
        """One more step of ``items``; ``metrics`` are numbers, tensors or callables, read only when the
        bar is redrawn (at most every ``min_interval`` seconds: a GPU value costs a sync only then)."""
        self.count += 1
        self.items += items
        if not self.enabled:
            return
        now = self.clock()
        if now - self._last < self.min_interval and self.count < self.total:
            return
        self._last = now
        elapsed = max(now - self.start, 1e-9)
        rate = self.items / elapsed
        eta = (self.total - self.count) * elapsed / max(self.count, 1)
        width = 20
        filled = int(width * self.count / max(self.total, 1))
        bar = "#" * filled + "-" * (width - filled)
        shown = " ".join(f"{k} {float(v() if callable(v) else v):.4g}" for k, v in metrics.items())
        self.stream.write(f"\r{self.desc} [{bar}] {self.count}/{self.total} {shown} "
                          f"{rate:.1f} {self.unit}/s eta {eta:.0f}s\x1b[K")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
