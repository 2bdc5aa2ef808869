"""Access statistics of a prepared dataset: how skewed each table is (what pruning feeds on)."""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from benchmark.data.format import PreparedDataset

COVERAGE_FRACTIONS = (0.01, 0.1)


def access_counts(ds: PreparedDataset, split: str, chunk_rows: int = 1 << 20) -> list[np.ndarray]:
    """Per table, how often each id occurs in ``split`` (read in chunks: bounded memory)."""
    a, b = ds.split(split)
    counts = [np.zeros(n, np.int64) for n in ds.manifest.cardinalities]
    for c0 in range(a, b, chunk_rows):
        block = np.asarray(ds.ids[c0:min(b, c0 + chunk_rows)])
        for f, n in enumerate(ds.manifest.cardinalities):
            counts[f] += np.bincount(block[:, f], minlength=n)[:n]
    return counts


def top_coverage(weights: np.ndarray, fractions: Sequence[float] = COVERAGE_FRACTIONS
                 ) -> list[float]:
    """Share of the total held by the top ceil(frac * len) entries (counts or probabilities)."""
    w = np.sort(np.asarray(weights, dtype=np.float64))[::-1]
    total = w.sum()
    if total <= 0:
        return [0.0 for _ in fractions]
    cum = np.cumsum(w)
    return [float(cum[max(1, math.ceil(f * len(w))) - 1] / total) for f in fractions]


def coverage_table(ds: PreparedDataset, split: str = "train") -> list[dict]:
    """One row per table: cardinality, ids seen, top-1% and top-10% access coverage."""
    rows = []
    for name, n, c in zip(ds.manifest.feature_names, ds.manifest.cardinalities,
                          access_counts(ds, split)):
        top1, top10 = top_coverage(c, COVERAGE_FRACTIONS)
        rows.append({"name": name, "cardinality": int(n), "seen": int((c > 0).sum()),
                     "top1": top1, "top10": top10})
    return rows
