"""Around one job's training: open its MLflow run (or reuse a FINISHED one in a sweep re-run),
tag it for filtering, link it to its sweep and to the run it resumes, log its dataset.

Kept out of ``app.py`` so the app reads as: validate, open the run, train, close it.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any, Iterable, Mapping

from omegaconf import DictConfig

from benchmark.summary import fraction

log = logging.getLogger(__name__)
PARENT_ENV = "FIITED_PARENT_RUN_ID"   # set by the sweep callback for the jobs it launches
SKIPPED_FILE = "skipped.txt"          # a job dir's note: not run, and why
REUSED_FILE = "reused.txt"
CONFIG_ARTIFACT = "config.yaml"       # the whole resolved config, on every run
METHOD_DIR = Path(__file__).resolve().parent.parent / "conf" / "method"
# The params a person compares between two runs (the compare view lists every param, and its
# plot opens on the first three that differ, sorted): the method's headline knobs and those it
# sets off its conf/method default, the setup's few headline keys, a tuning trial's keys, and
# whatever the command line or sweep overrode. The whole config is the config.yaml artifact.
METHOD_KEYS = ("name", "budget", "num_chunks", "utility", "gamma", "sample_frac", "thresholds",
               "padding")   # the ones reports group by (reports/runs.py CONFIG_FIELDS)
COMPARED_KEYS = frozenset({
    "seed", "data.name", "model.name", "model.dim", "train.batch_size", "train.epochs",
    "train.max_steps", "train.dense_optimizer", "train.dense_lr", "train.sparse_optimizer.name",
    "train.sparse_optimizer.lr", "train.sparse_optimizer.accumulator", "train.embedding_l2",
    *(f"method.{k}" for k in METHOD_KEYS)})


def run_name(cfg: DictConfig) -> str:
    """A name a person reads in the run list: ``fiited K=4 1/16 s0``."""
    parts = [str(cfg.method.name)]
    if "num_chunks" in cfg.method:
        parts.append(f"K={cfg.method.num_chunks}")
    parts += [fraction(float(cfg.method.get("budget", 1.0))), f"s{cfg.seed}"]
    return " ".join(parts)


def in_sweep() -> bool:
    from hydra.core.hydra_config import HydraConfig

    return HydraConfig.initialized() and HydraConfig.get().mode.name == "MULTIRUN"


def is_infeasible(e: BaseException | None) -> bool:
    """The budget cannot exist at this data size (anywhere in the exception's cause chain)."""
    from fiited.errors import BudgetInfeasible

    while e is not None:
        if isinstance(e, BudgetInfeasible):
            return True
        e = e.__cause__
    return False


def open_run(cfg: DictConfig, run_dir: Path, launch_dir: Path, uri: str, artifact_root: str | None,
             flat: Mapping[str, str], enabled: bool):
    """(tracker, reused summary or None). Marks this experiment's lost runs KILLED first; in a
    sweep, a config that already FINISHED is not run again unless ``sweep.rerun=true``."""
    from benchmark.run_state import (CONFIG_TAG, RESUMED_FROM_TAG, SETUP_TAG, config_fingerprint,
                                     finished_run, mark_lost, run_of_dir, setup_fingerprint)
    from benchmark.tracking import Tracker, prepare_store

    tc = cfg.tracking
    fingerprint = config_fingerprint(flat)
    tags: dict[str, Any] = {CONFIG_TAG: fingerprint, SETUP_TAG: setup_fingerprint(flat)}
    if enabled:
        from mlflow import MlflowClient

        client = MlflowClient(tracking_uri=uri)
        exp_id = prepare_store(uri, tc.experiment, artifact_root)
        mark_lost(client, [exp_id])
        if in_sweep() and not cfg.sweep.rerun:
            done = finished_run(client, exp_id, fingerprint)
            if done is not None:
                return None, _reuse(client, done, run_dir)
        if os.environ.get(PARENT_ENV):
            tags["mlflow.parentRunId"] = os.environ[PARENT_ENV]
        if cfg.train.resume:
            ckpt_dir = (launch_dir / str(cfg.train.resume)).resolve().parent
            prev = run_of_dir(client, exp_id, str(ckpt_dir))
            if prev is not None:
                tags[RESUMED_FROM_TAG] = prev.info.run_id
    tracker = Tracker(uri, tc.experiment, tc.run_name or run_name(cfg), enabled=enabled,
                      artifact_root=artifact_root, flush_every=int(tc.flush_every), tags=tags)
    return tracker, None


def _reuse(client, run, run_dir: Path) -> dict[str, Any]:
    """The finished run's summary, copied into this job dir so the sweep's table lists it."""
    run_dir.mkdir(parents=True, exist_ok=True)
    for name in ("summary.json", "config.yaml"):
        try:
            path = client.download_artifacts(run.info.run_id, name, str(run_dir / ".reused"))
            shutil.copy(path, run_dir / name)
        except Exception as e:  # an old run without the artifact: the metrics still count
            log.debug("no %s in run %s: %s", name, run.info.run_id, e)
    shutil.rmtree(run_dir / ".reused", ignore_errors=True)
    note = f"already FINISHED as MLflow run {run.info.run_id} ({run.info.run_name}); " \
           f"sweep.rerun=true runs it again"
    (run_dir / REUSED_FILE).write_text(note + "\n")
    log.info("%s: %s", run.info.run_name, note)
    summary = dict(run.data.metrics)
    if (run_dir / "summary.json").exists():
        summary = json.loads((run_dir / "summary.json").read_text())
    summary["mlflow_run_id"] = run.info.run_id
    summary["reused"] = True
    return summary


def compared_params(flat: Mapping[str, str], overridden: Iterable[str] = (),
                    scale: str | None = None) -> dict[str, str]:
    """The params to log: see ``COMPARED_KEYS``. ``overridden`` are Hydra override strings
    (``+a.b=1``, ``method=qr``); a group choice (no such key) adds nothing, its name is already
    a param (``method.name``, ``data.name``, ``model.name``)."""
    from benchmark.run_state import VOLATILE_PREFIXES

    keys = {k.lstrip("+~").split("=", 1)[0] for k in overridden}
    keys = {k for k in keys if not k.startswith(VOLATILE_PREFIXES)}  # where, not what, is run
    # a tuning trial's searched keys: tune.space.<group>.<key> -> <key>
    keys |= {k.split(".", 3)[3] for k in flat if k.startswith("tune.space.") and k.count(".") >= 3}
    defaults = method_defaults(flat.get("method.name", ""))
    out = {k: v for k, v in flat.items()
           if k in COMPARED_KEYS or k in keys
           or (k.startswith("method.") and defaults.get(k) != v)
           or (k.startswith("tune.") and not k.startswith("tune.space."))}
    if scale is not None:
        out["scale"] = scale
    return out


def method_defaults(name: str) -> dict[str, str]:
    """conf/method/<name>.yaml flattened like the run's params ({} for an unknown name)."""
    from omegaconf import OmegaConf

    from benchmark.tracking import flatten

    path = METHOD_DIR / f"{name}.yaml"
    if not name or not path.is_file():
        return {}
    return flatten(OmegaConf.to_container(OmegaConf.load(path), resolve=True), "method.")


def _hydra_overrides() -> tuple[list[str], str | None]:
    """(this job's override strings, its scale preset), empty outside a Hydra app."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return [], None
    hc = HydraConfig.get()
    return list(hc.overrides.task), hc.runtime.choices.get("scale")


def describe_run(tracker, cfg: DictConfig, manifest, data_path: str, flat: Mapping[str, str],
                 extra_tags: Mapping[str, Any], run_dir: Path | None = None) -> None:
    """Compared params, the whole config as an artifact, filter tags (method, budget, K,
    dataset, seed ...) and the dataset input."""
    from mlflow.utils.mlflow_tags import MLFLOW_GIT_COMMIT
    from omegaconf import OmegaConf

    overridden, scale = _hydra_overrides()
    tracker.log_params(compared_params(flat, overridden, scale))
    if run_dir is not None and tracker.enabled:  # failed runs too; train.py rewrites it at the end
        run_dir.mkdir(parents=True, exist_ok=True)
        path = run_dir / CONFIG_ARTIFACT
        path.write_text(OmegaConf.to_yaml(cfg, resolve=True))
        tracker.log_artifacts([path])
    tags = {"method": cfg.method.name, "budget": cfg.method.get("budget", 1.0),
            "budget_label": fraction(float(cfg.method.get("budget", 1.0))),
            "seed": cfg.seed, "dataset": manifest.name,
            "dataset_fingerprint": manifest.fingerprint, **extra_tags}
    if "num_chunks" in cfg.method:
        tags["K"] = cfg.method.num_chunks
    if "git_commit" in tags:
        tags[MLFLOW_GIT_COMMIT] = str(tags["git_commit"]).removesuffix("-dirty")
    tracker.set_tags(tags)
    sizes = {f"{split}_rows": int(end - start) for split, (start, end) in manifest.splits.items()}
    tracker.log_dataset(manifest.name, manifest.fingerprint, data_path,
                        {**sizes, "num_rows": manifest.num_rows,
                         "tables": manifest.num_features, "dense": manifest.num_dense,
                         "click_rate": round(float(manifest.click_rate), 6)})
    if cfg.train.system_metrics:
        tracker.start_system_metrics(interval_s=2.0)


def record_skip(run_dir: Path, name: str, why: str) -> None:
    """A case that cannot exist at this scale: a note in its job dir, no run in MLflow."""
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / SKIPPED_FILE).write_text(f"{why}\n")
    log.warning("%s skipped: cannot exist at this data size: %s", name, why)
