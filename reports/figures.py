"""Seaborn figures, each drawn only when the experiment holds the data it needs.

Every draw function takes a :class:`ReportData` and returns a matplotlib ``Figure`` or None.
Figures are built with the object API (``Figure()``, no pyplot), so drawing needs no GUI
backend, leaks no global figure state, and the same code renders inline in a notebook.
"""
from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure

from reports.data import ReportData
from reports.palette import colors, fraction, metric_label
from reports.plotting import (bytes_axis, label, method_lines, one_legend,
                              panel_title, panels, usual_values)
from reports.tables import uniform_mean, uniform_runs

MEM = "mem/total_bytes"
MAX_PANELS = 12
# the brief's name (prune/kept_frac/pos{k}) and the harness's (prune/kept_frac_pos{k})
KEPT_FRAC = re.compile(r"prune/kept_frac[/_]pos(\d+)")


@dataclass(frozen=True)
class FigureSpec:
    name: str          # file stem and key into claims.OUTPUT_CLAIMS
    title: str
    draw_fn: Callable[[ReportData], Figure | None]
    claim: str = ""    # the question the figure answers, with the claim ids it tests

    def draw(self, data: ReportData) -> Figure | None:
        with sns.axes_style("whitegrid"), sns.plotting_context("notebook", font_scale=0.85):
            fig = self.draw_fn(data)
        if fig is not None:  # wrapped to the figure's width, so a narrow figure shows it all
            width = max(40, int(fig.get_figwidth() * 8))
            text = "\n".join([*textwrap.wrap(self.claim or self.title, width), where(data)])
            fig.suptitle(text, fontsize="medium")
        return fig


def where(data: ReportData) -> str:
    """"experiment compare, data synthetic_criteo": which runs a figure shows."""
    c = data.runs.complete
    ds = sorted(map(str, c["dataset"].dropna().unique())) if "dataset" in c else []
    return f"experiment {data.experiment}" + (f", data {', '.join(ds)}" if ds else "")


def draw_all(data: ReportData, out_dir: Path | None = None, dpi: int = 100,
             log: Callable[[str], None] = lambda s: None) -> dict[str, Figure | Path]:
    """Draw every figure the data supports; with ``out_dir``, save PNGs and return their paths."""
    out = {}
    for spec in FIGURES:
        fig = spec.draw(data)
        if fig is None:
            log(f"  skip {spec.name}: experiment lacks the data")
            if out_dir is not None:   # a PNG from an earlier report would now mislead
                (out_dir / f"{spec.name}.png").unlink(missing_ok=True)
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

def _runs(data: ReportData, col: str | None = None, exclude: Sequence[str] = ()) -> pd.DataFrame:
    """Complete runs (with ``col`` set), labelled by their config without ``exclude``."""
    runs = data.runs.complete.copy()
    if col is not None:
        if col not in runs:
            return runs.iloc[:0]
        runs = runs[runs[col].notna()]
    cols = [c for c in data.runs.config_columns if c not in exclude]
    runs["label"] = label(runs, cols, usual_values(data))
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
    fig, axes = panels(len(groups), ncols=2, w=6.0, h=4.4)
    pal = colors(runs["label"])
    for ax, (ds, part) in zip(axes, groups):
        method_lines(part, "memory", ne, pal, ax, errorbar="sd", err_style="bars")
        _uniform_line(ax, data, part, ne)
        if data.runs.has("bayes_ne") and part["bayes_ne"].notna().any():
            ax.axhline(part["bayes_ne"].mean(), ls=":", color="gray", lw=1, label="Bayes NE")
        bytes_axis(ax, part["memory"])
        ax.set_xlabel("total embedding memory (log)")
        ax.set_ylabel(metric_label(ne))
        panel_title(ax, f"{metric_label(ne)} vs total memory{'' if pd.isna(ds) else f' ({ds})'}")
    return one_legend(fig, axes)


def k_ablation(data: ReportData) -> Figure | None:
    """Chunk count K: memory (metadata included), NE and step time."""
    runs = _varying(data, "K")
    if runs.empty:
        return None
    runs["K"] = runs["K"].astype(float)
    metrics = [m for m in (MEM, data.runs.ne_metric, "perf/step_ms_p50") if data.runs.has(m)]
    fig, axes = panels(len(metrics))
    ks = sorted(runs["K"].unique())
    pal = colors(runs["label"])
    for ax, m in zip(axes, metrics):
        method_lines(runs, "K", m, pal, ax, errorbar="sd", err_style="bars")
        ax.set_xscale("log", base=2)
        ax.set_xticks(ks, [f"{k:g}" for k in ks])
        panel_title(ax, m)
    return one_legend(fig, axes)


