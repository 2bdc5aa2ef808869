"""Model-parallel embeddings: each rank runs its own method over the tables it owns.

Forward, for this rank's slice ids[B_r, F] of a global batch of B = sum_r B_r rows:
1. all-to-all the ids: rank d receives the columns of its tables for the whole global batch,
   [B, F_d], rows in global-batch order (rank r's slice is rows [sum_{s<r} B_s, ...));
2. the owner validates them (every rank fails with the same clear error if any id is bad)
   and looks them up with its own method: [B, F_d, D] (the sparse update runs in backward);
3. all-to-all the vectors back: rank r gets [B_r, F_d, D] from every d, put back in feature
   order. Backward reverses step 3 (times ``grad_scale``) and the owner's method applies the
   fused sparse update for the whole global batch at once, as a 1-process run would.

``on_step``/``memory``/``dims`` gather from every rank, so every rank must call them at the
same points (the trainer does): pruning decisions stay local to each rank's pools.
"""
from __future__ import annotations

import contextlib
import logging
from typing import Any, Optional, Sequence

import torch
import torch.distributed as dist

from benchmark.distributed.context import DistContext
from benchmark.distributed.exchange import all_to_all
from benchmark.distributed.planner import ShardingPlan
from fiited.interface import EmbeddingMethod, TableSpec
from fiited.memory import COMPONENTS, MemoryReport
from fiited.optim import SparseOptimConfig

log = logging.getLogger(__name__)

_REPORT_FIELDS = COMPONENTS + ("uniform_weights", "uniform_total")
# How event metrics of the ranks combine (keys not listed: equal on all ranks -> kept, else
# one key per rank; keys only one rank has, e.g. per-table ones, pass through).
_SUM = ("prune/evicted", "prune/allocated", "prune/wanted_not_allocated", "prune/kept_chunks",
        "prune/capacity", "prune/free_slots", "prune/first_access_allocs", "prune/topped_up",
        "prune/entries_dropped", "prune/evicted_with_entries", "prune/live_entries")
_SUM_PREFIX = ("prune/kept_pos",)
_MAX = ("prune/event_seconds", "prune/events", "prune/max_probe")
_ROW_MEAN = ("prune/mean_width",)
_ROW_MEAN_PREFIX = ("prune/kept_frac_pos",)


def batch_split(global_batch: int, world_size: int) -> list[int]:
    """Rows of each rank's slice: contiguous, in rank order, sizes differ by at most one."""
    q, r = divmod(int(global_batch), int(world_size))
    return [q + (1 if i < r else 0) for i in range(world_size)]


def merge_event_metrics(per_rank: Sequence[dict[str, float]],
                        rows: Sequence[int]) -> dict[str, float]:
    """One metrics dict for the job from each rank's (see the rules above)."""
    keys: list[str] = []
    for m in per_rank:
        keys.extend(k for k in m if k not in keys)
    total_rows = float(sum(rows)) or 1.0
    out: dict[str, float] = {}
    for k in keys:
        have = [(r, float(m[k])) for r, m in enumerate(per_rank) if k in m]
        vals = [v for _, v in have]
        if k in _SUM or k.startswith(_SUM_PREFIX):
            out[k] = sum(vals)
        elif k in _MAX:
            out[k] = max(vals)
        elif k in _ROW_MEAN or k.startswith(_ROW_MEAN_PREFIX):
            out[k] = sum(v * rows[r] for r, v in have) / total_rows
        elif len(have) == 1 or all(v == vals[0] for v in vals):
            out[k] = vals[0]
        else:
            for r, v in have:
                out[f"{k}/rank{r}"] = v
    return out


