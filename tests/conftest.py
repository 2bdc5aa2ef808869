"""Every test gets the environment it started with: the app and the sweep callbacks set
variables for their workers (parent run id, sweep id, error mode), and an in-process run must
not leak them into the subprocesses of later tests."""
import os

import pytest

from tests.smoke_store import smoke_store  # noqa: F401  (a session fixture: one smoke store)


@pytest.fixture(autouse=True)
def _restore_environ():
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)
