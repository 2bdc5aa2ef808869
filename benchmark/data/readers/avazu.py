"""Avazu (``train``, CSV with a header; plain or gzip).

24 columns: id, click, hour (YYMMDDHH), then 21 categorical fields. The categorical values are
hex-digit tokens (site_id '1fbe01fe', C1 '1005', C20 '-1'); each becomes an exact key (length,
sign and value), so no two distinct strings share an id (letter case aside). ``id`` is ignored.
Split ``last-day`` (default, Hetu): the latest day by ``hour`` halved, first half test, second
half val; ``random``: a seeded hash split, default 7:1:2 (BARS Avazu_x1).
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np

from benchmark.data.readers import fields
from benchmark.data.readers.badlines import BadLineLog, InputError
from benchmark.data.readers.source import Rows, Source, single_input
from benchmark.data.readers.splits import HashSplit, LastDaySplit
from benchmark.data.readers.text import iter_field_blocks

FEATURES = ["C1", "banner_pos", "site_id", "site_domain", "site_category", "app_id",
            "app_domain", "app_category", "device_id", "device_ip", "device_model",
            "device_type", "device_conn_type"] + [f"C{i}" for i in range(14, 22)]
COLUMNS = ["id", "click", "hour"] + FEATURES
FEATURE_COLS = list(range(3, 24))
RANDOM_FRACTIONS = (0.7, 0.1, 0.2)


class Avazu(Source):
    name = "avazu"
    feature_names = FEATURES
    dense_names: list[str] = []

    def files(self) -> list[Path]:
        return single_input(self.cfg, "avazu takes one input file (train)")

    def blocks(self, log: BadLineLog, record: bool) -> Iterator[Rows]:
        path = self.files()[0]
        for fb, pos in iter_field_blocks(path, COLUMNS, b",", self.cfg.block_bytes,
                                         header=True):
            labels = fields.labels01(fb, 1)
            hour = fields.unsigned(fb, [2], "bad hour (want YYMMDDHH)")[:, 0]
            fb.flag((hour % 100 > 23) | (fb.ends[:, 2] - fb.starts[:, 2] != 8),
                    "bad hour (want YYMMDDHH)", 2)
            keys = fields.token(fb, FEATURE_COLS, "non-hex categorical")
            keep = log.resolve(fb, record)
            lines = fb.lines
            if keep is not None:
                labels, hour, keys, lines = labels[keep], hour[keep], keys[keep], lines[keep]
            yield Rows(0, lines, labels, keys, time=(hour // 100).astype(np.int64),
                       position=pos)

    def split_plan(self):
        split = self.cfg.split or "last-day"
        if split == "last-day":
            return LastDaySplit()
        if split == "random":
            return HashSplit(self.cfg.fractions or RANDOM_FRACTIONS, self.cfg.seed)
        raise InputError(f"avazu: --split {split} is not supported (last-day or random)")

    def describe(self):
        return {"categorical_keys": "exact token: (length << 60) | (minus << 59) | "
                                    "int(hex digits, 16)",
                "ignored_columns": ["id"]}