class ShardedEmbedding(EmbeddingMethod):
    """All F tables as one ``EmbeddingMethod``; this rank holds ``local``, the method over
    its own tables (``plan.tables_of(rank)``, built with ``fiited.registry.build_method``)."""

    def __init__(self, tables: Sequence[TableSpec], dim: int, optim: SparseOptimConfig,
                 local: EmbeddingMethod, plan: ShardingPlan, ctx: DistContext) -> None:
        super().__init__(tables, dim, optim, local.config, seed=local.seed)
        if plan.world_size != ctx.world_size or len(plan.owner) != len(self.tables):
            raise ValueError(f"sharding plan for {plan.world_size} ranks and {len(plan.owner)} "
                             f"tables, but the job has {ctx.world_size} ranks and "
                             f"{len(self.tables)} tables")
        self.plan, self.ctx = plan, ctx
        self.rank, self.world = ctx.rank, ctx.world_size
        self.owned = plan.tables_of(self.rank)
        if [t.name for t in local.tables] != [self.tables[f].name for f in self.owned]:
            raise ValueError("the local method's tables are not the ones the plan gives rank "
                             f"{self.rank}")
        self.local = local
        local.validate_ids = False          # the sharded forward validates, on every rank
        self.counts = [len(plan.tables_of(r)) for r in range(self.world)]
        order = torch.tensor([f for r in range(self.world) for f in plan.tables_of(r)],
                             dtype=torch.int64)
        self.register_buffer("send_order", order, persistent=False)
        restore = torch.empty_like(order)
        restore[order] = torch.arange(order.numel())
        self.register_buffer("restore", restore, persistent=False)
        self.register_buffer("owned_rows", self.num_rows[self.owned].clone(), persistent=False)
        self.grad_scale = 1.0               # the trainer sets 1/world (see exchange.py)
        self.batch_sizes: Optional[list[int]] = None   # set per forward by the caller
        self.threshold_reducer = None       # set by the trainer for shared adaptive pools
        self.local_peak = 0
        self.rank_reports: list[dict[str, Any]] = []

    # ---- forward -------------------------------------------------------------------------
    def _sizes(self, local_batch: int) -> list[int]:
        sizes, self.batch_sizes = self.batch_sizes, None
        if sizes is None:   # nobody told us: ask the other ranks (one tiny collective)
            sizes = [int(s) for s in self.ctx.gather_objects(local_batch,
                                                             group=self.ctx.emb_group)]
        if len(sizes) != self.world or sizes[self.rank] != local_batch:
            raise ValueError(f"rank {self.rank}: batch slice sizes {sizes} do not match this "
                             f"rank's {local_batch} rows")
        return sizes

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        if not isinstance(ids, torch.Tensor) or ids.dtype not in (torch.int32, torch.int64):
            raise ValueError(f"ids must be an int32 or int64 tensor, got "
                             f"{getattr(ids, 'dtype', type(ids).__name__)}")
        if ids.dim() != 2 or ids.shape[1] != self.num_features:
            raise ValueError(f"ids must be [batch, {self.num_features}], got {tuple(ids.shape)}")
        sizes = self._sizes(ids.shape[0])
        b_r, b, f_me, d = ids.shape[0], sum(sizes), len(self.owned), self.dim
        ids = ids.long()
        dev = ids.device
        grouped = ids.index_select(1, self.send_order.to(dev)).split(self.counts, dim=1)
        send = torch.cat([g.reshape(-1) for g in grouped])       # dest-major blocks
        got = all_to_all(send, [s * f_me for s in sizes], [b_r * n for n in self.counts],
                         group=self.ctx.emb_group)
        mine = got.view(b, f_me)
        if self.validate_ids:
            self.ctx.agree(self._bad_ids(mine, sizes), group=self.ctx.emb_group)
        emb = self.local(mine).reshape(b * f_me, d)                 # [B * F_me, D]
        back = all_to_all(emb, [b_r * n for n in self.counts], [s * f_me for s in sizes],
                          group=self.ctx.emb_group, grad_scale=self.grad_scale)
        pieces = [p.view(b_r, n, d) for p, n in zip(back.split([b_r * n for n in self.counts]),
                                                     self.counts)]
        return torch.cat(pieces, dim=1).index_select(1, self.restore.to(dev))

    def _bad_ids(self, mine: torch.Tensor, sizes: list[int]) -> Optional[str]:
        """The error text for out-of-range ids of this rank's tables, or None (vectorised)."""
        if mine.numel() == 0:
            return None
        bad = (mine < 0) | (mine >= self.owned_rows.to(mine.device))
        if not bool(bad.any()):
            return None
        b, j = (int(x) for x in bad.nonzero()[0])
        f = self.owned[j]
        t = self.tables[f]
        src = next(r for r in range(self.world) if b < sum(sizes[:r + 1]))
        return (f"id {int(mine[b, j])} out of range for table {t.name!r} (feature {f}, row {b} "
                f"of the global batch, from rank {src}'s slice): valid ids are "
                f"0..{t.num_rows - 1}; {int(bad.sum())} bad ids in this batch for the tables "
                f"of rank {self.rank}")

    def embed(self, ids: torch.Tensor) -> torch.Tensor:  # pragma: no cover - forward does it
        raise NotImplementedError

    # ---- per-step hooks ------------------------------------------------------------------
    @property
    def finetune_steps(self) -> int:
        """The local method's post-training fine-tune steps (same on every rank)."""
        return int(getattr(self.local, "finetune_steps", 0) or 0)

    def _threshold_scope(self):
        if self.threshold_reducer is None:
            return contextlib.nullcontext()
        from benchmark.distributed.threshold import global_threshold

        return global_threshold(self.threshold_reducer)

    def _merged(self, metrics: dict[str, float]) -> dict[str, float]:
        flag = torch.tensor([1 if metrics else 0], dtype=torch.int32, device=self.ctx.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=self.ctx.emb_group)
        if int(flag.item()) == 0:
            return {}
        per_rank = self.ctx.gather_objects({k: float(v) for k, v in metrics.items()},
                                           group=self.ctx.emb_group)
        return merge_event_metrics(per_rank, self.plan.rows())

    def on_step(self, step: int) -> dict[str, float]:
        with self._threshold_scope():
            metrics = self.local.on_step(step) or {}
        return self._merged(metrics)

    def on_train_end(self) -> dict[str, float]:
        with self._threshold_scope():
            metrics = self.local.on_train_end() or {}
        return self._merged(metrics)

    # ---- reports -------------------------------------------------------------------------
    def memory(self) -> MemoryReport:
        """The job's ledger (components summed over ranks); ``rank_reports`` keeps each
        rank's, with its peak total so far."""
        mine = self.local.memory()
        self.local_peak = max(self.local_peak, mine.total)
        row = {k: int(getattr(mine, k)) for k in _REPORT_FIELDS}
        row.update(total=mine.total, peak_total=self.local_peak, per_table=dict(mine.per_table),
                   tables=[self.tables[f].name for f in self.owned])
        self.rank_reports = self.ctx.gather_objects(row, group=self.ctx.emb_group)
        per_table: dict[str, Any] = {}
        for r in self.rank_reports:
            per_table.update(r["per_table"])
        return MemoryReport(**{k: sum(r[k] for r in self.rank_reports) for k in _REPORT_FIELDS},
                            per_table={t.name: per_table[t.name] for t in self.tables
                                       if t.name in per_table})

    def dims(self) -> dict[str, torch.Tensor]:
        try:
            mine = {k: v.tolist() for k, v in self.local.dims().items()}
        except NotImplementedError:
            mine = None
        parts = self.ctx.gather_objects(mine, group=self.ctx.emb_group)
        if any(p is None for p in parts):
            raise NotImplementedError("a rank's method has no dims()")
        merged: dict[str, Any] = {}
        for p in parts:
            merged.update(p)
        return {t.name: torch.tensor(merged[t.name], dtype=torch.int64) for t in self.tables}

    # ---- resume --------------------------------------------------------------------------
    def get_extra_state(self) -> dict:
        return {"world_size": self.world, "rank": self.rank, "owner": list(self.plan.owner)}

    def set_extra_state(self, state: dict) -> None:
        want = {"world_size": self.world, "rank": self.rank, "owner": list(self.plan.owner)}
        if state != want:
            raise ValueError(f"checkpoint was saved by rank {state.get('rank')} of "
                             f"{state.get('world_size')} with table owners {state.get('owner')}; "
                             f"this is rank {self.rank} of {self.world} with {want['owner']}: "
                             f"resume with the same number of ranks and tables")
