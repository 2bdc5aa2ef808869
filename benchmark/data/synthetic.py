"""Synthetic Criteo-/Avazu-like click data whose labels come from a planted model.

Why planted: the usual random generators (torchrec RandomRecDataset, DLRM random mode) draw
labels independent of the inputs, so no method can be judged on them. Here the label logit is

    bias + a_d * sum_j beta_j x_j + a_w * sum_f w_f[id_f] + a_z * sum_{f<g} <z_f[id_f], z_g[id_g]>

where every id has a scalar effect ``w`` and a latent vector ``z`` whose useful width (its
number of non-zero leading dims) shrinks with the id's popularity: popular ids use up to
``latent_dim`` dims, the tail few or none. So giving popular rows more embedding dimensions
really pays, and the generator's own probabilities give the Bayes NE, the best any model can do.

Inputs, per table f with n_f ids (id 0 = the empty/default token):
- id 0 takes ``default_mass_f`` of the accesses; the other ids are drawn by bounded Zipf over
  popularity ranks 1..n_f-1 (P(r) ~ r^-s_f, s_f seeded per table in [zipf_min, zipf_max]);
- the rank -> id map drifts: each new day a random ``drift`` fraction of ranks trade ids among
  themselves, so some popular ids fall into the tail and some tail ids become popular;
- width(id) = round(L * clip(1 - ln(1+r)/ln(1+r0), 0, 1)) with r the id's rank by expected
  frequency over all days and r0 = ``width_tail`` * n_f (ids past r0 have width 0).
Dense features (Criteo: I1..I13) are log(1+count) of zero-inflated log-normal counts.

Randomness is counter-based (one numpy Generator per 65,536-row block, per table, per day), so
the bytes depend only on the config, never on chunking. Memory: ~25 bytes per id kept (Zipf CDF
float64, rank map int32, width uint8, latent offsets int32, scalar effect float32, latent values:
sum of widths x 4 bytes, ~0.5-1 dims per id at scale 1) plus transient popularity counts (8
bytes per id) and ~100 MB of per-chunk buffers; rows go to disk in chunks, so the row count
does not matter. Criteo at scale=1 (33.8M ids): 1.06 GB peak RSS measured (300k rows).
"""
from __future__ import annotations

import fcntl
import math
import numbers
import os
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from benchmark.data.format import (DatasetError, DatasetWriter, Manifest, PreparedDataset,
                                   fingerprint, open_dataset)

GENERATOR_VERSION = 1
BLOCK_ROWS = 65_536          # rows per RNG block: the unit of counter-based randomness
CHUNK_BLOCKS = 4             # blocks generated and written at once
DENSE_CACHE_BYTES = 64 << 20  # per table: materialise z as a dense [n, L] matrix below this
_STREAM_PARAMS, _STREAM_ROWS, _STREAM_DRIFT, _STREAM_LATENT, _STREAM_SCALAR, _STREAM_CAL = range(6)
_CAST = {"float": float, "int": int, "str": str}
_KINDS = {"float": numbers.Real, "int": numbers.Integral, "str": str}


