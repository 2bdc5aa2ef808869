"""The reference kernels against a plain per-occurrence loop: the contract itself."""
import pytest
import torch

from fiited.kernels import reference
from fiited.optim import SparseOptimConfig


def loop_update(pool, state, rows, grad, opt):
    """The contract written as loops: coalesce by summing, one optimizer step per row."""
    n, k = rows.shape
    c = pool.shape[1]
    sums: dict[int, torch.Tensor] = {}
    norms = torch.zeros(n, k)
    for i in range(n):
        for j in range(k):
            g = grad[i, j * c:(j + 1) * c].double()
            norms[i, j] = float(g.norm())
            r = int(rows[i, j])
            if r >= 0:
                sums[r] = sums.get(r, torch.zeros(c, dtype=torch.float64)) + g
    for r, g in sums.items():
        if opt.name == "sgd":
            pool[r] -= (opt.lr * g).float()
        else:
            state[r] += float((g * g).mean())
            pool[r] -= (opt.lr * g / (state[r].double().sqrt() + opt.eps)).float()
    return norms


@pytest.mark.parametrize("dtype", [torch.int32, torch.int64])
def test_gather_reads_rows_and_zero_fills_absent(dtype):
    pool = torch.arange(12.0).view(4, 3)
    rows = torch.tensor([[2, -1], [0, 2]], dtype=dtype)
    out = reference.gather(pool, rows)
    assert out.tolist() == [[6, 7, 8, 0, 0, 0], [0, 1, 2, 6, 7, 8]]


@pytest.mark.parametrize("name", ["sgd", "rowwise_adagrad"])
def test_update_coalesces_duplicates_into_one_step(name):
    gen = torch.Generator().manual_seed(0)
    rows = torch.tensor([[1, -1], [3, 1], [1, 0]])
    pool = torch.randn(5, 4, generator=gen)
    state = torch.rand(5, generator=gen) if name != "sgd" else torch.empty(0)
    grad = torch.randn(3, 8, generator=gen)
    opt = SparseOptimConfig(name=name, lr=0.3)
    p1, s1 = pool.clone(), state.clone()
    norms = reference.backward_update(p1, s1, rows, grad, opt)
    p2, s2 = pool.clone(), state.clone()
    expect = loop_update(p2, s2, rows, grad, opt)
    torch.testing.assert_close(p1, p2, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(s1, s2, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(norms, expect, rtol=1e-6, atol=1e-6)
    assert torch.equal(p1[[2, 4]], pool[[2, 4]])  # untouched rows stay put
    assert norms[0, 1] > 0  # absent chunks still get their gradient norm


def test_adagrad_step_uses_the_summed_gradient_once():
    pool = torch.zeros(1, 2)
    state = torch.zeros(1)
    rows = torch.tensor([[0], [0]])
    grad = torch.tensor([[1.0, 1.0], [1.0, 1.0]])
    reference.backward_update(pool, state, rows, grad, SparseOptimConfig(lr=1.0, eps=0.0))
    # summed g = (2, 2): acc = mean(g^2) = 4; w = -2 / sqrt(4) = -1 (two separate steps give less)
    assert state.tolist() == [4.0]
    assert pool.tolist() == [[-1.0, -1.0]]


def test_empty_batch_changes_nothing():
    pool = torch.randn(3, 4)
    before = pool.clone()
    rows = torch.empty(0, 2, dtype=torch.int64)
    assert reference.gather(pool, rows).shape == (0, 8)
    norms = reference.backward_update(pool, torch.zeros(3), rows, torch.empty(0, 8),
                                      SparseOptimConfig())
    assert norms.shape == (0, 2)
    assert torch.equal(pool, before)


def test_bad_shapes_are_named():
    pool = torch.zeros(3, 4)
    with pytest.raises(ValueError, match="rows must be int32 or int64"):
        reference.gather(pool, torch.zeros(2, 1))
    with pytest.raises(ValueError, match=r"grad must be \[2, 4\]"):
        reference.backward_update(pool, torch.zeros(3), torch.zeros(2, 1, dtype=torch.int64),
                                  torch.zeros(2, 3), SparseOptimConfig())
