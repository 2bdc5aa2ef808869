"""Tables with their own widths (GroupedEmbeddings): uniform at full budget is one hand-built
``nn.EmbeddingBag`` per table; FIITED at full capacity trains like uniform; the ledger is the
sum of the groups'; widths FIITED cannot chunk are refused with the table named."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from fiited import FeatureSpec, GroupedEmbeddings, Jagged, SparseOptimConfig, TableSpec
from fiited.grouped import select_bags

TABLES = [TableSpec("user", 30), TableSpec("item", 50), TableSpec("genre", 9)]
WIDTHS = {"user": 8, "item": 16, "genre": 8}
# Output order: one-hot (user, item), then bags (history over item, genres) - widths 8,16,16,8.
FEATURES = [FeatureSpec("history", "item", "sum"), FeatureSpec("user", "user"),
            FeatureSpec("genres", "genre", "mean"), FeatureSpec("item", "item")]
SGD = SparseOptimConfig(name="sgd", lr=0.2)


def batch(gen, b=12, weighted=False):
    ids = torch.stack([torch.randint(0, 30, (b,), generator=gen),
                       torch.randint(0, 50, (b,), generator=gen)], 1)
    lens = torch.randint(0, 5, (b, 2), generator=gen)
    lens[0] = 0                                               # empty bags pool to zeros
    card = torch.tensor([50, 9]).repeat(b)
    per = torch.repeat_interleave(card, lens.reshape(-1))
    values = (torch.rand(int(lens.sum()), generator=gen) * per).long()
    w = torch.rand(values.numel(), generator=gen) + 0.5 if weighted else None
    return ids, Jagged.from_lengths(values, lens, ["history", "genres"], w)


def test_layout_and_select_bags():
    g = GroupedEmbeddings({"name": "uniform"}, TABLES, WIDTHS, SGD, features=FEATURES)
    assert [f.name for f in g.features] == ["user", "item", "history", "genres"]
    assert g.feature_widths == [8, 16, 16, 8] and g.output_width == 48
    assert g.group_widths == [8, 16] and [m.dim for m in g.groups] == [8, 16]
    ids, bags = batch(torch.Generator().manual_seed(0))
    sub = select_bags(bags, ["genres"])
    v, o, _ = bags.feature("genres")
    assert sub.feature_names == ("genres",)
    assert torch.equal(sub.values, v) and torch.equal(sub.offsets, o)


@pytest.mark.parametrize("weighted", [False, True], ids=["plain", "weighted"])
def test_uniform_full_budget_equals_embedding_bags(weighted):
    g = GroupedEmbeddings({"name": "uniform", "budget": 1.0}, TABLES, WIDTHS, SGD, seed=5,
                          features=FEATURES)
    gen = torch.Generator().manual_seed(1)
    ref = {t.name: nn.EmbeddingBag(t.num_rows, WIDTHS[t.name]) for t in TABLES}
    for m in g.groups:                                         # same weights copied in
        with torch.no_grad():
            m.pool.copy_(torch.cat([ref[t.name].weight for t in m.tables]))
    for _ in range(3):
        ids, bags = batch(gen, weighted=weighted)
        out = g(ids, bags)
        assert out.shape == (12, 48)
        parts = g.split(out)
        for f in FEATURES:
            emb = ref[f.table]
            if f.pooling is None:
                col = [x.name for x in g.onehot_features].index(f.name)
                want = emb(ids[:, col:col + 1])
            else:
                v, o, w = bags.feature(f.name)             # mean: weighted sum / length
                want = nn.functional.embedding_bag(v, emb.weight, o[:-1], mode="sum",
                                                   per_sample_weights=w)
                if f.pooling == "mean":
                    want = want / torch.diff(o).clamp_min(1).unsqueeze(1)
            torch.testing.assert_close(parts[f.name], want, rtol=1e-6, atol=1e-6)
        assert torch.equal(parts["history"][0], torch.zeros(16))


def test_one_width_is_the_plain_method():
    g = GroupedEmbeddings({"name": "uniform"}, TABLES, 8, SGD, seed=3)
    from fiited import build_method
    m = build_method({"name": "uniform"}, TABLES, 8, SGD, seed=3)
    assert len(g.groups) == 1 and torch.equal(g.groups[0].pool, m.pool)
    ids = torch.tensor([[1, 2, 3], [0, 49, 8]])
    assert torch.equal(g(ids), m(ids).reshape(2, 24))


def _fiited(k=2):
    return GroupedEmbeddings({"name": "fiited", "budget": 1.0, "budget_scope": "weights",
                              "index": "direct", "num_chunks": k,
                              "schedule": {"warmup": [3], "interval": 4}},
                             TABLES, WIDTHS, SGD, seed=4, features=FEATURES)


def test_fiited_full_capacity_trains_like_uniform_mixed_widths():
    uni = GroupedEmbeddings({"name": "uniform"}, TABLES, WIDTHS, SGD, seed=4, features=FEATURES)
    fii = _fiited(2)
    assert len(fii.groups) == 2
    gen = torch.Generator().manual_seed(3)
    for n in range(1, 11):
        ids, bags = batch(gen, weighted=n % 2 == 0)
        w = torch.randn(12, 48, generator=gen)
        outs = []
        for m in (uni, fii):
            out = m(ids, bags)
            (out * w).sum().backward()
            m.on_step(n)
            outs.append(out.detach())
        torch.testing.assert_close(outs[1], outs[0], rtol=1e-6, atol=1e-7)
    for u, f in zip(uni.groups, fii.groups):
        torch.testing.assert_close(f.store.pool.view(-1, f.dim), u.pool, rtol=1e-6, atol=1e-7)
    assert not torch.equal(uni.groups[1].pool, GroupedEmbeddings(
        {"name": "uniform"}, TABLES, WIDTHS, SGD, seed=4, features=FEATURES).groups[1].pool)
    assert all(m.events >= 2 for m in fii.groups)


def test_groups_draw_different_seeds():
    a = GroupedEmbeddings({"name": "uniform"}, TABLES, WIDTHS, SGD, seed=4)
    b = GroupedEmbeddings({"name": "uniform"}, TABLES, WIDTHS, SGD, seed=4)
    assert a.groups[0].seed != a.groups[1].seed != 4
    assert torch.equal(a.groups[0].pool, b.groups[0].pool)     # reproducible from the seed


@pytest.mark.parametrize("name", ["uniform", "fiited"])
def test_memory_is_the_sum_of_the_groups(name):
    g = GroupedEmbeddings({"name": name, "budget": 1.0 if name == "uniform" else 0.5}, TABLES,
                          WIDTHS, SparseOptimConfig(name="rowwise_adagrad"), features=FEATURES)
    reports = [m.memory() for m in g.groups]
    total = g.memory()
    for k in ("weights", "optimizer", "index", "utility", "other", "uniform_weights",
              "uniform_total"):
        assert getattr(total, k) == sum(getattr(r, k) for r in reports), k
    assert total.total == sum(r.total for r in reports)
    assert min(r.weights for r in reports) > 0 and total.optimizer > 0
    # uniform at each table's own width is the reference
    assert total.uniform_weights == 4 * (30 * 8 + 50 * 16 + 9 * 8)
    dims = g.dims()
    assert set(dims) == {"user", "item", "genre"} and dims["item"].numel() == 17


def test_metrics_are_per_group_and_seconds_add():
    g = _fiited(2)
    gen = torch.Generator().manual_seed(0)
    for n in range(1, 4):
        ids, bags = batch(gen)
        g(ids, bags).sum().backward()
        metrics = g.on_step(n)
    assert "prune/mean_width@d8" in metrics and "prune/mean_width@d16" in metrics
    assert "prune/mean_width" not in metrics
    assert metrics["prune/event_seconds"] == pytest.approx(
        metrics["prune/event_seconds@d8"] + metrics["prune/event_seconds@d16"])


def test_refusals_name_the_table():
    with pytest.raises(ValueError, match=r"tables \['item'\] \(width 6\).*num_chunks=4"):
        GroupedEmbeddings({"name": "fiited", "num_chunks": 4}, TABLES,
                          {"user": 8, "item": 6, "genre": 8}, SGD)
    with pytest.raises(ValueError, match="no width given for table 'genre'"):
        GroupedEmbeddings({"name": "uniform"}, TABLES, {"user": 8, "item": 8}, SGD)
    with pytest.raises(ValueError, match="table 'user': width must be an int >= 1"):
        GroupedEmbeddings({"name": "uniform"}, TABLES, {"user": 0, "item": 8, "genre": 8}, SGD)
    g = GroupedEmbeddings({"name": "uniform"}, TABLES, WIDTHS, SGD, features=FEATURES)
    ids, bags = batch(torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match=r"ids must be \[batch, 2\]"):
        g(ids[:, :1], bags)
    with pytest.raises(ValueError, match="do not match the bag features"):
        g(ids, select_bags(bags, ["genres", "history"]))


def test_one_hot_only_mixed_widths_equal_embeddings():
    g = GroupedEmbeddings({"name": "uniform"}, TABLES, WIDTHS, SGD, seed=1)
    ref = {t.name: nn.Embedding(t.num_rows, WIDTHS[t.name]) for t in TABLES}
    for m in g.groups:
        with torch.no_grad():
            m.pool.copy_(torch.cat([ref[t.name].weight for t in m.tables]))
    gen = torch.Generator().manual_seed(2)
    ids = torch.stack([torch.randint(0, t.num_rows, (7,), generator=gen) for t in TABLES], 1)
    out = g(ids)
    want = torch.cat([ref[t.name](ids[:, i]) for i, t in enumerate(TABLES)], 1)  # 8, 16, 8
    assert out.shape == (7, 32)
    torch.testing.assert_close(out, want, rtol=0, atol=0)
