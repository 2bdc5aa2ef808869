"""Frequency filtering, the standard practice (DLRM's and BARS' minimum count): ids seen fewer
than T times in the training split share one out-of-vocabulary (OOV) row per table.

It is the simplest frequency rule, so it tells whether FIITED beats "keep the frequent ids".
Sizing: one threshold T for all tables, the smallest T >= 1 whose cost fits the budget, where
the cost is K(T) kept rows plus one OOV row per table that drops any id (``budget_scope:
weights``: their weight bytes <= budget x uniform's; ``total``: weights + optimizer state +
the kept-id index <= budget x uniform's total). ``threshold`` fixes T instead (it must fit).

The counting pass (``prepare``) reads the training split once before training: the harness
calls it, times it, and the counts stay in the ledger (``utility``) until the first step, so
the ledger's peak includes them. Kept rows start from uniform's init values of the same ids,
so at T=1 with every id seen the method trains exactly like uniform; a table's OOV row is drawn
keyed by the table's name (``fiited.keyed``), the same on whichever rank the table lives.
Lookup: a sorted array of kept global ids (the index) and ``searchsorted``.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

from baselines.budget import budget_rows
from fiited.errors import BudgetInfeasible
from fiited.interface import INIT_BLOCK_ROWS, EmbeddingMethod, MethodConfig
from fiited.keyed import keyed_init, table_key
from fiited.kernels import bag_lookup, lookup
from fiited.memory import MemoryReport, tensor_bytes
from fiited.registry import register_method

COUNT_CHUNK_ROWS = 1 << 20     # rows of the training split counted at once
SCOPES = ("weights", "total")


@dataclass
class FreqFilterConfig(MethodConfig):
    name: str = "freq_filter"
    budget_scope: str = "weights"     # weights | total: what the budget bounds
    threshold: Optional[int] = None   # min count T; null = the smallest T that fits the budget


@register_method("freq_filter")
class FreqFilter(EmbeddingMethod):
    config_class = FreqFilterConfig
    needs_train_ids = True            # the harness calls prepare(train ids) before training

    def __init__(self, tables, dim, optim, config, seed=0, features=None):
        super().__init__(tables, dim, optim, config, seed, features)
        if config.budget_scope not in SCOPES:
            raise ValueError(f"method.budget_scope={config.budget_scope!r}: choose one of "
                             f"{', '.join(SCOPES)}")
        if config.threshold is not None and int(config.threshold) < 1:
            raise ValueError(f"method.threshold must be >= 1 or null, got {config.threshold}")
        self.threshold: int | None = None
        self.counts: torch.Tensor | None = None
        self.prep_metrics: dict[str, float] = {}
        total = int(self.num_rows.sum())
        self.key_dtype = torch.int32 if total < 2**31 else torch.int64

    # ---- the counting pass and the plan --------------------------------------------------
    def prepare(self, train_ids, bag_values=()) -> None:
        """Count every id of the training split ([rows, F1] one-hot columns, e.g. a memory-mapped
        array; ``bag_values``: (bag feature name, its values over those rows) pairs, every
        occurrence counts), choose T and allocate the kept rows, the OOV rows and the index."""
        t0 = time.perf_counter()
        offsets = self.table_offsets.numpy()
        total = int(self.num_rows.sum())
        counts = count_ids(train_ids, offsets[self.onehot_tables], total)
        for name, values in bag_values:
            t = self.bag_tables[self.bag_names.index(name)]
            counts += count_ids(np.asarray(values).reshape(-1, 1), offsets[t:t + 1], total)
        seconds = time.perf_counter() - t0
        self.counts = torch.from_numpy(counts)
        self.build(self.counts)
        self.prep_metrics = {"prep/count_seconds": seconds,
                             "prep/count_bytes": float(tensor_bytes(self.counts)),
                             "freq_filter/threshold": float(self.threshold),
                             "freq_filter/kept_rows": float(len(self.keys))}

    def build(self, counts: torch.Tensor) -> None:
        """Allocate from per-global-id counts (int64 [sum n_f]): pool = kept rows in id order,
        then one OOV row per table that drops an id."""
        ns = self.num_rows.tolist()
        t = self.config.threshold
        t = plan_threshold(counts, ns, self.row_cost()) if t is None else int(t)
        kept_by_table, oov_tables = self._kept(counts, ns, t)
        cost = self.row_cost()
        spent = cost.cost(int(kept_by_table.sum()), int(oov_tables.sum()))
        if spent > cost.cap:
            raise BudgetInfeasible(
                f"method.threshold={t} keeps {int(kept_by_table.sum())} rows "
                f"({spent} bytes of {self.config.budget_scope}), over method.budget="
                f"{self.config.budget} ({cost.cap} bytes); raise the threshold or set it null")
        self.threshold = t
        keys = torch.nonzero(counts >= t).squeeze(1).to(self.key_dtype)
        n_kept = len(keys)
        oov_of = torch.full((len(ns),), -1, dtype=torch.int64)
        oov_of[oov_tables] = n_kept + torch.arange(int(oov_tables.sum()))
        self.register_buffer("keys", keys)
        self.register_buffer("oov_row", oov_of)
        rows = n_kept + int(oov_tables.sum())
        pool = torch.empty(rows, self.dim, dtype=torch.float32)
        pool[:n_kept] = stream_values(self.seed, self.dim, self.num_rows, keys.long())
        names = [t.name for t, drops in zip(self.tables, oov_tables.tolist()) if drops]
        n_oov = self.num_rows[oov_tables]     # the OOV row is drawn as id n_f of its table
        pool[n_kept:] = keyed_init(self.seed + 0x00F1_17E5,
                                   torch.tensor([table_key(n) for n in names], dtype=torch.int64),
                                   n_oov, torch.zeros_like(n_oov), self.dim, n_oov)
        self.register_buffer("pool", pool)
        self.register_buffer("opt_state", torch.full(
            (rows * self.optim.state_floats_per_row,), float(self.optim.initial_accumulator)))
        self.register_buffer("kept_per_table", kept_by_table)

    def row_cost(self) -> "_Cost":
        d, s = self.dim * 4, self.optim.state_floats_per_row * 4
        ns = self.num_rows.tolist()
        if self.config.budget_scope == "weights":
            return _Cost(kept=d, oov=d, fixed=0, cap=budget_rows(ns, self.config.budget) * d)
        key = torch.empty(0, dtype=self.key_dtype).element_size()
        _, ut = self.uniform_reference()
        return _Cost(kept=d + s + key, oov=d + s, fixed=8 * len(ns),
                     cap=int(self.config.budget * ut))

    @staticmethod
    def _kept(counts: torch.Tensor, ns: list[int], t: int) -> tuple[torch.Tensor, torch.Tensor]:
        table = torch.repeat_interleave(torch.arange(len(ns)), torch.tensor(ns))
        kept = torch.bincount(table[counts >= t], minlength=len(ns))
        return kept, kept < torch.tensor(ns)

    def align_to(self, table_rows, owned) -> None:
        """Built for tables ``owned`` of ``table_rows`` (a rank's share): give the kept rows the
        values of the same ids in a method built for all ``table_rows`` (the 1-process run)."""
        full_starts = torch.cumsum(torch.as_tensor([0, *table_rows], dtype=torch.int64), 0)
        keys = self.keys.long()
        local = torch.searchsorted(torch.cumsum(self.num_rows, 0), keys, right=True)
        shift = full_starts[torch.as_tensor(list(owned), dtype=torch.int64)] - self.table_offsets
        full = keys + shift[local]                 # sorted: owned tables are in feature order
        with torch.no_grad():
            self.pool[:len(keys)] = stream_values(self.seed, self.dim,
                                                  torch.as_tensor(list(table_rows)), full)

    # ---- the interface -------------------------------------------------------------------
    def rows_of(self, ids: torch.Tensor) -> torch.Tensor:
        """Pool row of each id: its own if kept, else its table's OOV row. ids[B, F] -> [B, F]."""
        self._need_vocab()
        g = self.global_rows(ids)
        return self._pool_rows(g, self.oov_row.to(ids.device).expand_as(g))

    def _need_vocab(self) -> None:
        if self.threshold is None:
            raise RuntimeError("freq_filter has no vocabulary yet: call prepare(train_ids) with "
                               "the training split's ids first (the harness does)")

    def _pool_rows(self, g: torch.Tensor, oov: torch.Tensor) -> torch.Tensor:
        """Kept global rows ``g`` -> their pool rows, the others -> ``oov`` (same shape)."""
        if len(self.keys) == 0:
            return oov
        pos = torch.searchsorted(self.keys, g.to(self.keys.dtype))
        hit = self.keys[pos.clamp(max=len(self.keys) - 1)] == g
        return torch.where(hit, pos, oov)

    def embed(self, ids):
        b, f = ids.shape
        rows = self.rows_of(ids).reshape(-1, 1)
        return lookup(self.pool, self.opt_state, rows, self.optim).view(b, f, self.dim)

    def pool_rows(self, rows: torch.Tensor) -> torch.Tensor:
        """Pool row of each global row [N] (own row if kept, else its table's OOV row)."""
        self._need_vocab()
        return self._pool_rows(rows, self.oov_row.to(rows.device)[self.table_of(rows)])

    def embed_bags(self, occ):
        return bag_lookup(self.pool, self.opt_state, self.pool_rows(occ.rows).unsqueeze(1),
                          occ.offsets, self.optim, occ.weights, occ.mode)

    def embed_rows(self, rows):
        return lookup(self.pool, self.opt_state, self.pool_rows(rows).unsqueeze(1), self.optim)

    def on_step(self, step: int) -> dict[str, float]:
        if self.counts is not None:       # the counting pass's memory ends with training's start
            self.counts = None
            return dict(self.prep_metrics)
        return {}

    def memory(self) -> MemoryReport:
        uw, ut = self.uniform_reference()
        if self.threshold is None:
            return MemoryReport(uniform_weights=uw, uniform_total=ut)
        per_row = (self.dim + self.optim.state_floats_per_row) * 4
        rows = self.kept_per_table + (self.oov_row >= 0).long()
        return MemoryReport(
            weights=tensor_bytes(self.pool), optimizer=tensor_bytes(self.opt_state),
            index=tensor_bytes(self.keys, self.oov_row, self.kept_per_table),
            utility=tensor_bytes(self.counts), uniform_weights=uw, uniform_total=ut,
            per_table={t.name: int(r) * per_row for t, r in zip(self.tables, rows)})

    def dims(self):
        """Every id reads a full-width row (its own or its table's shared OOV row)."""
        return self.constant_width_dims(self.dim)


@dataclass(frozen=True)
class _Cost:
    """Bytes per kept row, per OOV row and fixed, and the budget's cap on their sum."""

    kept: int
    oov: int
    fixed: int
    cap: int

    def cost(self, kept, oov):
        return kept * self.kept + oov * self.oov + self.fixed


def stream_values(seed: int, dim: int, num_rows: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """Uniform's init values (``init_full_table``: DLRM's, the same generator stream) over tables
    of ``num_rows`` rows, of the global rows ``keys`` (sorted), drawn block by block: peak = the
    kept rows + one block."""
    total = int(num_rows.sum())
    gen = torch.Generator().manual_seed(seed)
    ends = torch.cumsum(num_rows, 0)
    bound = num_rows.double().clamp_min(1).rsqrt().float()
    out = torch.empty(len(keys), dim, dtype=torch.float32)
    last = int(keys[-1]) + 1 if len(keys) else 0
    for lo in range(0, min(total, last), INIT_BLOCK_ROWS):    # blocks, as dlrm_init draws them
        hi = min(total, lo + INIT_BLOCK_ROWS)
        block = torch.rand(hi - lo, dim, generator=gen, dtype=torch.float32)
        block.mul_(2).sub_(1)
        a, b = (int(x) for x in torch.searchsorted(keys, torch.tensor([lo, hi])))
        if a < b:
            sel = keys[a:b]
            table = torch.searchsorted(ends, sel, right=True)
            out[a:b] = block[sel - lo] * bound[table].unsqueeze(1)
    return out


def count_ids(ids, offsets: np.ndarray, total: int) -> np.ndarray:
    """Occurrences of every global id (id + its table's offset) in ``ids`` [rows, F], counted
    in chunks of COUNT_CHUNK_ROWS rows (bounded memory for a memory-mapped split)."""
    counts = np.zeros(total, dtype=np.int64)
    offsets = np.asarray(offsets, dtype=np.int64)
    for lo in range(0, len(ids), COUNT_CHUNK_ROWS):
        chunk = np.asarray(ids[lo:lo + COUNT_CHUNK_ROWS], dtype=np.int64) + offsets
        counts += np.bincount(chunk.ravel(), minlength=total)
    return counts


def plan_threshold(counts: torch.Tensor, ns: list[int], cost: _Cost) -> int:
    """The smallest T >= 1 whose kept rows plus OOV rows fit ``cost.cap`` (cost is monotone in
    T: checked at T = 1 and one past every distinct count)."""
    cand = torch.unique(torch.cat([torch.ones(1, dtype=counts.dtype), counts + 1]))
    cand = cand[cand >= 1]
    starts = [0, *np.cumsum(ns).tolist()]
    kept = torch.zeros(len(cand), dtype=torch.int64)
    oov = torch.zeros(len(cand), dtype=torch.int64)
    for f, n in enumerate(ns):                  # one vectorised search per table: ids with
        s = torch.sort(counts[starts[f]:starts[f + 1]]).values    # count >= T at every T
        k = n - torch.searchsorted(s, cand)
        kept += k
        oov += (k < n).long()
    fits = kept * cost.kept + oov * cost.oov + cost.fixed <= cost.cap
    if not bool(fits.any()):
        raise BudgetInfeasible(
            f"the budget pays for {cost.cap} bytes, but freq_filter needs at least "
            f"{len(ns) * cost.oov + cost.fixed} (one OOV row per table); raise method.budget")
    return int(cand[torch.nonzero(fits)[0, 0]])
