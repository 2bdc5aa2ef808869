"""Seaborn figures, each drawn only when the experiment holds the data it needs.

Every draw function takes a :class:`ReportData` and returns a matplotlib ``Figure`` or None.
Figures are built with the object API (``Figure()``, no pyplot), so drawing needs no GUI
backend, leaks no global figure state, and the same code renders inline in a notebook.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure

from reports.data import ReportData
from reports.tables import uniform_mean, uniform_runs

MEM = "mem/total_bytes"
MAX_PANELS = 12
_KEPT_FRAC = re.compile(r"prune/kept_frac/pos(\d+)")


@dataclass(frozen=True)
class FigureSpec:
    name: str          # file stem and key into claims.FIGURE_CLAIMS
    title: str
    draw_fn: Callable[[ReportData], Figure | None]

    def draw(self, data: ReportData) -> Figure | None:
        with sns.axes_style("whitegrid"), sns.plotting_context("notebook", font_scale=0.85):
            return self.draw_fn(data)


def draw_all(data: ReportData, out_dir: Path | None = None, dpi: int = 110,
             log: Callable[[str], None] = lambda s: None) -> dict[str, Figure | Path]:
    """Draw every figure the data supports; with ``out_dir``, save PNGs and return their paths."""
    out = {}
    for spec in FIGURES:
        fig = spec.draw(data)
        if fig is None:
            log(f"  skip {spec.name}: experiment lacks the data")
            continue
        if out_dir is None:
            out[spec.name] = fig
            continue
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / f"{spec.name}.png"
        fig.savefig(path, dpi=dpi)
        out[spec.name] = path
        log(f"  {path}")
    return out


# --- helpers ---------------------------------------------------------------------------------

def label(frame: pd.DataFrame, cols: Sequence[str]) -> pd.Series:
    """A readable config name per row: the method bare, the other fields as key=value."""
    def one(row) -> str:
        parts = [(str(row[c]) if c == "method" else f"{c}={_short(row[c])}")
                 for c in cols if pd.notna(row[c])]
        return " ".join(parts) or "all runs"
    if frame.empty:
        return pd.Series([], dtype=str, index=frame.index)
    return frame.apply(one, axis=1)


def _short(v) -> str:
    return f"{v:g}" if isinstance(v, (float, np.floating)) else str(v)


def _panels(n: int, ncols: int = 3, w: float = 5.0, h: float = 3.8):
    ncols = max(1, min(n, ncols))
    nrows = -(-n // ncols)
    fig = Figure(figsize=(w * ncols, h * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, axes[:n]


def _runs(data: ReportData, col: str | None = None, exclude: Sequence[str] = ()) -> pd.DataFrame:
    """Complete runs (with ``col`` set), labelled by their config without ``exclude``."""
    runs = data.runs.complete.copy()
    if col is not None:
        if col not in runs:
            return runs.iloc[:0]
        runs = runs[runs[col].notna()]
    cols = [c for c in data.runs.config_columns if c not in exclude]
    runs["label"] = label(runs, cols)
    return runs


def _varying(data: ReportData, col: str, exclude: Sequence[str] = ()) -> pd.DataFrame:
    """Runs of the config groups in which ``col`` takes two or more values (an ablation)."""
    if col not in data.runs.config_columns:
        return data.runs.complete.iloc[:0]
    runs = _runs(data, col, exclude=(col, *exclude))
    if runs.empty:
        return runs
    keep = runs.groupby("label")[col].transform("nunique") >= 2
    return runs[keep]


def _uniform_line(ax, data: ReportData, runs: pd.DataFrame, metric: str) -> None:
    ref = uniform_mean(data.runs, runs, metric).dropna()
    for v in ref.unique()[:1]:
        ax.axhline(v, ls="--", color="black", lw=1, label="uniform, full size")


def _finish(ax, title: str | None = None, legend: bool = True) -> None:
    if title:
        ax.set_title(title)
    if legend and ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize="x-small", title_fontsize="x-small")
    elif ax.get_legend() is not None:
        ax.get_legend().remove()


# --- figures ---------------------------------------------------------------------------------

def ne_vs_memory(data: ReportData) -> Figure | None:
    """The Pareto view: NE against total embedding memory, one line per method."""
    ne = data.runs.ne_metric
    runs = _runs(data, MEM, exclude=("budget", "dataset"))
    if runs.empty or runs[MEM].nunique() < 2:
        return None
    # seeds of one config share one x, so seaborn's error bars are the seed spread of NE
    runs["memory"] = runs.groupby(data.runs.config_columns, dropna=False)[MEM].transform("mean")
    groups = list(runs.groupby("dataset", dropna=False)) if "dataset" in runs else [(None, runs)]
    fig, axes = _panels(len(groups), ncols=2, w=6.5, h=4.5)
    for ax, (ds, part) in zip(axes, groups):
        sns.lineplot(part, x="memory", y=ne, hue="label", marker="o", errorbar="sd",
                     err_style="bars", ax=ax)
        _uniform_line(ax, data, part, ne)
        if data.runs.has("bayes_ne") and part["bayes_ne"].notna().any():
            ax.axhline(part["bayes_ne"].mean(), ls=":", color="gray", lw=1, label="Bayes NE")
        ax.set_xscale("log")
        ax.set_xlabel("total embedding memory (bytes, log)")
        ax.set_ylabel(ne)
        _finish(ax, f"NE vs memory{'' if pd.isna(ds) else f' ({ds})'}")
    return fig


def k_ablation(data: ReportData) -> Figure | None:
    """Chunk count K: memory (metadata included), NE and step time."""
    runs = _varying(data, "K")
    if runs.empty:
        return None
    runs["K"] = runs["K"].astype(float)
    metrics = [m for m in (MEM, data.runs.ne_metric, "perf/step_ms_p50") if data.runs.has(m)]
    fig, axes = _panels(len(metrics))
    ks = sorted(runs["K"].unique())
    for ax, m in zip(axes, metrics):
        sns.lineplot(runs, x="K", y=m, hue="label", marker="o", errorbar="sd",
                     err_style="bars", ax=ax)
        ax.set_xscale("log", base=2)
        ax.set_xticks(ks, [f"{k:g}" for k in ks])
        _finish(ax, m)
    return fig


def _variants(data: ReportData, col: str, metrics: Sequence[str]) -> Figure | None:
    """Bars of each metric by the values of ``col``, per remaining config."""
    runs = _varying(data, col)
    metrics = [m for m in metrics if data.runs.has(m)]
    if runs.empty or not metrics:
        return None
    runs[col] = runs[col].astype(str)
    fig, axes = _panels(len(metrics), w=5.5, h=4.2)
    for ax, m in zip(axes, metrics):
        sns.barplot(runs, x="label", y=m, hue=col, errorbar="sd", capsize=0.1, ax=ax)
        if m == data.runs.ne_metric:
            _uniform_line(ax, data, runs, m)
            lo, hi = runs[m].min(), runs[m].max()
            pad = max(hi - lo, 1e-4 * abs(hi))
            ax.set_ylim(lo - pad, hi + pad)
        ax.set_xlabel("")
        ax.tick_params(axis="x", labelrotation=20, labelsize="x-small")
        _finish(ax, m)
    return fig


def utility_ablation(data: ReportData) -> Figure | None:
    return _variants(data, "utility", [data.runs.ne_metric])


def thresholds_comparison(data: ReportData) -> Figure | None:
    return _variants(data, "thresholds", [data.runs.ne_metric, MEM])


def padding_comparison(data: ReportData) -> Figure | None:
    return _variants(data, "padding", [data.runs.ne_metric, MEM, "perf/train_samples_per_s"])


def decay_sampling_heatmap(data: ReportData) -> Figure | None:
    """NE and memory over the gamma x sample-fraction grid, one row per remaining config."""
    if not {"gamma", "sample_frac"} <= set(data.runs.config_columns):
        return None
    runs = _runs(data, "gamma", exclude=("gamma", "sample_frac"))
    runs = runs[runs["sample_frac"].notna()]
    runs["cell"] = runs["gamma"].astype(str) + "/" + runs["sample_frac"].astype(str)
    runs = runs[runs.groupby("label")["cell"].transform("nunique") >= 2]
    if runs.empty:
        return None
    groups = list(runs.groupby("label", sort=False))[: MAX_PANELS // 2]
    ne = data.runs.ne_metric
    fig, axes = _panels(2 * len(groups), ncols=2, w=5.5, h=4.0)
    for i, (name, part) in enumerate(groups):
        for ax, m, fmt in ((axes[2 * i], ne, ".5g"), (axes[2 * i + 1], MEM, ".3g")):
            grid = part.pivot_table(index="gamma", columns="sample_frac", values=m,
                                    aggfunc="mean")
            sns.heatmap(grid, annot=True, fmt=fmt, cmap="viridis", ax=ax,
                        annot_kws={"fontsize": "x-small"})
            ax.set_title(f"{m}: {name}", fontsize="small")
    return fig


def kept_fraction_over_time(data: ReportData) -> Figure | None:
    """Per chunk position, the fraction of entries keeping it, at each pruning event."""
    keys = sorted((c for c in data.runs.frame.columns if _KEPT_FRAC.fullmatch(c)),
                  key=lambda c: int(_KEPT_FRAC.fullmatch(c).group(1)))
    if not keys or not any(data.runs.has(k) for k in keys):
        return None
    hist = data.history(keys)
    if hist.empty:
        return None
    hist["position"] = hist["key"].str.extract(_KEPT_FRAC.pattern, expand=False).astype(int)
    hist["label"] = label(hist, data.runs.config_columns)
    groups = list(hist.groupby("label", sort=False))[:MAX_PANELS]
    fig, axes = _panels(len(groups))
    for ax, (name, part) in zip(axes, groups):
        sns.lineplot(part, x="step", y="value", hue="position", palette="viridis",
                     marker=".", ax=ax)
        ax.set_ylabel("kept fraction")
        ax.set_ylim(-0.02, 1.02)
        _finish(ax, name)
    return fig


def throughput_ratio(data: ReportData) -> Figure | None:
    """Train samples/s of each config over uniform's (full size), measured in one experiment."""
    metric = "perf/train_samples_per_s"
    runs = _runs(data, metric, exclude=("budget",))
    if runs.empty:
        return None
    runs["ratio"] = runs[metric] / uniform_mean(data.runs, runs, metric)
    runs = runs[runs["ratio"].notna()]
    if runs.empty or uniform_runs(data.runs).empty:
        return None
    order = sorted(runs["budget"].dropna().unique(), reverse=True)
    runs["budget"] = runs["budget"].astype(float)
    fig, axes = _panels(1, w=max(6.0, 0.9 * len(order) + 4), h=4.2)
    ax = axes[0]
    sns.barplot(runs, x="budget", y="ratio", hue="label", order=order, errorbar="sd",
                capsize=0.1, ax=ax)
    ax.axhline(1.0, ls="--", color="black", lw=1)
    ax.set_ylabel("train samples/s vs uniform (full size)")
    _finish(ax, "throughput ratio to uniform")
    return fig