@dataclass
class SyntheticConfig:
    """Everything that determines a synthetic dataset (its fingerprint is taken over these)."""

    preset: str = "criteo"          # criteo | avazu
    scale: float = 0.001            # multiplies the real cardinalities (0 < scale <= 1)
    rows: int = 500_000             # total rows over all days
    days: int = 7                   # contiguous pseudo-days; last one -> test (1st half), val
    seed: int = 0
    min_table_rows: int = 64        # floor for scaled tables (never above the real size)
    zipf_min: float = 0.9           # per-table Zipf exponent drawn uniformly in [min, max]
    zipf_max: float = 1.3
    default_scale: float = 1.0      # multiplies the preset's default-token (id 0) masses
    drift: float = 0.05             # fraction of popularity ranks re-assigned each day
    latent_dim: int = 16            # L: widest planted latent vector
    width_tail: float = 0.5         # ids ranked past this fraction of a table have width 0
    dense_std: float = 0.4          # std of the logit's dense part (on the calibration sample)
    scalar_std: float = 0.5         # ... of its per-id scalar part
    latent_std: float = 1.6         # ... of its pairwise latent (FM) part: where dims matter
    calibration_rows: int = 131_072  # sample that sets the part scales and the bias

    def validate(self, where: str = "synthetic") -> None:
        def bad(key: str, msg: str) -> DatasetError:
            return DatasetError(f"{where}.{key}={getattr(self, key)!r}: {msg}")
        for f in fields(self):
            value, kind = getattr(self, f.name), str(f.type)
            if isinstance(value, bool) or not isinstance(value, _KINDS[kind]):
                raise bad(f.name, f"must be {kind}")
        if self.preset not in PRESETS:
            raise bad("preset", f"unknown preset; choose one of {sorted(PRESETS)}")
        if not 0 < self.scale <= 1:
            raise bad("scale", "must be in (0, 1]")
        if self.days < 2:
            raise bad("days", "must be >= 2 (train days + one test/val day)")
        if self.rows < 2 * self.days:
            raise bad("rows", f"must be >= 2 * days = {2 * self.days}")
        if self.min_table_rows < 1:
            raise bad("min_table_rows", "must be >= 1")
        if not 0 <= self.zipf_min <= self.zipf_max <= 4:
            raise bad("zipf_min", f"need 0 <= zipf_min <= zipf_max <= 4 (zipf_max={self.zipf_max})")
        if not 0 <= self.default_scale or any(self.default_scale * m >= 1
                                              for m in PRESETS[self.preset].default_mass):
            raise bad("default_scale", "must keep every default-token mass in [0, 1)")
        if not 0 <= self.drift <= 1:
            raise bad("drift", "must be in [0, 1]")
        if not 1 <= self.latent_dim <= 255:
            raise bad("latent_dim", "must be in 1..255")
        if not 0 < self.width_tail <= 1:
            raise bad("width_tail", "must be in (0, 1]")
        for key in ("dense_std", "scalar_std", "latent_std"):
            if getattr(self, key) < 0:
                raise bad(key, "must be >= 0")
        if self.calibration_rows < 1000:
            raise bad("calibration_rows", "must be >= 1000")

    def canonical(self) -> dict[str, Any]:
        """Field values cast to their declared types (yaml `scale: 1` and 1.0 fingerprint alike)."""
        return {f.name: _CAST[str(f.type)](getattr(self, f.name)) for f in fields(self)}

    def fingerprint(self) -> str:
        return fingerprint(["synthetic", GENERATOR_VERSION, self.canonical()])


def as_config(cfg: SyntheticConfig | Mapping[str, Any]) -> SyntheticConfig:
    """Accept the dataclass, a dict, or an OmegaConf node (what Hydra hands the harness)."""
    if isinstance(cfg, SyntheticConfig):
        return cfg
    try:
        items = dict(cfg.items())
    except AttributeError:
        raise DatasetError(f"synthetic config must be a SyntheticConfig or mapping, "
                           f"got {type(cfg).__name__}") from None
    known = {f.name for f in fields(SyntheticConfig)}
    unknown = sorted(set(items) - known)
    if unknown:
        raise DatasetError(f"synthetic config: unknown keys {unknown}; known: {sorted(known)}")
    return SyntheticConfig(**items)


# ---- presets ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Preset:
    name: str
    feature_names: tuple[str, ...]
    cardinalities: tuple[int, ...]     # the real dataset's (DATA.md)
    default_mass: tuple[float, ...]    # share of id 0 (empty / default value) per table
    num_dense: int
    click_rate: float
    top_is_default: tuple[str, ...] = ()   # tables whose top value must be id 0 (flatten Zipf)


