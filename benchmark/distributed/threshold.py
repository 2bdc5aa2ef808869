"""One adaptive threshold for a pool shared across tables that live on different ranks.

Each rank samples its own tables' utilities (scaled per table, which is rank-local because
tables are whole on one rank); the ranks all-gather the samples and their weights, add up
capacities and populations, and every rank computes the same tau with FIITED's own
``adaptive_threshold`` on the union. Each rank then evicts/allocates in its own pool, whose
capacity stays its local share (memory is allocated up front per rank), so a rank whose tables
want more than its share keeps the best of them and reports the rest as wanted-not-allocated.

Hook: ``fiited.pruning.run_event`` calls the module-level ``adaptive_threshold``; until it
takes a reducer argument, ``global_threshold`` swaps that name for the duration of a call.
"""
from __future__ import annotations

import contextlib
from typing import Callable, Iterator

import torch
import torch.distributed as dist

Threshold = Callable[[torch.Tensor, torch.Tensor, int, int], float]


def make_global_threshold(local: Threshold, device: torch.device, group=None) -> Threshold:
    """Wrap a 1-process threshold rule into one agreed over all ranks of ``group``."""

    def reduce(values: torch.Tensor, weights: torch.Tensor, capacity: int,
               population: int) -> float:
        world = dist.get_world_size(group)
        head = torch.tensor([float(capacity), float(population), float(values.numel())],
                            dtype=torch.float64, device=device)
        heads = [torch.empty_like(head) for _ in range(world)]
        dist.all_gather(heads, head, group=group)
        sizes = [int(h[2]) for h in heads]
        longest = max(sizes)
        mine = torch.zeros(2, longest, dtype=torch.float64, device=device)
        mine[0, :values.numel()] = values.reshape(-1).to(device=device, dtype=torch.float64)
        mine[1, :weights.numel()] = weights.reshape(-1).to(device=device, dtype=torch.float64)
        parts = [torch.empty_like(mine) for _ in range(world)]
        dist.all_gather(parts, mine, group=group)
        vals = torch.cat([p[0, :n] for p, n in zip(parts, sizes)]).cpu()
        wts = torch.cat([p[1, :n] for p, n in zip(parts, sizes)]).cpu()
        cap = int(round(sum(float(h[0]) for h in heads)))
        pop = int(round(sum(float(h[1]) for h in heads)))
        return local(vals, wts, cap, pop)

    return reduce


@contextlib.contextmanager
def global_threshold(reducer: Threshold) -> Iterator[None]:
    """Make ``fiited.pruning`` use ``reducer`` for adaptive thresholds inside the block."""
    import fiited.pruning as pruning

    saved = pruning.adaptive_threshold
    pruning.adaptive_threshold = reducer
    try:
        yield
    finally:
        pruning.adaptive_threshold = saved


def wants_global_threshold(method) -> bool:
    """FIITED-family methods with one adaptive pool shared across their tables."""
    policy = getattr(method, "policy", None)
    return (policy is not None and getattr(policy, "pool", None) == "shared"
            and getattr(policy, "thresholds", None) == "adaptive")
