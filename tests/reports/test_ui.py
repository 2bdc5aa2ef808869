"""The MLflow UI helper: a real `mlflow server` on a free loopback port over the test store."""
from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from reports import ReportError
from reports.ui import (TRAINING_VIEW, MlflowUI, UIConfig, artifact_root, run_list_links,
                        start_ui, store_uri)

README = Path(__file__).resolve().parents[2] / "reports" / "README.md"


def _search(url: str, exp_id: str, flt: str = "") -> list[dict]:
    body = json.dumps({"experiment_ids": [exp_id], "filter": flt, "max_results": 1000}).encode()
    req = urllib.request.Request(f"{url}/api/2.0/mlflow/runs/search", data=body,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.load(r).get("runs", [])


@pytest.mark.slow
def test_server_answers_health_lists_runs_and_stops(store, tmp_path):
    from mlflow.tracking import MlflowClient

    exp_id = MlflowClient(tracking_uri=store.uri).get_experiment_by_name("ablations").experiment_id
    ui = start_ui(UIConfig(store.uri, log_path=tmp_path / "server.log", startup_timeout_s=180))
    try:
        assert ui.url.startswith("http://127.0.0.1:")
        assert ui.healthy()
        assert ui.artifacts == store.root / "mlartifacts"
        assert len(_search(ui.url, exp_id)) == 25
        fiited = _search(ui.url, exp_id, "tags.method = 'fiited' and tags.budget = '0.1'")
        assert len(fiited) == 15 and all(r["data"]["tags"] for r in fiited)
        # every filter the README documents is valid MLflow search syntax
        block = next(b for b in README.read_text().split("```") if "tags.method =" in b)
        filters = [ln.strip() for ln in block.splitlines() if ln.strip()]
        assert len(filters) >= 5
        for flt in filters:
            try:
                _search(ui.url, exp_id, flt)
            except urllib.error.HTTPError as e:
                pytest.fail(f"README filter {flt!r}: HTTP {e.code}")
        assert len(_search(ui.url, exp_id, filters[2])) == 7   # K=4, seed 0
    finally:
        ui.stop()
    assert ui.proc.poll() is not None
    assert not ui.healthy()


def test_uri_and_artifact_root(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert store_uri("sqlite:///mlflow.db") == f"sqlite:///{tmp_path}/mlflow.db"
    assert artifact_root(store_uri("sqlite:///mlflow.db")) == tmp_path / "mlartifacts"
    with pytest.raises(ReportError, match="already a tracking server"):
        store_uri("http://127.0.0.1:5000")


def test_busy_port_is_refused(tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(ReportError, match=f"port {port} on 127.0.0.1 is in use"):
            start_ui(UIConfig(f"sqlite:///{tmp_path}/m.db", port=port))


def test_run_list_links_open_each_experiment_in_the_training_view(store):
    from mlflow.tracking import MlflowClient

    ui = MlflowUI(UIConfig(store.uri, port=5999))
    links = run_list_links(ui)
    ids = {e.name: e.experiment_id for e in MlflowClient(tracking_uri=store.uri)
           .search_experiments()}
    assert f"  ablations: http://127.0.0.1:5999/#/experiments/{ids['ablations']}/runs?" \
           f"{TRAINING_VIEW}" in links
    assert len(links) == len(ids) - ("Default" in ids) and not any("Default" in ln for ln in links)
