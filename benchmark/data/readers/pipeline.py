"""The two-pass prepare shared by every reader: count, then map and write.

Pass 1 parses every block, applies the bad-line policy, counts rows per split and values per
feature. Pass 2 parses again, maps values to ids and scatters rows into the memory-mapped
arrays of a ``DatasetWriter``, which publishes the directory only when everything is written.
Two passes because the row count (the arrays' size), the split sizes and, with a frequency
threshold, the ids all depend on the whole input. Memory: the vocabularies plus one block.
"""
from __future__ import annotations

import hashlib
import mmap
import resource
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from benchmark.data.format import (DatasetWriter, Manifest, PreparedDataset, check_replaceable,
                                   fingerprint)
from benchmark.data.readers.badlines import BadLineLog, InputError
from benchmark.data.readers.source import PrepareConfig, Rows, Source
from benchmark.data.readers.splits import SplitPlan
from benchmark.data.readers.vocab import Vocabulary, VocabCounter

HEAD_BYTES = 1 << 20            # content hash of each input's head, for the fingerprint
RELEASE_BYTES = 64 << 20        # written output after which mapped pages are dropped from RSS


Progress = Callable[[str, int, int, int], None]    # (pass name, rows, bytes done, bytes total)


def _file_info(p: Path) -> dict:
    st = p.stat()
    with open(p, "rb") as f:
        head = f.read(HEAD_BYTES)
    return {"name": p.name, "path": str(p.resolve()), "size": st.st_size,
            "mtime_ns": st.st_mtime_ns, "head_sha256": hashlib.sha256(head).hexdigest()}


def _check_unchanged(files: list[Path], before: list[dict]) -> None:
    for p, b in zip(files, before):
        st = p.stat()
        if (st.st_size, st.st_mtime_ns) != (b["size"], b["mtime_ns"]):
            raise InputError(f"{p}: changed while it was being prepared; run prepare again")


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def prepare(source: Source, progress: Progress | None = None) -> PreparedDataset:
    """Read ``source`` twice and publish the prepared dataset at ``cfg.out``."""
    cfg = source.cfg
    out = Path(cfg.out)
    if out.exists() and not cfg.overwrite:
        raise InputError(f"{out} already exists (pass --overwrite to replace it)")
    check_replaceable(out)                  # before hours of reading, not after
    files = source.files()
    infos = [_file_info(p) for p in files]
    fp = fingerprint([source.name, [{k: i[k] for k in ("name", "size", "head_sha256")}
                                    for i in infos], cfg.output_options()])
    t0 = time.perf_counter()
    log = BadLineLog(cfg.on_bad_lines)
    plan = source.split_plan()
    total_bytes = sum(i["size"] for i in infos)
    counted = _count(source, log, plan, lambda r, d: progress and progress("count", r, d,
                                                                           total_bytes))
    if counted.rows == 0:
        raise InputError(f"{', '.join(map(str, files))}: no data rows")
    splits = plan.finish()
    t1 = time.perf_counter()
    with DatasetWriter(out, counted.rows, len(counted.cards), len(source.dense_names),
                       counted.id_dtype(cfg.id_dtype), overwrite=cfg.overwrite) as w:
        weights = (np.lib.format.open_memmap(w.tmp / "weights.npy", mode="w+", dtype=np.float32,
                                             shape=(counted.rows,))
                   if source.has_weights else None)
        kept = _Kept() if source.has_bags else None
        _write(source, log, plan, counted, w, weights,
               lambda r, d: progress and progress("write", r, d, total_bytes), kept)
        _check_unchanged(files, infos)
        bags = (w.add_bags(source.make_bags(w.ids, counted.cards, kept.time, kept.aux, splits))
                if kept is not None else [])
        if weights is not None:
            weights.flush()
            del weights
        stats = {"rows": counted.rows, "bad_lines": log.as_stats(),
                 "splits": _split_stats(w.labels, splits),
                 "seconds": {"count": round(t1 - t0, 3),
                             "write": round(time.perf_counter() - t1, 3)},
                 "rows_per_s": round(counted.rows / max(time.perf_counter() - t0, 1e-9), 1),
                 "peak_rss_bytes": peak_rss_bytes(), "vocab_count_bytes": counted.vocab_bytes,
                 "rare_values": {n: v.rare_values for n, v in counted.vocabs.items()},
                 **source.stats()}
        train = stats["splits"]["train"]
        if not 0 < train["positives"] < train["rows"]:
            raise InputError(f"the train split has {train['rows']} rows and "
                             f"{train['positives']} positives: the click rate must be strictly "
                             f"between 0 and 1")
        if source.has_weights:
            stats.update(_weight_stats(w.tmp / "weights.npy", w.labels, *splits["train"]))
        manifest = Manifest(
            name=source.name, num_rows=counted.rows, feature_names=list(source.feature_names),
            cardinalities=counted.cards, dense_names=list(source.dense_names), splits=splits,
            click_rate=train["positives"] / train["rows"], fingerprint=fp,
            source={"dataset": cfg.dataset, "inputs": infos, "options": cfg.output_options(),
                    "preprocessing": _preprocessing(cfg, source), "split": plan.describe(),
                    **source.describe()},
            stats=stats, bags=bags)
        return w.close(manifest)


