"""Borrowing uniform reference runs from another experiment of the same (real) store."""
from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest
from report_store import _final_metrics, _log_run, _params

from reports import ReportError
from reports.data import load_report_data
from reports.runs import load_runs, with_reference
from reports.tables import NE_DELTA, SPEED_RATIO


@pytest.fixture(scope="module")
def ref_store(tmp_path_factory):
    """``baseline``: uniform at 1.0 (+ hashing); ``k_only``: FIITED alone, same setup;
    ``other_batch``: uniform at 1.0 trained with another batch size."""
    from mlflow.tracking import MlflowClient

    root = tmp_path_factory.mktemp("refstore")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    rng = np.random.default_rng(3)
    plan = {
        "baseline": [("uniform", 1.0, None, {}), ("hashing", 0.5, None, {})],
        "k_only": [("fiited", 0.1, {"method.num_chunks": 2}, {}),
                   ("fiited", 0.1, {"method.num_chunks": 4}, {})],
        "other_batch": [("uniform", 1.0, None, {"train.batch_size": 256})],
    }
    i = 0
    for name, configs in plan.items():
        exp = client.create_experiment(name, artifact_location=(root / "art" / name).as_uri())
        for method, budget, over, setup in configs:
            for seed in (0, 1):
                p = {**_params(method, budget, over, seed, i := i + 1), **setup}
                _log_run(client, exp, p, _final_metrics(method, budget, p, rng))
    return uri


def test_borrowed_uniform_runs_give_the_deltas_an_ablation_lacks(ref_store):
    alone = load_report_data("k_only", ref_store).summary
    assert f"{NE_DELTA} mean" not in alone or alone[f"{NE_DELTA} mean"].isna().all()

    data = load_report_data("k_only", ref_store, reference="baseline")
    runs = data.runs
    assert runs.reference_from == "baseline"
    borrowed = runs.complete[runs.complete["method"] == "uniform"]
    assert len(borrowed) == 2 and (borrowed["tag.reference_experiment"] == "baseline").all()
    assert "hashing" not in set(runs.frame["method"])  # only uniform at budget 1.0 is borrowed

    base = load_runs("baseline", ref_store).complete
    uni = base[base["method"] == "uniform"]
    ne = runs.ne_metric
    fiited = runs.complete[runs.complete["method"] == "fiited"]
    for k, row in data.summary[data.summary["method"] == "fiited"].set_index("K").iterrows():
        mine = fiited[fiited["K"] == k]
        expected = (100 * (mine[ne] / uni[ne].mean() - 1)).mean()
        assert row[f"{NE_DELTA} mean"] == pytest.approx(expected)
        # speed met another sweep's load: no ratio against a borrowed reference
        assert f"{SPEED_RATIO} mean" not in row or np.isnan(row[f"{SPEED_RATIO} mean"])
    assert borrowed["perf/train_samples_per_s"].isna().all()
    assert borrowed["mem/total_bytes"].notna().all()


def test_a_reference_with_other_settings_is_refused_naming_the_param(ref_store):
    with pytest.raises(ReportError, match=r"train\.batch_size is 256 .* but 128 in 'k_only'"):
        load_report_data("k_only", ref_store, reference="other_batch")


def test_an_experiment_with_its_own_uniform_refuses_a_reference(ref_store):
    own = load_runs("baseline", ref_store)
    with pytest.raises(ReportError, match="has its own uniform runs"):
        with_reference(own, load_runs("other_batch", ref_store))
    with pytest.raises(ReportError, match="no complete uniform run"):
        load_report_data("k_only", ref_store, reference="k_only")


def test_cli_report_says_where_the_reference_came_from(ref_store, tmp_path):
    from reports.cli import main

    for args, expect in ((["--reference", "baseline"], "borrowed from experiment `baseline`"),
                         ([], "No uniform run at budget 1.0")):
        out = tmp_path / ("with" if args else "without")
        with contextlib.redirect_stdout(io.StringIO()):
            code = main(["--experiment", "k_only", "--tracking-uri", ref_store, "--out",
                         str(out), "--no-notebook", *args])
        assert code == 0
        assert expect in (out / "report.md").read_text()
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(["--experiment", "k_only", "--tracking-uri", ref_store, "--out",
                     str(tmp_path / "bad"), "--no-notebook", "--reference", "other_batch"])
    assert code == 2 and "train.batch_size" in err.getvalue()


def test_the_setup_fingerprint_decides_what_params_do_not_show(tmp_path):
    """Runs log a setup key as a param only where a command line set it; the ``fiited.setup``
    tag (every data/model/train key) then decides: same fingerprint -> borrowed, other -> no."""
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    rng = np.random.default_rng(5)
    plan = {"ablation": ("fiited", 0.1, "a", {"train.warmup_steps": 20}),
            "same": ("uniform", 1.0, "a", {}), "other": ("uniform", 1.0, "b", {})}
    for i, (name, (method, budget, setup, extra)) in enumerate(plan.items()):
        exp = client.create_experiment(name, artifact_location=(tmp_path / name).as_uri())
        for seed in (0, 1):
            p = {**_params(method, budget, None, seed, 10 * i + seed), **extra}
            rid = _log_run(client, exp, p, _final_metrics(method, budget, p, rng))
            client.set_tag(rid, "fiited.setup", setup)
    data = load_report_data("ablation", uri, reference="same")
    assert set(data.runs.complete["method"]) == {"fiited", "uniform"}
    with pytest.raises(ReportError, match=r"other data/model/train settings .*config\.yaml"):
        load_report_data("ablation", uri, reference="other")
