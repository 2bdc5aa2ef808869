"""The synthetic generator: determinism, calibration, skew, planted structure, drift, reuse."""
from __future__ import annotations

import math
import multiprocessing as mp
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

import benchmark.data.synthetic as synthetic
from benchmark.config import register_configs
from benchmark.data.format import DatasetError, fingerprint, open_dataset
from benchmark.data.stats import top_coverage
from benchmark.data.synthetic import (PRESETS, DayMaps, SyntheticConfig, TableLaw, as_config,
                                      build_law, build_planted, default_path, ensure_synthetic,
                                      generate, split_ranges)

CONF = Path(__file__).resolve().parents[3] / "conf" / "data"
# 140k rows: three 64k RNG blocks, so chunk and day edges fall inside blocks.
CRITEO = SyntheticConfig(preset="criteo", rows=140_000, seed=3)
AVAZU = SyntheticConfig(preset="avazu", rows=60_000, days=10, seed=1)


@pytest.fixture(scope="module")
def criteo(tmp_path_factory):
    return generate(CRITEO, tmp_path_factory.mktemp("syn") / "criteo")


@pytest.fixture(scope="module")
def avazu(tmp_path_factory):
    return generate(AVAZU, tmp_path_factory.mktemp("syn") / "avazu")


@pytest.fixture(scope="module")
def planted():
    return build_planted(CRITEO, build_law(CRITEO))


def _bytes(path: Path) -> dict[str, bytes]:
    return {n: (path / f"{n}.npy").read_bytes() for n in ("dense", "ids", "labels")}


def _biggest(ds) -> int:
    return int(np.argmax(ds.manifest.cardinalities))


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    cfg = SyntheticConfig(rows=20_000, seed=7)
    a, b = generate(cfg, tmp_path / "a"), generate(cfg, tmp_path / "b")
    assert _bytes(a.path) == _bytes(b.path)
    assert a.manifest.stats["bayes_ne"] == b.manifest.stats["bayes_ne"]
    c = generate(SyntheticConfig(rows=20_000, seed=8), tmp_path / "c")
    other = _bytes(c.path)
    assert all(other[n] != v for n, v in _bytes(a.path).items())


def test_bytes_do_not_depend_on_chunking(criteo, tmp_path, monkeypatch):
    monkeypatch.setattr(synthetic.generation, "CHUNK_BLOCKS", 1)
    again = generate(CRITEO, tmp_path / "one_block_chunks")
    assert _bytes(again.path) == _bytes(criteo.path)


@pytest.mark.parametrize("which", ["criteo", "avazu"])
def test_click_rate_within_one_point_of_preset(which, request):
    ds = request.getfixturevalue(which)
    a, b = ds.split("train")
    realised = float(np.asarray(ds.labels[a:b]).mean())
    assert ds.manifest.click_rate == pytest.approx(realised)
    assert abs(realised - PRESETS[which].click_rate) < 0.01


def test_layout_splits_and_types(criteo, avazu):
    m = criteo.manifest
    assert m.splits == split_ranges(140_000, 7) and set(m.splits) == {"train", "val", "test"}
    starts = m.stats["day_starts"]
    assert m.splits["train"] == [0, starts[-2]]
    assert m.splits["test"][0] == starts[-2] and m.splits["val"][1] == 140_000
    assert criteo.ids.dtype == np.int32 and criteo.dense.dtype == np.float32
    assert criteo.dense.shape == (140_000, 13) and avazu.dense.shape == (60_000, 0)
    assert np.all(np.asarray(criteo.ids) < np.array(m.cardinalities)) and criteo.ids.min() >= 0
    assert m.cardinalities[2] == round(10131227 * CRITEO.scale)      # scaled large table
    assert m.cardinalities[8] == 3                                    # never above the real size
    assert avazu.manifest.feature_names[9] == "device_ip"
    assert len(avazu.manifest.cardinalities) == 21
    assert np.asarray(criteo.dense).min() >= 0                        # log(1 + count)


