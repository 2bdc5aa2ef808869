"""Report tables: one row per config, numbers equal to those recomputed from the store."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from reports.tables import to_markdown

from report_store import CONFIGS


def _store_runs(store, flt: str) -> list:
    """Finished runs of ``ablations`` matching an MLflow filter, read with the plain client."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=store.uri)
    exp = client.get_experiment_by_name("ablations").experiment_id
    return client.search_runs([exp], f"attributes.status = 'FINISHED' and {flt}")


def _mean(runs, metric: str) -> float:
    vals = [r.data.metrics[metric] for r in runs
            if "val/ne" in r.data.metrics and "mem/total_bytes" in r.data.metrics]
    assert vals, metric
    return float(np.mean(vals))


@pytest.fixture(scope="module")
def summary(report):
    return pd.read_csv(report.out / "tables" / "config_summary.csv")


def test_one_row_per_config(summary):
    keys = ["method", "budget", "K", "utility", "gamma", "sample_frac", "thresholds", "padding",
            "method.manual_ratios"]
    assert len(summary) == len(CONFIGS)
    assert not summary.duplicated(keys).any()
    # the finished run without perf/step_ms_p99 still counts: uniform has three seeds
    assert summary.set_index("method").loc["uniform", "seeds"] == "0 1 2"
    assert (summary.loc[summary["method"] != "uniform", "n_runs"] == 2).all()


def test_mean_val_ne_equals_the_store(summary, store):
    row = summary[(summary["method"] == "fiited") & (summary["budget"] == 0.5)]
    assert len(row) == 1
    runs = _store_runs(store, "params.`method.name` = 'fiited' and params.`method.budget` = '0.5'")
    assert len(runs) == 3   # two seeds, plus the finished run without core metrics (excluded)
    assert row["val/ne mean"].item() == pytest.approx(_mean(runs, "val/ne"), rel=1e-12)
    vals = [r.data.metrics["val/ne"] for r in runs if "val/ne" in r.data.metrics]
    assert row["val/ne std"].item() == pytest.approx(np.std(vals, ddof=1), rel=1e-9)


def test_throughput_ratio_equals_the_store(summary, store):
    uniform = _store_runs(store, "params.`method.name` = 'uniform' and params.`method.budget` = '1.0'")
    hashing = _store_runs(store, "params.`method.name` = 'hashing' and params.`method.budget` = '0.1'")
    want = _mean(hashing, "perf/train_samples_per_s") / _mean(uniform, "perf/train_samples_per_s")
    row = summary[(summary["method"] == "hashing") & (summary["budget"] == 0.1)]
    assert row["train_speed_vs_uniform mean"].item() == pytest.approx(want, rel=1e-12)
    assert want > 1.1   # the store's hashing is faster than uniform: the ratio is not trivial


def test_ne_delta_is_relative_to_uniform_at_full_size(summary):
    ref = summary.loc[summary["method"] == "uniform", "test/ne mean"].item()
    row = summary[(summary["method"] == "hashing") & (summary["budget"] == 0.5)]
    want = 100 * (row["test/ne mean"].item() / ref - 1)
    assert row["ne_delta_pct mean"].item() == pytest.approx(want, rel=1e-9)


def test_compression_within_tolerance(report, summary):
    comp = pd.read_csv(report.out / "tables" / "compression_within.csv")
    assert set(comp["tolerance_pct"]) == {0.1, 0.5}
    assert len(comp) == 2 * summary["method"].nunique()
    for _, row in comp.iterrows():
        ok = summary[(summary["method"] == row["method"])
                     & (summary["ne_delta_pct mean"] <= row["tolerance_pct"])]
        if ok.empty:
            assert np.isnan(row["compression"]) and row["note"] == "no config within tolerance"
        else:
            assert row["compression"] == ok["mem/compression mean"].max()
            assert row["ne_delta_pct"] <= row["tolerance_pct"]
    # hashing's NE is far off uniform in this store: nothing qualifies
    assert comp.loc[comp["method"] == "hashing", "compression"].isna().all()


def test_markdown_merges_mean_and_std():
    df = pd.DataFrame({"method": ["a", "b"], "x mean": [0.5, 12345.0], "x std": [0.01, np.nan]})
    md = to_markdown(df).splitlines()
    assert md[0] == "| method | x |"
    assert md[2] == "| a | 0.5 ± 0.01 |"
    assert md[3] == "| b | 12,345 |"


def test_uniform_reference_is_per_dataset_when_datasets_vary():
    from reports.runs import RunTable
    from reports.tables import config_summary

    rows = []
    for ds, base in (("criteo", 100.0), ("avazu", 10.0)):
        for method, speed in (("uniform", base), ("fiited", base / 2)):
            for seed in (0, 1):
                rows.append({"run_id": f"{ds}-{method}-{seed}", "method": method, "budget": 1.0
                             if method == "uniform" else 0.1, "dataset": ds, "seed": seed,
                             "val/ne": 0.8, "mem/total_bytes": 1.0, "complete": True,
                             "perf/train_samples_per_s": speed + seed, "missing_metrics": ""})
    table = RunTable("x", "1", "sqlite:///x.db", pd.DataFrame(rows),
                     ["method", "budget", "dataset"])
    s = config_summary(table).set_index(["method", "dataset"])
    assert s.loc[("fiited", "criteo"), "train_speed_vs_uniform mean"] == pytest.approx(
        50.5 / 100.5)
    assert s.loc[("fiited", "avazu"), "train_speed_vs_uniform mean"] == pytest.approx(5.5 / 10.5)
    assert s.loc[("uniform", "avazu"), "ne_delta_pct mean"] == 0
