"""One MLflow experiment's runs as a tidy pandas frame: one row per run.

Columns: run identity (``run_id``, ``run_name``, ``status``), the config fields the reports
group by under short names (``method``, ``budget``, ``K``, ``utility``, ``gamma``,
``sample_frac``, ``thresholds``, ``padding``, ``dataset``, ``dim``, ``seed``), every other
logged param under its dotted key, a few provenance tags, and the final value of every metric
under its own name (``val/ne``, ``mem/total_bytes``...). Runs that failed or lack the core
metrics stay in the frame, flagged, so that a report can list them instead of crashing.

The frame is built from ``MlflowClient.search_runs`` pages (the same data ``mlflow.search_runs``
returns) so that reading a store never changes the caller's global tracking URI.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from reports import ReportError

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"

# tidy column -> (param key, tag key) under which the harness logs it (tag as fallback)
CONFIG_FIELDS: dict[str, tuple[str, str | None]] = {
    "method": ("method.name", "method"),
    "budget": ("method.budget", "budget"),
    "K": ("method.num_chunks", None),
    "utility": ("method.utility", None),
    "gamma": ("method.gamma", None),
    "sample_frac": ("method.sample_frac", None),
    "thresholds": ("method.thresholds", None),
    "padding": ("method.padding", None),
    "dataset": ("data.name", "dataset"),
    "dim": ("model.dim", None),
}
SEED_FIELD = ("seed", "seed")
FLOAT_FIELDS = frozenset({"budget", "gamma", "sample_frac"})
INT_FIELDS = frozenset({"K", "dim", "seed"})
KEPT_TAGS = ("dataset_fingerprint", "git_commit", "torch_version", "device", "experiment",
             "fiited.config", "fiited.setup", "fiited.resumed_from")
SWEEP_TAG = "fiited.sweep"  # a sweep's parent run: no training of its own, not a row

FINAL_METRICS = (
    "val/ne", "val/auc", "val/logloss", "test/ne", "test/auc", "test/logloss", "bayes_ne",
    "mem/weights_bytes", "mem/optimizer_bytes", "mem/index_bytes", "mem/utility_bytes",
    "mem/total_bytes", "mem/train_peak_bytes", "mem/compression", "mem/total_compression",
    "mem/peak_rss_bytes", "perf/train_samples_per_s", "perf/eval_samples_per_s",
    "perf/step_ms_p50", "perf/step_ms_p99", "prune/event_seconds",
)
# Without these a run cannot be placed on any figure: it is excluded and listed.
CORE_METRICS = ("val/ne", "mem/total_bytes")
# Only some runs have these (synthetic data; pruning methods), so their absence is no fault.
OPTIONAL_METRICS = frozenset({"bayes_ne", "prune/event_seconds"})
EXPECTED_METRICS = tuple(m for m in FINAL_METRICS if m not in OPTIONAL_METRICS)

# Params that differ per run without defining a config (seeds, paths, launcher bookkeeping).
_NOT_CONFIG = re.compile(
    r"(^|\.)seed$|(^|\.)\w*(dir|path|file|uri)$|^hydra\.|^tracking\.|^experiment$")
_NULLS = frozenset({"", "None", "none", "null", "nan"})
_PAGE = 1000


def resolve_tracking_uri(uri: str | None = None) -> str:
    """The URI to read: given, else $MLFLOW_TRACKING_URI, else ./mlflow.db; sqlite made absolute.

    An absolute sqlite path lets a notebook kernel in another directory read the same store, and
    a missing file is an error here, because opening it would silently create an empty store.
    """
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI
    path = sqlite_path(uri)
    if path is None:
        return uri
    if not path.is_file():
        raise ReportError(
            f"no MLflow store at {path} (tracking URI {uri!r}); run an experiment first "
            f"(fiited-bench ...) or pass --tracking-uri")
    return f"sqlite:///{path}"


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI (relative paths against the cwd), else None."""
    if not uri.startswith("sqlite:///"):
        return None
    return Path(uri[len("sqlite:///"):]).expanduser().absolute()


