"""Every registered method through the bag (multi-hot) path: length-one bags equal the one-hot
path (outputs and state after training), pooled outputs equal the sum / mean / weighted sum of
one-hot embeddings (empty bags, duplicates), and tables shared by several features."""
from __future__ import annotations

import pytest
import torch

from fiited import FeatureSpec, Jagged, SparseOptimConfig, TableSpec, build_method, method_names

TABLES = [TableSpec("a", 40), TableSpec("b", 300), TableSpec("c", 9)]
DIM = 8
SGD = SparseOptimConfig(name="sgd", lr=0.1)
ADAGRAD = SparseOptimConfig(name="rowwise_adagrad", lr=0.1)
# Settings that exercise each method's compression (collisions, chunks, projections, ...).
CONFIGS = {
    "uniform": {"budget": 0.5},
    "fiited": {"budget": 0.5, "budget_scope": "weights", "num_chunks": 4,
               "schedule": {"warmup": [2], "interval": 2}},
    "adaembed": {"budget": 0.5, "budget_scope": "weights", "schedule": {"warmup": [2],
                                                                        "interval": 2}},
    "itep": {"budget": 0.5, "budget_scope": "weights"},
    "hashing": {"budget": 0.3},
    "qr": {"budget": 0.3},
    "mixed_dim": {"budget": 0.4, "alpha": 0.5},
    "post_prune": {"budget": 0.5, "chunks": 2, "score": "utility"},
    "freq_filter": {"budget": 0.5},
}
ALL = method_names()


def test_every_registered_method_is_covered_here():
    assert set(ALL) <= set(CONFIGS), set(ALL) - set(CONFIGS)


def make(name, optim=SGD, features=None, tables=TABLES, seed=1, **over):
    cfg = {"name": name, **CONFIGS[name], **over}
    return build_method(cfg, tables, DIM, optim, seed=seed, features=features)


def random_ids(batch, gen, tables=TABLES):
    return torch.stack([torch.randint(0, t.num_rows, (batch,), generator=gen) for t in tables], 1)


def prepare(m, ids=None, bag_values=()):
    """freq_filter's counting pass (the harness runs it); others need none."""
    if getattr(m, "needs_train_ids", False):
        m.prepare(ids.numpy(), bag_values)


def step(m, out, w, n):
    """One training step: backward (the fused sparse update) and a dense SGD step."""
    (out * w).sum().backward()
    with torch.no_grad():
        for p in m.parameters():
            if p.grad is not None:
                p -= 0.05 * p.grad
                p.grad = None
    m.on_step(n)


def state(m):
    return {k: v for k, v in m.state_dict().items() if isinstance(v, torch.Tensor)}


@pytest.mark.parametrize("optim", [SGD, ADAGRAD], ids=["sgd", "adagrad"])
@pytest.mark.parametrize("name", ALL)
def test_bags_of_length_one_train_like_the_one_hot_path(name, optim):
    names = [t.name for t in TABLES]
    gen = torch.Generator().manual_seed(0)
    train = random_ids(256, gen)
    plain = make(name, optim)
    bagged = make(name, optim, features=[FeatureSpec(n, n, "sum" if i % 2 else "mean")
                                         for i, n in enumerate(names)])
    assert not bagged.plain and bagged.num_onehot == 0 and bagged.num_features == 3
    prepare(plain, train)
    prepare(bagged, train[:, :0], [(n, train[:, i].numpy()) for i, n in enumerate(names)])
    for n in range(1, 7):
        ids = random_ids(32, gen)
        w = torch.randn(32, 3, DIM, generator=gen)
        a = plain(ids)
        b = bagged(ids[:, :0], Jagged.from_dense(ids, names))
        assert torch.equal(b, a), (name, n)        # a bag of one pools exactly (x + 0, x / 1)
        step(plain, a, w, n)
        step(bagged, b, w, n)
        if n == 4:
            plain.on_train_end()
            bagged.on_train_end()
    sa, sb = state(plain), state(bagged)
    assert sa.keys() == sb.keys()
    for k in sa:                                     # bit-identical on CPU today; allow rounding
        torch.testing.assert_close(sb[k], sa[k], rtol=1e-6, atol=1e-7, msg=f"{name}: {k}")


def _bags(gen, batch, tables, max_len=5):
    """Random bags over ``tables`` (row-major), lengths 0..max_len, with duplicates."""
    lens = torch.randint(0, max_len + 1, (batch, len(tables)), generator=gen)
    lens[0, 0] = 0                                   # an empty bag for sure
    card = torch.tensor([t.num_rows for t in tables]).repeat(batch)
    per = torch.repeat_interleave(card, lens.reshape(-1))
    values = (torch.rand(int(lens.sum()), generator=gen) * per).long()
    values = torch.minimum(values, torch.tensor(3))  # small ids: duplicates inside bags
    values[::2] = (torch.rand(values[::2].numel(), generator=gen) * per[::2]).long()
    return lens, values


