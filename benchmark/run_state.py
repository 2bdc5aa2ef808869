"""Run states that tell the truth: who runs a run (host, pid, heartbeat), which RUNNING runs are
lost, which configs already FINISHED, and signals that end a run as KILLED.

A run whose process died without a word (kill -9, a killed worker, a lost node) stays RUNNING
in MLflow forever; the tags set here let the next start, and ``fiited-report``, tell it apart
from a live one: on this host its pid is gone, elsewhere its heartbeat is stale.
"""
from __future__ import annotations

import getpass
import hashlib
import json
import logging
import os
import re
import signal
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterable, Mapping

log = logging.getLogger(__name__)

HOST_TAG, PID_TAG, HEARTBEAT_TAG = "fiited.host", "fiited.pid", "fiited.heartbeat"
CONFIG_TAG = "fiited.config"          # fingerprint of the result-relevant resolved config
SETUP_TAG = "fiited.setup"            # fingerprint of its data/model/train part (not logged
                                      # as params in full): may one run be another's reference?
LOST_TAG = "fiited.lost"              # why a RUNNING run was marked KILLED by someone else
RESUMED_FROM_TAG = "fiited.resumed_from"
HEARTBEAT_S = 30.0
STALE_S = 600.0                       # a run on another host is lost after this long unheard
# Keys that do not change a result: where it is logged, how it is shown, how it is resumed.
VOLATILE_PREFIXES = ("tracking.", "sweep.")
VOLATILE_KEYS = {"train.resume", "train.stop_after", "train.checkpoint_every", "train.progress",
                 "train.system_metrics", "summary_table"}


