"""Mini-batches of one split of a prepared dataset, cheap to shuffle on memmaps, resumable.

Shuffle scheme (why: a full random permutation of a memmapped split means random page reads;
this reads only contiguous runs yet mixes well):
1. the split's rows [start, end) (cut to ``max_rows``, a prefix) are cut into blocks of
   ``block_rows`` consecutive rows;
2. each epoch the block order is permuted with ``default_rng([seed, epoch, 0])``;
3. consecutive permuted blocks are grouped into windows of ``window_blocks`` blocks; a window is
   read (contiguous slices) and its rows permuted with ``default_rng([seed, epoch, 1, w])``;
4. the epoch's stream is the windows' permuted rows one after another; batch k is stream rows
   [k*B, (k+1)*B), so batches run across window edges and only the epoch's last batch is short
   (or dropped with ``drop_last``).
Without shuffle the stream is the split in row order. Every row is served exactly once per
epoch and the order depends only on (seed, epoch), so resuming needs only (epoch, position):
``position`` counts the batches handed out in the current epoch (a batch counts as soon as it
is yielded: stop after using a batch, not between fetching and using it). An epoch that runs
to its end moves the loader to (epoch + 1, position 0); a loader saved after the last batch but
before the loop ended (position == len) finishes that epoch on its next iteration, yielding
nothing. Bag (multi-hot) features, when the dataset has them, come as ``Batch.bags``, a
``fiited.jagged.Jagged`` over the batch's rows (gathered by row index with numpy, no loop over
rows); ``None`` otherwise. Ids (and bag ids) outside their table are a ``DatasetError`` naming
the file and row; each block is checked once, when a loader first reads it. ``set_epoch(e)``
starts epoch e from its beginning unless the loader is already in epoch e (then it keeps the
position, so a resumed trainer calls it harmlessly). One iteration at a time per loader.
"""
from __future__ import annotations

import math
from typing import Any, Iterator, NamedTuple, NoReturn

import numpy as np
import torch

from benchmark.data.format import (DatasetError, PreparedDataset, bag_files, bag_offsets,
                                  concat_ranges)
from fiited.jagged import Jagged


class Batch(NamedTuple):
    dense: torch.Tensor   # float32 [B, num_dense]
    ids: torch.Tensor     # int64 [B, F]
    labels: torch.Tensor  # float32 [B]
    bags: Jagged | None = None   # the dataset's bag features over these rows, or None


_IDENTITY = ("split", "rows", "batch_size", "shuffle", "seed", "drop_last", "block_rows",
             "window_blocks")


