"""conf/hydra/launcher/slurm.yaml composes with the real Hydra compose API, and submitit
accepts every parameter it sets (rendered into an sbatch script, nothing submitted)."""
from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from benchmark.app import CONF_DIR
from benchmark.config import register_configs

pytest.importorskip(
    "hydra_plugins.hydra_submitit_launcher",
    reason="hydra-submitit-launcher is not installed (pip install -e '.[slurm]'); it belongs in "
           "the test extra")


def _compose(*overrides):
    register_configs()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose("config", overrides=["hydra/launcher=slurm", "method=uniform",
                                            *overrides], return_hydra_config=True)


def test_slurm_launcher_composes_with_the_callback_and_overrides():
    cfg = _compose("hydra.launcher.partition=gpu", "hydra.launcher.tasks_per_node=4")
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("submitit_launcher.SlurmLauncher")
    assert launcher.partition == "gpu" and launcher.tasks_per_node == 4
    assert cfg.hydra.runtime.choices["hydra/launcher"] == "slurm"
    assert (cfg.hydra.callbacks.launch_env._target_
            == "benchmark.distributed.context.ExportLaunchEnv")
    assert "prepare_store" in cfg.hydra.callbacks          # the app's own callbacks stay
    assert cfg.method.name == "uniform" and "hydra" not in cfg.train


def test_submitit_renders_an_sbatch_script_from_them(tmp_path):
    """The plugin's split of hydra.launcher into generic and slurm parameters, then submitit's
    own names and sbatch rendering (SlurmExecutor itself needs srun, so not constructed)."""
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
    from submitit.slurm.slurm import SlurmExecutor, _convert_mem, _make_sbatch_string

    cfg = _compose("hydra.launcher.partition=gpu", f"hydra.sweep.dir={tmp_path}")
    params = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    for key in ("_target_", "submitit_folder", "max_num_timeout"):   # executor-level keys
        params.pop(key)
    generic = set(OmegaConf.structured(BaseQueueConf).keys())
    names, valid = SlurmExecutor._equivalence_dict(), SlurmExecutor._valid_parameters()
    sbatch = {}
    for key, value in params.items():
        if key in generic:
            if key in names:
                sbatch[names[key]] = value
            continue
        assert key in valid, f"hydra.launcher.{key} is not a submitit slurm parameter"
        sbatch[key] = value
    sbatch["mem"] = _convert_mem(sbatch["mem"])
    script = _make_sbatch_string(command="python -m benchmark.app", folder=tmp_path, **sbatch)
    assert "#SBATCH --partition=gpu" in script
    assert "#SBATCH --time=240" in script
    assert "#SBATCH --gpus-per-node=1" in script
    assert "export OMP_NUM_THREADS=8" in script
