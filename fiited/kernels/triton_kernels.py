"""Triton kernels (CUDA) for the reference contract: gather and a deterministic fused update.

The update is sort-based, so a fixed input always gives the same bits (no float atomics):

1. ``torch.sort(rows, stable=True)`` lines up the occurrences of each pool row (a segment).
2. ``_absent_norms_kernel`` writes the norms of absent chunks (rows < 0, sorted first), reading
   only their gradient slices, in place.
3. ``_tile_kernel``: each program takes a fixed tile of T sorted present positions, reads their
   gradient slices in one sweep, writes their norms, and sums the runs of equal rows with a
   segmented scan (a fixed tree: the same bits every time). A segment
   wholly inside the tile gets its optimizer step right there (the common case). A segment that
   crosses tile edges leaves partial sums: ``tail`` (its first piece) and ``head`` (its pieces in
   later tiles), and the tile where it starts is marked its ``owner``.
4. ``_finish_kernel``: each owner tile sums its segment's partials in tile order and applies the
   optimizer step. Hot rows with thousands of occurrences thus spread over many programs.

One host sync per update (the largest row, for the range check, and the count of absent ones).

Adagrad state per logical row (``state_rows``): ``triton_rows.py``, on this pipeline.

Bags (multi-hot): ``_bag_gather_kernel`` pools each (bag, chunk) in one program; the bag update
is the same sort-based pipeline, ``_share`` reading occurrence n*K + k's gradient as
grad[bag[n], k] * scale[n] (compiled out for one-hot: ``BAG`` is a constexpr). Bag checks add a
host sync.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from fiited.kernels.reference import (bag_of, bag_scale, bag_shares, check_bags, check_grad,
                                     check_row_state, check_shapes, check_state, chunk_norms,
                                     out_of_range, rowwise)
from fiited.optim import SparseOptimConfig

GATHER_TILE_ELEMS = 4096  # elements of one gather program's [rows, C] tile
# Sorted positions per update program = UPDATE_TILE_ELEMS // C (padded), at most UPDATE_TILE.
# Measured on an H200 (scripts/gpu_check.py --tune): 16 positions at C=128, 64 at C=32.
UPDATE_TILE_ELEMS = 2048
UPDATE_TILE = 256
UPDATE_WARPS = 4


def _blocks(c: int, elems: int) -> tuple[int, int]:
    """A [rows, C] tile of about ``elems`` elements (C padded to a power of two)."""
    block_c = max(16, triton.next_power_of_2(max(c, 1)))
    return max(1, min(256, elems // block_c)), block_c


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
def _bag_gather_kernel(pool_ptr, rows_ptr, offsets_ptr, w_ptr, out_ptr, C, K,
                       WEIGHTED: tl.constexpr, MEAN: tl.constexpr,
                       BLOCK_N: tl.constexpr, BLOCK_C: tl.constexpr):
    """One program per (bag, chunk): sum the bag's occurrences in tiles of BLOCK_N."""
    b = tl.program_id(0).to(tl.int64)
    kk = tl.program_id(1).to(tl.int64)
    lo = tl.load(offsets_ptr + b).to(tl.int64)
    hi = tl.load(offsets_ptr + b + 1).to(tl.int64)
    cols = tl.arange(0, BLOCK_C)
    cmask = cols < C
    acc = tl.zeros([BLOCK_C], dtype=tl.float32)
    for start in range(lo, hi, BLOCK_N):
        n = start + tl.arange(0, BLOCK_N)
        nm = n < hi
        row = tl.load(rows_ptr + n * K + kk, mask=nm, other=-1).to(tl.int64)
        vals = tl.load(pool_ptr + row[:, None] * C + cols[None, :],
                       mask=(row >= 0)[:, None] & cmask[None, :], other=0.0).to(tl.float32)
        if WEIGHTED:
            vals = vals * tl.load(w_ptr + n, mask=nm, other=0.0)[:, None]
        acc += tl.sum(vals, axis=0)
    if MEAN:
        acc = acc / tl.maximum(hi - lo, 1).to(tl.float32)
    tl.store(out_ptr + b * K * C + kk * C + cols, acc.to(out_ptr.dtype.element_ty), mask=cmask)


@triton.jit
def _segmented_add(flag_a, a, flag_b, b):
    return flag_a | flag_b, tl.where(flag_b != 0, b, a + b)


