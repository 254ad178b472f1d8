"""One config system for every command: fields declared once, in groups, with their help and bounds.

A command's config is a dataclass composed of shared groups (:class:`RunOptions`, :class:`Hardware`,
:class:`ImageData`, :class:`Optimiser`, :class:`ArchStep`, ...). Each field carries, through
:func:`option`, what the command line and the checks need: the help line, bounds, choices, the
argparse group. From that single declaration come

- :meth:`Config.validate`: the bounds of every field, then the command's own cross-field ``check()``;
- :meth:`Config.to_dict` / :meth:`Config.from_dict`: the JSON round trip of checkpoints and config.json;
- :func:`add_flags`: the command's flags (type, help with the command's default, ``--no-x`` for
  switches that default on);
- :func:`load_config_file`: ``--config FILE`` (JSON or TOML, keys spelt as fields or as flags).

A command changes a group's default with ``@configclass(batch_size=96)`` instead of declaring the field
again. Errors name the field in Python (``batch_size must be >= 1``) and the flag at the command line
(``--batch-size must be >= 1``): see :class:`~dartsnas.errors.ConfigError`.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from .errors import CheckpointError, ConfigError

_UNSET = object()


def option(default: Any = _UNSET, help: str = "", *, factory: Callable[[], Any] | None = None,
           group: str = "options", min: float | None = None, above: float | None = None, max: float | None = None,
           below: float | None = None, choices: Sequence[str] | None = None, note: str = "",
           default_text: str | None = None, flag: str | None = None, metavar: str | None = None,
           cli: bool = True, resumable: bool = False, parse: Callable[[str], Any] | None = None) -> Any:
    """A config field with what its flag and its checks need.

    ``min``/``max`` are inclusive bounds, ``above``/``below`` exclusive ones; ``note`` follows the
    bound in the error (``> 0 (inf: no clipping)``); ``default_text`` replaces the default shown in
    the help (``[as they are]``; "" shows none); ``cli=False`` keeps a field off the command line;
    ``resumable`` fields may change when a run resumes; ``parse`` reads the flag's text (argparse type).
    """
    meta = {"help": help, "group": group, "min": min, "above": above, "max": max, "below": below,
            "choices": tuple(choices) if choices is not None else None, "note": note, "default_text": default_text,
            "flag": flag, "metavar": metavar, "cli": cli, "resumable": resumable, "parse": parse}
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
    return list(value) if isinstance(value, tuple) else value


def _typed(f: dataclasses.Field, value: Any) -> Any:
    """A JSON value as the field holds it: sequences as tuples, whole numbers of float fields as floats."""
    scalar, _, sequence = _kind(f)
    if sequence and isinstance(value, list):
        return tuple(value)
    if scalar is float and isinstance(value, int) and not isinstance(value, bool):
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


# -- the command line ------------------------------------------------------------------------------


#: The order of the argparse groups in a command's help.
GROUP_ORDER = ("options", "data", "corpus", "search space", "network", "optimisation", "sampled search",
               "progressive search (P-DARTS)", "cost", "collapse", "timing", "final network", "run")


def add_flags(parser: argparse.ArgumentParser, cls: type, *, exclude: Sequence[str] = ()
              ) -> dict[str, argparse._ArgumentGroup]:
    """One flag per field of ``cls`` (but ``exclude``), in argparse groups titled by ``cls.TITLES``
    (group key -> title; the key itself otherwise), helped by ``cls.FLAG_HELP`` where a command says
    more than the group. Flags default to SUPPRESS: only flags given on the command line reach a
    config. Returns the groups, for the command's own flags."""
    defaults = cls()
    titles = getattr(cls, "TITLES", {})
    keys = {f.metadata["group"] for f in dataclasses.fields(cls) if f.metadata and f.metadata.get("cli", True)}
    groups: dict[str, argparse._ArgumentGroup] = {}
    for key in sorted(keys | {"run"}, key=lambda k: GROUP_ORDER.index(k) if k in GROUP_ORDER else len(GROUP_ORDER)):
        groups[key] = parser if key == "options" else parser.add_argument_group(titles.get(key, key))
    for f in dataclasses.fields(cls):
        if f.name in exclude or not f.metadata or not f.metadata.get("cli", True):
            continue
        kwargs = _flag_kwargs(f, getattr(defaults, f.name), cls)
        groups[f.metadata["group"]].add_argument(flag_of(f), **kwargs)
    return groups


