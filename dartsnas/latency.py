"""Latency measured on the target, for searches aimed at a time budget (issue 23).

``dartsnas latency-table`` times every candidate op at every (channels, height, width, stride) the
*final* network has (its stacking, width, depth and image size, as :class:`~dartsnas.cost.CostTable`
counts multiply-adds), in the runtime it will be deployed with: PyTorch eager, or onnxruntime on the
op exported to ONNX. Each figure is the median of ``repeats`` timed runs after ``warmup`` untimed ones.
Each op's figure is what one more copy of it adds to a graph (:meth:`Timer.marginal`): the runtime's
own cost per call, which a network pays once and not once per op, cancels. The fixed part (stem, cell preprocessing,
concatenation, head) is the measured latency of a reference network less its ops' table latencies, so
the table predicts that network exactly and any other network of the space by its ops' differences. The file records the runtime, its version, the
thread count, the device and the machine; ``search cnn --cost latency --latency-table FILE`` reads it.
"""
from __future__ import annotations

import contextlib
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from torch import nn

from .config import Config, configclass, option
from .cost import CostTable
from .errors import ConfigError
from .export import onnx_graph
from .nets import FINAL_NETWORKS, NETWORKS, check_input_size
from .ops import DARTS_OPS, build_op, resolve_op_set

RUNTIMES = ("torch", "onnxruntime")
#: Copies of an op in the graph whose extra time gives the op's own (see Timer.marginal).
COPIES = 4


@configclass()
class LatencyConfig(Config):
    """What to time, and how; defaults are the paper's CIFAR-10 network on one CPU image."""

    runtime: str = option("torch", "torch: PyTorch eager; onnxruntime: each op exported to ONNX and run by "
                          "onnxruntime (as dartsnas export deploys it)", group="timing", choices=RUNTIMES)
    device: str = option("cpu", "cpu, cuda or cuda:N", group="timing")
    threads: int | None = option(None, "intra-op threads (recorded in the table)", group="timing", min=1,
                                 default_text="torch's current count")
    batch_size: int = option(1, "images per timed call", group="timing", min=1)
    repeats: int = option(30, "timed runs per op; the table keeps their median", group="timing", min=1)
    warmup: int = option(5, "untimed runs before them", group="timing", min=0)
    rounds: int = option(3, "passes over every op, interleaved (the machine's speed drifts); each figure is the "
                         "median over them", group="timing", min=1)
    network: str = option("cifar", "the final network the search is for", group="final network",
                          choices=tuple(FINAL_NETWORKS))
    init_channels: int | None = option(None, "its C", group="final network", min=1, default_text="36 cifar, 48 imagenet")
    layers: int | None = option(None, "its cells L", group="final network", min=3, default_text="20 cifar, 14 imagenet")
    image_size: tuple[int, ...] | None = option(None, "its input: S or H W (the search data's size)",
                                                group="final network", min=1, default_text="32 cifar, 224 imagenet")
    in_channels: int = option(3, "image channels", group="final network", min=1)
    num_classes: int | None = option(None, "classes", group="final network", min=1, default_text="10 cifar, 1000 imagenet")
    nodes: int = option(4, "intermediate nodes N per cell (as the search)", group="search space", min=1)
    ops: tuple[str, ...] = option(help="candidate op set, or a named one (as the search)", factory=lambda: DARTS_OPS,
                                  group="search space", metavar="OP")

    def __post_init__(self) -> None:
        self.ops = resolve_op_set(self.ops)
        defaults = FINAL_NETWORKS.get(self.network, FINAL_NETWORKS["cifar"])
        for name in ("init_channels", "layers", "num_classes"):
            if getattr(self, name) is None:
                setattr(self, name, defaults[name])
        if self.image_size is None:
            self.image_size = (defaults["image_size"],)

    @property
    def size(self) -> tuple[int, int]:
        return (self.image_size[0], self.image_size[-1])

    def check(self) -> None:
        super().check()
        if len(self.image_size) not in (1, 2):
            raise ConfigError(f"{{image_size}} takes S or H W, got {list(self.image_size)}", names=("image_size",))
        device = torch.device(self.device) if self.device.split(":")[0] in ("cpu", "cuda") else None
        if device is None:
            raise ConfigError(f"{{device}} must be cpu, cuda or cuda:N, got {self.device!r}", names=("device",))
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ConfigError("{device} cuda: no CUDA device here", names=("device",))
        check_input_size(f"--network {self.network}", NETWORKS.get(self.network).downsampling, *self.size)


