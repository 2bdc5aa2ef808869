"""The hashing trick: table f keeps M_f < n_f rows of full width D and id -> h_f(id) mod M_f.

Sizing (the exact rule): B = floor(budget * sum_f n_f) rows of width D are paid for.
Tables with n_f < ``full_below_rows`` are kept whole (identity rows, no collisions); the
remaining B - sum(those n_f) rows are water-filled over the hashed tables
(``baselines.budget.fill_rows``): M_f = clamp(floor(r * n_f), 1, n_f) with the largest common r
that fits. So total weight bytes <= budget * uniform weight bytes always. A table that ends up
with M_f = n_f (e.g. at budget 1.0) is not hashed either: it uses identity rows.

Hash: h_f(id) = ((a_f * (id mod p) + b_f) mod p) mod M_f, p = 2^31 - 1, with a_f in [1, p-1] and
b_f in [0, p-1] drawn per table by splitmix64 from ``hash_seed`` (the run seed when unset): pure
integer arithmetic, so the map is the same in every process, platform and torch version. All
operands stay below 2^62, so int64 never overflows.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from baselines.budget import budget_rows, fill_rows
from fiited.errors import BudgetInfeasible
from fiited.interface import EmbeddingMethod, MethodConfig, dlrm_init
from fiited.kernels import bag_lookup, lookup
from fiited.memory import MemoryReport, tensor_bytes
from fiited.registry import register_method

PRIME = 2**31 - 1
_MASK64 = (1 << 64) - 1


def splitmix64(x: int) -> int:
    """One step of splitmix64: a well-mixed, portable 64-bit integer from ``x``."""
    z = (x + 0x9E3779B97F4A7C15) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


def hash_params(seed: int, num_tables: int) -> tuple[list[int], list[int]]:
    """(a_f, b_f) per table for the universal family ((a*x + b) mod p)."""
    a = [1 + splitmix64((seed << 20) + 2 * f) % (PRIME - 1) for f in range(num_tables)]
    b = [splitmix64((seed << 20) + 2 * f + 1) % PRIME for f in range(num_tables)]
    return a, b


@dataclass
class HashingConfig(MethodConfig):
    name: str = "hashing"
    full_below_rows: int = 0
    hash_seed: Optional[int] = None


@register_method("hashing")
class Hashing(EmbeddingMethod):
    config_class = HashingConfig

    def __init__(self, tables, dim, optim, config, seed=0, features=None):
        super().__init__(tables, dim, optim, config, seed, features)
        if config.full_below_rows < 0:
            raise ValueError(f"method.full_below_rows must be >= 0, got {config.full_below_rows}")
        ns = [t.num_rows for t in self.tables]
        rows = self.plan_rows(ns, config)
        hash_seed = self.seed if config.hash_seed is None else int(config.hash_seed)
        a, b = hash_params(hash_seed, len(ns))
        m = torch.tensor(rows, dtype=torch.int64)
        offsets = torch.zeros_like(m)
        offsets[1:] = torch.cumsum(m, 0)[:-1]
        self.register_buffer("hash_a", torch.tensor(a, dtype=torch.int64))
        self.register_buffer("hash_b", torch.tensor(b, dtype=torch.int64))
        self.register_buffer("buckets", m)
        self.register_buffer("hashed", m < self.num_rows)
        self.register_buffer("row_offsets", offsets)
        total = int(m.sum())
        gen = torch.Generator().manual_seed(self.seed)
        # Init bound from the virtual vocabulary, as uniform's: same scale at every budget.
        self.register_buffer("pool", dlrm_init(total, self.dim, (m, self.num_rows), gen))
        self.register_buffer(
            "opt_state", torch.full((total * optim.state_floats_per_row,),
                                    float(optim.initial_accumulator)))

    @staticmethod
    def plan_rows(ns: list[int], config: HashingConfig) -> list[int]:
        """M_f per table (module docstring has the rule)."""
        total = budget_rows(ns, config.budget)
        full = [n < config.full_below_rows for n in ns]
        left = total - sum(n for n, keep in zip(ns, full) if keep)
        hashed = [n for n, keep in zip(ns, full) if not keep]
        if hashed and left < len(hashed):
            raise BudgetInfeasible(
                f"method.full_below_rows={config.full_below_rows} keeps {sum(full)} tables whole, "
                f"leaving {left} of the {total} rows that method.budget={config.budget} pays for "
                f"to {len(hashed)} hashed tables (each needs >= 1); lower full_below_rows or "
                f"raise the budget")
        if not hashed and left < 0:
            raise ValueError(f"method.full_below_rows={config.full_below_rows} keeps every table "
                             f"whole, which exceeds method.budget={config.budget}")
        filled = iter(fill_rows(hashed, left, 1)) if hashed else iter(())
        return [n if keep else next(filled) for n, keep in zip(ns, full)]

    def bucket(self, ids: torch.Tensor) -> torch.Tensor:
        """Row of each id inside its own table's M_f rows: ids[B, F] -> int64 [B, F]."""
        x = ids.long() % PRIME
        h = (self.hash_a * x + self.hash_b) % PRIME % self.buckets
        return torch.where(self.hashed, h, ids.long())

    def embed(self, ids):
        b, f = ids.shape
        rows = (self.bucket(ids) + self.row_offsets).reshape(-1, 1)
        return lookup(self.pool, self.opt_state, rows, self.optim).view(b, f, self.dim)

    def pool_rows(self, rows: torch.Tensor) -> torch.Tensor:
        """Pool row of each global (virtual) row [N]: ``bucket`` with per-occurrence tables."""
        t = self.table_of(rows)
        ids = rows - self.table_offsets[t]
        h = (self.hash_a[t] * (ids % PRIME) + self.hash_b[t]) % PRIME % self.buckets[t]
        return torch.where(self.hashed[t], h, ids) + self.row_offsets[t]

    def embed_bags(self, occ):
        return bag_lookup(self.pool, self.opt_state, self.pool_rows(occ.rows).unsqueeze(1),
                          occ.offsets, self.optim, occ.weights, occ.mode)

    def embed_rows(self, rows):
        return lookup(self.pool, self.opt_state, self.pool_rows(rows).unsqueeze(1), self.optim)

    def memory(self) -> MemoryReport:
        uw, ut = self.uniform_reference()
        per_row = (self.dim + self.optim.state_floats_per_row) * 4
        return MemoryReport(
            weights=tensor_bytes(self.pool), optimizer=tensor_bytes(self.opt_state),
            index=tensor_bytes(self.hash_a, self.hash_b, self.buckets, self.hashed,
                               self.row_offsets),
            uniform_weights=uw, uniform_total=ut,
            per_table={t.name: int(m) * per_row for t, m in zip(self.tables, self.buckets)})

    def dims(self):
        """Every virtual row reads a full-width (shared) vector."""
        return self.constant_width_dims(self.dim)
