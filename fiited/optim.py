"""Settings of the fused sparse optimizer that runs inside the embedding backward."""
from __future__ import annotations

from dataclasses import dataclass

OPTIMIZERS = ("sgd", "rowwise_adagrad")
ACCUMULATORS = ("row", "chunk")


@dataclass
class SparseOptimConfig:
    """One optimizer for every embedding method, so comparisons are fair.

    ``rowwise_adagrad`` keeps one float32 accumulator per embedding row, as FBGEMM's row-wise
    Adagrad does. A chunked store (FIITED at K>1) has two readings of "row":
    ``accumulator: row`` keeps one per *logical* row (the accumulator grows by the mean of g^2
    over the row's present chunks, and all of them take the same step: FIITED at full capacity
    then trains exactly like uniform); ``chunk`` keeps one per physical pool row, i.e. per chunk.
    At K=1 both are the same. ``sgd`` keeps no state.
    """

    name: str = "rowwise_adagrad"
    lr: float = 0.05
    eps: float = 1e-8
    initial_accumulator: float = 0.0
    accumulator: str = "chunk"

    def __post_init__(self) -> None:
        if self.name not in OPTIMIZERS:
            raise ValueError(
                f"train.sparse_optimizer.name={self.name!r} is not one of {OPTIMIZERS}"
            )
        if not self.lr > 0:
            raise ValueError(f"train.sparse_optimizer.lr must be > 0, got {self.lr}")
        if self.accumulator not in ACCUMULATORS:
            raise ValueError(f"train.sparse_optimizer.accumulator={self.accumulator!r} is not "
                             f"one of {ACCUMULATORS}")

    @property
    def state_floats_per_row(self) -> int:
        return 1 if self.name == "rowwise_adagrad" else 0

    def per_logical_row(self, num_chunks: int) -> bool:
        """Whether a store of ``num_chunks`` chunks per row keeps its state per logical row
        (K=1: per slot, which is the same thing and no bigger)."""
        return self.name == "rowwise_adagrad" and self.accumulator == "row" and num_chunks > 1
