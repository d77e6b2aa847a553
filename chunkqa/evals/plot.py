"""The needle heatmap: accuracy per (depth, length) cell, one panel per setting, written as a PNG.

Axes are in numeric order: lengths ascending left to right, depths from 0 % (top) to 100 %
(bottom). matplotlib is imported only when a plot is drawn, through its Agg canvas (no GUI, no
global backend switch).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chunkqa.errors import ChunkqaError


@dataclass(frozen=True)
class Grid:
    """Accuracies of one setting: values[i][j] at depths[i] and lengths[j] (nan where not run)."""

    title: str
    lengths: tuple[int, ...]
    depths: tuple[float, ...]
    values: tuple[tuple[float, ...], ...]


def grids(records: Sequence[dict[str, Any]]) -> list[Grid]:
    """One grid per setting, in the order the settings ran, axes sorted numerically."""
    out = []
    for setting in dict.fromkeys(r["setting"] for r in records):
        mine = [r for r in records if r["setting"] == setting]
        lengths = tuple(sorted({r["length"] for r in mine}))
        depths = tuple(sorted({r["depth"] for r in mine}))
        cell = {(r["depth"], r["length"]): r["value"] for r in mine}
        values = tuple(tuple(cell.get((d, n), float("nan")) for n in lengths) for d in depths)
        out.append(Grid(setting, lengths, depths, values))
    return out


def figure(panels: Sequence[Grid], title: str) -> Any:
    """A matplotlib Figure with one annotated heatmap per grid."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise ChunkqaError(
            "--plot needs matplotlib", hint="pip install 'chunkqa[eval]' (or pip install matplotlib)"
        ) from None
    width = max(4.0, 1.0 + 0.8 * max(len(g.lengths) for g in panels))
    height = 2.2 + 0.55 * max(len(g.depths) for g in panels)
    fig = Figure(figsize=(width * len(panels) + 1.0, height), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    image = None
    for ax, grid in zip(axes, panels, strict=True):
        image = ax.imshow(grid.values, cmap="RdYlGn", vmin=0.0, vmax=1.0, aspect="auto", origin="upper")
        ax.set_xticks(range(len(grid.lengths)), [f"{n:,}" for n in grid.lengths])
        ax.set_yticks(range(len(grid.depths)), [f"{100 * d:g}%" for d in grid.depths])
        ax.set_xlabel("prompt length (tokens)")
        ax.set_ylabel("needle depth")
        ax.set_title(grid.title)
        for i, row in enumerate(grid.values):
            for j, value in enumerate(row):
                text = "-" if value != value else f"{100 * value:.0f}%"  # nan: not run
                dark = value == value and not 0.2 <= value <= 0.85  # the colour map's dark ends
                ax.text(j, i, text, ha="center", va="center", fontsize=9, color="white" if dark else "black")
    fig.colorbar(image, ax=list(axes), label="accuracy")
    fig.suptitle(title)
    return fig


def write_heatmap(path: str | Path, records: Sequence[dict[str, Any]], title: str) -> Path:
    """Draw the needle records as a PNG at `path`."""
    path = Path(path)
    fig = figure(grids(records), title)
    try:
        fig.savefig(path, format="png", dpi=120)
    except OSError as exc:
        raise ChunkqaError(f"cannot write the heatmap to {path}: {exc.strerror or exc}") from None
    return path
