"""Paired-by-seed deltas, t intervals and verdicts on a hand-made table of runs."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from reports import stats

T_975_4 = 2.7764451051977987    # Student t quantile, 4 degrees of freedom (tables)
SEEDS = np.arange(5)
BASE = 0.80 + 0.05 * SEEDS       # a seed effect far larger than any method gap


def runs(*cells) -> pd.DataFrame:
    """Rows of (dataset, method, K, budget, per-seed NE offsets from BASE)."""
    rows = []
    for dataset, method, k, budget, offsets in cells:
        for s, off in zip(SEEDS, np.broadcast_to(offsets, SEEDS.shape)):
            rows.append({"dataset": dataset, "method": method, "K": k, "budget": budget,
                         "seed": int(s), "test/ne": BASE[s] + off, "test/auc": 0.7 - off})
    return pd.DataFrame(rows)


GAINS = np.array([-0.010, -0.012, -0.011, -0.009, -0.013])   # mean -0.011, std sqrt(2.5e-6)


def test_t_interval_known_values():
    mean, lo, hi = stats.t_interval([1, 2, 3, 4, 5])
    half = T_975_4 * np.sqrt(2.5) / np.sqrt(5)
    assert mean == 3 and lo == pytest.approx(3 - half) and hi == pytest.approx(3 + half)
    assert np.isnan(stats.t_interval([1.0])[1])


def test_delta_to_uniform_is_paired_by_seed():
    r = runs(("A", "uniform", np.nan, 1.0, 0.0), ("A", "fiited", 2, 0.25, GAINS))
    d = stats.delta_to_uniform(r, "test/ne", ["K"])
    row = d[d["variant"] == "fiited"].iloc[0]    # one K: no K in the label
    half = T_975_4 * np.sqrt(2.5e-6) / np.sqrt(5)
    assert row["n"] == 5 and row["mean"] == pytest.approx(-0.011)
    assert row["lo"] == pytest.approx(-0.011 - half) and row["hi"] == pytest.approx(-0.011 + half)
    # unpaired, the seed effect (std 0.079) would swamp the gap; paired it is decided
    assert row["hi"] < 0
    auc = stats.delta_to_uniform(r, "test/auc", ["K"])
    assert auc[auc["variant"] == "fiited"]["mean"].iloc[0] == pytest.approx(0.011)


def test_relative_delta_and_missing_seed():
    r = runs(("A", "uniform", np.nan, 1.0, 0.0), ("A", "fiited", 2, 0.25, GAINS))
    r = r[~((r["method"] == "uniform") & (r["seed"] == 4))]
    d = stats.delta_to_uniform(r, "test/ne", ["K"], relative=True)
    row = d[d["variant"] == "fiited"].iloc[0]    # one K: no K in the label
    assert row["n"] == 4
    assert row["mean"] == pytest.approx(np.mean(100 * GAINS[:4] / BASE[:4]))


def test_delta_to_best_picks_the_best_other_method_per_budget():
    r = runs(("A", "uniform", np.nan, 1.0, 0.0),
             ("A", "uniform", np.nan, 0.25, 0.020),
             ("A", "mixed_dim", np.nan, 0.25, 0.005),
             ("A", "adaembed", np.nan, 0.25, 0.008),
             ("A", "itep", np.nan, 0.25, 0.030),
             ("A", "fiited", 2, 0.25, GAINS))
    d = stats.delta_to_best(r, "test/ne", methods=["fiited"], variant_cols=["K"])
    row = d.iloc[0]
    assert row["reference"] == "mixed_dim" and row["mean"] == pytest.approx(-0.016)
    rows = stats.delta_to_best(r, "test/ne", methods=["fiited"],
                               candidates=["adaembed", "itep"], variant_cols=["K"])
    assert rows.iloc[0]["reference"] == "adaembed"
    assert rows.iloc[0]["mean"] == pytest.approx(-0.019)
    # every method gets its own best other: mixed_dim's is FIITED
    allm = stats.delta_to_best(r, "test/ne", variant_cols=["K"])
    mixed = allm[(allm["method"] == "mixed_dim")].iloc[0]
    assert mixed["reference"] == "fiited" and mixed["mean"] == pytest.approx(0.016)


def test_delta_to_best_only_takes_references_that_fit_in_the_same_memory():
    """Uniform at its one-dim floor holds 8x FIITED's bytes at a 1/64 budget: not "equal memory",
    so the best other is the method that really fits (within 5%), and with none the cell is out."""
    r = runs(("A", "uniform", np.nan, 1 / 64, -0.050),
             ("A", "adaembed", np.nan, 1 / 64, 0.010),
             ("A", "fiited", 2, 1 / 64, GAINS + 0.020))
    mem = {"uniform": 28_768.0, "adaembed": 3_724.0, "fiited": 3_664.0}
    r["mem/total_bytes"] = r["method"].map(mem)
    d = stats.delta_to_best(r, "test/ne", methods=["fiited"], variant_cols=["K"])
    assert d.iloc[0]["reference"] == "adaembed"
    assert d.iloc[0]["mean"] == pytest.approx(-0.011 + 0.020 - 0.010)
    # without the memory column the nominal budget decides (older stores): uniform is taken
    d = stats.delta_to_best(r.drop(columns="mem/total_bytes"), "test/ne", methods=["fiited"],
                            variant_cols=["K"])
    assert d.iloc[0]["reference"] == "uniform"
    r.loc[r["method"] == "adaembed", "mem/total_bytes"] = 3_664.0 * 1.06   # 6% above: out
    assert stats.delta_to_best(r, "test/ne", methods=["fiited"], variant_cols=["K"]).empty


def test_verdict_rule():
    v = stats.verdict([-0.02, 0.001, -0.001, np.nan], [-0.01, 0.003, 0.002, np.nan])
    assert list(v) == ["holds", "fails", "undecided", "undecided"]
    # against a margin: within 0.1% holds, straddling it is undecided
    assert list(stats.verdict([0.02, 0.05], [0.08, 0.15], margin=0.1)) == ["holds", "undecided"]
    assert stats.combine(["holds", "holds"]) == "holds"
    assert stats.combine(["holds", "undecided"]) == "undecided"
    assert stats.combine(["holds", "undecided", "fails"]) == "fails"


def test_variants_are_told_apart():
    r = runs(("A", "uniform", np.nan, 1.0, 0.0), ("A", "fiited", 2, 0.25, -0.01),
             ("A", "fiited", 4, 0.25, 0.01))
    d = stats.delta_to_uniform(r, "test/ne", stats.variant_columns(["method", "budget", "K",
                                                                    "dataset", "data.rows"]))
    got = dict(zip(d["variant"], d["mean"]))
    assert got["fiited K=2"] == pytest.approx(-0.01) and got["fiited K=4"] == pytest.approx(0.01)
    assert stats.variant_columns(["method", "budget", "K", "dataset", "data.rows"]) == ["K"]
    # an ablation: the usual value is left out, deviations are named
    r = runs(*[("A", "fiited", 4, b, 0.0) for b in (0.5, 0.25, 0.125)], ("A", "fiited", 2, 0.25, 0))
    labels = set(stats.with_variant(r, ["K"])["variant"])
    assert labels == {"fiited", "fiited K=2"}


def test_seed_noise():
    noisy = np.array([0.0, 0.002, -0.002, 0.004, -0.004])   # around the seed effect BASE
    r = runs(("A", "fiited", 2, 0.25, noisy), ("A", "fiited", 2, 0.0625, noisy))
    n = stats.seed_noise(r, "test/ne", ["K"]).iloc[0]
    expect = np.std(BASE + noisy, ddof=1)
    assert n["configs"] == 2 and n["seeds"] == 5
    assert n["pooled_std"] == pytest.approx(expect)
    assert n["max_spread"] == pytest.approx(np.ptp(BASE + noisy))
    note = stats.noise_note(r, "test/ne", ["K"])
    assert f"{expect:.4f}" in note and "5-5 seeds" in note and "fiited at budget 1/4" in note
    one = r[r["seed"] == 0]
    assert "not measurable" in stats.noise_note(one, "test/ne")


def test_fmt_budget():
    assert [stats.fmt_budget(b) for b in (1.0, 0.25, 0.00390625, 0.35)] == [
        "1", "1/4", "1/256", "0.35"]


def test_paired_summary_joins_the_deltas():
    r = runs(("A", "uniform", np.nan, 1.0, 0.0), ("A", "mixed_dim", np.nan, 0.25, 0.005),
             ("A", "fiited", 2, 0.25, GAINS))
    t = stats.paired_summary(r, "test/ne", ["method", "budget", "K"]).set_index("variant")
    f = t.loc["fiited"]
    assert f["ne_vs_uniform mean"] == pytest.approx(-0.011)
    assert f["auc_vs_uniform mean"] == pytest.approx(0.011)
    assert f["ne_vs_best_other mean"] == pytest.approx(-0.016) and f["best_other"] == "mixed_dim"
    assert f["ne_vs_uniform hi"] < 0 and f["ne_vs_uniform n"] == 5
    assert t.loc["uniform", "ne_vs_uniform mean"] == 0
