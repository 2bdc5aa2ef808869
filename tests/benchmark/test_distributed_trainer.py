"""``fiited-bench train.distributed=true`` under the real torchrun, 2 ranks of gloo on
loopback, against the 1-process run of the same config and seed (run in this process)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir

from benchmark.app import CONF_DIR, REPO_DIR, run_job
from benchmark.data.format import open_dataset
from benchmark.data.synthetic import ensure_synthetic
from benchmark.distributed.launch import rank_logs, torchrun_argv
from benchmark.distributed.planner import TableCost, plan_tables, table_bytes

pytestmark = pytest.mark.slow

SYNTH = {"preset": "criteo", "scale": 0.0005, "rows": 12000, "days": 3, "seed": 0,
         "calibration_rows": 4000}
# FIITED and ITEP with their random draws on (first-access and regrow values, random
# sampling): keyed by (table name, id), so a rank takes the 1-process decisions for its tables.
# What still couples tables across ranks (a shared pool, a pool sized from the total ledger)
# is off here (init_values.sharding_differences).
FIITED_EVENTS = """defaults:
  - fiited
  - _self_
budget: 0.25
budget_scope: weights
num_chunks: 4
pool: per_table
first_access_alloc: true
first_access_init: zero
regrow_init: random
sampling: random
schedule:
  warmup: [3, 8, 15]
  interval: 1000
"""
ITEP_WEIGHTS = """defaults:
  - itep
  - _self_
budget: 0.25
budget_scope: weights
"""
# 24 steps: training amplifies rounding differences (a 1e-7 nudge of one dense weight in a
# 1-process run grows to ~1e-5 in the metrics by step ~30 here), so runs are kept short.
COMMON = ["model=dlrm_small", "train=demo", "train.batch_size=250", "train.max_steps=24",
          "train.eval_batch_size=1500", "train.warmup_steps=2", "train.log_every=5",
          "train.memory_every=5", "train.progress=false", "tracking=none",
          "summary_table=false"]
# freq_filter counts each rank's tables itself; with T fixed every rank keeps the same ids, and
# its kept rows are aligned to the 1-process stream (its OOV rows are keyed by table name).
FREQ_FIXED = """defaults:
  - freq_filter
  - _self_
