"""The differentiable all-to-all: rows out in forward, their gradients back in backward.

``x`` is split along dim 0 into ``in_splits`` pieces, piece d goes to rank d; the output is
the pieces received from every rank, in rank order (``out_splits``). Backward is the same
exchange reversed, times ``grad_scale``: the trainer scales each rank's loss by the world size
(so that DDP's averaging of dense gradients yields the global-batch mean), and the embedding
path undoes that factor here.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.distributed as dist


def _exchange(x: torch.Tensor, out_splits: Sequence[int], in_splits: Sequence[int],
              group) -> torch.Tensor:
    x = x.contiguous()
    out = x.new_empty((int(sum(out_splits)),) + tuple(x.shape[1:]))
    dist.all_to_all_single(out, x, list(out_splits), list(in_splits), group=group)
    return out


class _AllToAll(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, out_splits, in_splits, group, grad_scale):  # noqa: D401
        ctx.splits = (list(out_splits), list(in_splits))
        ctx.group, ctx.grad_scale = group, grad_scale
        return _exchange(x, out_splits, in_splits, group)

    @staticmethod
    def backward(ctx, grad):
        out_splits, in_splits = ctx.splits
        g = _exchange(grad, in_splits, out_splits, ctx.group)
        if ctx.grad_scale != 1.0:
            g.mul_(ctx.grad_scale)
        return g, None, None, None, None


def all_to_all(x: torch.Tensor, out_splits: Sequence[int], in_splits: Sequence[int],
               group=None, grad_scale: float = 1.0) -> torch.Tensor:
    """Send ``x``'s row blocks to the ranks, receive theirs; differentiable when ``x`` is."""
    if len(in_splits) != len(out_splits):
        raise ValueError(f"all_to_all: {len(in_splits)} send splits but {len(out_splits)} "
                         f"receive splits")
    if int(sum(in_splits)) != x.shape[0]:
        raise ValueError(f"all_to_all: send splits {list(in_splits)} add up to "
                         f"{sum(in_splits)}, but x has {x.shape[0]} rows")
    if torch.is_grad_enabled() and x.requires_grad:
        return _AllToAll.apply(x, out_splits, in_splits, group, float(grad_scale))
    return _exchange(x, out_splits, in_splits, group)
