"""The CPU path (native core and its torch fallback) against the reference kernels.

Sums of duplicate rows run in the reference's order on both paths, so SGD updates match bit for
bit; row-wise Adagrad's mean of squares and the norms are summed in another order by the native
core, so those match to float32 rounding (rtol 1e-5).
"""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import fiited.kernels as kernels
from fiited.kernels import cpu, cpu_native, reference
from fiited.optim import SparseOptimConfig

REPO = Path(__file__).resolve().parents[2]

# n, k, c, pool rows, absent share, hot share, rows dtype
CASES = [
    (200, 1, 16, 7, 0.0, 0.0, torch.int64),      # heavy duplicates
    (150, 2, 12, 40, 0.3, 0.5, torch.int32),     # hot row + absent chunks, C not a power of 2
    (120, 4, 12, 300, 15 / 16, 0.0, torch.int64),  # FIITED-like: 1/16 present
    (100, 4, 5, 30, 0.1, 0.2, torch.int32),
    (50, 2, 12, 9, 1.0, 0.0, torch.int64),        # all absent
    (0, 2, 12, 9, 0.0, 0.0, torch.int32),         # empty batch
    (300, 1, 64, 20000, 0.0, 0.0, torch.int64),  # mostly unique rows
    # widths the native core compiles as constants (4, 8; others run its generic code)
    (160, 4, 4, 50, 0.5, 0.3, torch.int32),      # D=16 at K=4
    (90, 2, 8, 25, 0.2, 0.2, torch.int64),
    (70, 4, 32, 60, 0.1, 0.1, torch.int32),      # D=128 at K=4
]


@pytest.fixture(params=["native", "torch"])
def path(request, monkeypatch):
    """Run the CPU path on its native core, or with the core switched off (torch ops only)."""
    if request.param == "native":
        if cpu_native.library() is None:
            pytest.skip(f"native core unavailable: {cpu_native.failure}")
    else:
        monkeypatch.setattr(cpu_native, "_library", None)
        monkeypatch.setattr(cpu_native, "_tried", True)
    return request.param


def make_case(case, seed):
    n, k, c, p, absent, hot, dtype = case
    gen = torch.Generator().manual_seed(seed)
    rows = torch.randint(0, p, (n, k), generator=gen)
    rows = torch.where(torch.rand(n, k, generator=gen) < hot, torch.zeros_like(rows), rows)
    rows = torch.where(torch.rand(n, k, generator=gen) < absent, torch.full_like(rows, -1), rows)
    pool = torch.randn(p, c, generator=gen)
    state = torch.rand(p, generator=gen)
    grad = torch.randn(n, k * c, generator=gen)
    return rows.to(dtype), pool, state, grad


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"n{c[0]}k{c[1]}c{c[2]}p{c[3]}")
@pytest.mark.parametrize("opt_name", ["sgd", "rowwise_adagrad"])
def test_cpu_path_matches_reference(path, case, opt_name):
    rows, pool, state, grad = make_case(case, seed=len(case) + case[0])
    opt = SparseOptimConfig(name=opt_name, lr=0.05)
    assert torch.equal(cpu.gather(pool, rows), reference.gather(pool, rows))
    if opt_name == "sgd":
        state = torch.empty(0)
    p1, s1, p2, s2 = pool.clone(), state.clone(), pool.clone(), state.clone()
    n1 = cpu.backward_update(p1, s1, rows, grad, opt)
    n2 = reference.backward_update(p2, s2, rows, grad, opt)
    assert n1.shape == n2.shape == rows.shape and n1.dtype == torch.float32
    exact = path == "torch" or opt_name == "sgd"
    tol = {"rtol": 0, "atol": 0} if exact else {"rtol": 1e-5, "atol": 1e-6}
    torch.testing.assert_close(p1, p2, **tol)
    torch.testing.assert_close(s1, s2, **tol)
    torch.testing.assert_close(n1, n2, **({"rtol": 0, "atol": 0} if path == "torch"
                                          else {"rtol": 1e-5, "atol": 1e-6}))


def test_out_of_range_row_is_named_and_changes_nothing(path):
    pool, state = torch.randn(5, 4), torch.zeros(5)
    rows = torch.tensor([[1], [7], [2]])
    before = pool.clone()
    with pytest.raises(ValueError, match=r"rows\[1\] = 7 is out of range for a pool of 5 rows"):
        cpu.gather(pool, rows)
    with pytest.raises(ValueError, match=r"rows\[1\] = 7 is out of range"):
        cpu.backward_update(pool, state, rows, torch.ones(3, 4), SparseOptimConfig())
    assert torch.equal(pool, before) and torch.equal(state, torch.zeros(5))