@triton.jit
def _share(grad_ptr, bag_ptr, scale_ptr, occ, mask, cols, cmask, C, K, BAG: tl.constexpr,
           SCALED: tl.constexpr):
    """Gradient slices [len(occ), BLOCK_C] of flat occurrences ``occ`` (float32). One-hot:
    grad[occ]; bags: grad[bag[n], k] * scale[n] for occ = n*K + k (the bag contract)."""
    if BAG:
        n = occ // K
        src = tl.load(bag_ptr + n, mask=mask, other=0).to(tl.int64) * K + (occ - n * K)
    else:
        src = occ
    g = tl.load(grad_ptr + src[:, None] * C + cols[None, :],
                mask=mask[:, None] & cmask[None, :], other=0.0).to(tl.float32)
    if SCALED:
        g = g * tl.load(scale_ptr + n, mask=mask, other=0.0)[:, None]
    return g


@triton.jit
def _absent_norms_kernel(rows_ptr, grad_ptr, norms_ptr, M, C, bag_ptr, scale_ptr, K,
                         BAG: tl.constexpr, SCALED: tl.constexpr,
                         BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr):
    r = tl.program_id(0).to(tl.int64) * BLOCK_R + tl.arange(0, BLOCK_R)
    rmask = r < M
    absent = rmask & (tl.load(rows_ptr + r, mask=rmask, other=0) < 0)
    cols = tl.arange(0, BLOCK_C)
    g = _share(grad_ptr, bag_ptr, scale_ptr, r, absent, cols, cols < C, C, K, BAG, SCALED)
    tl.store(norms_ptr + r, tl.sqrt(tl.sum(g * g, axis=1)), mask=absent)


@triton.jit
def _tile_kernel(keys_ptr, perm_ptr, grad_ptr, norms_ptr, head_ptr, tail_ptr, owner_ptr,
                 pool_ptr, state_ptr, M, C, lr, eps, bag_ptr, scale_ptr, K,
                 ADAGRAD: tl.constexpr, BAG: tl.constexpr, SCALED: tl.constexpr,
                 T: tl.constexpr, BLOCK_C: tl.constexpr):
    """Positions here count from the first present one: ``keys_ptr``/``perm_ptr`` are offset."""
    tile = tl.program_id(0).to(tl.int64)
    i = tl.arange(0, T)
    pos = tile * T + i
    pm = pos < M
    key = tl.load(keys_ptr + pos, mask=pm, other=-1).to(tl.int64)
    prev = tl.load(keys_ptr + pos - 1, mask=pm & (pos > 0), other=-1).to(tl.int64)
    nxt = tl.load(keys_ptr + pos + 1, mask=pos + 1 < M, other=-1).to(tl.int64)
    occ = tl.load(perm_ptr + pos, mask=pm, other=0).to(tl.int64)
    seg_start = (pos == 0) | (key != prev)
    seg_end = (pos + 1 >= M) | (key != nxt)
    run_start = seg_start | (i == 0)
    run_end = seg_end | (i == T - 1)
    # Does this tile's first run continue a segment from the previous tile?
    k0 = tl.load(keys_ptr + tile * T).to(tl.int64)
    kp = tl.load(keys_ptr + tile * T - 1, mask=tile > 0, other=-1).to(tl.int64)
    continuing = (tl.cumsum(run_start.to(tl.int32), axis=0) == 1) & (tile > 0) & (k0 == kp)
    whole = pm & run_end & seg_end & (continuing == 0)

    cols = tl.arange(0, BLOCK_C)
    cmask = cols < C
    wmask = whole[:, None] & cmask[None, :]
    wptrs = pool_ptr + key[:, None] * C + cols[None, :]
    w = tl.load(wptrs, mask=wmask, other=0.0).to(tl.float32)  # in flight with the gradient
    if ADAGRAD:
        st = tl.load(state_ptr + key, mask=whole, other=0.0)
    g = _share(grad_ptr, bag_ptr, scale_ptr, occ, pm, cols, cmask, C, K, BAG, SCALED)
    tl.store(norms_ptr + occ, tl.sqrt(tl.sum(g * g, axis=1)), mask=pm)
    flags = tl.broadcast_to(run_start.to(tl.int32)[:, None], (T, BLOCK_C))
    _, sums = tl.associative_scan((flags, g), 0, _segmented_add)

    if ADAGRAD:
        st = st + tl.sum(sums * sums, axis=1) / C
        tl.store(state_ptr + key, st, mask=whole)
        w = w - sums * (lr / (tl.sqrt(st) + eps))[:, None]
    else:
        w = w - lr * sums
    tl.store(wptrs, w.to(pool_ptr.dtype.element_ty), mask=wmask)

    head = pm & run_end & continuing
    tail = pm & run_end & (seg_end == 0) & (continuing == 0)
    part = tile * C + cols[None, :] + 0 * i[:, None]
    tl.store(head_ptr + part, sums, mask=head[:, None] & cmask[None, :])
    tl.store(tail_ptr + part, sums, mask=tail[:, None] & cmask[None, :])
    tl.store(owner_ptr + tile, tl.max(tail.to(tl.int32), axis=0).to(tl.int8))


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
def _finish_kernel(owner_ptr, keys_ptr, head_ptr, tail_ptr, pool_ptr, state_ptr, M, C, lr, eps,
                   ADAGRAD: tl.constexpr, T: tl.constexpr, BLOCK_P: tl.constexpr,
                   BLOCK_C: tl.constexpr):
    owner = tl.program_id(0).to(tl.int64)
    if tl.load(owner_ptr + owner) != 0:
        row = tl.load(keys_ptr + owner * T + T - 1).to(tl.int64)
        cols = tl.arange(0, BLOCK_C)
        cmask = cols < C
        first = tl.load(tail_ptr + owner * C + cols, mask=cmask, other=0.0)
        acc = tl.zeros([BLOCK_P, BLOCK_C], dtype=tl.float32)
        t0 = owner + 1
        more = t0 > 0  # always true: the segment goes on into the next tile
        while more:
            t = t0 + tl.arange(0, BLOCK_P)
            inside = (t * T < M) & (tl.load(keys_ptr + t * T, mask=t * T < M, other=-1) == row)
            stop = tl.min(tl.where(inside, t0 + BLOCK_P, t), axis=0)
            acc += tl.load(head_ptr + t[:, None] * C + cols[None, :],
                           mask=(t < stop)[:, None] & cmask[None, :], other=0.0)
            more = stop == t0 + BLOCK_P
            t0 += BLOCK_P
        _apply_row(pool_ptr, state_ptr, row, first + tl.sum(acc, axis=0), cols, cmask, C, lr,
                   eps, ADAGRAD)


