"""The memory benchmark end to end at a tiny size: fresh processes, a table, sane numbers."""
from __future__ import annotations

import json

import pytest

from benchmark.memory_bench import FLOOR, main

pytestmark = pytest.mark.slow


def test_tiny_run_writes_the_table_and_its_numbers_are_sane(tmp_path):
    out = tmp_path / "mem"
    methods = ["uniform", "fiited:budget=0.0625,budget_scope=total,index=hashed",
               "post_prune:budget=0.0625"]
    rc = main(["--scale", "0.003", "--steps", "40", "--batch", "256", "--out", str(out),
               "--methods", *methods])
    assert rc == 0
    report = json.loads(out.with_suffix(".json").read_text())
    rows = {r["spec"]: r for r in report["results"]}
    assert list(rows) == [*methods, FLOOR]
    uni, fiited, post, floor = (rows[s] for s in [*methods, FLOOR])
    # the measured peak sees at least the weights it holds, and the floor holds ~nothing
    assert uni["measured_peak_bytes"] >= uni["weights_bytes"] > 0
    assert uni["measured_peak_bytes"] - floor["measured_peak_bytes"] >= 0.8 * uni["weights_bytes"]
    assert floor["ledger_peak_bytes"] < 0.01 * uni["ledger_peak_bytes"]
    # FIITED at 1/16 of total: its ledger obeys the budget and it pruned at least twice
    assert fiited["ledger_peak_bytes"] <= uni["uniform_total_bytes"] / 16
    assert len(fiited["events"]) >= 2
    assert all(e["seconds"] > 0 for e in fiited["events"])
    assert fiited["measured_peak_bytes"] < uni["measured_peak_bytes"]
    # post-training pruning trains at uniform's size and shrinks only at the end
    assert post["ledger_peak_bytes"] == uni["ledger_peak_bytes"] > post["ledger_final_bytes"]
    assert post["train_peak_bytes"] >= 0.8 * uni["train_peak_bytes"]
    md = out.with_suffix(".md").read_text()
    assert "| uniform |" in md and "1.000" in md and report["meta"]["commit"] in md


def test_bad_arguments_are_one_clear_line(capsys):
    assert main(["--scale", "2"]) == 2
    assert "--scale" in capsys.readouterr().err
