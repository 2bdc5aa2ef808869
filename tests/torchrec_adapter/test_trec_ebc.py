"""Uniform at full budget through the adapter is TorchRec's EmbeddingBagCollection: same weights
copied in, same KeyedTensor (keys, lengths, values) for sum and mean, weighted bags, a table
serving two features; and after one SGD step on both, the same weights again."""
import pytest

pytest.importorskip("torchrec.sparse.jagged_tensor")

import torch  # noqa: E402
from torchrec import EmbeddingBagCollection, PoolingType  # noqa: E402

from baselines.torchrec_adapter import TorchRecEmbeddings  # noqa: E402
from fiited.optim import SparseOptimConfig  # noqa: E402

from trec_helpers import cards_of, configs, random_kjt  # noqa: E402

KEYS = ["genre", "history", "user", "item", "unused"]    # KJT order != EBC order, one extra key

CASES = [(PoolingType.SUM, False), (PoolingType.SUM, True), (PoolingType.MEAN, False)]


def _pair(pooling, weighted, optim=None, seed=0):
    tables = configs(dim=8, pooling=pooling, shared=True)
    torch.manual_seed(seed)
    ebc = EmbeddingBagCollection(tables, is_weighted=weighted)
    ours = TorchRecEmbeddings(tables, {"name": "uniform", "budget": 1.0}, optim=optim,
                              is_weighted=weighted)
    with torch.no_grad():
        ours.method.pool.copy_(torch.cat([ebc.embedding_bags[t.name].weight for t in tables]))
    return tables, ebc, ours


def _kjt(tables, weighted, seed):
    cards = {**cards_of(tables), "unused": 3}
    return random_kjt(KEYS, cards, batch=11, gen=torch.Generator().manual_seed(seed),
                      weighted=weighted)


@pytest.mark.parametrize("pooling,weighted", CASES, ids=["sum", "sum-weighted", "mean"])
def test_forward_equals_ebc(pooling, weighted):
    tables, ebc, ours = _pair(pooling, weighted)
    for seed in range(3):
        kjt = _kjt(tables, weighted, seed)
        want, got = ebc(kjt), ours(kjt)
        assert got.keys() == want.keys() == ["user", "item", "history", "genre"]
        assert got.length_per_key() == want.length_per_key()
        assert got.values().shape == (11, 4 * 8)
        torch.testing.assert_close(got.values(), want.values(), rtol=1e-6, atol=1e-6)
        # a real difference shows: the shared table's two features differ
        d = got.to_dict()
        assert not torch.equal(d["item"], d["history"])


@pytest.mark.parametrize("pooling,weighted", CASES, ids=["sum", "sum-weighted", "mean"])
def test_one_sgd_step_equals_ebc(pooling, weighted):
    lr = 0.5
    tables, ebc, ours = _pair(pooling, weighted, optim=SparseOptimConfig(name="sgd", lr=lr))
    kjt = _kjt(tables, weighted, seed=7)
    target = torch.randn(11, 32, generator=torch.Generator().manual_seed(1))
    before = ours.method.pool.clone()
    (ebc(kjt).values() * target).sum().backward()
    with torch.no_grad():
        for p in ebc.parameters():
            p -= lr * p.grad
    (ours(kjt).values() * target).sum().backward()          # the fused update, in backward
    want = torch.cat([ebc.embedding_bags[t.name].weight.detach() for t in tables])
    assert not torch.equal(want, before)                      # the step moved some rows
    torch.testing.assert_close(ours.method.pool, want, rtol=1e-5, atol=1e-6)
    kjt2 = _kjt(tables, weighted, seed=8)
    with torch.no_grad():
        torch.testing.assert_close(ours(kjt2).values(), ebc(kjt2).values(), rtol=1e-5, atol=1e-6)


def test_refuses_unsupported_pooling():
    tables = configs(dim=8)
    tables[0].pooling = PoolingType.NONE
    with pytest.raises(ValueError, match="'user_t': pooling=NONE"):
        TorchRecEmbeddings(tables)
