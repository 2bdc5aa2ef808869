"""MLflow tracking: one experiment per Hydra experiment, one run per job, batched metrics.

Uses ``MlflowClient`` (no global active run) so jobs in one process never cross-log. A fresh
sqlite store is created once before a parallel sweep starts (``prepare_store``), because
concurrent first use of a new sqlite database races on schema creation.
"""
from __future__ import annotations

import fcntl
import json
import logging
import os
import subprocess
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")
# The experiment kind MLflow 3 records ("custom_model_development": model training, not GenAI).
# MLflow 3.17's UI still opens an experiment in its GenAI pages until the browser's GenAI |
# Model training switch says otherwise (seen in headless Chromium; reports/ui.py says so).
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"


def resolve_uri(uri: str, base: str | os.PathLike) -> str:
    """Make a relative sqlite path absolute against ``base`` (the launch dir)."""
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri.startswith(prefix + "/"):
        return prefix + str((Path(base) / uri[len(prefix):]).resolve())
    return uri


def store_location(tc, base: str | os.PathLike) -> tuple[str, str | None]:
    """(tracking URI, artifact root URI or None) of a ``tracking`` config, relative paths
    resolved against ``base`` (the launch dir)."""
    root = tc.artifact_root
    if root and "://" not in root:
        root = (Path(base) / root).resolve().as_uri()
    return resolve_uri(tc.uri, base), root


def default_artifact_root(uri: str) -> str | None:
    """``mlartifacts/`` beside a sqlite file, so store and artifacts travel together."""
    prefix = "sqlite:///"
    if uri.startswith(prefix):
        return (Path(uri[len(prefix):]).parent / "mlartifacts").resolve().as_uri()
    return None


def _retry(fn: Callable[[], T], what: str, attempts: int = 8,
           also: tuple[str, ...] = ()) -> T:
    """Retry sqlite 'database is locked' errors from parallel writers, with backoff (and the
    errors in ``also``, e.g. two jobs creating the same dataset row at once)."""
    for i in range(attempts):
        try:
            return fn()
        except Exception as e:  # mlflow wraps sqlalchemy errors in MlflowException
            text = str(e).lower()
            if not any(s in text for s in ("locked", *also)) or i == attempts - 1:
                raise
            time.sleep(0.05 * 2 ** i)
    raise AssertionError("unreachable")


def prepare_store(uri: str, experiment: str, artifact_root: str | None = None) -> str:
    """Create the store (schema) and the experiment once; return the experiment id.

    Serialised with a file lock beside a sqlite store, so parallel callers are safe too.
    """
    from mlflow import MlflowClient

    lock_path = None
    if uri.startswith("sqlite:///"):
        db = Path(uri[len("sqlite:///"):])
        db.parent.mkdir(parents=True, exist_ok=True)
        lock_path = db.with_name(db.name + ".lock")
    artifact_root = artifact_root or default_artifact_root(uri)
    fh = open(lock_path, "w") if lock_path else None
    try:
        if fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
        client = MlflowClient(tracking_uri=uri)
        exp = client.get_experiment_by_name(experiment)
        if exp is not None:
            if exp.lifecycle_stage == "deleted":
                raise ValueError(f"MLflow experiment {experiment!r} is deleted in {uri}; restore it "
                                 f"or choose another tracking.experiment")
            if exp.tags.get(EXPERIMENT_KIND_TAG) is None:  # stores made before the tag existed
                client.set_experiment_tag(exp.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
            return exp.experiment_id
        location = f"{artifact_root.rstrip('/')}/{experiment}" if artifact_root else None
        return client.create_experiment(experiment, artifact_location=location,
                                        tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND})
    finally:
        if fh:
            fcntl.flock(fh, fcntl.LOCK_UN)
            fh.close()


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flatten(v, key + "."))
        else:
            out[key] = json.dumps(v) if isinstance(v, (list, tuple)) else str(v)
    return out


def git_commit(repo: str | os.PathLike) -> str:
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True,
                             text=True, timeout=5).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return (sha + ("-dirty" if dirty else "")) if sha else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


