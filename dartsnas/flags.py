"""A config class at the command line: its flags (one per field, in argparse groups) and ``--config
FILE`` (JSON or TOML), from the fields' declarations in :mod:`dartsnas.config`."""
from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import Any, Sequence

from .config import _is_switch, _kind, _typed, flag_of
from .errors import ConfigError

#: The order of the argparse groups in a command's help.
GROUP_ORDER = ("options", "data", "corpus", "search space", "network", "optimisation", "sampled search",
               "progressive search (P-DARTS, DrNAS)", "cost", "collapse", "selection", "benchmark", "timing", "final network",
               "cluster", "run")


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
    # a group GROUP_ORDER does not name goes after those it does, by name (not by a set's hash order)
    for key in sorted(keys | {"run"}, key=lambda k: (GROUP_ORDER.index(k) if k in GROUP_ORDER else len(GROUP_ORDER), k)):
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


def load_config_file(path: str | Path, cls: type, skip: frozenset[str] = frozenset(), table: str | None = None
                     ) -> dict[str, Any]:
    """The fields a JSON or TOML file sets (keys spelt as fields, batch_size, or as flags, batch-size;
    a ``kind`` key, as config.json has, is ignored; so are ``skip``, another config's keys). With
    ``table``, the keys of that table (``[launcher]``) join the top-level ones and win. Errors name the
    file and the key."""
    path = Path(path)
    data = read_config_data(path)
    if table is not None:
        known = {f.name for f in dataclasses.fields(cls)}
        inner = data.get(table)
        data = {k: v for k, v in data.items() if k.replace("-", "_").lstrip("_") in known and not isinstance(v, dict)}
        if isinstance(inner, dict):
            data.update(inner)
    return fields_from_data(data, cls, path, skip)


def read_config_data(path: Path) -> dict[str, Any]:
    """A JSON or TOML file's table of options."""
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
    return data


def fields_from_data(data: dict[str, Any], cls: type, path: Path, skip: frozenset[str] = frozenset()) -> dict[str, Any]:
    known = {f.name: f for f in dataclasses.fields(cls)}
    out = {}
    for key, value in data.items():
        name = key.replace("-", "_").lstrip("_")
        if name == "kind" or name in skip:
            continue
        if name not in known:
            raise ConfigError(f"--config {path}: unknown option {key!r} (not a field of {cls.__name__})")
        out[name] = _checked_type(known[name], _typed(known[name], value), path, key)
    return out


def _checked_type(f: dataclasses.Field, value: Any, path: Path, key: str) -> Any:
    scalar, optional, sequence = _kind(f)
    parse = f.metadata.get("parse")
    if isinstance(value, str) and parse is not None and not sequence:  # cost_target = "300K", as on the command line
        try:
            return parse(value)
        except (argparse.ArgumentTypeError, ValueError) as e:
            raise ConfigError(f"--config {path}: {key}: {e}") from None
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
