"""KDD Cup 2012 track 2 (``training.txt``, tab-separated, no header, plain or gzip).

12 columns: Click, Impression (counts), then 10 id fields (decimal). Each line is one
(ad, query, user) context seen ``Impression`` times and clicked ``Click`` times. ``--counts``:

- ``expand`` (default): one binary row per impression: Click rows labelled 1, then
  Impression - Click rows labelled 0. Plain per-impression logloss, as the count data means.
- ``weights``: at most two rows per line, (label 1, weight Click) and (label 0, weight
  Impression - Click), rows of weight 0 dropped; the float32 weights go to ``weights.npy``
  beside the arrays. Weighted logloss over these equals ``expand``'s; the training harness
  ignores the weights for now, so ``click_rate`` is the unweighted train row mean and
  ``stats.weights.train_weighted_click_rate`` the true one.
- ``clicked``: one row per line, label = Click > 0 (the convention of several CTR papers).

Split: a seeded hash of the input line, default 8:1:1; all rows of a line share a split.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np

from benchmark.data.readers import fields
from benchmark.data.readers.badlines import BadLineLog, InputError
from benchmark.data.readers.source import Rows, Source, single_input
from benchmark.data.readers.splits import HashSplit
from benchmark.data.readers.text import iter_field_blocks

FEATURES = ["DisplayURL", "AdID", "AdvertiserID", "Depth", "Position", "QueryID", "KeywordID",
            "TitleID", "DescriptionID", "UserID"]
COLUMNS = ["Click", "Impression"] + FEATURES
FEATURE_COLS = list(range(2, 12))
COUNT_MODES = ("expand", "weights", "clicked")
BAD_COUNTS = "bad click/impression counts (want 0 <= Click <= Impression, Impression >= 1)"
MAX_IMPRESSIONS = 1 << 24             # per line; more is a corrupt line, not 16M real rows


def expand(clicks: np.ndarray, imps: np.ndarray, mode: str):
    """(source line index, label, weight or None) of every output row."""
    n = len(clicks)
    if mode == "clicked":
        return np.arange(n), (clicks > 0).astype(np.uint8), None
    if mode == "expand":
        line = np.repeat(np.arange(n), imps)
        rank = np.arange(len(line)) - np.repeat(np.cumsum(imps) - imps, imps)
        return line, (rank < clicks[line]).astype(np.uint8), None
    pair = np.stack([clicks, imps - clicks], axis=1)          # [n, 2]: weight of label 1, 0
    keep = (pair > 0).ravel()
    line = np.repeat(np.arange(n), 2)[keep]
    label = np.tile(np.array([1, 0], dtype=np.uint8), n)[keep]
    return line, label, pair.ravel()[keep].astype(np.float32)


class KDD12(Source):
    name = "kdd12"
    feature_names = FEATURES
    dense_names: list[str] = []

    def __init__(self, cfg) -> None:
        super().__init__(cfg)
        self.mode = cfg.counts or "expand"
        if self.mode not in COUNT_MODES:
            raise InputError(f"kdd12: --counts {self.mode!r} must be one of {COUNT_MODES}")
        self.has_weights = self.mode == "weights"
        self.lines_read = 0

    def files(self) -> list[Path]:
        return single_input(self.cfg, "kdd12 takes one input file (training.txt)")

    def blocks(self, log: BadLineLog, record: bool) -> Iterator[Rows]:
        path = self.files()[0]
        self.lines_read = 0
        for fb, pos in iter_field_blocks(path, COLUMNS, b"\t", self.cfg.block_bytes):
            counts = fields.unsigned(fb, [0, 1], BAD_COUNTS)
            clicks, imps = counts[:, 0].astype(np.int64), counts[:, 1].astype(np.int64)
            fb.flag((counts[:, 1] < 1) | (counts[:, 1] > MAX_IMPRESSIONS) |
                    (counts[:, 0] > counts[:, 1]), BAD_COUNTS)
            keys = fields.unsigned(fb, FEATURE_COLS, "non-integer id")
            keep = log.resolve(fb, record)
            lines = fb.lines
            if keep is not None:
                clicks, imps, keys, lines = clicks[keep], imps[keep], keys[keep], lines[keep]
            self.lines_read += len(lines)
            src, labels, weights = expand(clicks, imps, self.mode)
            yield Rows(0, lines[src], labels, keys[src], weights=weights, position=pos)

    def split_plan(self):
        split = self.cfg.split or "random"
        if split != "random":
            raise InputError(f"kdd12: --split {split} is not supported (random)")
        return HashSplit(self.cfg.fractions or (0.8, 0.1, 0.1), self.cfg.seed)

    def describe(self):
        return {"counts": self.mode,
                "rows": {"expand": "one binary row per impression (clicks first)",
                         "weights": "rows (1, Click) and (0, Impression-Click), weight-0 rows "
                                    "dropped; weights in weights.npy (the harness ignores "
                                    "them for now)",
                         "clicked": "one row per line, label = Click > 0"}[self.mode]}

    def stats(self):
        return {"input_lines": self.lines_read}
