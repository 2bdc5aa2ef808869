"""Rows to disk: counter-based per-block randomness, ids from the laws, labels from the planted
model, atomically and in bounded memory; reuse of a dataset made with the same config."""
from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from benchmark.data.format import (DatasetError, DatasetWriter, Manifest, PreparedDataset,
                                   open_dataset)
from benchmark.data.synthetic.config import (_STREAM_ROWS, GENERATOR_VERSION, SyntheticConfig,
                                             as_config)
from benchmark.data.synthetic.laws import DayMaps, build_law, day_starts, split_ranges
from benchmark.data.synthetic.multihot import BagChunk, bag_sources, finish_bags
from benchmark.data.synthetic.planted import _entropy, _sigmoid, build_planted
from benchmark.data.synthetic.presets import PRESETS

BLOCK_ROWS = 65_536          # rows per RNG block: the unit of counter-based randomness
CHUNK_BLOCKS = 4             # blocks generated and written at once


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
    sources = bag_sources(laws, cfg.multi_hot_fields)
    bag_pieces = []
    with DatasetWriter(out, cfg.rows, nf, nd, "int32", overwrite=overwrite) as writer:
        maps = DayMaps(cfg, laws)
        for c0 in range(0, cfg.rows, chunk):
            c1 = min(cfg.rows, c0 + chunk)
            u_ids, zero_u, normal, u_lab = _block_draws(cfg, c0, c1, nf, nd)
            bags = BagChunk(cfg, c0, c1, len(sources), BLOCK_ROWS) if sources else None
            ids = np.empty((c1 - c0, nf), np.int32)
            for d in range(cfg.days):
                a, b = max(c0, starts[d]), min(c1, starts[d + 1])
                if a >= b:
                    continue
                maps.advance_to(d)
                for f, law in enumerate(laws):
                    ids[a - c0:b - c0, f] = law.sample(u_ids[a - c0:b - c0, f], maps.maps[f])
                if bags is not None:
                    bags.sample(a, b, laws, sources, maps)
            dense = model.dense(zero_u, normal)
            logit = model.logits(dense, ids)
            if bags is not None:
                logit = logit + model.scalar_scale * bags.planted(model, sources)
                bag_pieces.append(bags.per_field())
            prob = np.clip(_sigmoid(logit), 1e-12, 1 - 1e-12)
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
        bag_specs = writer.add_bags(finish_bags(bag_pieces, laws, sources))
        if sources:
            stats["multi_hot"] = {"source_tables": [p.feature_names[f] for f in sources],
                                  "mean_len": cfg.multi_hot_mean_len}
        manifest = Manifest(
            name=f"synthetic_{cfg.preset}", num_rows=cfg.rows, feature_names=list(p.feature_names),
            cardinalities=[law.n for law in laws],
            dense_names=[f"I{j}" for j in range(1, nd + 1)], splits=splits,
            click_rate=train_rate, fingerprint=cfg.fingerprint(),
            source={"generator": "benchmark.data.synthetic", "version": GENERATOR_VERSION,
                    "config": cfg.canonical(), "target_click_rate": p.click_rate},
            stats=stats, bags=bag_specs)
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
