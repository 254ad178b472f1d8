"""The documentation stays true: the CLI reference is the parser's, the README stays short, and every
relative link in README.md and docs/ points at a file that exists."""
import re
from pathlib import Path

from dartsnas.clidoc import reference

ROOT = Path(__file__).resolve().parents[1]


def test_the_cli_reference_is_generated_from_the_parser():
    assert (ROOT / "docs" / "cli.md").read_text() == reference(), \
        "docs/cli.md is stale: python -m dartsnas.clidoc > docs/cli.md"


def test_every_flag_of_every_command_is_in_the_reference():
    from dartsnas.cli import build_parser
    text = (ROOT / "docs" / "cli.md").read_text()
    search_cnn = build_parser()._subparsers._group_actions[0].choices["search"]._subparsers._group_actions[0].choices["cnn"]
    flags = [s for a in search_cnn._actions for s in a.option_strings if s.startswith("--") and s != "--help"]
    assert len(flags) > 40 and all(f"`{flag}" in text for flag in flags)


def test_the_readme_is_a_short_path_and_every_link_resolves():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 250
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
            if "://" in target:
                continue
            assert (page.parent / target).exists(), f"{page.name}: broken link {target}"


def documented_commands() -> list[tuple[str, list[str]]]:
    """(page, argv) of every dartsnas command line in a fenced code block of README.md and docs/
    (continuation lines joined, comments dropped; torchrun and python -m launches included)."""
    import shlex
    found = []
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        blocks = re.findall(r"```[a-z]*\n(.*?)```", page.read_text(), flags=re.S)
        for block in blocks:
            for line in block.replace("\\\n", " ").splitlines():
                line = line.split("  #")[0].strip()
                if not re.match(r"(dartsnas |torchrun |python -m dartsnas )", line):
                    continue
                words = shlex.split(line, comments=True)
                if "-m" in words and "dartsnas" in words[words.index("-m") + 1:words.index("-m") + 2]:
                    words = words[words.index("-m") + 2:]
                elif words[:1] == ["dartsnas"]:
                    words = words[1:]
                else:
                    continue
                if words and not words[0].startswith("-"):
                    found.append((page.name, words))
    return found


def test_every_command_in_the_docs_is_a_valid_command_line():
    from dartsnas.cli import build_parser
    commands = documented_commands()
    assert len(commands) > 25
    for page, argv in commands:
        try:
            build_parser().parse_args(argv)
        except SystemExit:
            raise AssertionError(f"{page}: `dartsnas {' '.join(argv)}` does not parse") from None