def test_native_update_is_the_same_for_any_thread_count():
    """Big enough (150k occurrences) that the collect and radix passes split across threads."""
    if cpu_native.library() is None:
        pytest.skip(f"native core unavailable: {cpu_native.failure}")
    rows, pool, state, grad = make_case((75000, 2, 6, 70000, 0.2, 0.3, torch.int64), seed=3)
    opt = SparseOptimConfig(lr=0.1)
    threads = torch.get_num_threads()
    out = []
    try:
        for t in (1, 3):
            torch.set_num_threads(t)
            p, s = pool.clone(), state.clone()
            out.append((p, s, cpu.backward_update(p, s, rows, grad, opt)))
    finally:
        torch.set_num_threads(threads)
    (p1, s1, n1), (p2, s2, n2) = out
    assert torch.equal(p1, p2) and torch.equal(s1, s2) and torch.equal(n1, n2)
    p3, s3 = pool.clone(), state.clone()
    n3 = reference.backward_update(p3, s3, rows, grad, opt)
    torch.testing.assert_close(p1, p3, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(s1, s3, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(n1, n3, rtol=1e-5, atol=1e-6)


def test_float64_pool_falls_back_to_torch_ops_and_still_matches():
    rows, pool, state, grad = make_case(CASES[1], seed=5)
    pool, grad = pool.double(), grad.double()
    opt = SparseOptimConfig(name="sgd", lr=0.1)
    p1, p2 = pool.clone(), pool.clone()
    cpu.backward_update(p1, torch.empty(0), rows, grad, opt)
    reference.backward_update(p2, torch.empty(0), rows, grad, opt)
    assert torch.equal(p1, p2) and p1.dtype == torch.float64


@pytest.mark.parametrize("opt_name", ["sgd", "rowwise_adagrad"])
def test_autograd_through_lookup_cpu_backend_equals_reference(opt_name):
    """A real backward through fiited.kernels.lookup: same pool, state and sink norms."""
    assert kernels.backend_name("cpu") == "cpu"
    rows, pool, state, _ = make_case(CASES[1], seed=9)
    opt = SparseOptimConfig(name=opt_name, lr=0.05)
    if opt_name == "sgd":
        state = torch.empty(0)
    weights = torch.randn(rows.shape[1] * pool.shape[1])
    outcome = {}
    for backend in ("auto", "reference"):
        kernels.set_backend(backend)
        try:
            p, s, sunk = pool.clone(), state.clone(), []
            out = kernels.lookup(p, s, rows, opt, sink=sunk.append)
            (out * weights).pow(2).sum().backward()
            outcome[backend] = (p, s, sunk[0])
        finally:
            kernels.set_backend(None)
    (p1, s1, n1), (p2, s2, n2) = outcome["auto"], outcome["reference"]
    assert not torch.equal(p1, pool)
    tol = {"rtol": 0, "atol": 0} if opt_name == "sgd" else {"rtol": 1e-5, "atol": 1e-6}
    torch.testing.assert_close(p1, p2, **tol)
    torch.testing.assert_close(s1, s2, **tol)
    torch.testing.assert_close(n1, n2, rtol=1e-5, atol=1e-6)


def test_clean_cache_builds_the_core_and_env_forces_reference(tmp_path):
    """A fresh process with an empty cache compiles the core; FIITED_KERNELS forces reference."""
    script = ("import fiited.kernels as k; from fiited.kernels import cpu_native as n; "
              "lib = n.library(); print(k.backend_name('cpu'), lib is not None, n.failure)")
    env = {**os.environ, "FIITED_CACHE_DIR": str(tmp_path / "cache"),
           "FIITED_KERNELS": "reference"}
    out = subprocess.run([sys.executable, "-c", script], env=env, cwd=REPO, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[0] == "reference"
    if out.stdout.split()[1] != "True":
        pytest.skip(f"no native core here: {out.stdout}")
    assert list((tmp_path / "cache").glob("fiited_cpu_*.so"))


def test_native_core_can_be_switched_off(monkeypatch):
    monkeypatch.setattr(cpu_native, "_library", None)
    monkeypatch.setattr(cpu_native, "_tried", False)
    monkeypatch.setattr(cpu_native, "failure", None)
    monkeypatch.setenv("FIITED_CPU_NATIVE", "0")
    assert cpu_native.library() is None
    assert cpu_native.failure == "disabled by FIITED_CPU_NATIVE=0"
