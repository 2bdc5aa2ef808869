"""``experiment=tune``: an equal tuning budget for every method, driven by optuna directly.

One job tunes one case (``tune.case``: a conf/total_case/ name, or a method with
``tune.case_group=method``) on one dataset (``tune.dataset``) at one budget: ``tune.trials``
trials, each a full training run through ``run_job`` (so each is an MLflow run of the ``tune``
experiment, params ``tune.*`` included), minimising validation NE (test data is never seen).
The search space is the learning rate plus the method's main knob (``tune.space``); knobs the
case itself fixes (fiited_k2's K) are left out. A sweep over cases and datasets gives every
method the same number of trials; studies live in optuna's sqlite storage beside the MLflow
store (the Hydra optuna sweeper is broken with SQLAlchemy 2) and resume where they stopped.

The best values go to ``tune.out`` (JSON, dataset -> case -> params), and a comparison sweep
reads them with ``tuned=FILE`` (``apply_tuned``), which sets them on every run of that case.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import logging
from pathlib import Path
from typing import Any, Iterator, Mapping

from omegaconf import DictConfig, OmegaConf

from benchmark.errors import UserError, one_line

log = logging.getLogger(__name__)
KINDS = ("log", "float", "int", "choice")
CONF_DIR = Path(__file__).resolve().parent.parent / "conf"
# overrides a trial sets itself (a user's would clash with them)
_TRIAL_KEYS = ("data", "method", "method.budget", "total_case", "+total_case", "tuned")


def search_space(tune: Mapping[str, Any], method: str, fixed: set[str]) -> dict[str, list]:
    """``tune.space.common`` plus ``tune.space.<method>``, minus the keys the case fixes;
    every entry checked: ``[log|float|int, low, high]`` or ``[choice, a, b, ...]``."""
    space = dict(tune.get("space", {}).get("common", {}) or {})
    space.update(tune.get("space", {}).get(method, {}) or {})
    out = {}
    for key, spec in space.items():
        spec = list(spec)
        if not spec or spec[0] not in KINDS:
            raise UserError(f"tune.space: {key}: the first entry must be one of {KINDS}, "
                            f"got {spec[:1]}")
        if spec[0] == "choice" and len(spec) < 2 or spec[0] != "choice" and (
                len(spec) != 3 or not spec[1] < spec[2] or spec[0] == "log" and spec[1] <= 0):
            raise UserError(f"tune.space: {key}: {spec} is not [log|float|int, low < high] "
                            f"(log: low > 0) or [choice, values...]")
        if key not in fixed:
            out[key] = spec
    return out


def suggest(trial, key: str, spec: list):
    kind, *args = spec
    if kind == "choice":
        return trial.suggest_categorical(key, args)
    if kind == "int":
        return trial.suggest_int(key, int(args[0]), int(args[1]))
    return trial.suggest_float(key, float(args[0]), float(args[1]), log=kind == "log")


def case_overrides(tune: Mapping[str, Any]) -> tuple[list[str], set[str]]:
    """The overrides that select the case, and the dotted keys its file fixes."""
    case, group = str(tune["case"]), str(tune.get("case_group", "total_case"))
    if group == "method":
        return [f"method={case}"], set()
    if group != "total_case":
        raise UserError(f"tune.case_group={group!r}: choose total_case or method")
    path = CONF_DIR / "total_case" / f"{case}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in path.parent.glob("*.yaml"))
        raise UserError(f"tune.case={case!r}: no conf/total_case/{case}.yaml; known: "
                        f"{', '.join(known)}")
    fixed = OmegaConf.to_container(OmegaConf.load(path)).get("method", {}) or {}
    return [f"+total_case={case}"], {f"method.{k}" for k in fixed}


def storage_url(cfg: DictConfig, launch_dir: Path) -> str:
    """``tune.storage``, else ``optuna.db`` beside the sqlite MLflow store (or in the launch
    directory when MLflow is not a sqlite file)."""
    if cfg.tune.get("storage"):
        return str(cfg.tune.storage)
    uri = str(cfg.tracking.uri)
    if uri.startswith("sqlite:///"):
        db = Path(uri[len("sqlite:///"):])
        db = db if db.is_absolute() else launch_dir / db
        return f"sqlite:///{db.parent / 'optuna.db'}"
    return f"sqlite:///{launch_dir / 'optuna.db'}"


@contextlib.contextmanager
def storage_lock(storage: str) -> Iterator[None]:
    """An exclusive file lock beside a sqlite optuna storage (nothing for other storages)."""
    if not storage.startswith("sqlite:///"):
        yield
        return
    db = Path(storage[len("sqlite:///"):])
    db.parent.mkdir(parents=True, exist_ok=True)
    with open(db.with_name(db.name + ".lock"), "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def run_tune(cfg: DictConfig, run_dir: Path, launch_dir: Path) -> float:
    """Run this job's trials (up to ``tune.trials`` in the study) and write the best values."""
    import optuna
    from hydra import compose
    from hydra.core.hydra_config import HydraConfig

    from benchmark.app import run_job
    from benchmark.job import is_infeasible

    tune = OmegaConf.to_container(cfg.tune, resolve=True)
    trials, budget = int(tune["trials"]), float(tune["budget"])
    if trials < 1 or not 0 < budget <= 1:
        raise UserError(f"tune.trials={trials} must be >= 1 and tune.budget={budget} in (0, 1]")
    dataset, case = str(tune["dataset"]), str(tune["case"])
    select, fixed = case_overrides(tune)
    base = [o for o in HydraConfig.get().overrides.task
            if o.split("=", 1)[0].lstrip("+~") not in _TRIAL_KEYS]
    setup = [*base, f"data={dataset}", *select, f"method.budget={budget}"]
    probe = compose("config", overrides=setup)
    space = search_space(tune, str(probe.method.name), fixed)
    name = f"{tune.get('study', 'tune')}:{dataset}:{case}:b{budget:g}"
    storage = storage_url(cfg, launch_dir)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with storage_lock(storage):  # parallel jobs' first use of a fresh optuna.db races on its schema
        study = optuna.create_study(study_name=name, storage=storage, direction="minimize",
                                    sampler=optuna.samplers.TPESampler(seed=int(tune["seed"])),
                                    load_if_exists=True)
    done = sum(t.state.is_finished() for t in study.trials)

    def objective(trial) -> float:
        params = {k: suggest(trial, k, spec) for k, spec in space.items()}
        overrides = [*setup, f"++tune.trial={trial.number}", f"++tune.study={name}",
                     *(f"{k}={v}" for k, v in params.items())]
        try:
            summary = run_job(compose("config", overrides=overrides),
                              run_dir / f"trial_{trial.number:03d}", launch_dir)
        except Exception as e:
            if is_infeasible(e):
                raise optuna.TrialPruned(one_line(e)) from e
            raise
        trial.set_user_attr("mlflow_run_id", summary.get("mlflow_run_id"))
        return float(summary["val/ne"])

    study.optimize(objective, n_trials=max(0, trials - done))
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not complete:
        raise UserError(f"tune: no trial of {name} completed (every one infeasible?)")
    best = study.best_trial
    entry = {"params": best.params, "val_ne": best.value, "trials": len(complete),
             "study": name, "storage": storage, "budget": budget,
             "mlflow_run_id": best.user_attrs.get("mlflow_run_id")}
    out = _path(str(tune.get("out", "tuned.json")), launch_dir)
    write_best(out, dataset, case, entry)
    log.info("tune %s: best val NE %.5f with %s (%d trials) -> %s", name, best.value,
             best.params, len(complete), out)
    return float(best.value)