def _client(uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def experiment_names(tracking_uri: str) -> list[str]:
    return sorted(e.name for e in _client(tracking_uri).search_experiments())


@dataclass
class RunTable:
    """All runs of one experiment, and which columns tell one config from another."""

    experiment: str
    experiment_id: str
    tracking_uri: str
    frame: pd.DataFrame
    config_columns: list[str]
    reference_from: str | None = None  # experiment the uniform reference runs were borrowed from

    @property
    def complete(self) -> pd.DataFrame:
        """Finished runs with the core metrics: the ones every figure and table uses."""
        return self.frame[self.frame["complete"]]

    @property
    def missing(self) -> pd.DataFrame:
        """Runs that failed, are unfinished, or lack expected metrics, and whether they are used."""
        f = self.frame
        bad = f[~f["complete"] | (f["missing_metrics"] != "")]
        cols = ["run_id", "run_name", *self.config_columns, "seed", "status", "missing_metrics",
                "note"]
        out = bad[[c for c in dict.fromkeys(cols) if c in bad]].copy()
        out["excluded"] = ~bad["complete"]
        if "note" in out:
            out["note"] = out["note"].astype(object).where(out["note"].notna(), "")
        return out.reset_index(drop=True)

    @property
    def ne_metric(self) -> str:
        """The NE the figures use: test NE where the runs have it, else validation NE."""
        c = self.complete
        return "test/ne" if "test/ne" in c and c["test/ne"].notna().any() else "val/ne"

    def has(self, metric: str) -> bool:
        return metric in self.frame and self.complete[metric].notna().any()


def load_runs(experiment: str, tracking_uri: str | None = None) -> RunTable:
    """Every active run of ``experiment`` as a :class:`RunTable`; unknown names list the known."""
    uri = resolve_tracking_uri(tracking_uri)
    client = _client(uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        known = experiment_names(uri)
        raise ReportError(
            f"experiment {experiment!r} does not exist in {uri}; experiments there: "
            + (", ".join(known) if known else "(none)"))
    runs, token = [], None
    while True:
        page = client.search_runs([exp.experiment_id], max_results=_PAGE, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            break
    frame = tidy_frame(runs)
    return RunTable(experiment, exp.experiment_id, uri, frame, config_columns(frame))


# Params that must agree before a uniform run of another experiment may serve as this one's
# reference: the data, the model and how it is trained (not method knobs, seeds, bookkeeping).
_SETUP = re.compile(r"^(data|model|train)\.")
SETUP_COLUMN = "tag.fiited.setup"  # their fingerprint over every data/model/train key
_UNLOGGED = frozenset({"(not logged)", "(empty)"})


def _is_uniform_reference(frame: pd.DataFrame) -> pd.Series:
    return (frame["method"] == "uniform") & np.isclose(frame["budget"].astype(float), 1.0)


def with_reference(table: RunTable, reference: RunTable) -> RunTable:
    """``table`` plus ``reference``'s complete uniform runs at budget 1.0, for experiments (the
    ablations) that sweep one method and have no uniform run of their own.

    The borrowed runs must share every data/model/train param and the dataset fingerprint with
    this experiment's runs; otherwise the error names the first param that differs. They bring
    quality and memory, not speed: their ``perf/*`` metrics are dropped.
    """
    own = table.complete
    if _is_uniform_reference(own).any():
        raise ReportError(f"experiment {table.experiment!r} has its own uniform runs at budget "
                          f"1.0; drop --reference {reference.experiment}")
    ref = reference.complete[_is_uniform_reference(reference.complete)]
    if ref.empty:
        raise ReportError(f"reference experiment {reference.experiment!r} has no complete "
                          f"uniform run at budget 1.0")
    if own.empty:
        raise ReportError(f"experiment {table.experiment!r} has no complete run to compare "
                          f"with the reference")
    keys = sorted({c for c in (*own.columns, *ref.columns)
                   if (_SETUP.match(c) and not _NOT_CONFIG.search(c))
                   or c == "tag.dataset_fingerprint"})
    # Runs that carry the setup fingerprint log only some setup keys as params (those a command
    # line overrode among them): a key one side lacks is left to the fingerprint.
    fingerprinted = all(SETUP_COLUMN in f and f[SETUP_COLUMN].notna().all() for f in (own, ref))
    for key in keys:
        ours = _values(own, key)
        theirs = _values(ref, key)
        if fingerprinted and _UNLOGGED & (ours | theirs):
            continue
        if ours != theirs:
            raise ReportError(
                f"reference experiment {reference.experiment!r} is not comparable: {key} is "
                f"{_show(theirs)} in its uniform runs but {_show(ours)} in "
                f"{table.experiment!r}")
    # the data/model/train keys not logged as params (each run's config.yaml has them all)
    if _values(own, SETUP_COLUMN) != _values(ref, SETUP_COLUMN):
        raise ReportError(
            f"reference experiment {reference.experiment!r} is not comparable: its uniform runs "
            f"were trained with other data/model/train settings than {table.experiment!r} "
            f"({SETUP_COLUMN} differs; compare the runs' config.yaml artifacts)")
    borrowed = ref.assign(**{"tag.reference_experiment": reference.experiment})
    # Their speed was measured under another sweep's load: kept out of every speed figure.
    borrowed[[c for c in borrowed.columns if c.startswith("perf/")]] = np.nan
    frame = pd.concat([table.frame, borrowed], ignore_index=True)
    return RunTable(table.experiment, table.experiment_id, table.tracking_uri, frame,
                    config_columns(frame), reference_from=reference.experiment)


def _values(frame: pd.DataFrame, key: str) -> frozenset:
    if key not in frame:
        return frozenset({"(not logged)"})
    return frozenset(map(value_text, frame[key].dropna().unique())) or frozenset({"(empty)"})


def value_text(v) -> str:
    """1024 and 1024.0 alike: a column with gaps is float even where its values are ints."""
    if isinstance(v, (float, np.floating)) and float(v).is_integer():
        return str(int(v))
    return str(v)


def _show(values: frozenset) -> str:
    return ", ".join(sorted(values))


def tidy_frame(runs: Iterable) -> pd.DataFrame:
    """MLflow ``Run`` objects -> the tidy frame described in the module docstring."""
    known = {p for p, _ in CONFIG_FIELDS.values()} | {SEED_FIELD[0]}
    rows = []
    for run in runs:
        params, tags = run.data.params, run.data.tags
        if tags.get(SWEEP_TAG) == "parent":
            continue
        row = {"run_id": run.info.run_id, "run_name": run.info.run_name,
               "status": run.info.status, "start_time": run.info.start_time,
               "artifact_uri": run.info.artifact_uri,
               "note": _lost(run.info.status, tags)}
        for col, (pkey, tkey) in {**CONFIG_FIELDS, "seed": SEED_FIELD}.items():
            row[col] = params.get(pkey, tags.get(tkey) if tkey else None)
        row.update({k: v for k, v in params.items() if k not in known and k not in row})
        row.update({f"tag.{t}": tags[t] for t in KEPT_TAGS if t in tags})
        row.update(run.data.metrics)
        rows.append(row)
    frame = pd.DataFrame(rows)
    if frame.empty:
        frame = pd.DataFrame(columns=["run_id", "run_name", "status", "start_time", "note",
                                      "artifact_uri", *CONFIG_FIELDS, "seed"])
    for col in frame.columns:
        if frame[col].dtype == object or pd.api.types.is_string_dtype(frame[col]):
            frame[col] = frame[col].map(lambda v: np.nan if isinstance(v, str) and v in _NULLS
                                        else v)
    for col in FLOAT_FIELDS:
        frame[col] = _numeric(frame, col)
    for col in INT_FIELDS:
        frame[col] = _numeric(frame, col).round().astype("Int64")
    extra = [c for c in frame.columns if "." in c and not c.startswith("tag.")]
    for col in extra:
        try:
            frame[col] = pd.to_numeric(frame[col])
        except (ValueError, TypeError):
            pass
    for m in CORE_METRICS + EXPECTED_METRICS:
        if m not in frame:
            frame[m] = np.nan
    has = frame[list(EXPECTED_METRICS)].notna()
    frame["missing_metrics"] = [", ".join(m for m in EXPECTED_METRICS if not ok[m])
                                for _, ok in has.iterrows()]
    frame["complete"] = (frame["status"] == "FINISHED") & frame[list(CORE_METRICS)].notna().all(
        axis=1)
    _keep_latest(frame)
    return frame.sort_values(["method", "budget", "seed"], ascending=[True, False, True],
                             na_position="last", kind="stable").reset_index(drop=True)


def _lost(status: str, tags) -> str:
    """Why a RUNNING run's process is gone (kill -9, a lost node), '' when it may live."""
    if status != "RUNNING":
        return tags.get("fiited.lost", "") and f"lost: {tags['fiited.lost']}"
    from benchmark.run_state import why_lost

    reason = why_lost(tags)
    return f"lost: {reason}" if reason else ""


def _keep_latest(frame: pd.DataFrame) -> None:
    """Each (config, seed) counts once: of complete runs with one config fingerprint (a re-run,
    a resumed run), the latest; the others are excluded and say which run replaced them."""
    key = "tag.fiited.config"
    if key not in frame or frame.empty:
        return
    done = frame[frame["complete"] & frame[key].notna()]
    latest = done.sort_values("start_time").groupby(key)["run_id"].last()
    dup = done.index[done["run_id"] != done[key].map(latest)]
    frame.loc[dup, "complete"] = False
    frame.loc[dup, "note"] = "superseded by run " + frame.loc[dup, key].map(latest)


def _numeric(frame: pd.DataFrame, name: str) -> pd.Series:
    col = frame[name]
    out = pd.to_numeric(col, errors="coerce")
    bad = out.isna() & col.notna()
    if bad.any():
        i = bad.idxmax()
        raise ReportError(f"run {frame.at[i, 'run_id']}: param/tag {name!r} = {col[i]!r} "
                          f"is not a number")
    return out.astype(float)


def config_columns(frame: pd.DataFrame) -> list[str]:
    """Columns that define a config: method, budget, and whatever else varies within a method.

    A param that only differs between methods (each method's own knobs) says nothing the
    method name does not, so it would only add empty columns to the tables.
    """
    cols = ["method", "budget"]
    done = frame[frame["complete"]] if "complete" in frame else frame
    if done.empty:
        return cols
    metrics = set(FINAL_METRICS) | {c for c in frame.columns if "/" in c}
    skip = {"run_id", "run_name", "status", "start_time", "artifact_uri", "seed",
            "missing_metrics", "note",
            "complete", *cols, *metrics}
    candidates = [c for c in CONFIG_FIELDS if c not in skip] + [
        c for c in frame.columns if "." in c and not c.startswith("tag.") and c not in skip
        and not _NOT_CONFIG.search(c)]
    by_method = done.groupby("method", dropna=False)
    for c in candidates:
        # a method knob is logged only where it is off its default: absent is a value too
        dropna = not c.startswith("method.")
        if c in done and by_method[c].nunique(dropna=dropna).gt(1).any():
            cols.append(c)
    return cols


def representatives(table: RunTable) -> pd.DataFrame:
    """One complete run per config (its lowest seed), for per-run views such as time series."""
    done = table.complete
    if done.empty:
        return done
    return (done.sort_values("seed", na_position="last", kind="stable")
            .groupby(table.config_columns, dropna=False, sort=False).head(1))


def metric_history(table: RunTable, run_ids: Sequence[str], keys: Sequence[str]) -> pd.DataFrame:
    """Logged time series as a long frame: run_id, key, step, value (absent keys are skipped)."""
    client = _client(table.tracking_uri)
    have = table.frame.set_index("run_id")
    rows = []
    for rid in run_ids:
        for key in keys:
            if key in have.columns and pd.isna(have.at[rid, key]):
                continue
            rows.extend((rid, key, m.step, m.value) for m in client.get_metric_history(rid, key))
    return pd.DataFrame(rows, columns=["run_id", "key", "step", "value"])
