"""Everything a report draws from, loaded once: runs, config summary, and lazily the
metric histories and dims.json artifacts (these cost one store round trip per run)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import pandas as pd

from reports.dims import load_dims
from reports.runs import (RunTable, load_runs, metric_history, representatives,
                          with_reference)
from reports.tables import config_summary


@dataclass
class ReportData:
    runs: RunTable
    summary: pd.DataFrame
    problems: list[str] = field(default_factory=list)
    _cache: dict = field(default_factory=dict, repr=False)

    @property
    def experiment(self) -> str:
        return self.runs.experiment

    def history(self, keys: Sequence[str]) -> pd.DataFrame:
        """Time series of ``keys`` for one run per config (lowest seed), with config columns."""
        keys = tuple(keys)
        if keys not in self._cache:
            reps = representatives(self.runs)
            hist = metric_history(self.runs, list(reps["run_id"]), keys) if keys else None
            self._cache[keys] = _with_config(hist, reps, self.runs)
        return self._cache[keys]

    def dims(self) -> pd.DataFrame:
        """Kept-width counts from dims.json, one run per config (lowest seed), with config."""
        if "dims" not in self._cache:
            reps = representatives(self.runs)
            dims, problems = load_dims(self.runs, list(reps["run_id"]))
            self.problems.extend(problems)
            self._cache["dims"] = _with_config(dims, reps, self.runs)
        return self._cache["dims"]


def _with_config(long: pd.DataFrame | None, reps: pd.DataFrame, runs: RunTable) -> pd.DataFrame:
    cols = ["run_id", *runs.config_columns, "seed"]
    if long is None or long.empty:
        return pd.DataFrame(columns=[*(long.columns if long is not None else []), *cols[1:]])
    return long.merge(reps[cols], on="run_id", how="left")


def load_report_data(experiment: str, tracking_uri: str | None = None,
                     reference: str | None = None) -> ReportData:
    """``reference``: another experiment of the store whose uniform runs (budget 1.0) serve as
    the reference for NE deltas and speed ratios (see ``runs.with_reference``)."""
    runs = load_runs(experiment, tracking_uri)
    if reference:
        runs = with_reference(runs, load_runs(reference, runs.tracking_uri))
    return ReportData(runs, config_summary(runs))
