"""Fixtures that compose the REAL Hydra config and run the real app on tiny synthetic data."""
from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from benchmark.config import register_configs

REPO = Path(__file__).resolve().parents[2]
CONF_DIR = str(REPO / "conf")
APP = [sys.executable, "-m", "benchmark.app"]


def tiny_overrides(data_dir: Path | None) -> list[str]:
    """A dataset and model small enough for seconds-long runs, still with the real structure.

    ``data_dir=None`` leaves the data settings alone (for tests that bring their own data).
    """
    data = [] if data_dir is None else [
        f"data.path={data_dir}",
        "data.synthetic.rows=30000",
        "data.synthetic.scale=0.0001",
        "data.synthetic.days=4",
    ]
    return [
        *data,
        "model=dlrm_small",
        "train.batch_size=256",
        "train.eval_batch_size=4096",
        "train.warmup_steps=2",
        "train.log_every=10",
        "train.memory_every=10",
        "train.threads=1",
        "train.progress=false",
        "train.dense_optimizer=adagrad",
        "train.dense_lr=0.02",
    ]


@pytest.fixture(scope="session")
def tiny_data_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("data") / "tiny_criteo"


@pytest.fixture
def compose_cfg(tiny_data_dir):
    """compose_cfg(*overrides) -> the resolved DictConfig the app would run."""
    register_configs()

    def _compose(*overrides: str, tiny_data: bool = True):
        data_dir = tiny_data_dir if tiny_data else None
        with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
            return compose("config", overrides=[*tiny_overrides(data_dir), *overrides])
    return _compose


@pytest.fixture
def run_app(tmp_path, tiny_data_dir):
    """run_app(*overrides, multirun=False) runs `python -m benchmark.app` in tmp_path."""

    def _run(*overrides: str, multirun: bool = False, check: bool = True, tiny: bool = True):
        args = [*APP, *(["-m"] if multirun else []),
                *(tiny_overrides(tiny_data_dir) if tiny else []), *overrides]
        env = dict(os.environ, PYTHONPATH=str(REPO), TQDM_DISABLE="1")
        proc = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, env=env,
                              timeout=600)
        if check and proc.returncode != 0:
            raise AssertionError(f"app failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n"
                                 f"{proc.stderr[-4000:]}")
        return proc
    return _run


@dataclass
class SmokeStore:
    """What a new user's first two commands leave in one launch dir (``mlflow.db`` there)."""

    root: Path
    data: str                             # the data.path override both commands share
    single: subprocess.CompletedProcess   # method=uniform method.budget=0.5, experiment "single"
    sweep: subprocess.CompletedProcess    # -m method=uniform,fiited method.budget=1.0,0.5: "grid"

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
    """One smoke-scale single run and one 2x2 smoke sweep through the real app, made once for
    every test that only reads what they logged (tests that change a store copy it)."""
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
    sweep = app("-m", "method=uniform,fiited", "method.budget=1.0,0.5", "scale=smoke", data,
                "tracking.experiment=grid")
    return SmokeStore(root, data, single, sweep)
