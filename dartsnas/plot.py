"""Cell diagrams like the paper's figures: a layout computed as data, drawn by matplotlib or as DOT.

Inputs on the left (c_{k-2}, c_{k-1}; x_t, h_{t-1} for recurrent cells), intermediate nodes numbered
left to right, the output (c_k; h_t) on the right, every edge labelled with its op, and one colour
per op name, the same in every figure. matplotlib is an optional dependency
(``pip install 'dartsnas[plot]'``); ``--format dot`` needs nothing.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from .errors import ConfigError, DartsError
from .layout import CellLayout
from .spaces import space_of_genotype
from .ops import CONV_OPS, RNN_OPS

FORMATS = ("png", "svg", "pdf", "dot")


def genotype_layouts(genotype: Any) -> list[CellLayout]:
    """One layout per cell type, as the genotype's space lays its cells out."""
    return space_of_genotype(genotype.to_dict()).layouts(genotype)


def op_colors() -> dict[str, str]:
    """A fixed colour per op name across every figure (conv and recurrent ops)."""
    palette = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
               "#bcbd22", "#17becf", "#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173"]
    names = list(dict.fromkeys([*CONV_OPS.names(), *RNN_OPS.names()]))
    return {name: palette[i % len(palette)] for i, name in enumerate(names)}


def to_dot(layout: CellLayout) -> str:
    """Graphviz DOT text of a cell, left to right."""
    colors = op_colors()
    lines = [f'digraph "{layout.name}" {{', "  rankdir=LR;", '  node [shape=box, style="rounded,filled"];']
    fills = {"input": "#a6dba0", "node": "#d9d9d9", "output": "#fee08b"}
    for label, _, _, kind in layout.nodes:
        lines.append(f'  "{label}" [fillcolor="{fills[kind]}"];')
    for src, dst, op in layout.edges:
        attrs = f'label="{op}", color="{colors.get(op, "#444444")}"' if op else 'color="#999999"'
        lines.append(f'  "{src}" -> "{dst}" [{attrs}];')
    lines.append("}")
    return "\n".join(lines) + "\n"


def draw(layout: CellLayout, path: str | os.PathLike) -> Path:
    """Render a cell diagram to ``path`` (png, svg or pdf by its suffix) with matplotlib."""
    plt = _pyplot()
    from matplotlib.patches import FancyArrowPatch
    colors = op_colors()
    pos = {label: (x, y) for label, x, y, _ in layout.nodes}
    width = max(x for _, x, _, _ in layout.nodes) + 1
    fig, ax = plt.subplots(figsize=(0.9 * width + 1, 3.2))
    fills = {"input": "#a6dba0", "node": "#d9d9d9", "output": "#fee08b"}
    for i, (src, dst, op) in enumerate(layout.edges):
        (x0, y0), (x1, y1) = pos[src], pos[dst]
        bend = 0.25 if (i % 2) else -0.25
        arrow = FancyArrowPatch((x0, y0), (x1, y1), arrowstyle="-|>", mutation_scale=12, shrinkA=16, shrinkB=16,
                                connectionstyle=f"arc3,rad={bend if op else 0.0}",
                                color=colors.get(op, "#999999") if op else "#999999", lw=1.6 if op else 1.0)
        ax.add_patch(arrow)
        if op:
            # arc3 bends through mid + rad * (dy, -dx); the curve's midpoint lies half-way to that.
            mx, my = (x0 + x1) / 2 + 0.5 * bend * (y1 - y0), (y0 + y1) / 2 - 0.5 * bend * (x1 - x0)
            ax.text(mx, my, op, fontsize=7, ha="center", va="center", color=colors.get(op, "#000000"),
                    bbox=dict(boxstyle="round,pad=0.15", fc="white", ec="none", alpha=0.85))
    for label, x, y, kind in layout.nodes:
        text = f"${label}$" if "_" in label else label
        ax.text(x, y, text, fontsize=10, ha="center", va="center",
                bbox=dict(boxstyle="round,pad=0.4", fc=fills[kind], ec="#333333"))
    ax.set_xlim(-0.8, width - 0.2)
    ax.set_ylim(-1.9, 1.9)
    ax.set_aspect("equal")  # so the label positions computed in data units follow the drawn arcs
    ax.set_title(f"{layout.name} cell", fontsize=11)
    ax.axis("off")
    path = Path(path)
    fig.savefig(path, bbox_inches="tight", dpi=150)
    plt.close(fig)
    return path


def draw_graphviz(layout: CellLayout, path: Path, fmt: str) -> Path:
    """Render with Graphviz's ``dot`` program (``--engine graphviz``), where it is installed."""
    import shutil
    import subprocess
    exe = shutil.which("dot")
    if exe is None:
        raise ConfigError("--engine graphviz needs Graphviz's dot program on PATH (the default engine, "
                          "matplotlib, needs nothing else)")
    result = subprocess.run([exe, f"-T{fmt}", "-o", str(path)], input=to_dot(layout).encode(), capture_output=True)
    if result.returncode != 0:
        raise DartsError(f"dot failed on {path.name}: {result.stderr.decode(errors='replace').strip()}")
    return path


