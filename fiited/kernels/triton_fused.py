"""Triton kernels (CUDA) of the fused FIITED step (``fused.py``'s contract, the CPU core's twin).

``fused_gather``: each occurrence n*K + k reads ``addr[entries[n], k]`` inside the kernel (no
[N, K] address tensor) and the chunk, zeros for a row without an entry or an absent chunk.

``fused_update``: ``torch.sort`` (stable) groups each entry's occurrences; one program per
entry walks them in occurrence order (deterministic: no float atomics), sums each chunk's
gradient, credits ``util[entry, k]`` per occurrence (norm * scale for freq_grad, scale for
freq) and steps the present chunks: per slot (SGD, row-wise Adagrad per chunk) or with one
accumulator per entry (``row_state``). Hot entries serialise in their program: this is the
simple first version, tested only under ``TRITON_INTERPRET=1`` (no GPU was at hand), so
``Fiited.embed`` takes it only with ``FIITED_FUSED_CUDA=1`` (``fused.py``). Sums run in a
different order than on CPU, so results agree to float rounding, not bit for bit. The hashed
index's probe and sketch still run as torch ops on CUDA.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from fiited.optim import SparseOptimConfig

CREDITS = {"freq_grad": 0, "freq": 1}


@triton.jit
def _fused_gather_kernel(pool_ptr, addr_ptr, ent_ptr, out_ptr, M, K, C,
                         BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr):
    i = tl.program_id(0).to(tl.int64) * BLOCK_R + tl.arange(0, BLOCK_R)
    imask = i < M
    n = i // K
    ent = tl.load(ent_ptr + n, mask=imask, other=-1).to(tl.int64)
    has = imask & (ent >= 0)
    row = tl.load(addr_ptr + ent * K + (i - n * K), mask=has, other=-1).to(tl.int64)
    cols = tl.arange(0, BLOCK_C)
    cmask = cols < C
    vals = tl.load(pool_ptr + row[:, None] * C + cols[None, :],
                   mask=(row >= 0)[:, None] & cmask[None, :], other=0.0)
    tl.store(out_ptr + i[:, None] * C + cols[None, :], vals, mask=imask[:, None] & cmask[None, :])


@triton.jit
def _fused_update_kernel(keys_ptr, perm_ptr, starts_ptr, counts_ptr, grad_ptr, addr_ptr,
                         pool_ptr, state_ptr, util_ptr, K, C, lr, eps, scale,
                         ADAGRAD: tl.constexpr, ROW_STATE: tl.constexpr, CREDIT: tl.constexpr,
                         FREQ: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_C: tl.constexpr):
    seg = tl.program_id(0)
    start = tl.load(starts_ptr + seg).to(tl.int64)
    count = tl.load(counts_ptr + seg).to(tl.int64)
    ent = tl.load(keys_ptr + start).to(tl.int64)
    ks = tl.arange(0, BLOCK_K)
    cols = tl.arange(0, BLOCK_C)
    kmask = ks < K
    tile = kmask[:, None] & (cols < C)[None, :]
    offs = ks[:, None] * C + cols[None, :]
    acc = tl.zeros((BLOCK_K, BLOCK_C), dtype=tl.float32)
    u = tl.zeros((BLOCK_K,), dtype=tl.float32)
    if CREDIT:
        u = tl.load(util_ptr + ent * K + ks, mask=kmask, other=0.0)
    for j in range(0, count):
        occ = tl.load(perm_ptr + start + j).to(tl.int64)
        g = tl.load(grad_ptr + occ * K * C + offs, mask=tile, other=0.0)
        acc += g
        if CREDIT:
            if FREQ:
                u += scale
            else:
                u += tl.sqrt(tl.sum(g * g, axis=1)) * scale
    if CREDIT:
        tl.store(util_ptr + ent * K + ks, u, mask=kmask)
    slot = tl.load(addr_ptr + ent * K + ks, mask=kmask, other=-1).to(tl.int64)
    present = slot >= 0
    wmask = present[:, None] & tile
    w = tl.load(pool_ptr + slot[:, None] * C + cols[None, :], mask=wmask, other=0.0)
    if ADAGRAD:
        sq = tl.sum(acc * acc, axis=1)
        if ROW_STATE:
            n_present = tl.sum(present.to(tl.float32), axis=0)
            st = tl.load(state_ptr + ent) + tl.sum(tl.where(present, sq, 0.0), axis=0) \
                / tl.maximum(n_present * C, 1.0)
            if n_present > 0:
                tl.store(state_ptr + ent, st)
            w = w - acc * (lr / (tl.sqrt(st) + eps))
        else:
            st = tl.load(state_ptr + slot, mask=present, other=0.0) + sq / C
            tl.store(state_ptr + slot, st, mask=present)
            w = w - acc * (lr / (tl.sqrt(st) + eps))[:, None]
    else:
        w = w + (-lr) * acc
    tl.store(pool_ptr + slot[:, None] * C + cols[None, :], w, mask=wmask)


def fused_gather(pool: torch.Tensor, addr: torch.Tensor, entries: torch.Tensor) -> torch.Tensor:
    """out [N, K*C]: chunk k of occurrence n is pool[addr[entries[n], k]], zeros where absent."""
    n, k = entries.numel(), addr.shape[1]
    c = pool.shape[1]
    out = torch.empty(n, k * c, dtype=pool.dtype, device=pool.device)
    if n * k == 0 or c == 0:
        return out.zero_()
    block_c = max(16, triton.next_power_of_2(c))
    block_r = max(1, min(256, 4096 // block_c))
    _fused_gather_kernel[(triton.cdiv(n * k, block_r),)](
        pool.contiguous(), addr.contiguous(), entries.contiguous(), out, n * k, k, c,
        BLOCK_R=block_r, BLOCK_C=block_c)
    return out


def fused_update(pool: torch.Tensor, state: torch.Tensor, addr: torch.Tensor,
                 entries: torch.Tensor, grad: torch.Tensor, opt: SparseOptimConfig,
                 row_state: bool, util: torch.Tensor | None = None, scale: float = 1.0,
                 kind: str = "freq_grad") -> None:
    """The fused update of ``fused_gather``'s occurrences (contract in the module doc)."""
    n, k = entries.numel(), addr.shape[1]
    c = pool.shape[1]
    if n == 0 or c == 0:
        return
    keys, perm = torch.sort(entries, stable=True)
    uniq, counts = torch.unique_consecutive(keys, return_counts=True)
    starts = torch.cumsum(counts, 0) - counts
    keep = uniq >= 0                                    # rows without an entry change nothing
    starts, counts = starts[keep].contiguous(), counts[keep].contiguous()
    segs = starts.numel()
    if segs == 0:
        return
    adagrad = opt.name == "rowwise_adagrad"
    credit = util is not None
    _fused_update_kernel[(segs,)](
        keys, perm, starts, counts, grad.contiguous(), addr.contiguous(), pool,
        state if adagrad else pool, util if credit else pool, k, c, float(opt.lr),
        float(opt.eps), float(scale), ADAGRAD=adagrad, ROW_STATE=bool(row_state and adagrad),
        CREDIT=credit, FREQ=CREDITS[kind] == 1, BLOCK_K=triton.next_power_of_2(k),
        BLOCK_C=max(16, triton.next_power_of_2(c)))