def _variants(data: ReportData, col: str, metrics: Sequence[str],
              companions: Sequence[str] = ()) -> Figure | None:
    """Bars of each metric by the values of ``col``, per remaining config. ``companions`` are
    fields that only make sense with ``col`` (manual ratios with manual thresholds): they
    name the variant instead of splitting the configs it is compared within."""
    companions = [c for c in companions if c in data.runs.config_columns]
    runs = _varying(data, col, exclude=companions)
    metrics = [m for m in metrics if data.runs.has(m)]
    if runs.empty or not metrics:
        return None
    runs["variant"] = runs[col].astype(str)
    for c in companions:
        extra = runs[c].map(lambda v: "" if pd.isna(v) or str(v) in ("[]", "") else f" {v}")
        runs["variant"] = runs["variant"] + extra
    fig, axes = panels(len(metrics))
    levels = sorted(runs["variant"].unique())  # variants of one knob, not methods: Set2
    pal = dict(zip(levels, sns.color_palette("Set2", n_colors=max(len(levels), 1))))
    for ax, m in zip(axes, metrics):
        sns.barplot(runs, x="label", y=m, hue="variant", palette=pal, hue_order=list(pal),
                    saturation=1,
                    errorbar="sd", capsize=0.1, ax=ax)
        if m == data.runs.ne_metric:
            _uniform_line(ax, data, runs, m)
            ref = uniform_mean(data.runs, runs, m)
            lo, hi = min(runs[m].min(), ref.min()), max(runs[m].max(), ref.max())
            pad = max(hi - lo, 1e-4 * abs(hi))
            ax.set_ylim(lo - pad, hi + pad)
        ax.set_xlabel("")
        ax.tick_params(axis="x", labelrotation=15, labelsize="x-small")
        panel_title(ax, m)
    return one_legend(fig, axes, title=col)


def utility_ablation(data: ReportData) -> Figure | None:
    return _variants(data, "utility", [data.runs.ne_metric])


def thresholds_comparison(data: ReportData) -> Figure | None:
    return _variants(data, "thresholds", [data.runs.ne_metric, MEM],
                     companions=("method.manual_ratios",))


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
    fig, axes = panels(2 * len(groups), ncols=2, w=5.0, h=3.6)
    for i, (name, part) in enumerate(groups):
        for ax, m, fmt in ((axes[2 * i], ne, ".5g"), (axes[2 * i + 1], MEM, ".3g")):
            grid = part.pivot_table(index="gamma", columns="sample_frac", values=m,
                                    aggfunc="mean")
            sns.heatmap(grid, annot=True, fmt=fmt, cmap="viridis", ax=ax,
                        annot_kws={"fontsize": "x-small"})
            panel_title(ax, f"{m}: {name}")
    return fig


def kept_fraction_over_time(data: ReportData) -> Figure | None:
    """Per chunk position, the fraction of entries keeping it, at each pruning event."""
    keys = sorted((c for c in data.runs.frame.columns if KEPT_FRAC.fullmatch(c)),
                  key=lambda c: int(KEPT_FRAC.fullmatch(c).group(1)))
    if not keys or not any(data.runs.has(k) for k in keys):
        return None
    hist = data.history(keys)
    if hist.empty:
        return None
    hist["position"] = hist["key"].str.extract(KEPT_FRAC.pattern, expand=False).astype(int)
    hist["label"] = label(hist, data.runs.config_columns, usual_values(data))
    groups = list(hist.groupby("label", sort=False))[:MAX_PANELS]
    positions = sorted(hist["position"].unique())
    pal = dict(zip(positions, sns.color_palette("viridis", n_colors=len(positions))))
    fig, axes = panels(len(groups), ncols=4, w=3.6, h=2.8)
    for ax, (name, part) in zip(axes, groups):
        sns.lineplot(part, x="step", y="value", hue="position", palette=pal, ax=ax)
        ax.set_ylabel("kept fraction")
        ax.set_ylim(-0.02, 1.02)
        panel_title(ax, name)
    return one_legend(fig, axes, title="chunk position")


def throughput_ratio(data: ReportData) -> Figure | None:
    """Train samples/s of each config over uniform's (full size), measured in one experiment."""
    metric = "perf/train_samples_per_s"
    runs = _runs(data, metric, exclude=("budget",))
    if runs.empty or uniform_runs(data.runs).empty:
        return None
    runs["ratio"] = runs[metric] / uniform_mean(data.runs, runs, metric)
    runs = runs[runs["ratio"].notna()]
    if runs.empty:
        return None
    order = sorted(runs["budget"].dropna().unique(), reverse=True)
    fig, axes = panels(1, w=max(5.0, 0.8 * len(order) + 3.5), h=4.0)
    ax = axes[0]
    sns.barplot(runs, x="budget", y="ratio", hue="label", palette=colors(runs["label"]),
                saturation=1,  # the palette's colours as they are, as in the line figures
                order=order, errorbar="sd", capsize=0.1, ax=ax)
    ax.set_xticks(range(len(order)), [fraction(b) for b in order])
    ax.set_xlabel("budget (fraction of uniform weight bytes)")
    ax.axhline(1.0, ls="--", color="black", lw=1)
    ax.set_ylabel("train samples/s vs uniform (full size)")
    panel_title(ax, "throughput ratio to uniform")
    return one_legend(fig, axes)