_CRITEO_CARDS = (1460, 583, 10131227, 2202608, 305, 24, 12517, 633, 3, 93145, 5683, 8351593,
                 3194, 27, 14992, 5461306, 10, 5652, 2173, 4, 7046547, 18, 15, 286181, 105, 142572)
# Approximate empty-value shares of Criteo Kaggle's C1..C26 (the empties DLRM maps to one id);
# an approximation to make the default-token structure Criteo-like, not a measured fact here.
_CRITEO_EMPTY = {"C3": 0.034, "C4": 0.034, "C6": 0.121, "C12": 0.034, "C16": 0.034,
                 "C19": 0.44, "C20": 0.44, "C21": 0.034, "C22": 0.763, "C24": 0.034,
                 "C25": 0.44, "C26": 0.44}
_AVAZU_NAMES = ("C1", "banner_pos", "site_id", "site_domain", "site_category", "app_id",
                "app_domain", "app_category", "device_id", "device_ip", "device_model",
                "device_type", "device_conn_type", "C14", "C15", "C16", "C17", "C18", "C19",
                "C20", "C21")
_AVAZU_CARDS = (7, 7, 4737, 7745, 26, 8552, 559, 36, 2686408, 6729486, 8251, 5, 4, 2626, 8, 9,
                435, 4, 68, 172, 60)
# Top-value shares from DATA.md (C1, app_id, device_id, device_ip). app_domain/app_category
# follow app_id (site traffic has no app) and the site_* fields take the remaining app traffic:
# an assumption derived from app_id's share, not a measured fact.
_AVAZU_TOP = {"C1": 0.919, "app_id": 0.639, "device_id": 0.825, "device_ip": 0.0052,
              "app_domain": 0.639, "app_category": 0.639, "site_id": 0.361,
              "site_domain": 0.361, "site_category": 0.361}

PRESETS: dict[str, Preset] = {
    "criteo": Preset(
        "criteo", tuple(f"C{i}" for i in range(1, 27)), _CRITEO_CARDS,
        tuple(_CRITEO_EMPTY.get(f"C{i}", 0.0) for i in range(1, 27)), 13, 0.2562),
    "avazu": Preset(
        "avazu", _AVAZU_NAMES, _AVAZU_CARDS, tuple(_AVAZU_TOP.get(n, 0.0) for n in _AVAZU_NAMES),
        0, 0.1698, top_is_default=tuple(_AVAZU_TOP)),
}


def table_rows(cfg: SyntheticConfig) -> list[int]:
    """Scaled cardinalities: real * scale, floored at min_table_rows, never above the real size."""
    p = PRESETS[cfg.preset]
    return [min(real, max(cfg.min_table_rows, round(real * cfg.scale))) for real in p.cardinalities]


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


# ---- the planted label model -----------------------------------------------------------------

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


def build_law(cfg: SyntheticConfig) -> list[TableLaw]:
    p = PRESETS[cfg.preset]
    rng = np.random.default_rng([cfg.seed, _STREAM_PARAMS, 0])
    exps = rng.uniform(cfg.zipf_min, cfg.zipf_max, len(p.cardinalities))
    return [TableLaw(n, s, dm * cfg.default_scale, name in p.top_is_default)
            for n, s, dm, name in zip(table_rows(cfg), exps, p.default_mass, p.feature_names)]


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
        width = _widths(freq[f], L, cfg.width_tail)
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


# ---- generation ------------------------------------------------------------------------------

