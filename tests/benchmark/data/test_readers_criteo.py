"""Criteo Kaggle and Terabyte readers on small files in the real format that the tests write."""
from __future__ import annotations

import gzip
import math

import numpy as np
import pytest

from benchmark.data.readers import BadLineError, InputError, PrepareConfig, prepare_dataset


def criteo_line(label, dense, cats) -> str:
    assert len(dense) == 13 and len(cats) == 26
    return "\t".join([str(label)] + [str(x) for x in dense] + list(cats))


# Hand-written rows: empty fields, negative ints, upper/lower-case hex, '' == '00000000'.
ROWS = [
    (1, [5, "", -3, 0, 100, "", 1, 2, 3, 4, 5, 6, 7], ["68fd1e64"] * 13 + [""] * 13),
    (0, [""] * 13, ["80e26c9b"] * 13 + ["00000000"] * 13),
    (0, [-1] * 13, ["68FD1E64"] * 13 + ["0000000a"] * 13),
    (1, [0] * 13, ["0000000A"] * 13 + ["68fd1e64"] * 13),
]


def reference(lines: list[str], max_ind_range: int = 0, min_count: int = 0):
    """A plain-Python DLRM preprocessing: the oracle the vectorised reader must match."""
    labels, dense, raw = [], [], []
    for line in lines:
        f = line.split("\t")
        labels.append(int(f[0]))
        dense.append([math.log(max(int(x) if x else 0, 0) + 1) for x in f[1:14]])
        vals = [int(x, 16) if x else 0 for x in f[14:]]
        raw.append([v % max_ind_range if max_ind_range else v for v in vals])
    ids, cards = [], []
    for j in range(26):
        col = [r[j] for r in raw]
        counts = {v: col.count(v) for v in col}
        if min_count > 1:
            kept = [v for v in dict.fromkeys(col) if counts[v] >= min_count]
            m = {v: i + 1 for i, v in enumerate(kept)}
            ids.append([m.get(v, 0) for v in col])
            cards.append(len(kept) + 1)
        else:
            m = {v: i for i, v in enumerate(dict.fromkeys(col))}
            ids.append([m[v] for v in col])
            cards.append(len(m))
    return (np.array(labels, np.uint8), np.array(dense, np.float32),
            np.array(ids, np.int64).T, cards)


