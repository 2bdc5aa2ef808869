"""Behaviour every reader shares: field parsing, vocabularies, split rules, the bad-line
policy, atomic publishing (a killed prepare), fingerprints, the CLI and the data configs."""
from __future__ import annotations

import gzip
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf

from benchmark.config import DataConfig
from benchmark.data.cli import build_parser, main
from benchmark.data.format import DatasetError, open_dataset
from benchmark.data.readers import InputError, PrepareConfig, prepare_dataset
from benchmark.data.readers import fields, pipeline
from benchmark.data.readers.splits import DaySplit, HashSplit
from benchmark.data.readers.text import LineBlock, read_blocks, tokenize
from benchmark.data.readers.vocab import VocabCounter

REPO = Path(__file__).resolve().parents[3]


def block(lines: list[str], ncols: int, sep: str = "\t"):
    data = ("\n".join(lines) + "\n").encode("latin-1")
    return tokenize(LineBlock(data, 1, len(data)), Path("f.txt"),
                    [f"c{i}" for i in range(ncols)], sep.encode())


def py_int(s: str, base: int, signed: bool, width: int):
    """The reference: Python's int() on the characters the parser accepts, else None."""
    digits = "0123456789abcdefABCDEF"[: 10 if base == 10 else 22]
    body = s[1:] if signed and s.startswith("-") else s
    if not body or any(c not in digits for c in body) or len(body) > width:
        return None
    return int(s, base)


FIELD = st.text(alphabet="0123456789abcdefXx-. ", max_size=22)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(FIELD, min_size=3, max_size=3), min_size=1, max_size=20))
def test_integer_parsers_agree_with_python_int(rows):
    fb = block(["\t".join(r) for r in rows], 3)
    got = fields.signed(fb, [0], "s", empty=None)[:, 0]
    bad_s = fb.problem >= 0
    fb = block(["\t".join(r) for r in rows], 3)
    got_u = fields.unsigned(fb, [1], "u", empty=None)[:, 0]
    bad_u = fb.problem >= 0
    fb = block(["\t".join(r) for r in rows], 3)
    got_h = fields.hex64(fb, [2], "h", empty=None)[:, 0]
    bad_h = fb.problem >= 0
    for i, r in enumerate(rows):
        s = py_int(r[0], 10, True, 18)
        assert bad_s[i] == (s is None) and (s is None or got[i] == s), r[0]
        u = py_int(r[1], 10, False, 20)
        u = None if u is not None and u >= 2**64 else u
        assert bad_u[i] == (u is None) and (u is None or int(got_u[i]) == u), r[1]
        h = py_int(r[2], 16, False, 16)
        assert bad_h[i] == (h is None) and (h is None or int(got_h[i]) == h), r[2]


def test_parsers_edge_cases():
    fb = block(["18446744073709551615\t-999999999999999999\t\t3.25",
                "18446744073709551616\t-1\t0\t.5",
                "00000000000000000001\t-\tffffffffffffffff\t1.2.3"], 4)
    u = fields.unsigned(fb, [0], "u")[:, 0]
    s = fields.signed(fb, [1], "s", empty=0)[:, 0]
    h = fields.hex64(fb, [2], "h", empty=0)[:, 0]
    d = fields.decimal(fb, [3], "d")[:, 0]
    assert int(u[0]) == 2**64 - 1 and int(u[2]) == 1
    assert s[0] == -999999999999999999 and s[1] == -1
    assert int(h[2]) == 2**64 - 1 and h[0] == 0
    assert d[0] == 3.25 and d[1] == 0.5
    # a number too large for uint64 is out of range (not "u", the non-integer reason)
    assert [fb.reasons[p][0] if p >= 0 else None for p in fb.problem] == \
        [None, "integer out of range (above 2**64-1)", "s"]
    fb = block(["1a,1A,01a,,-1,1", "a,0a,,x,-0,-1"], 6, ",")
    t = fields.token(fb, [0, 1, 2, 3, 4, 5], "t")
    assert t[0, 0] == t[0, 1] != t[0, 2]                 # case-insensitive, '01a' != '1a'
    assert t[1, 0] != t[1, 1] and t[1, 2] == t[0, 3]     # 'a' != '0a'; '' is one value
    assert t[0, 4] != t[0, 5] and t[1, 4] != t[1, 5] and t[0, 4] == t[1, 5]   # '-1' != '1'
    assert fb.describe(1) == "t in column c3: 'x'"