def _help(f: dataclasses.Field, default: Any, cls: type) -> str:
    meta = f.metadata
    text = getattr(cls, "FLAG_HELP", {}).get(f.name) or meta["help"]
    if f.name == "dataset" and getattr(cls, "DATASET_COMMAND", ""):
        from .data.table import dataset_help
        text = dataset_help(cls.DATASET_COMMAND)
    shown = meta.get("default_text")
    if shown is None and not _is_switch(f):
        shown = "" if default is None else " ".join(map(str, default)) if isinstance(default, tuple) else str(default)
    if shown:
        text = f"{text} [{shown}]" if text else f"[{shown}]"
    return text


def _flag_kwargs(f: dataclasses.Field, default: Any, cls: type) -> dict[str, Any]:
    meta = f.metadata
    kwargs: dict[str, Any] = {"dest": f.name, "default": argparse.SUPPRESS, "help": _help(f, default, cls)}
    if _is_switch(f):
        kwargs["action"] = "store_false" if f.default is True else "store_true"
        return kwargs
    scalar, _, sequence = _kind(f)
    if meta.get("parse") is not None:
        kwargs["type"] = meta["parse"]
    elif scalar is not str:
        kwargs["type"] = scalar
    if sequence:
        kwargs["nargs"] = "+"
    if meta.get("choices") is not None and not sequence:
        kwargs["choices"] = meta["choices"]
    if meta.get("metavar"):
        kwargs["metavar"] = meta["metavar"]
    return kwargs


def given_fields(cls: type, args: argparse.Namespace) -> dict[str, Any]:
    """The fields of ``cls`` that flags set (absent when not given)."""
    known = {f.name: f for f in dataclasses.fields(cls)}
    return {k: _typed(known[k], v) for k, v in vars(args).items() if k in known}


