"""experiment=compare_datasets runs on every one of its datasets in one multirun, MovieLens-100K
(prepared from the recbole wheel) included."""
from __future__ import annotations

import importlib.resources
import importlib.util

import mlflow
import pytest
import yaml

from tests.benchmark.conftest import REPO

EXP = yaml.safe_load((REPO / "conf" / "experiment" / "compare_datasets.yaml").read_text())
DATASETS = EXP["hydra"]["sweeper"]["params"]["data"].split(",")


@pytest.mark.slow
def test_one_case_on_every_dataset(run_app, tmp_path):
    if importlib.util.find_spec("recbole") is None:
        pytest.skip("recbole is not installed (make test installs recbole==1.2.1 --no-deps)")
    from benchmark.data.cli import main as data_main

    src = importlib.resources.files("recbole") / "dataset_example" / "ml-100k"
    assert data_main(["prepare", "movielens", "--input", str(src),
                      "--out", str(tmp_path / "data" / "movielens")]) in (0, None)
    run_app("experiment=compare_datasets", "scale=smoke", "+total_case=freq_filter",
            "method.budget=0.25", "data.synthetic.rows=20000", "data.synthetic.scale=0.0001",
            "model=dlrm_small", "train.max_steps=20", multirun=True, tiny=False)
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["compare_datasets"])
    runs = runs[runs["params.method.name"] == "freq_filter"]
    assert (runs["status"] == "FINISHED").all()
    assert sorted(runs["params.data.name"]) == sorted(DATASETS)
    # the larger-data preset shares the default's smoke data; every other one is its own
    assert runs["tags.dataset_fingerprint"].nunique() == len(DATASETS) - 1
    assert (runs["metrics.val/ne"] < 1.2).all()
