"""KDD Cup 2012 track 2 reader: click/impression counts expanded, weighted or thresholded."""
from __future__ import annotations

import numpy as np
import pytest

from benchmark.data.readers import BadLineError, InputError, PrepareConfig, prepare_dataset
from benchmark.data.readers.kdd12 import FEATURES, expand

# (Click, Impression, DisplayURL, AdID, ...): DisplayURL needs all 64 bits
LINES = [
    (0, 1, 4298118681424644510, 7686695, 385, 3, 3, 1601, 5521, 7709, 576, 490234),
    (2, 3, 18446744073709551615, 21560664, 37484, 2, 2, 2255103, 317, 48989, 44771, 490234),
    (1, 1, 4298118681424644510, 21560664, 37484, 2, 1, 2255103, 317, 48989, 44771, 0),
    (0, 2, 0, 7686695, 385, 3, 3, 1601, 5521, 7709, 576, 490234),
]


def write(tmp_path, lines, name="training.txt"):
    path = tmp_path / name
    path.write_text("\n".join("\t".join(str(x) for x in ln) for ln in lines) + "\n")
    return path


def prep(path, out, **kw):
    return prepare_dataset(PrepareConfig("kdd12", [str(path)], str(out),
                                         fractions=(1.0, 0.0, 0.0), **kw))


def first_seen(col):
    m = {}
    return [m.setdefault(v, len(m)) for v in col]


def test_expand_makes_one_binary_row_per_impression(tmp_path):
    ds = prep(write(tmp_path, LINES), tmp_path / "out")
    assert ds.manifest.num_rows == 7 and ds.manifest.feature_names == FEATURES
    assert ds.labels.tolist() == [0, 1, 1, 0, 1, 0, 0]
    rows = [0, 1, 1, 1, 2, 3, 3]                          # source line of each row
    for j in range(10):
        np.testing.assert_array_equal(ds.ids[:, j], first_seen([LINES[r][2 + j] for r in rows]))
    assert ds.ids[:, 0].tolist() == [0, 1, 1, 1, 0, 2, 2]   # 2**64-1 is a value like others
    assert ds.manifest.cardinalities[0] == 3
    assert ds.manifest.stats["input_lines"] == 4
    assert not (ds.path / "weights.npy").exists()


def test_weights_mode_writes_weighted_binary_rows(tmp_path):
    ds = prep(write(tmp_path, LINES), tmp_path / "out", counts="weights")
    w = np.load(ds.path / "weights.npy")
    # line 0: (0, w1); line 1: (1, w2), (0, w1); line 2: (1, w1); line 3: (0, w2)
    assert ds.labels.tolist() == [0, 1, 0, 1, 0]
    assert w.tolist() == [1, 2, 1, 1, 2] and w.dtype == np.float32
    assert ds.ids[:, 1].tolist() == [0, 1, 1, 1, 0]
    st = ds.manifest.stats["weights"]
    assert st["train_weighted_click_rate"] == pytest.approx(3 / 7)
    assert ds.manifest.click_rate == pytest.approx(2 / 5)      # unweighted rows
    assert ds.manifest.source["counts"] == "weights"
    assert "ignores" in ds.manifest.source["rows"]


def test_clicked_mode_and_line_level_random_split(tmp_path):
    ds = prep(write(tmp_path, LINES), tmp_path / "out", counts="clicked")
    assert ds.labels.tolist() == [0, 1, 1, 0]
    rng = np.random.default_rng(0)
    many = [(int(c), int(c + 1 + rng.integers(0, 3)), *LINES[i % 4][2:-1], 1000 + i)
            for i, c in enumerate(rng.integers(0, 2, 400))]          # UserID = input line
    path = write(tmp_path, many, "many.txt")
    ds = prepare_dataset(PrepareConfig("kdd12", [str(path)], str(tmp_path / "split"), seed=4))
    sizes = {k: b - a for k, (a, b) in ds.manifest.splits.items()}
    assert sum(sizes.values()) == sum(ln[1] for ln in many) == ds.manifest.num_rows
    assert all(v > 0 for v in sizes.values()) and sizes["train"] > sizes["val"] + sizes["test"]
    assert ds.manifest.stats["input_lines"] == 400
    # all rows of an input line (one UserID each) are adjacent, in one split
    user = np.asarray(ds.ids[:, FEATURES.index("UserID")])
    split_of = np.searchsorted([b for _, b in sorted(ds.manifest.splits.values())],
                               np.arange(len(user)), side="right")
    for u in np.unique(user):
        rows = np.flatnonzero(user == u)
        assert rows[-1] - rows[0] == len(rows) - 1 and len(set(split_of[rows])) == 1


def test_expand_helper_matches_a_loop():
    rng = np.random.default_rng(1)
    imps = rng.integers(1, 6, 50)
    clicks = np.minimum(rng.integers(0, 4, 50), imps)
    line, label, w = expand(clicks, imps, "expand")
    want_line = [i for i in range(50) for _ in range(imps[i])]
    want_label = [int(k < clicks[i]) for i in range(50) for k in range(imps[i])]
    assert line.tolist() == want_line and label.tolist() == want_label and w is None
    line, label, w = expand(clicks, imps, "weights")
    for i in range(50):
        got = {int(lb): float(x) for lb, x in zip(label[line == i], w[line == i])}
        assert got == {k: v for k, v in {1: clicks[i], 0: imps[i] - clicks[i]}.items() if v}


@pytest.mark.parametrize("bad,reason", [
    ((3, 2), "bad click/impression counts"),                # more clicks than impressions
    ((0, 0), "bad click/impression counts"),                # no impression
    (("x", 1), "bad click/impression counts"),
])
def test_bad_counts_name_the_line(tmp_path, bad, reason):
    lines = LINES + [bad + LINES[0][2:]] + LINES
    path = write(tmp_path, lines)
    with pytest.raises(BadLineError) as e:
        prep(path, tmp_path / "out")
    assert e.value.line == 5 and e.value.reason.startswith(reason)
    ds = prep(path, tmp_path / "skip", on_bad_lines="skip")
    assert ds.manifest.num_rows == 14 and ds.manifest.stats["bad_lines"]["skipped"] == 1


def test_bad_id_and_wrong_options(tmp_path):
    lines = list(LINES)
    lines[2] = lines[2][:5] + ("12x",) + lines[2][6:]
    with pytest.raises(BadLineError,
                       match=r"training.txt:3: non-integer id in column Depth: '12x'"):
        prep(write(tmp_path, lines), tmp_path / "out")
    with pytest.raises(InputError, match="--genres applies to movielens only"):
        prep(write(tmp_path, LINES), tmp_path / "out", genres="first")
