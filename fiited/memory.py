"""The memory ledger: allocated bytes by component, comparable across methods."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Sequence

import torch

COMPONENTS = ("weights", "optimizer", "index", "utility", "other")


def tensor_bytes(*tensors: torch.Tensor | None) -> int:
    """Bytes of allocated storage (numel * element size), the unit every ledger counts in."""
    return int(sum(t.numel() * t.element_size() for t in tensors if t is not None))


@dataclass
class MemoryReport:
    """Capacity, never 'used' entries: what the method holds at this moment.

    ``uniform_weights``/``uniform_total`` are what a full uniform table at dim D with the same
    optimizer holds, so that ``compression`` and ``total_compression`` compare like with like.
    """

    weights: int = 0
    optimizer: int = 0
    index: int = 0
    utility: int = 0
    other: int = 0
    uniform_weights: int = 0
    uniform_total: int = 0
    per_table: dict = field(default_factory=dict)

    @property
    def total(self) -> int:
        return self.weights + self.optimizer + self.index + self.utility + self.other

    @property
    def compression(self) -> float:
        return self.uniform_weights / self.weights if self.weights else float("inf")

    @property
    def total_compression(self) -> float:
        return self.uniform_total / self.total if self.total else float("inf")

    def as_dict(self) -> dict:
        d = asdict(self)
        d.update(total=self.total, compression=self.compression,
                 total_compression=self.total_compression)
        return d

    def metrics(self, prefix: str = "mem/") -> dict[str, float]:
        """The metric names MLflow and summary.json use (README, "Metric names")."""
        return {
            f"{prefix}weights_bytes": float(self.weights),
            f"{prefix}optimizer_bytes": float(self.optimizer),
            f"{prefix}index_bytes": float(self.index),
            f"{prefix}utility_bytes": float(self.utility),
            f"{prefix}other_bytes": float(self.other),
            f"{prefix}total_bytes": float(self.total),
            f"{prefix}uniform_weights_bytes": float(self.uniform_weights),
            f"{prefix}compression": float(self.compression),
            f"{prefix}total_compression": float(self.total_compression),
        }


def uniform_bytes(num_rows: Sequence[int], dim: int, state_floats_per_row: int) -> tuple[int, int]:
    """(weights, total) bytes of full uniform float32 tables at ``dim``."""
    rows = int(sum(num_rows))
    weights = rows * dim * 4
    return weights, weights + rows * state_floats_per_row * 4