def _check_rows(flat: torch.Tensor, max_row: int, num_rows: int) -> None:
    if max_row >= num_rows:
        raise out_of_range(flat, int(torch.nonzero(flat >= num_rows)[0, 0]), num_rows)


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
    block_r, block_c = _blocks(c, GATHER_TILE_ELEMS)
    _gather_kernel[(triton.cdiv(m, block_r),)](pool, flat.contiguous(), out, m, c,
                                               BLOCK_R=block_r, BLOCK_C=block_c)
    return out


def backward_update(pool: torch.Tensor, state: torch.Tensor, rows: torch.Tensor,
                    grad: torch.Tensor, opt: SparseOptimConfig,
                    state_rows: torch.Tensor | None = None, *,
                    norms: torch.Tensor | None = None) -> torch.Tensor:
    """Coalesce duplicates, update present chunks in place, return per-occurrence norms [N, K].

    ``norms`` (optional, contiguous float32 [N, K]) receives the norms; checks poison it first.
    ``state_rows`` [N]: Adagrad state per logical row (``reference.py``).
    """
    check_shapes(pool, rows)
    n, k = rows.shape
    p, c = pool.shape
    check_grad(grad, n, k * c)
    if not pool.is_contiguous():
        raise ValueError("pool must be contiguous: the update writes it in place")
    if norms is None:
        norms = torch.empty(n, k, dtype=torch.float32, device=pool.device)
    if rowwise(opt, state_rows):
        check_row_state(state, state_rows, n)
        if n * k == 0 or c == 0:
            return norms.zero_()
        grad = grad.contiguous()
        from fiited.kernels.triton_rows import row_update
        row_update(pool, state, rows, state_rows, grad, opt, (grad, grad, 1, False, False))
        return norms.copy_(chunk_norms(grad, k))
    check_state(state, opt, p)
    if n * k == 0 or c == 0:
        return norms.zero_()
    return _update(pool, state, rows.reshape(-1).contiguous(), grad.contiguous(), opt, norms,
                   (grad, grad, 1, False, False))