def _block_draws(cfg: SyntheticConfig, start: int, stop: int, nf: int, nd: int):
    """Per-row randomness of rows [start, stop) (block aligned start), one Generator per block."""
    m = stop - start
    u_ids, u_lab = np.empty((m, nf)), np.empty(m)
    zero_u, normal = np.empty((m, nd), np.float32), np.empty((m, nd), np.float32)
    for b in range(start // BLOCK_ROWS, (stop - 1) // BLOCK_ROWS + 1):
        a, e = b * BLOCK_ROWS - start, min(stop, (b + 1) * BLOCK_ROWS) - start
        rng = np.random.default_rng([cfg.seed, _STREAM_ROWS, b])
        rng.random(out=u_ids[a:e])
        rng.random(out=zero_u[a:e], dtype=np.float32)
        rng.standard_normal(out=normal[a:e], dtype=np.float32)
        rng.random(out=u_lab[a:e])
    return u_ids, zero_u, normal, u_lab


def generate(cfg: SyntheticConfig | Mapping[str, Any], out: str | os.PathLike,
             overwrite: bool = False, progress: bool = False) -> PreparedDataset:
    """Generate the dataset ``cfg`` describes into ``out`` (atomically, in bounded memory)."""
    cfg = as_config(cfg)
    cfg.validate()
    if Path(out).exists() and not overwrite:
        raise DatasetError(f"{out} already exists (overwrite it with --overwrite / "
                           f"overwrite=True, or choose another directory)")
    t0 = time.perf_counter()
    p = PRESETS[cfg.preset]
    laws = build_law(cfg)
    model = build_planted(cfg, laws)
    nf, nd = len(laws), p.num_dense
    starts = day_starts(cfg.rows, cfg.days)
    splits = split_ranges(cfg.rows, cfg.days)
    split_edges = np.array([splits["train"][1], splits["test"][1]])   # split index 0/1/2
    ll = np.zeros(3)
    pos = np.zeros(3)
    chunk = BLOCK_ROWS * CHUNK_BLOCKS
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=cfg.rows, unit="rows", desc=f"synthetic {cfg.preset}")
    with DatasetWriter(out, cfg.rows, nf, nd, "int32", overwrite=overwrite) as writer:
        maps = DayMaps(cfg, laws)
        for c0 in range(0, cfg.rows, chunk):
            c1 = min(cfg.rows, c0 + chunk)
            u_ids, zero_u, normal, u_lab = _block_draws(cfg, c0, c1, nf, nd)
            ids = np.empty((c1 - c0, nf), np.int32)
            for d in range(cfg.days):
                a, b = max(c0, starts[d]), min(c1, starts[d + 1])
                if a >= b:
                    continue
                maps.advance_to(d)
                for f, law in enumerate(laws):
                    ids[a - c0:b - c0, f] = law.sample(u_ids[a - c0:b - c0, f], maps.maps[f])
            dense = model.dense(zero_u, normal)
            prob = np.clip(_sigmoid(model.logits(dense, ids)), 1e-12, 1 - 1e-12)
            y = u_lab < prob
            which = np.searchsorted(split_edges, np.arange(c0, c1), side="right")
            ll += np.bincount(which, -np.where(y, np.log(prob), np.log1p(-prob)), minlength=3)
            pos += np.bincount(which, y, minlength=3)
            writer.write(c0, dense if nd else None, ids, y.astype(np.uint8))
            if bar is not None:
                bar.update(c1 - c0)
        if bar is not None:
            bar.close()
        counts = np.array([splits[s][1] - splits[s][0] for s in ("train", "test", "val")])
        train_rate = float(pos[0] / counts[0])
        if not 0 < train_rate < 1:
            raise DatasetError(f"synthetic: train click rate {train_rate}; too few rows "
                               f"({cfg.rows}) for a usable dataset")
        h = _entropy(train_rate)
        ne = ll / np.maximum(counts, 1) / h
        stats = {
            "bayes_ne": float(ne[1]), "bayes_ne_val": float(ne[2]), "bayes_ne_train": float(ne[0]),
            "bayes_logloss": float(ll[1] / max(counts[1], 1)),
            "click_rate_test": float(pos[1] / max(counts[1], 1)),
            "click_rate_val": float(pos[2] / max(counts[2], 1)),
            "day_starts": starts,
            "tables": [{"name": n, "rows": law.n, "real_rows": real, "zipf_s": law.s,
                        "default_mass": law.default_mass,
                        "mean_width": float(t.width.mean())}
                       for n, real, law, t in zip(p.feature_names, p.cardinalities, laws,
                                                  model.tables)],
            "planted": {"bias": model.bias, "dense_scale": model.dense_scale,
                        "scalar_scale": model.scalar_scale, "latent_scale": model.latent_scale},
            "seconds": round(time.perf_counter() - t0, 3),
        }
        manifest = Manifest(
            name=f"synthetic_{cfg.preset}", num_rows=cfg.rows, feature_names=list(p.feature_names),
            cardinalities=[law.n for law in laws],
            dense_names=[f"I{j}" for j in range(1, nd + 1)], splits=splits,
            click_rate=train_rate, fingerprint=cfg.fingerprint(),
            source={"generator": "benchmark.data.synthetic", "version": GENERATOR_VERSION,
                    "config": cfg.canonical(), "target_click_rate": p.click_rate},
            stats=stats)
        return writer.close(manifest)


