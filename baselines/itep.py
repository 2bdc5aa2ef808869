"""ITEP: the open-source AdaEmbed-like in-training row pruning of TorchRec/FBGEMM.

What FBGEMM's ``prune_embedding_tables`` + ``remap_indices_update_utils`` do, on FIITED's
store at K=1: utility = access counts (``freq``), no per-step decay but x0.98 at every pruning
event; per-table pools and thresholds (each table keeps its own share of rows); the threshold
comes from every 23rd row (rotating offset = step mod 23); events after steps 3, 6, 9, 30, 60,
90, 300, 600, 900 and then every 1001 steps; reused slots are zeroed with their optimizer
state reset.

Known differences from FBGEMM, all deliberate: rows get slots on first access here (FBGEMM
pre-maps ids 0..capacity-1, which favours whatever ids happen to be small); utilities are
updated every step (FBGEMM only on some steps); the per-event decay also applies to the
first events (FBGEMM skips it before step ``interval``) and reused slots are reset at every
event (FBGEMM only after step ``interval``); a table of more than 23 x 16384 rows is sampled
at a wider stride (at most ``max_sample_rows`` rows, so an event's memory stays bounded; the
exact top-up after the threshold keeps exactly capacity rows either way).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from fiited.method import Fiited, FiitedConfig
from fiited.pruning import ScheduleConfig
from fiited.registry import register_method

ITEP_WARMUP = [3, 6, 9, 30, 60, 90, 300, 600, 900]


@dataclass
class ITEPConfig(FiitedConfig):
    name: str = "itep"
    num_chunks: int = 1
    utility: str = "freq"
    gamma: float = 0.98
    decay_per: str = "event"
    sampling: str = "stride"
    sample_stride: int = 23
    min_sample_rows: int = 0
    max_sample_rows: int = 16384
    pool: str = "per_table"
    normalise: str = "none"
    regrow_init: str = "zero"
    schedule: ScheduleConfig = field(
        default_factory=lambda: ScheduleConfig(warmup=list(ITEP_WARMUP), interval=1001))

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.num_chunks != 1:
            raise ValueError(f"method.num_chunks={self.num_chunks}: ITEP prunes whole rows "
                             f"(num_chunks must be 1); use method=fiited for chunks")


@register_method("itep")
class ITEP(Fiited):
    config_class = ITEPConfig
