"""MovieLens as click data: ML-100K (RecBole layout), ML-1M (``::`` layout), ML-20M (CSV).

Label = rating >= 4 (``--positive-rating``). Features: user_id, item_id, then the side
features each layout has (ML-100K: age, gender, occupation, zip_code, release_year; ML-1M:
gender, age, occupation, zip_code; ML-20M: none), then genres. A rating whose user or item
has no side-table row gets the side value "missing" (its own id).

Genres (``--genres``):
- ``multi`` (default): our format has a fixed number of ids per row, so a movie's genre set is
  ``S`` slot features ``genre_1..genre_S`` (``--genre-slots``; default = the most genres any
  movie has, so nothing is cut). All slots share one genre vocabulary, fixed by the item
  table: id 0 = empty slot (padding), ids 1..G = genres in order of first appearance in the
  item table; a movie's genres fill the slots in its listed order. A model that wants a bag of
  genres sums the slots and masks id 0; one that treats slots as separate tables still sees
  every genre. Movies with more than S genres lose the rest (counted in stats).
- ``first``: one ``genre`` feature, the movie's first listed genre (ids in first-seen order).
- ``bag``: one bag (multi-hot) feature ``genres``, a movie's whole genre set over the genre
  vocabulary (ids 0..G-1 in order of first appearance in the item table; no padding id, a
  movie without genres, or ML-20M's "(no genres listed)", has an empty bag); pooling mean.

History (``--history H``, default none): a bag feature ``history`` of the last H items (ids of
the ``item_id`` table, oldest first) the user rated strictly before this row's timestamp, taken
from TRAINING rows only, so no validation or test row is in any row's history (it is built after
the split; a row's own rating is never in it). Pooling mean; the trainer lets it share the
``item_id`` table with the one-hot item feature.

Split: ``random`` (default; seeded shuffle) or ``time`` (sorted by timestamp), 8:1:1.
Ratings are streamed; side tables (at most tens of thousands of lines) are read whole.
"""
from __future__ import annotations

import csv
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from benchmark.data.format import bag_offsets
from benchmark.data.readers import fields
from benchmark.data.readers.bags import bags_by_item, history_bags
from benchmark.data.readers.badlines import BadLineLog, InputError
from benchmark.data.readers.fields import MISSING_KEY
from benchmark.data.readers.source import Rows, Source, input_paths
from benchmark.data.readers.splits import PermutationSplit
from benchmark.data.readers.text import check_header, iter_field_blocks, read_first_line

RECBOLE_INTER = ["user_id:token", "item_id:token", "rating:float", "timestamp:float"]
RECBOLE_USER = ["user_id:token", "age:token", "gender:token", "occupation:token",
                "zip_code:token"]
RECBOLE_ITEM = ["item_id:token", "movie_title:token_seq", "release_year:token",
                "class:token_seq"]
ML20M_RATINGS = ["userId", "movieId", "rating", "timestamp"]
ML20M_MOVIES = ["movieId", "title", "genres"]
ML1M_RATINGS = ["UserID", "", "MovieID", "", "Rating", "", "Timestamp"]   # '::' = ':' + ''
LAYOUTS = ("auto", "recbole", "ml1m", "ml20m")
GENRE_MODES = ("multi", "first", "bag")
NO_GENRES = "(no genres listed)"         # ML-20M's marker for a movie without genres


@dataclass
class Layout:
    """Where one MovieLens release keeps what, and how its lines look."""

    name: str
    ratings: Path
    users: Path | None
    items: Path | None
    sep: bytes
    columns: list[str]
    cols: tuple[int, int, int, int]          # user, item, rating, timestamp columns
    header: bool
    user_features: list[str] = field(default_factory=list)
    item_features: list[str] = field(default_factory=list)

    def side_files(self) -> list[Path]:
        return [p for p in (self.users, self.items) if p is not None and p.is_file()]


ML1M_LINE = re.compile(r"^\d+::\d+::\d+(\.\d*)?::\d+$")
# valid ratings per layout: ML-100K and ML-1M whole stars, ML-20M half stars from 0.5
RATING_RANGE = {"recbole": (1.0, 5.0), "ml1m": (1.0, 5.0), "ml20m": (0.5, 5.0)}


def sniff_layout(path: Path) -> str:
    """A ratings file's layout from its first line, whatever the file is called."""
    first = read_first_line(path)
    if first.split("\t")[:len(RECBOLE_INTER)] == RECBOLE_INTER:
        return "recbole"
    if first.split(",") == ML20M_RATINGS:
        return "ml20m"
    if ML1M_LINE.match(first):
        return "ml1m"
    shown = first if len(first) <= 60 else first[:60] + "..."
    raise InputError(f"{path}: cannot tell the MovieLens layout from its first line {shown!r}: "
                     f"want a RecBole header ({chr(9).join(RECBOLE_INTER[:2])}...), ML-20M's "
                     f"header ({','.join(ML20M_RATINGS)}) or ML-1M lines "
                     f"(UserID::MovieID::Rating::Timestamp); or pass --layout")


