"""Pooled (bag) kernels of every backend against a hand-written ``nn.EmbeddingBag`` oracle.

The oracle runs one ``nn.EmbeddingBag(sparse=True)`` per chunk over the pool plus a zero row
(absent chunks, -1, point there), takes its sparse gradient and applies SGD / row-wise Adagrad
written out by hand. Backends: reference, CPU native core, CPU torch fallback, and Triton under
``TRITON_INTERPRET=1`` (in a subprocess: the interpreter must be on before triton is imported;
``python tests/fiited/test_kernels_bags.py triton`` runs the same checks there, and ``... cuda``
runs them compiled on a GPU).
"""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from fiited.optim import SparseOptimConfig

REPO = Path(__file__).resolve().parents[2]

# bags, max bag length, K, C, pool rows, absent share, hot share, rows dtype, offsets dtype
CASES = [
    (12, 6, 1, 16, 7, 0.0, 0.3, torch.int64, torch.int64),    # duplicates inside bags
    (10, 5, 1, 8, 50, 0.0, 0.0, torch.int32, torch.int64),    # a compiled-constant width
    (9, 4, 4, 4, 60, 0.5, 0.2, torch.int64, torch.int32),     # chunked, half absent
    (8, 7, 2, 12, 30, 0.3, 0.3, torch.int32, torch.int32),    # C not a power of 2
    (6, 3, 4, 5, 20, 1.0, 0.0, torch.int64, torch.int64),     # every chunk absent
    (5, 0, 2, 12, 9, 0.0, 0.0, torch.int64, torch.int64),     # every bag empty
]
VARIANTS = [(mode, weighted, opt) for mode in ("sum", "mean") for weighted in (False, True)
            for opt in ("sgd", "rowwise_adagrad")]


def make_case(case, seed):
    b, max_len, k, c, p, absent, hot, rows_dtype, off_dtype = case
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.randint(0, max_len + 1, (b,), generator=gen)
    lengths[::4] = 0  # empty bags in every case
    offsets = torch.cat([torch.zeros(1, dtype=torch.int64), lengths.cumsum(0)])
    n = int(offsets[-1])
    rows = torch.randint(0, p, (n, k), generator=gen)
    rows = torch.where(torch.rand(n, k, generator=gen) < hot, torch.zeros_like(rows), rows)
    rows = torch.where(torch.rand(n, k, generator=gen) < absent, torch.full_like(rows, -1), rows)
    weights = torch.randn(n, generator=gen)  # negative weights too
    pool = torch.randn(p, c, generator=gen)
    state = torch.rand(p, generator=gen)
    grad = torch.randn(b, k * c, generator=gen)
    return rows.to(rows_dtype), offsets.to(off_dtype), weights, pool, state, grad


def oracle(pool, state, rows, offsets, weights, mode, grad, opt):
    """(pooled out, new pool, new state, per-occurrence norms) from nn.EmbeddingBag + loops."""
    n, k = rows.shape
    p, c = pool.shape
    offsets = offsets.long()
    lengths = offsets[1:] - offsets[:-1]
    scale = [1.0] * n  # each occurrence's factor, written out per bag
    for bag in range(lengths.numel()):
        for i in range(int(offsets[bag]), int(offsets[bag + 1])):
            w = 1.0 if weights is None else float(weights[i])
            scale[i] = w / int(lengths[bag]) if mode == "mean" else w
    psw = None if weights is None else torch.tensor(scale)
    table = torch.cat([pool, torch.zeros(1, c)])
    outs, dense_grad = [], torch.zeros(p + 1, c)
    for j in range(k):
        emb = nn.EmbeddingBag(p + 1, c, mode="sum" if psw is not None else mode, sparse=True,
                              include_last_offset=True)
        with torch.no_grad():
            emb.weight.copy_(table)
        idx = torch.where(rows[:, j] >= 0, rows[:, j].long(), p)
        out = emb(idx, offsets, per_sample_weights=psw)
        out.backward(grad[:, j * c:(j + 1) * c])
        outs.append(out.detach())
        if emb.weight.grad is not None:
            dense_grad += emb.weight.grad.to_dense()
    g = dense_grad[:p]  # duplicates summed (coalesced) by the sparse gradient itself
    new_state = state.clone()
    if opt.name == "sgd":
        new_pool = pool - opt.lr * g
    else:
        new_state = state + g.pow(2).mean(dim=1)
        new_pool = pool - g * (opt.lr / (new_state.sqrt() + opt.eps)).unsqueeze(1)
    bag_of = torch.repeat_interleave(torch.arange(lengths.numel()), lengths)
    norms = torch.zeros(n, k)
    for i in range(n):
        for j in range(k):
            norms[i, j] = float((grad[bag_of[i], j * c:(j + 1) * c] * scale[i]).norm())
    out = torch.cat(outs, dim=1) if k else torch.zeros(lengths.numel(), 0)
    return out, new_pool, new_state, norms


