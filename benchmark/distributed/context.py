"""Who am I among how many: the launcher's environment, process groups, agreeing on errors.

Two process groups, both with the configured timeout: the default one (DDP's gradient
all-reduce, evaluation gathers) and one for the embedding exchange, so that DDP's background
all-reduces and the embedding all-to-alls can never interleave differently on two ranks.
"""
from __future__ import annotations

import atexit
import datetime
import logging
import os
from dataclasses import dataclass
from typing import Any, Mapping, Optional

import torch
import torch.distributed as dist

from benchmark.distributed.config import DistConfig
from benchmark.errors import UserError

log = logging.getLogger(__name__)


class DistributedInputError(UserError):
    """Bad input found on one rank, raised on every rank (so that none waits for the others)."""


@dataclass(frozen=True)
class LaunchEnv:
    rank: int
    world_size: int
    local_rank: int


def launch_env(env: Optional[Mapping[str, str]] = None) -> LaunchEnv:
    """Rank and world size from torchrun (RANK, WORLD_SIZE, LOCAL_RANK) or SLURM tasks."""
    env = os.environ if env is None else env
    if "RANK" in env and "WORLD_SIZE" in env:
        return LaunchEnv(int(env["RANK"]), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", 0)))
    if "SLURM_PROCID" in env and "SLURM_NTASKS" in env:
        raise ValueError(
            "train.distributed=true under SLURM tasks, but RANK/WORLD_SIZE are not set: add the "
            "callback that exports them (hydra/launcher=slurm does; or "
            "+hydra.callbacks.launch_env._target_=benchmark.distributed.context.ExportLaunchEnv), "
            "or start the job with torchrun")
    raise ValueError(
        "train.distributed=true needs a launcher that sets RANK and WORLD_SIZE: run "
        "`torchrun --standalone --nproc-per-node N -m benchmark.app ... train.distributed=true` "
        "(see docs/scaling_out.md)")


def first_host(nodelist: str) -> str:
    """First hostname of a SLURM nodelist ("gpu[03-05,09],cpu1" -> "gpu03"), no scontrol."""
    depth, end = 0, len(nodelist)
    for i, c in enumerate(nodelist):
        depth += (c == "[") - (c == "]")
        if c == "," and depth == 0:
            end = i
            break
    first = nodelist[:end].strip()
    if "[" not in first:
        return first
    prefix, rest = first.split("[", 1)
    return prefix + rest.split(",")[0].split("-")[0].rstrip("]")


def slurm_launch_vars(env: Mapping[str, str]) -> dict[str, str]:
    """The torch env:// variables for one SLURM task (master = first node of the job)."""
    nodes = env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST") or "127.0.0.1"
    master = env.get("MASTER_ADDR") or first_host(nodes)
    port = env.get("MASTER_PORT") or str(20000 + int(env.get("SLURM_JOB_ID", "0")) % 40000)
    ntasks = int(env["SLURM_NTASKS"])
    nnodes = int(env.get("SLURM_JOB_NUM_NODES", env.get("SLURM_NNODES", "1")))
    return {"MASTER_ADDR": master, "MASTER_PORT": port, "RANK": env["SLURM_PROCID"],
            "WORLD_SIZE": str(ntasks), "LOCAL_RANK": env.get("SLURM_LOCALID", "0"),
            "LOCAL_WORLD_SIZE": str(max(1, ntasks // max(1, nnodes)))}


try:
    from hydra.experimental.callback import Callback as _Callback
except ImportError:  # pragma: no cover - hydra is a dependency
    _Callback = object


class ExportLaunchEnv(_Callback):
    """Hydra callback: in a SLURM task (e.g. a submitit job with tasks_per_node > 1), export
    RANK/WORLD_SIZE/MASTER_* before the job runs, as torchrun would, so that the app's
    rank-0-only MLflow logging and ``DistributedTrainer`` see them."""

    def on_job_start(self, config: Any = None, **kwargs: Any) -> None:
        env = os.environ
        if "SLURM_PROCID" not in env or "SLURM_NTASKS" not in env or "RANK" in env:
            return
        env.update(slurm_launch_vars(env))


class DistContext:
    """This process's place in the job, its device and its process groups."""

    def __init__(self, rank: int, world_size: int, local_rank: int, backend: str,
                 device: torch.device, timeout: datetime.timedelta) -> None:
        self.rank, self.world_size, self.local_rank = rank, world_size, local_rank
        self.backend, self.device, self.timeout = backend, device, timeout
        self.emb_group = dist.new_group(backend=backend, timeout=timeout)

    @classmethod
    def start(cls, cfg: DistConfig, device: str) -> "DistContext":
        """Join the job (or reuse a process group someone already started)."""
        env = launch_env()
        if device.startswith("cuda"):
            if not torch.cuda.is_available():
                raise ValueError(f"train.device={device!r} but CUDA is not available here")
            torch.cuda.set_device(env.local_rank)
            dev = torch.device("cuda", env.local_rank)
        else:
            dev = torch.device(device)
        backend = cfg.backend
        if backend == "auto":
            backend = "nccl" if dev.type == "cuda" else "gloo"
        if backend == "nccl" and dev.type != "cuda":
            raise ValueError(f"distributed backend nccl needs train.device=cuda, got {device!r}")
        timeout = datetime.timedelta(seconds=cfg.timeout_s)
        if not dist.is_initialized():
            kwargs = {"device_id": dev} if backend == "nccl" else {}
            dist.init_process_group(backend, rank=env.rank, world_size=env.world_size,
                                    timeout=timeout, **kwargs)
            # Kept for the process's life: a second init in the same worker (the next job of
            # a multirun) would find the first one's rendezvous keys in torchrun's store.
            atexit.register(_destroy_default)
        elif dist.get_backend() != backend:
            raise RuntimeError(f"the process group already uses backend {dist.get_backend()}, "
                               f"this job wants {backend}")
        elif dist.get_world_size() != env.world_size or dist.get_rank() != env.rank:
            raise RuntimeError("an existing process group disagrees with RANK/WORLD_SIZE")
        log.info("rank %d of %d (local %d), backend %s, device %s, timeout %ss", env.rank,
                 env.world_size, env.local_rank, backend, dev, cfg.timeout_s)
        return cls(env.rank, env.world_size, env.local_rank, backend, dev, timeout)

    # ---- collectives the trainer and the sharded embedding share ---------------------------
    def gather_objects(self, obj: Any, group=None) -> list[Any]:
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj, group=group)
        return out

    def broadcast_object(self, obj: Any) -> Any:
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self) -> None:
        dist.barrier()

    def agree(self, error: Optional[str], group=None) -> None:
        """Raise ``DistributedInputError`` on every rank if any rank has an ``error``.

        One tiny all-reduce when all is well; the messages travel only when something failed.
        """
        flag = torch.tensor([0 if error is None else 1], dtype=torch.int32, device=self.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=group)
        if int(flag.item()) == 0:
            return
        errors = self.gather_objects(error, group=group)
        lines = [f"rank {r}: {e}" for r, e in enumerate(errors) if e is not None]
        msg = "; ".join(lines)
        log.error("stopping every rank: %s", msg)
        raise DistributedInputError(msg)

    def close(self) -> None:
        """End this job's use: destroy its embedding group (idempotent). The default group
        lives until the process exits, so that the next job of a multirun can reuse it."""
        if self.emb_group is not None and dist.is_initialized():
            dist.destroy_process_group(self.emb_group)
        self.emb_group = None


def _destroy_default() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