def random_lines(n: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        dense = [("" if rng.random() < 0.2 else int(rng.integers(-5, 3000))) for _ in range(13)]
        cats = ["" if rng.random() < 0.1 else format(int(rng.integers(0, 40)) * 0x01000193,
                                                     "08x") for _ in range(26)]
        out.append(criteo_line(int(rng.random() < 0.3) if i else 1, dense, cats))
    return out


@pytest.fixture
def kaggle_file(tmp_path):
    lines = [criteo_line(*r) for r in ROWS] + random_lines(12, seed=3)   # 16 rows
    path = tmp_path / "train.txt"
    path.write_text("\n".join(lines) + "\n")
    return path, lines


def prep(dataset, inputs, out, **kw):
    return prepare_dataset(PrepareConfig(dataset, [str(p) for p in inputs], str(out), **kw))


def test_kaggle_prepares_to_the_dlrm_arrays(kaggle_file, tmp_path):
    path, lines = kaggle_file
    ds = prep("criteo-kaggle", [path], tmp_path / "out", block_bytes=1024)  # several blocks
    labels, dense, ids, cards = reference(lines)
    np.testing.assert_array_equal(ds.labels, labels)
    np.testing.assert_allclose(ds.dense, dense, rtol=1e-6)
    np.testing.assert_array_equal(ds.ids, ids)
    m = ds.manifest
    assert m.cardinalities == cards and m.id_dtype == "int32"
    assert m.feature_names == [f"C{i}" for i in range(1, 27)]
    assert m.dense_names == [f"I{i}" for i in range(1, 14)]
    # hand-checked: hex is case-insensitive and the empty field is the value 0 (DLRM int(x,16))
    assert ds.ids[:4, 0].tolist() == [0, 1, 0, 2]       # 68fd1e64, 80e26c9b, 68FD1E64, 0000000A
    assert ds.ids[:4, 13].tolist() == [0, 0, 1, 2]      # '', 00000000, 0000000a, 68fd1e64
    np.testing.assert_allclose(ds.dense[0, :5], np.log([6, 1, 1, 1, 101]), rtol=1e-6)
    assert (ds.dense[2] == 0).all()                     # negatives clamp to 0, log(1) = 0
    # 16 rows = 7 pseudo-days [3, 3, 2, 2, 2, 2, 2]: train 14 rows, day 6 -> test 1, val 1
    assert m.splits == {"train": [0, 14], "test": [14, 15], "val": [15, 16]}
    assert m.source["split"]["day_sizes"] == [3, 3, 2, 2, 2, 2, 2]
    assert m.click_rate == pytest.approx(labels[:14].mean())


def test_kaggle_hashing_and_threshold_match_the_reference(kaggle_file, tmp_path):
    path, lines = kaggle_file
    ds = prep("criteo-kaggle", [path], tmp_path / "h", max_ind_range=7, min_count=2)
    _, _, ids, cards = reference(lines, max_ind_range=7, min_count=2)
    np.testing.assert_array_equal(ds.ids, ids)
    assert ds.manifest.cardinalities == cards
    assert ds.ids.max(axis=0).tolist() == [c - 1 for c in cards]
    assert ds.manifest.source["options"]["max_ind_range"] == 7
    assert ds.manifest.stats["rare_values"]["C1"] >= 0


def test_terabyte_reads_plain_and_gzip_days_and_halves_the_last(tmp_path):
    days = {0: random_lines(5, 1), 1: random_lines(4, 2), 23: random_lines(7, 4)}
    d = tmp_path / "tb"
    d.mkdir()
    (d / "day_0").write_text("\n".join(days[0]) + "\n")
    with gzip.open(d / "day_1.gz", "wt") as f:                  # gzip, found by magic bytes
        f.write("\n".join(days[1]) + "\n")
    with gzip.open(d / "day_23", "wt") as f:                    # gzip without .gz
        f.write("\n".join(days[23]))                            # no final newline
    (d / "README").write_text("not a day")                      # ignored in a directory
    ds = prep("criteo-terabyte", [d], tmp_path / "out", block_bytes=2048)
    lines = days[0] + days[1] + days[23]
    labels, dense, ids, cards = reference(lines)
    np.testing.assert_array_equal(ds.ids, ids)
    np.testing.assert_array_equal(ds.labels, labels)
    np.testing.assert_allclose(ds.dense, dense, rtol=1e-6)
    # day 23 (7 rows) halved: first 4 test, last 3 val
    assert ds.manifest.splits == {"train": [0, 9], "test": [9, 13], "val": [13, 16]}
    assert ds.manifest.source["days"] == ["day_0", "day_1.gz", "day_23"]


def test_terabyte_reads_days_by_content_and_rejects_duplicates(tmp_path):
    a = tmp_path / "day_3"
    a.write_text(criteo_line(1, [1] * 13, ["aa"] * 26) + "\n")
    b = tmp_path / "x"
    b.mkdir()
    (b / "day_3.gz").write_bytes(gzip.compress(a.read_bytes()))
    with pytest.raises(InputError, match="day 3 given twice"):
        prep("criteo-terabyte", [a, b], tmp_path / "o")
    # files given by name are days whatever they are called, in the order given
    first, second = random_lines(6, 7), random_lines(4, 8)
    (tmp_path / "monday.txt").write_text("\n".join(first) + "\n")
    (tmp_path / "tuesday.tsv").write_bytes(gzip.compress(("\n".join(second) + "\n").encode()))
    ds = prep("criteo-terabyte", [tmp_path / "monday.txt", tmp_path / "tuesday.tsv"],
              tmp_path / "o")
    np.testing.assert_array_equal(ds.ids, reference(first + second)[2])
    assert ds.manifest.splits == {"train": [0, 6], "test": [6, 8], "val": [8, 10]}
    (tmp_path / "no_days").mkdir()
    (tmp_path / "no_days" / "monday.txt").write_text("\n".join(first) + "\n")
    with pytest.raises(InputError, match="no day_N or day_N.gz files in this directory"):
        prep("criteo-terabyte", [tmp_path / "no_days"], tmp_path / "o2")


def test_one_terabyte_day_with_a_last_part_or_random_split(tmp_path):
    lines = random_lines(40, 9)
    day = tmp_path / "day_0"
    day.write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError, match="--split last-part or --split random"):
        prep("criteo-terabyte", [day], tmp_path / "o")
    ds = prep("criteo-terabyte", [day], tmp_path / "tail", split="last-part")
    # input order kept: the first 32 rows train, then 4 test, then 4 val
    assert ds.manifest.splits == {"train": [0, 32], "test": [32, 36], "val": [36, 40]}
    np.testing.assert_array_equal(ds.labels, reference(lines)[0])
    ds = prep("criteo-terabyte", [day], tmp_path / "rand", split="random", seed=3)
    sp = ds.manifest.splits
    assert sp["train"][0] == 0 and sp["test"][1] == 40 and sp["train"][1] > 20
    assert ds.manifest.source["split"]["rule"] == "random-hash"


BAD = [
    ("wrong column count", lambda ok: ok.rsplit("\t", 1)[0]),
    ("non-hex categorical", lambda ok: ok[: ok.rindex("\t") + 1] + "zz12ab34"),
    ("non-integer dense", lambda ok: "\t".join([ok.split("\t")[0], "1.5"] + ok.split("\t")[2:])),
    ("non-integer dense", lambda ok: "\t".join([ok.split("\t")[0], "12a"] + ok.split("\t")[2:])),
    ("bad label", lambda ok: "\t".join(["2"] + ok.split("\t")[1:])),
    ("bad label", lambda ok: "\t".join([""] + ok.split("\t")[1:])),
]


