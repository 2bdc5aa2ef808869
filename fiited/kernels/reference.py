"""The reference kernels: pure torch, any device. This file is the contract.

``pool[P, C]`` holds physical chunk rows. ``rows[N, K]`` names, for each of N lookups, the pool
row of each of its K chunks, or -1 for an absent chunk (which reads as zeros).

Row-wise Adagrad keeps ``state`` per pool row unless the update is given ``state_rows[N]``
(int32/int64): the logical row of each lookup, whose single accumulator serves all K of its
chunks (``accumulator: row``). Then gradients are summed per state row (duplicates coalesced as
usual), the accumulator grows by the mean of g^2 over the row's *present* chunks' C*k' floats,
and every present chunk takes the same step lr / (sqrt(acc) + eps). The caller guarantees that
lookups sharing a state row name the same chunks; lookups with state row -1 (no entry) are not
updated, and rows with no present chunk leave their accumulator alone. SGD ignores state_rows.
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


def check_grad(grad: torch.Tensor, n: int, width: int) -> None:
    """The gradient of an update: [N, K*C] one-hot, [B, K*C] for bags."""
    if grad.shape != (n, width):
        raise ValueError(f"grad must be [{n}, {width}], got {tuple(grad.shape)}")


def check_state(state: torch.Tensor, opt: SparseOptimConfig, num_rows: int) -> bool:
    """Row-wise Adagrad needs one float32 accumulator per pool row; True when it is adagrad."""
    adagrad = opt.name == "rowwise_adagrad"
    if adagrad and (state.shape != (num_rows,) or state.dtype != torch.float32):
        raise ValueError(f"rowwise_adagrad state must be float32 [{num_rows}], got "
                         f"{state.dtype} {tuple(state.shape)}")
    return adagrad


def check_row_state(state: torch.Tensor, state_rows: torch.Tensor, n: int) -> None:
    """Per-logical-row state: float32 [S] and state_rows [N] in [-1, S) (one host sync)."""
    if state.dim() != 1 or state.dtype != torch.float32:
        raise ValueError(f"rowwise_adagrad state must be float32 [rows], got {state.dtype} "
                         f"{tuple(state.shape)}")
    if state_rows.shape != (n,) or state_rows.dtype not in (torch.int32, torch.int64):
        raise ValueError(f"state_rows must be int32 or int64 [{n}], got {state_rows.dtype} "
                         f"{tuple(state_rows.shape)}")
    if n and int(state_rows.max()) >= state.numel():
        i = int(torch.nonzero(state_rows >= state.numel())[0, 0])
        raise ValueError(f"state_rows[{i}] = {int(state_rows[i])} is out of range for a "
                         f"state of {state.numel()} rows")


def rowwise(opt: SparseOptimConfig, state_rows: torch.Tensor | None) -> bool:
    """Whether an update keeps its Adagrad state per logical row (``state_rows`` given)."""
    return state_rows is not None and opt.name == "rowwise_adagrad"


def out_of_range(flat: torch.Tensor, index: int, num_rows: int) -> ValueError:
    """The error of the backends that range-check: the first bad row, by its flat index."""
    return ValueError(f"rows[{index}] = {int(flat[index])} is out of range for a pool of "
                      f"{num_rows} rows")


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


def row_update(pool: torch.Tensor, state: torch.Tensor, rows: torch.Tensor,
               state_rows: torch.Tensor, grad: torch.Tensor, opt: SparseOptimConfig) -> None:
    """Row-wise Adagrad with one accumulator per logical row (see the module doc), in place."""
    n, k = rows.shape
    c = pool.shape[1]
    valid = (state_rows >= 0).nonzero().squeeze(1)
    if valid.numel() == 0 or c == 0:
        return
    uniq, inverse = torch.unique(state_rows.long().index_select(0, valid), sorted=True,
                                 return_inverse=True)
    u = uniq.numel()
    summed = torch.zeros(u, k * c, dtype=torch.float32, device=pool.device)
    summed.index_add_(0, inverse, grad.index_select(0, valid).float())
    first = torch.full((u,), n, dtype=torch.int64, device=pool.device)
    first.scatter_reduce_(0, inverse, valid, "amin")
    rep = rows.long().index_select(0, first)                          # [U, K]
    present = rep >= 0
    width = present.sum(1) * c
    summed = summed.view(u, k, c)
    inc = (summed.pow(2).sum(2) * present).sum(1) / width.clamp_min(1)
    old = state.index_select(0, uniq)
    acc = torch.where(width > 0, old + inc, old)
    state.index_copy_(0, uniq, acc)
    step = summed * (opt.lr / (acc.sqrt() + opt.eps)).view(u, 1, 1)
    pool.index_add_(0, rep[present], (-step[present]).to(pool.dtype))


def backward_update(pool: torch.Tensor, state: torch.Tensor, rows: torch.Tensor,
                    grad: torch.Tensor, opt: SparseOptimConfig,
                    state_rows: torch.Tensor | None = None) -> torch.Tensor:
    """Coalesce duplicates, update present chunks in place, return per-occurrence norms [N, K].

    Norms are returned for absent chunks too: the gradient w.r.t. a zero-padded slice is defined,
    and utilities need it so that pruned chunks can earn their way back. ``state_rows``: the
    per-logical-row Adagrad state (module doc).
    """
    check_shapes(pool, rows)
    n, k = rows.shape
    c = pool.shape[1]
    check_grad(grad, n, k * c)
    norms = chunk_norms(grad, k)
    if rowwise(opt, state_rows):
        check_row_state(state, state_rows, n)
        row_update(pool, state, rows, state_rows, grad, opt)
        return norms
    uniq, summed = coalesce(rows, grad, c)
    apply_update(pool, state, uniq, summed, opt)
    return norms


# --- Bags (multi-hot features) -------------------------------------------------------------
#
# ``rows[N, K]`` is one row per id *occurrence*, as above. ``offsets[B + 1]`` (int32/int64,
# non-decreasing, offsets[0] = 0, offsets[B] = N) cuts the N occurrences into B bags; for a
# batch of b samples x F features the bags are sample-major, bag b*F + f. ``weights[N]``
# (optional) weight each occurrence. ``mode`` is "sum" or "mean":
#
#   out[b] = sum_{n in bag b} w_n * gather(pool, rows)[n]            (sum)
#   out[b] = (sum_{n in bag b} w_n * gather(pool, rows)[n]) / len_b  (mean; len_b = occurrences)
#
# summed in occurrence order; an empty bag gives zeros. Absent chunks read zeros and still count
# in len_b (a pruned chunk is zero padding of that id, not a missing id).
#
# Backward: each occurrence's share of the pooled gradient is
#   g_n = grad[bag(n)] * s_n,  s_n = w_n (sum) or w_n / len_bag(n) (mean), w_n = 1 unweighted,
# and from there the one-hot contract applies unchanged: duplicates (also inside one bag) are
# coalesced by summing g_n, one SGD / row-wise Adagrad step per pool row, and the per-occurrence
# chunk norms [N, K] returned for utilities are the norms of g_n (its share, not of grad[bag]).
# One-hot features do not go through here: offsets = arange(N + 1) is the special case, and the
# plain gather / backward_update serve it unchanged.

BAG_MODES = ("sum", "mean")


def check_bags(pool: torch.Tensor, rows: torch.Tensor, offsets: torch.Tensor,
               weights: torch.Tensor | None, mode: str, grad: torch.Tensor | None = None) -> None:
    """Name the argument at fault: pool and rows, the bags, then (an update's) grad [B, K*C].

    The data checks (one pass over offsets) are cheap torch ops."""
    check_shapes(pool, rows)
    if mode not in BAG_MODES:
        raise ValueError(f"mode must be 'sum' or 'mean', got {mode!r}")
    if offsets.dim() != 1 or offsets.numel() < 1:
        raise ValueError(f"offsets must be [bags + 1], got shape {tuple(offsets.shape)}")
    if offsets.dtype not in (torch.int32, torch.int64):
        raise ValueError(f"offsets must be int32 or int64, got {offsets.dtype}")
    n = rows.shape[0]
    if weights is not None and (weights.dim() != 1 or weights.numel() != n
                                or not weights.is_floating_point()):
        raise ValueError(f"weights must be float [{n}], got {weights.dtype} "
                         f"{tuple(weights.shape)}")
    first, last, falls = torch.stack([offsets[0].long(), offsets[-1].long(),
                                      (offsets[1:] < offsets[:-1]).sum()]).tolist()  # one sync
    if (first, last) != (0, n):
        raise ValueError(f"offsets must start at 0 and end at {n} (rows), got {[first, last]}")
    if falls:
        raise ValueError("offsets must be non-decreasing")
    if grad is not None:
        check_grad(grad, offsets.numel() - 1, rows.shape[1] * pool.shape[1])


def bag_of(offsets: torch.Tensor, n: int) -> torch.Tensor:
    """The bag of each occurrence [N] (int64): no Python loop over bags."""
    lengths = (offsets[1:] - offsets[:-1]).long()
    return torch.repeat_interleave(torch.arange(lengths.numel(), device=offsets.device),
                                   lengths, output_size=n)


def bag_scale(offsets: torch.Tensor, weights: torch.Tensor | None, mode: str,
              bags: torch.Tensor) -> torch.Tensor | None:
    """s_n [N] float32 (None: all ones): the factor of each occurrence's gradient share."""
    if mode == "sum":
        return None if weights is None else weights.float()
    lengths = (offsets[1:] - offsets[:-1]).float().index_select(0, bags)
    w = torch.ones_like(lengths) if weights is None else weights.float()
    return w / lengths


def pool_bags(per: torch.Tensor, offsets: torch.Tensor, weights: torch.Tensor | None,
              mode: str, bags: torch.Tensor) -> torch.Tensor:
    """Pool per-occurrence vectors [N, W] into bags [B, W] by the contract above."""
    if weights is not None:
        per = per * weights.to(per.dtype).unsqueeze(1)
    out = per.new_zeros(offsets.numel() - 1, per.shape[1])
    out.index_add_(0, bags, per)
    if mode == "mean":
        out = out / (offsets[1:] - offsets[:-1]).clamp_min(1).to(out.dtype).unsqueeze(1)
    return out


def bag_gather(pool: torch.Tensor, rows: torch.Tensor, offsets: torch.Tensor,
               weights: torch.Tensor | None = None, mode: str = "sum") -> torch.Tensor:
    """out[B, K*C]: the pooled lookup of each bag (see the contract above)."""
    check_bags(pool, rows, offsets, weights, mode)
    return pool_bags(gather(pool, rows), offsets, weights, mode, bag_of(offsets, rows.shape[0]))


def bag_shares(grad: torch.Tensor, offsets: torch.Tensor, weights: torch.Tensor | None,
               mode: str, n: int) -> torch.Tensor:
    """Each occurrence's share g_n [N, W] of the pooled gradient grad [B, W]."""
    bags = bag_of(offsets, n)
    share = grad.index_select(0, bags)
    scale = bag_scale(offsets, weights, mode, bags)
    return share if scale is None else share * scale.to(share.dtype).unsqueeze(1)


def bag_backward_update(pool: torch.Tensor, state: torch.Tensor, rows: torch.Tensor,
                        offsets: torch.Tensor, grad: torch.Tensor, opt: SparseOptimConfig,
                        weights: torch.Tensor | None = None, mode: str = "sum",
                        state_rows: torch.Tensor | None = None) -> torch.Tensor:
    """Spread grad [B, K*C] to occurrences, then the one-hot update; norms [N, K] of shares."""
    check_bags(pool, rows, offsets, weights, mode, grad)
    return backward_update(pool, state, rows,
                           bag_shares(grad, offsets, weights, mode, rows.shape[0]), opt,
                           state_rows)
