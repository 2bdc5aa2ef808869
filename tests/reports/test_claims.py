"""The figure-to-claim table names real claims and covers every figure."""
from __future__ import annotations

import re

from reports.claims import CLAIMS, OUTPUT_CLAIMS, claim_table
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
