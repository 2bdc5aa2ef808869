"""What a reader is: its options (``PrepareConfig``), its parsed blocks (``Rows``) and the
``Source`` interface that the two-pass pipeline drives."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from benchmark.data.readers.badlines import BadLineLog, InputError
from benchmark.data.readers.splits import SplitPlan


@dataclass
class PrepareConfig:
    """What ``fiited-data prepare`` was asked to do. Dataset-specific options are None where
    the dataset does not use them (``readers.build_source`` rejects misplaced ones)."""

    dataset: str
    inputs: list[str]
    out: str
    max_ind_range: int = 0               # > 0: raw value mod this before counting (DLRM)
    min_count: int = 0                   # > 1: values seen fewer times share id 0
    on_bad_lines: str = "error"          # error | skip
    split: str | None = None             # days | last-day | random | time (dataset default)
    fractions: tuple[float, float, float] | None = None   # train, val, test for random/time
    seed: int = 0
    counts: str | None = None            # kdd12: expand | weights
    genres: str | None = None            # movielens: multi | first | bag
    history: int | None = None           # movielens: a bag of the user's last H train items
    genre_slots: int | None = None       # movielens multi: slots (default: most genres a movie has)
    positive_rating: float | None = None  # movielens: label = rating >= this (default 4)
    layout: str | None = None            # movielens: auto | recbole | ml1m | ml20m
    id_dtype: str = "auto"               # auto | int32 | int64
    block_bytes: int = 32 << 20          # bytes read per block (memory vs overhead)
    overwrite: bool = False

    def __post_init__(self) -> None:
        if self.max_ind_range < 0:
            raise ValueError(f"max_ind_range={self.max_ind_range}: must be >= 0 (0 = off)")
        if self.min_count < 0:
            raise ValueError(f"min_count={self.min_count}: must be >= 0 (0 = off)")
        if self.id_dtype not in ("auto", "int32", "int64"):
            raise ValueError(f"id_dtype={self.id_dtype!r}: must be auto, int32 or int64")
        if self.block_bytes < 1024:
            raise ValueError(f"block_bytes={self.block_bytes}: must be at least 1024")
        if self.fractions is not None:
            f = tuple(float(x) for x in self.fractions)
            if len(f) != 3 or min(f) < 0 or abs(sum(f) - 1.0) > 1e-9:
                raise ValueError(f"fractions={self.fractions}: need three non-negative numbers "
                                 f"(train, val, test) that sum to 1")
            self.fractions = f
        BadLineLog(self.on_bad_lines)           # validates the mode

    def output_options(self) -> dict:
        """Options that change the prepared arrays (the fingerprint's part)."""
        d = asdict(self)
        for k in ("inputs", "out", "block_bytes", "overwrite"):
            d.pop(k)
        if d["history"] is None:       # options added later stay out of older fingerprints
            d.pop("history")
        return d


@dataclass
class Rows:
    """One parsed block with bad lines resolved: what the pipeline counts and writes."""

    file_index: int
    lines: np.ndarray                  # int64 [n] input line of each row
    labels: np.ndarray                 # uint8 [n]
    keys: np.ndarray                   # uint64 [n, F] raw categorical values
    dense: np.ndarray | None = None    # float32 [n, D]
    weights: np.ndarray | None = None  # float32 [n] (KDD12 weights mode)
    time: np.ndarray | None = None     # int64 [n] what a day/time split orders by
    aux: np.ndarray | None = None      # int64 [n, k] per-row facts a reader's bags are built from
    position: int = 0                  # input bytes consumed so far, over all files


class Source:
    """A dataset reader: its features, inputs, parsed blocks and split rule."""

    name: str = ""
    feature_names: list[str] = []
    dense_names: list[str] = []
    has_weights = False
    # feature -> cardinality for features whose ids the reader fixes itself (genre slots)
    fixed_ids: dict[str, int] = {}

    def __init__(self, cfg: PrepareConfig) -> None:
        self.cfg = cfg

    def files(self) -> list[Path]:
        """Every file read (fingerprinted and checked for changes)."""
        raise NotImplementedError

    def blocks(self, log: BadLineLog, record: bool) -> Iterator[Rows]:
        raise NotImplementedError

    def split_plan(self) -> SplitPlan:
        raise NotImplementedError

    def describe(self) -> dict:
        """Reader-specific facts for manifest.source."""
        return {}

    # bag (multi-hot) features: a reader that has them sets ``has_bags`` and builds them once
    # every row is in place (its ``Rows.time`` and ``Rows.aux`` are kept per output row)
    has_bags = False

    def make_bags(self, ids: np.ndarray, cards: list[int], time: np.ndarray | None,
                  aux: np.ndarray | None, splits: dict[str, list[int]]
                  ) -> list[tuple[dict, np.ndarray, np.ndarray]]:
        """[(manifest bag entry, values, offsets[num_rows + 1])] over the output rows."""
        return []

    def stats(self) -> dict:
        """Reader-specific counts for manifest.stats (after pass 1)."""
        return {}


def input_paths(cfg: PrepareConfig) -> list[Path]:
    paths = [Path(p) for p in cfg.inputs]
    if not paths:
        raise InputError("no --input given")
    for p in paths:
        if not p.exists():
            raise InputError(f"{p}: input does not exist")
    return paths


def single_input(cfg: PrepareConfig, what: str) -> list[Path]:
    """The one input file of a format that takes exactly one (``what`` names it in errors)."""
    paths = input_paths(cfg)
    if len(paths) != 1 or not paths[0].is_file():
        raise InputError(f"{what}, got {[str(p) for p in paths]}")
    return paths
