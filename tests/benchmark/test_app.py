"""End to end through the real Hydra app, the real sqlite MLflow store and real files."""
from __future__ import annotations

import json

import mlflow
import pytest

pytestmark = pytest.mark.slow


def _runs(tmp_path, experiment):
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    return job_runs(mlflow.search_runs(experiment_names=[experiment]))


def job_runs(runs):
    """The jobs' runs, without a sweep's parent run (they nest under it)."""
    return runs[runs["tags.fiited.sweep"].ne("parent")] if "tags.fiited.sweep" in runs else runs


def test_single_run_logs_params_metrics_tags_and_artifacts(smoke_store):
    # fiited-bench method=uniform method.budget=0.5 scale=smoke (the shared smoke store)
    assert "val NE" in smoke_store.single.stdout  # the summary table ends the run
    client, _, runs = smoke_store.runs("single")
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert run.data.params["method.name"] == "uniform"
    assert float(run.data.params["method.budget"]) == 0.5
    tags = run.data.tags
    assert tags["method"] == "uniform"
    for tag in ("dataset_fingerprint", "git_commit", "torch_version", "device"):
        assert tags[tag]
    summary_path = next((smoke_store.root / "outputs" / "single").rglob("summary.json"))
    summary = json.loads(summary_path.read_text())
    for name in ("val/ne", "val/auc", "test/ne", "mem/total_bytes", "mem/train_peak_bytes",
                 "perf/train_samples_per_s", "perf/step_ms_p50", "bayes_ne"):
        assert run.data.metrics[name] == pytest.approx(summary[name])
    # half the width -> half the weight bytes of uniform, and the ledger says so
    assert summary["mem/compression"] == pytest.approx(2.0)
    # a trained model lands between the generator's own quality limit and the base rate
    assert summary["bayes_ne"] < summary["test/ne"] < 1.0
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"summary.json", "memory.json", "config.yaml"} <= artifacts
    history = client.get_metric_history(run.info.run_id, "train/loss")
    assert len(history) >= 2 and all(h.step > 0 for h in history)


def test_joblib_multirun_lands_both_runs_in_one_store(run_app, tmp_path):
    proc = run_app("method=uniform", "method.budget=1.0,0.25", "train.max_steps=15",
                   "tracking.experiment=sweep", "hydra/launcher=joblib",
                   "hydra.launcher.n_jobs=2", multirun=True)
    runs = _runs(tmp_path, "sweep")
    assert sorted(runs["params.method.budget"].astype(float)) == [0.25, 1.0]
    assert (runs["status"] == "FINISHED").all()
    assert "2 finished runs" in proc.stdout  # the sweep's comparison table


def test_config_typo_fails_at_start_with_the_key_named(run_app):
    proc = run_app("train.batchsize=3", check=False)
    assert proc.returncode != 0
    assert "batchsize" in proc.stderr
    proc = run_app("method=uniform", "+method.budgte=0.5", check=False)
    assert proc.returncode != 0
    assert "budgte" in proc.stderr
    proc = run_app("train.batch_size=abc", check=False)
    assert proc.returncode != 0 and "batch_size" in proc.stderr


def test_missing_dataset_is_a_clear_error(run_app, tmp_path):
    missing = tmp_path / "nope"
    proc = run_app(f"data.path={missing}", "data.synthetic=null", "tracking=none", check=False,
                   tiny=False)
    assert proc.returncode != 0
    assert str(missing) in proc.stderr and "does not exist" in proc.stderr


def test_a_failing_job_does_not_hide_the_others_but_fails_the_sweep(run_app, tmp_path):
    # budget 0 is refused by the method's validation; the other job still lands
    proc = run_app("method=uniform", "method.budget=1.0,0.0", "train.max_steps=5",
                   "tracking.experiment=partial", multirun=True, check=False)
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert "1 finished runs" in out and "1 job(s) of the sweep failed" in out
    assert "method.budget must be in (0, 1]" in out
    runs = _runs(tmp_path, "partial")
    assert sorted(runs["status"]) == ["FAILED", "FINISHED"]
