"""Errors a caller may want to tell apart from a bad config."""
from __future__ import annotations


class BudgetInfeasible(ValueError):
    """``method.budget`` cannot pay for the least this data needs (one row per table, one chunk
    beside the metadata): the case does not exist at this data size. A sweep over sizes skips
    it and says why; a single run reports it like any bad value."""
