"""Avazu reader on a small CSV in the real format (header, hex tokens, hour = YYMMDDHH)."""
from __future__ import annotations

import gzip

import numpy as np
import pytest

from benchmark.data.readers import BadLineError, InputError, PrepareConfig, prepare_dataset
from benchmark.data.readers.avazu import COLUMNS, FEATURES

HEADER = ",".join(COLUMNS)


def avazu_line(i: int, click: int, hour: str, vals: list[str]) -> str:
    assert len(vals) == 21
    return ",".join([f"1000009418151094{i:03d}", str(click), hour] + vals)


def base_vals(k: int) -> list[str]:
    return ["1005", "0", "1fbe01fe", "f3845767", "28905ebd", "ecad2386", "7801e8d9",
            "07d7df22", "a99f214a", f"ddd2926{k % 3}", "44956a24", "1", "2", "15706", "320",
            "50", "1722", "0", "35", "-1", "79"]


def write(tmp_path, lines, name="train", gz=False):
    path = tmp_path / name
    text = "\n".join([HEADER] + lines) + "\n"
    path.write_bytes(gzip.compress(text.encode()) if gz else text.encode())
    return path


def prep(path, out, **kw):
    return prepare_dataset(PrepareConfig("avazu", [str(path)], str(out), **kw))


def test_avazu_tokens_ids_and_last_day_split(tmp_path):
    lines = []
    hours = ["14102100", "14102105", "14102123", "14102200", "14102201", "14102210",
             "14102300", "14102301", "14102302", "14102303", "14102304"]
    for i, h in enumerate(hours):
        v = base_vals(i)
        if i == 1:
            v[0], v[2] = "1010", "0a"            # '0a' and 'a' must stay distinct values
        if i == 2:
            v[2] = "a"
        if i == 3:
            v[5] = ""                            # empty is its own value
        if i == 4:
            v[19] = "100084"                     # C20: '-1', '100084', '1' are three values
        if i == 5:
            v[19] = "1"
        lines.append(avazu_line(i, i % 2, h, v))
    ds = prep(write(tmp_path, lines, gz=True), tmp_path / "out", block_bytes=1024)
    m = ds.manifest
    assert m.feature_names == FEATURES and m.num_dense == 0 and m.num_rows == 11
    assert ds.labels.tolist() == [i % 2 for i in range(11)]
    c1, site_id, app_id, device_ip = (FEATURES.index(n) for n in
                                      ("C1", "site_id", "app_id", "device_ip"))
    assert ds.ids[:, c1].tolist() == [0, 1] + [0] * 9
    assert ds.ids[:, site_id].tolist() == [0, 1, 2] + [0] * 8
    assert ds.ids[:, app_id].tolist() == [0, 0, 0, 1] + [0] * 7
    assert ds.ids[:, device_ip].tolist() == [0, 1, 2] * 3 + [0, 1]
    assert ds.ids[:, FEATURES.index("C20")].tolist() == [0, 0, 0, 0, 1, 2] + [0] * 5
    assert m.cardinalities[site_id] == 3 and m.cardinalities[device_ip] == 3
    # last day 141023 has 5 rows: first 3 test, last 2 val; days 21, 22 train
    assert m.splits == {"train": [0, 6], "test": [6, 9], "val": [9, 11]}
    assert m.click_rate == pytest.approx(np.mean([i % 2 for i in range(6)]))
    assert m.source["split"]["rows_per_day"] == {"141021": 3, "141022": 3, "141023": 5}


def test_avazu_last_day_need_not_be_at_the_end(tmp_path):
    hours = ["14102300", "14102100", "14102301", "14102200", "14102302"]
    clicks = [1, 0, 0, 1, 1]
    lines = [avazu_line(i, clicks[i], h, base_vals(i)) for i, h in enumerate(hours)]
    ds = prep(write(tmp_path, lines), tmp_path / "out")
    # train = lines 1, 3 in input order; test = first 2 of day 23 (lines 0, 2); val = line 4
    assert ds.manifest.splits == {"train": [0, 2], "test": [2, 4], "val": [4, 5]}
    device_ip = FEATURES.index("device_ip")
    assert ds.ids[:, device_ip].tolist() == [1, 0, 0, 2, 1]     # raw k%3: 1, 0, 0, 2, 1
    assert ds.labels.tolist() == [0, 1, 1, 0, 1]


def test_avazu_random_split_is_seeded_and_order_preserving(tmp_path):
    lines = [avazu_line(i, i % 2, f"141021{i % 24:02d}", base_vals(i)) for i in range(300)]
    path = write(tmp_path, lines)
    a = prep(path, tmp_path / "a", split="random", seed=1)
    b = prep(path, tmp_path / "b", split="random", seed=1)
    c = prep(path, tmp_path / "c", split="random", seed=2)
    assert a.manifest.splits == b.manifest.splits
    np.testing.assert_array_equal(a.labels, b.labels)
    assert not np.array_equal(a.labels, c.labels) or a.manifest.splits != c.manifest.splits
    sizes = {k: e - s for k, (s, e) in a.manifest.splits.items()}
    assert sum(sizes.values()) == 300
    assert 160 < sizes["train"] < 260 and sizes["val"] > 10 and sizes["test"] > 25   # 7:1:2
    assert a.manifest.source["split"]["fractions"] == [0.7, 0.1, 0.2]


def test_avazu_header_and_bad_lines(tmp_path):
    lines = [avazu_line(i, i % 2, f"141021{i:02d}" if i < 6 else f"141022{i:02d}",
                        base_vals(i)) for i in range(10)]
    path = tmp_path / "train"
    path.write_text("\n".join([HEADER.replace("click", "clicks")] + lines) + "\n")
    with pytest.raises(InputError, match=r"train:1: header"):
        prep(path, tmp_path / "o")
    bad = list(lines)
    bad[2] = avazu_line(2, 0, "141021", base_vals(2))             # line 4: hour too short
    v = base_vals(4)
    v[3] = "f3845g67"
    bad[4] = avazu_line(4, 0, "14102100", v)                      # line 6: non-hex token
    bad[8] = "1,0"                                                # line 10: column count
    path = write(tmp_path, bad)
    with pytest.raises(BadLineError) as e:
        prep(path, tmp_path / "o")
    assert e.value.line == 4 and "bad hour" in e.value.reason and "'141021'" in e.value.reason
    ds = prep(path, tmp_path / "o", on_bad_lines="skip")
    st = ds.manifest.stats["bad_lines"]
    assert st["by_reason"] == {"bad hour (want YYMMDDHH)": 1, "non-hex categorical": 1,
                               "wrong column count": 1}
    assert st["examples"]["non-hex categorical"] == ["train:6"]
    assert st["examples"]["wrong column count"] == ["train:10"]
    assert ds.manifest.num_rows == 7
