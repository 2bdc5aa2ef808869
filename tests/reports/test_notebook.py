"""The generated notebook: executed headless, no errors, figures embedded, HTML exported."""
from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest

from reports import ReportError
from reports.notebook import render


def test_executed_notebook_has_no_errors_and_embeds_images(report):
    nb = nbformat.read(report.out / "ablations.ipynb", as_version=4)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert all(c.execution_count for c in nb.cells if c.cell_type == "code")
    assert not [o for o in outputs if o.output_type == "error"]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 5
    text = "".join(str(o.get("data", {}).get(k, "")) for o in outputs
                   for k in ("text/plain", "text/html"))
    assert "fiited" in text and "uniform" in text   # the tables were computed in the kernel
    html = (report.out / "ablations.html").read_text()
    assert html.count("data:image/png;base64") >= 5


def test_notebook_hides_code_names_no_machine_path_and_renders_offline(report, store):
    raw = (report.out / "ablations.ipynb").read_text()
    nb = nbformat.reads(raw, as_version=4)
    assert all(c.metadata["jupyter"]["source_hidden"] for c in nb.cells if c.cell_type == "code")
    db = store.uri.removeprefix("sqlite:///")
    for path in (str(report.out), str(Path(db).parent)):
        assert path not in raw, path
    html = (report.out / "ablations.html").read_text()
    assert 'id="code-toggle"' in html and "body:not(.show-code)" in html
    assert not re.findall(r'<script[^>]+src="[^"]+"', html)  # no CDN: renders offline
    assert "https://cdnjs" not in html
    # the verdict column heads the notebook, as it heads report.md
    first_html = next(o["data"]["text/html"] for c in nb.cells if c.cell_type == "code"
                      for o in c.outputs if "text/html" in o.get("data", {}))
    assert "verdict" in first_html and "claim" in first_html


def test_parameters_are_injected_after_the_parameters_cell(tmp_path):
    tpl = tmp_path / "t.py"
    tpl.write_text('# %% tags=["parameters"]\nexperiment = "x"\n\n# %%\nprint(experiment)\n')
    nb = render(tpl, {"experiment": "k_sweep"})
    assert nb.cells[1].source.endswith("experiment = 'k_sweep'\n")
    assert nb.cells[2].source == "print(experiment)"


def test_template_without_parameters_cell_is_refused(tmp_path):
    tpl = tmp_path / "t.py"
    tpl.write_text("# %%\nprint(1)\n")
    with pytest.raises(ReportError, match="t.py: no cell tagged 'parameters'"):
        render(tpl, {"experiment": "x"})