class Killed(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so that every ``except BaseException`` cleanup runs."""


def install_signal_handlers() -> None:
    """SIGTERM (timeout, a cluster, a launcher stopping its workers) ends the run as KILLED
    instead of leaving it RUNNING; SIGINT already raises KeyboardInterrupt, unless a worker
    pool set it to be ignored, so it is restored."""
    if threading.current_thread() is not threading.main_thread():
        return

    def _term(signum, frame):
        raise Killed(f"signal {signum}")

    signal.signal(signal.SIGTERM, _term)
    if signal.getsignal(signal.SIGINT) in (signal.SIG_IGN, None):
        signal.signal(signal.SIGINT, signal.default_int_handler)


def process_tags() -> dict[str, str]:
    """Standard MLflow source/user tags plus who runs this (host, pid, first heartbeat)."""
    from mlflow.utils.mlflow_tags import MLFLOW_SOURCE_NAME, MLFLOW_SOURCE_TYPE, MLFLOW_USER

    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    src = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "python"
    if src in ("app.py", "__main__.py", "-c"):
        src = "fiited-bench"
    return {MLFLOW_SOURCE_NAME: src, MLFLOW_SOURCE_TYPE: "LOCAL", MLFLOW_USER: user,
            HOST_TAG: socket.gethostname(), PID_TAG: str(os.getpid()),
            HEARTBEAT_TAG: str(int(time.time()))}


class Heartbeat:
    """A daemon thread that refreshes the heartbeat tag while the run lives."""

    def __init__(self, client, run_id: str, every_s: float = HEARTBEAT_S) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, args=(client, run_id, every_s),
                                        name="mlflow-heartbeat", daemon=True)
        self._thread.start()

    def _beat(self, client, run_id: str, every_s: float) -> None:
        while not self._stop.wait(every_s):
            try:
                client.set_tag(run_id, HEARTBEAT_TAG, str(int(time.time())))
            except Exception as e:  # a busy store must not kill training; the next beat retries
                log.debug("heartbeat failed: %s", e)

    def stop(self) -> None:
        self._stop.set()


def pid_alive(pid: int) -> bool:
    """True while the process runs; a zombie (killed, not yet reaped) counts as gone."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return True


def why_lost(tags: Mapping[str, str], now: float | None = None,
             host: str | None = None, stale_s: float = STALE_S) -> str | None:
    """Why a RUNNING run's process is gone, or None when it may still be alive."""
    now = time.time() if now is None else now
    host = socket.gethostname() if host is None else host
    run_host, pid = tags.get(HOST_TAG), tags.get(PID_TAG, "")
    beat = float(tags.get(HEARTBEAT_TAG, "0") or 0)
    if run_host == host and pid.isdigit():
        if not pid_alive(int(pid)):
            return f"process {pid} on {host} is gone"
        if beat and now - beat > max(stale_s, 4 * HEARTBEAT_S):
            return f"process {pid} on {host} has not beaten for {now - beat:.0f}s (pid reused?)"
        return None
    if beat and now - beat > stale_s:
        return f"no heartbeat from {run_host or '?'} for {now - beat:.0f}s"
    return None  # alive, or made by an older version without the tags: cannot tell


def lost_runs(client, experiment_ids: Iterable[str],
              stale_s: float = STALE_S) -> list[tuple[Any, str]]:
    """(run, reason) for every RUNNING run of these experiments whose process is gone."""
    ids = list(experiment_ids)
    if not ids:
        return []
    runs = client.search_runs(ids, filter_string="attributes.status = 'RUNNING'",
                              max_results=50000)
    out = []
    for r in runs:
        reason = why_lost(r.data.tags, stale_s=stale_s)
        if reason:
            out.append((r, reason))
    return out


def mark_lost(client, experiment_ids: Iterable[str], stale_s: float = STALE_S) -> list[str]:
    """End lost RUNNING runs as KILLED with the reason as a tag; returns their run ids."""
    done = []
    for r, reason in lost_runs(client, experiment_ids, stale_s):
        try:
            client.set_tag(r.info.run_id, LOST_TAG, reason)
            client.set_terminated(r.info.run_id, status="KILLED")
            done.append(r.info.run_id)
            log.warning("MLflow run %s (%s) was RUNNING but %s: marked KILLED",
                        r.info.run_id, r.info.run_name, reason)
        except Exception as e:  # another process may be marking it at the same time
            log.debug("could not mark %s lost: %s", r.info.run_id, e)
    return done


def end_children(client, experiment_id: str, parent_run_id: str, reason: str) -> list[str]:
    """End a sweep's RUNNING children as KILLED: its launcher is exiting, so they cannot go on."""
    runs = client.search_runs(
        [experiment_id], max_results=50000,
        filter_string=f"tags.`mlflow.parentRunId` = '{parent_run_id}' and "
                      f"attributes.status = 'RUNNING'")
    for r in runs:
        client.set_tag(r.info.run_id, LOST_TAG, reason)
        client.set_terminated(r.info.run_id, status="KILLED")
        log.warning("MLflow run %s (%s) ended KILLED: %s", r.info.run_id, r.info.run_name, reason)
    return [r.info.run_id for r in runs]


def config_fingerprint(flat_params: Mapping[str, str]) -> str:
    """The same training config (seed included) -> the same fingerprint, wherever it is logged."""
    keep = {k: v for k, v in flat_params.items()
            if k not in VOLATILE_KEYS and not k.startswith(VOLATILE_PREFIXES)}
    return hashlib.sha256(json.dumps(keep, sort_keys=True).encode()).hexdigest()[:16]


_SETUP = ("data.", "model.", "train.")
_NOT_SETUP = re.compile(r"(^|\.)seed$|(^|\.)\w*(dir|path|file|uri)$")  # where, not what


def setup_fingerprint(flat_params: Mapping[str, str]) -> str:
    """Runs trained on the same data, model and recipe share it, whatever their method or seed."""
    keep = {k: v for k, v in flat_params.items()
            if k.startswith(_SETUP) and k not in VOLATILE_KEYS and not _NOT_SETUP.search(k)}
    return hashlib.sha256(json.dumps(keep, sort_keys=True).encode()).hexdigest()[:16]


def finished_run(client, experiment_id: str, fingerprint: str):
    """The latest FINISHED run of this experiment with this config fingerprint, or None."""
    runs = client.search_runs(
        [experiment_id],
        filter_string=f"tags.`{CONFIG_TAG}` = '{fingerprint}' and attributes.status = 'FINISHED'",
        order_by=["attributes.end_time DESC"], max_results=1)
    return runs[0] if runs else None


def run_of_dir(client, experiment_id: str, run_dir: str):
    """The latest run logged from this run directory (the one a checkpoint there came from)."""
    runs = client.search_runs([experiment_id], filter_string=f"tags.run_dir = '{run_dir}'",
                              order_by=["attributes.start_time DESC"], max_results=1)
    return runs[0] if runs else None