def ensure_synthetic(out: str | os.PathLike, cfg: SyntheticConfig | Mapping[str, Any],
                     progress: bool = False) -> PreparedDataset:
    """Open the dataset at ``out`` if it was made with ``cfg``, else generate it; safe to call
    from several processes at once (an exclusive lock on a sibling ``.NAME.lock`` file)."""
    cfg = as_config(cfg)
    cfg.validate()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out.parent / f".{out.name}.lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if not out.exists():
                return generate(cfg, out, progress=progress)
            ds = open_dataset(out)
            if ds.manifest.fingerprint != cfg.fingerprint():
                raise DatasetError(f"{out} holds a dataset made with different settings "
                                   f"({_config_diff(ds.manifest, cfg)}); remove it or use "
                                   f"another path")
            return ds
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _config_diff(m: Manifest, cfg: SyntheticConfig) -> str:
    have = m.source.get("config")
    if m.source.get("generator") != "benchmark.data.synthetic" or not isinstance(have, dict):
        return f"it is {m.name!r}, not made by the synthetic generator"
    want = cfg.canonical()
    diff = [f"{k}: {have.get(k)!r} there, {v!r} asked" for k, v in want.items()
            if have.get(k) != v]
    if m.source.get("version") != GENERATOR_VERSION:
        diff.append(f"generator version {m.source.get('version')} there, {GENERATOR_VERSION} here")
    return "; ".join(diff) or "fingerprint differs"


# Knobs a dataset's directory name spells out (or that a scale fixes); the others go in its
# suffix when they differ from their defaults.
_NAMED_KNOBS = frozenset({"preset", "scale", "rows", "days", "seed"})


def knob_suffix(knobs) -> str:
    """``_drift0.2`` etc. for the generator knobs in ``knobs`` (a SyntheticConfig or a mapping)
    that are off their defaults; '' when none are. A dataset directory holds one set of settings
    (another is refused), so changed knobs must lead to another directory."""
    values = dict(knobs) if hasattr(knobs, "keys") else vars(knobs)
    defaults = vars(SyntheticConfig())
    return "".join(f"_{k.replace('_', '')}{v}" for k, v in values.items()
                   if k not in _NAMED_KNOBS and k in defaults and v != defaults[k])


def default_path(cfg: SyntheticConfig, root: str | os.PathLike = "data") -> Path:
    """The directory name the Hydra configs use for these settings."""
    name = f"synthetic_{cfg.preset}_s{cfg.scale}_n{cfg.rows}_d{cfg.days}_seed{cfg.seed}"
    return Path(root) / (name + knob_suffix(cfg))


__all__ = ["SyntheticConfig", "PRESETS", "Preset", "TableLaw", "DayMaps", "PlantedModel",
           "as_config", "build_law", "build_planted", "generate", "ensure_synthetic",
           "table_rows", "day_starts", "split_ranges", "default_path", "knob_suffix"]
