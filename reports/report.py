"""One experiment's report: tables, figures, an executed notebook, and a Markdown index that
opens with the figure-to-claim table."""
from __future__ import annotations

import datetime as dt
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pandas as pd

from reports import claims, figures, notebook, tables
from reports.data import ReportData, load_report_data

DEFAULT_OUT_ROOT = Path("reports/out")


@dataclass
class ReportConfig:
    experiment: str
    tracking_uri: str | None = None
    out_dir: Path | None = None          # default: reports/out/<experiment>
    notebook: bool = True
    notebook_timeout_s: int = 900
    reference: str | None = None         # experiment to borrow uniform (budget 1.0) runs from

    @property
    def out(self) -> Path:
        return Path(self.out_dir) if self.out_dir else DEFAULT_OUT_ROOT / self.experiment


@dataclass
class ReportOutputs:
    out_dir: Path
    index: Path | None = None
    figures: dict[str, Path] = field(default_factory=dict)
    tables: dict[str, tuple[Path, Path]] = field(default_factory=dict)
    notebook: Path | None = None
    html: Path | None = None
    notebook_errors: list[str] = field(default_factory=list)
    missing: pd.DataFrame | None = None


def build_report(cfg: ReportConfig, log: Callable[[str], None] = print) -> ReportOutputs:
    out = ReportOutputs(cfg.out.absolute())
    started = [time.perf_counter()]

    def step(n: int, what: str) -> None:
        if n > 1:
            log(f"  ({time.perf_counter() - started[0]:.1f} s)")
        started[0] = time.perf_counter()
        log(f"[{n}/5] {what}")

    step(1, f"reading runs of experiment {cfg.experiment!r}")
    data = load_report_data(cfg.experiment, cfg.tracking_uri, cfg.reference)
    runs = data.runs
    log(f"  {_reference_note(runs)}")
    out.missing = runs.missing
    log(f"  {runs.tracking_uri}: {len(runs.frame)} runs, {len(runs.complete)} complete, "
        f"{len(data.summary)} configs (by {', '.join(runs.config_columns)})")
    for _, r in out.missing.iterrows():
        log(f"  missing: {_describe(r, runs.config_columns)}")

    step(2, "tables")
    named = {"config_summary": data.summary,
             "compression_within": tables.compression_within(runs, data.summary),
             "missing_runs": out.missing}
    for name, frame in named.items():
        out.tables[name] = tables.write_table(frame, out.out_dir / "tables", name)
        log(f"  {out.tables[name][0]} (+ .md)")

    step(3, "figures")
    out.figures = figures.draw_all(data, out.out_dir / "figures", log=log)
    claim_rows = claims.claim_table(
        [f"figures/{p.name}" for p in out.figures.values()] + ["tables/compression_within.csv",
                                                                "tables/config_summary.csv"],
        cfg.experiment)
    verdicts = claims.verdicts(runs.complete, runs.ne_metric, runs.config_columns)
    claim_rows = with_verdicts(claim_rows, verdicts)
    out.tables["claims"] = tables.write_table(claim_rows, out.out_dir / "tables", "claims")
    out.tables["verdicts"] = tables.write_table(verdicts.by_dataset, out.out_dir / "tables",
                                                "verdicts")

    if cfg.notebook:
        step(4, "notebook: generate, execute (headless), export HTML")
        template = notebook.template_for(cfg.experiment)
        # paths relative to the notebook's own folder: none of this machine's paths inside
        nb = notebook.render(template, {"experiment": cfg.experiment,
                                        "tracking_uri": shown_uri(runs.tracking_uri,
                                                                  out.out_dir),
                                        "reference": cfg.reference,
                                        "figures_dir": "figures"})
        out.notebook_errors = notebook.execute(nb, out.out_dir, cfg.notebook_timeout_s)
        out.notebook, out.html = notebook.export(nb, out.out_dir, cfg.experiment)
        for err in out.notebook_errors:
            log(f"  notebook error: {err}")
        log(f"  {out.notebook}\n  {out.html}")
    else:
        step(4, "notebook: skipped (--no-notebook)")

    step(5, "index")
    out.index = out.out_dir / "report.md"
    out.index.write_text(_index(cfg, data, out, claim_rows, verdicts), encoding="utf-8")
    log(f"  {out.index}")
    return out


