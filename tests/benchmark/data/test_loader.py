"""BatchLoader: each row once per epoch, deterministic order, exact resume, max_rows."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from benchmark.data.format import DatasetError, DatasetWriter, Manifest
from benchmark.data.loader import Batch, BatchLoader

N, TRAIN = 10_000, 7_001
SMALL = dict(block_rows=97, window_blocks=3)     # many windows, batches across window edges


@pytest.fixture(scope="module")
def ds(tmp_path_factory):
    """Row r has ids[r, 0] = r and dense[r, 0] = r, so every served row is identifiable."""
    out = tmp_path_factory.mktemp("loader") / "rows"
    r = np.arange(N)
    with DatasetWriter(out, N, 2, 2) as w:
        w.write(0, np.stack([r, -r], 1).astype(np.float32),
                np.stack([r, r % 7], 1).astype(np.int32), (r % 3 == 0).astype(np.uint8))
        return w.close(Manifest(
            name="rows", num_rows=N, feature_names=["row", "mod7"], cardinalities=[N, 7],
            dense_names=["r", "neg"], splits={"train": [0, TRAIN], "val": [TRAIN, 8_500],
                                              "test": [8_500, N]},
            click_rate=1 / 3, fingerprint="test"))


def _rows(batches) -> np.ndarray:
    return np.concatenate([b.ids[:, 0].numpy() for b in batches]) if batches else np.zeros(0)


@pytest.mark.parametrize("shuffle", [True, False])
@pytest.mark.parametrize("bsz", [64, 1000, 7_001, 9_000])
def test_every_row_once_per_epoch(ds, shuffle, bsz):
    ld = BatchLoader(ds, "train", bsz, shuffle=shuffle, seed=1, **SMALL)
    for epoch in range(2):
        batches = list(ld)
        assert len(batches) == len(ld) == -(-TRAIN // bsz)
        rows = _rows(batches)
        assert np.array_equal(np.sort(rows), np.arange(TRAIN))
        assert all(len(b.labels) == bsz for b in batches[:-1])
        assert shuffle != np.array_equal(rows, np.arange(TRAIN))
        assert ld.epoch == epoch + 1 and ld.position == 0


def test_batch_contents_types_and_drop_last(ds):
    ld = BatchLoader(ds, "val", 100, shuffle=True, drop_last=True, **SMALL)
    batches = list(ld)
    assert len(batches) == len(ld) == 1499 // 100
    b = batches[0]
    assert isinstance(b, Batch)
    assert b.dense.dtype == torch.float32 and b.dense.shape == (100, 2)
    assert b.ids.dtype == torch.int64 and b.ids.shape == (100, 2)
    assert b.labels.dtype == torch.float32 and b.labels.shape == (100,)
    rows = b.ids[:, 0]
    assert torch.equal(b.dense[:, 0], rows.float()) and torch.equal(b.ids[:, 1], rows % 7)
    assert torch.equal(b.labels, (rows % 3 == 0).float())
    served = _rows(batches)
    assert len(served) == 1400 and len(np.unique(served)) == 1400
    assert served.min() >= TRAIN and served.max() < 8_500


def test_order_depends_only_on_seed_and_epoch(ds):
    def order(seed, epoch):
        ld = BatchLoader(ds, "train", 512, shuffle=True, seed=seed, **SMALL)
        ld.set_epoch(epoch)
        return _rows(list(ld))
    assert np.array_equal(order(0, 0), order(0, 0))
    assert np.array_equal(order(0, 3), order(0, 3))
    assert not np.array_equal(order(0, 0), order(0, 1))
    assert not np.array_equal(order(0, 0), order(1, 0))
    ld = BatchLoader(ds, "train", 512, shuffle=True, seed=0, **SMALL)
    list(ld)
    assert np.array_equal(_rows(list(ld)), order(0, 1))      # epochs advance by themselves


def test_shuffle_mixes_across_the_split(ds):
    """The first batch draws from several blocks spread over the split, not one region."""
    first = _rows([next(iter(BatchLoader(ds, "train", 256, shuffle=True, **SMALL)))])
    assert len(np.unique(first // 97)) >= 3
    assert np.ptp(first) > TRAIN // 10


def _trainer_epochs(loader, epochs, got, stop_at=None):
    """The harness's loop: set_epoch, use each batch, maybe stop right after one."""
    for epoch in epochs:
        loader.set_epoch(epoch)
        for b in loader:
            got.append(b)
            if len(got) == stop_at:
                return loader.state_dict()


@pytest.mark.parametrize("stop_at", [1, 5, 14, 15, 16])      # 15 batches per epoch
def test_resume_continues_with_the_same_batches(ds, stop_at):
    kw = dict(batch_size=500, shuffle=True, seed=4, **SMALL)
    want: list = []
    _trainer_epochs(BatchLoader(ds, "train", **kw), (2, 3), want)
    got: list = []
    state = _trainer_epochs(BatchLoader(ds, "train", **kw), (2, 3), got, stop_at)
    resumed = BatchLoader(ds, "train", **kw)
    resumed.load_state_dict(state)
    epoch = 2 if stop_at <= 15 else 3               # the harness's own count (not yet bumped)
    _trainer_epochs(resumed, range(epoch, 4), got)
    assert len(got) == len(want) == 30
    for g, w in zip(got, want):
        assert torch.equal(g.ids, w.ids) and torch.equal(g.dense, w.dense)


def test_state_records_position_of_handed_out_batches(ds):
    ld = BatchLoader(ds, "test", 100, shuffle=False, **SMALL)
    it = iter(ld)
    next(it), next(it)
    assert ld.state_dict()["position"] == 2 and ld.state_dict()["epoch"] == 0
    ld.set_epoch(1)
    assert ld.position == 0
    bad = dict(ld.state_dict(), batch_size=99)
    with pytest.raises(ValueError, match="batch_size=99"):
        BatchLoader(ds, "test", 100, shuffle=False, **SMALL).load_state_dict(bad)


def test_max_rows_serves_a_prefix_of_the_split(ds):
    ld = BatchLoader(ds, "val", 64, shuffle=True, max_rows=300, **SMALL)
    rows = _rows(list(ld))
    assert len(ld) == 5 and np.array_equal(np.sort(rows), np.arange(TRAIN, TRAIN + 300))
    assert len(BatchLoader(ds, "val", 64, shuffle=False, max_rows=10**9)) == -(-1499 // 64)
    assert list(BatchLoader(ds, "val", 64, shuffle=True, max_rows=0)) == []


def test_bad_arguments(ds):
    with pytest.raises(DatasetError, match="no split 'dev'"):
        BatchLoader(ds, "dev", 10, shuffle=False)
    with pytest.raises(ValueError, match="batch_size"):
        BatchLoader(ds, "train", 0, shuffle=False)
