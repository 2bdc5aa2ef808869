"""Quality and speed metrics. NE = logloss / H(train click rate) (He et al. 2014)."""
from __future__ import annotations

import math

import numpy as np
import torch


def binary_entropy(p: float) -> float:
    """H(p) in nats: the logloss of always predicting the base rate p."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"click rate must be in (0, 1) for NE, got {p}")
    return -(p * math.log(p) + (1 - p) * math.log(1 - p))


def logloss(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Mean binary cross-entropy in nats, computed stably from logits, in float64."""
    return float(torch.nn.functional.binary_cross_entropy_with_logits(
        logits.double(), labels.double()))


def normalized_entropy(logits: torch.Tensor, labels: torch.Tensor, base_rate: float) -> float:
    return logloss(logits, labels) / binary_entropy(base_rate)


def auc(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """Exact ROC AUC, ties counted as one half (Mann-Whitney U with average ranks)."""
    scores = scores.reshape(-1).double()
    labels = labels.reshape(-1)
    pos = labels > 0.5
    n_pos = int(pos.sum())
    n_neg = labels.numel() - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    sorted_scores, order = torch.sort(scores)
    _, counts = torch.unique_consecutive(sorted_scores, return_counts=True)
    ends = torch.cumsum(counts, 0).double()          # 1-based rank of each tie group's last
    avg_rank_group = ends - (counts.double() - 1) / 2
    ranks_sorted = torch.repeat_interleave(avg_rank_group, counts)
    ranks = torch.empty_like(ranks_sorted)
    ranks[order] = ranks_sorted
    rank_sum = float(ranks[pos].sum())
    return (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def percentile_ms(times_s: list[float], q: float) -> float:
    if not times_s:
        return float("nan")
    return float(np.percentile(np.asarray(times_s) * 1e3, q))


def eval_metrics(prefix: str, logits: torch.Tensor, labels: torch.Tensor,
                 base_rate: float) -> dict[str, float]:
    """The metric names the README documents: {prefix}/ne, {prefix}/auc, {prefix}/logloss."""
    ll = logloss(logits, labels)
    return {f"{prefix}/logloss": ll, f"{prefix}/ne": ll / binary_entropy(base_rate),
            f"{prefix}/auc": auc(logits, labels)}
