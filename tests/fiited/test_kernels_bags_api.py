"""The bag kernels' surface: dispatch, autograd glue, the one-hot special case, bad input."""
import pytest
import torch

import fiited.kernels as kernels
from fiited.kernels import cpu, cpu_native, reference
from fiited.optim import SparseOptimConfig


def one_hot_case(seed=0, n=64, k=2, c=8, p=40):
    gen = torch.Generator().manual_seed(seed)
    rows = torch.randint(-1, p, (n, k), generator=gen)
    return rows, torch.randn(p, c, generator=gen), torch.rand(p, generator=gen), \
        torch.randn(n, k * c, generator=gen)


@pytest.mark.parametrize("impl", ["reference", "cpu"])
@pytest.mark.parametrize("opt_name", ["sgd", "rowwise_adagrad"])
def test_offsets_arange_is_the_one_hot_contract(impl, opt_name):
    """One id per bag: pooled sum == plain gather, the bag update == backward_update (bits)."""
    mod = reference if impl == "reference" else cpu
    rows, pool, state, grad = one_hot_case()
    offsets = torch.arange(rows.shape[0] + 1)
    assert torch.equal(mod.bag_gather(pool, rows, offsets), mod.gather(pool, rows))
    opt = SparseOptimConfig(name=opt_name, lr=0.2)
    p1, s1, p2, s2 = pool.clone(), state.clone(), pool.clone(), state.clone()
    n1 = mod.bag_backward_update(p1, s1, rows, offsets, grad, opt)
    n2 = mod.backward_update(p2, s2, rows, grad, opt)
    assert torch.equal(p1, p2) and torch.equal(s1, s2) and torch.equal(n1, n2)
    assert not torch.equal(p1, pool)


def test_native_bag_update_sums_in_the_reference_order():
    """SGD on the native core is bit-exact with the reference (same scale, same order)."""
    if cpu_native.library() is None:
        pytest.skip(f"native core unavailable: {cpu_native.failure}")
    gen = torch.Generator().manual_seed(3)
    rows = torch.randint(0, 5, (200, 1), generator=gen)  # heavy duplicates
    offsets = torch.tensor([0, 0, 37, 90, 90, 200])
    weights = torch.rand(200, generator=gen)
    pool, grad = torch.randn(5, 16, generator=gen), torch.randn(5, 16, generator=gen)
    opt = SparseOptimConfig(name="sgd", lr=0.3)
    for mode in ("sum", "mean"):
        assert torch.equal(cpu.bag_gather(pool, rows, offsets, weights, mode),
                           reference.bag_gather(pool, rows, offsets, weights, mode))
        p1, p2 = pool.clone(), pool.clone()
        cpu.bag_backward_update(p1, torch.empty(0), rows, offsets, grad, opt, weights, mode)
        reference.bag_backward_update(p2, torch.empty(0), rows, offsets, grad, opt, weights,
                                      mode)
        assert torch.equal(p1, p2), mode


def test_dispatch_picks_cpu_and_respects_the_forced_reference(monkeypatch):
    calls = []
    monkeypatch.setattr(cpu, "bag_gather", lambda *a: calls.append("cpu") or "cpu")
    monkeypatch.setitem(kernels._BAG_BACKENDS, "cpu", (cpu.bag_gather, cpu.bag_backward_update))
    rows, pool, _, _ = one_hot_case()
    offsets = torch.arange(rows.shape[0] + 1)
    assert kernels.bag_gather(pool, rows, offsets) == "cpu"
    kernels.set_backend("reference")
    try:
        assert torch.equal(kernels.bag_gather(pool, rows, offsets), reference.gather(pool, rows))
    finally:
        kernels.set_backend(None)
    assert calls == ["cpu"]


