"""DCN-v2 head: the cross layer's formula by hand, both structures, and a real training run."""
from __future__ import annotations

import pytest
import torch

from benchmark.dcn import DCN, CrossLayer
from benchmark.errors import UserError
from benchmark.model import ModelConfig
from benchmark.train import Trainer
from fiited import SparseOptimConfig, TableSpec, build_method


def test_cross_layer_is_x0_times_wx_plus_b_plus_x():
    layer = CrossLayer(2)
    with torch.no_grad():
        layer.linear.weight.copy_(torch.tensor([[1.0, 2.0], [3.0, 4.0]]))
        layer.linear.bias.copy_(torch.tensor([0.5, -1.0]))
    x0, x = torch.tensor([[1.0, 2.0]]), torch.tensor([[3.0, -1.0]])
    # W x = (1, 5); + b = (1.5, 4); x0 * that = (1.5, 8); + x = (4.5, 7)
    assert layer(x0, x).tolist() == [[4.5, 7.0]]


def _dcn(structure, num_dense=13, cross_layers=2, top_mlp=(32,)):
    tables = [TableSpec(f"C{i}", 10 + i) for i in range(5)]
    emb = build_method({"name": "uniform"}, tables, 8, SparseOptimConfig())
    cfg = ModelConfig(name="dcn", dim=8, bottom_mlp=[16], top_mlp=list(top_mlp),
                      cross_layers=cross_layers, structure=structure)
    return DCN(cfg, num_dense, emb), tables


@pytest.mark.parametrize("structure", ["stacked", "parallel"])
@pytest.mark.parametrize("num_dense", [13, 0])
def test_dcn_structures_read_the_cross_output_and_train_every_layer(structure, num_dense):
    model, tables = _dcn(structure, num_dense)
    width = (len(tables) + (1 if num_dense else 0)) * 8
    assert [layer.linear.weight.shape for layer in model.cross] == [(width, width)] * 2
    assert model.deep[0].in_features == width
    assert model.logit[0].in_features == 32 + (width if structure == "parallel" else 0)
    ids = torch.stack([torch.randint(0, t.num_rows, (4,)) for t in tables], 1)
    out = model(torch.randn(4, num_dense), ids)
    assert out.shape == (4,)
    out.sum().backward()
    for p in model.dense_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0
    assert model.embeddings.pool not in set(model.dense_parameters())


def test_without_cross_layers_the_stacked_dcn_is_the_deep_tower_on_x0():
    model, tables = _dcn("stacked", num_dense=0, cross_layers=0)
    ids = torch.zeros(3, len(tables), dtype=torch.long)
    x0 = model.embeddings(ids).flatten(1)
    torch.testing.assert_close(model(torch.empty(3, 0), ids),
                               model.logit(model.deep(x0)).squeeze(1))


def test_bad_structure_is_named():
    with pytest.raises(ValueError, match="model.structure must be 'stacked' or 'parallel'"):
        _dcn("serial")


def test_dcn_trains_below_base_rate_ne_through_the_trainer(compose_cfg, tmp_path):
    cfg = compose_cfg("model=dcn", "model.bottom_mlp=[32]", "model.top_mlp=[64]",
                      "method=uniform", "tracking=none", "train.epochs=1")
    trainer = Trainer(cfg, tmp_path / "run", tmp_path)
    assert isinstance(trainer.model, DCN) and len(trainer.model.cross) == 3
    summary = trainer.fit()
    assert summary["val/ne"] < 1.0 and summary["test/ne"] < 1.0
    assert summary["val/auc"] > 0.6


def test_unknown_model_name_is_a_user_error(compose_cfg, tmp_path):
    with pytest.raises(UserError, match="model.name must be one of"):
        Trainer(compose_cfg("method=uniform", "tracking=none", "model.name=wide"),
                tmp_path / "run", tmp_path)
