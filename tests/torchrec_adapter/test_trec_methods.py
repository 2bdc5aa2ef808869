"""Every registered method runs through the adapter (forward + backward, the fused update moves
its state) and returns EBC's keys and shape; the adapter drops into torchrec's own DLRM, where
uniform at full budget gives the EBC model's output."""
import pytest

pytest.importorskip("torchrec.sparse.jagged_tensor")

import torch  # noqa: E402
from torchrec import EmbeddingBagCollection, PoolingType  # noqa: E402
from torchrec.models.dlrm import DLRM  # noqa: E402

from baselines.torchrec_adapter import TorchRecEmbeddings  # noqa: E402
from fiited import method_names  # noqa: E402
from fiited.optim import SparseOptimConfig  # noqa: E402

from trec_helpers import cards_of, configs, random_kjt  # noqa: E402

KEYS = ["user", "item", "history", "genre"]


def _float_state(m):
    return {k: v.clone() for k, v in m.state_dict().items() if isinstance(v, torch.Tensor) and v.is_floating_point()}


@pytest.mark.parametrize("name", method_names())
@pytest.mark.parametrize("pooling", [PoolingType.SUM, PoolingType.MEAN], ids=["sum", "mean"])
def test_every_method_forward_backward(name, pooling):
    tables = configs(dim=8, pooling=pooling)
    emb = TorchRecEmbeddings(tables, {"name": name, "budget": 0.5},
                             optim=SparseOptimConfig(name="rowwise_adagrad", lr=0.1), seed=3)
    kjt = random_kjt(KEYS, cards_of(tables), batch=16, gen=torch.Generator().manual_seed(5))
    if emb.needs_train_ids:                              # freq_filter: the counting pass
        with pytest.raises(ValueError, match="call TorchRecEmbeddings.prepare"):
            emb(kjt)
        emb.prepare([kjt])
    before = _float_state(emb)
    kt = emb(kjt)
    assert kt.keys() == KEYS and kt.length_per_key() == [8] * 4
    assert kt.values().shape == (16, 32) and torch.isfinite(kt.values()).all()
    assert kt.values().abs().sum() > 0
    kt.values().square().sum().backward()
    after = emb.state_dict()
    assert any(not torch.equal(v, after[k]) for k, v in before.items()), \
        f"{name}: backward updated nothing"
    assert isinstance(emb.on_step(1), dict)
    assert emb.memory().total > 0


def _dlrm(ebc, seed):
    torch.manual_seed(seed)
    return DLRM(embedding_bag_collection=ebc, dense_in_features=4,
                dense_arch_layer_sizes=[16, 8], over_arch_layer_sizes=[16, 1])


def test_drop_in_for_torchrec_dlrm():
    tables = configs(dim=8, pooling=PoolingType.MEAN)
    ebc = EmbeddingBagCollection(tables)
    ours = TorchRecEmbeddings(tables, {"name": "uniform"})
    with torch.no_grad():
        ours.method.pool.copy_(torch.cat([ebc.embedding_bags[t.name].weight for t in tables]))
    ref, model = _dlrm(ebc, seed=0), _dlrm(ours, seed=0)
    gen = torch.Generator().manual_seed(2)
    dense = torch.randn(10, 4, generator=gen)
    kjt = random_kjt(KEYS, cards_of(tables), batch=10, gen=gen)
    with torch.no_grad():
        torch.testing.assert_close(model(dense, kjt), ref(dense, kjt), rtol=1e-5, atol=1e-6)


def test_fiited_trains_inside_dlrm():
    tables = configs(dim=8)
    model = _dlrm(TorchRecEmbeddings(tables, {"name": "fiited", "budget": 0.5}), seed=0)
    opt = torch.optim.Adagrad(model.parameters(), lr=0.05)   # dense part only: pools are buffers
    gen = torch.Generator().manual_seed(9)
    dense = torch.randn(64, 4, generator=gen)
    kjt = random_kjt(KEYS, cards_of(tables), batch=64, gen=gen)
    label = (dense[:, 0] > 0).float()
    losses = []
    for step in range(30):
        loss = torch.nn.functional.binary_cross_entropy_with_logits(
            model(dense, kjt).squeeze(1), label)
        opt.zero_grad()
        loss.backward()
        opt.step()
        model.sparse_arch.embedding_bag_collection.on_step(step)
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0], losses


def test_prepare_counts_every_feature_of_every_batch():
    tables = configs(dim=8)                               # table item_t serves item and history
    emb = TorchRecEmbeddings(tables, {"name": "freq_filter", "budget": 0.5})
    gen = torch.Generator().manual_seed(4)
    batches = [random_kjt(KEYS, cards_of(tables), batch=8, gen=gen) for _ in range(3)]
    emb.prepare(iter(batches))
    start = {t.name: o for t, o in zip(tables, [0, 13, 13 + 29])}
    want = torch.zeros(13 + 29 + 7, dtype=torch.int64)
    for kjt in batches:
        for t in tables:
            for f in t.feature_names:
                want += torch.bincount(kjt[f].values() + start[t.name], minlength=49)
    assert torch.equal(emb.method.counts, want) and want[13:42].sum() > want[:13].sum()
