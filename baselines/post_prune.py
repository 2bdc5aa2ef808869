"""Prune after training: train uniform at full size, prune to the budget at ``on_train_end``.

Training is exactly uniform at budget 1.0 (same init, same lookup, same fused optimizer), so the
training peak of the ledger is uniform's (plus, for ``score: utility``, the utility accumulator
it really holds). At ``on_train_end`` each row is cut into K = ``chunks`` chunks (K = 1: whole
rows), every chunk gets a score, and the top floor(budget * rows * K) chunks (``scope: global``,
or floor(budget * n_f * K) per table with ``scope: per_table``) are kept:

- ``score: magnitude``: the chunk's L2 norm;
- ``score: utility``: sum over training of the per-occurrence L2 norms of the chunk's gradient
  slice (access count x mean gradient norm, no decay), the same quantity the kernels hand to the
  lookup sink, collected here per chunk from the lookup's output gradient.
Ties are broken by magnitude. The kept chunks are copied into a compacted pool [kept, D/K] (the
full table is freed) with a direct index int32 [rows, K] (-1 = pruned) to find them; the budget
counts weight bytes only, the ledger reports the index too. Row-wise Adagrad continues with one
accumulator per kept chunk, copied from its row's.

Fine-tuning (``finetune_steps`` > 0): after ``on_train_end`` and the pruned evaluation, the
harness runs ``emb.finetune_steps`` more ordinary training steps (forward, backward, dense
optimizer step, ``emb.on_step``) and evaluates again. The mask cannot change: pruned chunks have
no storage, they read zeros and receive no update.
"""
from __future__ import annotations

import struct
import time
from dataclasses import dataclass

import torch

from fiited.interface import EmbeddingMethod, MethodConfig
from fiited.kernels import bag_lookup, lookup
from fiited.kernels.reference import chunk_norms
from fiited.memory import MemoryReport, tensor_bytes
from fiited.registry import register_method

SCORES = ("magnitude", "utility")
SCOPES = ("global", "per_table")
_RESIZABLE = ("pool", "opt_state", "chunk_index", "utility")


def _nth_largest(x: torch.Tensor, n: int) -> float:
    """The n-th largest value of non-negative floats ``x`` (1 <= n <= len), by bisection over the
    float32 bit patterns (ordered like the values): 31 counting passes, one bool mask at a time."""
    lo, hi = 0, 0x7F800000                      # patterns of 0.0 and +inf
    while lo < hi:                              # count(x >= value(lo)) >= n always holds
        mid = (lo + hi + 1) // 2
        if int(torch.count_nonzero(x >= _as_float(mid))) >= n:
            lo = mid
        else:
            hi = mid - 1
    return _as_float(lo)


def _as_float(bits: int) -> float:
    return struct.unpack("<f", struct.pack("<I", bits))[0]


def top_positions(score: torch.Tensor, tie: torch.Tensor, n: int) -> torch.Tensor:
    """Ascending positions of the top ``n`` of ``score`` (descending), ties by ``tie``
    (descending), then by position (ascending): what two stable sorts give, without sorting."""
    total = score.numel()
    if n >= total:
        return torch.arange(total, device=score.device)
    if n <= 0:
        return torch.zeros(0, dtype=torch.int64, device=score.device)
    t = _nth_largest(score, n)
    above = (score > t).nonzero().squeeze(1)
    ties = (score == t).nonzero().squeeze(1)
    left = n - above.numel()
    if left < ties.numel():
        tv = tie[ties]
        t2 = _nth_largest(tv, left)
        better = ties[tv > t2]
        ties = torch.cat([better, ties[tv == t2][:left - better.numel()]])
    return torch.sort(torch.cat([above, ties])).values


@dataclass
class PostPruneConfig(MethodConfig):
    name: str = "post_prune"
    score: str = "magnitude"
    chunks: int = 1
    scope: str = "global"
    finetune_steps: int = 0