@pytest.mark.parametrize("mode", ["sum", "mean"])
def test_bag_lookup_updates_in_backward_and_feeds_the_sink(mode):
    gen = torch.Generator().manual_seed(1)
    pool, state = torch.randn(30, 4, generator=gen), torch.rand(30, generator=gen)
    rows = torch.randint(-1, 30, (25, 2), generator=gen)
    offsets = torch.tensor([0, 4, 4, 11, 25])
    weights = torch.rand(25, generator=gen)
    target = torch.randn(4, 8, generator=gen)
    opt = SparseOptimConfig(lr=0.1)
    expect_pool, expect_state = pool.clone(), state.clone()
    got = []
    out = kernels.bag_lookup(pool, state, rows, offsets, opt, weights, mode, sink=got.append)
    torch.testing.assert_close(out, reference.bag_gather(expect_pool, rows, offsets, weights,
                                                         mode))
    loss = ((out - target) ** 2).sum()
    loss.backward()
    norms = reference.bag_backward_update(expect_pool, expect_state, rows, offsets,
                                          2 * (out.detach() - target), opt, weights, mode)
    torch.testing.assert_close(pool, expect_pool, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(state, expect_state, rtol=1e-5, atol=1e-6)
    assert len(got) == 1 and got[0].shape == (25, 2)
    torch.testing.assert_close(got[0], norms, rtol=1e-5, atol=1e-6)
    with torch.no_grad():  # no grad: a plain pooled read, nothing recorded
        assert not kernels.bag_lookup(pool, state, rows, offsets, opt, weights, mode).requires_grad


@pytest.mark.parametrize("impl", [reference, cpu])
@pytest.mark.parametrize("offsets, weights, mode, message", [
    (torch.tensor([0, 2, 5]), None, "max", "mode must be 'sum' or 'mean'"),
    (torch.tensor([0, 2, 4]), None, "sum", r"offsets must start at 0 and end at 5"),
    (torch.tensor([1, 2, 5]), None, "sum", r"offsets must start at 0"),
    (torch.tensor([0, 4, 2, 5]), None, "sum", "offsets must be non-decreasing"),
    (torch.tensor([[0, 5]]), None, "sum", r"offsets must be \[bags \+ 1\]"),
    (torch.tensor([0.0, 5.0]), None, "sum", "offsets must be int32 or int64"),
    (torch.tensor([0, 5]), torch.ones(4), "sum", r"weights must be float \[5\]"),
])
def test_bad_bags_are_named(impl, offsets, weights, mode, message):
    pool, rows = torch.zeros(6, 4), torch.zeros(5, 1, dtype=torch.int64)
    with pytest.raises(ValueError, match=message):
        impl.bag_gather(pool, rows, offsets, weights, mode)
    with pytest.raises(ValueError, match=message):
        impl.bag_backward_update(pool, torch.zeros(6), rows, offsets,
                                 torch.zeros(max(offsets.shape[-1] - 1, 0), 4),
                                 SparseOptimConfig(), weights, mode)


def test_cpu_names_the_out_of_range_row_and_the_grad_shape():
    pool = torch.zeros(3, 4)
    rows = torch.tensor([[0], [2], [3]])
    with pytest.raises(ValueError, match=r"rows\[2\] = 3 is out of range for a pool of 3"):
        cpu.bag_gather(pool, rows, torch.tensor([0, 1, 3]))
    with pytest.raises(ValueError, match=r"grad must be \[2, 4\]"):
        cpu.bag_backward_update(pool, torch.zeros(3), rows[:2], torch.tensor([0, 1, 2]),
                                torch.zeros(2, 3), SparseOptimConfig())


def test_native_bags_split_over_threads_give_the_reference_bits():
    """Big enough that the native core splits bags, the sort and the segments over 4 threads."""
    if cpu_native.library() is None:
        pytest.skip(f"native core unavailable: {cpu_native.failure}")
    gen = torch.Generator().manual_seed(5)
    lengths = torch.randint(0, 60, (5000,), generator=gen)
    offsets = torch.cat([torch.zeros(1, dtype=torch.int64), lengths.cumsum(0)])
    n = int(offsets[-1])
    assert n > 140_000
    rows = torch.randint(0, 3000, (n, 1), generator=gen, dtype=torch.int32)
    weights = torch.rand(n, generator=gen)
    pool, grad = torch.randn(3000, 16, generator=gen), torch.randn(5000, 16, generator=gen)
    opt = SparseOptimConfig(name="sgd", lr=0.05)
    threads = torch.get_num_threads()
    torch.set_num_threads(4)
    try:
        got = cpu.bag_gather(pool, rows, offsets, weights, "mean")
        p1 = pool.clone()
        n1 = cpu.bag_backward_update(p1, torch.empty(0), rows, offsets, grad, opt, weights,
                                     "mean")
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(got, reference.bag_gather(pool, rows, offsets, weights, "mean"))
    p2 = pool.clone()
    n2 = reference.bag_backward_update(p2, torch.empty(0), rows, offsets, grad, opt, weights,
                                       "mean")
    assert torch.equal(p1, p2)
    torch.testing.assert_close(n1, n2, rtol=1e-5, atol=1e-6)
