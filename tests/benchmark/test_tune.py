"""experiment=tune: the same number of optuna trials per case through the real app, each an
MLflow run; the best values land in tuned.json and `tuned=` applies them to a later run."""
from __future__ import annotations

import json

import mlflow
import optuna
import pytest
import yaml
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from benchmark.config import register_configs
from benchmark.errors import UserError
from benchmark.tune import apply_tuned, case_overrides, search_space, write_best
from tests.benchmark.conftest import CONF_DIR, REPO

TUNE = yaml.safe_load((REPO / "conf" / "experiment" / "tune.yaml").read_text())
CASES = TUNE["hydra"]["sweeper"]["params"]["tune.case"].split(",")


@pytest.mark.slow
def test_two_trials_per_case_through_the_app(run_app, tmp_path):
    run_app("experiment=tune", "scale=smoke", "tune.trials=2", multirun=True)
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["tune"])
    trials = runs[runs["params.tune.trial"].notna()]
    assert (trials["status"] == "FINISHED").all()
    per_case = trials.groupby("params.tune.case").size().to_dict()
    assert per_case == {c: 2 for c in CASES}
    tuned = json.loads((tmp_path / "tuned.json").read_text())["synthetic_criteo"]
    assert sorted(tuned) == sorted(CASES)
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    for case, entry in tuned.items():
        study = optuna.load_study(study_name=entry["study"], storage=storage)
        assert len(study.trials) == 2 and entry["trials"] == 2
        assert entry["val_ne"] == pytest.approx(min(t.value for t in study.trials))
        assert "train.sparse_optimizer.lr" in entry["params"]
    assert "method.num_chunks" not in tuned["fiited_k2"]["params"]      # the case fixes K
    assert "method.gamma" in tuned["fiited_k2"]["params"]
    assert "train.embedding_l2" in tuned["uniform"]["params"]
    assert "method.alpha" in tuned["mixed_dim"]["params"]
    # a comparison run reads them
    run_app("+total_case=fiited_k2", "scale=smoke", "tuned=tuned.json", "tracking=none",
            "method.budget=0.25", "hydra.run.dir=tuned_run")
    cfg = OmegaConf.load(tmp_path / "tuned_run" / "config.yaml")
    assert cfg.method.gamma == tuned["fiited_k2"]["params"]["method.gamma"]
    assert cfg.train.sparse_optimizer.lr == tuned["fiited_k2"]["params"][
        "train.sparse_optimizer.lr"]


def test_search_space_per_method_without_the_case_s_fixed_knobs():
    select, fixed = case_overrides({"case": "fiited_k2"})
    assert select == ["+total_case=fiited_k2"] and "method.num_chunks" in fixed
    space = search_space(TUNE["tune"], "fiited", fixed)
    assert set(space) == {"train.sparse_optimizer.lr", "method.gamma"}
    assert set(search_space(TUNE["tune"], "fiited", set())) >= {"method.num_chunks"}
    assert set(search_space(TUNE["tune"], "hashing", set())) == {"train.sparse_optimizer.lr"}
    with pytest.raises(UserError, match="tune.space: train.x"):
        search_space({"space": {"common": {"train.x": ["log", 0.0, 1.0]}}}, "uniform", set())
    with pytest.raises(UserError, match="tune.case='nope'"):
        case_overrides({"case": "nope"})


def test_apply_tuned_sets_values_or_names_what_is_missing(tmp_path):
    path = tmp_path / "tuned.json"
    write_best(path, "synthetic_criteo", "fiited_k2",
               {"params": {"method.gamma": 0.95, "train.sparse_optimizer.lr": 0.02}})
    write_best(path, "synthetic_criteo", "uniform", {"params": {"train.embedding_l2": 1e-5}})
    assert sorted(json.loads(path.read_text())["synthetic_criteo"]) == ["fiited_k2", "uniform"]
    register_configs()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("config", overrides=["+total_case=fiited_k2", f"tuned={path}"])
    applied = apply_tuned(cfg, {"total_case": "fiited_k2"}, tmp_path)
    assert applied["method.gamma"] == 0.95
    assert cfg.method.gamma == 0.95 and cfg.train.sparse_optimizer.lr == 0.02
    assert cfg.method.num_chunks == 2
    with pytest.raises(UserError, match="case 'itep'.*synthetic_criteo/uniform"):
        apply_tuned(cfg, {"total_case": "itep"}, tmp_path)


def _create(storage: str, name: str) -> int:
    from benchmark.tune import storage_lock

    with storage_lock(storage):
        study = optuna.create_study(study_name=name, storage=storage, load_if_exists=True)
    return len(study.trials)


def test_parallel_first_use_of_a_fresh_optuna_db(tmp_path):
    """Parallel tune jobs each open a fresh optuna.db: the schema is created once, not raced."""
    import concurrent.futures as cf
    import multiprocessing as mp

    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    with cf.ProcessPoolExecutor(4, mp_context=mp.get_context("fork")) as pool:
        got = list(pool.map(_create, [storage] * 4, [f"s{i}" for i in range(4)]))
    assert got == [0, 0, 0, 0]
    assert sorted(s.study_name for s in optuna.get_all_study_summaries(storage)) == \
        ["s0", "s1", "s2", "s3"]