def find_layout(paths: list[Path], want: str) -> Layout:
    """A dataset directory or its ratings file -> Layout (``want`` = auto or a layout name).

    A ratings file is recognised by its content, whatever its name; its side tables are looked
    up beside it under the names the release gives them (the format fixes those). In a
    directory the release's file names are what identify the ratings file."""
    if len(paths) != 1:
        raise InputError(f"movielens takes one input (the dataset directory or its ratings "
                         f"file), got {[str(p) for p in paths]}")
    p = paths[0]
    if p.is_file():
        kind, r = (sniff_layout(p) if want == "auto" else want), p
    else:
        inter = sorted(p.glob("*.inter"))
        cands = {"recbole": inter[0] if len(inter) == 1 else None,
                 "ml1m": p / "ratings.dat" if (p / "ratings.dat").is_file() else None,
                 "ml20m": p / "ratings.csv" if (p / "ratings.csv").is_file() else None}
        found = [k for k, v in cands.items() if v is not None]
        if want != "auto":
            if cands.get(want) is None:
                raise InputError(f"{p}: no {want} ratings file (recbole: *.inter, ml1m: "
                                 f"ratings.dat, ml20m: ratings.csv); or pass the ratings file "
                                 f"itself")
            found = [want]
        if len(found) != 1:
            raise InputError(f"{p}: cannot tell the MovieLens layout (found ratings files for "
                             f"{found or 'none'}; a directory is searched for *.inter, "
                             f"ratings.dat or ratings.csv); pass --layout or the ratings file "
                             f"itself")
        kind, r = found[0], cands[found[0]]
    if kind == "recbole":
        return Layout("recbole", r, r.with_suffix(".user"), r.with_suffix(".item"), b"\t",
                      RECBOLE_INTER, (0, 1, 2, 3), True,
                      ["age", "gender", "occupation", "zip_code"], ["release_year"])
    if kind == "ml1m":
        return Layout("ml1m", r, r.parent / "users.dat", r.parent / "movies.dat", b":",
                      ML1M_RATINGS, (0, 2, 4, 6), False,
                      ["gender", "age", "occupation", "zip_code"], [])
    return Layout("ml20m", r, None, r.parent / "movies.csv", b",", ML20M_RATINGS,
                  (0, 1, 2, 3), True, [], [])


