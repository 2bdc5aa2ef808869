"""The CPU product path of the kernel contract (see ``reference.py``).

The fused native core (``cpu_native``) does each call in one pass; where it is unavailable
(no compiler, ``FIITED_CPU_NATIVE=0``, a pool that is not float32, sizes past 32-bit packing)
vectorised torch ops do the same work: a stable sort groups duplicates, ``index_add_`` sums them
in occurrence order (the reference's order, so sums match bit for bit) without copying the
gradient, and absent chunks are never read from the pool.
"""
from __future__ import annotations

import torch

from fiited.kernels import cpu_native
from fiited.kernels.reference import (apply_update, bag_of, bag_scale, bag_shares, check_bags,
                                     check_grad, check_row_state, check_shapes, check_state,
                                     chunk_norms, out_of_range, pool_bags, row_update, rowwise)
from fiited.optim import SparseOptimConfig


def _native_ok(pool: torch.Tensor, *tensors: torch.Tensor) -> bool:
    return (pool.dtype == torch.float32 and pool.device.type == "cpu"
            and all(t.is_contiguous() for t in (pool, *tensors))
            and cpu_native.library() is not None)


def _check_rows(flat: torch.Tensor, num_rows: int) -> None:
    if flat.numel() and int(flat.max()) >= num_rows:
        raise out_of_range(flat, int(torch.nonzero(flat >= num_rows)[0, 0]), num_rows)


