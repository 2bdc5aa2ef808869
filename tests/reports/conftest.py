"""Session fixtures for the report tests: one real MLflow store, one full report."""
from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass
from pathlib import Path

import pytest

from report_store import Store, build_store


def pytest_collection_modifyitems(config, items):
    """Tests that need the full report (notebook executed) are end to end: mark them slow."""
    here = Path(__file__).parent
    for item in items:
        if here in item.path.parents and "report" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def store(tmp_path_factory) -> Store:
    return build_store(tmp_path_factory.mktemp("mlstore"))


@dataclass
class Report:
    code: int
    out: Path
    stdout: str


@pytest.fixture(scope="session")
def report(store, tmp_path_factory) -> Report:
    """The full report of ``ablations``, notebook included, made once by the real CLI."""
    from reports.cli import main

    out = tmp_path_factory.mktemp("report") / "ablations"
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = main(["--experiment", "ablations", "--tracking-uri", store.uri, "--out", str(out)])
    return Report(code, out, buf.getvalue())
