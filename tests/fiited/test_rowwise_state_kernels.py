"""Row-wise Adagrad with one accumulator per logical row (``state_rows``): every backend, one-hot
and bags, against the reference; the reference itself against the rule written out by hand.

Triton runs under ``TRITON_INTERPRET=1`` in a subprocess (the interpreter must be on before
triton is imported): ``python tests/fiited/test_rowwise_state_kernels.py triton``; ``cuda``
runs the same checks compiled on a GPU.
"""
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from fiited.kernels import reference  # noqa: E402
from fiited.optim import SparseOptimConfig  # noqa: E402

# n lookups, K, C, logical rows, absent chunk share, hot share, share without a state row, dtype
CASES = [
    (40, 4, 4, 6, 0.0, 0.5, 0.0, torch.int64),     # heavy duplicates, full rows
    (30, 2, 8, 9, 0.4, 0.3, 0.1, torch.int32),     # pruned chunks, rows without an entry
    (16, 4, 12, 200, 0.9, 0.0, 0.0, torch.int64),  # FIITED-like, mostly pruned, mostly unique
    (12, 4, 4, 5, 1.0, 0.0, 0.0, torch.int32),     # all pruned: no step, no accumulator change
    (0, 2, 8, 4, 0.0, 0.0, 0.0, torch.int64),      # empty batch
]
OPT = SparseOptimConfig(name="rowwise_adagrad", lr=0.1, accumulator="row")


