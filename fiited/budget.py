"""Turning ``method.budget`` into sizes: one module every method's sizing goes through.

- ``budget_rows`` / ``fill_rows``: rows of width D per table (hashing, qr);
- ``split_entries``: entry budgets of hashed tables, in proportion to their rows;
- ``store_sizes``: a chunk store's pool capacity, index kind per table, hash slots and entry
  budgets (FIITED, AdaEmbed, ITEP), for ``budget_scope: weights`` (pool = budget x uniform
  weights) or ``total`` (the whole ledger <= budget x uniform's total).
"""
from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass
from typing import Sequence

from fiited.errors import BudgetInfeasible
from fiited.index import SKETCH_ROWS, TableIndex, table_kinds


def budget_rows(num_rows: Sequence[int], budget: float) -> int:
    """Rows of width D that ``budget`` pays for: floor(budget * sum n_f), never rounded up."""
    return math.floor(budget * sum(int(n) for n in num_rows))


def fill_rows(num_rows: Sequence[int], total: int, min_rows: int = 1) -> list[int]:
    """Water-filling: the largest ratio r with sum_f clamp(floor(r * n_f), min_rows, n_f) <= total.

    Every table gets the same fraction r of its rows, except that none drops below ``min_rows``
    (those get min_rows, paid for by the others) and none exceeds its own n_f (then it is full).
    Floors, never rounds up, so the result never exceeds ``total``; the few rows floor leaves
    unspent stay unspent. Raises when even ``min_rows`` per table does not fit.
    """
    ns = [int(n) for n in num_rows]
    floors = [min(min_rows, n) for n in ns]
    if sum(floors) > total:
        raise BudgetInfeasible(f"the budget pays for {total} rows, but {len(ns)} tables need at "
                               f"least {sum(floors)} (min {min_rows} each); raise method.budget")

    def rows_at(r: float) -> list[int]:
        return [max(lo, min(n, math.floor(r * n))) for n, lo in zip(ns, floors)]

    if sum(ns) <= total:
        return list(ns)
    lo, hi = 0.0, 1.0  # rows_at(lo) fits (checked above), rows_at(hi) does not
    for _ in range(64):
        mid = (lo + hi) / 2
        if sum(rows_at(mid)) <= total:
            lo = mid
        else:
            hi = mid
    return rows_at(lo)


