"""One config system for every command: fields declared once, in groups, with their help and bounds.

A command's config is a dataclass composed of shared groups (:class:`RunOptions`, :class:`Hardware`,
:class:`ImageData`, :class:`Optimiser`, :class:`ArchStep`, ...). Each field carries, through
:func:`option`, what the command line and the checks need: the help line, bounds, choices, the
argparse group. From that single declaration come

- :meth:`Config.validate`: the bounds of every field, then the command's own cross-field ``check()``;
- :meth:`Config.to_dict` / :meth:`Config.from_dict`: the JSON round trip of checkpoints and config.json;
- :func:`dartsnas.flags.add_flags`: the command's flags (type, help with the command's default,
  ``--no-x`` for switches that default on), and :func:`dartsnas.flags.load_config_file`: ``--config
  FILE`` (JSON or TOML, keys spelt as fields or as flags).

A command changes a group's default with ``@configclass(batch_size=96)`` instead of declaring the field
again. Errors name the field in Python (``batch_size must be >= 1``) and the flag at the command line
(``--batch-size must be >= 1``): see :class:`~dartsnas.errors.ConfigError`.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from .errors import CheckpointError, ConfigError

_UNSET = object()


def option(default: Any = _UNSET, help: str = "", *, factory: Callable[[], Any] | None = None,
           group: str = "options", min: float | None = None, above: float | None = None, max: float | None = None,
           below: float | None = None, choices: Sequence[str] | None = None, note: str = "",
           default_text: str | None = None, flag: str | None = None, metavar: str | None = None,
           cli: bool = True, resumable: bool = False, parse: Callable[[str], Any] | None = None,
           finite: bool = True) -> Any:
    """A config field with what its flag and its checks need.

    ``min``/``max`` are inclusive bounds, ``above``/``below`` exclusive ones; ``note`` follows the
    bound in the error (``> 0 (inf: no clipping)``); ``default_text`` replaces the default shown in
    the help (``[as they are]``; "" shows none); ``cli=False`` keeps a field off the command line;
    ``resumable`` fields may change when a run resumes; ``parse`` reads the flag's text (argparse type,
    and a string in a config file); ``finite=False`` lets a float be infinite (``--grad-clip inf``).
    """
    meta = {"help": help, "group": group, "min": min, "above": above, "max": max, "below": below,
            "choices": tuple(choices) if choices is not None else None, "note": note, "default_text": default_text,
            "flag": flag, "metavar": metavar, "cli": cli, "resumable": resumable, "parse": parse,
            "finite": finite}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


_SUFFIXES = {"k": 1e3, "m": 1e6, "g": 1e9}


def parse_amount(text: str) -> float:
    """A number with an optional K, M or G suffix (any case): ``300M`` is 3e8, ``2.5m`` 2.5e6."""
    value = str(text).strip()
    scale = _SUFFIXES.get(value[-1:].lower(), 1.0)
    try:
        return float(value[:-1] if scale != 1.0 else value) * scale
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number (a K, M or G suffix may follow)") from None


def flag_of(f: dataclasses.Field) -> str:
    """The command-line spelling of a field: --name-with-dashes, --no-name for switches on by default."""
    if f.metadata.get("flag"):
        return f.metadata["flag"]
    dashed = f.name.replace("_", "-")
    return f"--no-{dashed}" if _is_switch(f) and f.default is True else f"--{dashed}"


def _is_switch(f: dataclasses.Field) -> bool:
    return f.default is True or f.default is False


def configclass(**defaults: Any) -> Callable[[type], type]:
    """Make a config dataclass of the groups it inherits, changing their defaults where given (the
    field keeps its group's help and bounds)."""
    def make(cls: type) -> type:
        inherited = {}
        for base in reversed(cls.__mro__[1:]):
            inherited.update(getattr(base, "__dataclass_fields__", {}))
        annotations = dict(cls.__dict__.get("__annotations__", {}))
        for name, value in defaults.items():
            if name not in inherited:
                raise TypeError(f"{cls.__name__}: no inherited field {name!r} to change the default of")
            base = inherited[name]
            annotations[name] = base.type
            setattr(cls, name, field(default=value, metadata=base.metadata))
        cls.__annotations__ = annotations
        return dataclass(cls)
    return make


def _kind(f: dataclasses.Field) -> tuple[type, bool, bool]:
    """(scalar type, optional, sequence) of a field from its annotation."""
    text = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
    optional = "None" in text
    sequence = text.startswith("tuple") or text.startswith("list")
    scalar = float if "float" in text else int if "int" in text else bool if "bool" in text else str
    return scalar, optional, sequence


@dataclass
class Config:
    """What every command config does: validation, the dict round trip, resume rules."""

    def __post_init__(self) -> None:
        """A group that derives or converts fields on construction extends this (and calls super())."""

    def fields(self) -> tuple[dataclasses.Field, ...]:
        return dataclasses.fields(self)

    def validate(self) -> None:
        """The bounds and choices of every field, then the command's cross-field checks."""
        for f in dataclasses.fields(self):
            check_field(f, getattr(self, f.name))
        self.check()

    def check(self) -> None:
        """Checks that involve several fields (a command adds its own)."""

    def check_exclusive(self, name: str, others: dict[str, Any], hints: dict[str, str] | None = None) -> None:
        """With ``name`` set, every field of ``others`` must keep its value there: the first that does
        not is an error naming both fields, its hint after them (the flags a hint names, too)."""
        shown = getattr(self, name)
        label = "" if isinstance(shown, bool) else f" {shown}"
        for other, off in others.items():
            if getattr(self, other) != off:
                hint = (hints or {}).get(other, "")
                raise ConfigError(f"{{{name}}}{label} and {{{other}}} do not combine" + (f": {hint}" if hint else ""),
                                  names=(name, other, *re.findall(r"\{(\w+)\}", hint)))

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON data (tuples as lists), every field."""
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "checkpoint") -> Any:
        """The config of a checkpoint's or a file's dict, refusing unknown fields."""
        known = {f.name: f for f in dataclasses.fields(cls)}
        unknown = set(data) - set(known)
        if unknown:
            raise CheckpointError(f"unknown config field(s) {', '.join(sorted(unknown))}")
        return cls(**{name: _typed(known[name], value) for name, value in data.items()})

    @classmethod
    def resumable_changes(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls) if f.metadata.get("resumable"))


def _plain(value: Any) -> Any:
    """JSON data: tuples as lists, an infinite float as "inf" (JSON has no Infinity)."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return list(value) if isinstance(value, tuple) else value


def _typed(f: dataclasses.Field, value: Any) -> Any:
    """A JSON value as the field holds it: sequences as tuples, whole numbers of float fields as floats."""
    scalar, _, sequence = _kind(f)
    if sequence and isinstance(value, list):
        return tuple(value)
    if scalar is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if scalar is float and not sequence and isinstance(value, str) and value.lower() in ("inf", "-inf", "nan"):
        return float(value)
    return value


def check_field(f: dataclasses.Field, value: Any) -> None:
    """The bounds and choices of one field (None passes: it means 'not set')."""
    meta = f.metadata
    if value is None or not meta:
        return
    name = "{%s}" % f.name
    choices = meta.get("choices")
    if choices is not None:
        values = value if isinstance(value, (tuple, list)) else (value,)
        for v in values:
            if v not in choices:
                raise ConfigError(f"{name} must be one of {', '.join(choices)}, got {v!r}", names=(f.name,))
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return
    lo, lo_open = (meta["above"], True) if meta.get("above") is not None else (meta.get("min"), False)
    hi, hi_open = (meta["below"], True) if meta.get("below") is not None else (meta.get("max"), False)
    if isinstance(value, float) and math.isinf(value) and meta.get("finite", True):
        raise ConfigError(f"{name} must be a finite number, got {value} (a number too large for a float "
                          "becomes inf)", names=(f.name,))
    bad = (lo is not None and (value <= lo if lo_open else value < lo)) or \
          (hi is not None and (value >= hi if hi_open else value > hi)) or \
          (isinstance(value, float) and math.isnan(value))
    if not bad:
        return
    note = f" {meta['note']}" if meta.get("note") else ""
    if lo is not None and hi is not None:
        if lo_open and hi_open:
            bound = f"lie strictly between {lo} and {hi}"
        else:
            bound = f"lie in {'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"
    elif lo is not None:
        bound = f"be {'>' if lo_open else '>='} {lo}"
    else:
        bound = f"be {'<' if hi_open else '<='} {hi}"
    raise ConfigError(f"{name} must {bound}{note}, got {value}", names=(f.name,))


# -- the shared groups -------------------------------------------------------------------------------


@dataclass
class RunOptions(Config):
    """Crash safety and reproducibility: may change when a run resumes."""

    checkpoint_every: int | None = option(None, "also checkpoint every STEPS steps inside an epoch", group="run", min=1,
                                          metavar="STEPS", default_text="every 5 minutes of work", resumable=True)
    skip_nonfinite: int = option(0, "skip up to N batches with a non-finite loss or gradient, logged, before stopping",
                                 group="run", min=0, metavar="N", resumable=True)
    deterministic: bool = option(False, "deterministic kernels (torch.use_deterministic_algorithms; slower on CUDA)",
                                 group="run", resumable=True)
    sync_bn: bool = option(False, "launched with torchrun: BatchNorm statistics over the global batch (SyncBatchNorm)",
                           group="run", resumable=True)


@dataclass
class Seed(Config):
    seed: int = option(0, group="run")
    device: str = option("auto", "auto, cpu or cuda[:N]", group="run", resumable=True)

    def check(self) -> None:
        super().check()
        if self.device not in ("auto", "cpu") and not self.device.startswith("cuda"):
            raise ConfigError(f"{{device}} must be auto, cpu or cuda[:N], got {self.device!r}", names=("device",))


@dataclass
class FastConv(Config):
    """Memory layout and precision of convolutional networks."""

    channels_last: bool = option(True, "keep NCHW activations (channels_last is faster on CPU and GPU)", group="run",
                                 resumable=True)
    amp: bool = option(True, "float32 on CUDA too (default there: bf16 autocast; CPU is always float32)", group="run",
                       resumable=True)


@dataclass
class Epochs(Config):
    """The length and batch of a run, and the weights' SGD."""

    epochs: int = option(50, group="optimisation", min=1, resumable=True)
    batch_size: int = option(64, group="optimisation", min=1)
    lr: float = option(0.025, "weight learning rate", group="optimisation", above=0)
    weight_decay: float = option(3e-4, group="optimisation", min=0)
    grad_clip: float = option(5.0, group="optimisation", above=0, note="(inf: no clipping)", finite=False)
    steps_per_epoch: int | None = option(None, "cap the steps of an epoch (smoke runs)", group="optimisation", min=1)


def with_recipe(recipes: Mapping[str, dict[str, Any]], name: str | None, given: Mapping[str, Any]) -> dict[str, Any]:
    """A config's fields: the recipe ``name``'s (``none`` or None: no recipe), ``given`` over them, and
    ``recipe`` naming it; an unknown name is refused, naming the recipes there are."""
    name = name or "none"
    if name != "none" and name not in recipes:
        raise ConfigError(f"{{recipe}} must be one of none, {', '.join(recipes)}, got {name!r}", names=("recipe",))
    return {**recipes.get(name, {}), **given, "recipe": name}


@dataclass
class Momentum(Config):
    """SGD with momentum on a cosine schedule (the conv commands)."""

    lr_min: float = option(0.001, "end of the cosine schedule", group="optimisation", min=0)
    momentum: float = option(0.9, group="optimisation", min=0)
    nesterov: bool = option(False, "Nesterov momentum (GDAS's recipe; the second-order virtual step takes it too)",
                            group="optimisation")

    def check(self) -> None:
        super().check()
        if self.lr_min > self.lr:
            raise ConfigError(f"{{lr_min}} {self.lr_min} is above {{lr}} {self.lr}", names=("lr_min", "lr"))
        if self.nesterov and not self.momentum:
            raise ConfigError("{nesterov} needs a {momentum} above 0", names=("nesterov", "momentum"))


@dataclass
class ArchStep(Config):
    """The architecture step of a bilevel search (Adam on α)."""

    arch_lr: float = option(3e-4, "Adam learning rate of α", group="optimisation", above=0)
    arch_weight_decay: float = option(1e-3, group="optimisation", min=0)
    arch_betas: tuple[float, float] = option(factory=lambda: (0.5, 0.999), cli=False)
    arch_grad_clip: float | None = option(None, "clip α's gradient norm before its step (P-DARTS and PC-DARTS's "
                                          "ImageNet search: 5)", group="optimisation", above=0, default_text="none")
    order: str = option("first", "architecture gradient", group="optimisation", choices=("first", "second", "exact"))
    fd_step: float = option(0.01, "finite-difference step of --order second, divided by the gradient norm",
                            group="optimisation", above=0)
    fd_scheme: str = option("central", "finite difference of --order second: the paper's central one, or one-sided "
                            "(one pass fewer per step)", group="optimisation", choices=("central", "forward"))


@dataclass
class ArchWarmup(Config):
    arch_start_epoch: int = option(0, "first epoch (0-based) with α steps; before it only w trains (PC-DARTS: 15)",
                                   group="optimisation", min=0)


@dataclass
class Curvature(Config):
    """Watching the curvature of a search (Zela et al., 2020): the dominant eigenvalue of the α-Hessian
    of the validation loss every ``hessian_every`` epochs over ``hessian_batches`` fixed validation
    batches, and DARTS-ES naming epoch ``es_start`` or later (11, counted from 1: RobustDARTS's
    ``es_start_epoch`` 10 counted from 0)."""

    hessian_every: int = option(0, "every N epochs (and the last), the dominant eigenvalue of the α-Hessian of the "
                                "validation loss into metrics.jsonl", group="collapse", min=0, metavar="N",
                                default_text="0: never")
    hessian_batches: int = option(2, "fixed validation batches the eigenvalue is computed over", group="collapse",
                                  min=1)
    hessian_steps: int = option(20, "Lanczos iterations (Hessian-vector products) per eigenvalue", group="collapse",
                                min=1)
    hessian_hvp: str = option("autograd", "how each Hessian-vector product is computed: autograd (double backward, "
                              "exact; several times a search step's memory), forward (forward-mode derivative of the "
                              "α gradient: exact, quicker than autograd for more memory) or fd (central difference of the α "
                              "gradient: a search step's memory; ReLU's kinks make it an estimate)", group="collapse",
                              choices=("autograd", "forward", "fd"))
    early_stop: str | None = option(None, "DARTS-ES: stop when the eigenvalue's local average grows 1.3x over 4 "
                                    "evaluations, and keep the genotype of the earlier epoch (needs --hessian-every)",
                                    group="collapse", choices=("hessian",))
    es_start: int = option(11, "first epoch DARTS-ES may name", group="collapse", min=1)

    def check(self) -> None:
        super().check()
        if self.early_stop == "hessian" and self.hessian_every < 1:
            raise ConfigError("{early_stop} hessian watches the dominant eigenvalue: give {hessian_every} N too",
                              names=("early_stop", "hessian_every"))


@dataclass
class Compile(Config):
    compile: bool = option(False, "torch.compile (see the command's help)", group="run", resumable=True)


def check_resumable(saved: Config, asked: Config, path: Path, log: Callable[[str], None]) -> None:
    """Refuse to resume when config fields differ (naming every one), except those that may change
    on resume (logged)."""
    allowed = set(type(asked).resumable_changes())
    refused = []
    for f in dataclasses.fields(asked):
        a, b = getattr(saved, f.name), getattr(asked, f.name)
        if a == b:
            continue
        if f.name not in allowed:
            refused.append((f.name, a, b))
        else:
            log(f"{f.name} changed from {a} to {b} on resume")
    if refused:
        was = ", ".join(f"{name}={a!r}" for name, a, _ in refused)
        now = ", ".join(f"{name}={b!r}" for name, _, b in refused)
        raise CheckpointError(f"{path}: checkpoint was written with {was}, this run asks for {now}")


__all__ = ["ArchStep", "ArchWarmup", "Compile", "Config", "Curvature", "Epochs", "FastConv",
           "Momentum", "RunOptions", "Seed", "check_field", "check_resumable", "configclass", "flag_of", "option"]
