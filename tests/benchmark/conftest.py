"""Fixtures that compose the REAL Hydra config and run the real app on tiny synthetic data."""
from __future__ import annotations

import os
import subprocess
import sys
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