class Timer:
    """Median latency (ms) of modules on one input shape each, in a runtime, on a device, with a
    thread count: the same conditions for every op of a table and for the network it predicts.

    A machine's speed drifts (on a shared 2-core VM, 30-40% between passes a minute apart), so
    :meth:`times` prepares every module first, then times them all in ``rounds`` interleaved passes
    (the median of ``repeats`` runs after ``warmup`` in each) and keeps the median over passes: drift
    then moves every figure alike instead of some."""

    def __init__(self, runtime: str = "torch", device: str = "cpu", threads: int | None = None, batch_size: int = 1,
                 repeats: int = 30, warmup: int = 5, rounds: int = 3) -> None:
        if runtime not in RUNTIMES:
            raise ConfigError(f"runtime must be one of {', '.join(RUNTIMES)}, got {runtime!r}")
        self.runtime, self.device = runtime, torch.device(device)
        self.threads = threads or torch.get_num_threads()
        self.batch_size, self.repeats, self.warmup, self.rounds = batch_size, repeats, warmup, rounds
        if runtime == "onnxruntime":
            try:
                import onnxruntime  # noqa: F401
                import onnxscript  # noqa: F401  (torch.onnx's exporter needs it)
            except ImportError:
                raise ConfigError("--runtime onnxruntime needs onnxruntime, onnx and onnxscript: "
                                  "pip install 'dartsnas[export]'") from None

    def __call__(self, module: nn.Module, shape: tuple[int, ...]) -> float:
        """Median ms of ``module`` (eval mode) on a batch of ``shape`` (C, H, W) inputs."""
        return self.times([self.prepare(module, shape)])[0]

    def prepare(self, module: nn.Module, shape: tuple[int, ...]) -> Callable[[], Any]:
        """A call of ``module`` (eval mode) on a batch of ``shape`` inputs, ready to time: in PyTorch
        on this timer's device, or exported to ONNX and loaded into an onnxruntime session."""
        x = torch.randn(self.batch_size, *shape)
        module = module.eval()
        if self.runtime == "torch":
            module, x = module.to(self.device), x.to(self.device)
            return self._eager(lambda: module(x))
        import onnxruntime as ort
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "model.onnx"
            onnx_graph(module, x, path, dynamic_batch=False)
            options = ort.SessionOptions()
            options.intra_op_num_threads, options.inter_op_num_threads = self.threads, 1
            providers = ["CUDAExecutionProvider"] if self.device.type == "cuda" else ["CPUExecutionProvider"]
            session = ort.InferenceSession(str(path), options, providers=providers)
        feed = {session.get_inputs()[0].name: x.numpy()}
        return lambda: session.run(None, feed)

    def call(self, fn: Callable[[], Any]) -> float:
        """Median ms of ``fn()`` (PyTorch on this timer's device, inference mode): a user model's
        candidates, called with the arguments they get in the model."""
        if self.runtime != "torch":
            raise ConfigError("a model's own candidates are timed in PyTorch only (runtime torch)")
        return self.times([self._eager(fn)])[0]

    def times(self, runs: list[Callable[[], Any]]) -> list[float]:
        """The median ms of each prepared call, over interleaved rounds."""
        sync = torch.cuda.synchronize if self.device.type == "cuda" else (lambda: None)
        passes = [[self._median(run, sync) for run in runs] for _ in range(self.rounds)]
        return [statistics.median(p[i] for p in passes) for i in range(len(runs))]

    def chained(self, make: Callable[[], nn.Module], chain: bool = True, copies: int = COPIES) -> tuple[nn.Module, nn.Module]:
        """One op, and ``copies`` of it in one graph (see :meth:`marginal`)."""
        return _Chain([make()], chain), _Chain([make() for _ in range(copies)], chain)

    @staticmethod
    def marginal(one: float, many: float, copies: int = COPIES) -> float:
        """What one op adds to a graph that already runs (ms): a graph of ``copies`` of it less a graph
        of one, per extra copy. The runtime's own cost per call (entry, input copy, session) cancels,
        as it does in a network that pays it once for all its ops, while each op's dispatch, memory
        traffic and arithmetic stay; an op the runtime removes (an identity) costs nothing."""
        return max((many - one) / (copies - 1), 0.0)

    def _eager(self, fn: Callable[[], Any]) -> Callable[[], Any]:
        def run() -> Any:
            with torch.inference_mode():
                return fn()
        return run

    def _median(self, run: Callable[[], Any], sync: Callable[[], None]) -> float:
        with _threads(self.threads):
            for _ in range(self.warmup):
                run()
            sync()
            times = []
            for _ in range(self.repeats):
                start = time.perf_counter()
                run()
                sync()
                times.append(time.perf_counter() - start)
        return statistics.median(times) * 1e3

    def describe(self) -> dict[str, Any]:
        """Where and how the figures were taken: they hold for that runtime, device and machine only."""
        version = torch.__version__
        if self.runtime == "onnxruntime":
            import onnxruntime
            version = onnxruntime.__version__
        device = torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else _cpu_name()
        return {"unit": "ms", "statistic": "median", "runtime": self.runtime, "runtime_version": version,
                "torch_version": torch.__version__, "device": str(self.device), "device_name": device,
                "threads": self.threads, "batch_size": self.batch_size, "repeats": self.repeats,
                "warmup": self.warmup, "rounds": self.rounds, "machine": {"system": platform.system(), "arch": platform.machine(),
                                                   "cpu": _cpu_name(), "cpus": os.cpu_count(),
                                                   "host": platform.node()}}