@pytest.mark.parametrize("reason,corrupt", BAD)
def test_malformed_line_names_file_line_and_reason(tmp_path, reason, corrupt):
    lines = random_lines(40, 5)
    lines[29] = corrupt(lines[29])                        # line 30
    path = tmp_path / "train.txt"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(BadLineError) as e:
        prep("criteo-kaggle", [path], tmp_path / "out", block_bytes=1500)
    assert e.value.line == 30 and e.value.path == str(path)
    assert str(e.value).startswith(f"{path}:30: {reason}")
    assert not (tmp_path / "out").exists()
    ds = prep("criteo-kaggle", [path], tmp_path / "skip", on_bad_lines="skip", block_bytes=1500)
    bad = ds.manifest.stats["bad_lines"]
    assert bad["skipped"] == 1 and bad["by_reason"] == {reason: 1}
    assert bad["examples"][reason] == ["train.txt:30"]
    kept = lines[:29] + lines[30:]
    np.testing.assert_array_equal(ds.ids, reference(kept)[2])
    assert ds.manifest.num_rows == 39


def test_skip_mode_counts_each_reason(tmp_path):
    lines = random_lines(30, 6)
    lines[3] = "1\t2"                                      # line 4: column count
    lines[10] = "\t".join(lines[10].split("\t")[:-1] + ["xyz"])       # line 11: hex
    lines[20] = "\t".join(lines[20].split("\t")[:-1] + ["qq"])        # line 21: hex
    lines[25] = "\t".join(["1", "-"] + lines[25].split("\t")[2:])     # line 26: dense
    path = tmp_path / "train.txt"
    path.write_text("\r\n".join(lines) + "\r\n")          # CRLF line ends are fine
    ds = prep("criteo-kaggle", [path], tmp_path / "skip", on_bad_lines="skip", block_bytes=1024)
    bad = ds.manifest.stats["bad_lines"]
    assert bad["by_reason"] == {"wrong column count": 1, "non-hex categorical": 2,
                                "non-integer dense": 1}
    assert bad["examples"]["non-hex categorical"] == ["train.txt:11", "train.txt:21"]
    keep = [x for i, x in enumerate(lines) if i not in (3, 10, 20, 25)]
    np.testing.assert_array_equal(ds.ids, reference(keep)[2])
    assert ds.manifest.num_rows == 26


def test_kaggle_reads_several_parts_in_order_and_a_random_split(tmp_path, kaggle_file):
    path, lines = kaggle_file
    a, b = tmp_path / "part_a", tmp_path / "part_b"
    a.write_text("\n".join(lines[:9]) + "\n")
    b.write_text("\n".join(lines[9:]) + "\n")
    whole = prep("criteo-kaggle", [path], tmp_path / "whole")
    parts = prep("criteo-kaggle", [a, b], tmp_path / "parts")
    np.testing.assert_array_equal(parts.ids, whole.ids)
    assert parts.manifest.splits == whole.manifest.splits
    with pytest.raises(InputError, match="given twice"):
        prep("criteo-kaggle", [path, path], tmp_path / "o")
    with pytest.raises(InputError, match="does not exist"):
        prep("criteo-kaggle", [tmp_path / "missing.txt"], tmp_path / "o")
    ds = prep("criteo-kaggle", [path], tmp_path / "rand", split="random", seed=1)
    assert ds.manifest.source["split"]["rule"] == "random-hash"
    assert sum(e - s for s, e in ds.manifest.splits.values()) == 16
    with pytest.raises(InputError, match="not supported"):
        prep("criteo-kaggle", [path], tmp_path / "o", split="time")
    with pytest.raises(InputError, match="--fractions applies to --split random or last-part"):
        prep("criteo-kaggle", [path], tmp_path / "o", fractions=(0.5, 0.25, 0.25))
    assert not (tmp_path / "o").exists()


def test_comma_separated_export_gets_a_hint(tmp_path):
    lines = [line.replace("\t", ",") for line in random_lines(5, 10)]
    path = tmp_path / "train.csv"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(BadLineError, match=r"train.csv:1: wrong column count: 1 fields, expected "
                                           r"40 \(the line looks comma-separated; this format "
                                           r"is tab-separated\)"):
        prep("criteo-kaggle", [path], tmp_path / "o")


def test_huge_integer_is_out_of_range_not_non_integer(tmp_path):
    lines = random_lines(10, 11)
    f = lines[4].split("\t")
    f[2] = "1" * 25
    lines[4] = "\t".join(f)
    path = tmp_path / "train.txt"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(BadLineError) as e:
        prep("criteo-kaggle", [path], tmp_path / "o")
    assert str(e.value).startswith(f"{path}:5: integer out of range (more than 18 digits) in "
                                   f"column I2")
