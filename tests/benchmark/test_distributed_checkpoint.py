"""Distributed checkpoints under the real torchrun (2 gloo ranks): every rank's file for a step
is published by one manifest after a barrier; resume checks every rank's file on every rank."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from benchmark.app import REPO_DIR
from benchmark.data.synthetic import ensure_synthetic
from benchmark.distributed.launch import rank_logs, torchrun_argv

pytestmark = pytest.mark.slow

SYNTH = {"preset": "criteo", "scale": 0.0005, "rows": 8000, "days": 2, "seed": 0}
COMMON = ["model=dlrm_small", "train=demo", "train.batch_size=250", "train.max_steps=16",
          "train.eval_batch_size=2000", "train.warmup_steps=2", "train.progress=false",
          "tracking=none", "summary_table=false", "method=uniform", "train.distributed=true"]


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("dist_ckpt")
    (root / "conf" / "data").mkdir(parents=True)
    lines = ["name: ckpt_tiny", f"path: {root / 'data'}", "synthetic:"]
    lines += [f"  {k}: {v}" for k, v in SYNTH.items()]
    (root / "conf" / "data" / "ckpt_tiny.yaml").write_text("\n".join(lines) + "\n")
    ensure_synthetic(root / "data", SYNTH)
    return root


def torchrun(world: Path, tag: str, *extra: str):
    logs = world / f"logs_{tag}"
    overrides = [f"hydra.searchpath=[file://{world / 'conf'}]", "data=ckpt_tiny", *COMMON,
                 f"hydra.run.dir={world / tag}", *extra]
    env = dict(os.environ, PYTHONPATH=str(REPO_DIR), FIITED_DIST_TIMEOUT_S="120",
               TQDM_DISABLE="1")
    proc = subprocess.run(torchrun_argv(2, overrides, log_dir=logs), cwd=world, env=env,
                          capture_output=True, text=True, timeout=300)
    return proc, rank_logs(logs)


def test_manifest_publishes_the_step_and_resume_checks_every_rank(world):
    proc, logs = torchrun(world, "stopped", "train.stop_after=8", "train.checkpoint_every=4")
    assert proc.returncode == 0, f"{proc.stderr[-3000:]}\n{logs}"
    run = world / "stopped"
    manifest = json.loads((run / "checkpoint.manifest.json").read_text())
    assert manifest["step"] == 8 and manifest["world_size"] == 2
    names = sorted(f["name"] for f in manifest["files"])
    assert names == ["checkpoint.rank0of2.step8.pt", "checkpoint.rank1of2.step8.pt"]
    # the step-4 files were dropped once step 8 was published; only the manifest's remain
    assert sorted(p.name for p in run.glob("checkpoint.rank*")) == names
    proc, logs = torchrun(world, "resumed", f"train.resume={run / 'checkpoint.pt'}")
    assert proc.returncode == 0, f"{proc.stderr[-3000:]}\n{logs}"
    assert json.loads((world / "resumed" / "summary.json").read_text())["train/steps"] == 16
    # one rank's file damaged: every rank stops, naming that file
    victim = run / "checkpoint.rank1of2.step8.pt"
    victim.write_bytes(victim.read_bytes()[:100])
    proc, logs = torchrun(world, "broken", f"train.resume={run / 'checkpoint.pt'}")
    assert proc.returncode != 0
    for r in (0, 1):
        assert str(victim) in logs.get(r, ""), f"rank {r}:\n{logs.get(r, '')[-3000:]}"
