"""freq_filter through the real harness: the counting pass runs on the training split, the
run fits its budget and its counts sit in the ledger's peak, not in the final total."""
from __future__ import annotations

import json

from benchmark.train import Trainer


def test_freq_filter_trains_within_budget(compose_cfg, tmp_path):
    cfg = compose_cfg("method=freq_filter", "method.budget=0.25", "tracking=none",
                      "train.max_steps=30")
    trainer = Trainer(cfg, tmp_path / "run", tmp_path)
    emb = trainer.emb
    lo, hi = trainer.data.manifest.splits["train"]
    assert int(emb.counts.sum()) == (hi - lo) * len(trainer.tables)   # every train id counted
    counts_bytes = emb.memory().utility
    summary = trainer.fit()
    assert 0 < summary["val/ne"] < 1.5
    assert summary["mem/weights_bytes"] <= 0.25 * summary["mem/uniform_weights_bytes"]
    assert summary["mem/utility_bytes"] == 0 and counts_bytes > 0
    assert emb.threshold >= 1
    memory = json.loads((tmp_path / "run" / "memory.json").read_text())
    assert memory["weights"] == summary["mem/weights_bytes"]
