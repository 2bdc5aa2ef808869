"""The MLflow UI over the harness's store: ``mlflow server`` on loopback, lean (one worker, no
job runner), with the same backend store and artifact root the harness writes to.

``python -m reports.ui [--port N] [--tracking-uri URI]`` serves until Ctrl+C (``make ui``).
"""
from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from reports import ReportError
from reports.runs import DEFAULT_TRACKING_URI, sqlite_path

FILTER_HINTS = """\
Filter runs (search box of an experiment), e.g.:
  tags.method = 'fiited' and tags.budget = '0.1'
  params.`method.num_chunks` = '4' and tags.seed = '0'
  metrics.`val/ne` < 0.8
Compare: tick runs -> Compare; or group the run table by a tag/param (method, budget...)."""


# MLflow 3.17's UI picks GenAI or model-training pages by one switch per browser (default GenAI,
# whatever an experiment's mlflow.experimentKind tag says); a URL's workflowType holds for that
# page only. On a loopback server its assistant panel opens once by itself; closing it sticks.
FIRST_VISIT = """\
First visit: click 'Model training' in the sidebar's GenAI | Model training switch (the browser
keeps it) and close the MLflow Assistant panel on the right (it stays closed). Run lists:"""
TRAINING_VIEW = "workflowType=machine_learning"


def run_list_links(ui: "MlflowUI") -> list[str]:
    """``  <experiment>: <URL of its run list in the model-training view>``, one per experiment."""
    from mlflow.tracking import MlflowClient

    try:
        exps = MlflowClient(tracking_uri=ui.store).search_experiments()
    except Exception as e:  # the UI still serves; the list is a convenience
        return [f"  (could not list experiments: {e})"]
    return [f"  {e.name}: {ui.url}/#/experiments/{e.experiment_id}/runs?{TRAINING_VIEW}"
            for e in sorted(exps, key=lambda e: e.name) if e.name != "Default"]


@dataclass
class UIConfig:
    tracking_uri: str | None = None      # default: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db
    port: int | None = None              # None: any free port
    host: str = "127.0.0.1"
    startup_timeout_s: float = 120.0
    log_path: Path | None = None         # server output; default: a temp file, kept for reading


def store_uri(uri: str | None) -> str:
    """The backend store to serve; sqlite paths made absolute. A server URI is refused."""
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI
    if uri.startswith(("http://", "https://")):
        raise ReportError(f"tracking URI {uri} is already a tracking server: open it in a "
                          f"browser instead of starting another")
    path = sqlite_path(uri)
    return f"sqlite:///{path}" if path is not None else uri


def artifact_root(uri: str) -> Path:
    """Where the harness keeps artifacts: ``mlartifacts/`` beside the sqlite file."""
    path = sqlite_path(uri)
    return (path.parent if path is not None else Path.cwd()) / "mlartifacts"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _port_in_use(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


class MlflowUI:
    """A running ``mlflow server``; ``stop()`` (or leaving a ``with`` block) ends it."""

    def __init__(self, cfg: UIConfig):
        self.cfg = cfg
        self.store = store_uri(cfg.tracking_uri)
        self.artifacts = artifact_root(self.store)
        self.port = cfg.port or free_port(cfg.host)
        self.proc: subprocess.Popen | None = None
        self.log_path = Path(cfg.log_path) if cfg.log_path else Path(
            tempfile.mkstemp(prefix="mlflow-ui-", suffix=".log")[1])

    @property
    def url(self) -> str:
        return f"http://{self.cfg.host}:{self.port}"

    def command(self) -> list[str]:
        return [sys.executable, "-m", "mlflow", "server",
                "--backend-store-uri", self.store,
                "--artifacts-destination", str(self.artifacts),
                "--host", self.cfg.host, "--port", str(self.port), "--workers", "1"]

    def start(self) -> "MlflowUI":
        if self.cfg.port and _port_in_use(self.cfg.host, self.port):
            raise ReportError(f"port {self.port} on {self.cfg.host} is in use; pass another "
                              f"--port (make ui PORT=N) or none for a free one")
        env = dict(os.environ, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
        with open(self.log_path, "wb") as log:
            # its own session: stop() ends the server and the uvicorn worker it forks, together
            self.proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, env=env,
                                         start_new_session=True)
        deadline = time.monotonic() + self.cfg.startup_timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ReportError(f"mlflow server exited with code {self.proc.returncode} "
                                  f"before answering /health:\n{self.log_tail()}")
            if self.healthy():
                return self
            time.sleep(0.5)
        self.stop()
        raise ReportError(f"mlflow server did not answer {self.url}/health within "
                          f"{self.cfg.startup_timeout_s:.0f} s:\n{self.log_tail()}")

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/health", timeout=2) as r:
                return r.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def log_tail(self, lines: int = 20) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def wait(self) -> int:
        return self.proc.wait() if self.proc else 0

    def stop(self, timeout_s: float = 15.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        pgid = self.proc.pid       # the session leader we started: its group is ours alone
        for sig, wait in ((signal.SIGTERM, timeout_s), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(pgid, sig)
            except ProcessLookupError:
                return
            try:
                self.proc.wait(wait)
                return
            except subprocess.TimeoutExpired:
                continue

    def __enter__(self) -> "MlflowUI":
        return self.start() if self.proc is None else self

    def __exit__(self, *exc) -> None:
        self.stop()


def start_ui(cfg: UIConfig) -> MlflowUI:
    """Start the server and return once ``/health`` answers."""
    return MlflowUI(cfg).start()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m reports.ui",
                                description="MLflow UI over the fiited-bench store (loopback).")
    p.add_argument("--port", type=int, default=None, help="port (default: a free one)")
    p.add_argument("--tracking-uri", default=None,
                   help="backend store (default: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db)")
    p.add_argument("--timeout", type=float, default=120.0, help="startup timeout, seconds")
    args = p.parse_args(argv)
    ui = MlflowUI(UIConfig(args.tracking_uri, args.port, startup_timeout_s=args.timeout))
    path = sqlite_path(ui.store)
    if path is not None and not path.exists():
        print(f"note: {path} does not exist yet; MLflow creates an empty store", flush=True)
    print(f"starting mlflow server on {ui.url} (store {ui.store}, artifacts {ui.artifacts}, "
          f"log {ui.log_path}) ...", flush=True)
    try:
        ui.start()
    except ReportError as e:
        print(f"reports.ui: error: {e}", file=sys.stderr)
        return 2
    print(f"MLflow UI: {ui.url}/#/experiments   (Ctrl+C stops it)\n{FIRST_VISIT}", flush=True)
    for line in run_list_links(ui):
        print(line, flush=True)
    print(FILTER_HINTS, flush=True)
    try:
        return ui.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        ui.stop()


if __name__ == "__main__":
    sys.exit(main())
