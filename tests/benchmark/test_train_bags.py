"""The trainer and bag features: bags reach the model only when the dataset has them, and a
bag whose table disagrees with the one-hot feature of that name fails with one line."""
from __future__ import annotations

import numpy as np
import pytest

from benchmark.data.format import DatasetWriter, Manifest
from benchmark.data.loader import BatchLoader
from benchmark.errors import UserError
from benchmark.batch_inputs import model_inputs
from benchmark.train import Trainer

N = 600


def _bag_dataset(out):
    r = np.arange(N)
    with DatasetWriter(out, N, 2, 0) as w:
        w.write(0, None, np.stack([r % 20, r % 7], 1).astype(np.int32), (r % 2).astype(np.uint8))
        lens = r % 4
        w.add_bag("history", (np.arange(lens.sum()) % 20).astype(np.int32),
                  np.concatenate([[0], np.cumsum(lens)]))
        return w.close(Manifest(
            name="bags", num_rows=N, feature_names=["user_id", "item_id"],
            cardinalities=[20, 7], dense_names=[],
            splits={"train": [0, 400], "val": [400, 500], "test": [500, N]}, click_rate=0.5,
            fingerprint="t", bags=[{"name": "history", "table": "item_id", "cardinality": 20,
                                    "pooling": "mean"}]))


def test_bag_over_a_table_of_another_size_is_one_clear_error(compose_cfg, tmp_path):
    ds = _bag_dataset(tmp_path / "bags")    # history over item_id: 20 ids, item_id has 7
    cfg = compose_cfg("data=movielens", f"data.path={ds.path}", "method=uniform",
                      "tracking=none", tiny_data=False)
    with pytest.raises(UserError, match=r"bag feature 'history' reads table 'item_id' with "
                                         r"cardinality 20, but that table has 7 rows"):
        Trainer(cfg, tmp_path / "run", tmp_path)


def test_model_inputs_pass_bags_only_when_present(tmp_path):
    ds = _bag_dataset(tmp_path / "bags")
    batch = next(iter(BatchLoader(ds, "train", 8, shuffle=False)))
    args = model_inputs(batch, "cpu")
    assert len(args) == 3 and args[2].lengths()[:, 0].tolist() == [0, 1, 2, 3, 0, 1, 2, 3]
    assert len(model_inputs(batch._replace(bags=None), "cpu")) == 2
