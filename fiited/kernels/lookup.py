"""Autograd glue: the forward gathers, the backward runs the fused sparse update in place.

No dense gradient of table size ever exists: the pool is a buffer, not a parameter; a
zero-element anchor that requires grad makes autograd call our backward.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch

from fiited.optim import SparseOptimConfig


class _Lookup(torch.autograd.Function):
    @staticmethod
    def forward(ctx, anchor, pool, state, rows, opt, sink, state_rows):  # noqa: D401
        from fiited import kernels

        ctx.pool, ctx.state, ctx.opt, ctx.sink = pool, state, opt, sink
        ctx.state_rows = state_rows
        ctx.save_for_backward(rows)
        return kernels.gather(pool, rows)

    @staticmethod
    def backward(ctx, grad_out):
        from fiited import kernels

        (rows,) = ctx.saved_tensors
        norms = kernels.backward_update(ctx.pool, ctx.state, rows, grad_out.contiguous(), ctx.opt,
                                        ctx.state_rows)
        if ctx.sink is not None:
            ctx.sink(norms)
        return (None,) * 7


def lookup(pool: torch.Tensor, state: torch.Tensor, rows: torch.Tensor, opt: SparseOptimConfig,
           sink: Optional[Callable[[torch.Tensor], None]] = None,
           state_rows: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Gather ``rows`` from ``pool``; when grad is on, backward updates ``pool`` in place.

    ``sink`` receives the per-occurrence chunk gradient norms [N, K] during backward.
    ``state_rows`` [N]: the logical row of each lookup, for Adagrad state per logical row.
    """
    from fiited import kernels

    if not torch.is_grad_enabled():
        return kernels.gather(pool, rows)
    anchor = torch.empty(0, device=pool.device, requires_grad=True)
    return _Lookup.apply(anchor, pool, state, rows, opt, sink, state_rows)


class _BagLookup(torch.autograd.Function):
    @staticmethod
    def forward(ctx, anchor, pool, state, rows, offsets, weights, mode, opt, sink,  # noqa: D401
                state_rows):
        from fiited import kernels

        ctx.pool, ctx.state, ctx.opt, ctx.sink, ctx.mode = pool, state, opt, sink, mode
        ctx.state_rows = state_rows
        ctx.has_weights = weights is not None
        ctx.save_for_backward(rows, offsets, *(() if weights is None else (weights,)))
        return kernels.bag_gather(pool, rows, offsets, weights, mode)

    @staticmethod
    def backward(ctx, grad_out):
        from fiited import kernels

        rows, offsets, *rest = ctx.saved_tensors
        weights = rest[0] if ctx.has_weights else None
        norms = kernels.bag_backward_update(ctx.pool, ctx.state, rows, offsets,
                                            grad_out.contiguous(), ctx.opt, weights, ctx.mode,
                                            ctx.state_rows)
        if ctx.sink is not None:
            ctx.sink(norms)
        return (None,) * 10


def bag_lookup(pool: torch.Tensor, state: torch.Tensor, rows: torch.Tensor,
               offsets: torch.Tensor, opt: SparseOptimConfig,
               weights: Optional[torch.Tensor] = None, mode: str = "sum",
               sink: Optional[Callable[[torch.Tensor], None]] = None,
               state_rows: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Pooled lookup of bags [B, K*C]; when grad is on, backward updates ``pool`` in place.

    ``sink`` receives the per-occurrence norms [N, K] of each occurrence's gradient share.
    ``weights`` are data (TorchRec's per-id weights): they get no gradient. ``state_rows``
    [N] as in ``lookup``.
    """
    from fiited import kernels

    if not torch.is_grad_enabled():
        return kernels.bag_gather(pool, rows, offsets, weights, mode)
    anchor = torch.empty(0, device=pool.device, requires_grad=True)
    return _BagLookup.apply(anchor, pool, state, rows, offsets, weights, mode, opt, sink,
                            state_rows)
