"""train.embedding_l2 and train.early_stopping through the real trainer."""
from __future__ import annotations

import torch

from benchmark.early_stop import EarlyStop
from benchmark.train import Trainer


def test_embedding_l2_shrinks_only_touched_rows(compose_cfg, tmp_path):
    common = ["method=uniform", "tracking=none", "train.max_steps=15",
              "train.sparse_optimizer.name=sgd", "train.sparse_optimizer.lr=0.5"]
    plain = Trainer(compose_cfg(*common), tmp_path / "a", tmp_path)
    reg = Trainer(compose_cfg(*common, "train.embedding_l2=0.5"), tmp_path / "b", tmp_path)
    start = plain.emb.pool.clone()
    assert torch.equal(start, reg.emb.pool)
    plain.fit(), reg.fit()
    touched = (plain.emb.pool != start).any(1)
    assert touched.any() and not touched.all()
    # untouched rows stay at their init in both; touched rows end smaller with the penalty
    assert torch.equal(reg.emb.pool[~touched], start[~touched])
    assert reg.emb.pool[touched].norm() < plain.emb.pool[touched].norm()


def test_early_stopping_stops_after_patience_validations(compose_cfg, tmp_path):
    cfg = compose_cfg("method=uniform", "tracking=none", "train.epochs=50", "train.max_steps=0",
                      "train.eval_every=5", "train.early_stopping=2",
                      "train.sparse_optimizer.lr=2.0", "train.dense_lr=0.5")
    summary = Trainer(cfg, tmp_path / "run", tmp_path).fit()
    steps = summary["train/steps"]
    assert summary["train/early_stopped_at"] == steps
    assert steps == summary["train/best_val_step"] + 2 * 5      # two worse validations after it
    assert summary["train/best_val_ne"] <= summary["val/ne"]


def test_early_stop_rule():
    es = EarlyStop(2)
    seq = [0.9, 0.8, 0.85, 0.79, 0.80, 0.81]
    out = [es.update({"val/ne": v}, step) for step, v in enumerate(seq, 1)]
    assert out == [False, False, False, False, False, True]
    assert es.summary() == {"train/best_val_ne": 0.79, "train/best_val_step": 4.0,
                            "train/early_stopped_at": 6.0}
    assert EarlyStop(0).update({"val/ne": 1.0}, 1) is False and EarlyStop(0).summary() == {}
