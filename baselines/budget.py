"""Turning ``method.budget`` (a fraction of uniform weight bytes) into rows per table.

Shared by the row-reducing baselines (hashing, qr) so that both read the budget the same way.
"""
from __future__ import annotations

import math
from typing import Sequence

from fiited.errors import BudgetInfeasible


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