def kept_width_hist(data: ReportData) -> Figure | None:
    """How many rows keep each width at the end of training (dims.json), all tables together."""
    if data.runs.complete.empty:
        return None
    dims = data.dims()
    if dims.empty:
        return None
    per = dims.groupby(["run_id", "width"], as_index=False)["count"].sum()
    per["fraction"] = per["count"] / per.groupby("run_id")["count"].transform("sum")
    per = per[per.groupby("width")["count"].transform("sum") > 0]   # widths some row keeps
    meta = dims.drop_duplicates("run_id").set_index("run_id")[data.runs.config_columns]
    per = per.join(meta, on="run_id")
    cols = [c for c in data.runs.config_columns if c != "budget"]
    per["label"] = label(per, cols, usual_values(data))
    groups = sorted(per.groupby("budget", dropna=False),
                    key=lambda g: -g[0] if pd.notna(g[0]) else 0)[:MAX_PANELS]
    fig, axes = panels(len(groups), ncols=3, w=4.6, h=3.4)
    pal = colors(per["label"])
    widths = sorted(per["width"].unique())
    for ax, (budget, part) in zip(axes, groups):
        sns.barplot(part, x="width", y="fraction", hue="label", palette=pal, order=widths,
                    saturation=1,
                    ax=ax)
        ax.set_xlabel("kept width")
        ax.set_ylabel("fraction of rows")
        panel_title(ax, f"budget {fraction(budget)}" if pd.notna(budget) else "budget unknown")
    return one_legend(fig, axes)


def ne_over_time(data: ReportData) -> Figure | None:
    """Validation NE across training, one panel per method (stability, drift)."""
    if not data.runs.has("val/ne"):
        return None
    hist = data.history(["val/ne"])
    if hist.empty or hist.groupby("run_id")["step"].nunique().max() < 2:
        return None
    hist["label"] = label(hist, data.runs.config_columns, usual_values(data))
    groups = list(hist.groupby("method", dropna=False, sort=False))[:MAX_PANELS]
    # one y axis for all panels: "which method degrades least" is read across them
    fig, axes = panels(len(groups), sharey=True)
    pal = colors(hist["label"])
    for ax, (method, part) in zip(axes, groups):
        method_lines(part, "step", "value", pal, ax, markersize=3)
        ax.set_ylabel(metric_label("val/ne"))
        ax.yaxis.set_tick_params(labelleft=True)
        panel_title(ax, str(method))
    return one_legend(fig, axes)


FIGURES: tuple[FigureSpec, ...] = (
    FigureSpec("ne_vs_memory", "NE vs total embedding memory", ne_vs_memory,
               "C1, C3, C4: at equal total embedding memory, is FIITED's NE below every "
               "baseline's?"),
    FigureSpec("throughput_ratio", "Training throughput relative to uniform", throughput_ratio,
               "C5: does FIITED train faster than the baselines (samples/s vs uniform)?"),
    FigureSpec("k_ablation", "Chunk count K: memory, NE, step time", k_ablation,
               "C7: does a larger chunk count K buy memory and NE for step time?"),
    FigureSpec("utility_ablation", "Utility variants", utility_ablation,
               "C6: does frequency x gradient utility beat frequency alone?"),
    FigureSpec("decay_sampling_heatmap", "Decay gamma x sample fraction", decay_sampling_heatmap,
               "C10: how sensitive is FIITED to the decay gamma and the sample fraction m?"),
    FigureSpec("thresholds_comparison", "Manual vs adaptive thresholds", thresholds_comparison,
               "C9: do adaptive per-position thresholds beat fixed manual ratios?"),
    FigureSpec("kept_fraction_over_time", "Kept fraction per chunk position over training",
               kept_fraction_over_time,
               "C9, C11: do the kept fractions differ by chunk position and drift in training?"),
    FigureSpec("padding_comparison", "Zero padding vs projection", padding_comparison,
               "C8: does zero padding reach projection's NE at less cost?"),
    FigureSpec("kept_width_hist", "Kept-width histograms at the end of training",
               kept_width_hist,
               "C1: do rows end training with different widths (some keep more dimensions)?"),
    FigureSpec("ne_over_time", "Validation NE over training", ne_over_time,
               "C11: over long training on drifting data, whose NE degrades least?"),
)
