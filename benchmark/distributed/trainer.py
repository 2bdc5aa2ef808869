"""``DistributedTrainer``: the harness's Trainer with sharded tables and DDP dense layers.

What makes a run of N ranks follow the 1-process run of the same config and seed:
- every rank iterates the same global batches (the unchanged ``BatchLoader``, same seed) and
  keeps its slice ``batch_split`` (contiguous rows, rank order); the embedding exchange covers
  the whole global batch, so each table sees exactly the 1-process batch;
- each rank's loss is ``world * sum(local losses) / global batch``: DDP's average over ranks is
  then the gradient of the global mean, and the embedding path divides the factor out again
  (``ShardedEmbedding.grad_scale``);
- initial values come from the 1-process random stream (``init_values``).
Evaluation runs every rank on its slice of each batch and gathers the logits, so metrics are
over the whole split, on every rank. Rank 0 alone writes outputs (MLflow: ``benchmark.app``).
Checkpoints are one file per rank and step (``checkpoint.rank{r}of{N}.step{S}.pt``), all in rank
0's run dir, published by a manifest of the step (``checkpoint.manifest.json``) after a barrier.
"""
from __future__ import annotations

import inspect
import json
import logging
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf, open_dict
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

from benchmark.checkpoint import CheckpointError
from benchmark.distributed.config import DistConfig
from benchmark.distributed.context import DistContext
from benchmark.distributed.init_values import align_initial_values, sharding_differences
from benchmark.distributed.planner import TableCost, plan_tables, table_bytes
from benchmark.distributed.sharded import ShardedEmbedding, batch_split
from benchmark.distributed.threshold import make_global_threshold, wants_global_threshold
from benchmark.dcn import build_head
from benchmark.model import DLRM
from benchmark.train import Trainer, load_data, peak_rss_bytes
from fiited import pruning
from fiited.registry import build_method

log = logging.getLogger(__name__)