def gather(pool: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """out[n, k*C:(k+1)*C] = pool[rows[n, k]], or zeros where rows[n, k] < 0."""
    check_shapes(pool, rows)
    n, k = rows.shape
    p, c = pool.shape
    flat = rows.reshape(-1)
    if flat.numel() == 0 or c == 0:
        return pool.new_zeros(n, k * c)
    out = torch.empty(n, k * c, dtype=pool.dtype)
    if _native_ok(pool, flat):
        lib = cpu_native.library()
        bad = lib.fiited_gather(pool.data_ptr(), p, c, flat.data_ptr(),
                                int(flat.dtype == torch.int64), flat.numel(), out.data_ptr(),
                                torch.get_num_threads())
        if bad >= 0:
            raise out_of_range(flat, bad, p)
        return out
    _check_rows(flat, p)
    present = flat >= 0
    n_present = int(present.sum())
    dst = out.view(-1, c)
    if n_present == flat.numel():
        torch.index_select(pool, 0, flat, out=dst)
    elif 2 * n_present >= flat.numel():
        torch.index_select(pool, 0, flat.clamp_min(0), out=dst)
        dst.masked_fill_(~present.unsqueeze(1), 0)
    else:
        dst.zero_()
        where = torch.nonzero(present).view(-1)
        dst.index_copy_(0, where, pool.index_select(0, flat.index_select(0, where)))
    return out


def backward_update(pool: torch.Tensor, state: torch.Tensor, rows: torch.Tensor,
                    grad: torch.Tensor, opt: SparseOptimConfig,
                    state_rows: torch.Tensor | None = None) -> torch.Tensor:
    """Coalesce duplicates, update present chunks in place, return per-occurrence norms [N, K]."""
    check_shapes(pool, rows)
    n, k = rows.shape
    p, c = pool.shape
    check_grad(grad, n, k * c)
    if rowwise(opt, state_rows):
        return _row_update(pool, state, rows, state_rows, grad, opt, None)
    adagrad = check_state(state, opt, p)
    m = n * k
    if m == 0 or c == 0:
        return torch.zeros(n, k, dtype=torch.float32)
    flat = rows.reshape(-1)
    if grad.dtype == torch.float32 and _native_ok(pool, flat, grad, state):
        norms = torch.empty(n, k, dtype=torch.float32)
        lib = cpu_native.library()
        code = lib.fiited_update(pool.data_ptr(), p, c, state.data_ptr() if adagrad else None,
                                 flat.data_ptr(), int(flat.dtype == torch.int64), m,
                                 grad.data_ptr(), norms.data_ptr(), int(adagrad),
                                 float(opt.lr), float(opt.eps), torch.get_num_threads())
        if code >= 0:
            raise out_of_range(flat, code, p)
        if code == -1:
            return norms
    return _torch_update(pool, state, flat, grad.reshape(m, c), opt, (n, k))


def _row_update(pool, state, rows, state_rows, grad, opt, bags) -> torch.Tensor:
    """Adagrad state per logical row (contract in ``reference.py``): the native pass, else the
    reference's torch ops. ``bags`` = (offsets, weights, mode) for a bag update."""
    n, k = rows.shape
    p, c = pool.shape
    check_row_state(state, state_rows, n)
    if n * k == 0 or c == 0:
        return torch.zeros(n, k, dtype=torch.float32)
    flat = rows.reshape(-1)
    srows = state_rows.long().contiguous()
    if grad.dtype == torch.float32 and _native_ok(pool, flat, grad, state):
        bag = scale = None
        if bags is not None:
            offsets, weights, mode = bags
            bag = bag_of(offsets, n)
            scale = bag_scale(offsets, weights, mode, bag)
            scale = None if scale is None else scale.contiguous()
        norms = torch.empty(n, k, dtype=torch.float32)
        code = cpu_native.library().fiited_row_update(
            pool.data_ptr(), p, c, state.data_ptr(), state.numel(), flat.data_ptr(),
            int(flat.dtype == torch.int64), n, k, srows.data_ptr(), int(bags is not None),
            None if bag is None else bag.data_ptr(), None if scale is None else scale.data_ptr(),
            grad.data_ptr(), norms.data_ptr(), float(opt.lr), float(opt.eps),
            torch.get_num_threads())
        if code >= 0:
            raise out_of_range(flat, code, p)
        if code == -1:
            return norms
    _check_rows(flat, p)
    if bags is not None:
        grad = bag_shares(grad, *bags, n)
    row_update(pool, state, rows, srows, grad, opt)
    return chunk_norms(grad, k)


def _torch_update(pool, state, flat, grad, opt, shape) -> torch.Tensor:
    m, c = grad.shape
    norms = torch.linalg.vector_norm(grad.float(), dim=1).view(shape)
    keys, perm = torch.sort(flat, stable=True)
    n_absent = int(torch.searchsorted(keys, torch.zeros((), dtype=keys.dtype)))
    if n_absent == m:
        return norms
    if int(keys[-1]) >= pool.shape[0]:
        raise out_of_range(flat, int(perm[-1]), pool.shape[0])
    keys, perm = keys[n_absent:], perm[n_absent:]
    first = torch.ones(keys.numel(), dtype=torch.bool)
    torch.ne(keys[1:], keys[:-1], out=first[1:])
    uniq = keys[first].long()
    seg = torch.cumsum(first, 0) - 1
    if 2 * keys.numel() >= m:  # mostly present: route absent rows to a spare row, no grad copy
        inverse = torch.full((m,), uniq.numel(), dtype=torch.int64)
        inverse[perm] = seg
        summed = torch.zeros(uniq.numel() + 1, c, dtype=torch.float32)
        summed.index_add_(0, inverse, grad.float())
        summed = summed[:-1]
    else:  # mostly absent: read only the present slices, still in occurrence order per row
        summed = torch.zeros(uniq.numel(), c, dtype=torch.float32)
        summed.index_add_(0, seg, grad.index_select(0, perm).float())
    apply_update(pool, state, uniq, summed, opt)
    return norms


def bag_gather(pool: torch.Tensor, rows: torch.Tensor, offsets: torch.Tensor,
               weights: torch.Tensor | None = None, mode: str = "sum") -> torch.Tensor:
    """Pooled lookup [B, K*C] (contract in ``reference.py``): one native pass over the bags."""
    check_bags(pool, rows, offsets, weights, mode)
    n, k = rows.shape
    p, c = pool.shape
    b = offsets.numel() - 1
    if n == 0 or k * c == 0:
        return pool.new_zeros(b, k * c)
    flat = rows.reshape(-1)
    w = None if weights is None else weights.float().contiguous()
    if _native_ok(pool, flat, offsets):
        out = torch.empty(b, k * c, dtype=pool.dtype)
        bad = cpu_native.library().fiited_bag_gather(
            pool.data_ptr(), p, c, flat.data_ptr(), int(flat.dtype == torch.int64), k,
            offsets.data_ptr(), int(offsets.dtype == torch.int64), b,
            None if w is None else w.data_ptr(), int(mode == "mean"), out.data_ptr(),
            torch.get_num_threads())
        if bad >= 0:
            raise out_of_range(flat, bad, p)
        return out
    return pool_bags(gather(pool, rows), offsets, weights, mode, bag_of(offsets, n))


def bag_backward_update(pool: torch.Tensor, state: torch.Tensor, rows: torch.Tensor,
                        offsets: torch.Tensor, grad: torch.Tensor, opt: SparseOptimConfig,
                        weights: torch.Tensor | None = None, mode: str = "sum",
                        state_rows: torch.Tensor | None = None) -> torch.Tensor:
    """The bag update (contract in ``reference.py``); norms [N, K] of each occurrence's share.

    The native core reads each share straight from ``grad`` [B, K*C]; the torch fallback spreads
    ``grad`` to occurrences first (the reference's arithmetic, so it matches bit for bit).
    """
    check_bags(pool, rows, offsets, weights, mode, grad)
    n, k = rows.shape
    p, c = pool.shape
    if rowwise(opt, state_rows):
        return _row_update(pool, state, rows, state_rows, grad, opt, (offsets, weights, mode))
    adagrad = check_state(state, opt, p)
    m = n * k
    if m == 0 or c == 0:
        return torch.zeros(n, k, dtype=torch.float32)
    flat = rows.reshape(-1)
    if grad.dtype == torch.float32 and _native_ok(pool, flat, grad, state):
        bags = bag_of(offsets, n)
        scale = bag_scale(offsets, weights, mode, bags)
        scale = None if scale is None else scale.contiguous()
        norms = torch.empty(n, k, dtype=torch.float32)
        code = cpu_native.library().fiited_bag_update(
            pool.data_ptr(), p, c, state.data_ptr() if adagrad else None, flat.data_ptr(),
            int(flat.dtype == torch.int64), n, k, bags.data_ptr(),
            None if scale is None else scale.data_ptr(), grad.data_ptr(), norms.data_ptr(),
            int(adagrad), float(opt.lr), float(opt.eps), torch.get_num_threads())
        if code >= 0:
            raise out_of_range(flat, code, p)
        if code == -1:
            return norms
    share = bag_shares(grad, offsets, weights, mode, n)
    return _torch_update(pool, state, flat, share.reshape(m, c), opt, (n, k))


def hash_find(keys: torch.Tensor, rows: torch.Tensor, mult: int, max_probe: int
              ) -> torch.Tensor | None:
    """Slot of each row [N] in a linear-probing table ``keys`` (-1: absent), in one native
    pass; None when the native core cannot take these tensors (the caller uses torch ops)."""
    if not (keys.device.type == "cpu" and rows.device.type == "cpu" and rows.dtype == torch.int64
            and keys.dtype in (torch.int32, torch.int64) and keys.is_contiguous()
            and keys.numel() > 0 and cpu_native.library() is not None):
        return None
    rows = rows.contiguous()
    out = torch.empty_like(rows)
    cpu_native.library().fiited_hash_find(
        keys.data_ptr(), int(keys.dtype == torch.int64), keys.numel(), rows.data_ptr(),
        rows.numel(), int(mult), int(max_probe), out.data_ptr(), torch.get_num_threads())
    return out


def sketch_count(sketch: torch.Tensor, rows: torch.Tensor, tables: torch.Tensor,
                 starts: torch.Tensor, widths: torch.Tensor, bases: torch.Tensor,
                 tkeys: torch.Tensor) -> bool:
    """The count-min sketch's increments of ``rows`` (``HashedIndex.count``) in one native
    pass; False when the native core cannot take these tensors (the caller uses torch ops)."""
    small = (starts, widths, bases, tkeys)
    if not (sketch.device.type == "cpu" and sketch.dtype == torch.float32
            and sketch.is_contiguous() and sketch.dim() == 2 and rows.dtype == torch.int64
            and tables.dtype == torch.int64 and rows.device.type == "cpu"
            and all(t.dtype == torch.int64 and t.device.type == "cpu" for t in small)
            and cpu_native.library() is not None):
        return False
    rows, tables = rows.contiguous(), tables.contiguous()
    small = tuple(t.contiguous() for t in small)
    cpu_native.library().fiited_sketch_count(
        sketch.data_ptr(), sketch.shape[0], sketch.shape[1], rows.data_ptr(), tables.data_ptr(),
        rows.numel(), widths.numel(), *(t.data_ptr() for t in small))
    return True