def test_top1_coverage_matches_zipf_expectation(criteo):
    """Day 0 only (before any drift); tolerance 0.03 absolute (sampling of 20k rows)."""
    f = _biggest(criteo)
    info = criteo.manifest.stats["tables"][f]
    law = TableLaw(info["rows"], info["zipf_s"], info["default_mass"], False)
    day0 = np.asarray(criteo.ids[:criteo.manifest.stats["day_starts"][1], f])
    measured = top_coverage(np.bincount(day0, minlength=law.n))[0]
    expected = top_coverage(law.probabilities_by_rank())[0]
    assert abs(measured - expected) < 0.03
    # the tolerance tells exponents apart: 0.3 flatter or steeper is clearly off
    for s in (info["zipf_s"] - 0.3, info["zipf_s"] + 0.3):
        other = top_coverage(TableLaw(law.n, s, law.default_mass, False).probabilities_by_rank())
        assert abs(other[0] - expected) > 0.06


def test_avazu_heavy_hitters(avazu):
    names = avazu.manifest.feature_names
    a, b = avazu.split("train")
    ids = np.asarray(avazu.ids[a:b])
    for name, share in {"C1": 0.919, "device_id": 0.825, "app_id": 0.639}.items():
        col = ids[:, names.index(name)]
        assert abs(np.mean(col == 0) - share) < 0.01, name
    ip = np.bincount(ids[:, names.index("device_ip")])
    assert ip.max() / ip.sum() < 0.02          # no heavy hitter in device_ip (docs/data.md: ~0.5%)


def _ne(p: np.ndarray, y: np.ndarray, rate: float) -> float:
    ll = -np.mean(np.where(y > 0, np.log(p), np.log1p(-p)))
    return ll / -(rate * math.log(rate) + (1 - rate) * math.log(1 - rate))


def test_bayes_ne_recorded_and_reproduced_from_the_planted_model(criteo, planted):
    st = criteo.manifest.stats
    assert 0 < st["bayes_ne"] < 1 and 0 < st["bayes_ne_val"] < 1
    model = planted
    for split, key in (("test", "bayes_ne"), ("val", "bayes_ne_val")):
        a, b = criteo.split(split)
        p = np.clip(1 / (1 + np.exp(-model.logits(np.asarray(criteo.dense[a:b]),
                                                   np.asarray(criteo.ids[a:b])))), 1e-12, 1)
        y = np.asarray(criteo.labels[a:b])
        assert _ne(p, y, criteo.manifest.click_rate) == pytest.approx(st[key], rel=1e-6)
        # the labels really follow the model: the constant predictor is worse
        assert _ne(np.full(len(y), criteo.manifest.click_rate), y,
                   criteo.manifest.click_rate) > st[key] + 0.1


