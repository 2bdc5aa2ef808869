"""Structured configs: Hydra checks every key and type against these at start-up.

The ``method`` group is a free-form mapping here; ``fiited.registry.make_config`` validates it
against the chosen method's own dataclass before anything runs.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, OmegaConf

from benchmark.data.synthetic import SyntheticConfig, knob_suffix
from benchmark.model import ModelConfig
from fiited.optim import SparseOptimConfig


@dataclass
class DataConfig:
    name: str = MISSING
    path: str = MISSING                      # prepared dataset dir; relative = to the launch dir
    synthetic: Optional[SyntheticConfig] = None   # generate at ``path`` when absent
    prepare: Optional[str] = None            # real data: the command that makes ``path``; set,
                                             # the data is never generated (synthetic ignored)
    max_train_rows: Optional[int] = None     # cap rows per split (smoke runs)
    max_eval_rows: Optional[int] = None


@dataclass
class TrainConfig:
    batch_size: int = 128
    epochs: int = 1
    max_steps: int = 0                       # 0 = no cap; else stop after this many steps
    dense_optimizer: str = "sgd"             # sgd | adagrad | adam
    dense_lr: float = 0.1
    sparse_optimizer: SparseOptimConfig = field(default_factory=SparseOptimConfig)
    eval_every: int = 0                      # steps between validations; 0 = end of each epoch
    eval_batch_size: int = 16384
    warmup_steps: int = 20                   # excluded from throughput and step-time stats
    log_every: int = 50                      # steps per train/loss point (batched to MLflow)
    memory_every: int = 50                   # steps between ledger samples (training peak)
    threads: int = 0                         # torch intra-op threads; 0 = torch's default
    device: str = "cpu"
    validate_ids: bool = True
    checkpoint_every: int = 0                # steps; 0 = never
    resume: Optional[str] = None             # path of a checkpoint to continue from
    stop_after: int = 0                      # steps; stop (as if killed) after this many, for resume tests
    progress: bool = True
    distributed: bool = False
    system_metrics: bool = False             # MLflow system metrics (CPU, memory, GPU) per run
    embedding_l2: float = 0.0                # lambda: + lambda * sum ||e||^2 / batch over the
                                             # looked-up embeddings (touched rows only)
    early_stopping: int = 0                  # validations without a better val NE before the
                                             # run stops; 0 = never (validations: eval_every)


@dataclass
class TrackingConfig:
    enabled: bool = True
    uri: str = "sqlite:///mlflow.db"         # relative sqlite paths resolve against the launch dir
    artifact_root: Optional[str] = None      # default: mlartifacts/ beside the sqlite file
    experiment: str = "fiited-bench"
    run_name: Optional[str] = None
    flush_every: int = 200                   # metric points buffered before one log_batch


@dataclass
class SweepConfig:
    n_jobs: int = 1                          # jobs at a time with the local (joblib) launcher
    rerun: bool = False                      # re-run jobs already FINISHED with the same config


@dataclass
class Config:
    method: Any = MISSING
    data: DataConfig = MISSING
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    sweep: SweepConfig = field(default_factory=SweepConfig)
    seed: int = 0
    summary_table: bool = True
    tune: Optional[Any] = None               # experiment=tune: its settings (benchmark/tune.py)
    tuned: Optional[str] = None              # a best-values file of experiment=tune, applied


def sweep_id() -> str:
    """A per-launch suffix for sweep dirs (two sweeps started in one second must not collide).

    Kept in the environment as ``pid-suffix`` so joblib workers (children of the launching
    process) resolve the same dir, while a sweep started from another process gets its own.
    """
    import os
    import secrets

    pid, _, suffix = os.environ.get("FIITED_SWEEP_ID", "").partition("-")
    if not suffix or pid not in (str(os.getpid()), str(os.getppid())):
        suffix = f"{os.getpid()}{secrets.token_hex(2)}"
        os.environ["FIITED_SWEEP_ID"] = f"{os.getpid()}-{suffix}"
    return suffix


def register_configs() -> None:
    if not OmegaConf.has_resolver("fiited.synthetic_suffix"):
        OmegaConf.register_new_resolver("fiited.synthetic_suffix", knob_suffix)
    if not OmegaConf.has_resolver("fiited.sweep_id"):
        OmegaConf.register_new_resolver("fiited.sweep_id", sweep_id, use_cache=True)
    cs = ConfigStore.instance()
    cs.store(name="base_config", node=Config)
