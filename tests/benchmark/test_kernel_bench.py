"""fiited-kernels runs every implementation on a tiny shape and writes the JSON it promises."""
import json
import os

import pytest

from benchmark import kernel_bench


def test_tiny_run_writes_json_with_every_case(tmp_path, capsys):
    path = tmp_path / "bench.json"
    assert kernel_bench.main(["--tiny", "--json", str(path)]) == 0
    printed = capsys.readouterr().out
    report = json.loads(path.read_text())
    assert set(report) == {"meta", "results", "fiited_like"}
    assert "ELEMENT-wise" in printed and "element-wise" in " ".join(report["meta"]["notes"])
    thp = os.environ.get("THP_MEM_ALLOC_ENABLE", "unset")  # recorded: it changes large-B times
    assert report["meta"]["thp_mem_alloc_enable"] == thp and f"THP_MEM_ALLOC_ENABLE={thp}" in printed

    impls = {"torch", "torch-sgd", "reference", "cpu", "cpu-torch"}
    if report["meta"]["fbgemm"]:
        impls.add("fbgemm")
    got = {(r["impl"], r["op"], r["chunks"], r["present_fraction"]) for r in report["results"]}
    for op in ("lookup", "update"):
        for impl in impls:
            assert (impl, op, 1, 1.0) in got
        for impl in ("reference", "cpu", "cpu-torch"):
            assert (impl, op, 2, 1.0) in got and (impl, op, 4, 1 / 16) in got
    assert not any(r["impl"] in ("torch", "fbgemm") and r["chunks"] > 1
                   for r in report["results"])

    keys = {"impl", "op", "batch", "features", "dim", "chunks", "chunk_width",
            "present_fraction", "median_s", "times_s", "lookups_per_s", "bytes", "gb_per_s",
            "ratio_vs_torch", "ratio_vs_torch_sgd", "ratio_vs_fbgemm"}
    for r in report["results"]:
        assert keys <= set(r)
        assert len(r["times_s"]) == 2 and r["median_s"] > 0
        assert r["lookups_per_s"] == pytest.approx(r["batch"] * r["features"] / r["median_s"])
        assert r["ratio_vs_torch"] > 0
        if r["impl"] == "torch":
            assert r["ratio_vs_torch"] == 1.0

    # bytes at K=1, all present: index + rows read + output written (+ grad and unique rows)
    n, d = 32 * 3, 8
    lookup = next(r for r in report["results"]
                  if r["impl"] == "cpu" and r["op"] == "lookup" and r["chunks"] == 1)
    assert lookup["bytes"] == 4 * n + 4 * n * d + 4 * n * d
    update = next(r for r in report["results"]
                  if r["impl"] == "cpu" and r["op"] == "update" and r["chunks"] == 1)
    unique = (update["bytes"] - lookup["bytes"] - 4 * n * d) / (8 * d + 8)
    assert unique == int(unique) and 1 <= unique <= n

    fl = {(r["impl"], r["op"]) for r in report["fiited_like"]}
    assert ("cpu", "update") in fl and ("reference", "lookup") in fl
    for r in report["fiited_like"]:
        assert r["ratio_vs_uniform"] == pytest.approx(
            r["lookups_per_s"] / r["uniform_lookups_per_s"])


def test_subset_flags_and_bad_values(tmp_path):
    path = tmp_path / "b.json"
    kernel_bench.main(["--tiny", "--impls", "cpu", "--ops", "lookup", "--no-fiited-case",
                       "--json", str(path)])
    rows = json.loads(path.read_text())["results"]
    assert {(r["impl"], r["op"]) for r in rows} == {("cpu", "lookup")}
    assert all(r["ratio_vs_torch"] is None for r in rows)
    with pytest.raises(SystemExit):
        kernel_bench.main(["--dim", "0"])
