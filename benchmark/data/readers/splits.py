"""Split rules: which rows are train, val and test, and where each row goes in the output.

A split is a contiguous row range of the prepared arrays. A plan sees every row in the first
pass (``observe``), fixes the ranges (``finish``), and in the second pass gives each row its
output position (``place``). Plans that assign rows by a rule (day, hash) keep the input order
within each split by a running cursor per split, so they need O(1) memory; only MovieLens'
shuffled or time-sorted splits hold a permutation of all rows (at most 25M rows there).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from benchmark.data.readers.badlines import InputError

SPLITS = ("train", "val", "test")
TRAIN, VAL, TEST = 0, 1, 2


def halve(n: int) -> tuple[int, int]:
    """DLRM's ``np.array_split(day, 2)``: the first half gets the odd row."""
    first = (n + 1) // 2
    return first, n - first


def _ranges(order: list[tuple[int, int]]) -> dict[str, list[int]]:
    """[(split, rows), ...] in output order -> {name: [start, end)}."""
    out, at = {}, 0
    for split, n in order:
        out[SPLITS[split]] = [at, at + n]
        at += n
    return out


class SplitPlan:
    rule = "abstract"

    def observe(self, file_index: int, lines: np.ndarray, time: np.ndarray | None) -> None:
        raise NotImplementedError

    def finish(self) -> dict[str, list[int]]:
        raise NotImplementedError

    def place(self, file_index: int, lines: np.ndarray, time: np.ndarray | None) -> np.ndarray:
        raise NotImplementedError

    def describe(self) -> dict:
        return {"rule": self.rule}


class _Cursors:
    """Output positions for rows labelled train/val/test, in input order within each split."""

    def __init__(self, base: dict[int, int]) -> None:
        self.next = dict(base)

    def place(self, label: np.ndarray) -> np.ndarray:
        dest = np.empty(len(label), dtype=np.int64)
        for split, at in self.next.items():
            idx = np.flatnonzero(label == split)
            dest[idx] = at + np.arange(len(idx))
            self.next[split] = at + len(idx)
        return dest


@dataclass
class DaySplit(SplitPlan):
    """Criteo (DLRM): consecutive days, all but the last are train; the last day is halved,
    first half test, second half val. Output order = input order.

    ``pseudo_days`` > 0 (Kaggle): the rows are cut into that many days of equal size, the first
    ``N % days`` days one row longer (DLRM's rule; for 45,840,617 rows it gives exactly
    [6,548,660]*4 + [6,548,659]*3, and it scales to any smaller file). Otherwise (Terabyte) each
    input file is one day, in the given order.
    """

    pseudo_days: int = 0
    rows_per_file: dict[int, int] = field(default_factory=dict)
    rule = "days"

    def __post_init__(self) -> None:
        self.day_sizes: list[int] = []
        self.at = 0

    def observe(self, file_index, lines, time):
        self.rows_per_file[file_index] = self.rows_per_file.get(file_index, 0) + len(lines)

    def finish(self):
        n = sum(self.rows_per_file.values())
        if self.pseudo_days:
            base, extra = divmod(n, self.pseudo_days)
            self.day_sizes = [base + (d < extra) for d in range(self.pseudo_days)]
        else:
            self.day_sizes = [self.rows_per_file[k] for k in sorted(self.rows_per_file)]
        if len(self.day_sizes) < 2:
            raise InputError("a day split needs at least two days (train days + a test day); "
                             "for one day use --split last-part or --split random")
        test, val = halve(self.day_sizes[-1])
        return _ranges([(TRAIN, n - self.day_sizes[-1]), (TEST, test), (VAL, val)])

    def place(self, file_index, lines, time):
        dest = self.at + np.arange(len(lines), dtype=np.int64)
        self.at += len(lines)
        return dest

    def describe(self):
        return {"rule": "days", "day_sizes": self.day_sizes,
                "pseudo_days": self.pseudo_days or None,
                "train": f"days 0-{len(self.day_sizes) - 2}",
                "last_day": "halved: first half test, second half val (np.array_split)",
                "day_size_rule": ("divmod(rows kept, days); the first rows % days days get "
                                  "one more row (DLRM)" if self.pseudo_days else
                                  "one input file per day, in day-number order")}


@dataclass
class LastDaySplit(SplitPlan):
    """Avazu: rows of the latest day (``time`` = YYMMDD) are halved in input order, first half
    test, second half val; all earlier days train. Output: train, test, val."""

    rule = "last-day"

    def __post_init__(self) -> None:
        self.per_day: dict[int, int] = {}

    def observe(self, file_index, lines, time):
        days, counts = np.unique(time, return_counts=True)
        for d, c in zip(days.tolist(), counts.tolist()):
            self.per_day[d] = self.per_day.get(d, 0) + c

    def finish(self):
        if len(self.per_day) < 2:
            raise InputError(f"last-day split needs at least two days, the input has "
                             f"{sorted(self.per_day)}")
        self.last = max(self.per_day)
        n_last = self.per_day[self.last]
        n = sum(self.per_day.values())
        self.test, val = halve(n_last)
        self.seen_last = 0
        self.cursors = _Cursors({TRAIN: 0, TEST: n - n_last, VAL: n - n_last + self.test})
        return _ranges([(TRAIN, n - n_last), (TEST, self.test), (VAL, val)])

    def place(self, file_index, lines, time):
        last = time == self.last
        rank = self.seen_last + np.cumsum(last) - 1
        self.seen_last += int(last.sum())
        label = np.where(last, np.where(rank < self.test, TEST, VAL), TRAIN)
        return self.cursors.place(label)

    def describe(self):
        return {"rule": "last-day", "rows_per_day": {str(k): v for k, v in
                                                     sorted(self.per_day.items())},
                "last_day": "halved in input order: first half test, second half val"}


