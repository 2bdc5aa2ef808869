"""The synthetic package: the split kept every byte, the control presets plant widths that do not
follow popularity, and the named variants agree with their conf/data files."""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from scipy.stats import spearmanr

from benchmark.config import register_configs
from benchmark.data.synthetic import (SyntheticConfig, build_law, build_planted, generate,
                                      knob_suffix)
from benchmark.data.synthetic.presets import VARIANTS

CONF = Path(__file__).resolve().parents[3] / "conf"
SMALL = dict(scale=0.0001, rows=20000, days=4, seed=3, calibration_rows=4096)
# Taken from the single-module generator (benchmark/data/synthetic.py) before it was split:
# sha256 of dense.npy + ids.npy + labels.npy, the fingerprint and the Bayes NE.
BEFORE_SPLIT = {
    "criteo": ("cf332268e6a3f32676847436ea28498dc704542c32b5cf9ca88c5714f86ecdfa",
               "7d154d61865d6688", 0.7165833806198272),
    "avazu": ("518d3bdd4bed04c069589d8d225f311f94067d39061accb2517d60c08bdd97c8",
              "e6487a9ce3535fa5", 0.6798888292008826),
}


@pytest.mark.parametrize("preset", sorted(BEFORE_SPLIT))
def test_same_bytes_as_before_the_split(preset, tmp_path):
    ds = generate(SyntheticConfig(preset=preset, **SMALL), tmp_path / preset)
    h = hashlib.sha256()
    for name in ("dense.npy", "ids.npy", "labels.npy"):
        h.update((tmp_path / preset / name).read_bytes())
    digest, fp, bayes = BEFORE_SPLIT[preset]
    assert (h.hexdigest(), ds.manifest.fingerprint, ds.manifest.stats["bayes_ne"]) == (
        digest, fp, bayes)


def test_width_law_is_fingerprinted_only_off_its_default():
    base = SyntheticConfig(preset="criteo", **SMALL)
    assert "width_law" not in base.canonical()
    flat = SyntheticConfig(preset="criteo", width_law="flat", **SMALL)
    assert flat.canonical()["width_law"] == "flat" and flat.fingerprint() != base.fingerprint()
    assert knob_suffix(flat).endswith("_widthlawflat") and knob_suffix(base) == "_calibrationrows4096"
    with pytest.raises(ValueError, match="width_law"):
        SyntheticConfig(width_law="wide").validate()


def _popularity_width_rho(law: str, tmp_path) -> list[float]:
    """Per table of >= 1000 ids: Spearman rho of an id's train count and its planted width."""
    cfg = SyntheticConfig(preset="criteo", scale=0.0005, rows=60000, days=4, seed=2,
                          width_law=law, calibration_rows=8192)
    ds = generate(cfg, tmp_path / law)
    model = build_planted(cfg, build_law(cfg))
    lo, hi = ds.manifest.splits["train"]
    ids = np.asarray(ds.ids[lo:hi])
    out = []
    for f, t in enumerate(model.tables):
        if len(t.width) >= 1000:
            counts = np.bincount(ids[:, f], minlength=len(t.width))
            out.append(spearmanr(counts, t.width)[0])
    assert len(out) >= 3
    return out


def test_control_widths_do_not_decrease_with_popularity(tmp_path):
    assert min(_popularity_width_rho("popular", tmp_path)) > 0.5     # the default favours them
    flat = _popularity_width_rho(VARIANTS["control"]["width_law"], tmp_path)
    assert max(abs(r) for r in flat) < 0.1
    assert max(_popularity_width_rho(VARIANTS["control_tail"]["width_law"], tmp_path)) < -0.3


def test_control_keeps_the_width_histogram():
    base = SyntheticConfig(preset="criteo", **SMALL)
    flat = SyntheticConfig(preset="criteo", width_law="flat", **SMALL)
    a = build_planted(base, build_law(base))
    b = build_planted(flat, build_law(flat))
    for ta, tb in zip(a.tables, b.tables):
        assert np.array_equal(np.bincount(ta.width, minlength=17),
                              np.bincount(tb.width, minlength=17))
    assert any(not np.array_equal(ta.width, tb.width) for ta, tb in zip(a.tables, b.tables))


def test_variants_match_their_conf_files_and_get_their_own_dirs():
    register_configs()
    paths = {}
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        for name in ["criteo", *VARIANTS]:
            data = f"synthetic_{name}"
            for scale in ("default", "smoke"):
                cfg = compose("config", overrides=[f"data={data}", f"scale={scale}"])
                paths[(data, scale)] = cfg.data.path
                if scale == "default" and name in VARIANTS:
                    got = OmegaConf.to_object(cfg.data.synthetic)
                    assert got == SyntheticConfig(**VARIANTS[name]), name
                    assert cfg.data.name == data
    # every variant but the larger-data one (at smoke scale it has smoke's rows) has its own dir
    distinct = {k: v for k, v in paths.items() if k != ("synthetic_criteo_large", "smoke")}
    assert len(set(distinct.values())) == len(distinct)
    assert paths[("synthetic_criteo_large", "smoke")] == paths[("synthetic_criteo", "smoke")]
