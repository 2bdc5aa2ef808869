"""AdaEmbed (Lai et al., OSDI 2023): in-training pruning of whole rows.

FIITED's store at K=1: a row keeps its full width or nothing. Utility = access frequency x
gradient norm (``freq_grad``) with per-step decay; one pool shared by all tables, with each
table's utilities divided by its 95th percentile so that the budget flows to the tables that
need it. Every other knob is FIITED's (see ``fiited.method``).
"""
from __future__ import annotations

from dataclasses import dataclass

from fiited.method import Fiited, FiitedConfig
from fiited.registry import register_method


@dataclass
class AdaEmbedConfig(FiitedConfig):
    name: str = "adaembed"
    num_chunks: int = 1
    utility: str = "freq_grad"
    pool: str = "shared"
    normalise: str = "p95"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.num_chunks != 1:
            raise ValueError(f"method.num_chunks={self.num_chunks}: AdaEmbed prunes whole rows "
                             f"(num_chunks must be 1); use method=fiited for chunks")


@register_method("adaembed")
class AdaEmbed(Fiited):
    config_class = AdaEmbedConfig
