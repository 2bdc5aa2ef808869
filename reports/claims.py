"""Which paper claim (C1..C11) each figure and table of a report puts to the test, and the
verdict the runs give on the claims they can decide (paired by seed, see reports/stats.py)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from reports import stats

CLAIMS: dict[str, str] = {
    "C1": "Embedding vectors are not equally important; more dimensions for the important ones "
          "save memory at equal quality",
    "C2": ">65% embedding-size reduction with quality maintained (industry; closest: synthetic "
          "Criteo-like data at budget 0.35)",
    "C3": "Public CTR data: 93.75%-99.75% pruned / tables 2.1x-800x smaller with negligible "
          "accuracy loss",
    "C4": "Saves more memory than in-training row pruning (AdaEmbed, ITEP) at the same quality",
    "C5": "Improves model throughput vs the state of the art",
    "C6": "Utility from access frequency and gradient magnitude beats frequency alone",
    "C7": "Chunk count K trades memory and quality against per-step latency (overhead linear "
          "in K)",
    "C8": "Zero padding costs almost nothing vs projection layers",
    "C9": "Per-chunk pruning ratios differ from the global ratio and drift with the data",
    "C10": "Sensitivity to decay gamma and sample size m",
    "C11": "Stable over long training; adapts to changes in the data",
}

# report output (figure stem or table name) -> claim ids it tests
OUTPUT_CLAIMS: dict[str, tuple[str, ...]] = {
    "ne_vs_memory": ("C1", "C3", "C4"),
    "throughput_ratio": ("C5",),
    "k_ablation": ("C7",),
    "utility_ablation": ("C6",),
    "decay_sampling_heatmap": ("C10",),
    "thresholds_comparison": ("C9",),
    "kept_fraction_over_time": ("C9", "C11"),
    "padding_comparison": ("C8",),
    "kept_width_hist": ("C1", "C11"),
    "ne_over_time": ("C11",),
    "compression_within": ("C2", "C3"),
    "config_summary": ("C1", "C4", "C5"),
}


def claim_table(outputs: Iterable[str], experiment: str) -> pd.DataFrame:
    """One row per (output, claim): the figure or table file, experiment, claim id and text.

    ``outputs`` are file names (``figures/ne_vs_memory.png``) or bare stems.
    """
    rows = []
    for out in outputs:
        stem = out.rsplit("/", 1)[-1].split(".", 1)[0]
        for cid in OUTPUT_CLAIMS.get(stem, ()):
            rows.append({"output": out, "experiment": experiment, "claim": cid,
                         "claim_text": CLAIMS[cid]})
    return pd.DataFrame(rows, columns=["output", "experiment", "claim", "claim_text"])


@dataclass(frozen=True)
class ClaimCheck:
    """A claim as a test 'delta < margin' on the cells (dataset x variant x budget) of
    ``method`` whose budget lies in [``budget_min``, ``budget_max``].

    ``reference`` ``best``: the delta is to the best other method at the same budget (among
    ``candidates``; all others if None); ``uniform``: to uniform at full size. ``relative``: the
    delta is in % of the reference's NE.
    """

    claim: str
    statement: str
    reference: str = "best"
    candidates: tuple[str, ...] | None = None
    margin: float = 0.0
    relative: bool = False
    budget_min: float = 0.0
    budget_max: float = 0.999
    method: str = "fiited"


CHECKS: tuple[ClaimCheck, ...] = (
    ClaimCheck("C1", "at equal memory (each budget < 1; a reference's measured total bytes at "
                     "most 5% above FIITED's) FIITED's NE is below the best other method's"),
    ClaimCheck("C4", "at equal memory (each budget < 1; the reference's measured total bytes at "
                     "most 5% above FIITED's) FIITED's NE is below the better of AdaEmbed's and "
                     "ITEP's", candidates=("adaembed", "itep")),
    ClaimCheck("C2", "at budget 1/4-0.35 (>= 65% smaller) FIITED's NE is within 0.1% of "
                     "uniform's at full size", reference="uniform", margin=0.1, relative=True,
               budget_min=0.25, budget_max=0.35),
    ClaimCheck("C3", "at budgets 1/400-1/16 (93.75%-99.75% pruned) FIITED's NE is within 0.1% "
                     "of uniform's at full size", reference="uniform", margin=0.1,
               relative=True, budget_min=0.0025, budget_max=0.0625),
)
CELL_COLUMNS = ["claim", "dataset", "variant", "budget", "reference", *stats.DELTA_COLUMNS,
                "unit", "margin", "verdict"]
VERDICT_COLUMNS = ["claim", "dataset", "variant", "verdict", "cells", "evidence", "statement"]


@dataclass
class Verdicts:
    """Every cell's paired interval and verdict, the verdict per claim x dataset x variant, the
    summary over datasets, and the rule and metric they were computed with."""

    metric: str
    cells: pd.DataFrame
    by_dataset: pd.DataFrame
    summary: pd.DataFrame
    rule: str = stats.VERDICT_RULE
    noise: str = ""


def claim_cells(runs: pd.DataFrame, metric: str, variant_cols: Sequence[str] = (),
                checks: Sequence[ClaimCheck] = CHECKS) -> pd.DataFrame:
    """One row per check x dataset x variant x budget in range: the paired delta, its t
    interval and the cell's verdict."""
    out = []
    for chk in checks:
        if chk.reference == "uniform":
            d = stats.delta_to_uniform(runs, metric, variant_cols, relative=chk.relative)
            d = d[d["method"] == chk.method].assign(reference="uniform at budget 1")
        else:
            d = stats.delta_to_best(runs, metric, methods=[chk.method],
                                    candidates=chk.candidates, variant_cols=variant_cols,
                                    relative=chk.relative)
        b = d["budget"].astype(float)
        d = d[(b >= chk.budget_min - 1e-12) & (b <= chk.budget_max + 1e-12)]
        if d.empty:
            continue
        d = d.assign(claim=chk.claim, unit="% NE" if chk.relative else "NE", margin=chk.margin,
                     verdict=stats.verdict(d["lo"], d["hi"], chk.margin))
        out.append(d[CELL_COLUMNS])
    if not out:
        return pd.DataFrame(columns=CELL_COLUMNS)
    return pd.concat(out, ignore_index=True)