def kept_width_hist(data: ReportData) -> Figure | None:
    """How many rows keep each width at the end of training (dims.json), all tables together."""
    if data.runs.complete.empty:
        return None
    dims = data.dims()
    if dims.empty:
        return None
    per = dims.groupby(["run_id", "width"], as_index=False)["count"].sum()
    per["fraction"] = per["count"] / per.groupby("run_id")["count"].transform("sum")
    cols = [c for c in data.runs.config_columns if c != "budget"]
    meta = dims.drop_duplicates("run_id").set_index("run_id")
    per = per.join(meta[[*data.runs.config_columns]], on="run_id")
    per["label"] = label(per, cols)
    groups = list(per.groupby("budget", dropna=False, sort=False))
    groups.sort(key=lambda g: -g[0] if pd.notna(g[0]) else 0)
    groups = groups[:MAX_PANELS]
    fig, axes = _panels(len(groups), ncols=4, w=4.2, h=3.5)
    for ax, (budget, part) in zip(axes, groups):
        sns.lineplot(part, x="width", y="fraction", hue="label", marker="o",
                     drawstyle="steps-mid", ax=ax)
        ax.set_xlabel("kept width")
        ax.set_ylabel("fraction of rows")
        _finish(ax, f"budget {budget:g}" if pd.notna(budget) else None)
    return fig


