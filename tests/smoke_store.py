"""One smoke sweep and one smoke run through the real app, made once per test session and read
by the tests in tests/benchmark and tests/reports that only look at what they logged (a test
that changes a store copies it first). Registered in tests/conftest.py."""
from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
APP = [sys.executable, "-m", "benchmark.app"]
GRID = ("-m", "method=uniform,hashing,fiited", "method.budget=1.0,0.5", "scale=smoke")
GRID_RUNS = 6


@dataclass
class SmokeStore:
    """What a new user's first commands leave in one launch dir (``mlflow.db`` there)."""

    root: Path
    data: str                             # the data.path override every command shares
    single: subprocess.CompletedProcess   # method=uniform method.budget=0.5: experiment "single"
    sweep: subprocess.CompletedProcess    # GRID: experiment "grid"
    system: subprocess.CompletedProcess   # train.system_metrics=true: experiment "sysm"

    @property
    def uri(self) -> str:
        return f"sqlite:///{self.root / 'mlflow.db'}"

    def runs(self, experiment: str, children_only: bool = True):
        from mlflow import MlflowClient

        client = MlflowClient(tracking_uri=self.uri)
        exp = client.get_experiment_by_name(experiment)
        runs = client.search_runs([exp.experiment_id], max_results=1000)
        if children_only:
            runs = [r for r in runs if r.data.tags.get("fiited.sweep") != "parent"]
        return client, exp, runs


@pytest.fixture(scope="session")
def smoke_store(tmp_path_factory) -> SmokeStore:
    """``fiited-bench method=uniform method.budget=0.5 scale=smoke`` (experiment ``single``),
    the ``GRID`` sweep (``grid``) and a run with ``train.system_metrics=true``, long enough for
    MLflow's 2 s sampler to log (``sysm``), into one store."""
    root = tmp_path_factory.mktemp("smoke_store")
    data = f"data.path={root / 'data' / 'criteo'}"
    env = dict(os.environ, PYTHONPATH=str(REPO), TQDM_DISABLE="1")

    def app(*args: str) -> subprocess.CompletedProcess:
        proc = subprocess.run([*APP, *args], cwd=root, capture_output=True, text=True, env=env,
                              timeout=900)
        if proc.returncode != 0:
            raise AssertionError(f"{args}: app failed ({proc.returncode}):\n"
                                 f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
        return proc

    single = app("method=uniform", "method.budget=0.5", "scale=smoke", data,
                 "tracking.experiment=single")
    sweep = app(*GRID, data, "tracking.experiment=grid")
    system = app("method=uniform", "scale=smoke", data, "train.system_metrics=true",
                 "train.epochs=8", "train.max_steps=560", "tracking.experiment=sysm")
    return SmokeStore(root, data, single, sweep, system)