def test_rarity_shrinks_planted_width(criteo, planted):
    model = planted
    f = _biggest(criteo)
    a, b = criteo.split("train")
    counts = np.bincount(criteo.ids[a:b, f], minlength=criteo.manifest.cardinalities[f])
    order = np.argsort(-counts, kind="stable")
    width = model.tables[f].width.astype(float)
    n = len(order)
    top, tail = width[order[: n // 10]].mean(), width[order[n // 2:]].mean()
    assert top > tail + 3
    assert width[order[0]] == CRITEO.latent_dim


def test_drift_moves_popular_ids():
    cfg = SyntheticConfig(rows=140_000, drift=0.05)
    laws = build_law(cfg)
    f = int(np.argmax([law.n for law in laws]))
    maps = DayMaps(cfg, laws)
    first = maps.maps[f].copy()
    maps.advance_to(1)
    changed = np.mean(maps.maps[f] != first)
    assert 0.04 < changed < 0.06                      # ~drift (a few ids stay put)
    maps.advance_to(cfg.days - 1)
    k = len(first) // 100
    kept = len(set(first[:k]) & set(maps.maps[f][:k])) / k
    assert 0.5 < kept < 0.9                           # ~0.95^6 of the top 1% remain
    still = DayMaps(SyntheticConfig(rows=140_000, drift=0.0), laws)
    still.advance_to(cfg.days - 1)
    assert np.array_equal(still.maps[f], first)


def test_drift_shows_in_the_data(criteo):
    """Ids that became top-1% by the last day get far more traffic then than on day 0."""
    laws = build_law(CRITEO)
    f = _biggest(criteo)
    maps = DayMaps(CRITEO, laws)
    k = laws[f].n // 100
    top0 = set(maps.maps[f][:k].tolist())
    maps.advance_to(CRITEO.days - 1)
    risen = np.array(sorted(set(maps.maps[f][:k].tolist()) - top0))
    assert len(risen) > 0
    starts = criteo.manifest.stats["day_starts"]
    share = [np.isin(criteo.ids[a:b, f], risen).mean() for a, b in
             ((starts[0], starts[1]), (starts[-2], starts[-1]))]
    assert share[1] > 3 * share[0]


def test_ensure_reuses_and_refuses_other_settings(tmp_path):
    cfg = SyntheticConfig(rows=10_000, days=4)
    out = tmp_path / "d"
    first = ensure_synthetic(out, cfg)
    inode = (out / "ids.npy").stat().st_ino
    again = ensure_synthetic(out, {"rows": 10_000, "days": 4})       # a mapping, as from Hydra
    assert again.manifest.created == first.manifest.created
    assert (out / "ids.npy").stat().st_ino == inode
    with pytest.raises(DatasetError, match=r"seed: 0 there, 1 asked"):
        ensure_synthetic(out, SyntheticConfig(rows=10_000, days=4, seed=1))
    (tmp_path / "other").mkdir()
    with pytest.raises(DatasetError, match="no manifest.json"):
        ensure_synthetic(tmp_path / "other", cfg)


def _ensure_in_child(args):
    out, barrier = args
    barrier.wait()
    ds = ensure_synthetic(out, SyntheticConfig(rows=30_000, days=3))
    return (ds.path / "ids.npy").stat().st_ino, ds.manifest.fingerprint


def test_concurrent_ensure_generates_once(tmp_path):
    ctx = mp.get_context("spawn")
    out = tmp_path / "shared"
    with ctx.Manager() as manager:
        barrier = manager.Barrier(3)
        with ctx.Pool(3) as pool:
            results = pool.map(_ensure_in_child, [(str(out), barrier)] * 3)
    assert len(set(results)) == 1                     # one dataset, seen by all
    assert results[0][1] == SyntheticConfig(rows=30_000, days=3).fingerprint()
    open_dataset(out)
    assert not [p for p in tmp_path.iterdir() if ".partial-" in p.name or ".old-" in p.name]


def test_config_errors_name_the_key(tmp_path):
    with pytest.raises(DatasetError, match=r"synthetic\.preset='criteo2'"):
        generate(SyntheticConfig(preset="criteo2"), tmp_path / "x")
    with pytest.raises(DatasetError, match=r"synthetic\.days"):
        generate(SyntheticConfig(days=1), tmp_path / "x")
    with pytest.raises(DatasetError, match=r"unknown keys \['sacle'\]"):
        as_config({"sacle": 0.1})
    assert not (tmp_path / "x").exists()
    assert SyntheticConfig(scale=1).fingerprint() == SyntheticConfig(scale=1.0).fingerprint()
    assert SyntheticConfig().fingerprint() != fingerprint(["synthetic", 0, {}])


@pytest.mark.parametrize("name", ["synthetic_criteo", "synthetic_avazu"])
def test_data_yaml_fits_the_schema(name):
    register_configs()  # the path interpolates the knob-suffix resolver
    node = OmegaConf.merge(OmegaConf.structured({"data": {"name": "", "path": "",
                                                          "synthetic": SyntheticConfig}}),
                           {"data": OmegaConf.load(CONF / f"{name}.yaml")})
    cfg = OmegaConf.to_object(node.data.synthetic)
    assert isinstance(cfg, SyntheticConfig) and f"synthetic_{cfg.preset}" == name
    cfg.validate()
    assert node.data.path == str(default_path(cfg))


@pytest.mark.parametrize("s", [0.0, 0.45, 1.0, 1.3, 2.5])
def test_fast_zipf_inverse_equals_binary_search(s):
    law = TableLaw(50_000, s, 0.0, False)              # past HEAD: the fix-up path runs
    rng = np.random.default_rng(0)
    v = np.concatenate([rng.random(100_000), law.cdf[TableLaw.HEAD - 3:TableLaw.HEAD + 3],
                        law.cdf[-20:-1], np.nextafter(law.cdf[-20:], 0)])
    want = np.minimum(np.searchsorted(law.cdf, v, side="right"), law.n - 2)
    assert np.array_equal(law.rank_index(v), want)
