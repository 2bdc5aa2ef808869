"""Training on multi-hot data: features from the manifest (a history bag shares the item table),
every method through the real trainer, and the CLI on MovieLens-100K with genres and history."""
from __future__ import annotations

import importlib.resources
import importlib.util
import json

import numpy as np
import pytest

from benchmark.batch_inputs import check_distributed, feature_specs
from benchmark.data.format import DatasetWriter, Manifest
from benchmark.errors import UserError
from benchmark.train import Trainer
from fiited import FeatureSpec, TableSpec, method_names

N = 900


def _dataset(out):
    """user_id, item_id one-hot; a history bag over item_id (shared table), tags over its own
    table; lengths 0..5, so empty bags and duplicates occur."""
    rng = np.random.default_rng(0)
    user, item = rng.integers(0, 30, N), rng.integers(0, 50, N)
    label = ((user + item) % 3 == 0).astype(np.uint8)
    with DatasetWriter(out, N, 2, 1) as w:
        w.write(0, rng.normal(size=(N, 1)).astype(np.float32),
                np.stack([user, item], 1).astype(np.int32), label)
        for name, card in (("history", 50), ("tags", 8)):
            lens = rng.integers(0, 6, N)
            w.add_bag(name, rng.integers(0, card, int(lens.sum())).astype(np.int32),
                      np.concatenate([[0], np.cumsum(lens)]))
        return w.close(Manifest(
            name="multihot", num_rows=N, feature_names=["user_id", "item_id"],
            cardinalities=[30, 50], dense_names=["x"],
            splits={"train": [0, 700], "val": [700, 800], "test": [800, N]},
            click_rate=float(label.mean()), fingerprint="t",
            bags=[{"name": "history", "table": "item_id", "cardinality": 50, "pooling": "mean"},
                  {"name": "tags", "table": "tags", "cardinality": 8, "pooling": "sum"}]))


@pytest.fixture(scope="module")
def multihot(tmp_path_factory):
    return _dataset(tmp_path_factory.mktemp("mh") / "multihot")


def test_features_from_the_manifest_share_the_item_table(multihot):
    tables, features = feature_specs(multihot.manifest)
    assert tables == [TableSpec("user_id", 30), TableSpec("item_id", 50), TableSpec("tags", 8)]
    assert features == [FeatureSpec("user_id", "user_id"), FeatureSpec("item_id", "item_id"),
                        FeatureSpec("history", "item_id", "mean"),
                        FeatureSpec("tags", "tags", "sum")]
    with pytest.raises(UserError, match=r"train.distributed=true does not take bag"):
        check_distributed(multihot.manifest, True)


@pytest.mark.slow
@pytest.mark.parametrize("name", method_names())
def test_every_method_trains_on_bag_features(compose_cfg, tmp_path, multihot, name):
    cfg = compose_cfg("data=movielens_multihot", f"data.path={multihot.path}", f"method={name}",
                      "tracking=none", "train.epochs=1", "train.batch_size=64",
                      "train.max_steps=8", "model=dlrm_small", tiny_data=False)
    trainer = Trainer(cfg, tmp_path / "run", tmp_path)
    assert trainer.model.num_vectors == 5                      # dense + 2 one-hot + 2 bags
    item = trainer.emb.tables.index(TableSpec("item_id", 50))
    summary = trainer.fit()
    assert summary["train/steps"] == 8 and np.isfinite(summary["val/ne"]), summary
    if name == "freq_filter":          # the counting pass saw the bags (history over item_id)
        assert int(trainer.emb.kept_per_table[item]) > 0


def _ml100k_multihot(tmp_path):
    if importlib.util.find_spec("recbole") is None:
        pytest.skip("recbole is not installed (make test installs recbole==1.2.1 --no-deps)")
    from benchmark.data.cli import main as data_main

    src = importlib.resources.files("recbole") / "dataset_example" / "ml-100k"
    out = tmp_path / "ml100k_multihot"
    assert data_main(["prepare", "movielens", "--input", str(src), "--genres", "bag",
                      "--history", "20", "--out", str(out)]) in (0, None)
    return out


@pytest.mark.slow
def test_fiited_on_multihot_movielens_from_the_cli(run_app, tmp_path):
    data = _ml100k_multihot(tmp_path)
    run_app("data=movielens_multihot", f"data.path={data}", "method=fiited", "scale=smoke",
            "tracking=none", tiny=False)
    summary = json.loads(next((tmp_path / "outputs").rglob("summary.json")).read_text())
    assert summary["train/steps"] == 40
    assert summary["val/ne"] < 1.0 and summary["mem/total_bytes"] > 0, summary


@pytest.mark.slow
def test_dcn_on_multihot_movielens_trains_below_base_rate_ne(compose_cfg, tmp_path):
    data = _ml100k_multihot(tmp_path)
    cfg = compose_cfg("data=movielens_multihot", f"data.path={data}", "method=fiited",
                      "model=dcn", "scale=smoke", "tracking=none", "train.max_steps=120",
                      tiny_data=False)
    trainer = Trainer(cfg, tmp_path / "run", tmp_path)
    names = [f.name for f in trainer.emb.features]
    assert names[-2:] == ["genres", "history"] and trainer.model.num_vectors == len(names)
    summary = trainer.fit()
    assert summary["val/ne"] < 1.0, summary
    assert summary["train/steps"] == 120
