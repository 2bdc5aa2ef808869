"""Quotient-remainder compositional embeddings (Shi et al., KDD 2020).

A compressed table f has a remainder table (m_f rows, id mod m_f) and a quotient table (Q_f
rows, id // m_f); its embedding is R[id mod m] * Q[id // m] (``combine: mult``) or their sum
(``combine: sum``). Every pair (id mod m, id // m) is distinct when m * Q >= n: no collisions.

Sizing (the exact rule): B = floor(budget * sum_f n_f) rows of width D are paid for; they are
water-filled over the tables (``baselines.budget.fill_rows``, at least 1 row each) into
allowances T_f. Then per table:
- T_f >= n_f: the table stays full (identity rows, no quotient table): too small to gain;
- else, when some m with m + ceil(n/m) <= T_f exists: the largest such m (the remainder table
  takes the spare rows), Q = ceil(n/m): collision-free;
- else (below about 2*sqrt(n_f) rows): m = ceil(T/2), Q = T - m and the quotient index is itself
  folded, (id // m) mod Q, as Shi et al.'s generalisation allows; for T < 4 (where m * Q < T)
  plain modulo hashing with m = T, Q = 0. The only cases with collisions.
So total weight bytes <= budget * uniform weight bytes always.

Init: remainder rows ~ DLRM's U(+-1/sqrt(n_f)); quotient rows = 1 (mult) or 0 (sum), so the
composed embedding starts at uniform's scale. Both tables train through the shared kernels (two
lookups, each with its fused update); autograd applies the chain rule of the combination.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

import torch

from baselines.budget import budget_rows, fill_rows
from fiited.interface import EmbeddingMethod, MethodConfig, dlrm_init
from fiited.kernels import lookup
from fiited.memory import MemoryReport, tensor_bytes
from fiited.registry import register_method

COMBINE = ("mult", "sum")


@dataclass
class QRConfig(MethodConfig):
    name: str = "qr"
    combine: str = "mult"


@dataclass(frozen=True)
class QRPlan:
    """Per table: remainder rows m_f and quotient rows Q_f (Q_f = 0: no quotient table, the
    rows are id mod m_f, i.e. identity when m_f >= n_f)."""

    remainder: tuple[int, ...]
    quotient: tuple[int, ...]


def split_rows(n: int, allowance: int) -> tuple[int, int]:
    """(m, Q) for one table given its row allowance (module docstring has the rule)."""
    if allowance >= n:
        return n, 0
    best = None
    # m + ceil(n/m) is nondecreasing for m >= sqrt(n): start at the real-valued bound, step down.
    disc = allowance * allowance - 4 * n
    if disc >= 0:
        m = min(n, (allowance + math.isqrt(disc)) // 2 + 1)
        lowest = max(1, math.isqrt(n))
        while m >= lowest:
            if m + -(-n // m) <= allowance:
                best = m
                break
            m -= 1
    if best is not None:
        return best, -(-n // best)
    if allowance < 4:
        return allowance, 0
    m = -(-allowance // 2)
    return m, allowance - m


def plan_for_budget(num_rows: Sequence[int], budget: float) -> QRPlan:
    total = budget_rows(num_rows, budget)
    allowance = fill_rows(num_rows, total, min_rows=1)
    pairs = [split_rows(int(n), a) for n, a in zip(num_rows, allowance)]
    return QRPlan(tuple(p[0] for p in pairs), tuple(p[1] for p in pairs))


@register_method("qr")
class QR(EmbeddingMethod):
    config_class = QRConfig

    def __init__(self, tables, dim, optim, config, seed=0, plan: Optional[QRPlan] = None,
                 features=None):
        """``plan`` fixes (m_f, Q_f) by hand, as Shi et al. fix collisions; the budget is then
        not applied (the ledger still says what it costs)."""
        super().__init__(tables, dim, optim, config, seed, features)
        if config.combine not in COMBINE:
            raise ValueError(f"method.combine={config.combine!r} is not one of {COMBINE}")
        ns = [t.num_rows for t in self.tables]
        plan = plan or plan_for_budget(ns, config.budget)
        if len(plan.remainder) != len(ns) or len(plan.quotient) != len(ns):
            raise ValueError(f"QR plan has {len(plan.remainder)}/{len(plan.quotient)} entries for "
                             f"{len(ns)} tables")
        for t, m, q in zip(self.tables, plan.remainder, plan.quotient):
            if m < 1 or q < 0:
                raise ValueError(f"QR plan for table {t.name!r}: remainder rows {m}, quotient "
                                 f"rows {q}; need m >= 1 and Q >= 0")
        self.plan = plan
        m = torch.tensor(plan.remainder, dtype=torch.int64)
        q = torch.tensor(plan.quotient, dtype=torch.int64)
        self.register_buffer("rem_rows", m)
        self.register_buffer("quo_rows", q)
        self.register_buffer("rem_offsets", torch.cumsum(m, 0) - m)
        self.register_buffer("quo_offsets", torch.cumsum(q, 0) - q)
        gen = torch.Generator().manual_seed(self.seed)
        self.register_buffer(
            "rem_pool", dlrm_init(int(m.sum()), self.dim, (m, self.num_rows), gen))
        fill = 1.0 if config.combine == "mult" else 0.0
        self.register_buffer("quo_pool", torch.full((int(q.sum()), self.dim), fill))
        s = optim.state_floats_per_row
        acc = float(optim.initial_accumulator)
        self.register_buffer("rem_state", torch.full((int(m.sum()) * s,), acc))
        self.register_buffer("quo_state", torch.full((int(q.sum()) * s,), acc))

    def split(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Pool rows (remainder, quotient) of ids[B, F]; quotient -1 where a table has none."""
        ids = ids.long()
        m = self.rem_rows
        has_q = self.quo_rows > 0
        rem = ids % m + self.rem_offsets
        quo = (ids // m) % self.quo_rows.clamp_min(1) + self.quo_offsets
        return rem, torch.where(has_q, quo, torch.full_like(quo, -1))

    def embed_rows(self, rows):
        """Per occurrence (the generic bag path pools these): global rows [N] -> [N, D]."""
        t = self.table_of(rows)
        ids = rows - self.table_offsets[t]
        m, q = self.rem_rows[t], self.quo_rows[t]
        rem = ids % m + self.rem_offsets[t]
        quo = torch.where(q > 0, (ids // m) % q.clamp_min(1) + self.quo_offsets[t],
                          torch.full_like(ids, -1))
        er = lookup(self.rem_pool, self.rem_state, rem.unsqueeze(1), self.optim)
        eq = lookup(self.quo_pool, self.quo_state, quo.unsqueeze(1), self.optim)
        if self.config.combine == "sum":
            return er + eq
        return er * (eq + (q == 0).to(er.dtype).unsqueeze(1))

    def embed(self, ids):
        b, f = ids.shape
        rem, quo = self.split(ids)
        er = lookup(self.rem_pool, self.rem_state, rem.reshape(-1, 1), self.optim)
        eq = lookup(self.quo_pool, self.quo_state, quo.reshape(-1, 1), self.optim)
        er, eq = er.view(b, f, self.dim), eq.view(b, f, self.dim)
        if self.config.combine == "sum":
            return er + eq  # absent quotient rows read 0
        no_q = (self.quo_rows == 0).to(er.dtype).view(1, f, 1)
        return er * (eq + no_q)  # tables without a quotient: multiply by 1

    def memory(self) -> MemoryReport:
        uw, ut = self.uniform_reference()
        per_row = (self.dim + self.optim.state_floats_per_row) * 4
        return MemoryReport(
            weights=tensor_bytes(self.rem_pool, self.quo_pool),
            optimizer=tensor_bytes(self.rem_state, self.quo_state),
            index=tensor_bytes(self.rem_rows, self.quo_rows, self.rem_offsets, self.quo_offsets),
            uniform_weights=uw, uniform_total=ut,
            per_table={t.name: (m + q) * per_row
                       for t, m, q in zip(self.tables, self.plan.remainder, self.plan.quotient)})

    def dims(self):
        """Every virtual row reads a full-width composed vector."""
        return self.constant_width_dims(self.dim)