def _update(pool, state, flat, grad, opt, norms, bag_args) -> torch.Tensor:
    """The sorted update; ``bag_args`` = (bag, scale, K, BAG, SCALED) of ``_share``."""
    p, c = pool.shape
    m = flat.numel()
    adagrad = opt.name == "rowwise_adagrad"
    bag, scale, k, is_bag, scaled = bag_args
    keys, perm = torch.sort(flat, stable=True)
    max_row, n_absent = torch.cat([keys[-1:].long(), torch.searchsorted(
        keys, keys.new_zeros(1))]).tolist()
    _check_rows(flat, max_row, p)
    if n_absent:
        block_r, block_c = _blocks(c, GATHER_TILE_ELEMS)
        _absent_norms_kernel[(triton.cdiv(m, block_r),)](flat, grad, norms, m, c, bag, scale, k,
                                                         BAG=is_bag, SCALED=scaled,
                                                         BLOCK_R=block_r, BLOCK_C=block_c)
    if n_absent == m:
        return norms
    keys, perm = keys[n_absent:], perm[n_absent:]
    present = m - n_absent
    block_c = max(16, triton.next_power_of_2(c))
    tile = max(1, min(UPDATE_TILE, UPDATE_TILE_ELEMS // block_c))
    tiles = triton.cdiv(present, tile)
    head = torch.empty(tiles, c, dtype=torch.float32, device=pool.device)
    tail = torch.empty(tiles, c, dtype=torch.float32, device=pool.device)
    owner = torch.empty(tiles, dtype=torch.int8, device=pool.device)
    st = state if adagrad else pool
    args = (pool, st, present, c, float(opt.lr), float(opt.eps))
    _tile_kernel[(tiles,)](keys, perm, grad, norms, head, tail, owner, *args, bag, scale, k,
                           ADAGRAD=adagrad, BAG=is_bag, SCALED=scaled, T=tile, BLOCK_C=block_c,
                           num_warps=UPDATE_WARPS)
    block_p, _ = _blocks(c, 2048)
    _finish_kernel[(tiles,)](owner, keys, head, tail, *args, ADAGRAD=adagrad, T=tile,
                             BLOCK_P=block_p, BLOCK_C=block_c)
    return norms


def bag_gather(pool: torch.Tensor, rows: torch.Tensor, offsets: torch.Tensor,
               weights: torch.Tensor | None = None, mode: str = "sum") -> torch.Tensor:
    """Pooled lookup [B, K*C] (contract in ``reference.py``); sums in a fixed tile order."""
    check_bags(pool, rows, offsets, weights, mode)
    n, k = rows.shape
    p, c = pool.shape
    b = offsets.numel() - 1
    if n == 0 or b == 0 or k * c == 0:
        return pool.new_zeros(b, k * c)
    flat = rows.reshape(-1).contiguous()
    _check_rows(flat, int(flat.max()), p)
    if p == 0:
        return pool.new_zeros(b, k * c)
    out = torch.empty(b, k * c, dtype=pool.dtype, device=pool.device)
    w = None if weights is None else weights.float().contiguous()
    block_n, block_c = _blocks(c, GATHER_TILE_ELEMS)
    _bag_gather_kernel[(b, k)](pool.contiguous(), flat, offsets.contiguous(),
                               pool if w is None else w, out, c, k, WEIGHTED=w is not None,
                               MEAN=mode == "mean", BLOCK_N=min(block_n, 64), BLOCK_C=block_c)
    return out


def bag_backward_update(pool: torch.Tensor, state: torch.Tensor, rows: torch.Tensor,
                        offsets: torch.Tensor, grad: torch.Tensor, opt: SparseOptimConfig,
                        weights: torch.Tensor | None = None, mode: str = "sum",
                        state_rows: torch.Tensor | None = None) -> torch.Tensor:
    """The bag update: the one-hot kernels reading each occurrence's share from ``grad``
    [B, K*C] through its bag (no [N, K*C] copy); norms [N, K] of the shares."""
    check_bags(pool, rows, offsets, weights, mode, grad)
    n, k = rows.shape
    p, c = pool.shape
    if not pool.is_contiguous():
        raise ValueError("pool must be contiguous: the update writes it in place")
    row_state = rowwise(opt, state_rows)
    if row_state:
        check_row_state(state, state_rows, n)
    else:
        check_state(state, opt, p)
    norms = torch.empty(n, k, dtype=torch.float32, device=pool.device)
    if n * k == 0 or c == 0:
        return norms.zero_()
    grad = grad.contiguous()
    bags = bag_of(offsets, n)
    scale = bag_scale(offsets, weights, mode, bags)
    if row_state:  # the scratch pipeline reads grad[bag[n]] * scale[n] at width K*C
        from fiited.kernels.triton_rows import row_update
        row_update(pool, state, rows, state_rows, grad, opt,
                    (bags, grad if scale is None else scale.contiguous(), 1, True,
                     scale is not None))
        return norms.copy_(chunk_norms(bag_shares(grad, offsets, weights, mode, n), k))
    bag_args = (bags, grad if scale is None else scale.contiguous(), k, True, scale is not None)
    return _update(pool, state, rows.reshape(-1).contiguous(), grad, opt, norms, bag_args)
