"""Per-feature vocabularies: raw uint64 values -> contiguous ids, in first-seen order (DLRM).

Built in the first pass from sorted numpy arrays rather than Python dicts: a value costs
24 bytes while counting (key uint64, first-seen rank int64, count int64) and 12 bytes when
mapping (key, id). Criteo Kaggle's 33.8M distinct values therefore need about 0.8 GB while
counting and 0.4 GB when mapping; a dict of the same would need several GB. Each block's
``np.unique`` goes into a small pending set that is merged into the sorted keys when it
reaches 1/8 of them.

Frequency threshold (``min_count`` > 1): values seen fewer times than that over the whole input
(DLRM counts all days) share id 0; the others get 1.. in first-seen order. Without a threshold
ids are 0.. in first-seen order and every value, the empty field included, has its own id.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from benchmark.data.readers.badlines import InputError

SMALL = 1 << 16                 # keys searched without sorting the queries first


class _Sorted:
    """Sorted keys with their first-seen rank and count."""

    def __init__(self) -> None:
        self.keys = np.empty(0, dtype=np.uint64)
        self.rank = np.empty(0, dtype=np.int64)
        self.counts = np.empty(0, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.keys)

    def add_counts(self, u: np.ndarray, cnt: np.ndarray) -> np.ndarray:
        """Add ``cnt`` to the keys among sorted ``u`` that are here; return the found mask."""
        pos = np.searchsorted(self.keys, u)
        found = pos < len(self.keys)
        found[found] = self.keys[pos[found]] == u[found]
        self.counts[pos[found]] += cnt[found]
        return found

    def insert(self, keys: np.ndarray, rank: np.ndarray, counts: np.ndarray) -> None:
        """Insert keys that are not here (sorted, or in any order for a merge)."""
        order = np.argsort(keys, kind="stable")
        keys, rank, counts = keys[order], rank[order], counts[order]
        at = np.searchsorted(self.keys, keys)
        self.keys = np.insert(self.keys, at, keys)
        self.rank = np.insert(self.rank, at, rank)
        self.counts = np.insert(self.counts, at, counts)

    def nbytes(self) -> int:
        return self.keys.nbytes + self.rank.nbytes + self.counts.nbytes


class VocabCounter:
    """First pass: distinct values, their first-seen rank and their counts.

    New values go to a small sorted ``pending`` set that is merged into the main one when it
    reaches 1/8 of it: each merge copies the main arrays once, so a table that grows to V
    values costs O(V) copies in all instead of O(V) per block.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.main = _Sorted()
        self.pending = _Sorted()
        self.size = 0

    def __len__(self) -> int:
        return self.size

    def update(self, values: np.ndarray) -> None:
        if len(values) == 0:
            return
        u, first, cnt = np.unique(values, return_index=True, return_counts=True)
        new = ~self.main.add_counts(u, cnt)
        if len(self.pending) and new.any():
            new[new] = ~self.pending.add_counts(u[new], cnt[new])
        if new.any():
            order = np.argsort(first[new], kind="stable")
            rank = np.empty(len(order), dtype=np.int64)
            rank[order] = self.size + np.arange(len(order))
            self.pending.insert(u[new], rank, cnt[new])
            self.size += len(order)
        if len(self.pending) > max(1 << 16, len(self.main) // 8):
            self._merge()

    def _merge(self) -> None:
        p, self.pending = self.pending, _Sorted()
        self.main.insert(p.keys, p.rank, p.counts)

    def nbytes(self) -> int:
        return self.main.nbytes() + self.pending.nbytes()

    def finish(self, min_count: int = 0) -> "Vocabulary":
        """Final ids; frees the counting arrays."""
        self._merge()
        keys, rank, counts = self.main.keys, self.main.rank, self.main.counts
        self.main = None
        if min_count > 1:
            keep = counts >= min_count
            by_rank = np.zeros(len(keys), dtype=bool)
            by_rank[rank] = keep
            new_id = np.cumsum(by_rank)               # kept values: 1.. in first-seen order
            ids = np.where(keep, new_id[rank], 0)
            cardinality = int(by_rank.sum()) + 1
            rare = int((~keep).sum())
        else:
            ids, cardinality, rare = rank, len(keys), 0
        dtype = np.int32 if cardinality < 2**31 else np.int64
        return Vocabulary(self.name, keys, ids.astype(dtype), max(cardinality, 1), rare)


@dataclass
class Vocabulary:
    name: str
    keys: np.ndarray            # uint64, sorted
    ids: np.ndarray             # id of each key
    cardinality: int
    rare_values: int = 0        # distinct values folded into id 0 by the threshold

    def lookup(self, values: np.ndarray) -> np.ndarray:
        """Ids of ``values``; every value must have been counted in the first pass.

        A vocabulary that fits in cache is searched directly; a large one via the block's
        unique values, whose sorted order keeps the binary searches cache-friendly."""
        if len(self.keys) <= SMALL:
            u, inv = values, None
        else:
            u, inv = np.unique(values, return_inverse=True)
        pos = np.searchsorted(self.keys, u)
        ok = pos < len(self.keys)
        ok[ok] = self.keys[pos[ok]] == u[ok]
        if not ok.all():
            raise InputError(f"feature {self.name}: value {int(u[~ok][0])} was not seen in the "
                             f"first pass; did an input file change while preparing?")
        ids = self.ids[pos]
        return ids if inv is None else ids[inv.reshape(-1)]