def test_tokenizer_flags_column_count_crlf_and_nul():
    fb = block(["a\tb\tc", "a\tb", "a\tb\tc\r", "a\t\x00\tc", "", "a\tb\tc\td"], 3)
    assert fb.lines.tolist() == [1, 2, 3, 4, 5, 6]
    assert [fb.reasons[p][0] if p >= 0 else None for p in fb.problem] == \
        [None, "wrong column count", None, "NUL byte in line", "wrong column count",
         "wrong column count"]
    assert fb.text(2, 2) == "c"                          # CR is not part of the field
    assert fb.describe(1) == "wrong column count: 2 fields, expected 3 ('a\\tb')"


def test_blocks_cover_every_line_once(tmp_path):
    lines = [f"{i}\t{'x' * (i % 50)}" for i in range(500)]
    p = tmp_path / "f.gz"
    p.write_bytes(gzip.compress(("\n".join(lines)).encode()))       # no final newline
    got, first = [], []
    for b in read_blocks(p, 300):
        first.append(b.first_line)
        got += b.data.decode().splitlines()
    assert got == lines and len(first) > 10
    assert first == sorted(first) and first[0] == 1
    (tmp_path / "cut.gz").write_bytes(p.read_bytes()[:-30])
    with pytest.raises(InputError, match="truncated or corrupt gzip"):
        list(read_blocks(tmp_path / "cut.gz", 300))


def test_vocab_first_seen_threshold_and_lookup():
    vc = VocabCounter("C1")
    vc.update(np.array([30, 10, 30, 20], dtype=np.uint64))
    vc.update(np.array([40, 10, 50, 10], dtype=np.uint64))
    plain = VocabCounter("C1")
    plain.update(np.array([30, 10, 30, 20, 40, 10, 50, 10], dtype=np.uint64))
    v = vc.finish()
    assert v.lookup(np.array([30, 10, 20, 40, 50], dtype=np.uint64)).tolist() == [0, 1, 2, 3, 4]
    assert v.cardinality == 5
    t = plain.finish(min_count=2)                      # 10 (x3), 30 (x2) kept; rest -> 0
    assert t.lookup(np.array([30, 10, 20, 40, 50], dtype=np.uint64)).tolist() == [1, 2, 0, 0, 0]
    assert t.cardinality == 3 and t.rare_values == 3
    with pytest.raises(InputError, match="C1: value 99 was not seen in the first pass"):
        v.lookup(np.array([99], dtype=np.uint64))


def test_large_vocab_merges_and_lookup_in_first_seen_order():
    rng = np.random.default_rng(0)
    values = rng.permutation(np.arange(1, 90_001, dtype=np.uint64) * np.uint64(7919))
    vc = VocabCounter("big")
    for part in np.array_split(np.concatenate([values, values[::-3]]), 9):   # pending merges
        vc.update(part)
    v = vc.finish()
    assert v.cardinality == 90_000 and len(v.keys) > 1 << 16        # the sorted-query path
    probe = np.concatenate([values[::-1], values[:10]])
    np.testing.assert_array_equal(v.lookup(probe),
                                  np.concatenate([np.arange(90_000)[::-1], np.arange(10)]))
    with pytest.raises(InputError, match="value 5 was not seen"):
        v.lookup(np.array([7919, 5], dtype=np.uint64))


def test_kaggle_day_rule_reproduces_dlrm_sizes():
    plan = DaySplit(pseudo_days=7, rows_per_file={0: 45_840_617})
    splits = plan.finish()
    assert plan.day_sizes == [6_548_660] * 4 + [6_548_659] * 3
    assert splits["train"] == [0, 39_291_958]
    assert splits["test"][1] - splits["test"][0] == 3_274_330
    assert splits["val"] == [39_291_958 + 3_274_330, 45_840_617]


def test_hash_split_is_independent_of_blocking():
    plan = HashSplit((0.6, 0.2, 0.2), seed=5)
    lines = np.arange(1, 2001)
    whole = plan.label(0, lines)
    parts = np.concatenate([plan.label(0, lines[:777]), plan.label(0, lines[777:])])
    np.testing.assert_array_equal(whole, parts)
    assert abs((whole == 0).mean() - 0.6) < 0.05
    assert not np.array_equal(whole, HashSplit((0.6, 0.2, 0.2), seed=6).label(0, lines))