@dataclass
class SideTable:
    """Raw id -> codes of its side features (codes = order of first appearance per feature)."""

    ids: np.ndarray                  # uint64 sorted
    codes: np.ndarray                # uint64 [m, k]
    genres: list[list[str]] | None = None   # per sorted id, items only

    @classmethod
    def build(cls, rows: dict[int, list[str]], genres: dict[int, list[str]] | None = None):
        keys = sorted(rows)
        k = len(next(iter(rows.values()))) if rows else 0
        codes = np.zeros((len(keys), k), dtype=np.uint64)
        for j in range(k):
            seen: dict[str, int] = {}
            codes[:, j] = [seen.setdefault(rows[u][j], len(seen)) for u in keys]
        g = [genres[u] for u in keys] if genres is not None else None
        return cls(np.array(keys, dtype=np.uint64), codes, g)

    def find(self, raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(row in this table, found) for raw ids."""
        pos = np.searchsorted(self.ids, raw)
        ok = pos < len(self.ids)
        ok[ok] = self.ids[pos[ok]] == raw[ok]
        return np.where(ok, pos, 0), ok


def _side_lines(path: Path, log: BadLineLog, sep: str, ncols: int, header: list[str] | None,
                encoding: str) -> Iterator[tuple[int, list[str]]]:
    if header is not None:
        check_header(path, header, sep.encode())
    with open(path, encoding=encoding, newline="") as f:
        if sep == ",":
            it = ((r.line_num, row) for r in [csv.reader(f)] for row in r)
        else:
            it = ((i, line.rstrip("\r\n").split(sep)) for i, line in enumerate(f, 1))
        for lineno, parts in it:
            if header is not None and lineno == 1:
                continue
            if len(parts) != ncols:
                log.record_one(path, lineno, "wrong column count",
                               f"{len(parts)} fields, expected {ncols}")
                continue
            if not parts[0].strip().isdigit():
                log.record_one(path, lineno, "non-integer id", repr(parts[0]))
                continue
            yield lineno, parts


def read_users(lay: Layout, log: BadLineLog) -> SideTable | None:
    if lay.users is None or not lay.users.is_file():
        return None
    if lay.name == "recbole":
        it = _side_lines(lay.users, log, "\t", 5, RECBOLE_USER, "utf-8")
    else:
        it = _side_lines(lay.users, log, "::", 5, None, "latin-1")
    rows = {int(p[0]): p[1:] for _, p in it}
    return SideTable.build(rows)


def read_items(lay: Layout, log: BadLineLog) -> SideTable | None:
    if lay.items is None or not lay.items.is_file():
        return None
    rows, genres = {}, {}
    if lay.name == "recbole":
        for _, p in _side_lines(lay.items, log, "\t", 4, RECBOLE_ITEM, "utf-8"):
            rows[int(p[0])], genres[int(p[0])] = [p[2]], p[3].split()
    elif lay.name == "ml1m":
        for _, p in _side_lines(lay.items, log, "::", 3, None, "latin-1"):
            rows[int(p[0])], genres[int(p[0])] = [], p[2].split("|")
    else:
        for _, p in _side_lines(lay.items, log, ",", 3, ML20M_MOVIES, "utf-8"):
            rows[int(p[0])], genres[int(p[0])] = [], p[2].split("|")
    return SideTable.build(rows, genres)


class MovieLens(Source):
    name = "movielens"

    def __init__(self, cfg) -> None:
        super().__init__(cfg)
        self.layout = find_layout(input_paths(cfg), cfg.layout or "auto")
        self.genre_mode = cfg.genres or "multi"
        if self.genre_mode not in GENRE_MODES:
            raise InputError(f"movielens: --genres {self.genre_mode!r} must be one of "
                             f"{GENRE_MODES}")
        self.history = int(cfg.history or 0)
        if self.history < 0:
            raise InputError(f"movielens: --history {self.history} must be >= 0")
        self.threshold = 4.0 if cfg.positive_rating is None else float(cfg.positive_rating)
        self.name = {"recbole": "ml_100k", "ml1m": "ml_1m", "ml20m": "ml_20m"}[self.layout.name]
        self.side_log = BadLineLog(cfg.on_bad_lines)
        self.users = read_users(self.layout, self.side_log)
        self.items = read_items(self.layout, self.side_log)
        self._genre_table()
        self.has_bags = self.history > 0 or (self.genre_mode == "bag" and self.items is not None)
        lay = self.layout
        self.feature_names = (["user_id", "item_id"]
                              + (lay.user_features if self.users is not None else [])
                              + (lay.item_features if self.items is not None else [])
                              + self.genre_features)
        self.dense_names = []
        self.missing = {"user": 0, "item": 0}

    def _genre_table(self) -> None:
        """Genre ids per item row: multi -> [m, S] fixed ids; first -> [m] first-seen codes."""
        self.genre_features: list[str] = []
        self.fixed_ids = {}
        self.truncated = 0
        if self.items is None:
            return
        names: dict[str, int] = {}
        skip = {"", NO_GENRES} if self.genre_mode == "bag" else {""}   # bag: ML-20M's marker
        lists = [[names.setdefault(g, len(names) + 1) for g in gs if g not in skip] for gs in
                 self.items.genres]                                    # is an empty bag
        most = max((len(g) for g in lists), default=0)
        self.genre_vocab = names
        if self.genre_mode != "multi" and self.cfg.genre_slots is not None:
            raise InputError("movielens: --genre-slots applies to --genres multi only")
        if self.genre_mode == "bag":
            self.item_bag_offsets = bag_offsets(np.array([len(g) for g in lists], np.int64))
            self.item_bag_values = np.array([x - 1 for g in lists for x in g], dtype=np.int64)
            return
        if self.genre_mode == "first":
            self.genre_features = ["genre"]
            self.item_genre = np.array([g[0] if g else 0 for g in lists], dtype=np.uint64)
            return
        slots = max(most, 1) if self.cfg.genre_slots is None else self.cfg.genre_slots
        if slots < 1:
            raise InputError(f"movielens: --genre-slots {slots} must be >= 1")
        table = np.zeros((len(lists), slots), dtype=np.uint64)
        for r, g in enumerate(lists):                    # item table: a few thousand rows
            table[r, :min(len(g), slots)] = g[:slots]
        self.truncated = sum(len(g) > slots for g in lists)
        self.item_genre = table
        self.genre_features = [f"genre_{k}" for k in range(1, slots + 1)]
        self.fixed_ids = {n: len(names) + 1 for n in self.genre_features}

    def files(self) -> list[Path]:
        return [self.layout.ratings] + self.layout.side_files()

    def blocks(self, log: BadLineLog, record: bool) -> Iterator[Rows]:
        lay = self.layout
        u, i, r, t = lay.cols
        if record:
            self.missing = {"user": 0, "item": 0}
            log.counts.update(self.side_log.counts)
            log.examples.update(self.side_log.examples)
        for fb, pos in iter_field_blocks(lay.ratings, lay.columns, lay.sep,
                                         self.cfg.block_bytes, header=lay.header):
            if lay.name == "ml1m":                   # '::' splits into a field, '', a field
                fb.flag((fb.ends[:, 1::2] > fb.starts[:, 1::2]).any(1),
                        "bad separator (want '::')")
            ids = fields.unsigned(fb, [u, i], "non-integer id")
            rating = fields.decimal(fb, [r], "bad rating")[:, 0]
            lo, hi = RATING_RANGE[lay.name]
            fb.flag((rating < lo) | (rating > hi), f"rating out of range {lo:g}..{hi:g}", r)
            stamp = fields.decimal(fb, [t], "bad timestamp")[:, 0]
            keep = log.resolve(fb, record)
            lines = fb.lines
            if keep is not None:
                ids, rating, stamp, lines = ids[keep], rating[keep], stamp[keep], lines[keep]
            keys, item_row = self._keys(ids, record)
            aux = None if item_row is None else item_row[:, None]     # for the genre bags
            yield Rows(0, lines, (rating >= self.threshold).astype(np.uint8), keys,
                       time=stamp.astype(np.int64), position=pos, aux=aux)

    def _keys(self, ids: np.ndarray, record: bool) -> tuple[np.ndarray, np.ndarray | None]:
        """The rows' raw keys and, for the genre bags (else None), each row's item side-table
        row (-1: none)."""
        cols = [ids[:, 0], ids[:, 1]]
        item_row = None
        for who, table, col in (("user", self.users, 0), ("item", self.items, 1)):
            if table is None:
                continue
            row, ok = table.find(ids[:, col])
            if record:
                self.missing[who] += int((~ok).sum())
            for j in range(table.codes.shape[1]):
                cols.append(np.where(ok, table.codes[row, j], MISSING_KEY))
            if who == "item" and self.genre_mode == "bag":
                item_row = np.where(ok, row, -1).astype(np.int64)
            elif who == "item":
                g = self.item_genre[row]
                if g.ndim == 1:
                    cols.append(np.where(ok & (g > 0), g, MISSING_KEY))
                else:
                    cols.extend(np.where(ok, g[:, k], 0) for k in range(g.shape[1]))
        return np.stack(cols, axis=1).astype(np.uint64), item_row

    def split_plan(self):
        split = self.cfg.split or "random"
        if split not in ("random", "time"):
            raise InputError(f"movielens: --split {split} is not supported (random or time)")
        return PermutationSplit(split, self.cfg.fractions or (0.8, 0.1, 0.1), self.cfg.seed)

    def describe(self):
        d = {"layout": self.layout.name, "label": f"rating >= {self.threshold:g}",
             "side_tables": {"users": str(self.layout.users.name) if self.users else None,
                             "items": str(self.layout.items.name) if self.items else None},
             "missing_side_value": "its own id (raw key 2**64-1)"}
        if self.items is not None:
            d["genres"] = {"mode": self.genre_mode,
                           "vocabulary": list(self.genre_vocab)}
            if self.genre_mode == "bag":
                d["genres"].update(bag="genres", ids="0..G-1 = vocabulary order", pooling="mean")
            if self.genre_mode == "multi":
                d["genres"].update(
                    slots=len(self.genre_features), padding_id=0,
                    ids="shared by all slots: 0 = empty slot, 1..G = vocabulary order "
                        "(first appearance in the item table)",
                    order="a movie's genres fill slots in listed order; extra ones are cut")
        if self.history:
            d["history"] = {"bag": "history", "length": self.history, "table": "item_id",
                            "rule": "the user's last H items rated strictly before the row, "
                                    "from training rows only (oldest first)", "pooling": "mean"}
        return d

    def make_bags(self, ids, cards, time, aux, splits):
        out = []
        if self.genre_mode == "bag" and self.items is not None:
            v, o = bags_by_item(aux[:, 0], self.item_bag_offsets, self.item_bag_values)
            out.append(({"name": "genres", "table": "genres",
                         "cardinality": max(len(self.genre_vocab), 1), "pooling": "mean"}, v, o))
        if self.history:
            col = {n: j for j, n in enumerate(self.feature_names)}
            v, o = history_bags(np.asarray(ids[:, col["user_id"]]),
                                np.asarray(ids[:, col["item_id"]]), time, splits["train"],
                                self.history)
            out.append(({"name": "history", "table": "item_id",
                         "cardinality": int(cards[col["item_id"]]), "pooling": "mean"}, v, o))
        return out

    def stats(self):
        return {"ratings_without_user_row": self.missing["user"] if self.users else None,
                "ratings_without_item_row": self.missing["item"] if self.items else None,
                "movies_with_genres_cut": self.truncated}

