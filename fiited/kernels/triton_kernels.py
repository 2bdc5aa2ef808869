"""Triton kernels (CUDA) for the reference contract: gather and a deterministic fused update.

The update is sort-based, so a fixed input always gives the same bits (no float atomics):

1. ``torch.sort(rows, stable=True)`` groups the occurrences of each pool row, in occurrence order.
2. ``_mark_kernel`` flags segment starts (a new row) and cuts every segment at multiples of
   ``SEGMENT_TILE`` sorted positions, so that one hot row's thousands of occurrences are shared
   among many programs instead of serialising one of them.
3. ``_segment_kernel`` (one program per piece) sums its gradient slices tile by tile in a fixed
   order, writes the per-occurrence norms, and either applies the optimizer (a piece that is a
   whole segment: the common case) or leaves its partial sum.
4. ``_finish_kernel`` (one program per split segment) sums its partials in order and applies
   the optimizer.

Absent chunks (rows < 0) sort first; their pieces only write norms.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from fiited.kernels.reference import check_shapes
from fiited.optim import SparseOptimConfig

SEGMENT_TILE = 512  # max sorted occurrences per program in the update; a power of two


def _blocks(c: int, elems: int) -> tuple[int, int]:
    """A [rows, C] tile of about ``elems`` elements (C padded to a power of two)."""
    block_c = max(16, triton.next_power_of_2(max(c, 1)))
    return max(1, min(128, elems // block_c)), block_c


@triton.jit
def _gather_kernel(pool_ptr, rows_ptr, out_ptr, M, C,
                   BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr):
    r = tl.program_id(0).to(tl.int64) * BLOCK_R + tl.arange(0, BLOCK_R)
    rmask = r < M
    row = tl.load(rows_ptr + r, mask=rmask, other=-1).to(tl.int64)
    cols = tl.arange(0, BLOCK_C)
    cmask = cols < C
    present = row >= 0
    vals = tl.load(pool_ptr + row[:, None] * C + cols[None, :],
                   mask=present[:, None] & cmask[None, :], other=0.0)
    tl.store(out_ptr + r[:, None] * C + cols[None, :], vals,
             mask=rmask[:, None] & cmask[None, :])


@triton.jit
def _mark_kernel(keys_ptr, flag_ptr, cut_ptr, M, TILE: tl.constexpr, BLOCK: tl.constexpr):
    i = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    m = i < M
    key = tl.load(keys_ptr + i, mask=m, other=0)
    prev = tl.load(keys_ptr + i - 1, mask=m & (i > 0), other=0)
    start = (i == 0) | (key != prev)
    tl.store(flag_ptr + i, start.to(tl.int8), mask=m)
    cut = start | ((i % TILE) == 0)
    tl.store(cut_ptr + i, cut.to(tl.int8), mask=m)


@triton.jit
def _apply_row(pool_ptr, state_ptr, row, acc, cols, cmask, C, lr, eps, ADAGRAD: tl.constexpr):
    ptrs = pool_ptr + row * C + cols
    w = tl.load(ptrs, mask=cmask, other=0.0).to(tl.float32)
    if ADAGRAD:
        st = tl.load(state_ptr + row) + tl.sum(acc * acc, axis=0) / C
        tl.store(state_ptr + row, st)
        w = w - acc * (lr / (tl.sqrt(st) + eps))
    else:
        w = w - lr * acc
    tl.store(ptrs, w.to(pool_ptr.dtype.element_ty), mask=cmask)


@triton.jit
def _segment_kernel(keys_ptr, perm_ptr, flag_ptr, starts_ptr, grad_ptr, norms_ptr, partial_ptr,
                    split_ptr, pool_ptr, state_ptr, S, M, C, lr, eps, ADAGRAD: tl.constexpr,
                    BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr):
    s = tl.program_id(0).to(tl.int64)
    start = tl.load(starts_ptr + s)
    end = tl.load(starts_ptr + s + 1, mask=s + 1 < S, other=M)
    cols = tl.arange(0, BLOCK_C)
    cmask = cols < C
    acc = tl.zeros([BLOCK_C], dtype=tl.float32)
    for off in range(start, end, BLOCK_R):
        r = off + tl.arange(0, BLOCK_R)
        m = r < end
        occ = tl.load(perm_ptr + r, mask=m, other=0).to(tl.int64)
        g = tl.load(grad_ptr + occ[:, None] * C + cols[None, :],
                    mask=m[:, None] & cmask[None, :], other=0.0).to(tl.float32)
        acc += tl.sum(g, axis=0)
        tl.store(norms_ptr + occ, tl.sqrt(tl.sum(g * g, axis=1)), mask=m)
    row = tl.load(keys_ptr + start).to(tl.int64)
    first = tl.load(flag_ptr + start) != 0
    last = tl.load(flag_ptr + end) != 0
    # 1 marks the first piece of a segment that continues in later pieces: _finish_kernel's work.
    tl.store(split_ptr + s, ((row >= 0) & first & (last == 0)).to(tl.int8))
    if row >= 0:
        if first & last:
            _apply_row(pool_ptr, state_ptr, row, acc, cols, cmask, C, lr, eps, ADAGRAD)
        else:
            tl.store(partial_ptr + s * C + cols, acc, mask=cmask)


@triton.jit
def _finish_kernel(split_ptr, keys_ptr, flag_ptr, starts_ptr, partial_ptr, pool_ptr, state_ptr,
                   S, M, C, lr, eps, ADAGRAD: tl.constexpr, BLOCK_C: tl.constexpr):
    s = tl.load(split_ptr + tl.program_id(0))
    row = tl.load(keys_ptr + tl.load(starts_ptr + s)).to(tl.int64)
    cols = tl.arange(0, BLOCK_C)
    cmask = cols < C
    acc = tl.load(partial_ptr + s * C + cols, mask=cmask, other=0.0)
    t = s
    more = t < S  # always true: a split segment has a next piece
    while more:
        t += 1
        acc += tl.load(partial_ptr + t * C + cols, mask=cmask, other=0.0)
        end = tl.load(starts_ptr + t + 1, mask=t + 1 < S, other=M)
        more = tl.load(flag_ptr + end) == 0
    _apply_row(pool_ptr, state_ptr, row, acc, cols, cmask, C, lr, eps, ADAGRAD)


def _check_rows(flat: torch.Tensor, max_row: int, num_rows: int) -> None:
    if max_row >= num_rows:
        bad = int(torch.nonzero(flat >= num_rows)[0, 0])
        raise ValueError(f"rows[{bad}] = {int(flat[bad])} is out of range for a pool of "
                         f"{num_rows} rows")


def gather(pool: torch.Tensor, rows: torch.Tensor, *, out: torch.Tensor | None = None
           ) -> torch.Tensor:
    """out[n, k*C:(k+1)*C] = pool[rows[n, k]], or zeros where rows[n, k] < 0.

    ``out`` (optional, contiguous [N, K*C]) receives the result; checks poison it first.
    """
    check_shapes(pool, rows)
    n, k = rows.shape
    p, c = pool.shape
    flat = rows.reshape(-1)
    m = flat.numel()
    if out is None:
        out = torch.empty(n, k * c, dtype=pool.dtype, device=pool.device)
    if m == 0 or c == 0:
        return out.zero_()
    _check_rows(flat, int(flat.max()), p)
    if p == 0:
        return out.zero_()
    pool = pool.contiguous()
    block_r, block_c = _blocks(c, 4096)
    _gather_kernel[(triton.cdiv(m, block_r),)](pool, flat.contiguous(), out, m, c,
                                               BLOCK_R=block_r, BLOCK_C=block_c)
    return out


def backward_update(pool: torch.Tensor, state: torch.Tensor, rows: torch.Tensor,
                    grad: torch.Tensor, opt: SparseOptimConfig, *,
                    norms: torch.Tensor | None = None) -> torch.Tensor:
    """Coalesce duplicates, update present chunks in place, return per-occurrence norms [N, K].

    ``norms`` (optional, contiguous float32 [N, K]) receives the norms; checks poison it first.
    """
    check_shapes(pool, rows)
    n, k = rows.shape
    p, c = pool.shape
    if grad.shape != (n, k * c):
        raise ValueError(f"grad must be [{n}, {k * c}], got {tuple(grad.shape)}")
    if not pool.is_contiguous():
        raise ValueError("pool must be contiguous: the update writes it in place")
    adagrad = opt.name == "rowwise_adagrad"
    if adagrad and (state.shape != (p,) or state.dtype != torch.float32):
        raise ValueError(f"rowwise_adagrad state must be float32 [{p}], got "
                         f"{state.dtype} {tuple(state.shape)}")
    m = n * k
    if norms is None:
        norms = torch.empty(n, k, dtype=torch.float32, device=pool.device)
    if m == 0 or c == 0:
        return norms.zero_()
    grad = grad.contiguous()
    keys, perm = torch.sort(rows.reshape(-1), stable=True)
    _check_rows(rows.reshape(-1), int(keys[-1]), p)
    if p == 0:  # nothing to update: every chunk is absent
        return norms.copy_(grad.view(n, k, c).float().norm(dim=2))
    flag = torch.empty(m + 1, dtype=torch.int8, device=pool.device)
    flag[m:].fill_(1)  # sentinel: "a segment starts" just past the end
    cut = torch.empty(m, dtype=torch.int8, device=pool.device)
    _mark_kernel[(triton.cdiv(m, 1024),)](keys, flag, cut, m, TILE=SEGMENT_TILE, BLOCK=1024)
    starts = torch.nonzero(cut).view(-1)
    pieces = starts.numel()
    partial = torch.empty(pieces, c, dtype=torch.float32, device=pool.device)
    split = torch.empty(pieces, dtype=torch.int8, device=pool.device)
    st = state if adagrad else pool
    block_r, block_c = _blocks(c, 1024)
    _segment_kernel[(pieces,)](keys, perm, flag, starts, grad, norms, partial, split, pool, st,
                               pieces, m, c, float(opt.lr), float(opt.eps), ADAGRAD=adagrad,
                               BLOCK_R=block_r, BLOCK_C=block_c, num_warps=2)
    firsts = torch.nonzero(split).view(-1)
    if firsts.numel():
        _finish_kernel[(firsts.numel(),)](firsts, keys, flag, starts, partial, pool, st, pieces,
                                          m, c, float(opt.lr), float(opt.eps), ADAGRAD=adagrad,
                                          BLOCK_C=block_c, num_warps=2)
    return norms