def write_criteo(path: Path, n: int, seed: int = 0, bad_at: int | None = None) -> Path:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        dense = [str(int(x)) for x in rng.integers(0, 50, 13)]
        cats = [format(int(x), "08x") for x in rng.integers(0, 20, 26)]
        out.append("\t".join([str(int(i % 3 == 0))] + dense + cats))
    if bad_at is not None:
        out[bad_at - 1] = out[bad_at - 1].replace("\t", "\tzz", 1)
    path.write_text("\n".join(out) + "\n")
    return path


def test_crash_mid_write_keeps_the_previous_dataset(tmp_path, monkeypatch):
    src = write_criteo(tmp_path / "train.txt", 60)
    out = tmp_path / "ds"
    old = prepare_dataset(PrepareConfig("criteo-kaggle", [str(src)], str(out)))
    old_ids = np.array(old.ids)
    old_fp = old.manifest.fingerprint
    src2 = write_criteo(tmp_path / "other.txt", 80, seed=1)
    calls = []
    real = pipeline._scatter

    def crash_after_first_block(*a, **k):
        calls.append(1)
        if len(calls) > 1:
            raise RuntimeError("simulated crash")
        return real(*a, **k)

    monkeypatch.setattr(pipeline, "_scatter", crash_after_first_block)
    with pytest.raises(RuntimeError, match="simulated crash"):
        prepare_dataset(PrepareConfig("criteo-kaggle", [str(src2)], str(out), overwrite=True,
                                      block_bytes=2048))
    again = open_dataset(out)
    assert again.manifest.fingerprint == old_fp
    np.testing.assert_array_equal(again.ids, old_ids)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds", "other.txt", "train.txt"]
    # strict mode: a bad line late in the file stops before anything is published
    bad = write_criteo(tmp_path / "bad.txt", 80, seed=2, bad_at=77)
    monkeypatch.setattr(pipeline, "_scatter", real)
    with pytest.raises(InputError, match=r"bad.txt:77: non-integer dense"):
        prepare_dataset(PrepareConfig("criteo-kaggle", [str(bad)], str(tmp_path / "new"),
                                      block_bytes=1024))
    assert not (tmp_path / "new").exists()


KILL_SCRIPT = """
import sys, time
from benchmark.data.readers import pipeline, PrepareConfig, prepare_dataset
real = pipeline._scatter
def slow(*a, **k):
    real(*a, **k)
    print("wrote", flush=True)
    time.sleep(60)
pipeline._scatter = slow
prepare_dataset(PrepareConfig("criteo-kaggle", [sys.argv[1]], sys.argv[2], overwrite=True,
                              block_bytes=2048))
"""


def test_sigkill_mid_write_leaves_nothing_usable(tmp_path):
    src = write_criteo(tmp_path / "train.txt", 40)
    out = tmp_path / "ds"
    old = prepare_dataset(PrepareConfig("criteo-kaggle", [str(src)], str(out)))
    proc = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT,
                             str(write_criteo(tmp_path / "b.txt", 80, 1)), str(out)],
                            stdout=subprocess.PIPE, cwd=REPO, text=True)
    try:
        assert proc.stdout.readline().strip() == "wrote"      # first block is in the arrays
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    partial = [p for p in tmp_path.iterdir() if p.name.startswith(".ds.partial-")]
    assert len(partial) == 1 and (partial[0] / "ids.npy").exists()
    with pytest.raises(DatasetError, match="no manifest.json"):
        open_dataset(partial[0])
    assert open_dataset(out).manifest.fingerprint == old.manifest.fingerprint


def test_fingerprint_covers_content_and_output_options(tmp_path):
    src = write_criteo(tmp_path / "train.txt", 30)

    def fp(name, **kw):
        return prepare_dataset(PrepareConfig("criteo-kaggle", [str(src)], str(tmp_path / name),
                                             **kw)).manifest

    a = fp("a")
    assert fp("b", block_bytes=4096).fingerprint == a.fingerprint        # no output change
    assert fp("c", max_ind_range=5).fingerprint != a.fingerprint
    text = src.read_text()
    src.write_text(text[:-2] + ("1" if text[-2] != "1" else "2") + "\n")   # same size
    assert fp("d").fingerprint != a.fingerprint
    info = a.source["inputs"][0]
    assert info["name"] == "train.txt" and info["size"] == len(text)
    assert re.fullmatch(r"[0-9a-f]{64}", info["head_sha256"])


