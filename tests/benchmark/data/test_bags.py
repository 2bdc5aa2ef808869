"""Bag (multi-hot) features in the prepared format and the loader: the right bag per row after
shuffling across windows, old manifests unchanged, broken bag files refused."""
from __future__ import annotations

import json

import numpy as np
import pytest

from benchmark.data.format import DatasetError, DatasetWriter, Manifest, open_dataset
from benchmark.data.loader import BatchLoader

N = 3_000
BAGS = [{"name": "hist", "table": "items", "cardinality": 50, "pooling": "mean"},
        {"name": "tags", "table": "tags", "cardinality": 9, "pooling": "sum"}]


def _bag_of(r: int, f: int) -> list[int]:
    """Row r's bag: hist has r % 5 ids (0 = empty), tags r % 3; ids derived from r."""
    if f == 0:
        return [(r + k) % 50 for k in range(r % 5)]
    return [(r * 7 + k) % 9 for k in range(r % 3)]


def _manifest(bags) -> Manifest:
    return Manifest(name="bags", num_rows=N, feature_names=["row"], cardinalities=[N],
                    dense_names=[], splits={"train": [0, 2_000], "val": [2_000, N]},
                    click_rate=0.5, fingerprint="t", bags=bags)


def _write(out, bags=BAGS, corrupt=None):
    r = np.arange(N)
    with DatasetWriter(out, N, 1, 0) as w:
        w.write(0, None, r[:, None].astype(np.int32), (r % 2).astype(np.uint8))
        for f, b in enumerate(bags):
            lists = [_bag_of(i, f) for i in range(N)]          # test data only
            vals = np.array([v for L in lists for v in L], dtype=np.int32)
            offs = np.concatenate([[0], np.cumsum([len(L) for L in lists])])
            if corrupt == b["name"]:          # row 1999 (train) has one tag
                vals[offs[1999]] = b["cardinality"]
            w.add_bag(b["name"], vals, offs)
        return w.close(_manifest(bags))


@pytest.fixture(scope="module")
def ds(tmp_path_factory):
    return _write(tmp_path_factory.mktemp("bags") / "d")


@pytest.mark.parametrize("shuffle", [True, False])
def test_each_row_gets_its_own_bags(ds, shuffle):
    ld = BatchLoader(ds, "train", 128, shuffle=shuffle, seed=3, block_rows=37, window_blocks=2)
    seen = 0
    for b in ld:
        j = b.bags
        assert j.feature_names == ("hist", "tags")
        j.validate([50, 9])
        lens = j.lengths().numpy()
        rows = b.ids[:, 0].numpy()
        for f in range(2):
            v, off, _ = j.feature(j.feature_names[f])
            for i, r in enumerate(rows):
                assert v[off[i]:off[i + 1]].tolist() == _bag_of(int(r), f)
            assert (lens[:, f] == [len(_bag_of(int(r), f)) for r in rows]).all()
        seen += len(rows)
    assert seen == 2_000


def test_no_bags_means_none_and_unchanged_manifest(tmp_path):
    r = np.arange(10)
    with DatasetWriter(tmp_path / "plain", 10, 1, 0) as w:
        w.write(0, None, r[:, None].astype(np.int32), (r % 2).astype(np.uint8))
        m = Manifest(name="p", num_rows=10, feature_names=["row"], cardinalities=[10],
                     dense_names=[], splits={"train": [0, 10]}, click_rate=0.5, fingerprint="t")
        ds = w.close(m)
    assert "bags" not in json.loads((tmp_path / "plain" / "manifest.json").read_text())
    assert ds.bags == {}
    assert next(iter(BatchLoader(ds, "train", 4, shuffle=False))).bags is None


def test_out_of_range_bag_id_named(tmp_path):
    ds = _write(tmp_path / "bad", corrupt="tags")
    with pytest.raises(DatasetError, match=r"row 1999, bag feature 'tags': id 9 is out of range"):
        list(BatchLoader(ds, "train", 500, shuffle=False))


def test_missing_or_wrong_bag_file_refused(tmp_path):
    ds = _write(tmp_path / "d")
    (ds.path / "bag_tags.offsets.npy").unlink()
    with pytest.raises(DatasetError, match=r"bag_tags.offsets.npy is missing \(bag feature 'tags'\)"):
        open_dataset(ds.path)
    np.save(ds.path / "bag_tags.offsets.npy", np.zeros(N + 1, dtype=np.int64))
    with pytest.raises(DatasetError, match="offsets run 0..0, want 0.."):
        open_dataset(ds.path)


def test_manifest_bag_entries_checked():
    with pytest.raises(DatasetError, match="pooling 'max'"):
        _manifest([dict(BAGS[0], pooling="max")]).validate()
    with pytest.raises(DatasetError, match="shares table 'items' with a different cardinality"):
        _manifest([BAGS[0], dict(BAGS[1], table="items")]).validate()
    with pytest.raises(DatasetError, match="'row' is named twice"):
        _manifest([dict(BAGS[0], name="row")]).validate()


def test_resumed_loader_serves_the_same_bags(ds):
    full = list(BatchLoader(ds, "train", 100, shuffle=True, seed=5, block_rows=37))
    ld = BatchLoader(ds, "train", 100, shuffle=True, seed=5, block_rows=37)
    it = iter(ld)
    for _ in range(7):
        next(it)
    state = ld.state_dict()
    again = BatchLoader(ds, "train", 100, shuffle=True, seed=5, block_rows=37)
    again.load_state_dict(state)
    rest = list(again)
    assert len(rest) == len(full) - 7
    for a, b in zip(full[7:], rest):
        assert a.bags.values.equal(b.bags.values) and a.bags.offsets.equal(b.bags.offsets)
