"""The train loop on the composed real config, in-process (no MLflow): resume and accounting."""
from __future__ import annotations

import json

import pytest

from benchmark.train import CHECKPOINT, Trainer


def _fit(cfg, run_dir, launch_dir):
    return Trainer(cfg, run_dir, launch_dir).fit()


@pytest.mark.parametrize("method", ["uniform", "fiited"])
def test_stop_and_resume_gives_the_same_numbers(compose_cfg, tmp_path, method):
    common = [f"method={method}", "tracking=none", "train.epochs=2", "train.max_steps=120",
              "train.eval_every=50"]
    if method == "fiited":  # pruning events before and after the stop, budget tight enough to evict
        common += ["method.budget=0.25", "method.schedule.warmup=[10,30]",
                   "method.schedule.interval=40"]
    full = _fit(compose_cfg(*common), tmp_path / "full", tmp_path)
    stopped = _fit(compose_cfg(*common, "train.stop_after=55"), tmp_path / "part", tmp_path)
    assert stopped["stopped_at_step"] == 55
    ckpt = tmp_path / "part" / CHECKPOINT
    resumed = _fit(compose_cfg(*common, f"train.resume={ckpt}"), tmp_path / "resumed", tmp_path)
    for key in ("val/ne", "val/auc", "test/ne", "test/logloss", "mem/total_bytes",
                "mem/ledger_peak_bytes", "train/steps"):
        assert resumed[key] == full[key], key
    hist_full = json.loads((tmp_path / "full" / "history.json").read_text())
    hist_res = json.loads((tmp_path / "resumed" / "history.json").read_text())
    assert hist_res == hist_full


def test_training_beats_base_rate_and_writes_the_named_outputs(compose_cfg, tmp_path):
    cfg = compose_cfg("method=uniform", "tracking=none", "train.epochs=1")
    summary = _fit(cfg, tmp_path / "run", tmp_path)
    assert summary["bayes_ne"] < summary["val/ne"] < 1.0
    assert summary["val/auc"] > 0.6
    assert summary["perf/train_samples_per_s"] > 0
    assert summary["perf/step_ms_p50"] <= summary["perf/step_ms_p99"]
    assert summary["mem/train_peak_bytes"] >= summary["mem/total_bytes"] > 0
    dims = json.loads((tmp_path / "run" / "dims.json").read_text())
    assert len(dims) == 26 and all(sum(c) > 0 for c in dims.values())


def test_bad_resume_path_and_impossible_schedule_are_clear_errors(compose_cfg, tmp_path):
    with pytest.raises(ValueError, match="no such checkpoint"):
        _fit(compose_cfg("method=uniform", "tracking=none", f"train.resume={tmp_path}/x.pt"),
             tmp_path / "r", tmp_path)
    with pytest.raises(ValueError, match="no training steps"):
        Trainer(compose_cfg("method=uniform", "tracking=none", "train.epochs=0"), tmp_path / "z",
                tmp_path)


def test_post_prune_finetune_runs_after_the_pruned_evaluation(compose_cfg, tmp_path):
    cfg = compose_cfg("method=post_prune", "method.budget=0.25", "method.finetune_steps=7",
                      "tracking=none", "train.max_steps=30")
    summary = _fit(cfg, tmp_path / "run", tmp_path)
    assert summary["train/steps"] == 37 and summary["train/finetune_steps"] == 7
    assert "pruned/val/ne" in summary and summary["pruned/val/ne"] != summary["val/ne"]
    # the training peak is the full uniform table; the final ledger the pruned one
    assert summary["mem/train_peak_bytes"] > summary["mem/total_bytes"]


def test_movielens_100k_from_the_recbole_wheel_trains_below_base_rate_ne(compose_cfg, tmp_path):
    """The one real dataset reachable here, through the real prepare command and the harness."""
    import importlib.resources
    import importlib.util

    if importlib.util.find_spec("recbole") is None:
        pytest.skip("recbole is not installed (make test installs recbole==1.2.1 --no-deps)")
    from benchmark.data.cli import main as data_main

    src = importlib.resources.files("recbole") / "dataset_example" / "ml-100k"
    out = tmp_path / "ml100k"
    assert data_main(["prepare", "movielens", "--input", str(src), "--out", str(out)]) in (0, None)
    cfg = compose_cfg("data=movielens", f"data.path={out}", "method=uniform", "tracking=none",
                      "train.epochs=1", "train.batch_size=256", tiny_data=False)
    summary = _fit(cfg, tmp_path / "run", tmp_path)
    assert summary["val/ne"] < 0.97 and summary["test/ne"] < 0.97
    assert summary["test/auc"] > 0.7
    assert "bayes_ne" not in summary  # real data has no known quality limit
