"""Which ids the rows hold: pseudo-days and splits, per-table bounded Zipf access laws with a
default token, and the day-by-day drift of popularity ranks."""
from __future__ import annotations

import numpy as np

from benchmark.data.synthetic.config import _STREAM_DRIFT, _STREAM_PARAMS, SyntheticConfig
from benchmark.data.synthetic.presets import PRESETS, table_rows


def day_starts(rows: int, days: int) -> list[int]:
    """DLRM pseudo-days: equal sizes, the first ``rows % days`` days one row longer."""
    base, rem = divmod(rows, days)
    sizes = [base + (d < rem) for d in range(days)]
    return [0] + np.cumsum(sizes).tolist()


def split_ranges(rows: int, days: int) -> dict[str, list[int]]:
    """train = days 0..days-2; last day halved, first half test (it gets the odd row), then val."""
    starts = day_starts(rows, days)
    last, end = starts[-2], starts[-1]
    mid = last + (end - last + 1) // 2
    return {"train": [0, last], "test": [last, mid], "val": [mid, end]}


# ---- the input law ---------------------------------------------------------------------------

class TableLaw:
    """Access law of one table: default mass on id 0, bounded Zipf over ranks of the others.

    Ranks are drawn by exact inverse CDF. Past the first ``HEAD`` ranks a binary search in a
    10M-entry CDF costs ~24 cache misses, so there the continuous (midpoint-rule) inverse gives
    a start that a few exact CDF comparisons correct: the same index ``searchsorted`` returns.
    """

    HEAD = 4096

    def __init__(self, n: int, s: float, default_mass: float, flatten_to_default: bool) -> None:
        self.n, self.default_mass = int(n), float(default_mass)
        if self.n == 1:
            self.default_mass = 1.0
        if flatten_to_default and self.n > 1:
            s = _flatten(self.n - 1, s, self.default_mass)
        self.s = float(s)
        if self.n > 1:
            w = np.arange(1, self.n, dtype=np.float64) ** -self.s
            self.total = float(w.sum())
            self.head_sum = float(w[:self.HEAD].sum())
            w /= self.total
            self.cdf = np.cumsum(w, out=w)                 # the one n-sized array kept
            self.cdf[-1] = 1.0
        else:
            self.cdf = np.zeros(0)

    @property
    def rank_p(self) -> np.ndarray:
        """P(rank r | not default) for r = 1..n-1 (recomputed: only the CDF is stored)."""
        return np.diff(self.cdf, prepend=0.0)

    def sample(self, u: np.ndarray, rank_to_id: np.ndarray) -> np.ndarray:
        """Ids for uniforms ``u`` in [0,1): one uniform per access picks default or a rank."""
        if self.n == 1:
            return np.zeros(len(u), np.int32)
        dm = self.default_mass
        v = (u - dm) / (1.0 - dm) if dm else u
        ids = rank_to_id[self.rank_index(v)]
        if dm:
            ids = np.where(u < dm, np.int32(0), ids)
        return ids

    def rank_index(self, v: np.ndarray) -> np.ndarray:
        """searchsorted(cdf, v, 'right') clipped to n-2: the 0-based rank index for each v."""
        last = self.n - 2
        if last < self.HEAD:
            return np.minimum(np.searchsorted(self.cdf, v, side="right"), last)
        head = self.cdf[:self.HEAD]
        j = np.searchsorted(head, v, side="right")
        tail = np.flatnonzero(j == self.HEAD)
        if len(tail):
            j[tail] = self._tail_index(v[tail])
        return j

    def _tail_index(self, v: np.ndarray) -> np.ndarray:
        rest = v * self.total - self.head_sum          # mass past rank HEAD, unnormalised
        a, e = self.HEAD + 0.5, 1.0 - self.s
        if abs(e) < 1e-9:
            x = a * np.exp(rest)
        else:
            x = np.maximum(a ** e + e * rest, 1e-300) ** (1.0 / e)
        j = np.clip(np.ceil(x - 0.5) - 1, self.HEAD, self.n - 2).astype(np.int64)
        for _ in range(64):                            # exact fix-up: min j with cdf[j] > v
            up = self.cdf[j] <= v
            down = (j > self.HEAD) & (self.cdf[np.maximum(j - 1, 0)] > v)
            if not (up.any() or down.any()):
                return np.minimum(j, self.n - 2)
            j += up
            j -= down
            np.minimum(j, self.n - 2, out=j)
        return np.minimum(np.searchsorted(self.cdf, v, side="right"), self.n - 2)

    def probabilities_by_rank(self) -> np.ndarray:
        """Access probability of id 0 followed by ranks 1..n-1 (for expected coverage)."""
        return np.concatenate([[self.default_mass], (1 - self.default_mass) * self.rank_p])


def _flatten(m: int, s: float, top: float) -> float:
    """Largest exponent <= s whose rank-1 share (1-top)/H(m,s) does not exceed ``top``."""
    r = np.arange(1, m + 1, dtype=np.float64)
    first = lambda e: (1 - top) / np.sum(r ** -e)      # noqa: E731
    if first(s) <= top:
        return s
    lo, hi = 0.0, s
    for _ in range(50):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if first(mid) <= top else (lo, mid)
    return lo


class DayMaps:
    """Per-table popularity-rank -> id maps, advanced day by day (drift), forward only."""

    def __init__(self, cfg: SyntheticConfig, laws: list[TableLaw]) -> None:
        self.cfg, self.laws, self.day = cfg, laws, 0
        self.maps = []
        for f, law in enumerate(laws):
            rng = np.random.default_rng([cfg.seed, _STREAM_DRIFT, f, 0])
            self.maps.append((rng.permutation(law.n - 1) + 1).astype(np.int32))

    def advance_to(self, day: int) -> None:
        if day < self.day:
            raise ValueError(f"DayMaps only move forward (at day {self.day}, asked {day})")
        while self.day < day:
            self.day += 1
            for f, m in enumerate(self.maps):
                rng = np.random.default_rng([self.cfg.seed, _STREAM_DRIFT, f, self.day])
                pos = np.flatnonzero(rng.random(len(m)) < self.cfg.drift)
                m[pos] = m[pos[rng.permutation(len(pos))]]



def build_law(cfg: SyntheticConfig) -> list[TableLaw]:
    p = PRESETS[cfg.preset]
    rng = np.random.default_rng([cfg.seed, _STREAM_PARAMS, 0])
    exps = rng.uniform(cfg.zipf_min, cfg.zipf_max, len(p.cardinalities))
    return [TableLaw(n, s, dm * cfg.default_scale, name in p.top_is_default)
            for n, s, dm, name in zip(table_rows(cfg), exps, p.default_mass, p.feature_names)]
