"""Settings of the fused sparse optimizer that runs inside the embedding backward."""
from __future__ import annotations

from dataclasses import dataclass

OPTIMIZERS = ("sgd", "rowwise_adagrad")


@dataclass
class SparseOptimConfig:
    """One optimizer for every embedding method, so comparisons are fair.

    ``rowwise_adagrad`` keeps one float32 accumulator per physical row of the pool, as FBGEMM's
    row-wise Adagrad does: for uniform (K=1) that is one per embedding row, for chunked stores
    one per chunk. ``sgd`` keeps no state.
    """

    name: str = "rowwise_adagrad"
    lr: float = 0.05
    eps: float = 1e-8
    initial_accumulator: float = 0.0

    def __post_init__(self) -> None:
        if self.name not in OPTIMIZERS:
            raise ValueError(
                f"train.sparse_optimizer.name={self.name!r} is not one of {OPTIMIZERS}"
            )
        if not self.lr > 0:
            raise ValueError(f"train.sparse_optimizer.lr must be > 0, got {self.lr}")

    @property
    def state_floats_per_row(self) -> int:
        return 1 if self.name == "rowwise_adagrad" else 0
