"""Per-group LIFO free stacks of pool slots (the chunk store's slot management).

Group g owns the slot range ``[start[g], start[g] + cap[g])`` and its stack lives in the same
range of ``stack``, with ``top[g]`` free slots on it. Pops and pushes are vectorised over the
requests: one sort by group, ranks within each group, one gather or scatter.
"""
from __future__ import annotations

import torch


def ranks_within_groups(groups: torch.Tensor, num_groups: int) -> tuple[torch.Tensor, torch.Tensor]:
    """For group ids already sorted (stable), each item's rank inside its group and the counts."""
    counts = torch.bincount(groups, minlength=num_groups)
    first = torch.cumsum(counts, 0) - counts
    return torch.arange(groups.numel(), device=groups.device) - first[groups], counts


def initial_stack(caps: torch.Tensor, starts: torch.Tensor) -> torch.Tensor:
    """Every slot free: group g's segment holds its slots in reverse, so pops hand out
    ascending slots. Written one group at a time straight into int32 (a whole-pool int64
    arange and gathers would be ~5 int64 temporaries per slot, the largest part of a
    method's construction peak)."""
    stack = torch.empty(int(caps.sum()), dtype=torch.int32)
    for start, cap in zip(starts.tolist(), caps.tolist()):
        if cap:
            torch.arange(start + cap - 1, start - 1, -1, dtype=torch.int32,
                         out=stack[start:start + cap])
    return stack


def pop(stack: torch.Tensor, top: torch.Tensor, start: torch.Tensor,
        groups: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Requests in priority order (per group) -> (granted mask, slots of the granted ones);
    a group grants while it has free slots. ``top`` is updated in place."""
    order = torch.sort(groups, stable=True).indices
    g = groups[order]
    rank, _ = ranks_within_groups(g, top.numel())
    t = top[g]
    ok = rank < t
    pos = start[g] + t - 1 - rank
    slots_sorted = stack[pos[ok]].long()
    top.sub_(torch.bincount(g[ok], minlength=top.numel()))
    granted = torch.zeros_like(groups, dtype=torch.bool)
    granted[order[ok]] = True
    slots = torch.full_like(groups, -1)
    slots[order[ok]] = slots_sorted
    return granted, slots[granted]


def push(stack: torch.Tensor, top: torch.Tensor, start: torch.Tensor, cap: torch.Tensor,
         slots: torch.Tensor, groups: torch.Tensor) -> None:
    """Put freed ``slots`` back on their groups' stacks (``stack`` and ``top`` in place)."""
    order = torch.sort(groups, stable=True).indices
    g = groups[order]
    rank, counts = ranks_within_groups(g, top.numel())
    pos = start[g] + top[g] + rank
    if bool((top + counts > cap).any()):
        raise RuntimeError("free stack overflow: a slot was pushed twice")
    stack[pos] = slots[order].to(torch.int32)
    top.add_(counts)
