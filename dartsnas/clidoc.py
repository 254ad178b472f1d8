"""The command-line reference (docs/cli.md), generated from the parser itself so that it cannot drift.

    python -m dartsnas.clidoc > docs/cli.md

A test compares the file with this output. Markdown built from the parser's actions rather than from
``format_help()``, whose layout changes with the terminal width and the Python version.
"""
from __future__ import annotations

import argparse
from typing import Iterator

from .cli import build_parser

HEADER = """# Command-line reference

Generated from the parser (`python -m dartsnas.clidoc > docs/cli.md`; a test checks that this file is
current). Defaults are in brackets. Every command that trains uses the same spelling for the same
flag; `dartsnas COMMAND --help` prints the same text in the terminal.

Each training flag is a field of the command's config (`dartsnas/config.py`: declared once, with its
help and bounds; the flag is generated from it). `--config FILE` reads fields from a JSON or TOML file,
keys spelt as fields (`batch_size`) or as flags (`batch-size`); a run's own `config.json` is such a
file. Flags given on the command line override the file, which overrides the defaults (and, with
`--resume`, the checkpoint's config):

```
dartsnas search cnn --config search.toml --epochs 10 --out runs/from-toml
dartsnas train cnn --config runs/mine/config.json --seed 1 --out runs/mine-seed1
```

An error names the flag at the command line (`--batch-size must be >= 1, got 0`) and the field in
Python (`batch_size must be >= 1, got 0`).
"""


def _commands(parser: argparse.ArgumentParser, prefix: str = "dartsnas",
              help_text: str = "") -> Iterator[tuple[str, str, argparse.ArgumentParser]]:
    """(command line, one-line help, parser) of every leaf command, in the parser's order."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield prefix, help_text, parser
        return
    helps = {choice.dest: choice.help or "" for choice in subs[0]._choices_actions}
    for name, child in subs[0].choices.items():
        yield from _commands(child, f"{prefix} {name}", helps.get(name, help_text))


def _flag(action: argparse.Action) -> str:
    if not action.option_strings:
        name = action.metavar or action.dest
        return f"`{name}...`" if action.nargs in ("*", "+") else f"`{name}`"
    names = ", ".join(action.option_strings)
    if action.nargs == 0:
        return f"`{names}`"
    if action.choices is not None:
        value = "|".join(str(c) for c in action.choices)
    else:
        value = action.metavar or action.dest.upper()
    value = f"{value}..." if action.nargs in ("*", "+") else value
    return f"`{names} {value}`"


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def reference() -> str:
    """docs/cli.md: one section per command, a table of its arguments by group."""
    parser = build_parser()
    lines = [HEADER, "| command | what it does |", "| --- | --- |"]
    commands = list(_commands(parser))
    for command, text, _ in commands:
        anchor = command.replace(" ", "-")
        lines.append(f"| [`{command}`](#{anchor}) | {_cell(text)} |")
    for command, text, sub in commands:
        lines += ["", f"## {command}", "", f"{_cell(text)}."[:1].upper() + f"{_cell(text)}."[1:] if text else ""]
        for group in sub._action_groups:
            actions = [a for a in group._group_actions
                       if not isinstance(a, (argparse._HelpAction, argparse._VersionAction))
                       and a.help != argparse.SUPPRESS]
            if not actions:
                continue
            title = {"positional arguments": "arguments", "options": "options",
                     "optional arguments": "options"}.get(group.title or "", group.title or "")
            lines += ["", f"**{title}**", "", "| argument | meaning |", "| --- | --- |"]
            for action in actions:
                required = " (required)" if action.required and action.option_strings else ""
                lines.append(f"| {_flag(action)}{required} | {_cell(action.help or '')} |")
    return "\n".join(lines).rstrip() + "\n"


if __name__ == "__main__":
    print(reference(), end="")