def make_case(case, seed):
    """Lookups of logical rows (duplicates included) through a consistent chunk table."""
    n, k, c, rows_, absent, hot, orphan, dtype = case
    gen = torch.Generator().manual_seed(seed)
    p = rows_ * k + 3
    addr = torch.randperm(p, generator=gen)[: rows_ * k].view(rows_, k)
    addr = torch.where(torch.rand(rows_, k, generator=gen) < absent, -1, addr)
    srows = torch.randint(0, rows_, (n,), generator=gen)
    srows = torch.where(torch.rand(n, generator=gen) < hot, 0, srows)
    srows = torch.where(torch.rand(n, generator=gen) < orphan, -1, srows)
    rows = torch.where((srows >= 0).unsqueeze(1), addr[srows.clamp_min(0)], -1).to(dtype)
    state = torch.rand(rows_ + 2, generator=gen)
    pool, grad = torch.randn(p, c, generator=gen), torch.randn(n, k * c, generator=gen)
    offsets = torch.sort(torch.randint(0, n + 1, (max(n // 3, 1) + 1,), generator=gen)).values
    offsets[0], offsets[-1] = 0, n
    bag_grad = torch.randn(offsets.numel() - 1, k * c, generator=gen)
    weights = torch.rand(n, generator=gen) + 0.5
    return rows, srows.to(dtype), pool, state, grad, offsets, bag_grad, weights


def check_backend(update_fn, bag_update_fn, device="cpu"):
    """Every case, one-hot and bags (sum, mean, weighted), against the reference on CPU."""
    checked = 0
    tol = {"rtol": 1e-5, "atol": 1e-5}
    for ci, case in enumerate(CASES):
        rows, srows, pool, state, grad, offsets, bag_grad, weights = make_case(case, ci)
        variants = [("one-hot", None, None, "sum"), ("bag sum", offsets, None, "sum"),
                    ("bag mean", offsets, None, "mean"), ("bag weighted", offsets, weights, "sum")]
        for name, offs, w, mode in variants:
            where = f"case {ci} {name}"
            p2, s2 = pool.clone(), state.clone()
            d = lambda t: None if t is None else t.to(device)  # noqa: E731
            p1, s1 = d(pool.clone()), d(state.clone())
            if offs is None:
                n2 = reference.backward_update(p2, s2, rows, grad, OPT, srows)
                n1 = update_fn(p1, s1, d(rows), d(grad), OPT, d(srows))
            else:
                n2 = reference.bag_backward_update(p2, s2, rows, offs, bag_grad, OPT, w, mode,
                                                   srows)
                n1 = bag_update_fn(p1, s1, d(rows), d(offs), d(bag_grad), OPT, d(w), mode,
                                   d(srows))
            torch.testing.assert_close(p1.cpu(), p2, **tol, msg=where)
            torch.testing.assert_close(s1.cpu(), s2, **tol, msg=where)
            torch.testing.assert_close(n1.cpu(), n2, **tol, msg=where)
            if (rows >= 0).any():
                assert not torch.equal(p2, pool) and not torch.equal(s2, state), where
            else:
                assert torch.equal(p2, pool) and torch.equal(s2, state), where
            checked += 1
    return checked


NUM_CHECKS = 4 * len(CASES)


@pytest.fixture(params=["native", "torch"])
def cpu_path(request, monkeypatch):
    from fiited.kernels import cpu, cpu_native

    if request.param == "native" and cpu_native.library() is None:
        pytest.skip(f"native core unavailable: {cpu_native.failure}")
    if request.param == "torch":
        monkeypatch.setattr(cpu_native, "_library", None)
        monkeypatch.setattr(cpu_native, "_tried", True)
    return cpu


def test_cpu_row_state_matches_reference(cpu_path):
    assert check_backend(cpu_path.backward_update, cpu_path.bag_backward_update) == NUM_CHECKS


def test_dispatch_passes_state_rows_through(cpu_path):
    from fiited import kernels

    assert check_backend(kernels.backward_update, kernels.bag_backward_update) == NUM_CHECKS


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton is not installed")
def test_triton_row_state_matches_reference_under_interpreter():
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    out = subprocess.run([sys.executable, __file__, "triton"], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-4000:]
    assert f"CHECKED {NUM_CHECKS}" in out.stdout


def test_reference_is_the_rule_by_hand():
    """One logical row, chunks 0 and 2 of K=4 present, looked up twice: the accumulator grows by
    the mean of the summed g^2 over the 2*C present floats, both chunks take lr/(sqrt(acc)+eps),
    the absent chunks' gradient is ignored; a second row with no chunk keeps its accumulator."""
    c = 3
    rows = torch.tensor([[0, -1, 1, -1], [0, -1, 1, -1], [-1, -1, -1, -1]])
    srows = torch.tensor([1, 1, 0])
    pool = torch.randn(2, c)
    state = torch.tensor([0.7, 0.3])
    grad = torch.randn(3, 4 * c)
    p, s = pool.clone(), state.clone()
    reference.backward_update(p, s, rows, grad, OPT, srows)
    g = (grad[0] + grad[1]).view(4, c)
    acc = 0.3 + (g[0].pow(2).sum() + g[2].pow(2).sum()) / (2 * c)
    step = OPT.lr / (acc.sqrt() + OPT.eps)
    assert torch.isclose(s[1], acc) and s[0] == 0.7
    torch.testing.assert_close(p[0], pool[0] - step * g[0])
    torch.testing.assert_close(p[1], pool[1] - step * g[2])
    # The per-chunk rule (state per pool row) gives each chunk its own, different, step.
    p3, s3 = pool.clone(), torch.full((2,), 0.3)
    reference.backward_update(p3, s3, rows, grad, SparseOptimConfig(lr=0.1))
    assert not torch.allclose(p3, p)


def test_row_state_errors_name_the_argument():
    rows = torch.tensor([[0, 1]])
    pool, grad = torch.zeros(2, 2), torch.zeros(1, 4)
    with pytest.raises(ValueError, match=r"state_rows\[0\] = 5 is out of range"):
        reference.backward_update(pool, torch.zeros(3), rows, grad, OPT, torch.tensor([5]))
    with pytest.raises(ValueError, match="state_rows must be int32 or int64 \\[1\\]"):
        reference.backward_update(pool, torch.zeros(3), rows, grad, OPT, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="accumulator='rows'"):
        SparseOptimConfig(accumulator="rows")


if __name__ == "__main__":
    from fiited.kernels import triton_kernels as tk

    tk.UPDATE_TILE = 4  # duplicates must cross program edges
    dev = "cuda" if sys.argv[1:] == ["cuda"] else "cpu"
    print("CHECKED", check_backend(tk.backward_update, tk.bag_backward_update, dev))
