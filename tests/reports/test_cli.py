"""fiited-report end to end on a real store: outputs, status lines, missing runs, errors."""
from __future__ import annotations

import pandas as pd

from reports.cli import main


def test_full_report_lists_outputs_and_missing_runs(report, store):
    assert report.code == 0, report.stdout
    for step in range(1, 6):
        assert f"[{step}/5]" in report.stdout
    assert f"done: report {report.out / 'report.md'}" in report.stdout
    text = (report.out / "report.md").read_text()
    section = text[text.index("## Runs missing results"):text.index("## Largest compression")]
    assert f"run {store.failed_run} " in section and "status FAILED" in section
    assert f"run {store.no_core_run} " in section and "lacks val/ne" in section
    assert f"run {store.no_perf_run} " in section and "[kept]" in section
    missing = pd.read_csv(report.out / "tables" / "missing_runs.csv")
    assert set(missing["run_id"]) == {store.failed_run, store.no_core_run, store.no_perf_run}
    for name in ("config_summary", "compression_within", "missing_runs", "claims"):
        assert (report.out / "tables" / f"{name}.md").read_text().startswith("| ")


def test_experiment_of_failed_runs_reports_them_without_crashing(store, tmp_path, capsys):
    out = tmp_path / "broken"
    assert main(["--experiment", "broken", "--tracking-uri", store.uri, "--out", str(out),
                 "--no-notebook"]) == 0
    printed = capsys.readouterr().out
    assert "2 runs, 0 complete" in printed
    text = (out / "report.md").read_text()
    for rid in store.broken_runs:
        assert f"run {rid} " in text
    assert "No figure" in text
    assert not list((out / "figures").glob("*.png")) if (out / "figures").exists() else True


def test_unknown_experiment_exits_2_listing_experiments(store, capsys):
    assert main(["--experiment", "nope", "--tracking-uri", store.uri, "--no-notebook"]) == 2
    err = capsys.readouterr().err
    assert "'nope' does not exist" in err and "ablations, broken, empty" in err


def test_list_experiments(store, capsys):
    assert main(["--list", "--tracking-uri", store.uri]) == 0
    assert capsys.readouterr().out.split() == ["Default", "ablations", "broken", "empty"]


def test_a_run_that_failed_before_logging_params_is_named_by_its_run_name():
    import pandas as pd

    from reports.report import _describe
    row = pd.Series({"run_id": "abc", "run_name": "fiited-b0.25-s1", "method": None,
                     "budget": float("nan"), "seed": None, "status": "FAILED",
                     "missing_metrics": "val/ne", "excluded": True})
    text = _describe(row, ["method", "budget"])
    assert text.startswith("run abc (name fiited-b0.25-s1): status FAILED") and "[excluded]" in text
