"""The paper's experiments as ready sweeps: compose every one, run two for real, report them."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
from hydra import compose, initialize_config_dir

from benchmark.config import register_configs
from tests.benchmark.test_app import job_runs

REPO = Path(__file__).resolve().parents[2]
EXPERIMENTS = sorted(p.stem for p in (REPO / "conf" / "experiment").glob("*.yaml"))


@pytest.mark.parametrize("name", EXPERIMENTS)
@pytest.mark.parametrize("scale", [None, "smoke", "default", "full"])
def test_every_experiment_composes_at_every_scale(name, scale):
    register_configs()
    overrides = [f"experiment={name}"] + ([f"scale={scale}"] if scale else [])
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=overrides, return_hydra_config=True)
    assert cfg.tracking.experiment == name
    params = cfg.hydra.sweeper.params
    assert params, f"experiment {name} sweeps nothing"
    if scale == "smoke" and name != "demo":
        assert cfg.train.max_steps <= 100 and str(params.seed) == "0"
    if scale is None and name != "demo":  # an experiment alone runs at the default scale
        assert cfg.train.batch_size == 1024 and cfg.hydra.launcher.n_jobs == 2


def test_experiments_with_other_synthetic_settings_use_their_own_data_dir():
    """A dataset dir holds one set of generator settings (another is refused), so an experiment
    that changes them must not share the default dir, or it fails after any other ran."""
    register_configs()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        base = compose("config", overrides=["data=synthetic_criteo"], return_hydra_config=True)
        for name in EXPERIMENTS:
            for scale in ("smoke", "default"):
                cfg = compose("config", overrides=[f"experiment={name}", f"scale={scale}"],
                              return_hydra_config=True)
                if cfg.data.name != "synthetic_criteo":
                    continue
                same_sizes = compose("config", overrides=[
                    f"scale={scale}", "data=synthetic_criteo", "hydra/launcher=joblib"],
                    return_hydra_config=True)
                if cfg.data.synthetic != same_sizes.data.synthetic:
                    assert cfg.data.path != same_sizes.data.path, (name, scale)
    assert base.data.synthetic.drift != 0.2  # stability's drift is not the default
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        knobs = compose("config", overrides=["data.synthetic.zipf_max=1.5",
                                             "data.synthetic.drift=0.05"])
    assert knobs.data.path == base.data.path + "_zipfmax1.5"  # drift 0.05 is the default


def _group_choices() -> list[tuple[str, str, str]]:
    """(experiment, group, choice) for every config-group choice an experiment sweeps (+group)."""
    out = []
    for name in EXPERIMENTS:
        text = (REPO / "conf" / "experiment" / f"{name}.yaml").read_text()
        for line in text.splitlines():
            key, _, value = line.strip().partition(":")
            if key.startswith("+") and value.strip():
                out += [(name, key[1:], c.strip()) for c in value.split(",")]
    return out


@pytest.mark.parametrize("name,group,choice", _group_choices())
def test_every_swept_group_choice_composes(name, group, choice):
    register_configs()
    overrides = [f"experiment={name}", f"+{group}={choice}"]
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    assert cfg.method.name and 0 < cfg.method.budget <= 1


def test_compare_total_bounds_total_bytes_of_every_pruner():
    """Equal-total-memory cases: every method with an index uses the hashed one and scope total."""
    cases = [c for n, g, c in _group_choices() if n == "compare_total"]
    assert {"uniform", "fiited_k4", "adaembed", "itep"} <= set(cases)
    register_configs()
    seen_chunks = set()
    for case in cases:
        with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
            cfg = compose("config", overrides=["experiment=compare_total", f"+total_case={case}"])
        if "index" in cfg.method:
            assert cfg.method.index == "hashed" and cfg.method.budget_scope == "total", case
            seen_chunks.add((cfg.method.name, cfg.method.num_chunks))
    assert ("fiited", 4) in seen_chunks and ("adaembed", 1) in seen_chunks


@pytest.mark.slow
def test_smoke_sweeps_of_two_experiments_then_reports(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO), TQDM_DISABLE="1")
    app = [sys.executable, "-m", "benchmark.app", "-m"]
    data = f"data.path={tmp_path / 'smoke_data'}"
    runs = {
        "k_sweep": [*app, "experiment=k_sweep", "scale=smoke", data,
                    "method.num_chunks=1,4", "method.budget=0.25"],
        "padding": [*app, "experiment=padding", "scale=smoke", data, "method.budget=0.25"],
    }
    for name, cmd in runs.items():
        proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=900)
        assert proc.returncode == 0, proc.stderr[-3000:]
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    k = job_runs(mlflow.search_runs(experiment_names=["k_sweep"]))
    assert sorted(k["params.method.num_chunks"].astype(int)) == [1, 4]
    assert (k["status"] == "FINISHED").all()
    pad = job_runs(mlflow.search_runs(experiment_names=["padding"]))
    assert sorted(pad["params.method.padding"]) == ["projection", "zeros"]
    for name, with_notebook in (("k_sweep", True), ("padding", False)):
        out = tmp_path / "report" / name
        cmd = [sys.executable, "-m", "reports.cli", "--experiment", name,
               "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}", "--out", str(out)]
        if not with_notebook:
            cmd.append("--no-notebook")
        proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=900)
        assert proc.returncode == 0, proc.stderr[-3000:]
        pngs = list(out.rglob("*.png"))
        assert pngs and all(p.stat().st_size > 1000 for p in pngs)
        csvs = list(out.rglob("*.csv"))
        assert csvs
        if with_notebook:
            nb = next(out.rglob("*.ipynb"))
            cells = json.loads(nb.read_text())["cells"]
            errors = [o for c in cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
            assert not errors


def test_logged_params_are_headline_keys_off_default_knobs_and_overrides():
    from omegaconf import OmegaConf

    from benchmark.job import compared_params
    from benchmark.tracking import flatten

    register_configs()

    def params(*overrides):
        with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
            cfg = compose("config", overrides=list(overrides))
        return compared_params(flatten(OmegaConf.to_container(cfg, resolve=True)), overrides,
                               "smoke")

    uniform = params("method=uniform", "tracking.uri=sqlite:///x.db", "train.warmup_steps=3")
    assert {"method.name", "method.budget", "seed", "scale", "train.max_steps",
            "train.warmup_steps"} <= set(uniform)            # the override too
    assert not [k for k in uniform if k.startswith(("tracking.", "data.synthetic."))]
    assert uniform["scale"] == "smoke"
    hashed = params("+total_case=fiited_k4")                 # sets method.index off its default
    assert hashed["method.index"] == "hashed" and hashed["method.num_chunks"] == "4"
    assert "method.admission_sketch" not in hashed           # left at its default
    tune = params("experiment=tune", "tune.case=fiited_k2")
    assert {"tune.case", "train.sparse_optimizer.lr", "method.gamma"} <= set(tune)
    assert not [k for k in tune if k.startswith("tune.space.")]
