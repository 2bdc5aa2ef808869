"""The planted label model: per-id scalar effects and latent vectors whose useful width follows
popularity, with scales and bias calibrated on a sample; it also gives the Bayes NE."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from benchmark.data.synthetic.config import (_STREAM_CAL, _STREAM_LATENT, _STREAM_PARAMS,
                                             _STREAM_SCALAR, _STREAM_WIDTH, SyntheticConfig)
from benchmark.data.synthetic.laws import DayMaps, TableLaw, day_starts
from benchmark.data.synthetic.presets import PRESETS

DENSE_CACHE_BYTES = 64 << 20  # per table: materialise z as a dense [n, L] matrix below this


@dataclass
class PlantedTable:
    width: np.ndarray        # uint8 [n]: useful latent width of each id
    offsets: np.ndarray      # int32 (int64 if huge) [n]: start of each id's values
    values: np.ndarray       # float32 [sum(width) + L]: prefix-packed latents, then L zeros
    scalar: np.ndarray       # float32 [n]: per-id scalar effect
    dense_z: np.ndarray | None = None   # float32 [n, L] cache for small tables
    norm2: np.ndarray | None = None     # float32 [n] squared norms (with dense_z)

    def latent(self, ids: np.ndarray, dim: int) -> np.ndarray:
        """[m, L] latents: read L values from each id's offset (contiguous), zero past its width."""
        if self.dense_z is not None:
            return self.dense_z[ids]
        z = np.lib.stride_tricks.sliding_window_view(self.values, dim)[self.offsets[ids]]
        z[np.arange(dim) >= self.width[ids][:, None]] = 0.0
        return z


@dataclass
class PlantedModel:
    """The generator's own click model; ``logits`` is what the Bayes NE is computed from."""

    tables: list[PlantedTable]
    latent_dim: int
    beta: np.ndarray            # float32 [num_dense]
    zero_prob: np.ndarray       # dense count law: P(count = 0) ...
    mu: np.ndarray              # ... else floor(exp(mu + sigma * N(0,1)))
    sigma: np.ndarray
    bias: float = 0.0
    dense_scale: float = 0.0
    scalar_scale: float = 0.0
    latent_scale: float = 0.0

    def dense(self, zero_u: np.ndarray, normal: np.ndarray) -> np.ndarray:
        counts = np.floor(np.exp(self.mu + self.sigma * normal))
        return np.where(zero_u < self.zero_prob, 0.0, np.log1p(counts)).astype(np.float32)

    def terms(self, dense: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, ...]:
        """Unscaled dense, scalar and pairwise (FM) parts of the logit, float64 [m] each."""
        m = len(ids)
        d = np.zeros(m)
        for j in range(dense.shape[1]):       # column loop: fixed summation order, no BLAS
            d += dense[:, j].astype(np.float64) * float(self.beta[j])
        w = np.zeros(m)
        s = np.zeros((m, self.latent_dim), np.float32)
        q = np.zeros(m, np.float32)
        for f, t in enumerate(self.tables):
            col = ids[:, f]
            w += t.scalar[col]
            z = t.latent(col, self.latent_dim)
            s += z
            q += t.norm2[col] if t.norm2 is not None else np.einsum("ij,ij->i", z, z)
        fm = 0.5 * (np.einsum("ij,ij->i", s, s).astype(np.float64) - q)
        return d, w, fm

    def logits(self, dense: np.ndarray, ids: np.ndarray) -> np.ndarray:
        d, w, fm = self.terms(dense, ids)
        return self.bias + self.dense_scale * d + self.scalar_scale * w + self.latent_scale * fm


