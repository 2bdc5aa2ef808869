"""fiited-kernels runs every implementation on a tiny shape and writes the JSON it promises."""
import json
import os

import pytest
import torch

from benchmark import kernel_bench
from benchmark.kernel_peers import rowwise_adagrad_step
from fiited.kernels import cpu
from fiited.optim import SparseOptimConfig


@pytest.fixture
def idle(monkeypatch):
    """The load the run sees: ratios are withheld on a loaded machine, so fix it per test."""
    monkeypatch.setattr(kernel_bench.os, "getloadavg", lambda: (0.0, 0.0, 0.0))


def test_tiny_run_writes_json_with_every_case(tmp_path, capsys, idle):
    path = tmp_path / "bench.json"
    assert kernel_bench.main(["--tiny", "--threads", "1", "2", "--json", str(path)]) == 0
    printed = capsys.readouterr().out
    report = json.loads(path.read_text())
    assert set(report) == {"meta", "results", "fiited_like", "method_case"}
    assert "ELEMENT-wise" in printed and "element-wise" in " ".join(report["meta"]["notes"])
    thp = os.environ.get("THP_MEM_ALLOC_ENABLE", "unset")  # recorded: it changes large-B times
    assert report["meta"]["thp_mem_alloc_enable"] == thp and f"THP_MEM_ALLOC_ENABLE={thp}" in printed
    meta = report["meta"]
    assert meta["threads"] == [1, 2] and meta["cores"] == os.cpu_count()
    assert len(meta["load_before"]) == 3 and len(meta["load_after"]) == 3 and not meta["loaded"]
    assert meta["omp"]["OMP_WAIT_POLICY"] == os.environ.get("OMP_WAIT_POLICY", "unset")
    assert {r["threads"] for r in report["results"]} == {1, 2}

    impls = {"torch", "torch-sgd", "torch-rowwise", "reference", "cpu", "cpu-torch"}
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
            "ratio_vs_torch", "ratio_vs_torch_sgd", "ratio_vs_torch_rowwise", "ratio_vs_fbgemm",
            "threads"}
    for r in report["results"]:
        assert keys <= set(r)
        assert len(r["times_s"]) == 2 and r["median_s"] > 0
        assert r["lookups_per_s"] == pytest.approx(r["batch"] * r["features"] / r["median_s"])
        assert r["ratio_vs_torch"] > 0 and r["ratio_vs_torch_rowwise"] > 0
        if r["impl"] == "torch":
            assert r["ratio_vs_torch"] == 1.0
        if r["impl"] == "torch-rowwise":
            assert r["ratio_vs_torch_rowwise"] == 1.0

    # bytes at K=1, all present: index + rows read + output written (+ grad and unique rows)
    n, d = 32 * 3, 8
    lookup = next(r for r in report["results"]
                  if r["impl"] == "cpu" and r["op"] == "lookup" and r["chunks"] == 1)
    assert lookup["bytes"] == 4 * n + 4 * n * d + 4 * n * d
    update = next(r for r in report["results"]
                  if r["impl"] == "cpu" and r["op"] == "update" and r["chunks"] == 1)
    unique = (update["bytes"] - lookup["bytes"] - 4 * n * d) / (8 * d + 8)
    assert unique == int(unique) and 1 <= unique <= n

    methods = {(r["method"], r["threads"]): r for r in report["method_case"]}
    assert set(methods) == {(m, t) for m in ("uniform", "fiited") for t in (1, 2)}
    for t in (1, 2):
        uni, fii = methods["uniform", t], methods["fiited", t]
        assert uni["present_share"] == 1.0 and 0 < fii["present_share"] < 1
        assert fii["total_bytes"] < uni["total_bytes"] and len(fii["event_seconds"]) == 2
        assert fii["ratio_vs_uniform"] == pytest.approx(uni["median_s"] / fii["median_s"])
    assert "Method case" in printed

    fl = {(r["impl"], r["op"]) for r in report["fiited_like"]}
    assert ("cpu", "update") in fl and ("reference", "lookup") in fl
    for r in report["fiited_like"]:
        assert r["ratio_vs_uniform"] == pytest.approx(
            r["lookups_per_s"] / r["uniform_lookups_per_s"])


def test_loaded_machine_withholds_ratios(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(kernel_bench.os, "getloadavg", lambda: (64.0, 64.0, 64.0))
    path = tmp_path / "b.json"
    kernel_bench.main(["--tiny", "--threads", "1", "--json", str(path)])
    report = json.loads(path.read_text())
    assert report["meta"]["loaded"]
    assert "WARNING: load average 64.00" in capsys.readouterr().out
    assert all(r[key] is None for r in report["results"] for _, key in kernel_bench.PEER_KEYS)
    assert all(r["ratio_vs_uniform"] is None for r in report["method_case"])


def test_rowwise_torch_peer_is_our_optimizer():
    """Like for like: the torch row-wise peer and our fused kernel give the same weights."""
    gen = torch.Generator().manual_seed(0)
    rows, dim, lr, eps = 50, 8, 0.05, 1e-8
    ids = torch.randint(0, rows, (200,), generator=gen)  # duplicates included
    grad = torch.randn(200, dim, generator=gen)
    w0 = torch.rand(rows, dim, generator=gen)
    bag = torch.nn.EmbeddingBag(rows, dim, mode="sum", sparse=True)
    with torch.no_grad():
        bag.weight.copy_(w0)
    bag(ids, torch.arange(200)).backward(grad)
    state = torch.zeros(rows)
    with torch.no_grad():
        rowwise_adagrad_step(bag.weight, state, bag.weight.grad, lr, eps)
    pool, ours = w0.clone(), torch.zeros(rows)
    cpu.backward_update(pool, ours, ids.view(-1, 1).to(torch.int32), grad,
                        SparseOptimConfig(name="rowwise_adagrad", lr=lr, eps=eps))
    assert (pool - w0).abs().max() > 1e-3
    torch.testing.assert_close(bag.weight.detach(), pool, rtol=0, atol=1e-6)
    torch.testing.assert_close(state, ours, rtol=1e-6, atol=1e-7)


def test_subset_flags_and_bad_values(tmp_path, idle):
    path = tmp_path / "b.json"
    kernel_bench.main(["--tiny", "--impls", "cpu", "--ops", "lookup", "--no-fiited-case",
                       "--no-method-case", "--json", str(path)])
    rows = json.loads(path.read_text())["results"]
    assert {(r["impl"], r["op"]) for r in rows} == {("cpu", "lookup")}
    assert all(r["ratio_vs_torch"] is None for r in rows)
    with pytest.raises(SystemExit):
        kernel_bench.main(["--dim", "0"])
    with pytest.raises(SystemExit):
        kernel_bench.main(["--threads", "0"])
