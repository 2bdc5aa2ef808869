"""Launcher environments and distributed settings: resolved, or refused with the fix named."""
from __future__ import annotations

import os

import pytest

from benchmark.distributed.config import DistConfig
from benchmark.distributed.context import (ExportLaunchEnv, first_host, launch_env,
                                           slurm_launch_vars)


def test_torchrun_env_gives_rank_and_world():
    env = launch_env({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"})
    assert (env.rank, env.world_size, env.local_rank) == (3, 4, 1)


def test_no_launcher_is_refused_with_the_command_to_use():
    with pytest.raises(ValueError, match="torchrun --standalone --nproc-per-node N"):
        launch_env({})
    with pytest.raises(ValueError, match="ExportLaunchEnv"):
        launch_env({"SLURM_PROCID": "0", "SLURM_NTASKS": "2"})


@pytest.mark.parametrize("nodes,first", [("gpu[03-05,09],cpu1", "gpu03"), ("node7", "node7"),
                                         ("a[7]", "a7"), ("n[1-2],m[3-4]", "n1")])
def test_first_host_of_a_slurm_nodelist(nodes, first):
    assert first_host(nodes) == first


def test_slurm_task_becomes_torch_env_and_the_callback_exports_it(monkeypatch):
    slurm = {"SLURM_PROCID": "5", "SLURM_NTASKS": "8", "SLURM_LOCALID": "1",
             "SLURM_JOB_NUM_NODES": "2", "SLURM_JOB_NODELIST": "gpu[10-11]",
             "SLURM_JOB_ID": "123456"}
    got = slurm_launch_vars(slurm)
    assert got == {"MASTER_ADDR": "gpu10", "MASTER_PORT": str(20000 + 123456 % 40000),
                   "RANK": "5", "WORLD_SIZE": "8", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "4"}
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(k, raising=False)
    for k, v in slurm.items():
        monkeypatch.setenv(k, v)
    ExportLaunchEnv().on_job_start(config=None)
    assert (os.environ["RANK"], os.environ["WORLD_SIZE"]) == ("5", "8")
    env = launch_env()
    assert (env.rank, env.world_size, env.local_rank) == (5, 8, 1)


def test_dist_config_from_node_over_env_over_defaults():
    assert DistConfig.resolve(None, {}) == DistConfig()
    env = {"FIITED_DIST_TIMEOUT_S": "30", "FIITED_DIST_BACKEND": "gloo"}
    assert DistConfig.resolve(None, env) == DistConfig(backend="gloo", timeout_s=30.0)
    got = DistConfig.resolve({"timeout_s": 5, "init_values": "local"}, env)
    assert got == DistConfig(backend="gloo", timeout_s=5.0, init_values="local")


@pytest.mark.parametrize("node,env,match", [
    ({"backend": "mpi"}, {}, "backend 'mpi' is not one of"),
    ({"timeout_s": 0}, {}, "timeout_s must be > 0"),
    ({"init_values": "both"}, {}, "init_values 'both'"),
    ({"timout_s": 3}, {}, r"train.dist has unknown keys \['timout_s'\]"),
    (None, {"FIITED_DIST_TIMEOUT_S": "soon"}, "FIITED_DIST_TIMEOUT_S='soon'"),
])
def test_bad_dist_settings_name_the_key(node, env, match):
    with pytest.raises(ValueError, match=match):
        DistConfig.resolve(node, env)
