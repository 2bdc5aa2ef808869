"""Multi-hot (bag) fields for the synthetic presets (``multi_hot_fields`` > 0; off by default,
so existing presets' bytes do not change).

Bag field k draws its ids from the access law of the k-th largest one-hot table (same Zipf,
same daily drift) but is its own table ``multi_k`` of that size; its bag length per row is
Poisson(``multi_hot_mean_len``) (0 = empty bag). Its planted effect is the sum of the source
table's scalar effects over the bag divided by sqrt(length) (so a bag's effect varies about as
much as one id's, whatever its length), added to the logit with the scalar part's scale (the bias
is not recalibrated for it; the Bayes NE in the stats is exact, being taken from the
probabilities the labels are drawn with). Randomness is counter-based per 65,536-row block
(its own stream), so bytes do not depend on chunking.
"""
from __future__ import annotations

import numpy as np

from benchmark.data.format import bag_offsets, concat_ranges

_STREAM_BAGS = 7


def bag_sources(laws, fields: int) -> list[int]:
    """The one-hot tables the bag fields imitate: the ``fields`` largest (ties: lower index)."""
    order = sorted(range(len(laws)), key=lambda f: (-laws[f].n, f))
    return order[:fields]


class BagChunk:
    """One chunk's bags: lengths [m, M], uniforms and ids in (row, field) bag order."""

    def __init__(self, cfg, c0: int, c1: int, fields: int, block_rows: int) -> None:
        lens, us = [], []
        for b in range(c0 // block_rows, (c1 - 1) // block_rows + 1):
            a, e = max(c0, b * block_rows), min(c1, (b + 1) * block_rows)
            rng = np.random.default_rng([cfg.seed, _STREAM_BAGS, b])
            n = rng.poisson(cfg.multi_hot_mean_len, (e - a, fields)).astype(np.int64)
            lens.append(n)
            us.append(rng.random(int(n.sum())))
        self.c0, self.fields = c0, fields
        self.lens = np.concatenate(lens)
        self.u = np.concatenate(us)
        self.starts = bag_offsets(self.lens.reshape(-1))[:-1].reshape(self.lens.shape)
        self.ids = np.empty(len(self.u), np.int32)

    def _where(self, a: int, b: int, k: int) -> np.ndarray:
        rows = slice(a - self.c0, b - self.c0)
        return concat_ranges(self.starts[rows, k], self.lens[rows, k])

    def sample(self, a: int, b: int, laws, sources: list[int], maps) -> None:
        """Ids of rows [a, b) (one day: ``maps`` is at that day)."""
        for k, f in enumerate(sources):
            idx = self._where(a, b, k)
            self.ids[idx] = laws[f].sample(self.u[idx], maps.maps[f])

    def planted(self, model, sources: list[int]) -> np.ndarray:
        """Per row: sum over fields of (sum of source-table scalar effects) / sqrt(length)."""
        m = self.lens.shape[0]
        field = np.repeat(np.tile(np.arange(self.fields), m), self.lens.reshape(-1))
        eff = np.empty(len(self.ids), np.float64)
        for k, f in enumerate(sources):
            sel = field == k
            eff[sel] = model.tables[f].scalar[self.ids[sel]]
        bag = np.repeat(np.arange(m * self.fields), self.lens.reshape(-1))
        sums = np.bincount(bag, eff, minlength=m * self.fields).reshape(m, self.fields)
        return (sums / np.sqrt(np.maximum(self.lens, 1))).sum(axis=1)

    def per_field(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """Each field's (ids, lengths) over this chunk's rows."""
        m = self.lens.shape[0]
        return [(self.ids[self._where(self.c0, self.c0 + m, k)], self.lens[:, k])
                for k in range(self.fields)]


def finish_bags(chunks: list[list[tuple[np.ndarray, np.ndarray]]], laws, sources: list[int]):
    """[(manifest bag entry, values, offsets[N + 1])] from the chunks' per-field pieces."""
    out = []
    for k, f in enumerate(sources):
        values = np.concatenate([c[k][0] for c in chunks])
        lens = np.concatenate([c[k][1] for c in chunks])
        out.append(({"name": f"multi_{k + 1}", "table": f"multi_{k + 1}",
                     "cardinality": int(laws[f].n), "pooling": "sum"}, values, bag_offsets(lens)))
    return out