def verdict_table(cells: pd.DataFrame, checks: Sequence[ClaimCheck] = CHECKS) -> pd.DataFrame:
    """Per claim x dataset x variant: the combined verdict (stats.combine) and its evidence,
    one ``budget: mean [lo, hi] verdict`` per cell."""
    statement = {c.claim: c.statement for c in checks}
    rows = []
    for (claim, dataset, variant), g in cells.groupby(["claim", "dataset", "variant"],
                                                      sort=False):
        ev = "; ".join(
            f"{stats.fmt_budget(r.budget)}: {stats.fmt_interval(r.mean, r.lo, r.hi)} "
            f"{r.unit} vs {r.reference} -> {r.verdict}" for r in g.itertuples())
        rows.append({"claim": claim, "dataset": dataset, "variant": variant,
                     "verdict": stats.combine(g["verdict"]), "cells": len(g), "evidence": ev,
                     "statement": statement.get(claim, "")})
    return pd.DataFrame(rows, columns=VERDICT_COLUMNS)


def verdict_summary(by_dataset: pd.DataFrame) -> pd.DataFrame:
    """Per claim x variant over datasets: counts and a line such as ``holds on 2 of 5``."""
    cols = ["claim", "variant", "datasets", stats.HOLDS, stats.FAILS, stats.UNDECIDED, "summary"]
    if by_dataset.empty:
        return pd.DataFrame(columns=cols)
    counts = (by_dataset.groupby(["claim", "variant", "verdict"], sort=False).size()
              .unstack("verdict", fill_value=0)
              .reindex(columns=[stats.HOLDS, stats.FAILS, stats.UNDECIDED], fill_value=0))
    counts["datasets"] = counts.sum(axis=1)
    counts = counts.reset_index()
    counts["summary"] = [
        f"holds on {h} of {n}" + (f" (fails on {f}, undecided on {u})" if f or u else "")
        for h, f, u, n in zip(counts[stats.HOLDS], counts[stats.FAILS],
                              counts[stats.UNDECIDED], counts["datasets"])]
    return counts[cols]


def verdicts(runs: pd.DataFrame, metric: str, config_columns: Sequence[str] = (),
             checks: Sequence[ClaimCheck] = CHECKS) -> Verdicts:
    """The verdicts the complete ``runs`` give (``table.complete``, ``table.ne_metric``,
    ``table.config_columns`` of a RunTable)."""
    vcols = stats.variant_columns(config_columns)
    cells = claim_cells(runs, metric, vcols, checks)
    by = verdict_table(cells, checks)
    return Verdicts(metric, cells, by, verdict_summary(by),
                    noise=stats.noise_note(runs, metric, vcols))


def verdicts_markdown(v: Verdicts) -> str:
    """The verdict section of a report: the rule, the summary, the per-dataset table, noise."""
    from reports.tables import to_markdown

    if v.by_dataset.empty:
        return ("No claim can be decided from these runs (a verdict needs FIITED runs and the "
                "reference runs of the same seeds).\n\n" f"Rule: {v.rule}\n\n{v.noise}\n")
    by = v.by_dataset[["claim", "dataset", "variant", "verdict", "evidence"]]
    return "\n".join([
        f"Metric: `{v.metric}`. Rule: {v.rule}", "",
        to_markdown(v.summary[["claim", "variant", "summary"]]), "",
        to_markdown(by), "", "Claims: " + "; ".join(
            f"{c.claim}: {c.statement}" for c in CHECKS
            if c.claim in set(v.by_dataset["claim"])) + ".", "",
        v.noise[:1].upper() + v.noise[1:] + "." if v.noise else "", ""])
