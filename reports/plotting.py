"""Figure parts shared by every figure: config labels, panels, the method palette and
markers, titles, one legend per figure, a readable bytes axis."""
from __future__ import annotations

import textwrap
from typing import Sequence

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter

from reports import palette
from reports.palette import fraction, human_bytes, metric_label


def label(frame: pd.DataFrame, cols: Sequence[str], defaults: dict | None = None) -> pd.Series:
    """A readable config name per row: the method bare, then key=value for the budget and for
    every other field that differs from the method's usual value (``defaults``), so that a
    sweep's lines read "fiited budget=0.1 K=2" rather than listing every knob."""
    defaults = defaults or {}

    def one(row) -> str:
        parts = []
        for c in cols:
            v = row[c]
            if pd.isna(v):
                continue
            if c == "method":
                parts.append(str(v))
            elif c == "budget":
                parts.append(f"budget={fraction(v)}")
            elif defaults.get((row.get("method"), c)) != v:
                parts.append(f"{c.rsplit('.', 1)[-1]}={_short(v)}")
        return " ".join(parts) or "all runs"
    if frame.empty:
        return pd.Series([], dtype=str, index=frame.index)
    return frame.apply(one, axis=1)


def usual_values(data) -> dict:
    """(method, field) -> the value most of the method's configs share (a strict majority;
    with no majority the field is always named)."""
    cols = data.runs.config_columns
    configs = data.runs.complete[cols].drop_duplicates()
    out = {}
    for c in cols:
        if c in ("method", "budget"):
            continue
        for method, vals in configs.groupby("method")[c]:
            counts = vals.dropna().value_counts()
            if len(counts) and counts.iloc[0] * 2 > len(vals):
                out[(method, c)] = counts.index[0]
    return out


def _short(v) -> str:
    return f"{v:g}" if isinstance(v, (float, np.floating)) else str(v)


def panels(n: int, ncols: int = 3, w: float = 4.6, h: float = 3.5, sharey: bool = False):
    ncols = max(1, min(n, ncols))
    nrows = -(-n // ncols)
    fig = Figure(figsize=(w * ncols, h * nrows + 0.5), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, sharey=sharey).ravel()
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, axes[:n]


def method_lines(part: pd.DataFrame, x: str, y: str, pal: dict, ax, **kw) -> None:
    """One line per label in its method's colour and marker, the same in every figure."""
    present = [lab for lab in pal if lab in set(part["label"])]
    sns.lineplot(part, x=x, y=y, hue="label", palette=pal, hue_order=present, style="label",
                 style_order=present, markers=palette.markers(present), dashes=False, ax=ax,
                 **kw)


def panel_title(ax, text: str) -> None:
    ax.set_title("\n".join(textwrap.wrap(metric_label(text), 48)), fontsize="small")


def one_legend(fig: Figure, axes, title: str | None = None) -> Figure:
    """Move the panels' legends into one legend right of the figure."""
    seen = {}
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            seen.setdefault(lab, h)
        if ax.get_legend() is not None:
            ax.get_legend().remove()
    if seen:
        fig.legend(seen.values(), seen.keys(), loc="outside right center", fontsize="x-small",
                   title=title, title_fontsize="x-small")
    return fig


def bytes_axis(ax, values: pd.Series) -> None:
    """A log axis in KiB/MiB with enough labelled ticks even when it spans under a decade."""
    from matplotlib.ticker import FixedLocator, FuncFormatter

    ax.set_xscale("log")
    lo, hi = float(values.min()), float(values.max())
    ax.xaxis.set_minor_formatter(NullFormatter())
    if hi / max(lo, 1.0) < 100:  # under two decades: 5 labelled ticks, not one power of ten
        ticks = list(np.geomspace(max(lo, 1.0), hi, 5))
        ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: human_bytes(v)))
