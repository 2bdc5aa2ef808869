"""Criteo Kaggle (``train.txt``) and Criteo Terabyte (``day_0`` .. ``day_23``, plain or gzip).

Tab-separated, 40 columns: label, I1..I13 (integers, may be empty or negative), C1..C26 (hex,
may be empty). DLRM preprocessing: empty -> 0, negative integers -> 0, dense log(x + 1),
categorical ``int(x, 16)`` (so an empty field is the value 0), optionally mod max_ind_range.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Iterator

import numpy as np

from benchmark.data.readers import fields
from benchmark.data.readers.badlines import BadLineLog, InputError
from benchmark.data.readers.source import PrepareConfig, Rows, Source, input_paths
from benchmark.data.readers.splits import DaySplit, HashSplit, TailSplit
from benchmark.data.readers.text import iter_field_blocks

DENSE = [f"I{i}" for i in range(1, 14)]
SPARSE = [f"C{i}" for i in range(1, 27)]
COLUMNS = ["label"] + DENSE + SPARSE
DENSE_COLS = list(range(1, 14))
SPARSE_COLS = list(range(14, 40))
DAY_FILE = re.compile(r"^day_(\d+)(\.gz)?$")


def parse_block(fb) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(labels, dense float32 log(x+1), raw hex keys) of every line; problems flagged on fb."""
    labels = fields.labels01(fb, 0)
    ints = fields.signed(fb, DENSE_COLS, "non-integer dense", empty=0)
    dense = np.log1p(np.maximum(ints, 0).astype(np.float64)).astype(np.float32)
    keys = fields.hex64(fb, SPARSE_COLS, "non-hex categorical", empty=0)
    return labels, dense, keys


class _Criteo(Source):
    feature_names = SPARSE
    dense_names = DENSE

    def _paths(self) -> list[Path]:
        raise NotImplementedError

    def files(self) -> list[Path]:
        return self._paths()

    def blocks(self, log: BadLineLog, record: bool) -> Iterator[Rows]:
        done = 0
        for k, path in enumerate(self._paths()):
            pos = 0
            for fb, pos in iter_field_blocks(path, COLUMNS, b"\t", self.cfg.block_bytes):
                labels, dense, keys = parse_block(fb)
                keep = log.resolve(fb, record)
                if keep is not None:
                    labels, dense, keys, lines = labels[keep], dense[keep], keys[keep], \
                        fb.lines[keep]
                else:
                    lines = fb.lines
                yield Rows(k, lines, labels, keys, dense=dense, position=done + pos)
            done += path.stat().st_size


def criteo_split(dataset: str, cfg: PrepareConfig, days: DaySplit):
    """days (default, DLRM), random (seeded hash of file and line), or last-part (the input's
    tail, in order: the test then the val fraction; for a single Terabyte day)."""
    split = cfg.split or "days"
    if split == "days":
        if cfg.fractions is not None:
            raise InputError(f"{dataset}: --fractions applies to --split random or last-part, "
                             f"not days (whose sizes the days fix)")
        return days
    if split == "random":
        return HashSplit(cfg.fractions or (0.8, 0.1, 0.1), cfg.seed)
    if split == "last-part":
        return TailSplit(cfg.fractions or (0.8, 0.1, 0.1))
    raise InputError(f"{dataset}: --split {split} is not supported (days, random or last-part)")


class CriteoKaggle(_Criteo):
    """``train.txt`` (or its parts, read in the order given): 7 pseudo-days by row count
    (DaySplit), day 6 halved into test, val."""

    name = "criteo_kaggle"

    def _paths(self) -> list[Path]:
        paths = input_paths(self.cfg)
        for p in paths:
            if not p.is_file():
                raise InputError(f"{p}: criteo-kaggle reads files (train.txt or its parts in "
                                 f"order), not directories")
        if len(set(map(Path.resolve, paths))) != len(paths):
            raise InputError(f"criteo-kaggle: an input is given twice: {[str(p) for p in paths]}")
        return paths

    def split_plan(self):
        return criteo_split("criteo-kaggle", self.cfg, DaySplit(pseudo_days=7))


class CriteoTerabyte(_Criteo):
    """Day files, plain or gzip, any subset: each file is one day. Files given by name are
    read whatever they are called; a directory contributes its ``day_N[.gz]`` files. Named
    ``day_N``, days are ordered by N, else in the order given; the last one is halved."""

    name = "criteo_terabyte"

    def _paths(self) -> list[Path]:
        found: list[tuple[int | None, Path]] = []
        for p in input_paths(self.cfg):
            if p.is_dir():
                days = [f for f in sorted(p.iterdir()) if DAY_FILE.match(f.name)]
                if not days:
                    raise InputError(f"{p}: no day_N or day_N.gz files in this directory (name "
                                     f"the day files on the command line to read them under "
                                     f"other names)")
                found += [(int(DAY_FILE.match(f.name).group(1)), f) for f in days]
            else:
                m = DAY_FILE.match(p.name)
                found.append((int(m.group(1)) if m else None, p))
        numbers = [d for d, _ in found if d is not None]
        dup = sorted({d for d in numbers if numbers.count(d) > 1})
        if dup:
            raise InputError(f"day {dup[0]} given twice: "
                             f"{[str(f) for d, f in found if d == dup[0]]}")
        if len(set(f.resolve() for _, f in found)) != len(found):
            raise InputError(f"criteo-terabyte: an input is given twice: "
                             f"{[str(f) for _, f in found]}")
        if len(numbers) == len(found):          # all day_N: day order
            found.sort(key=lambda x: x[0])
        return [f for _, f in found]

    def split_plan(self):
        return criteo_split("criteo-terabyte", self.cfg, DaySplit())

    def describe(self):
        return {"days": [p.name for p in self._paths()]}
