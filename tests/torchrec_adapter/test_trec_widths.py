"""Tables with different ``embedding_dim``s through the adapter: uniform at full budget equals
TorchRec's EmbeddingBagCollection (same weights copied in, same KeyedTensor, the same weights
after one SGD step); any method runs with one instance per width; widths FIITED cannot chunk
are refused with the table named."""
import pytest

pytest.importorskip("torchrec.sparse.jagged_tensor")

import torch  # noqa: E402
from torchrec import EmbeddingBagCollection, PoolingType  # noqa: E402

from baselines.torchrec_adapter import TorchRecEmbeddings  # noqa: E402
from fiited.optim import SparseOptimConfig  # noqa: E402

from trec_helpers import cards_of, configs, random_kjt  # noqa: E402

KEYS = ["genre", "history", "user", "item"]
WIDTHS = {"user_t": 4, "item_t": 16, "genre_t": 8}     # item_t serves item and history


def _tables(pooling):
    tables = configs(dim=8, pooling=pooling, shared=True)
    for t in tables:
        t.embedding_dim = WIDTHS[t.name]
    return tables


def _pair(pooling, weighted, optim=None):
    tables = _tables(pooling)
    torch.manual_seed(0)
    ebc = EmbeddingBagCollection(tables, is_weighted=weighted)
    ours = TorchRecEmbeddings(tables, {"name": "uniform", "budget": 1.0}, optim=optim,
                              is_weighted=weighted)
    with torch.no_grad():
        for m in ours.embeddings.groups:
            m.pool.copy_(torch.cat([ebc.embedding_bags[t.name].weight for t in m.tables]))
    return tables, ebc, ours


def _kjt(tables, weighted, seed, batch=11):
    return random_kjt(KEYS, cards_of(tables), batch=batch,
                      gen=torch.Generator().manual_seed(seed), weighted=weighted)


@pytest.mark.parametrize("pooling,weighted", [(PoolingType.SUM, False), (PoolingType.SUM, True),
                                              (PoolingType.MEAN, False)],
                         ids=["sum", "sum-weighted", "mean"])
def test_mixed_widths_equal_ebc(pooling, weighted):
    tables, ebc, ours = _pair(pooling, weighted)
    assert ours.embeddings.group_widths == [4, 8, 16]
    for seed in range(3):
        kjt = _kjt(tables, weighted, seed)
        want, got = ebc(kjt), ours(kjt)
        assert got.keys() == want.keys() == ["user", "item", "history", "genre"]
        assert got.length_per_key() == want.length_per_key() == [4, 16, 16, 8]
        assert got.values().shape == (11, 44)
        torch.testing.assert_close(got.values(), want.values(), rtol=1e-6, atol=1e-6)


def test_mixed_widths_one_sgd_step_equals_ebc():
    lr = 0.5
    tables, ebc, ours = _pair(PoolingType.SUM, False, optim=SparseOptimConfig(name="sgd", lr=lr))
    kjt = _kjt(tables, False, seed=7)
    target = torch.randn(11, 44, generator=torch.Generator().manual_seed(1))
    (ebc(kjt).values() * target).sum().backward()
    with torch.no_grad():
        for p in ebc.parameters():
            p -= lr * p.grad
    (ours(kjt).values() * target).sum().backward()
    for m in ours.embeddings.groups:
        want = torch.cat([ebc.embedding_bags[t.name].weight.detach() for t in m.tables])
        torch.testing.assert_close(m.pool, want, rtol=1e-5, atol=1e-6)
    kjt2 = _kjt(tables, False, seed=8)
    with torch.no_grad():
        torch.testing.assert_close(ours(kjt2).values(), ebc(kjt2).values(), rtol=1e-5, atol=1e-6)


# These toy tables are too small for FIITED's total-scope budget per width group (13 rows at
# width 4); budget_scope=weights keeps the test about the grouping.
@pytest.mark.parametrize("name,extra", [("fiited", {"budget_scope": "weights", "num_chunks": 2}),
                                        ("freq_filter", {}), ("mixed_dim", {})],
                         ids=["fiited", "freq_filter", "mixed_dim"])
def test_methods_with_mixed_widths(name, extra):
    tables = _tables(PoolingType.SUM)
    emb = TorchRecEmbeddings(tables, {"name": name, "budget": 0.5, **extra},
                             optim=SparseOptimConfig(name="rowwise_adagrad", lr=0.1), seed=3)
    kjt = _kjt(tables, False, seed=5, batch=16)
    if emb.needs_train_ids:
        emb.prepare([kjt])
    kt = emb(kjt)
    assert kt.length_per_key() == [4, 16, 16, 8] and kt.values().shape == (16, 44)
    assert torch.isfinite(kt.values()).all() and kt.values().abs().sum() > 0
    kt.values().square().sum().backward()
    assert isinstance(emb.on_step(1), dict)
    mem = emb.memory()
    assert mem.total == sum(m.memory().total for m in emb.embeddings.groups) > 0
    assert mem.uniform_weights == 4 * (13 * 4 + 29 * 16 + 7 * 8)
    with pytest.raises(ValueError, match="one method per width"):
        emb.method


def test_fiited_refuses_a_width_it_cannot_chunk():
    tables = _tables(PoolingType.SUM)
    tables[0].embedding_dim = 6
    with pytest.raises(ValueError, match=r"tables \['user_t'\] \(width 6\).*num_chunks=4"):
        TorchRecEmbeddings(tables, {"name": "fiited"})
