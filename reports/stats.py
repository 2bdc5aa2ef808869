"""Paired-by-seed statistics and verdicts: how sure a report may be of a difference.

The runs of one sweep share data order and initialisation per seed, so two methods are compared
on the per-seed difference of their metrics (a paired design); the interval is Student t over
seeds. A verdict says whether a claim of the form "delta < margin" holds, fails or is undecided
(the interval straddles the margin). Every function takes a frame of complete runs with columns
``method``, ``budget``, ``seed`` and the metrics (``dataset`` optional), so it can be tested on a
hand-made table and used on any :class:`reports.runs.RunTable` (``.complete``).
"""
from __future__ import annotations

from fractions import Fraction
from typing import Sequence

import numpy as np
import pandas as pd
from scipy import stats as _st

from reports.runs import value_text

UNIFORM = "uniform"
LEVEL = 0.95
INTERVAL = "95% Student t interval over seeds of the per-seed (paired) difference"
VERDICT_RULE = (
    "A claim is tested as 'delta < margin' per cell (dataset x method x budget), where delta is "
    "the per-seed paired difference (method minus reference; lower NE is better) and the "
    f"interval is the {INTERVAL}. A cell holds if the whole interval lies below the margin, "
    "fails if it lies wholly above it, and is undecided if it straddles the margin (or has "
    "fewer than 2 paired seeds). Over the cells of one dataset a claim holds if every cell "
    "holds, fails if any cell fails, and is undecided otherwise.")
HOLDS, FAILS, UNDECIDED = "holds", "fails", "undecided"
DELTA_COLUMNS = ["n", "mean", "std", "lo", "hi"]
_NOT_VARIANT = ("method", "budget", "dataset", "seed")


def variant_columns(config_columns: Sequence[str]) -> list[str]:
    """Config columns that tell two variants of one method apart (``K``...): not the method,
    budget or dataset, and no ``data.*`` param (those follow the dataset)."""
    return [c for c in config_columns if c not in _NOT_VARIANT and not c.startswith("data.")]


def with_variant(runs: pd.DataFrame, variant_cols: Sequence[str] = ()) -> pd.DataFrame:
    """``runs`` plus ``variant`` and a ``dataset`` column (``-`` where the frame has none).

    ``variant`` is the method plus ``key=value`` for each variant column whose value differs
    from the method's usual one (its most common; every value is shown where two tie), so an
    ablation reads ``fiited`` / ``fiited K=2`` and K=2 vs K=4 runs read ``fiited K=2`` /
    ``fiited K=4``.
    """
    out = runs.copy()
    if "dataset" not in out:
        out["dataset"] = "-"
    out["dataset"] = out["dataset"].fillna("-").astype(str)
    label = out["method"].astype(str)
    for c in variant_cols:
        if c not in out:
            continue
        text = out[c].map(value_text).where(out[c].notna())
        shown = text.notna()
        for method, values in text.groupby(out["method"]):     # a handful of methods
            counts = values.value_counts()
            if len(counts) < 2:
                shown[values.index] = False          # one value for the method: says nothing
            elif counts.iloc[0] > counts.iloc[1]:
                shown[values.index] &= values != counts.index[0]
        label = label.where(~shown, label + " " + c.rsplit(".", 1)[-1] + "=" + text)
    out["variant"] = label
    return out


def t_interval(values, level: float = LEVEL) -> tuple[float, float, float]:
    """(mean, lo, hi) of ``values`` with the Student t interval (NaN bounds below 2 values)."""
    s = t_summary(pd.Series(np.asarray(values, dtype=float)).groupby(lambda _: 0), level)
    if s.empty:
        return (np.nan, np.nan, np.nan)
    r = s.iloc[0]
    return (float(r["mean"]), float(r["lo"]), float(r["hi"]))


