import math

import pytest
import torch

from benchmark.metrics import auc, binary_entropy, eval_metrics, logloss, normalized_entropy


def brute_force_auc(scores, labels):
    pos = [s for s, y in zip(scores, labels) if y > 0.5]
    neg = [s for s, y in zip(scores, labels) if y <= 0.5]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


@pytest.mark.parametrize("seed", range(5))
def test_auc_matches_pairwise_count_with_ties(seed):
    g = torch.Generator().manual_seed(seed)
    scores = torch.randint(0, 7, (300,), generator=g).float()  # many ties
    labels = (torch.rand(300, generator=g) < 0.3).float()
    assert auc(scores, labels) == pytest.approx(brute_force_auc(scores.tolist(), labels.tolist()),
                                                abs=1e-12)


def test_auc_extremes_and_degenerate():
    labels = torch.tensor([0.0, 0.0, 1.0, 1.0])
    assert auc(torch.tensor([0.1, 0.2, 0.8, 0.9]), labels) == 1.0
    assert auc(torch.tensor([0.9, 0.8, 0.2, 0.1]), labels) == 0.0
    assert auc(torch.ones(4), labels) == 0.5
    assert math.isnan(auc(torch.rand(4), torch.ones(4)))


def test_ne_of_base_rate_prediction_is_one():
    g = torch.Generator().manual_seed(0)
    labels = (torch.rand(100_000, generator=g) < 0.2562).float()
    p = float(labels.mean())
    logits = torch.full_like(labels, math.log(p / (1 - p)))
    assert normalized_entropy(logits, labels, p) == pytest.approx(1.0, abs=1e-6)
    # a better-than-base-rate predictor has NE < 1, a worse one > 1
    assert normalized_entropy(logits + 1.0, labels, p) > 1.0


def test_logloss_matches_formula_and_entropy():
    logits = torch.tensor([0.0, 2.0, -1.0])
    labels = torch.tensor([1.0, 0.0, 1.0])
    prob = torch.sigmoid(logits.double())
    want = -(labels * prob.log() + (1 - labels) * (1 - prob).log()).mean()
    assert logloss(logits, labels) == pytest.approx(float(want), rel=1e-12)
    assert binary_entropy(0.2562) == pytest.approx(0.5690, abs=1e-4)  # docs/claims.md: Criteo Kaggle
    m = eval_metrics("val", logits, labels, 0.5)
    assert set(m) == {"val/logloss", "val/ne", "val/auc"}
    with pytest.raises(ValueError, match="click rate"):
        binary_entropy(0.0)
