"""Bag (multi-hot) features built from the prepared rows: a side table's lists per row, and a
user's recent history. Vectorised (sorts, binary searches, repeats); no loop over rows."""
from __future__ import annotations

import numpy as np

from benchmark.data.format import bag_offsets, concat_ranges


def bags_by_item(item_row: np.ndarray, item_offsets: np.ndarray, item_values: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Per output row the bag of its item's side-table row (-1: empty bag)."""
    ok = item_row >= 0
    r = np.where(ok, item_row, 0)
    lens = np.where(ok, item_offsets[r + 1] - item_offsets[r], 0)
    return item_values[concat_ranges(item_offsets[r], lens)].astype(np.int32), bag_offsets(lens)


def history_bags(users: np.ndarray, items: np.ndarray, time: np.ndarray, train: list[int],
                 h: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row: the last ``h`` items its user rated strictly earlier, among rows in ``train``
    (a [start, end) range) only. One sort of the train rows by (user, time), one binary
    search per row."""
    t_rank = np.unique(time, return_inverse=True)[1].astype(np.int64).reshape(-1)
    span = int(t_rank.max()) + 1 if len(t_rank) else 1
    key = users.astype(np.int64) * span + t_rank
    a, b = train
    order = np.argsort(key[a:b], kind="stable")
    train_key, train_items = key[a:b][order], items[a:b][order]
    end = np.searchsorted(train_key, key, side="left")             # strictly earlier events
    first = np.searchsorted(train_key, users.astype(np.int64) * span, side="left")
    lens = np.minimum(end - first, h)
    return train_items[concat_ranges(end - lens, lens)].astype(np.int32), bag_offsets(lens)