def plot_genotype(genotype: Any, out: str | os.PathLike, fmt: str | None = None,
                  engine: str = "matplotlib") -> list[Path]:
    """Write one file per cell type: ``OUT_normal.png``, ``OUT_reduce.png`` (or ``OUT_recurrent``)."""
    out = Path(out)
    fmt = fmt or out.suffix.lstrip(".").lower()
    if fmt not in FORMATS:
        raise ConfigError(f"--out {out}: unknown format {fmt!r} (use one of {', '.join(FORMATS)})")
    if engine not in ("matplotlib", "graphviz"):
        raise ConfigError(f"--engine must be matplotlib or graphviz, got {engine!r}")
    out.parent.mkdir(parents=True, exist_ok=True)
    written = []
    for layout in genotype_layouts(genotype):
        path = out.with_name(f"{out.stem}_{layout.name}.{fmt}")
        if fmt == "dot":
            path.write_text(to_dot(layout))
        elif engine == "graphviz":
            draw_graphviz(layout, path, fmt)
        else:
            draw(layout, path)
        written.append(path)
    return written


# --------------------------------------------------------------------------------------------
# Pictures of a run directory: α along the epochs, training curves, the derived cell per epoch.

def _pyplot():
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise DartsError("plotting needs matplotlib: pip install 'dartsnas[plot]' (or use --format dot)") from None
    return plt