def write_best(path: Path, dataset: str, case: str, entry: dict) -> None:
    """Merge one study's best into ``path`` under a lock (parallel jobs share the file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(f".{path.name}.lock"), "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        data = json.loads(path.read_text()) if path.is_file() else {}
        data.setdefault(dataset, {})[case] = entry
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
        tmp.replace(path)


def apply_tuned(cfg: DictConfig, choices: Mapping[str, Any], launch_dir: Path) -> dict:
    """Set the tuned values of this run's dataset and case (``+total_case`` choice, else the
    method) from the ``tuned=FILE`` written by ``experiment=tune``; returns them."""
    path = _path(str(cfg.tuned), launch_dir)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"tuned={cfg.tuned}: {path} does not exist (experiment=tune writes "
                        f"it)") from None
    except json.JSONDecodeError as e:
        raise UserError(f"tuned={cfg.tuned}: not JSON ({e.msg}, line {e.lineno})") from None
    case = choices.get("total_case") or choices.get("method") or str(cfg.method.name)
    dataset = str(cfg.data.name)
    entry = data.get(dataset, {}).get(case) if isinstance(data, dict) else None
    if not isinstance(entry, dict) or not isinstance(entry.get("params"), dict):
        have = sorted(f"{d}/{c}" for d, v in (data.items() if isinstance(data, dict) else [])
                      for c in (v if isinstance(v, dict) else {}))
        raise UserError(f"tuned={cfg.tuned}: no tuned values for dataset {dataset!r}, case "
                        f"{case!r} (run experiment=tune tune.dataset={dataset} "
                        f"tune.case={case}); it has: {', '.join(have) or '(none)'}")
    for key, value in entry["params"].items():
        if OmegaConf.select(cfg, key) is None and key.split(".")[0] not in ("method", "train"):
            raise UserError(f"tuned={cfg.tuned}: {key!r} is not a config key")
        OmegaConf.update(cfg, key, value, merge=False)
    return entry["params"]


def _path(p: str, launch_dir: Path) -> Path:
    path = Path(p).expanduser()
    return path if path.is_absolute() else launch_dir / path