def load_config_file(path: str | Path, cls: type) -> dict[str, Any]:
    """The fields a JSON or TOML file sets (keys spelt as fields, batch_size, or as flags, batch-size;
    a ``kind`` key, as config.json has, is ignored). Errors name the file and the key."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"--config {path}: cannot be read ({e.strerror or e})") from None
    try:
        if path.suffix.lower() == ".toml":
            import tomllib
            data = tomllib.loads(text)
        else:
            data = json.loads(text)
    except (ValueError, UnicodeDecodeError) as e:
        raise ConfigError(f"--config {path}: not valid {'TOML' if path.suffix.lower() == '.toml' else 'JSON'} "
                          f"({str(e).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"--config {path}: must hold a table of options, not {type(data).__name__}")
    known = {f.name: f for f in dataclasses.fields(cls)}
    out = {}
    for key, value in data.items():
        name = key.replace("-", "_").lstrip("_")
        if name == "kind":
            continue
        if name not in known:
            raise ConfigError(f"--config {path}: unknown option {key!r} (not a field of {cls.__name__})")
        out[name] = _checked_type(known[name], _typed(known[name], value), path, key)
    return out


def _checked_type(f: dataclasses.Field, value: Any, path: Path, key: str) -> Any:
    scalar, optional, sequence = _kind(f)
    if value is None:
        if optional:
            return None
    elif sequence:
        if isinstance(value, tuple) and all(isinstance(v, scalar) and not isinstance(v, bool) or scalar is bool
                                            for v in value):
            return value
    elif scalar is bool:
        if isinstance(value, bool):
            return value
    elif scalar is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif scalar is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif isinstance(value, str):
        return value
    want = f"a list of {scalar.__name__}" if sequence else scalar.__name__
    raise ConfigError(f"--config {path}: {key} must be {want}{' or null' if optional else ''}, got {value!r}")


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
    grad_clip: float = option(5.0, group="optimisation", above=0, note="(inf: no clipping)")
    steps_per_epoch: int | None = option(None, "cap the steps of an epoch (smoke runs)", group="optimisation", min=1)


@dataclass
class Momentum(Config):
    """SGD with momentum on a cosine schedule (the conv commands)."""

    lr_min: float = option(0.001, "end of the cosine schedule", group="optimisation", min=0)
    momentum: float = option(0.9, group="optimisation", min=0)

    def check(self) -> None:
        super().check()
        if self.lr_min > self.lr:
            raise ConfigError(f"{{lr_min}} {self.lr_min} is above {{lr}} {self.lr}", names=("lr_min", "lr"))


@dataclass
class ArchStep(Config):
    """The architecture step of a bilevel search (Adam on α)."""

    arch_lr: float = option(3e-4, "Adam learning rate of α", group="optimisation", above=0)
    arch_weight_decay: float = option(1e-3, group="optimisation", min=0)
    arch_betas: tuple[float, float] = option(factory=lambda: (0.5, 0.999), cli=False)
    order: str = option("first", "architecture gradient", group="optimisation", choices=("first", "second", "exact"))
    fd_step: float = option(0.01, "finite-difference step of --order second, divided by the gradient norm",
                            group="optimisation", above=0)
    fd_scheme: str = option("central", "finite difference of --order second: the paper's central one, or one-sided "
                            "(one pass fewer per step)", group="optimisation", choices=("central", "forward"))


@dataclass
class Sampler(Config):
    """GDAS (Dong & Yang, CVPR 2019): each forward pass computes one candidate per decision, drawn by
    hard Gumbel-softmax over α, its gradient straight through the relaxed weights at temperature τ."""

    sampler: str = option("none", "gdas: every edge (Choice) computes one candidate, drawn by hard Gumbel-softmax over "
                          "α (GDAS); a step costs about one candidate's work instead of all of them", group="sampled search",
                          choices=("none", "gdas"))
    tau_max: float = option(10.0, "GDAS: the Gumbel-softmax temperature τ at the first epoch, annealed linearly to "
                            "--tau-min at the last", group="sampled search", above=0)
    tau_min: float = option(0.1, "GDAS: τ at the last epoch", group="sampled search", above=0)

    def check(self) -> None:
        super().check()
        if self.sampler == "gdas":
            if getattr(self, "order", "first") != "first":
                raise ConfigError("{sampler} gdas needs {order} first: each forward pass draws its own candidates, so "
                                  "the unrolled step and its Hessian-vector product would see different networks",
                                  names=("sampler", "order"))
            if self.tau_min > self.tau_max:
                raise ConfigError(f"{{tau_min}} {self.tau_min} is above {{tau_max}} {self.tau_max}",
                                  names=("tau_min", "tau_max"))


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
class ImageData(Config):
    """Where the images come from, and how a user's own images are read."""

    dataset: str = option("cifar10", group="data")  # the command's table of datasets gives the choices
    data_dir: str | None = option(None, "folder holding the dataset, or imagefolder's root (train/<class>/, optional "
                                  "val/<class>/), or arrays' .npz file (x_train, y_train[, x_test, y_test]); "
                                  "$DARTSNAS_DATA when absent", group="data", default_text="data", resumable=True)
    download: bool = option(False, "fetch the official dataset archive (md5-checked) if missing", group="data",
                            resumable=True)
    verify: bool = option(True, "skip the official md5 check (for your own files in the CIFAR format)", group="data",
                          resumable=True)
    image_size: int | None = option(None, "imagefolder: resize the shorter side to S and centre-crop S x S (images of "
                                    "mixed sizes need it); imagenet: the crop size, 224 if not given", group="data", min=1,
                                    default_text="as they are")
    skip_bad_images: bool = option(False, "skip unreadable image files (the count is reported) instead of stopping",
                                   group="data", resumable=True)
    flip: bool = option(True, "no random horizontal flips for your own images (text, digits, anything with a "
                        "direction)", group="data")
    memory_gb: float = option(2.0, "your own images are held in memory up to this decoded size, streamed above it",
                              group="data", min=0, resumable=True)
    workers: int = option(2, "decoding processes for streamed images", group="data", min=0, resumable=True)

    #: The command whose column of the dataset table gives the datasets it accepts.
    DATASET_COMMAND = ""

    def check(self) -> None:
        super().check()
        from .data.table import datasets_for
        accepted = datasets_for(self.DATASET_COMMAND)
        if self.dataset not in accepted:
            shown = [name for name in accepted if name != "python"]
            raise ConfigError(f"{{dataset}} must be one of {', '.join(shown)}, got {self.dataset!r}", names=("dataset",))

    def own_data_options(self, info: dict[str, Any] | None = None) -> Any:
        """The loading options these fields give; ``info`` (a trained model's data) fixes the classes,
        statistics and resize of evaluation and prediction."""
        from .data import OwnDataOptions
        if info is None:
            return OwnDataOptions(image_size=self.image_size, skip_bad_images=self.skip_bad_images, flip=self.flip,
                                  memory_gb=self.memory_gb)
        return OwnDataOptions(image_size=info["resize"], skip_bad_images=self.skip_bad_images, flip=self.flip,
                              memory_gb=self.memory_gb, stats=(tuple(info["mean"]), tuple(info["std"])),
                              classes=info["classes"])


