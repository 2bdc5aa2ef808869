import pytest
import torch

from benchmark.model import DLRM, ModelConfig
from fiited import SparseOptimConfig, TableSpec, build_method


def _model(num_dense=13, interaction="dot"):
    tables = [TableSpec(f"C{i}", 10 + i) for i in range(5)]
    emb = build_method({"name": "uniform"}, tables, 8, SparseOptimConfig())
    cfg = ModelConfig(dim=8, bottom_mlp=[16], top_mlp=[32], interaction=interaction)
    return DLRM(cfg, num_dense, emb), tables


@pytest.mark.parametrize("num_dense", [13, 0])
@pytest.mark.parametrize("interaction", ["dot", "cat"])
def test_dlrm_shapes_and_interaction_width(num_dense, interaction):
    model, tables = _model(num_dense, interaction)
    n_vec = len(tables) + (1 if num_dense else 0)
    first_top = model.top[0].in_features
    if interaction == "dot":
        assert first_top == (8 if num_dense else 0) + n_vec * (n_vec - 1) // 2
    else:
        assert first_top == n_vec * 8
    ids = torch.stack([torch.randint(0, t.num_rows, (4,)) for t in tables], 1)
    out = model(torch.randn(4, num_dense), ids)
    assert out.shape == (4,)


def test_dense_parameters_exclude_embedding_pools_and_training_updates_both():
    model, tables = _model()
    names = {id(p) for p in model.dense_parameters()}
    assert id(model.embeddings.pool) not in names
    assert not model.embeddings.pool.requires_grad
    pool_before = model.embeddings.pool.clone()
    top_before = model.top[0].weight.detach().clone()
    opt = torch.optim.SGD(model.dense_parameters(), lr=0.1)
    ids = torch.zeros(4, len(tables), dtype=torch.long)
    loss = model(torch.randn(4, 13), ids).sum()
    loss.backward()
    opt.step()
    assert not torch.equal(model.top[0].weight, top_before)
    changed = (model.embeddings.pool != pool_before).any(1)
    # exactly the rows looked up (id 0 of each table) moved, nothing else
    assert changed.nonzero().flatten().tolist() == model.embeddings.table_offsets.tolist()


def test_dim_mismatch_is_a_clear_error():
    tables = [TableSpec("a", 3)]
    emb = build_method({"name": "uniform"}, tables, 8, SparseOptimConfig())
    with pytest.raises(ValueError, match="model.dim"):
        DLRM(ModelConfig(dim=16), 13, emb)
