"""Jagged: offsets/lengths round trips, per-feature columns, one-hot special case, validation."""
import pytest
import torch

from fiited.jagged import Jagged


def _example():
    # 3 rows x 2 features (genres, history); row 1 has an empty genres bag
    lengths = torch.tensor([[2, 1], [0, 3], [1, 2]])
    values = torch.tensor([4, 1, 7, 2, 3, 9, 0, 5, 6])
    return Jagged.from_lengths(values, lengths, ["genres", "history"],
                               weights=torch.arange(9, dtype=torch.float32))


def test_from_lengths_offsets_and_lengths_round_trip():
    j = _example()
    assert j.offsets.tolist() == [0, 2, 3, 3, 6, 7, 9]
    assert j.batch_size == 3 and j.num_features == 2
    assert j.lengths().tolist() == [[2, 1], [0, 3], [1, 2]]


def test_feature_column_matches_hand_built():
    j = _example()
    v, off, w = j.feature("history")
    assert v.tolist() == [7, 2, 3, 9, 5, 6]
    assert off.tolist() == [0, 1, 4, 6]
    assert w.tolist() == [2.0, 3.0, 4.0, 5.0, 7.0, 8.0]
    v, off, _ = j.feature("genres")
    assert v.tolist() == [4, 1, 0] and off.tolist() == [0, 2, 2, 3]


def test_pooling_order_matches_embedding_bag():
    """Bag b*Fm+f pooled with nn.EmbeddingBag equals per-feature pooling row by row."""
    j = _example()
    table = torch.nn.EmbeddingBag(10, 4, mode="sum")
    pooled = table(j.values, j.offsets[:-1]).view(3, 2, 4)
    for f, name in enumerate(j.feature_names):
        v, off, _ = j.feature(name)
        assert torch.allclose(pooled[:, f], table(v, off[:-1]))


def test_from_dense_is_bags_of_one():
    ids = torch.tensor([[3, 1], [0, 2]])
    j = Jagged.from_dense(ids, ["a", "b"])
    assert j.lengths().tolist() == [[1, 1], [1, 1]]
    assert j.values.tolist() == [3, 1, 0, 2]
    table = torch.nn.EmbeddingBag(4, 3, mode="sum")
    emb = torch.nn.Embedding.from_pretrained(table.weight)
    assert torch.equal(table(j.values, j.offsets[:-1]).view(2, 2, 3), emb(ids))
    with pytest.raises(ValueError, match=r"ids must be \[batch, 2\]"):
        Jagged.from_dense(torch.tensor([1, 2]), ["a", "b"])


def test_to_device_keeps_everything():
    j = _example().to("cpu")
    assert j.feature_names == ("genres", "history") and j.weights is not None


def test_validation_names_feature_and_bag():
    j = _example()
    j.validate([10, 10])
    with pytest.raises(ValueError, match=r"feature 'history', bag of row 1: id 9 outside 0..8"):
        j.validate([10, 9])
    bad = Jagged(j.values, torch.tensor([0, 2, 3, 1, 6, 7, 9]), j.feature_names)
    with pytest.raises(ValueError, match=r"feature 'genres', bag of row 1: offsets decrease"):
        bad.validate()
    with pytest.raises(ValueError, match=r"\[B\*2\+1\]"):
        Jagged(j.values, j.offsets[:-1], j.feature_names).validate()
    with pytest.raises(ValueError, match="0 to len"):
        Jagged(j.values[:-1], j.offsets, j.feature_names).validate()
    with pytest.raises(ValueError, match="weights shape"):
        Jagged(j.values, j.offsets, j.feature_names, torch.ones(2)).validate()


def test_rows_slice_is_a_batch_of_those_rows():
    j = _example()
    part = j.rows(1, 3)
    part.validate()
    assert part.lengths().tolist() == [[0, 3], [1, 2]]
    assert part.values.tolist() == [2, 3, 9, 0, 5, 6]
    assert part.weights.tolist() == [3.0, 4.0, 5.0, 6.0, 7.0, 8.0]
    assert j.rows(0, 0).values.numel() == 0 and j.rows(0, 0).offsets.tolist() == [0]
