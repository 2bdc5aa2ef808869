"""Mixed-dimension embeddings (Ginart et al., 2019): popular tables get wider rows.

Table f gets width d_f = clamp(floor(lambda * p_f^alpha), min_dim, D) with popularity
p_f = 1 / n_f, as DLRM's ``md_solver`` does (``TableSpec`` carries no access statistics, so a
row of a small table is taken to be more popular than a row of a large one). ``alpha`` is the
temperature: 0 gives every table the same width, larger values skew width to small tables.
Rows narrower than D are mapped to D by a learned linear map per table ([d_f, D], no bias, an
``nn.Parameter`` the harness's dense optimizer trains); a table with d_f = D needs none, a table
with d_f = 0 reads zeros and holds nothing.

Sizing (the exact rule): cost(lambda) = sum_f n_f d_f + sum_{0 < d_f < D} d_f D floats, i.e.
weights plus projections. lambda is the largest value bisection finds with cost(lambda) <=
budget * sum_f n_f D; widths are floored, never rounded up, so weights + projections never exceed
budget * uniform weights. Below a budget of about min_dim / D the least popular tables drop to 0
(with ``min_dim: 0``; lambda is then solved again over the tables left, until the dropped set is
stable, so their share goes to the others) or the config is refused (``min_dim`` >= 1 that does
not fit).
The dense optimizer's state for the projections lives in the harness, not in this ledger.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

from fiited.interface import EmbeddingMethod, MethodConfig, dlrm_init
from fiited.kernels import bag_lookup, lookup
from fiited.memory import MemoryReport, tensor_bytes
from fiited.registry import register_method


@dataclass
class MixedDimConfig(MethodConfig):
    name: str = "mixed_dim"
    alpha: float = 0.3
    min_dim: int = 0


def widths_at(lam: float, num_rows: Sequence[int], alpha: float, min_dim: int, dim: int,
              dropped: frozenset = frozenset()) -> list[int]:
    return [0 if f in dropped else max(min_dim, min(dim, math.floor(lam * n ** -alpha)))
            for f, n in enumerate(num_rows)]


def floats_of(widths: Sequence[int], num_rows: Sequence[int], dim: int) -> int:
    """Weights plus projections, in floats."""
    return sum(n * d + (d * dim if 0 < d < dim else 0) for n, d in zip(num_rows, widths))


def solve_lambda(num_rows: Sequence[int], dim: int, cap: float, alpha: float, min_dim: int,
                 dropped: frozenset) -> list[int]:
    """Widths at the largest lambda (by bisection) whose cost fits ``cap``."""
    def cost(lam: float) -> int:
        return floats_of(widths_at(lam, num_rows, alpha, min_dim, dim, dropped), num_rows, dim)

    lo, hi = 0.0, dim * max(num_rows) ** alpha + 1.0
    if cost(hi) <= cap:
        return widths_at(hi, num_rows, alpha, min_dim, dim, dropped)
    for _ in range(100):
        mid = (lo + hi) / 2
        if cost(mid) <= cap:
            lo = mid
        else:
            hi = mid
    return widths_at(lo, num_rows, alpha, min_dim, dim, dropped)


def plan_widths(num_rows: Sequence[int], dim: int, budget: float, alpha: float,
                min_dim: int) -> list[int]:
    """d_f per table (module docstring has the rule)."""
    cap = budget * sum(num_rows) * dim
    lowest = floats_of(widths_at(0.0, num_rows, alpha, min_dim, dim), num_rows, dim)
    if lowest > cap:
        raise ValueError(f"method.min_dim={min_dim} needs {lowest} floats, more than "
                         f"method.budget={budget} pays for ({cap:.0f}); lower min_dim or raise "
                         f"the budget")
    dropped: frozenset = frozenset()
    while True:
        widths = solve_lambda(num_rows, dim, cap, alpha, min_dim, dropped)
        now = frozenset(f for f, d in enumerate(widths) if d == 0)
        if now == dropped:
            return widths
        dropped = now


@register_method("mixed_dim")
class MixedDim(EmbeddingMethod):
    config_class = MixedDimConfig

    def __init__(self, tables, dim, optim, config, seed=0, features=None):
        super().__init__(tables, dim, optim, config, seed, features)
        if config.alpha < 0:
            raise ValueError(f"method.alpha must be >= 0, got {config.alpha}")
        if not 0 <= config.min_dim <= dim:
            raise ValueError(f"method.min_dim must be in 0..{dim}, got {config.min_dim}")
        ns = [t.num_rows for t in self.tables]
        self.widths = plan_widths(ns, dim, config.budget, config.alpha, config.min_dim)
        gen = torch.Generator().manual_seed(self.seed)
        self.groups = sorted({d for d in self.widths if d > 0})
        self.proj = nn.ParameterDict()
        order = []
        for d in self.groups:
            cols = [f for f, w in enumerate(self.widths) if w == d]
            order += cols
            n = torch.tensor([ns[f] for f in cols], dtype=torch.int64)
            self.register_buffer(f"cols_{d}", torch.tensor(cols, dtype=torch.int64))
            self.register_buffer(f"offsets_{d}", torch.cumsum(n, 0) - n)
            self.register_buffer(f"pool_{d}",
                                 dlrm_init(int(n.sum()), d, (n, n), gen))
            self.register_buffer(f"state_{d}", torch.full(
                (int(n.sum()) * optim.state_floats_per_row,), float(optim.initial_accumulator)))
            if d < dim:
                bound = 1.0 / math.sqrt(d)  # nn.Linear's default init, seeded
                w = (torch.rand(len(cols), d, dim, generator=gen) * 2 - 1) * bound
                self.proj[str(d)] = nn.Parameter(w)
        dropped = [f for f, w in enumerate(self.widths) if w == 0]
        # Output column f is taken from position inverse[f] of [group outputs..., zeros].
        inverse = torch.empty(len(ns), dtype=torch.int64)
        inverse[torch.tensor(order + dropped, dtype=torch.int64)] = torch.arange(len(ns))
        self.register_buffer("inverse", inverse)
        self.num_dropped = len(dropped)
        self._maps: dict = {}           # bag path: per (width, device), see _group_maps

    def embed(self, ids):
        b = ids.shape[0]
        parts = []
        for d in self.groups:
            cols = getattr(self, f"cols_{d}")
            rows = (ids.index_select(1, cols) + getattr(self, f"offsets_{d}")).reshape(-1, 1)
            e = lookup(getattr(self, f"pool_{d}"), getattr(self, f"state_{d}"), rows, self.optim)
            e = e.view(b, cols.numel(), d)
            if d < self.dim:
                e = torch.einsum("bfd,fde->bfe", e, self.proj[str(d)])
            parts.append(e)
        if self.num_dropped:
            parts.append(torch.zeros(b, self.num_dropped, self.dim, device=ids.device))
        return torch.cat(parts, dim=1).index_select(1, self.inverse)

    def embed_bags(self, occ):
        """Per width group: one fused ``bag_lookup`` (occurrences of other groups read -1 =
        zeros), pooled at width d, then each column's projection (linear, so projecting the
        pooled vector = pooling the projected ones: a bag has one table)."""
        t = self.table_of(occ.rows)
        ids = occ.rows - self.table_offsets[t]
        b, c = occ.batch_size, occ.num_columns
        out = None
        for d in self.groups:
            in_group, local_off, col_pos = self._group_maps(d, occ.rows.device)
            addr = torch.where(in_group[t], ids + local_off[t], torch.full_like(ids, -1))
            e = bag_lookup(getattr(self, f"pool_{d}"), getattr(self, f"state_{d}"),
                           addr.unsqueeze(1), occ.offsets, self.optim, occ.weights, occ.mode)
            e = e.view(b, c, d)
            if d < self.dim:
                e = torch.einsum("bcd,cde->bce", e, self.proj[str(d)].index_select(0, col_pos))
            out = e if out is None else out + e
        if out is None:
            out = torch.zeros(b, c, self.dim, device=occ.rows.device)
        return out.reshape(b * c, self.dim)

    def _group_maps(self, d: int, device: torch.device):
        """(table in group d [T], table's row offset in pool_d [T], each column's position in
        the group's projections [C], 0 for columns of other groups)."""
        key = (d, device)
        if key not in self._maps:
            cols = getattr(self, f"cols_{d}").tolist()
            offs = getattr(self, f"offsets_{d}").tolist()
            pos = {f: i for i, f in enumerate(cols)}
            in_group = torch.tensor([w == d for w in self.widths], device=device)
            local = torch.zeros(len(self.widths), dtype=torch.int64)
            local[cols] = torch.tensor(offs, dtype=torch.int64)
            col_tables = self.onehot_tables + self.bag_tables
            col_pos = torch.tensor([pos.get(t, 0) for t in col_tables], dtype=torch.int64)
            self._maps[key] = in_group, local.to(device), col_pos.to(device)
        return self._maps[key]

    def memory(self) -> MemoryReport:
        uw, ut = self.uniform_reference()
        pools = [getattr(self, f"pool_{d}") for d in self.groups]
        states = [getattr(self, f"state_{d}") for d in self.groups]
        index = [getattr(self, f"{k}_{d}") for d in self.groups for k in ("cols", "offsets")]
        s = self.optim.state_floats_per_row
        return MemoryReport(
            weights=tensor_bytes(*pools, *self.proj.values()), optimizer=tensor_bytes(*states),
            index=tensor_bytes(*index, self.inverse), uniform_weights=uw, uniform_total=ut,
            per_table={t.name: 4 * (t.num_rows * (d + (s if d else 0))
                                    + (d * self.dim if 0 < d < self.dim else 0))
                       for t, d in zip(self.tables, self.widths)})

    def dims(self):
        """Rows keep d_f of D dims before projection (the learned map spans a d_f-dim subspace)."""
        out = {}
        for t, d in zip(self.tables, self.widths):
            counts = torch.zeros(self.dim + 1, dtype=torch.int64)
            counts[d] = t.num_rows
            out[t.name] = counts
        return out