def with_verdicts(claim_rows: pd.DataFrame, v) -> pd.DataFrame:
    """The figure-to-claim table plus each claim's verdict over these runs (reports/claims.py),
    "not decided by a rule" where no check covers the claim or the runs cannot decide it."""
    decided = {}
    for claim, g in v.summary.groupby("claim", sort=False):
        decided[claim] = "; ".join(f"{r.variant}: {r.summary}" if len(g) > 1 else r.summary
                                   for r in g.itertuples())
    out = claim_rows.copy()
    out.insert(3, "verdict", [decided.get(c, "not decided by a rule") for c in out["claim"]])
    return out


def shown_uri(uri: str, base: Path) -> str:
    """A sqlite URI relative to ``base`` (reports and notebooks carry no absolute path)."""
    prefix = "sqlite:///"
    if not uri.startswith(prefix):
        return uri
    return prefix + os.path.relpath(uri[len(prefix):], base)


def _reference_note(runs) -> str:
    ref = tables.uniform_runs(runs)
    if ref.empty:
        return ("No uniform run at budget 1.0: NE deltas, speed ratios and compression-within "
                "columns are empty. `fiited-report --reference <experiment>` borrows them from "
                "an experiment of the same store run with the same data, model and training "
                "settings (e.g. `compare`).")
    if runs.reference_from:
        return (f"Uniform reference (budget 1.0): {len(ref)} run(s) borrowed from experiment "
                f"`{runs.reference_from}`, checked to share every data/model/train param and "
                f"the dataset fingerprint. They serve the NE deltas only: speed ratios need "
                f"uniform runs made in the same sweep, so they stay empty.")
    return f"Uniform reference (budget 1.0): {len(ref)} run(s) of this experiment."


def _describe(row: pd.Series, cols) -> str:
    cfg = " ".join(f"{c}={row[c]}" for c in (*cols, "seed") if c in row and pd.notna(row[c]))
    if not cfg and isinstance(row.get("run_name"), str):  # failed before its params were logged
        cfg = f"name {row['run_name']}"
    what = [f"status {row['status']}"] if row["status"] != "FINISHED" else []
    if row["missing_metrics"]:
        what.append(f"lacks {row['missing_metrics']}")
    if isinstance(row.get("note"), str) and row["note"]:
        what.append(row["note"])
    used = "excluded" if row["excluded"] else "kept"
    return f"run {row['run_id']} ({cfg}): {'; '.join(what)} [{used}]"


def _index(cfg: ReportConfig, data: ReportData, out: ReportOutputs,
           claim_rows: pd.DataFrame, verdicts) -> str:
    runs = data.runs
    lines = [f"# Report: experiment `{cfg.experiment}`", "",
             f"Store `{shown_uri(runs.tracking_uri, Path.cwd())}`; {len(runs.frame)} runs, "
             f"{len(runs.complete)} complete; configs differ in "
             f"{', '.join(runs.config_columns)}. Generated "
             f"{dt.datetime.now().isoformat(timespec='seconds')} by `fiited-report`.", "",
             "## Figure → paper claim: what these runs say", "", tables.to_markdown(claim_rows),
             "",
             claims.verdicts_markdown(verdicts), "",
             _reference_note(runs), "",
             "## Runs missing results", ""]
    if out.missing is None or out.missing.empty:
        lines.append("None: every run finished with all expected metrics.")
    else:
        lines += [f"- {_describe(r, runs.config_columns)}" for _, r in out.missing.iterrows()]
    if data.problems:
        lines += ["", "## Problems", "", *(f"- {p}" for p in data.problems)]
    lines += ["", "## Largest compression with NE within 0.1% / 0.5% of uniform", "",
              out.tables["compression_within"][1].read_text().strip(), "",
              "## Per config: mean ± std over seeds", "",
              f"[CSV](tables/config_summary.csv) · NE used by figures: `{runs.ne_metric}`", "",
              out.tables["config_summary"][1].read_text().strip(), "", "## Figures", ""]
    titles = {s.name: s.title for s in figures.FIGURES}
    for name, path in out.figures.items():
        tested = ", ".join(claims.OUTPUT_CLAIMS.get(name, ()))
        lines += [f"### {titles[name]} (tests {tested})", "",
                  f"![{name}](figures/{path.name})", ""]
    if not out.figures:
        lines.append("No figure: no complete runs with the data the figures need.")
    if out.notebook:
        lines += ["", "## Notebook", "", f"[{out.notebook.name}]({out.notebook.name}) · "
                  f"[{out.html.name}]({out.html.name})"]
        lines += [f"- error: {e}" for e in out.notebook_errors]
    return "\n".join(lines) + "\n"
