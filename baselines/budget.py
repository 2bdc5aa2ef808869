"""The baselines' view of the one sizing module, ``fiited.budget`` (every method reads
``method.budget`` the same way; the row-reducing baselines, hashing and qr, use these two)."""
from __future__ import annotations

from fiited.budget import budget_rows, fill_rows

__all__ = ["budget_rows", "fill_rows"]
