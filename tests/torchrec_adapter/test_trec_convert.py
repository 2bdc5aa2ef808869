"""KJT (feature-major) -> Jagged (row-major): the bags are the KJT's, pooled they equal
torch's nn.EmbeddingBag on each KJT feature (sum/mean, weights, empty bags, key order)."""
import pytest

pytest.importorskip("torchrec.sparse.jagged_tensor")

import torch  # noqa: E402
from torch import nn  # noqa: E402
from torchrec import KeyedJaggedTensor  # noqa: E402

from baselines.torchrec_adapter import embedding_names, kjt_to_jagged  # noqa: E402
from fiited.kernels import reference  # noqa: E402

from trec_helpers import configs, random_kjt  # noqa: E402


def test_small_kjt_by_hand():
    # keys a, b; batch 2; a: [1, 2], [] ; b: [3], [4, 5, 6]
    kjt = KeyedJaggedTensor(keys=["a", "b"], values=torch.tensor([1, 2, 3, 4, 5, 6]),
                            lengths=torch.tensor([2, 0, 1, 3]),
                            weights=torch.tensor([.1, .2, .3, .4, .5, .6]))
    j = kjt_to_jagged(kjt, ["a", "b"])
    assert j.offsets.tolist() == [0, 2, 3, 3, 6]          # (row0,a) (row0,b) (row1,a) (row1,b)
    assert j.values.tolist() == [1, 2, 3, 4, 5, 6]
    j = kjt_to_jagged(kjt, ["b", "a"], names=["B", "A"])
    assert j.feature_names == ("B", "A")
    assert j.values.tolist() == [3, 1, 2, 4, 5, 6]
    assert j.lengths().tolist() == [[1, 2], [3, 0]]
    assert j.weights.tolist() == pytest.approx([.3, .1, .2, .4, .5, .6])
    assert kjt_to_jagged(kjt, ["a"], weighted=False).weights is None


# nn.EmbeddingBag takes per_sample_weights only with mode="sum"
@pytest.mark.parametrize("mode,weighted", [("sum", False), ("sum", True), ("mean", False)])
def test_pooled_jagged_equals_embedding_bag(mode, weighted):
    gen = torch.Generator().manual_seed(3)
    keys, cards = ["f0", "f1", "f2", "f3"], {"f0": 5, "f1": 11, "f2": 3, "f3": 17}
    kjt = random_kjt(keys, cards, batch=9, gen=gen, weighted=weighted)
    ask = ["f2", "f0", "f3", "f2"]                       # reordered, one dropped, one repeated
    j = kjt_to_jagged(kjt, ask, names=["x", "y", "z", "w"])
    j.validate([cards[f] for f in ask])
    assert j.batch_size == 9 and j.lengths().sum() > 0 and (j.lengths() == 0).any()
    tables = {k: torch.randn(cards[k], 6, generator=gen) for k in keys}
    cat = torch.cat([tables[f] for f in ask])           # one pool, per-feature row offsets
    base = torch.tensor([0] + [cards[f] for f in ask[:-1]]).cumsum(0)
    feat = reference.bag_of(j.offsets, j.values.numel()) % len(ask)
    rows = (j.values + base[feat]).unsqueeze(1)
    got = reference.bag_gather(cat, rows, j.offsets, j.weights, mode).view(9, len(ask), 6)
    per = kjt.to_dict()
    for i, f in enumerate(ask):
        bag = nn.EmbeddingBag.from_pretrained(tables[f], mode=mode, include_last_offset=True)
        want = bag(per[f].values(), per[f].offsets(),
                   per_sample_weights=per[f].weights() if weighted else None)
        torch.testing.assert_close(got[:, i], want)


def test_offsets_only_kjt_and_empty_batch_rows():
    kjt = KeyedJaggedTensor(keys=["a", "b"], values=torch.tensor([7, 8]),
                            offsets=torch.tensor([0, 0, 0, 1, 2]))
    j = kjt_to_jagged(kjt, ["b", "a"])
    assert j.lengths().tolist() == [[1, 0], [1, 0]] and j.values.tolist() == [7, 8]


def test_missing_key_is_named():
    kjt = KeyedJaggedTensor(keys=["a"], values=torch.tensor([1]), lengths=torch.tensor([1]))
    with pytest.raises(ValueError, match="no feature 'genre'"):
        kjt_to_jagged(kjt, ["a", "genre"])


def test_embedding_names_follow_torchrec_rule():
    from torchrec import EmbeddingBagCollection

    tables = configs(shared=True) + [
        type(configs()[0])(name="more", num_embeddings=4, embedding_dim=8,
                           feature_names=["user"])]
    ebc = EmbeddingBagCollection(tables)
    kjt = random_kjt(["user", "item", "history", "genre"],
                     {"user": 4, "item": 29, "history": 29, "genre": 7},
                     batch=2, gen=torch.Generator().manual_seed(0))
    assert [k for k, _, _ in embedding_names(tables)] == ebc(kjt).keys()
