"""Early stopping on validation NE (``train.early_stopping``), kept apart from the loop."""
from __future__ import annotations

from benchmark.errors import UserError


class EarlyStop:
    """Stop after ``patience`` validations without a lower val NE (0: never). The run keeps
    its last weights; the summary says where the best NE was."""

    def __init__(self, patience: int) -> None:
        if patience < 0:
            raise UserError(f"train.early_stopping must be >= 0, got {patience}")
        self.patience, self.best, self.best_step, self.bad = patience, float("inf"), 0, 0
        self.stopped_at = 0

    def update(self, metrics: dict[str, float], step: int) -> bool:
        """After a validation: True when the run should stop."""
        if not self.patience:
            return False
        ne = float(metrics["val/ne"])
        if ne < self.best:
            self.best, self.best_step, self.bad = ne, step, 0
        else:
            self.bad += 1
        if self.bad >= self.patience:
            self.stopped_at = step
        return self.bad >= self.patience

    def state(self) -> list:
        return [self.best, self.best_step, self.bad]

    def load(self, state) -> None:
        if state:
            self.best, self.best_step, self.bad = float(state[0]), int(state[1]), int(state[2])

    def summary(self) -> dict[str, float]:
        if not self.patience:
            return {}
        return {"train/best_val_ne": self.best, "train/best_val_step": float(self.best_step),
                "train/early_stopped_at": float(self.stopped_at)}
