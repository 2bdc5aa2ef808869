"""The reference kernels: pure torch, any device. This file is the contract.

``pool[P, C]`` holds physical chunk rows. ``rows[N, K]`` names, for each of N lookups, the pool
row of each of its K chunks, or -1 for an absent chunk (which reads as zeros).
"""
from __future__ import annotations

import torch

from fiited.optim import SparseOptimConfig


def check_shapes(pool: torch.Tensor, rows: torch.Tensor) -> None:
    if pool.dim() != 2:
        raise ValueError(f"pool must be [P, C], got shape {tuple(pool.shape)}")
    if rows.dim() != 2:
        raise ValueError(f"rows must be [N, K], got shape {tuple(rows.shape)}")
    if rows.dtype not in (torch.int32, torch.int64):
        raise ValueError(f"rows must be int32 or int64, got {rows.dtype}")


def gather(pool: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """out[n, k*C:(k+1)*C] = pool[rows[n, k]], or zeros where rows[n, k] == -1."""
    check_shapes(pool, rows)
    n, k = rows.shape
    c = pool.shape[1]
    flat = rows.reshape(-1).long()
    present = flat >= 0
    if pool.shape[0] == 0 or flat.numel() == 0:
        return pool.new_zeros(n, k * c)
    picked = pool.index_select(0, flat.clamp_min(0))
    out = torch.where(present.unsqueeze(1), picked, picked.new_zeros(()))
    return out.view(n, k * c)


def chunk_norms(grad: torch.Tensor, k: int) -> torch.Tensor:
    """Per-occurrence L2 norm of each chunk's slice of the gradient: [N, K*C] -> [N, K]."""
    n = grad.shape[0]
    return grad.reshape(n, k, grad.shape[1] // max(k, 1)).float().norm(dim=2)


def coalesce(rows: torch.Tensor, grad: torch.Tensor, c: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum the gradient slices of duplicate pool rows: (unique sorted rows [U], summed [U, C])."""
    flat = rows.reshape(-1).long()
    g = grad.reshape(-1, c)
    present = flat >= 0
    flat, g = flat[present], g[present]
    uniq, inverse = torch.unique(flat, sorted=True, return_inverse=True)
    summed = g.new_zeros(uniq.numel(), c, dtype=torch.float32)
    summed.index_add_(0, inverse, g.float())
    return uniq, summed


def apply_update(pool: torch.Tensor, state: torch.Tensor, uniq: torch.Tensor,
                 summed: torch.Tensor, opt: SparseOptimConfig) -> None:
    """One optimizer step on the coalesced rows, in place."""
    if uniq.numel() == 0:
        return
    if opt.name == "sgd":
        pool.index_add_(0, uniq, (-opt.lr * summed).to(pool.dtype))
    elif opt.name == "rowwise_adagrad":
        acc = state.index_select(0, uniq) + summed.pow(2).mean(dim=1)
        state.index_copy_(0, uniq, acc)
        step = summed * (opt.lr / (acc.sqrt() + opt.eps)).unsqueeze(1)
        pool.index_add_(0, uniq, (-step).to(pool.dtype))
    else:  # pragma: no cover - SparseOptimConfig validates the name
        raise ValueError(f"unknown sparse optimizer {opt.name!r}")


def backward_update(pool: torch.Tensor, state: torch.Tensor, rows: torch.Tensor,
                    grad: torch.Tensor, opt: SparseOptimConfig) -> torch.Tensor:
    """Coalesce duplicates, update present chunks in place, return per-occurrence norms [N, K].

    Norms are returned for absent chunks too: the gradient w.r.t. a zero-padded slice is defined,
    and utilities need it so that pruned chunks can earn their way back.
    """
    check_shapes(pool, rows)
    n, k = rows.shape
    c = pool.shape[1]
    if grad.shape != (n, k * c):
        raise ValueError(f"grad must be [{n}, {k * c}], got {tuple(grad.shape)}")
    norms = chunk_norms(grad, k)
    uniq, summed = coalesce(rows, grad, c)
    apply_update(pool, state, uniq, summed, opt)
    return norms
