"""The fused FIITED step (``fiited.kernels.fused``: addresses read through the entry table in the
native core, utility credited in the update) equals the unfused path bit for bit: outputs, pool,
optimizer state, utilities, entries, through first access, hashed misses and pruning events."""
from __future__ import annotations

import pytest
import torch

from fiited import SparseOptimConfig, TableSpec, build_method, kernels
from fiited.kernels import cpu_native, fused

pytestmark = pytest.mark.skipif(cpu_native.library() is None,
                                reason=f"native core unavailable: {cpu_native.failure}")

TABLES = [TableSpec("a", 300), TableSpec("b", 1000), TableSpec("c", 7)]
DIM = 8
OPTIMS = {
    "sgd": SparseOptimConfig(name="sgd", lr=0.1),
    "adagrad-chunk": SparseOptimConfig(name="rowwise_adagrad", lr=0.1, accumulator="chunk"),
    "adagrad-row": SparseOptimConfig(name="rowwise_adagrad", lr=0.1, accumulator="row"),
}


def build(optim, **cfg):
    knobs = {"name": "fiited", "budget": 0.3, "budget_scope": "weights", "index": "hashed",
             "schedule": {"warmup": [3, 6], "interval": 4}, **cfg}
    return build_method(knobs, TABLES, DIM, optim, seed=5)


def batches(n, batch=96, seed=0):
    """Zipf-like ids (many duplicates, a long tail of misses) and loss weights."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        cols = []
        for t in TABLES:
            u = torch.rand(batch, generator=g)
            cols.append((u.pow(3) * t.num_rows).long().clamp_max(t.num_rows - 1))
        out.append((torch.stack(cols, 1), torch.randn(batch, len(TABLES), DIM, generator=g)))
    return out


def run(m, data, fused_on, calls):
    fused.set_enabled(fused_on)
    outs = []
    try:
        for step, (ids, w) in enumerate(data, start=1):
            out = m(ids)
            (out * w).sum().backward()
            m.on_step(step)
            outs.append(out.detach())
        m.eval()
        with torch.no_grad():
            outs.append(m(data[0][0]).detach())
        m.train()
    finally:
        fused.set_enabled(True)
    return outs


@pytest.fixture
def calls(monkeypatch):
    """How often the fused step ran (a counter around the real function, nothing replaced)."""
    seen = {"n": 0}
    real = fused.fused_lookup

    def counted(*args, **kw):
        seen["n"] += 1
        return real(*args, **kw)

    monkeypatch.setattr(fused, "fused_lookup", counted)
    return seen


def assert_same(a, b):
    for x, y in zip(a, b):
        assert torch.equal(x, y), float((x - y).abs().max())


@pytest.mark.parametrize("utility", ["freq_grad", "freq"])
@pytest.mark.parametrize("optim", list(OPTIMS))
@pytest.mark.parametrize("k", [1, 2, 4])
@pytest.mark.parametrize("index", ["hashed", "direct"])
def test_fused_equals_unfused(k, optim, utility, index, calls):
    data = batches(9)
    ref, new = (build(OPTIMS[optim], num_chunks=k, utility=utility, index=index)
                for _ in range(2))
    want = run(ref, data, False, calls)
    assert calls["n"] == 0
    got = run(new, data, True, calls)
    assert calls["n"] == len(data) + 1            # every step (and the eval) took the fused path
    assert_same(want, got)
    for name, buf in ref.state_dict().items():
        if isinstance(buf, torch.Tensor):
            assert torch.equal(buf, new.state_dict()[name]), name
    # The case is not trivial: absent chunks, rows without an entry, credited utilities.
    ids = data[-1][0]
    entries = new.store.entries_of(new.global_rows(ids).reshape(-1), insert=False)
    present = new.store.addr[entries.clamp_min(0)] >= 0
    if index == "hashed":
        assert bool((entries < 0).any())
    assert bool((~present).any()) and bool(present.any())
    assert new.events >= 2 and float(new.utility.util.abs().sum()) > 0


def test_grad_utility_and_projection_stay_on_the_unfused_path(calls):
    data = batches(3)
    run(build(OPTIMS["sgd"], num_chunks=2, utility="grad"), data, True, calls)
    assert calls["n"] == 1      # only the eval lookup: it credits no utility
    run(build(OPTIMS["sgd"], num_chunks=2, padding="projection", index="direct"), data, True,
        calls)
    assert calls["n"] == 1


def test_reference_backend_turns_the_fused_path_off(calls):
    kernels.set_backend("reference")
    try:
        run(build(OPTIMS["sgd"], num_chunks=2), batches(2), True, calls)
    finally:
        kernels.set_backend(None)
    assert calls["n"] == 0


def test_fused_lookup_reads_zeros_for_misses_and_checks_entries():
    pool = torch.arange(12, dtype=torch.float32).view(6, 2)
    addr = torch.tensor([[0, -1], [5, 2], [-1, -1]], dtype=torch.int32)
    entries = torch.tensor([1, -1, 0, 1])
    out = fused.fused_lookup(pool, torch.zeros(0), addr, entries, OPTIMS["sgd"], False)
    want = torch.tensor([[10, 11, 4, 5], [0, 0, 0, 0], [0, 1, 0, 0], [10, 11, 4, 5.]])
    assert torch.equal(out.detach(), want)
    with pytest.raises(ValueError, match=r"entries\[1\] = 3 is out of range"):
        fused.fused_lookup(pool, torch.zeros(0), addr, torch.tensor([0, 3]), OPTIMS["sgd"],
                           False)
    util = torch.zeros(3, 2)
    out = fused.fused_lookup(pool, torch.zeros(0), addr, entries, OPTIMS["sgd"], False,
                             (util, lambda: 2.0, "freq"))
    out.backward(torch.ones_like(out))
    # Each occurrence with an entry credits 2.0 to its cells, present or not; misses none.
    assert torch.equal(util, torch.tensor([[2.0, 2.0], [4.0, 4.0], [0.0, 0.0]]))
    assert float(pool[5, 0]) == pytest.approx(9.8) and float(pool[1, 0]) == 2.0


@pytest.mark.parametrize("optim,k", [("adagrad-row", 2), ("adagrad-chunk", 4), ("sgd", 2)])
def test_fused_on_two_threads_equals_unfused_on_one(optim, k, calls):
    """Batches big enough that the native passes split over threads (each owns whole
    entries): still the unfused single-thread numbers."""
    data = batches(4, batch=8192, seed=2)
    ref, new = (build(OPTIMS[optim], num_chunks=k) for _ in range(2))
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        want = run(ref, data, False, calls)
        torch.set_num_threads(2)
        got = run(new, data, True, calls)
    finally:
        torch.set_num_threads(threads)
    assert calls["n"] == len(data) + 1
    assert_same(want, got)
    for name, buf in ref.state_dict().items():
        if isinstance(buf, torch.Tensor):
            assert torch.equal(buf, new.state_dict()[name]), name
