"""benchmark.bag_bench at a tiny shape: its correctness gate, its layout helper and its output
(speed itself is not tested: timings on a shared machine mean nothing)."""
from __future__ import annotations

import json

import pytest
import torch

from benchmark import bag_bench
from fiited.kernels import cpu

TINY = ["--batch", "16", "--features", "3", "--mean-len", "3", "--rows-per-table", "40",
        "--dim", "8", "--chunks", "1", "2", "--repeats", "1", "--warmup", "0"]


def test_table_major_reorders_bags_for_tbe():
    gen = torch.Generator().manual_seed(0)
    batch, features = 4, 3
    lengths = torch.randint(0, 4, (batch * features,), generator=gen)
    offsets = torch.cat([torch.zeros(1, dtype=torch.int64), lengths.cumsum(0)])
    values = torch.arange(int(offsets[-1]))
    got_values, got_offsets = bag_bench.table_major(values, offsets, batch, features)
    expect = []  # written out: table f's bags for b = 0..B-1, each bag's ids in order
    for f in range(features):
        for b in range(batch):
            bag = b * features + f
            expect.append(values[offsets[bag]:offsets[bag + 1]])
    assert got_values.tolist() == torch.cat(expect).tolist()
    assert (got_offsets[1:] - got_offsets[:-1]).tolist() == [len(e) for e in expect]


def test_tiny_run_checks_every_lookup_and_writes_every_row(tmp_path):
    out = tmp_path / "bags.json"
    assert bag_bench.main([*TINY, "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["shape"]["occurrences"] > 0
    labels = {(r["impl"], r["op"]) for r in report["results"]}
    impls = {"torch-rowwise", "cpu K=1", "cpu K=2", "cpu-torch K=1", "cpu-torch K=2"}
    if report["fbgemm"]:
        impls.add("fbgemm")
    assert labels == {(i, op) for i in impls for op in ("lookup", "update")}
    for r in report["results"]:
        assert r["seconds"] > 0
        assert (r["vs_torch"] is None) == report["ratios_withheld"]


def test_a_wrong_pooled_lookup_stops_the_run_before_timing(monkeypatch):
    real = cpu.bag_gather
    monkeypatch.setattr(cpu, "bag_gather", lambda *a: real(*a) * 1.01)
    with pytest.raises(AssertionError, match="cpu K=1"):
        bag_bench.run(bag_bench.parse(TINY), log=lambda *_: None)


def test_chunks_that_do_not_divide_dim_are_refused(capsys):
    with pytest.raises(SystemExit) as e:
        bag_bench.parse([*TINY, "--chunks", "3"])
    assert e.value.code == 2
    assert "--chunks must divide --dim (8)" in capsys.readouterr().err
