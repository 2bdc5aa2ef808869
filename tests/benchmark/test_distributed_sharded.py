"""The pure parts of the sharded embedding: batch slices and how event metrics combine."""
from __future__ import annotations

import pytest

from benchmark.distributed.sharded import batch_split, merge_event_metrics


@pytest.mark.parametrize("batch,world", [(10, 2), (11, 2), (7, 3), (1, 4), (0, 2), (1024, 8)])
def test_batch_split_is_contiguous_balanced_and_complete(batch, world):
    sizes = batch_split(batch, world)
    assert len(sizes) == world and sum(sizes) == batch
    assert max(sizes) - min(sizes) <= 1
    assert sizes == sorted(sizes, reverse=True)     # the larger slices come first


def test_event_metrics_sum_counts_max_times_weight_fractions_and_keep_tables():
    rank0 = {"prune/kept_chunks": 10.0, "prune/capacity": 12.0, "prune/kept_pos0": 4.0,
             "prune/event_seconds": 0.5, "prune/events": 2.0, "prune/mean_width": 8.0,
             "prune/kept_frac_pos0": 0.5, "prune/kept/T0": 10.0, "prune/threshold": 0.3}
    rank1 = {"prune/kept_chunks": 5.0, "prune/capacity": 6.0, "prune/kept_pos0": 1.0,
             "prune/event_seconds": 0.2, "prune/events": 2.0, "prune/mean_width": 2.0,
             "prune/kept_frac_pos0": 0.25, "prune/kept/T1": 5.0, "prune/threshold": 0.3}
    got = merge_event_metrics([rank0, rank1], rows=[30, 10])
    assert got == {"prune/kept_chunks": 15.0, "prune/capacity": 18.0, "prune/kept_pos0": 5.0,
                   "prune/event_seconds": 0.5, "prune/events": 2.0,
                   "prune/mean_width": pytest.approx((8 * 30 + 2 * 10) / 40),
                   "prune/kept_frac_pos0": pytest.approx((0.5 * 30 + 0.25 * 10) / 40),
                   "prune/kept/T0": 10.0, "prune/kept/T1": 5.0, "prune/threshold": 0.3}


def test_metrics_ranks_disagree_on_are_kept_per_rank():
    got = merge_event_metrics([{"prune/threshold": 0.1}, {"prune/threshold": 0.4}], [1, 1])
    assert got == {"prune/threshold/rank0": 0.1, "prune/threshold/rank1": 0.4}
    assert merge_event_metrics([{}, {}], [1, 1]) == {}
