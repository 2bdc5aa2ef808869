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
from benchmark.data.readers.source import (PrepareConfig, Rows, Source, input_paths,
                                           single_input)
from benchmark.data.readers.splits import DaySplit
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


class CriteoKaggle(_Criteo):
    """``train.txt``: 7 pseudo-days by row count (DaySplit), day 6 halved into test, val."""

    name = "criteo_kaggle"

    def _paths(self) -> list[Path]:
        return single_input(self.cfg, "criteo-kaggle takes one input file (train.txt)")

    def split_plan(self):
        if self.cfg.split not in (None, "days"):
            raise InputError(f"criteo-kaggle: --split {self.cfg.split} is not supported "
                             f"(only days)")
        return DaySplit(pseudo_days=7)


class CriteoTerabyte(_Criteo):
    """``day_N`` files (plain or gzip, any subset): each one day; the last is halved."""

    name = "criteo_terabyte"

    def _paths(self) -> list[Path]:
        found: dict[int, Path] = {}
        for p in input_paths(self.cfg):
            for f in (sorted(p.iterdir()) if p.is_dir() else [p]):
                m = DAY_FILE.match(f.name)
                if m is None:
                    if p.is_dir():
                        continue
                    raise InputError(f"{f}: criteo-terabyte inputs must be named day_N or "
                                     f"day_N.gz")
                d = int(m.group(1))
                if d in found:
                    raise InputError(f"day {d} given twice: {found[d]} and {f}")
                found[d] = f
        if not found:
            raise InputError(f"no day_N files in {self.cfg.inputs}")
        return [found[d] for d in sorted(found)]

    def split_plan(self):
        if self.cfg.split not in (None, "days"):
            raise InputError(f"criteo-terabyte: --split {self.cfg.split} is not supported "
                             f"(only days)")
        return DaySplit()

    def describe(self):
        return {"days": [p.name for p in self._paths()]}

