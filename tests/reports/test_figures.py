"""Figures: drawn as real PNGs when the data is there, skipped when it is not."""
from __future__ import annotations

import pytest

from reports.data import load_report_data
from reports.figures import FIGURES, draw_all

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
    figs = draw_all(data)
    assert "k_ablation" not in figs and "utility_ablation" not in figs
    assert "decay_sampling_heatmap" not in figs and "padding_comparison" not in figs
    assert {"ne_vs_memory", "throughput_ratio"} <= set(figs)
