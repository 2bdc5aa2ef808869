"""The torchrun command line the launch helper builds."""
from __future__ import annotations

import pytest

from benchmark.distributed.launch import rank_logs, torchrun_argv


def test_single_run_gets_distributed_flag_and_one_pinned_run_dir():
    argv = torchrun_argv(2, ["method=uniform"], python="py", now=0)
    assert argv[:5] == ["py", "-m", "torch.distributed.run", "--standalone",
                        "--nproc-per-node=2"]
    assert argv[5:8] == ["-m", "benchmark.app", "method=uniform"]
    assert "train.distributed=true" in argv
    run_dir = [a for a in argv if a.startswith("hydra.run.dir=")]
    assert len(run_dir) == 1 and "${now" not in run_dir[0] and "${method.name}" in run_dir[0]


def test_multirun_pins_the_sweep_dir_and_keeps_user_choices():
    argv = torchrun_argv(4, ["-m", "method=uniform,fiited", "train.distributed=true",
                             "hydra.sweep.dir=/x"], log_dir="/logs", python="py")
    assert argv.count("train.distributed=true") == 1
    assert [a for a in argv if a.startswith("hydra.sweep.dir=")] == ["hydra.sweep.dir=/x"]
    assert not any(a.startswith("hydra.run.dir=") for a in argv)
    assert argv[argv.index("--log-dir") + 1] == "/logs"
    with pytest.raises(ValueError, match="--nproc must be >= 1"):
        torchrun_argv(0, [])


def test_rank_logs_reads_torchruns_layout(tmp_path):
    for rank, text in ((0, "zero"), (1, "one")):
        d = tmp_path / "run_x" / "attempt_0" / str(rank)
        d.mkdir(parents=True)
        (d / "stdout.log").write_text(text + "\n")
        (d / "stderr.log").write_text("err\n")
    logs = rank_logs(tmp_path)
    assert sorted(logs) == [0, 1]
    assert "zero" in logs[0] and "err" in logs[0] and "one" in logs[1]