class _Kept:
    """Per output row: ``Rows.time`` and ``Rows.aux``, for a reader's bags (allocated on the
    first block, scattered like the ids)."""

    def __init__(self) -> None:
        self.time: np.ndarray | None = None
        self.aux: np.ndarray | None = None

    def put(self, n: int, dest: np.ndarray, rows: Rows) -> None:
        if rows.time is not None:
            if self.time is None:
                self.time = np.zeros(n, dtype=np.int64)
            self.time[dest] = rows.time
        if rows.aux is not None:
            if self.aux is None:
                self.aux = np.zeros((n, rows.aux.shape[1]), dtype=np.int64)
            self.aux[dest] = rows.aux


@dataclass
class _Counted:
    """What pass 1 learnt: rows kept, a vocabulary per counted feature, cardinalities."""

    rows: int
    vocabs: dict[str, Vocabulary]
    cards: list[int]
    vocab_bytes: int

    def id_dtype(self, want: str) -> str:
        big = max(self.cards) >= 2**31
        if want == "int32" and big:
            raise InputError(f"id_dtype int32 cannot hold cardinality {max(self.cards)}; "
                             f"use int64")
        return ("int64" if big else "int32") if want == "auto" else want


def _count(source: Source, log: BadLineLog, plan: SplitPlan, progress) -> _Counted:
    """Pass 1: rows, split sizes (``plan.observe``) and values per feature."""
    col = {n: j for j, n in enumerate(source.feature_names)}
    counters = {n: VocabCounter(n) for n in source.feature_names if n not in source.fixed_ids}
    rows_read = 0
    for rows in source.blocks(log, record=True):
        keys = _hashed(rows.keys, source.cfg.max_ind_range, source, col)
        for n, c in counters.items():
            c.update(keys[:, col[n]])
        plan.observe(rows.file_index, rows.lines, rows.time)
        rows_read += len(rows.lines)
        progress(rows_read, rows.position)
    vocab_bytes = sum(c.nbytes() for c in counters.values())
    vocabs = {n: c.finish(source.cfg.min_count) for n, c in counters.items()}
    cards = [vocabs[n].cardinality if n in vocabs else source.fixed_ids[n]
             for n in source.feature_names]
    return _Counted(rows_read, vocabs, cards, vocab_bytes)


