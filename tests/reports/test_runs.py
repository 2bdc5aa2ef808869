"""The tidy run frame read back from a real sqlite MLflow store."""
from __future__ import annotations

import pandas as pd
import pytest

from reports import ReportError
from reports.dims import parse_dims
from reports.runs import load_runs, representatives, resolve_tracking_uri

from report_store import CONFIGS, SEEDS


@pytest.fixture(scope="module")
def runs(store):
    return load_runs("ablations", store.uri)


def test_one_row_per_run_with_tidy_config_columns(runs, store):
    f = runs.frame
    assert len(f) == len(CONFIGS) * len(SEEDS) + 3
    assert f["run_id"].is_unique
    assert runs.config_columns == ["method", "budget", "K", "utility", "gamma", "sample_frac",
                                   "thresholds", "padding", "method.manual_ratios"]
    assert f["budget"].dtype == float and str(f["K"].dtype) == "Int64"
    assert set(f.loc[f["method"] == "fiited", "K"].dropna()) == {2, 4, 8}
    assert f.loc[f["method"] == "uniform", "K"].isna().all()
    assert (f["tag.git_commit"] == "0" * 40).all()
    # per-run paths and derived seeds are not config fields
    assert "hydra.run.dir" in f and "hydra.run.dir" not in runs.config_columns
    assert "data.seed" not in runs.config_columns
    assert f["method.seed"].isna().all()   # logged as the string "None"


def test_failed_and_incomplete_runs_are_flagged_not_dropped(runs, store):
    miss = runs.missing.set_index("run_id")
    assert set(miss.index) == {store.failed_run, store.no_core_run, store.no_perf_run}
    assert miss.at[store.failed_run, "status"] == "FAILED"
    assert miss.at[store.failed_run, "excluded"]
    assert "val/ne" in miss.at[store.no_core_run, "missing_metrics"]
    assert miss.at[store.no_core_run, "excluded"]
    assert miss.at[store.no_perf_run, "missing_metrics"] == "perf/step_ms_p99"
    assert not miss.at[store.no_perf_run, "excluded"]
    assert store.no_perf_run in set(runs.complete["run_id"])
    assert store.failed_run not in set(runs.complete["run_id"])


def test_figures_use_test_ne_when_logged(runs):
    assert runs.ne_metric == "test/ne"


def test_representatives_take_the_lowest_seed_of_each_config(runs):
    reps = representatives(runs)
    assert len(reps) == len(CONFIGS)
    assert (reps["seed"] == 0).all()


def test_unknown_experiment_lists_the_known_ones(store):
    with pytest.raises(ReportError, match=r"'nope' does not exist.*ablations, broken, empty"):
        load_runs("nope", store.uri)


def test_missing_store_file_is_an_error_not_a_new_store(tmp_path):
    db = tmp_path / "absent.db"
    with pytest.raises(ReportError, match="no MLflow store at .*absent.db"):
        resolve_tracking_uri(f"sqlite:///{db}")
    assert not db.exists()


def test_relative_sqlite_uri_is_made_absolute(store, monkeypatch):
    monkeypatch.chdir(store.root)
    assert resolve_tracking_uri("sqlite:///mlflow.db") == f"sqlite:///{store.root}/mlflow.db"


def test_empty_and_unusable_experiments_load(store):
    empty = load_runs("empty", store.uri)
    assert empty.frame.empty and empty.complete.empty and empty.missing.empty
    broken = load_runs("broken", store.uri)
    assert broken.complete.empty
    assert set(broken.missing["run_id"]) == set(store.broken_runs)


@pytest.mark.parametrize("text, match", [
    ("[1, 2]", "expected an object"),
    ('{"C1": [1, -2]}', "table 'C1'"),
    ('{"C1": {"a": 1}}', "table 'C1'"),
    ("{", "not JSON"),
])
def test_malformed_dims_json_names_the_fault(text, match):
    with pytest.raises(ValueError, match=match):
        parse_dims(text)


def test_dims_json_parses_to_width_counts():
    assert parse_dims('{"C1": [0, 3, 5]}') == [("C1", 0, 0), ("C1", 1, 3), ("C1", 2, 5)]
