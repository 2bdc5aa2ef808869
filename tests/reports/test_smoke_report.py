"""The report of a real smoke sweep (the app, the sqlite store, fiited-report): one colour per
method in every figure, read from the palette; no machine path in the notebook; verdicts."""
from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import matplotlib.colors as mcolors
import pytest

from reports import palette

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
EXPERIMENT = "grid"   # the smoke store's sweep (tests/smoke_store.py)


@pytest.fixture(scope="module")
def smoke_report(smoke_store):
    """fiited-report over the shared smoke store's sweep (uniform, hashing, FIITED x 2 budgets)."""
    root = smoke_store.root
    env = dict(os.environ, PYTHONPATH=str(REPO), TQDM_DISABLE="1")
    out = root / "report"   # in the store's dir: no path of it may show in the report
    rep = subprocess.run([sys.executable, "-m", "reports.cli", "--experiment", EXPERIMENT,
                          "--tracking-uri", smoke_store.uri, "--out", str(out)],
                         cwd=root, env=env, capture_output=True, text=True, timeout=900)
    assert rep.returncode == 0, rep.stderr[-3000:]
    return root, out


def _handles(fig):
    for legend in [*fig.legends, *(ax.get_legend() for ax in fig.axes)]:
        if legend is None:
            continue
        for h, text in zip(legend.legend_handles, legend.get_texts()):
            color = h.get_color() if hasattr(h, "get_color") and not hasattr(h, "get_facecolor") \
                else h.get_facecolor()
            yield text.get_text(), mcolors.to_rgb(color)


def test_every_method_has_its_palette_colour_in_every_figure(smoke_report):
    from reports.data import load_report_data
    from reports.figures import FIGURES

    root, _ = smoke_report
    data = load_report_data(EXPERIMENT, f"sqlite:///{root / 'mlflow.db'}")
    seen: dict[str, set] = {}
    drawn = 0
    for spec in FIGURES:
        fig = spec.draw(data)
        if fig is None:
            continue
        drawn += 1
        assert EXPERIMENT in fig._suptitle.get_text() and "synthetic_criteo" in \
            fig._suptitle.get_text(), spec.name
        labels = [lab for lab, _ in _handles(fig) if palette.method_of(lab) in
                  palette.METHOD_COLORS]
        expect = palette.colors(labels)
        for lab, rgb in _handles(fig):
            method = palette.method_of(lab)
            if method not in palette.METHOD_COLORS:
                continue
            assert rgb == pytest.approx(expect[lab], abs=1e-6), (spec.name, lab)
            if lab == next(x for x in labels if palette.method_of(x) == method):
                seen.setdefault(method, set()).add(rgb)
    assert drawn >= 2
    assert {"uniform", "fiited", "hashing"} <= set(seen)
    for method, colours in seen.items():  # one colour per method across figures: its own
        assert colours == {mcolors.to_rgb(palette.METHOD_COLORS[method])}, method


def test_report_has_verdicts_and_the_notebook_no_machine_path(smoke_report):
    root, out = smoke_report
    with open(out / "tables" / "claims.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert rows and "verdict" in rows[0] and all(r["verdict"] for r in rows)
    text = (out / "report.md").read_text()
    assert text.index("| verdict |") < text.index("## Runs missing results")
    assert str(root) not in text
    nb = next(out.glob("*.ipynb")).read_text()
    assert str(root) not in nb and str(REPO) not in nb
    assert "budget=1/2" in nb or "1/2" in nb  # budgets as fractions in the tables
