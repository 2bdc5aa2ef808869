"""A notebook per experiment: rendered from a jupytext percent template, executed headless
with the current interpreter, saved as .ipynb and exported to HTML."""
from __future__ import annotations

import json
import os
import re
import sys
import tempfile
from pathlib import Path

import nbformat

from reports import ReportError

TEMPLATES = Path(__file__).parent / "templates"
GENERIC_TEMPLATE = TEMPLATES / "experiment.py"
KERNEL_NAME = "fiited-report"


def template_for(experiment: str) -> Path:
    """``templates/<experiment>.py`` when the experiment has its own, else the generic one."""
    own = TEMPLATES / f"{experiment}.py"
    return own if own.is_file() else GENERIC_TEMPLATE


def render(template: Path, params: dict) -> nbformat.NotebookNode:
    """The template as a notebook, with ``params`` injected after its 'parameters' cell."""
    import jupytext

    nb = jupytext.read(template, fmt="py:percent")
    at = next((i for i, c in enumerate(nb.cells)
               if "parameters" in c.metadata.get("tags", [])), None)
    if at is None:
        raise ReportError(f"{template}: no cell tagged 'parameters' to inject values after")
    code = "# Parameters injected by fiited-report\n" + "".join(
        f"{k} = {v!r}\n" for k, v in params.items())
    nb.cells.insert(at + 1, nbformat.v4.new_code_cell(
        code, metadata={"tags": ["injected-parameters"]}))
    nb.metadata["kernelspec"] = {"name": KERNEL_NAME, "language": "python",
                                 "display_name": f"Python ({KERNEL_NAME})"}
    return nb


def execute(nb: nbformat.NotebookNode, cwd: Path, timeout_s: int = 900) -> list[str]:
    """Run every cell in a fresh kernel of *this* interpreter; returns the cells' errors.

    The kernel spec is written to a temporary directory on the fly, so no user-level Jupyter
    install or registered kernel is needed, and the kernel is always this venv's Python.
    """
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, CellTimeoutError

    with tempfile.TemporaryDirectory(prefix="fiited-kernel-") as tmp:
        spec_dir = Path(tmp) / "kernels" / KERNEL_NAME
        spec_dir.mkdir(parents=True)
        (spec_dir / "kernel.json").write_text(json.dumps({
            "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": f"Python ({KERNEL_NAME})", "language": "python"}))
        # IPC sockets in the private temp dir: no TCP port, nothing reachable from outside
        km = KernelManager(kernel_name=KERNEL_NAME,
                           kernel_spec_manager=KernelSpecManager(
                               kernel_dirs=[str(spec_dir.parent)], ensure_native_kernel=False),
                           transport="ipc", ip=str(Path(tmp) / "kernel"),
                           connection_file=str(Path(tmp) / "connection.json"))
        client = NotebookClient(nb, km=km, kernel_name=KERNEL_NAME, timeout=timeout_s,
                                resources={"metadata": {"path": str(cwd)}})
        try:
            client.execute(env=_kernel_env())
        except (CellExecutionError, CellTimeoutError) as e:
            errors = error_cells(nb)
            return errors or [str(e).strip().splitlines()[-1]]
        except Exception as e:  # the kernel did not start or died: say so, keep the report
            return [f"kernel {sys.executable} -m ipykernel_launcher: {type(e).__name__}: {e}"]
        finally:  # nbclient leaves a kernel it did not create running
            if km.has_kernel:
                km.shutdown_kernel(now=True)
    return error_cells(nb)


def _kernel_env() -> dict[str, str]:
    """The parent's environment, with this package importable and inline figures allowed."""
    env = dict(os.environ)
    env.pop("MPLBACKEND", None)
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    return env


def error_cells(nb: nbformat.NotebookNode) -> list[str]:
    return [f"cell {i}: {o.get('ename')}: {o.get('evalue')}"
            for i, c in enumerate(nb.cells) if c.cell_type == "code"
            for o in c.get("outputs", []) if o.get("output_type") == "error"]


def export(nb: nbformat.NotebookNode, out_dir: Path, stem: str) -> tuple[Path, Path]:
    """The executed notebook as ``stem.ipynb`` and, with its figures inline, ``stem.html``."""
    from nbconvert import HTMLExporter

    out_dir.mkdir(parents=True, exist_ok=True)
    ipynb, html = out_dir / f"{stem}.ipynb", out_dir / f"{stem}.html"
    hide_code(nb)
    nbformat.write(nb, ipynb)
    # no CDN scripts (MathJax, require.js, mermaid): the page renders with no network at all
    offline = {k: "" for k in ("mathjax_url", "require_js_url", "mermaid_js_url",
                               "mermaid_layout_elk_js_url", "jquery_url", "widget_renderer_url",
                               "jupyter_widgets_base_url")}
    body, _ = HTMLExporter(**offline).from_notebook_node(nb)
    body = re.sub(r'<script src="">\s*</script>', "", body)
    body = body.replace("</head>", CODE_TOGGLE + "</head>", 1)
    body = re.sub(r"(<body[^>]*>)", r"\1" + CODE_BUTTON, body, count=1)
    html.write_text(body, encoding="utf-8")
    return ipynb, html


# Code hidden by default in the HTML; one button shows it (the .ipynb hides it in Jupyter too).
CODE_TOGGLE = """<style>
body:not(.show-code) .jp-CodeCell .jp-Cell-inputWrapper { display: none; }
.jp-RenderedHTMLCommon th, .jp-RenderedHTMLCommon td { text-align: left; }
#code-toggle { position: fixed; top: 8px; right: 12px; z-index: 10; font: 13px sans-serif;
  padding: 4px 10px; border: 1px solid #888; border-radius: 4px; background: #f6f6f6; }
</style>
"""
CODE_BUTTON = ('<button id="code-toggle" onclick="document.body.classList.toggle(\'show-code\');'
               'this.textContent=document.body.classList.contains(\'show-code\')?'
               '\'Hide code\':\'Show code\'">Show code</button>')


def hide_code(nb: nbformat.NotebookNode) -> None:
    """Collapse every code cell's source (JupyterLab's ``source_hidden``): readers see
    tables and figures first; the code is one click away."""
    for c in nb.cells:
        if c.cell_type == "code":
            c.metadata.setdefault("jupyter", {})["source_hidden"] = True
