"""The figure-to-claim table names real claims and covers every figure."""
from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from reports.claims import (CLAIMS, OUTPUT_CLAIMS, ClaimCheck, claim_table, verdicts,
                            verdicts_markdown)
from reports.figures import FIGURES


def test_every_figure_tests_a_known_claim():
    assert set(CLAIMS) == {f"C{i}" for i in range(1, 12)}
    for spec in FIGURES:
        assert OUTPUT_CLAIMS.get(spec.name), spec.name
    assert all(c in CLAIMS for ids in OUTPUT_CLAIMS.values() for c in ids)


def test_claim_table_rows():
    t = claim_table(["figures/k_ablation.png", "figures/unknown.png"], "k_sweep")
    assert t.to_dict("records") == [{"output": "figures/k_ablation.png", "experiment": "k_sweep",
                                     "claim": "C7", "claim_text": CLAIMS["C7"]}]


def test_claim_table_heads_the_report(report):
    text = (report.out / "report.md").read_text()
    first = text.index("## ")
    assert text[first:].startswith("## Figure → paper claim")
    rows = re.findall(r"^\| figures/(\w+)\.png \| ablations \| (C\d+) \|", text, re.M)
    assert ("utility_ablation", "C6") in rows and ("k_ablation", "C7") in rows


def _runs(cells) -> pd.DataFrame:
    """Hand-made runs: (dataset, method, K, budget, per-seed NE offsets from a seed effect)."""
    seeds = np.arange(5)
    base = 0.8 + 0.05 * seeds
    return pd.DataFrame([
        {"dataset": d, "method": m, "K": k, "budget": b, "seed": int(s), "test/ne": base[s] + o}
        for d, m, k, b, offs in cells for s, o in zip(seeds, np.broadcast_to(offs, (5,)))])


GAIN = np.array([-0.010, -0.012, -0.011, -0.009, -0.013])
NOISE = np.array([0.004, -0.004, 0.003, -0.003, 0.0])


def _three_datasets() -> pd.DataFrame:
    cells = []
    for d, fiited in (("A", GAIN), ("B", NOISE), ("C", -GAIN)):
        cells += [(d, "uniform", np.nan, 1.0, 0.0), (d, "uniform", np.nan, 0.25, 0.02),
                  (d, "adaembed", np.nan, 0.25, 0.0), (d, "fiited", 2, 0.25, fiited)]
    return _runs(cells)


def test_verdicts_per_dataset_and_summary():
    v = verdicts(_three_datasets(), "test/ne", ["method", "budget", "K", "dataset"])
    c1 = v.by_dataset[v.by_dataset["claim"] == "C1"].set_index("dataset")["verdict"]
    assert c1.to_dict() == {"A": "holds", "B": "undecided", "C": "fails"}
    s = v.summary.set_index("claim").loc["C1"]
    assert s["summary"] == "holds on 1 of 3 (fails on 1, undecided on 1)"
    assert s["variant"] == "fiited"            # one K: the label needs none
    # C2 (within 0.1% of uniform at full size at budget 1/4): A's -1.2% holds; C's +1.3% fails
    c2 = v.by_dataset[v.by_dataset["claim"] == "C2"].set_index("dataset")["verdict"]
    assert c2["A"] == "holds" and c2["C"] == "fails"
    cell = v.cells[(v.cells["claim"] == "C1") & (v.cells["dataset"] == "A")].iloc[0]
    assert cell["reference"] == "adaembed" and cell["mean"] == pytest.approx(-0.011)
    assert cell["unit"] == "NE" and cell["n"] == 5


def test_verdict_markdown_states_rule_and_interval():
    v = verdicts(_three_datasets(), "test/ne", ["K"])
    md = verdicts_markdown(v)
    assert "Student t" in md and "straddles the margin" in md
    assert "holds on 1 of 3" in md and "| C1 | B | fiited | undecided |" in md
    assert "Seed noise of test/ne" in md
    empty = verdicts(_three_datasets().query("method != 'fiited'"), "test/ne", ["K"])
    assert empty.by_dataset.empty and "No claim can be decided" in verdicts_markdown(empty)


def test_custom_check_margin():
    chk = ClaimCheck("C4", "x", candidates=("adaembed",), margin=0.02)
    v = verdicts(_three_datasets(), "test/ne", ["K"], checks=(chk,))
    # C's +0.011 is inside a 0.02 margin: holds there too
    assert set(v.by_dataset["verdict"]) == {"holds"}


def test_verdicts_from_a_real_store(store):
    """Through load_runs: cells pair the seeds of real MLflow runs; variants come from the
    config columns."""
    from reports.runs import load_runs

    table = load_runs("ablations", store.uri)
    v = verdicts(table.complete, table.ne_metric, table.config_columns)
    c1 = v.cells[(v.cells["claim"] == "C1") & (v.cells["budget"] == 0.5)]
    assert len(c1) == 1 and c1.iloc[0]["reference"] == "hashing" and c1.iloc[0]["n"] == 2
    runs = table.complete
    f = runs[(runs["method"] == "fiited") & (runs["budget"] == 0.5)].set_index("seed")
    h = runs[(runs["method"] == "hashing") & (runs["budget"] == 0.5)].set_index("seed")
    ne = table.ne_metric
    assert c1.iloc[0]["mean"] == pytest.approx((f[ne] - h[ne]).mean())
    assert set(v.by_dataset["dataset"]) == {"synthetic_criteo"}
    assert set(v.by_dataset["verdict"]) <= {"holds", "fails", "undecided"}