class Tracker:
    """One MLflow run. A disabled tracker accepts every call and does nothing."""

    def __init__(self, uri: str, experiment: str, run_name: str | None, enabled: bool = True,
                 artifact_root: str | None = None, flush_every: int = 200,
                 tags: Mapping[str, Any] | None = None) -> None:
        """``tags`` are set at creation (standard source/user/parent tags, host and pid), so a
        run is never seen without them; a heartbeat thread then marks it alive."""
        self.enabled = enabled
        self.flush_every = flush_every
        self._buffer: list[Any] = []
        self.run_id: str | None = None
        self._heartbeat = None
        self._system_metrics = None
        if not enabled:
            return
        from mlflow import MlflowClient

        from benchmark.run_state import Heartbeat, process_tags

        self.uri = uri
        self.client = MlflowClient(tracking_uri=uri)
        exp_id = _retry(lambda: prepare_store(uri, experiment, artifact_root), "experiment")
        all_tags = {**process_tags(), **{k: str(v) for k, v in (tags or {}).items()}}
        run = _retry(lambda: self.client.create_run(exp_id, run_name=run_name, tags=all_tags),
                     "create_run")
        self.run_id = run.info.run_id
        self.experiment_id = exp_id
        self._heartbeat = Heartbeat(self.client, self.run_id)

    def start_system_metrics(self, interval_s: float = 10.0) -> None:
        """MLflow's CPU/memory/disk (and GPU when present) sampler, as system/* metrics."""
        if not self.enabled:
            return
        from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

        self._system_metrics = SystemMetricsMonitor(self.run_id, sampling_interval=interval_s,
                                                    tracking_uri=self.uri)
        self._system_metrics.start()

    def log_dataset(self, name: str, digest: str, source: str, profile: Mapping[str, Any],
                    context: str = "training") -> None:
        """One dataset entity per run (the UI's Dataset column and filter)."""
        if not self.enabled:
            return
        from mlflow.entities import Dataset, DatasetInput, InputTag

        ds = Dataset(name=name, digest=digest[:36], source_type="local",
                     source=json.dumps({"uri": source}), profile=json.dumps(dict(profile)))
        inp = DatasetInput(ds, tags=[InputTag("mlflow.data.context", context)])
        # parallel jobs on one dataset race to insert its row once; the loser links to it
        _retry(lambda: self.client.log_inputs(self.run_id, datasets=[inp]), "inputs",
               also=("unique constraint",))

    def log_params(self, params: Mapping[str, str]) -> None:
        if not self.enabled:
            return
        from mlflow.entities import Param

        items = [Param(k, str(v)[:6000]) for k, v in sorted(params.items())]
        for i in range(0, len(items), 100):
            chunk = items[i:i + 100]
            _retry(lambda: self.client.log_batch(self.run_id, params=chunk), "params")

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        if not self.enabled:
            return
        from mlflow.entities import RunTag

        items = [RunTag(k, str(v)) for k, v in tags.items()]
        _retry(lambda: self.client.log_batch(self.run_id, tags=items), "tags")

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        if not self.enabled:
            return
        from mlflow.entities import Metric

        ts = int(time.time() * 1000)
        for k, v in metrics.items():
            self._buffer.append(Metric(k, float(v), ts, int(step)))
        if len(self._buffer) >= self.flush_every:
            self.flush()

    def flush(self) -> None:
        if not self.enabled or not self._buffer:
            return
        buf, self._buffer = self._buffer, []
        for i in range(0, len(buf), 1000):
            chunk = buf[i:i + 1000]
            _retry(lambda: self.client.log_batch(self.run_id, metrics=chunk), "metrics")

    def log_artifacts(self, paths: Iterable[Path]) -> None:
        if not self.enabled:
            return
        for p in paths:
            if Path(p).exists():
                self.client.log_artifact(self.run_id, str(p))

    def finish(self, status: str = "FINISHED") -> None:
        if not self.enabled or self.run_id is None:
            return
        if self._heartbeat is not None:
            self._heartbeat.stop()
        try:
            if self._system_metrics is not None:
                self._system_metrics.finish()
            self.flush()
        finally:
            _retry(lambda: self.client.set_terminated(self.run_id, status=status), "terminate")

    def delete(self) -> None:
        """Remove a run that should not exist (a case skipped before any work)."""
        if not self.enabled or self.run_id is None:
            return
        if self._heartbeat is not None:
            self._heartbeat.stop()
        _retry(lambda: self.client.set_terminated(self.run_id, status="KILLED"), "terminate")
        _retry(lambda: self.client.delete_run(self.run_id), "delete")