def split_entries(rows: Sequence[int], total: int) -> list[int]:
    """Entry budgets per table: ``total`` split in proportion to the rows (0 for tables with
    none), never more than a table's rows; floors, the largest remainders taking what
    flooring left (so the sum is exactly min(total, sum of rows))."""
    rows = [int(n) for n in rows]
    R = sum(rows)
    if R == 0:
        return [0] * len(rows)
    total = min(int(total), R)
    caps = [min(n, total * n // R) for n in rows]
    left = total - sum(caps)
    for t in sorted(range(len(rows)), key=lambda t: (-(total * rows[t] % R), t)):
        if left <= 0:
            break
        if caps[t] < rows[t]:
            caps[t] += 1
            left -= 1
    return caps


@dataclass(frozen=True)
class StoreSizes:
    chunks: int                 # pool capacity in chunks
    kinds: list[str]            # direct | hashed, per table
    num_slots: int              # hash table slots (0: no hashed table)
    live_cap: list[int]         # entry budget per table (hashed tables; direct: 0)


@dataclass(frozen=True)
class StoreGeometry:
    """What the byte count of a chunk store depends on besides its capacity."""

    table_rows: list[int]
    num_chunks: int
    chunk_bytes: int            # pool + optimizer state + free stack, per slot
    index: str                  # direct | hashed | auto
    auto_rows: int
    index_entries: float
    index_load: float
    sketch: float
    fixed_bytes: int            # geometry and anything else that does not scale
    pool_frac: float = 1.0      # expected pool / all chunks (index=auto's cost comparison)
    entry_state_bytes: int = 0  # optimizer state per entry (row-wise Adagrad, accumulator: row)

    @property
    def key_bytes(self) -> int:
        """Bytes of one hash-table key (a global row)."""
        return 4 if sum(self.table_rows) < 2 ** 31 else 8

    def sketch_bytes(self, live: int) -> int:
        """The admission sketch of a hashed table with ``live`` entries (at least 16 counters
        per sketch row; none without a sketch or entries)."""
        if self.sketch <= 0 or live <= 0:
            return 0
        return SKETCH_ROWS * 4 * max(16, math.ceil(live * self.sketch))

    @property
    def entry_bytes(self) -> int:
        """Bytes of one entry: K addresses, K utilities and any per-entry optimizer state."""
        return 8 * self.num_chunks + self.entry_state_bytes

    @functools.cached_property
    def kinds(self) -> list[str]:
        """Per table; ``auto``: direct where its entries (``entry_bytes`` per row) cost no more
        than the hashed ones at ``pool_frac`` (live = index_entries x pool_frac x rows, slots =
        live / index_load at entry + key bytes, plus the sketch, at least 16 counters)."""
        E = self.entry_bytes
        cheap = []
        for n in self.table_rows:
            live = min(n, max(1, math.ceil(self.index_entries * self.pool_frac * n)))
            hashed = (math.ceil(live / self.index_load) * (E + self.key_bytes)
                      + self.sketch_bytes(live))
            cheap.append(E * n <= hashed)
        return table_kinds(self.table_rows, self.index, self.auto_rows, cheap)

    def index_sizes(self, chunks: int) -> tuple[int, list[int]]:
        """(hash slots, entry budget per table) for a pool of ``chunks``: live entries =
        index_entries x the hashed tables' share of the pool / K, split by rows."""
        kinds = self.kinds
        hashed_rows = [n if k == "hashed" else 0 for n, k in zip(self.table_rows, kinds)]
        Rh, R = sum(hashed_rows), sum(self.table_rows)
        if Rh == 0:
            return 0, [0] * len(kinds)
        live = min(Rh, max(1, math.ceil(self.index_entries * chunks * Rh / R / self.num_chunks)))
        caps = split_entries(hashed_rows, live)
        return max(live, math.ceil(live / self.index_load)), caps

    def total_bytes(self, chunks: int) -> int:
        """The whole ledger of a store with ``chunks`` (with utilities, one float per chunk
        position of every entry)."""
        E = self.entry_bytes
        kinds = self.kinds
        direct = sum(n for n, k in zip(self.table_rows, kinds) if k == "direct")
        slots, caps = self.index_sizes(chunks)
        return (self.fixed_bytes + TableIndex.fixed_bytes(len(kinds), slots > 0)
                + chunks * self.chunk_bytes + direct * E + slots * (E + self.key_bytes)
                + sum(self.sketch_bytes(c) for c in caps))


def store_sizes(geo: StoreGeometry, budget: float, budget_scope: str,
                manual_ratios: Sequence[float] | None, uniform_total: int) -> StoreSizes:
    """Pool capacity and index sizes from the budget knobs (``manual_ratios`` given:
    capacity = sum_k (1 - p_k) x rows, budget unused). ``index: auto`` compares the indexes'
    costs at the pool fraction; at ``budget_scope: total`` that fraction comes out of the
    sizing itself, so it is refined a few times (and lowered where the budget would not even
    pay for the metadata)."""
    K, R = geo.num_chunks, sum(geo.table_rows)
    all_chunks = R * K
    if manual_ratios or budget_scope == "weights":
        frac = (sum(1 - p for p in manual_ratios) / K) if manual_ratios else budget
        geo = dataclasses.replace(geo, pool_frac=min(1.0, frac))
        chunks = min(all_chunks, math.floor(frac * all_chunks + 1e-9)) if not manual_ratios \
            else min(all_chunks, math.floor(sum(1 - p for p in manual_ratios) * R + 1e-9))
        slots, caps = geo.index_sizes(chunks)
        return StoreSizes(chunks, geo.kinds, slots, caps)
    limit = budget * uniform_total
    frac, chunks, seen = min(1.0, budget), None, set()
    for _ in range(6):
        geo = dataclasses.replace(geo, pool_frac=frac)
        kinds = tuple(geo.kinds)
        if geo.total_bytes(1) > limit:
            if geo.index != "auto" or frac < 1e-6:
                break
            frac /= 4                                  # the metadata alone does not fit
            continue
        lo, hi = 1, all_chunks                         # total_bytes(lo) fits
        if geo.total_bytes(hi) <= limit:
            lo = hi
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if geo.total_bytes(mid) <= limit:
                lo = mid
            else:
                hi = mid - 1
        chunks = lo
        if geo.index != "auto" or kinds in seen:
            break
        seen.add(kinds)
        frac = chunks / all_chunks
    if chunks is None:
        kinds = geo.kinds
        raise BudgetInfeasible(
            f"method.budget={budget} with method.budget_scope=total allows {limit:.0f} "
            f"bytes, too few for any chunk next to the metadata ({kinds.count('direct')} "
            f"direct tables: {geo.entry_bytes} bytes per row, {R} rows): raise method.budget, "
            f"lower method.num_chunks, use method.index=hashed or auto, or budget_scope=weights")
    slots, caps = geo.index_sizes(chunks)
    return StoreSizes(chunks, geo.kinds, slots, caps)