def t_summary(values: pd.core.groupby.SeriesGroupBy, level: float = LEVEL) -> pd.DataFrame:
    """Per group: n, mean, std and the Student t interval (lo, hi) of the mean."""
    agg = values.agg(["count", "mean", "std"]).rename(columns={"count": "n"})
    n = agg["n"].to_numpy(dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        q = np.where(n > 1, _st.t.ppf(0.5 + level / 2, np.maximum(n - 1, 1)), np.nan)
        half = q * agg["std"].to_numpy(dtype=float) / np.sqrt(n)
    agg["lo"] = agg["mean"] - half
    agg["hi"] = agg["mean"] + half
    agg["n"] = agg["n"].astype(int)
    return agg[DELTA_COLUMNS]


def paired(runs: pd.DataFrame, reference: pd.DataFrame, metric: str,
           relative: bool = False) -> pd.DataFrame:
    """``runs`` with ``delta`` = metric minus ``reference``'s metric of the same dataset and
    seed (in % of the reference's with ``relative``); runs without a paired seed are dropped.
    ``reference`` holds one run per dataset and seed (more are averaged)."""
    ref = reference.groupby(["dataset", "seed"])[metric].mean().rename("_ref")
    out = runs.join(ref, on=["dataset", "seed"], how="inner")
    d = out[metric] - out["_ref"]
    out["delta"] = 100.0 * d / out["_ref"] if relative else d
    return out.drop(columns="_ref").dropna(subset=["delta"])


def full_uniform(runs: pd.DataFrame) -> pd.DataFrame:
    """The reference runs: uniform at budget 1.0."""
    return runs[(runs["method"] == UNIFORM) & np.isclose(runs["budget"].astype(float), 1.0)]


def delta_to_uniform(runs: pd.DataFrame, metric: str, variant_cols: Sequence[str] = (),
                     relative: bool = False) -> pd.DataFrame:
    """Per dataset x variant x budget: the paired delta of ``metric`` to uniform at full size
    (same dataset, same seed), as n, mean, std and the t interval (lo, hi)."""
    runs = with_variant(runs, variant_cols)
    ref = full_uniform(runs)
    d = paired(runs, ref, metric, relative)
    keys = ["dataset", "variant", "method", "budget"]
    if d.empty:
        return pd.DataFrame(columns=[*keys, *DELTA_COLUMNS])
    out = t_summary(d.groupby(keys, sort=False)["delta"]).reset_index()
    return _order(out, keys)


MEMORY_METRIC = "mem/total_bytes"
MEMORY_TOLERANCE = 0.05


def best_reference(runs: pd.DataFrame, metric: str, candidates: Sequence[str] | None = None,
                   exclude_method: str | None = None,
                   max_memory: pd.Series | None = None) -> pd.DataFrame:
    """Per dataset x budget: the variant with the lowest seed-mean ``metric`` among the
    ``candidates`` methods (default: all), leaving out ``exclude_method``; its runs.

    ``max_memory`` (per dataset x budget): only variants whose seed-mean total memory is at
    most that are eligible, so a method held above its nominal budget (uniform at its one-dim
    floor, mixed-dim with its projections) is not taken as "equal memory"."""
    pool = runs
    if candidates is not None:
        pool = pool[pool["method"].isin(candidates)]
    if exclude_method is not None:
        pool = pool[pool["method"] != exclude_method]
    if pool.empty:
        return pool.assign(reference=pd.Series(dtype=str))
    if max_memory is not None and MEMORY_METRIC in pool:
        mem = pool.groupby(["dataset", "budget", "variant"], sort=False)[MEMORY_METRIC].mean()
        cap = max_memory.reindex(mem.index.droplevel("variant")).to_numpy()
        fits = mem[~(mem.to_numpy() > cap)].index         # no cap known: eligible
        pool = pool.set_index(["dataset", "budget", "variant"]).loc[
            lambda f: f.index.isin(fits)].reset_index()
        if pool.empty:
            return pool.assign(reference=pd.Series(dtype=str))
    means = pool.groupby(["dataset", "budget", "variant"], sort=False)[metric].mean()
    best = means.reset_index().sort_values(metric, kind="stable").drop_duplicates(
        ["dataset", "budget"])[["dataset", "budget", "variant"]]
    chosen = pool.merge(best, on=["dataset", "budget", "variant"])
    return chosen.assign(reference=chosen["variant"])


def delta_to_best(runs: pd.DataFrame, metric: str, methods: Sequence[str] | None = None,
                  candidates: Sequence[str] | None = None, variant_cols: Sequence[str] = (),
                  relative: bool = False) -> pd.DataFrame:
    """At equal memory: per dataset x variant x budget of ``methods`` (default: all), the
    paired delta to the best other method's variant among ``candidates`` (default: every other
    method) at the same budget, chosen by seed-mean ``metric``; ``reference`` names it.

    "Equal memory" is checked, not assumed from the nominal budget: a reference is eligible
    only if its seed-mean ``mem/total_bytes`` (when the runs have it) is at most
    (1 + ``MEMORY_TOLERANCE``) x the tested variant's. A cell without an eligible reference is
    left out (nothing else fits in that memory)."""
    runs = with_variant(runs, variant_cols)
    keys = ["dataset", "variant", "method", "budget"]
    rows = []
    tested = runs if methods is None else runs[runs["method"].isin(methods)]
    for (method, variant), own in tested.groupby(["method", "variant"], sort=False):
        cap = None
        if MEMORY_METRIC in own:
            cap = own.groupby(["dataset", "budget"])[MEMORY_METRIC].mean() * (
                1 + MEMORY_TOLERANCE)
        ref = best_reference(runs, metric, candidates, exclude_method=method, max_memory=cap)
        if ref.empty:
            continue
        names = ref.groupby(["dataset", "budget"])["reference"].first()
        for (dataset, budget), grp in own.groupby(["dataset", "budget"], sort=False):
            if (dataset, budget) not in names.index:
                continue
            r = ref[(ref["dataset"] == dataset) & (ref["budget"] == budget)]
            d = paired(grp, r, metric, relative)
            if d.empty:
                continue
            s = t_summary(d.groupby(keys, sort=False)["delta"]).reset_index()
            rows.append(s.assign(reference=names[(dataset, budget)]))
    if not rows:
        return pd.DataFrame(columns=[*keys, "reference", *DELTA_COLUMNS])
    out = pd.concat(rows, ignore_index=True)
    return _order(out[[*keys, "reference", *DELTA_COLUMNS]], keys)


def paired_summary(runs: pd.DataFrame, ne_metric: str, config_columns: Sequence[str] = ()
                   ) -> pd.DataFrame:
    """The report's table of paired deltas, one row per dataset x variant x budget: NE and AUC
    deltas to uniform at full size and the NE delta to the best other method at the same
    budget, each as mean and t interval (``<name> mean`` / ``lo`` / ``hi``) over ``n`` seeds."""
    vcols = variant_columns(config_columns)
    keys = ["dataset", "variant", "method", "budget"]
    parts = [("ne_vs_uniform", delta_to_uniform(runs, ne_metric, vcols))]
    auc = ne_metric.replace("/ne", "/auc")
    if auc in runs and runs[auc].notna().any():
        parts.append(("auc_vs_uniform", delta_to_uniform(runs, auc, vcols)))
    best = delta_to_best(runs, ne_metric, variant_cols=vcols)
    parts.append(("ne_vs_best_other", best))
    out = None
    for name, d in parts:
        d = d.rename(columns={"mean": f"{name} mean", "lo": f"{name} lo", "hi": f"{name} hi",
                              "n": f"{name} n", "reference": "best_other"})
        d = d.drop(columns="std")
        out = d if out is None else out.merge(d, on=keys, how="outer")
    if out is None or out.empty:
        return pd.DataFrame(columns=keys)
    return _order(out, keys)


def verdict(lo, hi, margin: float = 0.0) -> np.ndarray:
    """Per cell of a claim 'delta < margin': holds (hi < margin), fails (lo > margin), else
    undecided (the interval straddles the margin, or there is none)."""
    lo, hi = np.asarray(lo, dtype=float), np.asarray(hi, dtype=float)
    out = np.full(lo.shape, UNDECIDED, dtype=object)
    out[hi < margin] = HOLDS
    out[lo > margin] = FAILS
    return out


def combine(verdicts: Sequence[str]) -> str:
    """Over one dataset's cells: fails if any cell fails, holds if all hold, else undecided."""
    v = list(verdicts)
    if not v:
        return UNDECIDED
    if FAILS in v:
        return FAILS
    return HOLDS if all(x == HOLDS for x in v) else UNDECIDED


def seed_noise(runs: pd.DataFrame, metric: str, variant_cols: Sequence[str] = ()
               ) -> pd.DataFrame:
    """Per dataset x variant: seed-to-seed noise of ``metric`` over its configs (budgets):
    configs, seeds per config, pooled std (root mean variance), largest std and largest
    max-min spread between seeds of one config."""
    runs = with_variant(runs, variant_cols)
    g = runs.groupby(["dataset", "variant", "budget"], sort=False)[metric]
    per = pd.DataFrame({"n": g.count(), "var": g.var(), "spread": g.max() - g.min()})
    per = per[per["n"] > 1].reset_index()
    cols = ["dataset", "variant", "configs", "seeds", "pooled_std", "max_std", "max_spread"]
    if per.empty:
        return pd.DataFrame(columns=cols)
    h = per.groupby(["dataset", "variant"], sort=False)
    out = pd.DataFrame({"configs": h.size(), "seeds": h["n"].max(),
                        "pooled_std": np.sqrt(h["var"].mean()), "max_std": np.sqrt(h["var"].max()),
                        "max_spread": h["spread"].max()}).reset_index()
    return out[cols]


def noise_note(runs: pd.DataFrame, metric: str, variant_cols: Sequence[str] = ()) -> str:
    """One line for under a figure: the seed-to-seed std of ``metric`` pooled over every
    config, and the config whose seeds differ most."""
    runs = with_variant(runs, variant_cols)
    g = runs.groupby(["dataset", "variant", "budget"], sort=False)[metric]
    per = pd.DataFrame({"n": g.count(), "var": g.var(), "spread": g.max() - g.min()})
    per = per[per["n"] > 1]
    if per.empty:
        return f"seed noise of {metric}: not measurable (no config ran with 2 or more seeds)"
    worst = per["spread"].idxmax()
    where = f"{worst[1]} at budget {fmt_budget(worst[2])}" + (
        f" on {worst[0]}" if runs["dataset"].nunique() > 1 else "")
    return (f"seed noise of {metric}: std {np.sqrt(per['var'].mean()):.4f} pooled over "
            f"{len(per)} configs of {int(per['n'].min())}-{int(per['n'].max())} seeds; the "
            f"largest seed-to-seed spread is {per['spread'].max():.4f} ({where})")


def fmt_budget(b) -> str:
    """1.0 -> ``1``, 0.0625 -> ``1/16``, 0.35 -> ``0.35``."""
    b = float(b)
    if b > 0 and b < 1 and float(1 / b).is_integer():
        return f"1/{int(round(1 / b))}"
    f = Fraction(b).limit_denominator(1000)
    return str(f.numerator) if f.denominator == 1 else f"{b:g}"


def fmt_interval(mean: float, lo: float, hi: float, digits: int = 4) -> str:
    """``-0.0031 [-0.0045, -0.0017]``; the interval is omitted where there is none."""
    if not np.isfinite(lo) or not np.isfinite(hi):
        return f"{mean:+.{digits}f} [no interval]"
    return f"{mean:+.{digits}f} [{lo:+.{digits}f}, {hi:+.{digits}f}]"


def _order(frame: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    return frame.sort_values(keys, ascending=[k != "budget" for k in keys],
                             kind="stable").reset_index(drop=True)