class BatchLoader:
    def __init__(self, dataset: PreparedDataset, split: str, batch_size: int, shuffle: bool,
                 seed: int = 0, drop_last: bool = False, max_rows: int | None = None,
                 block_rows: int = 16_384, window_blocks: int = 16) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if max_rows is not None and max_rows < 0:
            raise ValueError(f"max_rows must be >= 0 or None, got {max_rows}")
        if block_rows < 1 or window_blocks < 1:
            raise ValueError(f"block_rows and window_blocks must be >= 1, got "
                             f"{block_rows}, {window_blocks}")
        start, end = dataset.split(split)
        if max_rows is not None:
            end = min(end, start + max_rows)
        self.dataset, self.split = dataset, split
        self.start, self.rows = start, end - start
        self.batch_size, self.shuffle, self.seed = int(batch_size), bool(shuffle), int(seed)
        self.drop_last, self.block_rows, self.window_blocks = drop_last, block_rows, window_blocks
        self.epoch = 0
        self.position = 0
        self._cards = np.asarray(dataset.manifest.cardinalities, dtype=np.int64)
        self._bags = [(b["name"], int(b["cardinality"])) for b in dataset.manifest.bags]
        self._checked = np.zeros(math.ceil(self.rows / block_rows), dtype=bool)   # blocks checked

    def __len__(self) -> int:
        if self.drop_last:
            return self.rows // self.batch_size
        return math.ceil(self.rows / self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self.epoch, self.position = int(epoch), 0

    def state_dict(self) -> dict[str, Any]:
        state = {k: getattr(self, k) for k in _IDENTITY}
        state.update(epoch=self.epoch, position=self.position)
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for k in _IDENTITY:
            if state.get(k) != getattr(self, k):
                raise ValueError(f"loader state for split {self.split!r} was saved with "
                                 f"{k}={state.get(k)!r}, this loader has {getattr(self, k)!r}")
        position = int(state["position"])
        if not 0 <= position <= len(self):
            raise ValueError(f"loader state position {position} outside 0..{len(self)}")
        self.epoch, self.position = int(state["epoch"]), position

    # ---- the epoch's row stream --------------------------------------------------------------
    def _windows(self, epoch: int) -> list[np.ndarray]:
        nblocks = math.ceil(self.rows / self.block_rows)
        order = np.arange(nblocks)
        if self.shuffle:
            order = np.random.default_rng([self.seed, epoch, 0]).permutation(nblocks)
        return [order[i:i + self.window_blocks] for i in range(0, nblocks, self.window_blocks)]

    def _block_len(self, b: int) -> int:
        return min(self.rows, (b + 1) * self.block_rows) - b * self.block_rows

    def _read_window(self, epoch: int, w: int, blocks: np.ndarray) -> tuple[np.ndarray, ...]:
        ds = self.dataset
        spans = [(self.start + b * self.block_rows,
                  self.start + b * self.block_rows + self._block_len(b)) for b in blocks]
        arrays = [np.concatenate([arr[a:e] for a, e in spans])
                  for arr in (ds.dense, ds.ids, ds.labels)]
        if self._bags:             # global row numbers, to gather the bags batch by batch
            arrays.append(np.concatenate([np.arange(a, e, dtype=np.int64) for a, e in spans]))
        at = 0
        for b, (a, e) in zip(blocks, spans):
            if not self._checked[b]:
                self._check_block(arrays[1][at:at + e - a], a, e)
                self._checked[b] = True
            at += e - a
        if self.shuffle:
            perm = np.random.default_rng([self.seed, epoch, 1, w]).permutation(len(arrays[2]))
            arrays = [a[perm] for a in arrays]
        return tuple(arrays)

    def _check_block(self, ids: np.ndarray, a: int, e: int) -> None:
        """Ids outside a table's 0..cardinality-1 are a broken dataset: name the file, row and
        feature. Each block once per loader (a min/max over its ids, already read, and over its
        bags' values, one contiguous slice each), not again every epoch."""
        m = self.dataset.manifest
        if not ((ids.min(axis=0) >= 0) & (ids.max(axis=0) < self._cards)).all():
            r, f = (int(x) for x in np.argwhere((ids < 0) | (ids >= self._cards))[0])
            self._out_of_range("ids.npy", a + r, f"feature {m.feature_names[f]!r}",
                               int(ids[r, f]), int(self._cards[f]))
        for name, card in self._bags:
            values, offs = self.dataset.bags[name]
            lo = int(offs[a])
            got = values[lo:int(offs[e])]
            if len(got) and (got.min() < 0 or got.max() >= card):
                k = int(np.flatnonzero((got < 0) | (got >= card))[0])
                row = a + int(np.searchsorted(offs[a:e + 1], lo + k, side="right")) - 1
                self._out_of_range(bag_files(name)[0], row, f"bag feature {name!r}",
                                   int(got[k]), card)

    def _out_of_range(self, file: str, row: int, what: str, value: int, card: int) -> NoReturn:
        p = self.dataset.path
        raise DatasetError(f"{p / file}: row {row}, {what}: id {value} is out of range "
                           f"0..{card - 1} (the cardinality in {p / 'manifest.json'}); prepare "
                           f"the dataset again")

    def __iter__(self) -> Iterator[Batch]:
        if len(self) == 0:
            return
        if self.position >= len(self):       # saved right after the epoch's last batch:
            self.epoch, self.position = self.epoch + 1, 0    # that epoch is done
            return
        epoch, bsz, nbatches = self.epoch, self.batch_size, len(self)
        offset, stop = self.position * bsz, min(self.rows, nbatches * bsz)
        pending: list[tuple[np.ndarray, ...]] = []
        have = 0
        ws = 0
        for w, blocks in enumerate(self._windows(epoch)):
            we = ws + sum(self._block_len(b) for b in blocks)
            if we <= offset:
                ws = we
                continue
            if ws >= stop:
                break
            data = self._read_window(epoch, w, blocks)
            i, hi = max(offset, ws) - ws, min(stop, we) - ws
            while i < hi:
                take = min(bsz - have, hi - i)
                pending.append(tuple(a[i:i + take] for a in data))
                have += take
                i += take
                if have == bsz or (i == hi and we >= stop):
                    self.position += 1
                    yield self._to_batch(pending)
                    pending, have = [], 0
            ws = we
        if self.position >= nbatches:
            self.epoch, self.position = epoch + 1, 0

    def _to_batch(self, pieces: list[tuple[np.ndarray, ...]]) -> Batch:
        if len(pieces) == 1:
            arrays = pieces[0]
        else:
            arrays = tuple(np.concatenate(p) for p in zip(*pieces))
        dense, ids, labels = arrays[:3]
        bags = self._gather_bags(arrays[3]) if self._bags else None
        return Batch(torch.from_numpy(np.ascontiguousarray(dense, dtype=np.float32)),
                     torch.from_numpy(ids.astype(np.int64)),
                     torch.from_numpy(labels.astype(np.float32)), bags)

    def _gather_bags(self, rows: np.ndarray) -> Jagged:
        """The bags of ``rows`` (global row numbers) as one Jagged, bag order b*Fm + f."""
        b, fm = len(rows), len(self._bags)
        starts = np.empty((b, fm), dtype=np.int64)
        lens = np.empty((b, fm), dtype=np.int64)
        for f, (name, _) in enumerate(self._bags):
            offs = self.dataset.bags[name][1]
            starts[:, f] = offs[rows]
            lens[:, f] = offs[rows + 1] - starts[:, f]
        out_off = bag_offsets(lens.reshape(-1))
        values = np.empty(int(out_off[-1]), dtype=np.int64)
        dst_start = out_off[:-1].reshape(b, fm)
        for f, (name, _) in enumerate(self._bags):      # ids checked when their block was read
            got = self.dataset.bags[name][0][concat_ranges(starts[:, f], lens[:, f])]
            values[concat_ranges(dst_start[:, f], lens[:, f])] = got
        return Jagged(torch.from_numpy(values), torch.from_numpy(out_off),
                      tuple(n for n, _ in self._bags))
