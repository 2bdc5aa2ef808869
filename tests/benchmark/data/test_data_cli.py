"""``fiited-data generate`` / ``info`` end to end through ``main``, and their error exits."""
from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest

from benchmark.data.cli import build_parser, main
from benchmark.data.format import open_dataset
from benchmark.data.synthetic import SyntheticConfig


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "avazu"
    rc = main(["generate", "--preset", "avazu", "--scale", "0.0005", "--rows", "12000",
               "--days", "4", "--seed", "2", "--out", str(out), "--quiet"])
    assert rc == 0
    return out


def test_generate_writes_the_dataset_it_describes(generated, capsys):
    ds = open_dataset(generated)
    m = ds.manifest
    assert m.num_rows == 12_000 and m.num_features == 21 and m.num_dense == 0
    assert m.fingerprint == SyntheticConfig(preset="avazu", scale=0.0005, rows=12_000, days=4,
                                            seed=2).fingerprint()
    rc = main(["generate", "--preset", "criteo", "--rows", "4000", "--days", "2",
               "--out", str(generated.parent / "criteo"), "--quiet"])
    out = capsys.readouterr().out
    assert rc == 0
    crit = open_dataset(generated.parent / "criteo").manifest
    assert f"click rate (train) {crit.click_rate:.4f}" in out
    assert f"Bayes NE test {crit.stats['bayes_ne']:.4f}" in out and "took" in out


def test_info_json(generated, capsys):
    assert main(["info", str(generated), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    ds = open_dataset(generated)
    assert info["num_rows"] == 12_000
    assert sum(s["rows"] for s in info["splits"].values()) == 12_000
    a, b = ds.split("val")
    assert info["splits"]["val"]["click_rate"] == pytest.approx(np.asarray(ds.labels[a:b]).mean())
    assert info["bayes_ne"] == ds.manifest.stats["bayes_ne"]
    tables = {t["name"]: t for t in info["tables"]}
    assert len(tables) == 21
    c1 = tables["C1"]                   # 7 ids: top 1% and top 10% are both the top id
    a, b = ds.split("train")
    col = np.asarray(ds.ids[a:b, 0])
    assert c1["top1"] == c1["top10"] == pytest.approx(np.bincount(col).max() / len(col))
    for t in info["tables"]:
        assert 0 < t["top1"] <= t["top10"] <= 1 and 1 <= t["seen"] <= t["cardinality"]
    ip = tables["device_ip"]
    assert ip["top10"] < tables["device_id"]["top10"]


def test_info_text(generated, capsys):
    assert main(["info", str(generated)]) == 0
    out = capsys.readouterr().out
    assert "device_ip" in out and "Bayes NE" in out and "train" in out and "top10%" in out


def test_bad_paths_exit_2_with_one_line(tmp_path, generated, capsys):
    assert main(["info", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "does not exist" in err and "Traceback" not in err
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "manifest.json").write_text("{not json")
    assert main(["info", str(broken)]) == 2
    assert "manifest.json: not valid JSON" in capsys.readouterr().err
    assert main(["generate", "--rows", "4000", "--out", str(generated), "--quiet"]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["generate", "--scale", "3", "--out", str(tmp_path / "x"), "--quiet"]) == 2
    assert "synthetic.scale=3.0" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["generate", "--preset", "movielens", "--out", str(tmp_path / "y")])
    assert e.value.code == 2


def test_prepare_is_offered_when_the_readers_exist():
    have = importlib.util.find_spec("benchmark.data.readers.cli") is not None
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    assert ("prepare" in sub.choices) == have
    assert {"generate", "info"} <= set(sub.choices)
