"""Triton: row-wise Adagrad with one accumulator per logical row (``state_rows``, contract in
``reference.py``), built on ``triton_kernels``' deterministic sorted pipeline.

That pipeline, run as SGD (lr 1) on a scratch table of one [K*C] row per distinct state row,
sums each logical row's gradients in a fixed order (no float atomics); ``_row_apply_kernel``
then grows each row's accumulator by the mean of g^2 over its present chunks and steps them all
(one program per logical row). The callers compute the norms with torch ops.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from fiited.kernels.triton_kernels import _check_rows, _update
from fiited.optim import SparseOptimConfig


@triton.jit
def _row_apply_kernel(sums_ptr, rep_ptr, srow_ptr, pool_ptr, state_ptr, W, C, K, lr, eps,
                      BLOCK_W: tl.constexpr):
    """Logical row u: ``sums`` holds minus its summed gradient [W = K*C], ``rep`` its chunks'
    pool rows [K] (-1 absent), ``srow`` its state row (-1: none, skipped)."""
    u = tl.program_id(0).to(tl.int64)
    srow = tl.load(srow_ptr + u).to(tl.int64)
    if srow >= 0:
        cols = tl.arange(0, BLOCK_W)
        cmask = cols < W
        chunk = cols // C
        row = tl.load(rep_ptr + u * K + chunk, mask=cmask, other=-1).to(tl.int64)
        present = cmask & (row >= 0)
        g = -tl.load(sums_ptr + u * W + cols, mask=present, other=0.0)
        width = tl.sum(present.to(tl.float32), axis=0)
        if width > 0:
            st = tl.load(state_ptr + srow) + tl.sum(g * g, axis=0) / width
            tl.store(state_ptr + srow, st)
            ptrs = pool_ptr + row * C + (cols - chunk * C)
            w = tl.load(ptrs, mask=present, other=0.0).to(tl.float32)
            w = w - g * (lr / (tl.sqrt(st) + eps))
            tl.store(ptrs, w.to(pool_ptr.dtype.element_ty), mask=present)


def row_update(pool, state, rows, state_rows, grad, opt, bag_args) -> None:
    """Per-logical-row Adagrad: sums per distinct state row by the sorted SGD pipeline on a
    scratch table (``bag_args`` of ``_share`` at width K*C, K=1), then one program per row."""
    n, k = rows.shape
    p, c = pool.shape
    flat = rows.reshape(-1).contiguous()
    _check_rows(flat, int(flat.max()), p)
    srows = state_rows.long()
    uniq, inverse = torch.unique(srows, sorted=True, return_inverse=True)
    keys = torch.where(srows >= 0, inverse, torch.full_like(inverse, -1))
    u, w = uniq.numel(), k * c
    sums = torch.zeros(u, w, dtype=torch.float32, device=pool.device)
    scratch = torch.empty(n, dtype=torch.float32, device=pool.device)
    _update(sums, sums, keys, grad, SparseOptimConfig(name="sgd", lr=1.0), scratch, bag_args)
    first = torch.full((u,), n, dtype=torch.int64, device=pool.device)
    first.scatter_reduce_(0, inverse, torch.arange(n, device=pool.device), "amin")
    rep = rows.long().index_select(0, first).contiguous()
    _row_apply_kernel[(u,)](sums, rep, uniq, pool, state, w, c, k, float(opt.lr),
                            float(opt.eps), BLOCK_W=max(16, triton.next_power_of_2(w)))