def _write(source: Source, log: BadLineLog, plan: SplitPlan, counted: _Counted,
           w: DatasetWriter, weights, progress, kept: _Kept | None = None) -> None:
    """Pass 2: parse again, map values to ids, scatter rows to their split positions."""
    col = {n: j for j, n in enumerate(source.feature_names)}
    row_bytes = (w.ids.itemsize * len(col) + 4 * len(source.dense_names) + 1
                 + (4 if weights is not None else 0))
    written = since_release = 0
    for rows in source.blocks(log, record=False):
        keys = _hashed(rows.keys, source.cfg.max_ind_range, source, col)
        ids = np.empty(keys.shape, dtype=w.ids.dtype)
        for n, j in col.items():
            v = counted.vocabs.get(n)
            ids[:, j] = v.lookup(keys[:, j]) if v is not None else keys[:, j]
        dest = plan.place(rows.file_index, rows.lines, rows.time)
        if written + len(dest) > counted.rows:
            raise InputError("the inputs yielded more rows in the second pass than in the "
                             "first; did a file change while preparing?")
        _scatter(w, weights, dest, rows, ids)
        if kept is not None:
            kept.put(counted.rows, dest, rows)
        written += len(dest)
        since_release += len(dest) * row_bytes
        if since_release > RELEASE_BYTES:
            _release(w.dense, w.ids, w.labels, weights)
            since_release = 0
        progress(written, rows.position)
    if written != counted.rows:
        raise InputError(f"the second pass read {written} rows, the first {counted.rows}; "
                         f"did a file change while preparing?")


def _split_stats(labels: np.ndarray, splits: dict[str, list[int]]) -> dict:
    return {k: {"rows": e - s, "positives": int(np.count_nonzero(labels[s:e]))}
            for k, (s, e) in splits.items()}


def _hashed(keys: np.ndarray, m: int, source: Source, col: dict[str, int]) -> np.ndarray:
    """DLRM's ``max_ind_range``: raw value mod m before counting (fixed-id features exempt)."""
    if m <= 0:
        return keys
    out = keys % np.uint64(m)
    for n in source.fixed_ids:
        out[:, col[n]] = keys[:, col[n]]
    return out


def _scatter(w: DatasetWriter, weights, dest: np.ndarray, rows: Rows, ids: np.ndarray) -> None:
    """Contiguous destinations are a slice write; others a fancy-index write into the memmap."""
    if len(dest) == 0:
        return
    lo = int(dest[0])
    if int(dest[-1]) - lo == len(dest) - 1 and (len(dest) < 2 or (np.diff(dest) == 1).all()):
        w.write(lo, rows.dense, ids, rows.labels)
        if weights is not None:
            weights[lo:lo + len(dest)] = rows.weights
        return
    if rows.dense is not None and w.dense.shape[1]:
        w.dense[dest] = rows.dense
    w.ids[dest] = ids
    w.labels[dest] = rows.labels
    if weights is not None:
        weights[dest] = rows.weights
    w.written += len(dest)


def _release(*arrays) -> None:
    """Written pages of the output memmaps stay in this process's RSS until unmapped; flush
    them and drop them (MADV_DONTNEED keeps the data: it is in the file and page cache), so
    that RSS is the vocabularies plus one block, not the whole output."""
    for a in arrays:
        mm = getattr(a, "_mmap", None)
        if mm is None or not hasattr(mm, "madvise"):
            continue
        a.flush()
        mm.madvise(mmap.MADV_DONTNEED)


def _weight_stats(path: Path, labels, a: int, b: int) -> dict:
    wt = np.load(path, mmap_mode="r")
    tw = float(wt[a:b].sum(dtype=np.float64))
    pw = float((wt[a:b] * labels[a:b]).sum(dtype=np.float64))
    return {"weights": {"file": "weights.npy", "train_weight_sum": tw,
                        "train_weighted_click_rate": pw / tw if tw else None}}


def _preprocessing(cfg: PrepareConfig, source: Source) -> dict:
    d = {"ids": ("contiguous per feature in first-seen order (input order)"
                 if cfg.min_count <= 1 else
                 f"values seen < {cfg.min_count} times (over all rows) share id 0; the others "
                 f"1.. in first-seen order"),
         "max_ind_range": cfg.max_ind_range or None,
         "hashing": ("raw value mod max_ind_range before counting (DLRM)"
                     if cfg.max_ind_range else "none")}
    if source.fixed_ids:
        d["fixed_id_features"] = sorted(source.fixed_ids)
    return d
