"""post_prune's threshold selection keeps exactly what two stable sorts keep, ties included."""
from __future__ import annotations

import pytest
import torch

from baselines.post_prune import top_positions


def _by_sorting(score, tie, n):
    by_tie = torch.argsort(tie, descending=True, stable=True)
    order = by_tie[torch.argsort(score[by_tie], descending=True, stable=True)]
    return torch.sort(order[:n]).values


@pytest.mark.parametrize("seed", range(12))
def test_top_positions_equals_the_stable_sorts(seed):
    g = torch.Generator().manual_seed(seed)
    size = int(torch.randint(1, 3000, (1,), generator=g))
    levels = [2, 5, 1000][seed % 3]            # few levels: many ties in score and in tie
    score = torch.randint(0, levels, (size,), generator=g).float() / levels
    tie = torch.randint(0, [1, 3, 50][seed % 3], (size,), generator=g).float() * 0.25
    score[torch.rand(size, generator=g) < 0.3] = 0.0     # a block of zero utilities
    for n in {0, 1, size // 3, size // 2, size - 1, size, size + 5}:
        got = top_positions(score, tie, n)
        assert torch.equal(got, _by_sorting(score, tie, n)), (seed, n)
        assert got.numel() == min(max(n, 0), size)