@dataclass
class CorpusData(Config):
    """A language-modelling corpus and the AWD-LSTM model and objective around a recurrent cell."""

    data_dir: str | None = option(None, "corpus folder: train/valid/test .txt, ptb.*.txt or wiki.*.tokens",
                                  group="corpus", resumable=True)
    train_split: str = option("train", "split that trains w", group="corpus")
    val_split: str = option("valid", "split for α / model selection", group="corpus")
    emsize: int = option(300, group="corpus", min=1)
    nhid: int = option(300, group="corpus", min=1)
    bptt: int = option(35, group="corpus", min=1)
    max_seq_len_delta: int = option(20, "jitter of the random window length (AWD-LSTM)", group="corpus", min=0)
    eval_batch_size: int = option(10, group="corpus", min=1)
    tar: float = option(1e-3, "temporal activation regularisation β", group="corpus", min=0)
    ar: float = option(0.0, cli=False)  # AWD-LSTM's activation regularisation: not applied (no dropped output)
    dropout: float = option(0.75, group="corpus", min=0, below=1)
    dropout_h: float = option(0.25, group="corpus", min=0, below=1)
    dropout_x: float = option(0.75, group="corpus", min=0, below=1)
    dropout_i: float = option(0.2, group="corpus", min=0, below=1)
    dropout_e: float = option(0.0, group="corpus", min=0, below=1)

    def check(self) -> None:
        super().check()
        if self.data_dir is None:
            raise ConfigError("{data_dir} is required: a folder with train/valid/test text files", names=("data_dir",))


#: The costs a search can aim at: counted (multiply-adds, parameters) or measured (latency, ms).
COST_KINDS = ("macs", "params", "latency")
#: How the expected cost enters α's objective (see CostBudget.cost_penalty).
COST_PENALTIES = ("derived", "hinge", "linear")


@dataclass
class CostBudget(Config):
    """A budget the search aims at: the expected cost of the final network joins α's objective."""

    cost: str | None = option(None, "the cost whose expectation under softmax(α) joins α's objective", group="cost",
                              choices=COST_KINDS, default_text="none")
    cost_target: float | None = option(None, "the budget in --cost's units, a K/M/G suffix allowed (e.g. 300M "
                                       "multiply-adds, 2.5M parameters, 4 ms); needed with --cost", group="cost",
                                       above=0, default_text="none", parse=parse_amount)
    cost_weight: float = option(1.0, "λ of the cost penalty", group="cost", min=0)
    cost_penalty: str = option("derived", "derived: λ E[cost]/target while the cell derived now costs more than the "
                               "budget, nothing once it fits (lands at the budget, docs/budget.md); hinge: λ max(0, "
                               "E[cost]/target - 1), while the expectation is above it; linear: λ E[cost]/target "
                               "(ProxylessNAS), always", group="cost", choices=COST_PENALTIES)

    def __post_init__(self) -> None:
        if isinstance(self.cost_target, str):  # "300M" from a config file or Python
            try:
                self.cost_target = parse_amount(self.cost_target)
            except argparse.ArgumentTypeError as e:
                raise ConfigError(f"{{cost_target}}: {e}", names=("cost_target",)) from None

    def check(self) -> None:
        super().check()
        if self.cost is not None and self.cost_target is None:
            raise ConfigError("{cost} needs {cost_target}, the budget", names=("cost", "cost_target"))

    def budget_penalty(self, expected: Any, derived: float) -> Any:
        """λ times the expected cost over the budget: the part above it (hinge), all of it while the
        derived cell (cost ``derived``) is over budget (derived), or all of it always (linear)."""
        ratio = expected / self.cost_target
        if self.cost_penalty == "hinge":
            return self.cost_weight * (ratio - 1).relu()
        if self.cost_penalty == "derived" and derived <= self.cost_target:
            return ratio * 0.0  # within the budget: no push, the same graph
        return self.cost_weight * ratio


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


__all__ = ["COST_KINDS", "COST_PENALTIES", "ArchStep", "ArchWarmup", "Compile", "Config", "CostBudget", "CorpusData",
           "Curvature", "Epochs", "FastConv", "ImageData", "Momentum", "RunOptions", "Sampler", "Seed", "add_flags", "check_field", "check_resumable", "configclass", "flag_of",
           "given_fields", "load_config_file", "option"]