@pytest.mark.parametrize("weighted", [False, True], ids=["plain", "weighted"])
@pytest.mark.parametrize("name", ALL)
def test_pooled_output_is_the_sum_or_mean_of_one_hot_embeddings(name, weighted):
    gen = torch.Generator().manual_seed(5)
    feats = [FeatureSpec("a", "a"), FeatureSpec("hist", "b", "mean"),
             FeatureSpec("tags", "c", "sum"), FeatureSpec("more_a", "a", "mean")]
    bag_tables = [TABLES[1], TABLES[2], TABLES[0]]
    train = random_ids(256, gen)
    plain = make(name)
    m = make(name, features=feats)
    prepare(plain, train)
    prepare(m, train[:, :1], [("hist", train[:, 1].numpy()), ("tags", train[:, 2].numpy()),
                              ("more_a", train[:0, 0].numpy())])     # the same counts
    for n in range(1, 4):                            # trained state (allocated chunks, ...)
        step(plain, plain(random_ids(64, gen)), torch.randn(64, 3, DIM, generator=gen), n)
    m.load_state_dict(plain.state_dict())
    batch = 16
    ids = random_ids(batch, gen)[:, :1]
    lens, values = _bags(gen, batch, bag_tables)
    weights = torch.rand(values.numel(), generator=gen) + 0.5 if weighted else None
    bags = Jagged.from_lengths(values, lens, ["hist", "tags", "more_a"], weights)
    plain.eval()
    m.eval()
    with torch.no_grad():
        out = m(ids, bags)
        assert out.shape == (batch, 4, DIM)
        col = {"a": 0, "b": 1, "c": 2}

        def one_hot(table, i):
            x = torch.zeros(1, 3, dtype=torch.long)
            x[0, col[table]] = i
            return plain(x)[0, col[table]]

        want = torch.zeros(batch, 4, DIM)
        pos = 0
        for b in range(batch):
            want[b, 0] = one_hot("a", int(ids[b, 0]))
            for j, f in enumerate(feats[1:]):
                n = int(lens[b, j])
                for k in range(pos, pos + n):
                    wk = 1.0 if weights is None else float(weights[k])
                    want[b, 1 + j] += wk * one_hot(f.table, int(values[k]))
                if f.pooling == "mean" and n:
                    want[b, 1 + j] /= n
                pos += n
    assert bool((want[0, 1] == 0).all()) and bool((out[0, 1] == 0).all())   # the empty bag
    torch.testing.assert_close(out, want, rtol=1e-5, atol=1e-6)


def test_a_table_shared_by_a_one_hot_and_a_bag_feature_takes_both_updates():
    """One table, two features: its rows get one coalesced SGD step from both (autograd on a
    dense copy of the table is the reference)."""
    tables = [TableSpec("item", 30)]
    feats = [FeatureSpec("item", "item"), FeatureSpec("history", "item", "mean")]
    m = build_method({"name": "uniform"}, tables, DIM, SGD, seed=2, features=feats)
    ids = torch.tensor([[3], [4], [5]])
    lens = torch.tensor([[2], [0], [3]])
    values = torch.tensor([3, 7, 4, 4, 3])           # row 3 in both features, 4 twice in a bag
    before = m.pool.clone()
    ref = before.clone().requires_grad_(True)
    w = torch.randn(3, 2, DIM, generator=torch.Generator().manual_seed(1))
    out = m(ids, Jagged.from_lengths(values, lens, ["history"]))
    want = torch.stack([ref[ids[:, 0]],
                        torch.stack([ref[[3, 7]].mean(0), torch.zeros(DIM),
                                     ref[[4, 4, 3]].mean(0)])], 1)
    torch.testing.assert_close(out, want.detach())
    (out * w).sum().backward()
    (want * w).sum().backward()
    torch.testing.assert_close(m.pool, before - 0.1 * ref.grad)
    assert not torch.equal(m.pool[3], before[3]) and torch.equal(m.pool[0], before[0])
    # row 3's step has both features' shares: not the one-hot share alone
    assert not torch.allclose(m.pool[3], before[3] - 0.1 * w[0, 0])


def test_bad_bags_are_refused_naming_the_thing_at_fault():
    feats = [FeatureSpec("a", "a"), FeatureSpec("hist", "b", "mean")]
    m = make("uniform", features=feats)
    ids = torch.zeros(2, 1, dtype=torch.long)
    good = Jagged.from_lengths(torch.tensor([1, 2]), torch.tensor([[1], [1]]), ["hist"])
    with pytest.raises(ValueError, match=r"do not match this method's bag features \['hist'\]"):
        m(ids, Jagged.from_lengths(torch.tensor([1, 2]), torch.tensor([[1], [1]]), ["tags"]))
    with pytest.raises(ValueError, match=r"feature 'hist', bag of row 1: id 300 outside 0..299"):
        m(ids, Jagged.from_lengths(torch.tensor([1, 300]), torch.tensor([[1], [1]]), ["hist"]))
    with pytest.raises(ValueError, match=r"forward needs bags="):
        m(ids)
    with pytest.raises(ValueError, match=r"bags hold 2 rows, ids 3"):
        m(torch.zeros(3, 1, dtype=torch.long), good)
    with pytest.raises(ValueError, match=r"ids must be \[batch, 1\]"):
        m(torch.zeros(2, 3, dtype=torch.long), good)
    with pytest.raises(ValueError, match=r"feature 'x' reads table 'zz'"):
        make("uniform", features=[FeatureSpec("x", "zz")])
    with pytest.raises(ValueError, match=r"feature 'x': pooling must be"):
        make("uniform", features=[FeatureSpec("x", "a", "max")])
    with pytest.raises(ValueError, match=r"padding=projection needs one one-hot feature"):
        make("fiited", features=feats, padding="projection")
    assert m(ids, good).shape == (2, 2, DIM)
