"""Figures: drawn as real PNGs when the data is there, skipped when it is not."""
from __future__ import annotations

from reports.data import load_report_data
import pytest

from reports.figures import (
    FIGURES, KEPT_FRAC, decay_sampling_heatmap, draw_all, k_ablation, label, ne_vs_memory,
    padding_comparison, thresholds_comparison, usual_values, utility_ablation)

from report_store import CONFIGS

PNG = b"\x89PNG\r\n\x1a\n"


def test_every_figure_is_a_nonempty_png(report):
    figs = report.out / "figures"
    for spec in FIGURES:   # the store holds data for every figure
        path = figs / f"{spec.name}.png"
        assert path.is_file(), spec.name
        data = path.read_bytes()
        assert data.startswith(PNG) and len(data) > 10_000, spec.name


def test_unusable_runs_draw_nothing_and_remove_stale_pngs(store, tmp_path):
    stale = tmp_path / "ne_vs_memory.png"
    stale.write_bytes(PNG)
    data = load_report_data("broken", store.uri)
    lines = []
    assert draw_all(data, tmp_path, log=lines.append) == {}
    assert not stale.exists()
    assert len(lines) == len(FIGURES) and all("skip" in line for line in lines)


def test_ablation_figures_need_two_values(store):
    """Only the axes that vary within a config group get a figure: in ``ablations`` every
    axis varies; restricted to one budget-0.5 config nothing but the overview remains."""
    data = load_report_data("ablations", store.uri)
    data.runs.frame = data.runs.frame[data.runs.frame["budget"] != 0.1]
    for draw in (k_ablation, utility_ablation, decay_sampling_heatmap, padding_comparison,
                 thresholds_comparison):
        assert draw(data) is None, draw.__name__
    assert ne_vs_memory(data) is not None


def test_labels_name_only_what_differs_from_the_usual_config(store):
    data = load_report_data("ablations", store.uri)
    runs = data.runs.complete
    labels = set(label(runs, data.runs.config_columns, usual_values(data)))
    assert {"uniform budget=1", "hashing budget=1/2", "fiited budget=1/10", "fiited budget=1/10 K=2",
            "fiited budget=1/10 thresholds=manual manual_ratios=[0.5, 0.7, 0.8, 1.0]"} <= labels
    assert len(labels) == len(CONFIGS)


@pytest.mark.parametrize("key, pos", [("prune/kept_frac_pos3", "3"),
                                      ("prune/kept_frac/pos12", "12"),
                                      ("prune/kept_fraction", None)])
def test_kept_fraction_metric_names(key, pos):
    m = KEPT_FRAC.fullmatch(key)
    assert (m.group(1) if m else None) == pos
