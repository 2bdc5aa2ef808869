"""MovieLens bag features: genres as one bag over the genre vocabulary, and the user history
built from training rows only (a val/test row in any history would be leakage)."""
from __future__ import annotations

import importlib.resources
import importlib.util

import numpy as np
import pytest
import torch

from benchmark.data.loader import BatchLoader
from benchmark.data.readers import InputError
from benchmark.data.readers.bags import history_bags
from fiited.jagged import Jagged

from test_readers_movielens import ITEMS, ML1M_RATINGS, USERS, prep, write_dir, write_recbole


def _bag(ds, name, r):
    v, o = ds.bags[name]
    return np.asarray(v[o[r]:o[r + 1]]).tolist()


def _history_case(tmp_path, split):
    """3 users x 40 ratings, every rating of its own item (so the mapped item id, which is
    first-seen order, is the input line), users' timestamps interleaved (ties: the unit test
    below)."""
    rng = np.random.default_rng(0)
    n = 120
    users = np.arange(n) % 3 + 1
    stamps = rng.permutation(n)
    inter = [(int(u), 1000 + i, 5 if i % 2 else 1, int(t))
             for i, (u, t) in enumerate(zip(users, stamps))]
    write_recbole(tmp_path / "toy", inter, USERS, ITEMS)
    ds = prep(tmp_path / "toy", tmp_path / "out", history=5, split=split)
    return ds, users, stamps


@pytest.mark.parametrize("split", ["random", "time"])
def test_history_uses_only_earlier_training_rows(tmp_path, split):
    ds, users, stamps = _history_case(tmp_path, split)
    m = ds.manifest
    item = np.asarray(ds.ids[:, m.feature_names.index("item_id")])   # = input line
    a, b = m.splits["train"]
    train_lines = set(item[a:b].tolist())
    held_out = set(item[b:].tolist())
    assert held_out and train_lines
    for r in range(m.num_rows):                      # test oracle, written independently
        line = int(item[r])
        hist = _bag(ds, "history", r)
        assert not set(hist) & held_out, f"row {r}: a val/test row leaked into its history"
        want = sorted((int(stamps[j]), j) for j in train_lines
                      if users[j] == users[line] and stamps[j] < stamps[line])
        assert hist == [j for _, j in want][-5:], f"row {r}"
    assert m.bags == [{"name": "history", "table": "item_id", "cardinality": 120,
                       "pooling": "mean"}]


def test_history_bags_strictly_earlier_and_train_only():
    # rows: user, item, time; train = rows 0..3, rows 4, 5 held out
    users = np.array([0, 0, 0, 1, 0, 0])
    items = np.array([10, 11, 12, 13, 14, 15])
    time = np.array([5, 1, 5, 2, 0, 9])
    v, o = history_bags(users, items, time, [0, 4], 2)
    got = [v[o[r]:o[r + 1]].tolist() for r in range(6)]
    # row 0 (t=5): only item 11 (t=1) is strictly earlier; row 2 ties with row 0
    assert got == [[11], [], [11], [], [], [10, 12]]


def test_genres_as_one_bag(tmp_path):
    inter = [(7, 50, 5, 300), (7, 51, 3, 100), (9, 50, 4.5, 200), (9, 53, 4, 50)]
    write_recbole(tmp_path / "toy", inter, USERS, ITEMS)
    ds = prep(tmp_path / "toy", tmp_path / "out", genres="bag", fractions=(1.0, 0.0, 0.0))
    m = ds.manifest
    assert not any(n.startswith("genre") for n in m.feature_names)
    vocab = list(dict.fromkeys(g for it in ITEMS for g in it[3].split()))
    assert m.bags == [{"name": "genres", "table": "genres", "cardinality": len(vocab),
                       "pooling": "mean"}]
    item_col = np.asarray(ds.ids[:, m.feature_names.index("item_id")])
    raw_item = list(dict.fromkeys(r[1] for r in inter))
    for r in range(m.num_rows):
        raw = raw_item[item_col[r]]
        genres = next((x[3].split() for x in ITEMS if x[0] == str(raw)), [])
        assert _bag(ds, "genres", r) == [vocab.index(g) for g in genres]   # 53: no row, empty
    with pytest.raises(InputError, match="--genre-slots applies to --genres multi only"):
        prep(tmp_path / "toy", tmp_path / "o2", genres="bag", genre_slots=2)
    with pytest.raises(InputError, match="--history -1 must be >= 0"):
        prep(tmp_path / "toy", tmp_path / "o3", history=-1)


def test_ml100k_multi_hot_loads_as_jagged(tmp_path):
    if importlib.util.find_spec("recbole") is None:
        pytest.skip("recbole is not installed (make install ships MovieLens-100K)")
    d = importlib.resources.files("recbole") / "dataset_example" / "ml-100k"
    ds = prep(d, tmp_path / "ml", genres="bag", history=20)
    assert [b["name"] for b in ds.manifest.bags] == ["genres", "history"]
    batch = next(iter(BatchLoader(ds, "val", 512, shuffle=True)))
    j: Jagged = batch.bags
    j.validate([19, 1682])
    lens = j.lengths()
    assert lens[:, 1].max() <= 20 and lens[:, 0].min() >= 0 and int(lens.sum()) == j.values.numel()
    assert isinstance(j.values, torch.Tensor)


def test_ml1m_and_ml20m_take_the_same_path(tmp_path):
    d = write_dir(tmp_path / "ml-1m", {
        "ratings.dat": ML1M_RATINGS,
        "movies.dat": ("1193::Cuckoo's Nest (1975)::Drama\n"
                       "661::Cafe (1996)::Animation|Children's|Musical\n")})
    ds = prep(d, tmp_path / "o1", split="time", genres="bag", history=3,
              fractions=(0.75, 0.0, 0.25))
    # time order: (3,661) (2,1193) (1,1193) | test: (1,661); items 1193 -> 0, 661 -> 1;
    # genres first seen in the item table by movie id: 661's three (0..2), then Drama (3)
    assert [_bag(ds, "genres", r) for r in range(4)] == [[0, 1, 2], [3], [3], [0, 1, 2]]
    assert [_bag(ds, "history", r) for r in range(4)] == [[], [], [], [0]]
    assert ds.manifest.source["history"]["length"] == 3
    d = write_dir(tmp_path / "ml-20m", {
        "ratings.csv": "userId,movieId,rating,timestamp\n1,2,3.5,10\n1,30,4.0,20\n",
        "movies.csv": ("movieId,title,genres\n2,Jumanji (1995),Adventure|Children\n"
                       "30,Shanghai Triad (1995),(no genres listed)\n")})
    ds = prep(d, tmp_path / "o2", split="time", genres="bag", fractions=(1.0, 0.0, 0.0))
    assert [_bag(ds, "genres", r) for r in range(2)] == [[0, 1], []]     # marker: empty bag
    assert ds.manifest.bags[0]["cardinality"] == 2