def check_backend(gather_fn, update_fn, tol: dict) -> int:
    """Every case x variant against the oracle; returns how many were checked."""
    checked = 0
    for ci, case in enumerate(CASES):
        rows, offsets, weights, pool, state, grad = make_case(case, seed=ci)
        for mode, weighted, opt_name in VARIANTS:
            where = f"case {ci} {mode} weighted={weighted} {opt_name}"
            w = weights if weighted else None
            opt = SparseOptimConfig(name=opt_name, lr=0.1)
            st = state if opt_name != "sgd" else torch.empty(0)
            out, p2, s2, n2 = oracle(pool, state, rows, offsets, w, mode, grad, opt)
            got = gather_fn(pool, rows, offsets, w, mode)
            torch.testing.assert_close(got, out, **tol, msg=where)
            empty = (offsets[1:] == offsets[:-1]).nonzero().view(-1)
            assert empty.numel() and torch.equal(got[empty], torch.zeros_like(got[empty])), where
            p1, s1 = pool.clone(), st.clone()
            n1 = update_fn(p1, s1, rows, offsets, grad, opt, w, mode)
            assert n1.shape == rows.shape and n1.dtype == torch.float32, where
            torch.testing.assert_close(p1, p2, **tol, msg=where)
            if opt_name != "sgd":
                torch.testing.assert_close(s1, s2, **tol, msg=where)
            torch.testing.assert_close(n1, n2, **tol, msg=where)
            if (rows >= 0).any():
                assert not torch.equal(p1, pool), where  # the update did something
            checked += 1
    return checked


TOL = {"rtol": 1e-5, "atol": 1e-5}


@pytest.fixture(params=["reference", "native", "torch"])
def backend(request, monkeypatch):
    from fiited.kernels import cpu, cpu_native, reference

    if request.param == "reference":
        return reference.bag_gather, reference.bag_backward_update
    if request.param == "native" and cpu_native.library() is None:
        pytest.skip(f"native core unavailable: {cpu_native.failure}")
    if request.param == "torch":
        monkeypatch.setattr(cpu_native, "_library", None)
        monkeypatch.setattr(cpu_native, "_tried", True)
    return cpu.bag_gather, cpu.bag_backward_update


def test_bag_kernels_match_embedding_bag(backend):
    assert check_backend(*backend, TOL) == len(CASES) * len(VARIANTS)


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton is not installed")
def test_triton_bag_kernels_match_embedding_bag_under_interpreter():
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    out = subprocess.run([sys.executable, __file__, "triton"], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-4000:]
    assert f"CHECKED {len(CASES) * len(VARIANTS)}" in out.stdout


def _triton_main(device: str) -> None:
    """The checks on Triton: interpreted on CPU tensors, or compiled on ``cuda`` (a GPU run:
    ``python tests/fiited/test_kernels_bags.py cuda``); the oracle always runs on CPU."""
    from fiited.kernels import triton_kernels as tk

    tk.UPDATE_TILE = 4  # duplicates must cross program edges
    if device == "cpu":
        print("CHECKED", check_backend(tk.bag_gather, tk.bag_backward_update, TOL))
        return

    def on(t):
        return None if t is None else t.to(device)

    def gather(pool, rows, offsets, w, mode):
        return tk.bag_gather(on(pool), on(rows), on(offsets), on(w), mode).cpu()

    def update(pool, state, rows, offsets, grad, opt, w, mode):
        p, s = on(pool), on(state)
        norms = tk.bag_backward_update(p, s, on(rows), on(offsets), on(grad), opt, on(w), mode)
        pool.copy_(p.cpu())
        state.copy_(s.cpu())
        return norms.cpu()

    print("CHECKED", check_backend(gather, update, TOL))


if __name__ == "__main__" and sys.argv[1:] in (["triton"], ["cuda"]):
    _triton_main("cpu" if sys.argv[1] == "triton" else "cuda")