def test_config_and_option_errors(tmp_path):
    with pytest.raises(ValueError, match="on_bad_lines='warn'"):
        PrepareConfig("avazu", ["x"], "y", on_bad_lines="warn")
    with pytest.raises(ValueError, match="fractions"):
        PrepareConfig("avazu", ["x"], "y", fractions=(0.5, 0.1, 0.1))
    with pytest.raises(InputError, match="unknown dataset 'criteo'"):
        prepare_dataset(PrepareConfig("criteo", ["x"], "y"))
    src = write_criteo(tmp_path / "train.txt", 10)
    prepare_dataset(PrepareConfig("criteo-kaggle", [str(src)], str(tmp_path / "o")))
    with pytest.raises(InputError, match="already exists.*--overwrite"):
        prepare_dataset(PrepareConfig("criteo-kaggle", [str(src)], str(tmp_path / "o")))


def test_cli_prepare_success_and_one_line_errors(tmp_path, capsys):
    src = write_criteo(tmp_path / "train.txt", 30)
    out = tmp_path / "ds"
    assert main(["prepare", "criteo-kaggle", "--input", str(src), "--out", str(out)]) == 0
    text = capsys.readouterr()
    assert f"prepared criteo_kaggle at {out}" in text.out and "rows/s" in text.out
    assert open_dataset(out).manifest.num_rows == 30
    bad = write_criteo(tmp_path / "bad.txt", 30, bad_at=17)
    cases = [
        (["criteo-kaggle", "--input", str(bad)], f"{bad}:17: non-integer dense in column I1"),
        (["criteo-kaggle", "--input", str(tmp_path / "nope.txt")], "nope.txt: input does not"),
        (["criteo-kaggle", "--input", str(src), "--genres", "first"], "--genres applies to"),
        (["criteo-kaggle", "--input", str(src), "--min-count", "-1"], "min_count=-1"),
    ]
    for args, msg in cases:
        rc = main(["prepare", *args, "--out", str(tmp_path / "x"), "--quiet"])
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 2 and len(err) == 1 and msg in err[0], (args, err)
        assert err[0].startswith("fiited-data prepare: error: ")
    rc = main(["prepare", "criteo-kaggle", "--input", str(bad), "--out", str(tmp_path / "s"),
               "--on-bad-lines", "skip", "--quiet"])
    assert rc == 0 and "skipped 1 bad lines" in capsys.readouterr().out


def test_progress_reports_rows_and_bytes(tmp_path):
    src = write_criteo(tmp_path / "train.txt", 50)
    seen = []
    prepare_dataset(PrepareConfig("criteo-kaggle", [str(src)], str(tmp_path / "o"),
                                  block_bytes=2048), lambda *a: seen.append(a))
    stages = [s[0] for s in seen]
    assert stages.count("count") > 1 and stages.count("write") > 1
    last = [s for s in seen if s[0] == "write"][-1]
    assert last[1] == 50 and last[2] == last[3] == src.stat().st_size


DATASET_OF = {"criteo_kaggle": "criteo-kaggle", "criteo_terabyte": "criteo-terabyte",
              "avazu": "avazu", "kdd12": "kdd12", "movielens": "movielens"}


@pytest.mark.parametrize("name", sorted(DATASET_OF))
def test_data_config_names_its_prepare_command(name, monkeypatch):
    path = REPO / "conf" / "data" / f"{name}.yaml"
    cfg = OmegaConf.merge(OmegaConf.structured(DataConfig), OmegaConf.load(path))
    monkeypatch.setenv("FIITED_DATA_DIR", "/data")
    assert cfg.name == name and cfg.synthetic is None and cfg.path == f"/data/{name}"
    monkeypatch.delenv("FIITED_DATA_DIR")
    assert cfg.path == f"data/{name}"
    cmd = next(line for line in path.read_text().splitlines() if "fiited-data prepare" in line)
    argv = shlex.split(cmd.lstrip("# ").replace("${FIITED_DATA_DIR:-data}", "data"))
    args = build_parser().parse_args(argv[1:])
    assert args.command == "prepare" and args.dataset == DATASET_OF[name]
    assert args.out == f"data/{name}"