@contextlib.contextmanager
def _threads(n: int) -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


class _Chain(nn.Module):
    """Copies of one op run one after the other (``chain``, stride 1) or side by side on one input and
    summed (a stride-2 op's output cannot feed it again), as one graph."""

    def __init__(self, ops: list[nn.Module], chain: bool) -> None:
        super().__init__()
        self.ops, self.chain = nn.ModuleList(ops), chain

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.chain:
            for op in self.ops:
                x = op(x)
            return x
        out = self.ops[0](x)
        for op in self.ops[1:]:
            out = out + op(x)
        return out


def latency_table(config: LatencyConfig, log: Callable[[str], None] | None = None) -> CostTable:
    """The cost table of ``config``'s final network (multiply-adds, parameters) with every candidate
    op's latency measured by a :class:`Timer` at each shape it has there, and the fixed part's."""
    from .nets import NetworkConfig, build_network
    config.validate()
    timer = Timer(config.runtime, config.device, config.threads, config.batch_size, config.repeats, config.warmup,
                  config.rounds)
    table = CostTable.build(config.ops, config.nodes, network=config.network, init_channels=config.init_channels,
                            layers=config.layers, image_size=config.size, num_classes=config.num_classes,
                            in_channels=config.in_channels)
    shapes = sorted({(name, *edge) for cell in table.cells
                     for names, edge in zip(table.op_names["reduce" if cell["reduction"] else "normal"], cell["edges"])
                     for name in names}, key=lambda k: (k[1], -k[2], k[4], k[0]))
    runs = []
    for i, (name, C, h, w, stride) in enumerate(shapes):
        for module in timer.chained(lambda: build_op(name, C, stride, affine=True), chain=stride == 1):
            runs.append(timer.prepare(module, (C, h, w)))
        if log is not None and (i + 1) % 10 == 0:
            log(f"prepared {i + 1}/{len(shapes)} op shapes")
    reference = table.reference_genotype()
    net = build_network(config.network, NetworkConfig(reference, init_channels=config.init_channels,
                                                      layers=config.layers, num_classes=config.num_classes,
                                                      in_channels=config.in_channels))
    runs.append(timer.prepare(net, (config.in_channels, *config.size)))
    figures = timer.times(runs)
    measured = {key: timer.marginal(figures[2 * i], figures[2 * i + 1]) for i, key in enumerate(shapes)}
    whole = figures[-1]
    if log is not None:
        for (name, C, h, w, stride), ms in measured.items():
            log(f"{name} C={C} {h}x{w} stride {stride}: {ms:.4f} ms")
    for cell in table.cells:
        names = table.op_names["reduce" if cell["reduction"] else "normal"]
        cell["latency"] = [[measured[(name, *edge)] for name in edge_names]
                           for edge_names, edge in zip(names, cell["edges"])]
    table.fixed["latency"] = 0.0
    table.fixed["latency"] = whole - table.of_genotype(reference)["latency"]
    table.measurement = {**timer.describe(), "reference_network_ms": whole, "distinct_op_shapes": len(shapes)}
    if log is not None:
        log(f"reference network ({config.network}, C={config.init_channels}, L={config.layers}): {whole:.3f} ms; "
            f"fixed part {table.fixed['latency']:.3f} ms")
    return table


__all__ = ["LatencyConfig", "RUNTIMES", "Timer", "latency_table"]