def ne_over_time(data: ReportData) -> Figure | None:
    """Validation NE across training, one panel per method (stability, drift)."""
    if not data.runs.has("val/ne"):
        return None
    hist = data.history(["val/ne"])
    if hist.empty or hist.groupby("run_id")["step"].nunique().max() < 2:
        return None
    hist["label"] = label(hist, [c for c in data.runs.config_columns if c != "method"])
    groups = list(hist.groupby("method", dropna=False, sort=False))[:MAX_PANELS]
    fig, axes = _panels(len(groups))
    for ax, (method, part) in zip(axes, groups):
        sns.lineplot(part, x="step", y="value", hue="label", ax=ax)
        ax.set_ylabel("val/ne")
        _finish(ax, str(method))
    return fig


FIGURES: tuple[FigureSpec, ...] = (
    FigureSpec("ne_vs_memory", "NE vs total embedding memory", ne_vs_memory),
    FigureSpec("throughput_ratio", "Training throughput relative to uniform", throughput_ratio),
    FigureSpec("k_ablation", "Chunk count K: memory, NE, step time", k_ablation),
    FigureSpec("utility_ablation", "Utility variants", utility_ablation),
    FigureSpec("decay_sampling_heatmap", "Decay gamma x sample fraction", decay_sampling_heatmap),
    FigureSpec("thresholds_comparison", "Manual vs adaptive thresholds", thresholds_comparison),
    FigureSpec("kept_fraction_over_time", "Kept fraction per chunk position over training",
               kept_fraction_over_time),
    FigureSpec("padding_comparison", "Zero padding vs projection", padding_comparison),
    FigureSpec("kept_width_hist", "Kept-width histograms at the end of training",
               kept_width_hist),
    FigureSpec("ne_over_time", "Validation NE over training", ne_over_time),
)
