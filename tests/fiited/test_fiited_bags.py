"""FIITED with multi-hot features: at full capacity it trains exactly like uniform, and its
utilities count bag occurrences with each occurrence's share of the pooled gradient."""
from __future__ import annotations

import pytest
import torch

from fiited import FeatureSpec, Jagged, SparseOptimConfig, TableSpec, build_method

TABLES = [TableSpec("user", 60), TableSpec("item", 200), TableSpec("genre", 12)]
FEATURES = [FeatureSpec("user", "user"), FeatureSpec("item", "item"),
            FeatureSpec("genres", "genre", "mean"), FeatureSpec("history", "item", "sum")]
DIM = 8
SGD = SparseOptimConfig(name="sgd", lr=0.1)
ADAGRAD_ROW = SparseOptimConfig(name="rowwise_adagrad", lr=0.1, accumulator="row")
ADAGRAD = SparseOptimConfig(name="rowwise_adagrad", lr=0.1)


def batch(gen, b=48, weighted=False):
    ids = torch.stack([torch.randint(0, 60, (b,), generator=gen),
                       torch.randint(0, 200, (b,), generator=gen)], 1)
    lens = torch.stack([torch.randint(0, 4, (b,), generator=gen),
                        torch.randint(0, 9, (b,), generator=gen)], 1)
    card = torch.tensor([12, 200]).repeat(b)
    per = torch.repeat_interleave(card, lens.reshape(-1))
    values = (torch.rand(int(lens.sum()), generator=gen) * per).long()
    values[1::3] = values[1::3] % 5                  # frequent ids: duplicates within bags
    w = torch.rand(values.numel(), generator=gen) + 0.5 if weighted else None
    return ids, Jagged.from_lengths(values, lens, ["genres", "history"], w)


def fiited(k, optim, **cfg):
    return build_method({"name": "fiited", "budget": 1.0, "budget_scope": "weights",
                         "index": "direct", "num_chunks": k,
                         "schedule": {"warmup": [3], "interval": 5}, **cfg},
                        TABLES, DIM, optim, seed=4, features=FEATURES)


# Row-wise Adagrad with accumulator=chunk (per physical row) differs from uniform at K>1 by
# design; accumulator=row keeps one per logical row and must equal uniform.
@pytest.mark.parametrize("k,optim", [(1, SGD), (2, SGD), (4, SGD), (1, ADAGRAD),
                                     (2, ADAGRAD_ROW), (4, ADAGRAD_ROW)],
                         ids=["1-sgd", "2-sgd", "4-sgd", "1-adagrad", "2-adagrad_row",
                              "4-adagrad_row"])
def test_full_capacity_with_bags_trains_exactly_like_uniform(k, optim):
    uni = build_method({"name": "uniform"}, TABLES, DIM, optim, seed=4, features=FEATURES)
    fii = fiited(k, optim)
    gen = torch.Generator().manual_seed(3)
    for n in range(1, 21):                           # pruning events change nothing
        ids, bags = batch(gen, weighted=n % 2 == 0)
        w = torch.randn(ids.shape[0], 4, DIM, generator=gen)
        outs = []
        for m in (uni, fii):
            out = m(ids, bags)
            (out * w).sum().backward()
            m.on_step(n)
            outs.append(out.detach())
        torch.testing.assert_close(outs[1], outs[0], rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(fii.store.pool.view(-1, DIM), uni.pool, rtol=1e-6, atol=1e-7)
    assert fii.events >= 4                          # pruning events ran (and kept all)


def test_utility_counts_each_occurrence_with_its_gradient_share():
    """freq_grad: utility[row, k] += ||share_n slice k|| per occurrence n; freq: += 1 each."""
    gen = torch.Generator().manual_seed(8)
    ids, bags = batch(gen, b=16, weighted=True)
    w = torch.randn(16, 4, DIM, generator=gen)
    got = {}
    for kind in ("freq", "freq_grad"):
        m = fiited(2, SGD, utility=kind, gamma=1.0)
        (m(ids, bags) * w).sum().backward()
        got[kind] = m.utility.util.clone()
    want_f = torch.zeros_like(got["freq"])
    want_g = torch.zeros_like(got["freq_grad"])
    off = {"user": 0, "item": 60, "genre": 260}
    for b in range(16):
        for j, name in enumerate(("user", "item")):
            want_f[off[name] + int(ids[b, j])] += 1
            want_g[off[name] + int(ids[b, j])] += w[b, j].view(2, 4).norm(dim=1)
    vals, offs, wts = bags.values, bags.offsets, bags.weights
    for i in range(16 * 2):
        b, f = divmod(i, 2)
        lo, hi = int(offs[i]), int(offs[i + 1])
        for n in range(lo, hi):
            table = ("genre", "item")[f]
            scale = float(wts[n]) / (hi - lo if f == 0 else 1)    # genres: mean, history: sum
            want_f[off[table] + int(vals[n])] += 1
            want_g[off[table] + int(vals[n])] += (scale * w[b, 2 + f]).view(2, 4).norm(dim=1)
    assert torch.equal(got["freq"], want_f)
    torch.testing.assert_close(got["freq_grad"], want_g)