budget: 1.0
threshold: 2
"""
METHODS = ("uniform", "fiited_events", "itep_weights", "freq_fixed")


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    """A conf dir with the tiny dataset and the FIITED variant, and the dataset generated."""
    root = tmp_path_factory.mktemp("dist")
    (root / "conf" / "data").mkdir(parents=True)
    (root / "conf" / "method").mkdir()
    lines = [f"name: dist_tiny", f"path: {root / 'data' / 'tiny'}", "synthetic:"]
    lines += [f"  {k}: {v}" for k, v in SYNTH.items()]
    (root / "conf" / "data" / "dist_tiny.yaml").write_text("\n".join(lines) + "\n")
    (root / "conf" / "method" / "fiited_events.yaml").write_text(FIITED_EVENTS)
    (root / "conf" / "method" / "itep_weights.yaml").write_text(ITEP_WEIGHTS)
    (root / "conf" / "method" / "freq_fixed.yaml").write_text(FREQ_FIXED)
    ensure_synthetic(root / "data" / "tiny", SYNTH)
    return root


def _overrides(world: Path, *extra: str) -> list[str]:
    return [f"hydra.searchpath=[file://{world / 'conf'}]", "data=dist_tiny", *COMMON, *extra]


def _torchrun(world: Path, tag: str, overrides: list[str], timeout: float = 300):
    logs = world / f"logs_{tag}"
    env = dict(os.environ, PYTHONPATH=str(REPO_DIR), FIITED_DIST_TIMEOUT_S="120",
               TQDM_DISABLE="1")
    t0 = time.perf_counter()
    proc = subprocess.run(torchrun_argv(2, overrides, log_dir=logs), cwd=world, env=env,
                          capture_output=True, text=True, timeout=timeout)
    return proc, time.perf_counter() - t0, rank_logs(logs)


def _single(world: Path, method: str) -> Path:
    run_dir = world / "single" / method
    threads = torch.get_num_threads()
    try:
        with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
            cfg = compose("config", overrides=_overrides(world, f"method={method}"))
        run_job(cfg, run_dir, world)
    finally:
        torch.set_num_threads(threads)
    return run_dir


@pytest.fixture(scope="module")
def runs(world):
    """Both methods on 2 ranks in one torchrun (a Hydra multirun), and each on 1 process."""
    sweep = world / "dist"
    proc, _, logs = _torchrun(world, "sweep", ["-m", *_overrides(
        world, f"method={','.join(METHODS)}", f"hydra.sweep.dir={sweep}",
        "hydra.sweep.subdir=${hydra.job.num}")])
    assert proc.returncode == 0, f"torchrun failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return {m: (_single(world, m), sweep / str(i), logs) for i, m in enumerate(METHODS)}


def _json(d: Path, name: str):
    return json.loads((d / name).read_text())


QUALITY = ("val/ne", "val/logloss", "test/ne", "test/logloss")


@pytest.mark.parametrize("method", METHODS)
def test_two_ranks_match_one_process(runs, method):
    single, dist, _ = runs[method]
    a, b = _json(single, "summary.json"), _json(dist, "summary.json")
    for k in QUALITY:
        assert b[k] == pytest.approx(a[k], rel=1e-5), k
    for k in ("val/auc", "test/auc"):
        assert b[k] == pytest.approx(a[k], abs=1e-4), k
    # every validation point of the run, not only the last
    ha, hb = _json(single, "history.json"), _json(dist, "history.json")
    assert [h["step"] for h in ha] == [h["step"] for h in hb]
    for x, y in zip(ha, hb):
        assert y["val/logloss"] == pytest.approx(x["val/logloss"], rel=1e-5)
    # the same ledger in total, and kept widths per table (FIITED: the same pruning decisions)
    for k in ("mem/weights_bytes", "mem/optimizer_bytes", "mem/total_bytes",
              "mem/ledger_peak_bytes"):
        assert b[k] == a[k], k
    assert _json(dist, "dims.json") == _json(single, "dims.json")
    assert b["train/steps"] == a["train/steps"] == 24
    assert b["dist/world_size"] == 2


def test_fiited_run_had_pruning_events(runs):
    single, dist, _ = runs["fiited_events"]
    assert _json(single, "summary.json")["prune/event_seconds"] > 0
    assert _json(dist, "summary.json")["prune/event_seconds"] > 0
    dims = _json(dist, "dims.json").values()
    # events gave chunks to some rows and not to others (so matching dims is not trivial)
    assert sum(sum(c[1:]) for c in dims) > 0 and sum(sum(c[:-1]) for c in dims) > 0


def test_memory_is_reported_per_rank_and_in_total(runs):
    _, dist, _ = runs["uniform"]
    s = _json(dist, "summary.json")
    ranks = _json(dist, "memory_ranks.json")["ranks"]
    assert len(ranks) == 2
    assert s["mem/rank0/total_bytes"] + s["mem/rank1/total_bytes"] == s["mem/total_bytes"]
    assert sorted(ranks[0]["tables"] + ranks[1]["tables"]) == sorted(_json(dist, "dims.json"))
    assert not set(ranks[0]["tables"]) & set(ranks[1]["tables"])      # a table lives on one rank
    assert (dist / "sharding_plan.txt").read_text().count("\n") >= 4


def test_only_rank_zero_writes_outputs(runs, world):
    _, dist, logs = runs["uniform"]
    assert not list((world / "dist").rglob("checkpoint*"))
    assert sorted(logs) == [0, 1]
    assert "sharding plan" in logs[0] and "sharding plan" not in logs[1]


def test_out_of_range_id_fails_every_rank_with_the_table_named(world):
    """A corrupt id in a table that rank 1 owns: both ranks stop at once with the same clear
    error (not a hang until the 120 s timeout)."""
    src = open_dataset(world / "data" / "tiny")
    m = src.manifest
    plan = plan_tables([TableCost(n, c, table_bytes(c, 16)) for n, c in
                        zip(m.feature_names, m.cardinalities)], 2)
    f = plan.tables_of(1)[0]
    bad = world / "data" / "corrupt"
    if not bad.exists():
        shutil.copytree(world / "data" / "tiny", bad)
        ids = np.load(bad / "ids.npy", mmap_mode="r+")
        start, end = m.splits["train"]
        ids[start:end:97, f] = m.cardinalities[f]   # one past the end, in every train batch
        ids.flush()
        del ids
    (world / "conf" / "data" / "corrupt.yaml").write_text(f"name: corrupt\npath: {bad}\n")
    overrides = _overrides(world, "method=uniform", "data=corrupt",
                           f"hydra.run.dir={world / 'corrupt_run'}")
    proc, seconds, logs = _torchrun(world, "corrupt", overrides, timeout=250)
    assert proc.returncode != 0
    # every rank reads the same global batches, so each finds the bad id in the data itself
    want = f"feature {m.feature_names[f]!r}: id {m.cardinalities[f]} is out of range"
    for r in (0, 1):
        assert want in logs.get(r, ""), f"rank {r} output:\n{logs.get(r, '')[-3000:]}"
        assert str(bad / "ids.npy") in logs[r]          # names the file
    assert seconds < 110, f"took {seconds:.0f}s: a rank waited for the timeout"