@dataclass
class TailSplit(SplitPlan):
    """The input's last rows, in input order: train = the first rows, then test =
    round(N*f_test), then val = round(N*f_val) (DLRM's last-day halving, on one file).
    Output order = input order."""

    fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
    rule = "last-part"

    def __post_init__(self) -> None:
        self.n = 0
        self.at = 0

    def observe(self, file_index, lines, time):
        self.n += len(lines)

    def finish(self):
        n = self.n
        n_val, n_test = round(n * self.fractions[1]), round(n * self.fractions[2])
        return _ranges([(TRAIN, n - n_val - n_test), (TEST, n_test), (VAL, n_val)])

    def place(self, file_index, lines, time):
        dest = self.at + np.arange(len(lines), dtype=np.int64)
        self.at += len(lines)
        return dest

    def describe(self):
        return {"rule": "last-part", "fractions": list(self.fractions),
                "order": "input order: train first, then test, then val (the last rows)"}


def splitmix64(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


@dataclass
class HashSplit(SplitPlan):
    """Random split by a seeded hash of (file, line): streaming, order-preserving within each
    split, and every row from one input line lands in the same split (KDD12's expanded rows).
    Split sizes are binomial around the fractions, not exact. Output: train, val, test."""

    fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
    seed: int = 0
    rule = "random-hash"

    def __post_init__(self) -> None:
        self.counts = np.zeros(3, dtype=np.int64)

    def label(self, file_index: int, lines: np.ndarray) -> np.ndarray:
        key = (lines.astype(np.uint64) | (np.uint64(file_index) << np.uint64(40))) \
            ^ splitmix64(np.array([self.seed], dtype=np.uint64))
        u = (splitmix64(key) >> np.uint64(11)).astype(np.float64) * 2.0 ** -53
        cut = np.cumsum(self.fractions)
        return np.searchsorted(cut[:2], u, side="right").astype(np.int64)

    def observe(self, file_index, lines, time):
        self.counts += np.bincount(self.label(file_index, lines), minlength=3)

    def finish(self):
        n = self.counts.tolist()
        self.cursors = _Cursors({TRAIN: 0, VAL: n[0], TEST: n[0] + n[1]})
        return _ranges([(TRAIN, n[0]), (VAL, n[1]), (TEST, n[2])])

    def place(self, file_index, lines, time):
        return self.cursors.place(self.label(file_index, lines))

    def describe(self):
        return {"rule": "random-hash", "fractions": list(self.fractions), "seed": self.seed,
                "unit": "input line", "sizes": "binomial around the fractions"}


@dataclass
class PermutationSplit(SplitPlan):
    """MovieLens: ``random`` shuffles all rows with the seed, ``time`` sorts them by timestamp
    (stable, so ties keep input order); then the first fraction is train, then val, then test.
    Sizes: val = round(N*f_val), test = round(N*f_test), train = the rest."""

    kind: str = "random"
    fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
    seed: int = 0

    def __post_init__(self) -> None:
        if self.kind not in ("random", "time"):
            raise ValueError(f"split {self.kind!r}: must be random or time")
        self.rule = self.kind
        self.times: list[np.ndarray] = []
        self.n = 0

    def observe(self, file_index, lines, time):
        self.n += len(lines)
        if self.kind == "time":
            self.times.append(np.asarray(time, dtype=np.int64))

    def finish(self):
        n = self.n
        if self.kind == "time":
            order = np.argsort(np.concatenate(self.times) if self.times else
                               np.empty(0, np.int64), kind="stable")
            self.times = []
        else:
            order = np.random.default_rng(self.seed).permutation(n)
        self.dest = np.empty(n, dtype=np.int64)
        self.dest[order] = np.arange(n)
        self.at = 0
        n_val, n_test = round(n * self.fractions[1]), round(n * self.fractions[2])
        return _ranges([(TRAIN, n - n_val - n_test), (VAL, n_val), (TEST, n_test)])

    def place(self, file_index, lines, time):
        dest = self.dest[self.at:self.at + len(lines)]
        self.at += len(lines)
        return dest

    def describe(self):
        d = {"rule": self.kind, "fractions": list(self.fractions),
             "sizes": "val = round(N*f_val), test = round(N*f_test), train = rest"}
        if self.kind == "random":
            d["seed"] = self.seed
        else:
            d["order"] = "rows sorted by timestamp (stable); train earliest, test latest"
        return d
