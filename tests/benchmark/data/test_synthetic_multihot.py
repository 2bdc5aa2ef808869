"""The synthetic multi-hot knob: off by default (fingerprints unchanged), bags that load as a
Jagged, lengths of the asked mean, bytes independent of chunking, a planted bag effect."""
from __future__ import annotations

import numpy as np
import pytest

from benchmark.data.format import DatasetError
from benchmark.data.loader import BatchLoader
from benchmark.data.synthetic import SyntheticConfig, generate, generation, knob_suffix

SMALL = dict(preset="criteo", scale=0.0001, rows=20000, days=4, seed=3, calibration_rows=4096)


def test_off_by_default_and_fingerprinted_only_when_set():
    base = SyntheticConfig(**SMALL)
    assert "multi_hot_fields" not in base.canonical() and knob_suffix(base) == "_calibrationrows4096"
    on = SyntheticConfig(multi_hot_fields=3, **SMALL)
    assert on.fingerprint() != base.fingerprint() and knob_suffix(on) == "_calibrationrows4096_multihotfields3"
    with pytest.raises(DatasetError, match="multi_hot_fields=27: must be in 0..26"):
        SyntheticConfig(multi_hot_fields=27, **SMALL).validate()


def test_bags_load_with_the_asked_mean_length(tmp_path):
    ds = generate(SyntheticConfig(multi_hot_fields=3, multi_hot_mean_len=4.0, **SMALL),
                  tmp_path / "mh")
    m = ds.manifest
    assert [b["name"] for b in m.bags] == ["multi_1", "multi_2", "multi_3"]
    top3 = sorted(m.cardinalities, reverse=True)[:3]
    assert [b["cardinality"] for b in m.bags] == top3
    for name, (values, offsets) in ds.bags.items():
        assert abs(np.diff(offsets).mean() - 4.0) < 0.1, name
        assert (np.diff(offsets) == 0).any()                       # empty bags occur
    batch = next(iter(BatchLoader(ds, "train", 1024, shuffle=True)))
    batch.bags.validate(top3)
    assert batch.bags.lengths().shape == (1024, 3)


def test_bytes_do_not_depend_on_chunking(tmp_path, monkeypatch):
    cfg = SyntheticConfig(multi_hot_fields=2, **dict(SMALL, rows=140_000))
    a = generate(cfg, tmp_path / "a")
    monkeypatch.setattr(generation, "CHUNK_BLOCKS", 1)
    b = generate(cfg, tmp_path / "b")
    for name in a.bags:
        assert np.array_equal(a.bags[name][0], b.bags[name][0])
        assert np.array_equal(a.bags[name][1], b.bags[name][1])
    assert np.array_equal(a.labels, b.labels)


def test_bag_effect_is_planted(tmp_path):
    """Rows whose bag holds ids of high scalar effect click more often than the others."""
    cfg = SyntheticConfig(multi_hot_fields=1, multi_hot_mean_len=8.0,
                          **dict(SMALL, rows=60_000))
    ds = generate(cfg, tmp_path / "mh")
    from benchmark.data.synthetic import build_law, build_planted
    from benchmark.data.synthetic.multihot import bag_sources
    laws = build_law(cfg)
    src = bag_sources(laws, 1)[0]
    scalar = build_planted(cfg, laws).tables[src].scalar
    values, offsets = ds.bags["multi_1"]
    lens = np.diff(offsets)
    eff = np.bincount(np.repeat(np.arange(len(lens)), lens), scalar[values],
                      minlength=len(lens)) / np.sqrt(np.maximum(lens, 1))
    hi = eff > np.median(eff)
    assert ds.labels[hi].mean() > ds.labels[~hi].mean() + 0.01


def test_generate_and_info_cli_show_the_bags(tmp_path, capsys):
    from benchmark.data.cli import main
    out = tmp_path / "s"
    assert main(["generate", "--scale", "0.0001", "--rows", "20000", "--days", "4",
                 "--multi-hot-fields", "2", "--multi-hot-mean-len", "3", "--out", str(out),
                 "--quiet"]) == 0
    capsys.readouterr()
    assert main(["info", str(out)]) == 0
    text = capsys.readouterr().out
    assert "bag multi_1" in text and "sum pooling, mean length 3.0" in text
    assert main(["generate", "--multi-hot-fields", "99", "--out", str(tmp_path / "x"),
                 "--quiet"]) == 2
    assert "multi_hot_fields=99: must be in 0..26" in capsys.readouterr().err