class DataParallelDLRM(nn.Module):
    """DLRM under DDP with its embeddings left out of DDP (they are model-parallel).

    ``forward`` takes a GLOBAL batch and returns the global batch's logits (evaluation);
    training calls ``local_logits`` with this rank's slice.
    """

    def __init__(self, dlrm: DLRM, ctx: DistContext) -> None:
        super().__init__()
        self.ctx = ctx
        emb = dlrm.embeddings
        ignore = [f"embeddings.{n}" for n, _ in emb.named_parameters()]
        ignore += [f"embeddings.{n}" for n, _ in emb.named_buffers()]
        DDP._set_params_and_buffers_to_ignore_for_model(dlrm, ignore)
        ids = [ctx.device.index] if ctx.device.type == "cuda" else None
        # No buffer broadcasts per forward (the non-ignored ones are constants); the keyword
        # changed name in torch 2.13.
        sync = ("forward_sync_buffers" if "forward_sync_buffers" in
                inspect.signature(DDP.__init__).parameters else "broadcast_buffers")
        self.ddp = DDP(dlrm, device_ids=ids, **{sync: False})

    @property
    def embeddings(self) -> ShardedEmbedding:
        return self.ddp.module.embeddings

    def dense_parameters(self) -> list[nn.Parameter]:
        return self.ddp.module.dense_parameters()

    def slice_of(self, global_batch: int) -> tuple[list[int], int, int]:
        sizes = batch_split(global_batch, self.ctx.world_size)
        lo = sum(sizes[:self.ctx.rank])
        return sizes, lo, lo + sizes[self.ctx.rank]

    def local_logits(self, dense: torch.Tensor, ids: torch.Tensor,
                     sizes: list[int]) -> torch.Tensor:
        self.embeddings.batch_sizes = sizes
        return self.ddp(dense, ids)

    def forward(self, dense: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        sizes, lo, hi = self.slice_of(ids.shape[0])
        local = self.local_logits(dense[lo:hi], ids[lo:hi], sizes)
        return gather_rows(local.detach(), sizes)


def gather_rows(x: torch.Tensor, sizes: list[int], group=None) -> torch.Tensor:
    """Concatenate every rank's ``x`` (first dims ``sizes``) in rank order, on every rank."""
    longest = max(sizes)
    if longest == 0:
        return x
    padded = x.new_zeros((longest,) + tuple(x.shape[1:]))
    padded[:x.shape[0]] = x
    parts = [torch.empty_like(padded) for _ in sizes]
    torch.distributed.all_gather(parts, padded, group=group)
    return torch.cat([p[:n] for p, n in zip(parts, sizes)])


class DistributedTrainer(Trainer):
    def __init__(self, cfg: DictConfig, run_dir: Path, launch_dir: Path, tracker=None) -> None:
        self.dist_cfg = DistConfig.resolve(_dist_node(cfg))
        self.ctx = DistContext.start(self.dist_cfg, str(cfg.train.device))
        try:
            if self.ctx.device.type == "cuda":
                with open_dict(cfg):
                    cfg.train.device = str(self.ctx.device)
            run_dir = Path(self.ctx.broadcast_object(str(run_dir)))   # one run dir: rank 0's
            error = None
            if self.ctx.rank == 0:    # prepare (e.g. generate) the data once, before the others
                try:
                    load_data(cfg.data, Path(launch_dir))
                except Exception as e:  # noqa: BLE001 - reported on every rank below
                    error = f"{type(e).__name__}: {e}"
            self.ctx.agree(error)
            super().__init__(cfg, run_dir, launch_dir, tracker=tracker)
        except BaseException:
            self.ctx.close()
            raise

    # ---- construction --------------------------------------------------------------------
    def build_embeddings(self) -> ShardedEmbedding:
        ctx, dim = self.ctx, self.model_cfg.dim
        state = self.sparse_opt.state_floats_per_row
        costs = [TableCost(t.name, t.num_rows, table_bytes(t.num_rows, dim, state))
                 for t in self.tables]
        self.plan = plan_tables(costs, ctx.world_size)
        if ctx.rank == 0:
            log.info("sharding plan (uniform bytes):\n%s", self.plan.format())
        owned = self.plan.tables_of(ctx.rank)
        method_cfg = OmegaConf.to_container(self.cfg.method, resolve=True)
        local = build_method(method_cfg, [self.tables[f] for f in owned], dim, self.sparse_opt,
                             seed=int(self.cfg.seed))
        if getattr(local, "needs_train_ids", False):   # freq_filter: count this rank's tables
            local.prepare(self.train_ids()[:, list(owned)])
        notes = []
        if self.dist_cfg.init_values == "global":
            if not align_initial_values(local, [t.num_rows for t in self.tables], owned):
                notes.append(f"initial values of method {self.cfg.method.name!r} (drawn per rank)")
        else:
            notes.append("initial values (init_values=local: drawn per rank)")
        notes += sharding_differences(local)
        if notes and ctx.rank == 0:
            log.warning("this sharded run decides differently from a 1-process run in: %s; "
                        "results are statistically, not bitwise, equal", "; ".join(notes))
        emb = ShardedEmbedding(self.tables, dim, self.sparse_opt, local, self.plan, ctx)
        emb.grad_scale = 1.0 / ctx.world_size
        if ctx.world_size > 1 and wants_global_threshold(local):
            emb.threshold_reducer = make_global_threshold(pruning.adaptive_threshold,
                                                          ctx.device, ctx.emb_group)
        return emb

    def build_model(self) -> DataParallelDLRM:
        head = build_head(self.model_cfg, self.data.manifest.num_dense, self.emb)  # dlrm | dcn
        return DataParallelDLRM(head.to(self.device), self.ctx)

    # ---- training ------------------------------------------------------------------------
    def train_step(self, batch, loss_fn) -> torch.Tensor:
        """This rank's slice forward; loss scaled so that DDP's average is the global mean.

        ``loss_fn`` (the mean BCE) is applied as its sum form here; returns the global mean.
        """
        n = len(batch.labels)
        sizes, lo, hi = self.model.slice_of(n)
        dense = batch.dense[lo:hi].to(self.device)
        ids = batch.ids[lo:hi].to(self.device)
        labels = batch.labels[lo:hi].to(self.device)
        logits = self.model.local_logits(dense, ids, sizes)
        loss_sum = F.binary_cross_entropy_with_logits(logits, labels, reduction="sum")
        self.dense_opt.zero_grad(set_to_none=True)
        (loss_sum * (self.ctx.world_size / n)).backward()
        self.dense_opt.step()
        total = loss_sum.detach().clone()
        torch.distributed.all_reduce(total)
        return total / n

    def fit(self) -> dict[str, Any]:
        try:
            return super().fit()
        finally:
            self.ctx.close()

    # ---- ledger and outputs --------------------------------------------------------------
    def _rank_metrics(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for r, rep in enumerate(self.emb.rank_reports):
            out[f"mem/rank{r}/total_bytes"] = float(rep["total"])
            out[f"mem/rank{r}/weights_bytes"] = float(rep["weights"])
            out[f"mem/rank{r}/train_peak_bytes"] = float(rep["peak_total"])
        return out

    def _sample_memory(self) -> None:
        super()._sample_memory()
        self._log({k: v for k, v in self._rank_metrics().items() if "/total_bytes" in k},
                  self.step)

    def _write_outputs(self, summary: dict[str, Any], report) -> list[Path]:
        rss = self.ctx.gather_objects(peak_rss_bytes())
        extra = self._rank_metrics()
        extra.update({f"mem/rank{r}/peak_rss_bytes": float(b) for r, b in enumerate(rss)})
        extra["mem/peak_rss_bytes"] = float(sum(rss))
        # measured peaks (benchmark.peak) of every rank's process, summed like the ledger
        extra["mem/train_peak_bytes"] = float(sum(self.ctx.gather_objects(self.meter.measured())))
        extra["dist/world_size"] = float(self.ctx.world_size)
        extra["dist/plan_imbalance"] = float(self.plan.imbalance)
        summary.update(extra)
        self._log(extra, self.step)
        if self.ctx.rank != 0:
            try:
                self.emb.dims()       # a collective: match rank 0's call inside _write_outputs
            except NotImplementedError:
                pass
            return []
        paths = super()._write_outputs(summary, report)
        ranks = self.run_dir / "memory_ranks.json"
        ranks.write_text(json.dumps({"plan": self.plan.as_dict(), "ranks": self.emb.rank_reports},
                                    indent=2, sort_keys=True))
        plan = self.run_dir / "sharding_plan.txt"
        plan.write_text(self.plan.format() + "\n")
        if self.tracker is not None:
            self.tracker.log_artifacts([ranks, plan])
        return paths + [ranks, plan]

    # ---- checkpoints: one file per rank, and a manifest of the step -----------------------
    def _rank_path(self, path: Path, rank: int | None = None, step: int | None = None) -> Path:
        path = Path(path)
        r = self.ctx.rank if rank is None else rank
        at = "" if step is None else f".step{step}"
        return path.with_name(f"{path.stem}.rank{r}of{self.ctx.world_size}{at}{path.suffix}")

    def save_checkpoint(self, path: Path) -> None:
        """Every rank writes its own file for this step; after a barrier rank 0 publishes the
        manifest (the step and every rank's file) and drops the previous step's files. Until
        the manifest names a step its files do not count, so a kill mid-save leaves the
        previous checkpoint whole."""
        path = Path(path)
        super().save_checkpoint(self._rank_path(path, step=self.step))
        self.ctx.barrier()
        if self.ctx.rank == 0:
            mpath = checkpoint_manifest(path)
            old = _read_manifest(mpath) if mpath.is_file() else None
            files = [self._rank_path(path, r, self.step) for r in range(self.ctx.world_size)]
            manifest = {"step": self.step, "epoch": self.epoch,
                        "world_size": self.ctx.world_size,
                        "files": [{"name": f.name, "bytes": f.stat().st_size} for f in files]}
            tmp = mpath.with_name(f".{mpath.name}.tmp")
            tmp.write_text(json.dumps(manifest, indent=2))
            tmp.replace(mpath)
            if old is not None and old.get("step") != self.step:
                for f in old.get("files", []):
                    (path.parent / f["name"]).unlink(missing_ok=True)
        self.ctx.barrier()

    def load_checkpoint(self, path: Path) -> None:
        """Check the manifest and every rank's file on every rank, then load this rank's;
        any rank's problem stops all ranks with the same message."""
        path = Path(path)
        error, mine = None, None
        try:
            manifest = _read_manifest(checkpoint_manifest(path))
            if manifest["world_size"] != self.ctx.world_size:
                raise CheckpointError(f"train.resume={str(path)!r}: written by "
                                      f"{manifest['world_size']} ranks, this run has "
                                      f"{self.ctx.world_size}")
            for f in manifest["files"]:
                p = path.parent / f["name"]
                if not p.is_file() or p.stat().st_size != f["bytes"]:
                    raise CheckpointError(f"{p}: missing or not the file the checkpoint "
                                          f"manifest lists ({f['bytes']} bytes at step "
                                          f"{manifest['step']})")
            mine = self._rank_path(path, step=int(manifest["step"]))
        except CheckpointError as e:
            error = str(e)
        self.ctx.agree(error)
        try:
            super().load_checkpoint(mine)
            if self.step != int(manifest["step"]):
                raise CheckpointError(f"{mine}: holds step {self.step}, the manifest says "
                                      f"{manifest['step']}")
            error = None
        except CheckpointError as e:
            error = str(e)
        self.ctx.agree(error)


def checkpoint_manifest(path: Path) -> Path:
    """``checkpoint.pt`` -> ``checkpoint.manifest.json`` beside it."""
    return Path(path).with_name(f"{Path(path).stem}.manifest.json")


def _read_manifest(mpath: Path) -> dict:
    if not mpath.is_file():
        raise CheckpointError(f"{mpath}: no checkpoint manifest (no distributed checkpoint "
                              f"here, or its save did not finish)")
    try:
        m = json.loads(mpath.read_text())
        if not isinstance(m, dict) or not {"step", "world_size", "files"} <= set(m):
            raise ValueError("missing keys")
        return m
    except (ValueError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{mpath}: not a valid checkpoint manifest ({e})") from None


def _dist_node(cfg: DictConfig):
    node = cfg.train.get("dist") if "dist" in cfg.train else None
    return OmegaConf.to_container(node, resolve=True) if node is not None else None
