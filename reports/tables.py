"""Tables: per-config mean +- std over seeds, and the largest compression within an NE tolerance.

Uniform at budget 1.0 is the reference everywhere (NE deltas, throughput ratios), seed-averaged
and taken from the same experiment (per dataset when the experiment spans datasets), so every
ratio compares runs made by one harness on one machine. A reference borrowed from another
experiment (``fiited-report --reference``) serves the quality deltas, never the speed ratios.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from reports.palette import fraction, human_bytes
from reports.runs import RunTable

UNIFORM = "uniform"
TOLERANCES_PCT = (0.1, 0.5)
SUMMARY_METRICS = (
    "val/ne", "val/auc", "test/ne", "test/auc", "mem/total_bytes", "mem/weights_bytes",
    "mem/train_peak_bytes", "mem/compression", "mem/total_compression",
    "perf/train_samples_per_s", "perf/step_ms_p50", "prune/event_seconds",
)
SPEED_RATIO = "train_speed_vs_uniform"
NE_DELTA = "ne_delta_pct"


def reference_keys(table: RunTable) -> list[str]:
    """Columns the uniform reference is matched on: a reference per dataset if datasets vary."""
    return [c for c in ("dataset",) if c in table.config_columns]


def uniform_runs(table: RunTable) -> pd.DataFrame:
    c = table.complete
    return c[(c["method"] == UNIFORM) & np.isclose(c["budget"].astype(float), 1.0)]


def uniform_mean(table: RunTable, frame: pd.DataFrame, metric: str) -> pd.Series:
    """For each row of ``frame``: the seed-averaged ``metric`` of uniform at budget 1.0 (or NaN).

    Borrowed reference runs carry no ``perf/*`` (``runs.with_reference`` drops it), so speed is
    only ever compared with uniform runs of the same experiment.
    """
    ref = uniform_runs(table)
    if metric not in ref or ref[metric].isna().all():
        return pd.Series(np.nan, index=frame.index)
    keys = reference_keys(table)
    if not keys:
        return pd.Series(ref[metric].mean(), index=frame.index)
    means = ref.groupby(keys, dropna=False)[metric].mean().rename("_ref")
    return frame[keys].join(means, on=keys)["_ref"]


def config_summary(table: RunTable) -> pd.DataFrame:
    """One row per config: the seeds it ran, then mean and std over seeds of each metric."""
    cols = table.config_columns
    runs = table.complete.copy()
    if runs.empty:
        return pd.DataFrame(columns=[*cols, "n_runs", "seeds"])
    ne = table.ne_metric
    runs[SPEED_RATIO] = runs["perf/train_samples_per_s"] / uniform_mean(
        table, runs, "perf/train_samples_per_s")
    runs[NE_DELTA] = 100.0 * (runs[ne] / uniform_mean(table, runs, ne) - 1.0)
    g = runs.groupby(cols, dropna=False, sort=False)
    out = g.agg(n_runs=("run_id", "size"),
                seeds=("seed", lambda s: " ".join(str(v) for v in sorted(s.dropna()))))
    for m in (*SUMMARY_METRICS, SPEED_RATIO, NE_DELTA):
        if m in runs and runs[m].notna().any():
            out[f"{m} mean"] = g[m].mean()
            out[f"{m} std"] = g[m].std()
    out = out.reset_index()
    return out.sort_values(cols, ascending=[c != "budget" for c in cols], na_position="last",
                           kind="stable").reset_index(drop=True)


def compression_within(table: RunTable, summary: pd.DataFrame,
                       tolerances_pct=TOLERANCES_PCT) -> pd.DataFrame:
    """Per method (and dataset): the config with the largest weight compression whose
    seed-averaged NE is within ``tol`` % of uniform's; NaN where no config qualifies."""
    ne, auc = table.ne_metric, table.ne_metric.replace("/ne", "/auc")
    keys = ["method", *reference_keys(table)]
    cols = [c for c in table.config_columns if c not in keys]
    comp, tcomp = "mem/compression mean", "mem/total_compression mean"
    rows = []
    if summary.empty or f"{NE_DELTA} mean" not in summary:
        return pd.DataFrame(columns=[*keys, "tolerance_pct", *cols, "compression"])
    auc_ref = uniform_mean(table, summary, auc) if auc in table.frame else None
    for tol in tolerances_pct:
        for key, group in summary.groupby(keys, dropna=False, sort=False):
            row = dict(zip(keys, key if isinstance(key, tuple) else (key,)))
            row["tolerance_pct"] = tol
            ok = group[group[f"{NE_DELTA} mean"] <= tol]
            if comp in ok:
                ok = ok[ok[comp].notna()]
            if ok.empty:
                row["note"] = "no config within tolerance"
                rows.append(row)
                continue
            best = ok.loc[ok[comp].idxmax()] if comp in ok else ok.iloc[0]
            row.update({c: best[c] for c in cols})
            row.update({
                "compression": best.get(comp, np.nan),
                "total_compression": best.get(tcomp, np.nan),
                "ne": best[f"{ne} mean"],
                NE_DELTA: best[f"{NE_DELTA} mean"],
                "auc_delta": (best[f"{auc} mean"] - auc_ref[best.name]
                              if auc_ref is not None and f"{auc} mean" in best else np.nan),
                "n_runs": best["n_runs"], "note": "",
            })
            rows.append(row)
    order = [*keys, "tolerance_pct", *cols, "compression", "total_compression", "ne", NE_DELTA,
             "auc_delta", "n_runs", "note"]
    return pd.DataFrame(rows, columns=order)


def write_table(frame: pd.DataFrame, directory: Path, name: str) -> tuple[Path, Path]:
    """``name.csv`` (every number, machine-readable) and ``name.md`` (mean +- std, for reading)."""
    directory.mkdir(parents=True, exist_ok=True)
    csv, md = directory / f"{name}.csv", directory / f"{name}.md"
    frame.to_csv(csv, index=False)
    md.write_text(to_markdown(frame) + "\n")
    return csv, md


def to_markdown(frame: pd.DataFrame) -> str:
    """A GitHub-flavoured Markdown table; ``x mean`` / ``x std`` pairs become ``x`` = mean +- std."""
    cols, cells = [], []
    for c in frame.columns:
        if c.endswith(" std") and f"{c[:-4]} mean" in frame:
            continue
        if c.endswith(" mean"):
            base, std = c[:-5], frame.get(f"{c[:-5]} std")
            cols.append(base)
            cells.append([_fmt(m) + (f" ± {_fmt(s, 2)}" if _present(s) else "")
                          for m, s in zip(frame[c], std if std is not None else [None] * len(frame))])
        elif c == "budget":
            cols.append(c)
            cells.append([fraction(v) if _present(v) else "" for v in frame[c]])
        else:
            cols.append(c)
            cells.append([_fmt(v) for v in frame[c]])
    if not cols:
        return "(empty)"
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(row) + " |" for row in zip(*cells)]
    if frame.empty:
        lines.append("| " + " | ".join("" for _ in cols) + " |")
    return "\n".join(lines)


def _present(v) -> bool:
    return v is not None and not (isinstance(v, float) and math.isnan(v)) and v is not pd.NA


def _fmt(v, digits: int = 6) -> str:
    """Large numbers (bytes, samples/s) with thousands separators, others to ``digits``
    significant digits; float noise around zero prints as 0."""
    if not _present(v):
        return ""
    if isinstance(v, (bool, np.bool_)):
        return str(bool(v))
    if isinstance(v, (float, np.floating)):
        if abs(v) < 1e-12:
            return "0"
        return f"{v:,.0f}" if abs(v) >= 1e4 else f"{v:.{digits}g}"
    return str(v).replace("|", "\\|")


# (column of config_summary, header, format) for the short view a reader scans first
TIDY = (("val/ne", "val NE", "{:.4f}"), ("test/ne", "test NE", "{:.4f}"),
        (NE_DELTA, "NE vs uniform %", "{:+.2f}"), ("mem/total_bytes", "total memory", "bytes"),
        ("mem/total_compression", "total x smaller", "{:.1f}"),
        ("mem/compression", "weights x smaller", "{:.1f}"),
        ("perf/train_samples_per_s", "train samples/s", "{:,.0f}"))


def tidy_summary(summary: pd.DataFrame, config_columns) -> pd.DataFrame:
    """config_summary as a reader scans it: the config, budget as a fraction, then
    mean ± std of NE, memory and speed in units (the full table stays in the CSV)."""
    out = pd.DataFrame(index=summary.index)
    for c in config_columns:
        if c in summary:
            out[c.removeprefix("method.")] = (summary[c].map(fraction) if c == "budget"
                                              else summary[c])
    if "seeds" in summary:
        out["seeds"] = summary["seeds"]
    for key, head, fmt in TIDY:
        if f"{key} mean" not in summary:
            continue
        mean, std = summary[f"{key} mean"], summary.get(f"{key} std")
        out[head] = [_tidy(m, fmt) + (f" ± {_tidy(s, fmt)}" if _present(s) and s > 0 and
                                      fmt != "bytes" else "")
                     for m, s in zip(mean, std if std is not None else [None] * len(mean))]
    return out.reset_index(drop=True)


def _tidy(v, fmt: str) -> str:
    if not _present(v):
        return "-"
    if fmt == "bytes":
        return human_bytes(float(v))
    return fmt.format(v)