@register_method("post_prune")
class PostPrune(EmbeddingMethod):
    config_class = PostPruneConfig

    def __init__(self, tables, dim, optim, config, seed=0, features=None):
        super().__init__(tables, dim, optim, config, seed, features)
        if config.score not in SCORES:
            raise ValueError(f"method.score={config.score!r} is not one of {SCORES}")
        if config.scope not in SCOPES:
            raise ValueError(f"method.scope={config.scope!r} is not one of {SCOPES}")
        if config.chunks < 1 or dim % config.chunks:
            raise ValueError(f"method.chunks={config.chunks} must be >= 1 and divide the "
                             f"embedding dim {dim}")
        if config.finetune_steps < 0:
            raise ValueError(f"method.finetune_steps must be >= 0, got {config.finetune_steps}")
        self.k = int(config.chunks)
        self.chunk = dim // self.k
        self.finetune_steps = int(config.finetune_steps)
        self.init_full_table(self.dim)
        util_rows = int(self.num_rows.sum()) if config.score == "utility" else 0
        self.register_buffer("utility", torch.zeros(util_rows, self.k))
        # Empty until pruning; afterwards the direct index of the compacted pool.
        self.register_buffer("chunk_index", torch.zeros(0, self.k, dtype=torch.int32))
        self._prune_metrics: dict[str, float] = {}

    @property
    def pruned(self) -> bool:
        return self.chunk_index.numel() > 0

    # ---- forward -------------------------------------------------------------------------
    def embed(self, ids):
        b, f = ids.shape
        return self.embed_rows(self.global_rows(ids).reshape(-1)).view(b, f, self.dim)

    def embed_rows(self, rows):
        if self.pruned:
            return lookup(self.pool, self.opt_state, self.chunk_index[rows], self.optim)
        out = lookup(self.pool, self.opt_state, rows.unsqueeze(1), self.optim)
        if self.config.score == "utility" and out.requires_grad:
            out.register_hook(lambda g, rows=rows: self._collect(rows, g))
        return out

    def embed_bags(self, occ):
        """Fused ``bag_lookup``, except for ``score: utility`` before pruning: that takes the
        generic path, whose per-occurrence gradients (the shares) feed ``_collect``."""
        if self.config.score == "utility" and not self.pruned:
            return super().embed_bags(occ)
        addrs = self.chunk_index[occ.rows] if self.pruned else occ.rows.unsqueeze(1)
        return bag_lookup(self.pool, self.opt_state, addrs, occ.offsets, self.optim,
                          occ.weights, occ.mode)

    def _collect(self, rows: torch.Tensor, grad: torch.Tensor) -> None:
        """utility[row, k] += ||grad slice k|| per occurrence (no decay)."""
        self.utility.index_add_(0, rows, chunk_norms(grad, self.k))

    # ---- pruning -------------------------------------------------------------------------
    def scores(self) -> torch.Tensor:
        """Score of every chunk before pruning, [rows, K]."""
        if self.config.score == "utility":
            return self.utility.clone()
        return self.chunk_magnitudes()

    def chunk_magnitudes(self) -> torch.Tensor:
        return self.pool.view(-1, self.k, self.chunk).norm(dim=2)

    def keep_counts(self) -> list[int]:
        """Chunks to keep: one number (global) or one per table."""
        b, k = self.config.budget, self.k
        if self.config.scope == "global":
            return [int(b * int(self.num_rows.sum()) * k)]
        return [int(b * t.num_rows * k) for t in self.tables]

    def select(self) -> torch.Tensor:
        """Flat positions (row * K + k) of the kept chunks, ascending: the top by score, ties by
        magnitude, then by position. Found by thresholds (``top_positions``), not a sort, so the
        transient is the scores plus a mask, not several index arrays of the full table."""
        mag = self.chunk_magnitudes().reshape(-1)
        score = self.utility.reshape(-1) if self.config.score == "utility" else mag
        if self.config.scope == "global":
            spans = [(0, score.numel())]
        else:
            spans = [(lo * self.k, hi * self.k) for lo, hi in self._table_spans()]
        kept = [top_positions(score[lo:hi], mag[lo:hi], n) + lo
                for (lo, hi), n in zip(spans, self.keep_counts())]
        return torch.cat(kept)

    def on_train_end(self) -> dict[str, float]:
        if self.pruned:
            return dict(self._prune_metrics)
        before = self.memory()
        t0 = time.perf_counter()
        kept = self.select()
        rows_k = self.pool.numel() // self.chunk
        index = torch.full((rows_k,), -1, dtype=torch.int32, device=self.pool.device)
        index[kept] = torch.arange(kept.numel(), dtype=torch.int32, device=index.device)
        pool = self.pool.view(-1, self.chunk).index_select(0, kept).clone()
        state = self.opt_state
        if state.numel():
            state = state.index_select(0, torch.div(kept, self.k, rounding_mode="floor"))
        # Re-allocate: the full table, its state and the utility are freed here.
        self.pool, self.opt_state = pool, state
        self.chunk_index = index.view(-1, self.k)
        self.utility = self.utility.new_zeros(0, self.k)
        seconds = time.perf_counter() - t0
        after = self.memory()
        self._prune_metrics = {
            "prune/event_seconds": seconds,
            "prune/kept_chunks": float(kept.numel()),
            "prune/kept_fraction": kept.numel() / rows_k,
            "mem/pre_prune_total_bytes": float(before.total),
            "mem/final_total_bytes": float(after.total),
            "mem/final_weights_bytes": float(after.weights),
            "mem/final_index_bytes": float(after.index),
        }
        return dict(self._prune_metrics)

    # ---- reports -------------------------------------------------------------------------
    def memory(self) -> MemoryReport:
        uw, ut = self.uniform_reference()
        return MemoryReport(
            weights=tensor_bytes(self.pool), optimizer=tensor_bytes(self.opt_state),
            index=tensor_bytes(self.chunk_index), utility=tensor_bytes(self.utility),
            uniform_weights=uw, uniform_total=ut, per_table=self._per_table_bytes())

    def _table_spans(self) -> list[tuple[int, int]]:
        ends = torch.cumsum(self.num_rows, 0).tolist()
        return list(zip([0] + ends[:-1], ends))

    def _kept_chunks_per_table(self) -> list[int]:
        """Kept chunks per table, one table's index at a time (no per-row array at full size)."""
        if not self.pruned:
            return [t.num_rows * self.k for t in self.tables]
        return [int((self.chunk_index[lo:hi] >= 0).sum()) for lo, hi in self._table_spans()]

    def _per_table_bytes(self) -> dict[str, int]:
        per_chunk = (self.chunk + self.optim.state_floats_per_row) * 4
        index = self.k * 4 if self.pruned else 0
        util = self.k * 4 if self.utility.numel() else 0
        return {t.name: int(c) * per_chunk + t.num_rows * (index + util)
                for t, c in zip(self.tables, self._kept_chunks_per_table())}

    def dims(self):
        if not self.pruned:
            return self.constant_width_dims(self.dim)
        out = {}
        for t, (lo, hi) in zip(self.tables, self._table_spans()):
            kept = (self.chunk_index[lo:hi] >= 0).sum(dim=1).cpu() * self.chunk
            out[t.name] = torch.bincount(kept, minlength=self.dim + 1)
        return out

    # ---- resume across the pruning event -------------------------------------------------
    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        """Pruned checkpoints have other shapes: take them, so a pruned model resumes as is."""
        for name in _RESIZABLE:
            value = state_dict.get(prefix + name)
            if value is not None and value.shape != getattr(self, name).shape:
                setattr(self, name, torch.empty_like(value, device=getattr(self, name).device))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