def read_run(run_dir: str | os.PathLike) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The metrics records and the config of a run directory (clear errors when absent)."""
    from .train.checkpoint import load_checkpoint, read_metrics
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ConfigError(f"{run_dir}: not a run directory")
    records = [r for r in read_metrics(run_dir / "metrics.jsonl") if "epoch" in r]
    if not records:
        raise ConfigError(f"{run_dir}: no metrics.jsonl records to plot")
    config = load_checkpoint(run_dir / "checkpoint.pt")["config"] if (run_dir / "checkpoint.pt").is_file() else {}
    return records, config


def plot_alphas(run_dir: str | os.PathLike, out: str | os.PathLike) -> list[Path]:
    """softmax(α) of every op on every edge against the epoch, one panel per edge and one figure per
    cell type; a dot marks the op derivation picks on that edge at that epoch. A P-DARTS run's stages
    (stages.json) are dashed lines; an op's curve ends where its edge's stage pruned it."""
    from .ops import edge_ops
    plt = _pyplot()
    records, config = read_run(run_dir)
    if "choice_alphas" in records[0]:
        return [_plot_choice_alphas(records, Path(out))]
    if "alphas" not in records[0]:
        raise ConfigError(f"{run_dir}: metrics hold no α (not a search run)")
    colors = op_colors()
    out = Path(out)
    written = []
    stages_file = Path(run_dir) / "stages.json"
    stages = json.loads(stages_file.read_text()) if stages_file.is_file() else []
    space = space_of_genotype(records[0]["genotype"])
    ops = config.get("ops") or space.default_ops
    for cell, first in records[0]["alphas"].items():
        epochs = [r["epoch"] for r in records]
        n_edges = len(first)
        names = edge_ops(ops, n_edges, cell)  # the op set on every edge, or S1's pair per edge
        by_stage = {s["stage"]: s["edge_ops"][cell] for s in stages}

        def columns(r: dict[str, Any], e: int) -> list[str]:  # the ops α's row holds at that epoch
            return list(by_stage[r["stage"]][e]) if "stage" in r and r["stage"] in by_stage else list(names[e])

        def value(r: dict[str, Any], e: int, op: str) -> float:
            kept = columns(r, e)
            return r["alphas"][cell][e][kept.index(op)] if op in kept else float("nan")
        cols = 6
        rows = -(-n_edges // cols)
        fig, axes = plt.subplots(rows, cols, figsize=(2.2 * cols, 1.6 * rows), sharex=True, sharey=True,
                                 squeeze=False)
        picks: dict[int, list[tuple[int, str]]] = {}
        for r in records:
            for e, op in space.edge_picks(r["genotype"], cell):
                picks.setdefault(e, []).append((r["epoch"], op))
        for e in range(rows * cols):
            ax = axes[e // cols][e % cols]
            if e >= n_edges:
                ax.axis("off")
                continue
            for name in names[e]:
                ax.plot(epochs, [value(r, e, name) for r in records], color=colors.get(name, "#444"),
                        lw=1.2, label=name)
            for epoch, op in picks.get(e, []):
                ax.plot([epoch], [value(records[epochs.index(epoch)], e, op)], "o", ms=3, color=colors.get(op, "#000"))
            for s in stages[1:]:
                ax.axvline(s["epochs"][0] - 0.5, color="#999", lw=0.8, ls="--")
            ax.set_title(f"edge {e}", fontsize=7)
            ax.tick_params(labelsize=6)
        legend: dict[str, object] = {}  # every op once, in first-seen order (S1's edges differ)
        for ax in axes.flat:
            for handle, label in zip(*ax.get_legend_handles_labels()):
                legend.setdefault(label, handle)
        fig.legend(list(legend.values()), list(legend), loc="lower center", ncol=min(len(legend), 8), fontsize=7)
        staged = f"; dashed: P-DARTS stages of {', '.join(str(s['layers']) for s in stages)} cells" if stages else ""
        fig.suptitle(f"softmax(α) of the {cell} cell per epoch (dots: derived choice{staged})", fontsize=10)
        fig.tight_layout(rect=(0, 0.05, 1, 0.96))
        path = out.with_name(f"{out.stem}_{cell}{out.suffix or '.png'}")
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written


def _plot_choice_alphas(records: list[dict[str, Any]], out: Path) -> Path:
    """A model search's softmax(α) against the epoch: one panel per choice, one line per candidate,
    dots on the pick of each epoch."""
    plt = _pyplot()
    names = list(records[0]["choice_alphas"])
    epochs = [r["epoch"] for r in records]
    cols = min(4, len(names))
    rows = -(-len(names) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.2 * rows), sharex=True, squeeze=False)
    for i in range(rows * cols):
        ax = axes[i // cols][i % cols]
        if i >= len(names):
            ax.axis("off")
            continue
        name = names[i]
        for candidate in records[0]["choice_alphas"][name]:
            ax.plot(epochs, [r["choice_alphas"][name][candidate] for r in records], lw=1.2, label=candidate)
        for r in records:
            pick = r["choices"][name]
            for c in (pick if isinstance(pick, list) else [pick]):
                ax.plot([r["epoch"]], [r["choice_alphas"][name][str(c)]], "o", ms=3, color="#000")
        ax.set_title(name, fontsize=8)
        ax.tick_params(labelsize=6)
        ax.legend(fontsize=6)
    fig.suptitle("softmax(α) of every choice per epoch (dots: the pick)", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.94))
    path = out.with_suffix(out.suffix or ".png")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_curves(run_dir: str | os.PathLike, out: str | os.PathLike) -> Path:
    """Loss, accuracy or perplexity, and learning rate against the epoch (search or training run)."""
    plt = _pyplot()
    records, _ = read_run(run_dir)
    keys = sorted({k for r in records for k, v in r.items() if isinstance(v, (int, float))})
    groups = [("loss", [k for k in keys if k.endswith("_loss")]),
              ("accuracy", [k for k in keys if k.endswith(("_acc", "_top1", "_top5"))]),
              ("perplexity", [k for k in keys if k.endswith("_ppl")]),
              ("learning rate", [k for k in keys if k == "lr"]),
              ("dominant eigenvalue of the α-Hessian", [k for k in keys if k == "hessian_eigenvalue"])]
    groups = [(title, ks) for title, ks in groups if ks]
    fig, axes = plt.subplots(1, len(groups), figsize=(4 * len(groups), 3.2), squeeze=False)
    for ax, (title, ks) in zip(axes[0], groups):
        for key in ks:
            pts = [(r["epoch"], r[key]) for r in records if key in r]
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=".", label=key)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("epoch")
        if title == "perplexity":
            ax.set_yscale("log")
        ax.legend(fontsize=7)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def plot_evolution(run_dir: str | os.PathLike, out: str | os.PathLike, cell: str | None = None,
                   duration_ms: int = 700) -> Path:
    """An animated GIF of the derived cell at each epoch ("the normal cell along the epochs")."""
    import io
    import tempfile

    from PIL import Image

    records, _ = read_run(run_dir)
    if "genotype" not in records[0]:
        raise ConfigError(f"{run_dir}: metrics hold no genotype per epoch (not a search run)")
    first = records[0]["genotype"]
    space = space_of_genotype(first)
    cell = cell or space.cell_types[0]
    frames = []
    with tempfile.TemporaryDirectory() as tmp:
        for r in records:
            g = r["genotype"]
            genotype = space.genotype.from_dict(g)
            layout = next(lay for lay in genotype_layouts(genotype) if lay.name == cell)
            layout.name = f"{cell}, epoch {r['epoch']}"
            path = draw(layout, Path(tmp) / f"{r['epoch']}.png")
            with Image.open(path) as im:
                frames.append(im.convert("RGB").copy())
    size = (max(f.width for f in frames), max(f.height for f in frames))
    frames = [f.resize(size) if f.size != size else f for f in frames]
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:], duration=duration_ms, loop=0)
    out.write_bytes(buffer.getvalue())
    return out
