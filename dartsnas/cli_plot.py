"""The command line's ``plot``: a genotype's cells, or a search run's α, curves and evolution."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .genotype import load_genotype
from .spaces import SEARCH_SPACES, space_of_genotype


def add_plot(sub: Any) -> None:
    p = sub.add_parser("plot", help="draw the cells of a genotype (one file per cell type)")
    p.add_argument("genotype", help="built-in name, genotype.json, run directory or checkpoint")
    p.add_argument("--out", required=True, type=Path, help="FILE.png|svg|pdf|dot (suffixed _normal, _reduce, ...)")
    p.add_argument("--space", choices=SEARCH_SPACES.names(), default=None, help="[from the file; cnn for built-in names]")
    p.add_argument("--format", choices=("png", "svg", "pdf", "dot"), default=None, help="[from --out's suffix]")
    p.add_argument("--engine", choices=("matplotlib", "graphviz"), default="matplotlib",
                   help="cell-diagram renderer; graphviz uses the dot program where installed [matplotlib]")
    what = p.add_mutually_exclusive_group()
    what.add_argument("--alphas", action="store_true", help="RUN_DIR: softmax(α) of every edge against the epoch")
    what.add_argument("--curves", action="store_true", help="RUN_DIR: loss / accuracy or perplexity / lr curves")
    what.add_argument("--evolution", action="store_true", help="RUN_DIR: the derived cell per epoch as a GIF")



def plot(args: argparse.Namespace) -> int:
    from .plot import plot_alphas, plot_curves, plot_evolution, plot_genotype
    from .train.checkpoint import load_checkpoint
    spec = Path(args.genotype)
    if args.alphas or args.curves or args.evolution:
        if args.alphas:
            paths = plot_alphas(spec, args.out)
        elif args.curves:
            paths = [plot_curves(spec, args.out)]
        else:
            paths = [plot_evolution(spec, args.out)]
        for path in paths:
            print(path)
        return 0
    if spec.is_file() and spec.suffix == ".pt":
        data = load_checkpoint(spec).get("genotype")
        if not isinstance(data, dict):
            raise ConfigError(f"{spec}: checkpoint holds no genotype")
        genotype = space_of_genotype(data).genotype.from_dict(data, source=str(spec))
    else:
        space = args.space
        if space is None:
            space = _space_of_file(spec)
        genotype = load_genotype(args.genotype, space)
    for path in plot_genotype(genotype, args.out, args.format, engine=args.engine):
        print(path)
    return 0


def _space_of_file(spec: Path) -> str:
    """The space of a genotype file (or a run directory's genotype.json), from what it holds; cnn
    when it is no file (a built-in name)."""
    import json
    path = spec / "genotype.json" if spec.is_dir() else spec
    if not path.is_file():
        return "cnn"
    try:
        data = json.loads(path.read_text(errors="replace"))
    except ValueError:
        return "cnn"  # load_genotype names what is wrong with the file
    return space_of_genotype(data).name if isinstance(data, dict) else "cnn"