def build_planted(cfg: SyntheticConfig, laws: list[TableLaw]) -> PlantedModel:
    """Widths from expected popularity over all days, latents, then calibrated scales and bias."""
    p = PRESETS[cfg.preset]
    starts = day_starts(cfg.rows, cfg.days)
    n_cal = min(cfg.rows, cfg.calibration_rows)
    cal_days = np.minimum(np.arange(n_cal) * cfg.days // n_cal, cfg.days - 1)
    rng_cal = np.random.default_rng([cfg.seed, _STREAM_CAL])
    cal_u = rng_cal.random((n_cal, len(laws)))
    cal_ids = np.empty((n_cal, len(laws)), np.int32)
    freq = [np.zeros(law.n) for law in laws]
    maps = DayMaps(cfg, laws)
    for f, law in enumerate(laws):
        freq[f][0] = cfg.rows * law.default_mass
    for d in range(cfg.days):
        maps.advance_to(d)
        rows_d = starts[d + 1] - starts[d]
        sel = np.flatnonzero(cal_days == d)
        for f, law in enumerate(laws):
            if law.n > 1:
                expected = law.rank_p
                expected *= rows_d * (1 - law.default_mass)
                freq[f][maps.maps[f]] += expected
                del expected
            cal_ids[sel, f] = law.sample(cal_u[sel, f], maps.maps[f])

    L = cfg.latent_dim
    tables = []
    for f, law in enumerate(laws):
        width = _law_widths(freq[f], L, cfg, f)
        freq[f] = None
        offsets = np.zeros(law.n, np.int32 if law.n * L < 2**31 else np.int64)
        np.cumsum(width[:-1], dtype=offsets.dtype, out=offsets[1:])
        values = np.zeros(int(width.sum()) + L, np.float32)
        values[:-L] = np.random.default_rng([cfg.seed, _STREAM_LATENT, f]).standard_normal(
            len(values) - L, dtype=np.float32)
        scalar = np.random.default_rng([cfg.seed, _STREAM_SCALAR, f]).standard_normal(
            law.n, dtype=np.float32)
        t = PlantedTable(width, offsets, values, scalar)
        if law.n * L * 4 <= DENSE_CACHE_BYTES:
            t.dense_z = t.latent(np.arange(law.n), L)
            t.norm2 = np.einsum("ij,ij->i", t.dense_z, t.dense_z)
        tables.append(t)

    rng = np.random.default_rng([cfg.seed, _STREAM_PARAMS, 1])
    nd = p.num_dense
    model = PlantedModel(tables, L, beta=rng.standard_normal(nd).astype(np.float32),
                         zero_prob=rng.uniform(0.05, 0.45, nd).astype(np.float32),
                         mu=rng.uniform(0.5, 4.0, nd).astype(np.float32),
                         sigma=rng.uniform(0.5, 1.5, nd).astype(np.float32))
    cal_dense = model.dense(rng_cal.random((n_cal, nd), dtype=np.float32),
                            rng_cal.standard_normal((n_cal, nd), dtype=np.float32))
    d, w, fm = model.terms(cal_dense, cal_ids)
    scale = lambda x, target: float(target / x.std()) if x.std() > 0 else 0.0  # noqa: E731
    model.dense_scale = scale(d, cfg.dense_std)
    model.scalar_scale = scale(w, cfg.scalar_std)
    model.latent_scale = scale(fm, cfg.latent_std)
    x = model.dense_scale * d + model.scalar_scale * w + model.latent_scale * fm
    model.bias = _solve_bias(x, p.click_rate)
    return model


def _law_widths(freq: np.ndarray, dim: int, cfg: SyntheticConfig, table: int) -> np.ndarray:
    """Widths by ``cfg.width_law``, each with the histogram the popular law gives: ``popular``
    (widest on the most frequent ids), ``tail`` (the same widths, widest on the rarest) or
    ``flat`` (the same widths shuffled over the ids, independent of frequency). The last two
    are controls: a method that only moves memory to frequent ids has nothing to gain there."""
    if cfg.width_law == "tail":
        return _widths(-freq, dim, cfg.width_tail)
    width = _widths(freq, dim, cfg.width_tail)
    if cfg.width_law == "flat":
        width = np.random.default_rng([cfg.seed, _STREAM_WIDTH, table]).permutation(width)
    return width


def _widths(freq: np.ndarray, dim: int, tail: float) -> np.ndarray:
    """width = round(L * clip(1 - ln(1+r)/ln(1+r0), 0, 1)) for r = the id's rank by ``freq``.

    Widths are a step function of the rank, so only the L rank cut-offs matter: an id gets
    width k when its frequency reaches the value at cut-off k (np.partition, no full sort).
    """
    n = len(freq)
    r0 = max(1.0, tail * n)
    k = np.arange(1, dim + 1)
    # ranks with width >= k: round(L * (1 - ln(1+r)/ln(1+r0))) >= k  <=>  r < cut_k
    cut = np.ceil(np.expm1((1 - (k - 0.5) / dim) * np.log1p(r0))).astype(np.int64)
    cut = np.clip(cut, 0, n)
    kth = np.unique(n - cut[cut > 0])
    part = np.partition(freq, kth) if len(kth) else freq
    width = np.zeros(n, np.uint8)
    for c in cut[cut > 0]:
        width += freq >= part[n - c]
    return width


def _solve_bias(x: np.ndarray, rate: float) -> float:
    """b with mean(sigmoid(b + x)) = rate (monotone in b: bisection)."""
    lo, hi = -30.0, 30.0
    for _ in range(80):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if _sigmoid(mid + x).mean() < rate else (lo, mid)
    return (lo + hi) / 2


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def _entropy(p: float) -> float:
    return -(p * math.log(p) + (1 - p) * math.log(1 - p))
