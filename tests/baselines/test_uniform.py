"""Uniform through our kernels trains exactly like nn.Embedding + a hand-written optimizer."""
import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fiited.interface import TableSpec
from fiited.optim import SparseOptimConfig
from fiited.registry import build_method
from ledger_check import real_bytes

TABLES = [TableSpec("small", 3), TableSpec("mid", 7), TableSpec("big", 11)]
DIM = 8
BATCH = 16
LR = 0.1


def batches(steps: int, seed: int = 1):
    """ids drawn from a few ids per table, so every batch has duplicates."""
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        ids = torch.stack([torch.randint(0, min(t.num_rows, 4), (BATCH,), generator=g)
                           for t in TABLES], dim=1)
        yield ids, torch.randint(0, 2, (BATCH,), generator=g).float()


def reference_step(weights, accs, head, ids, labels, opt: SparseOptimConfig, width: int):
    """nn.Embedding per table, padded to DIM; the sparse optimizer written out on dense grads."""
    outs = [F.pad(F.embedding(ids[:, f], w), (0, DIM - width)) for f, w in enumerate(weights)]
    loss = F.binary_cross_entropy_with_logits(head(torch.stack(outs, 1).flatten(1)).squeeze(1),
                                              labels)
    for w in weights:
        w.grad = None
    loss.backward()
    with torch.no_grad():
        for w, acc in zip(weights, accs):
            g = w.grad  # already coalesced per row by autograd
            if opt.name == "sgd":
                w -= opt.lr * g
            else:
                touched = g.abs().sum(1) > 0
                acc += torch.where(touched, g.pow(2).mean(1), torch.zeros_like(acc))
                w -= opt.lr * g / (acc.sqrt() + opt.eps).unsqueeze(1)
    return loss


@pytest.mark.parametrize("opt_name", ["sgd", "rowwise_adagrad"])
@pytest.mark.parametrize("budget", [1.0, 0.5])
def test_uniform_trains_like_nn_embedding(opt_name, budget):
    opt = SparseOptimConfig(name=opt_name, lr=LR)
    emb = build_method({"name": "uniform", "budget": budget}, TABLES, DIM, opt, seed=3)
    width = round(budget * DIM)
    torch.manual_seed(0)
    head = nn.Linear(len(TABLES) * DIM, 1)
    ref_head = copy.deepcopy(head)
    starts = emb.table_offsets.tolist()
    weights = [emb.pool[s:s + t.num_rows].clone().requires_grad_(True)
               for s, t in zip(starts, TABLES)]
    accs = [torch.zeros(t.num_rows) for t in TABLES]
    start = emb.pool.clone()
    dense = torch.optim.SGD(head.parameters(), lr=LR)
    ref_dense = torch.optim.SGD(ref_head.parameters(), lr=LR)
    for ids, labels in batches(20):
        out = emb(ids)
        assert out.shape == (BATCH, len(TABLES), DIM)
        assert torch.all(out[..., width:] == 0), "padded dims must read zero"
        loss = F.binary_cross_entropy_with_logits(head(out.flatten(1)).squeeze(1), labels)
        dense.zero_grad()
        loss.backward()
        dense.step()
        emb.on_step(0)
        ref_loss = reference_step(weights, accs, ref_head, ids, labels, opt, width)
        ref_dense.step()
        ref_dense.zero_grad()
        assert abs(loss.item() - ref_loss.item()) < 1e-5
    ours = emb.pool
    theirs = torch.cat([w.detach() for w in weights])
    assert (ours - theirs).abs().max() < 1e-5
    assert (head.weight - ref_head.weight).abs().max() < 1e-5
    assert (ours - start).abs().max() > 1e-3, "training must have moved the rows"
    if opt_name == "rowwise_adagrad":
        assert (emb.opt_state - torch.cat(accs)).abs().max() < 1e-5


@pytest.mark.parametrize("budget", [1.0, 0.5, 0.3])
def test_uniform_ledger_matches_storage(budget):
    emb = build_method({"name": "uniform", "budget": budget}, TABLES, DIM,
                       SparseOptimConfig(), seed=0)
    rows = sum(t.num_rows for t in TABLES)
    mem = emb.memory()
    assert mem.weights == rows * round(budget * DIM) * 4
    assert mem.total == real_bytes(emb)
    assert sum(emb.dims()["big"]) == 11 and emb.dims()["big"][round(budget * DIM)] == 11


@pytest.mark.parametrize("bad, words", [
    (torch.tensor([[0, -1, 0]]), ["'mid'", "-1"]),
    (torch.tensor([[0, 0, 11]]), ["'big'", "11", "0..10"]),
    (torch.tensor([[3, 0, 0]], dtype=torch.int32), ["'small'", "0..2"]),
    (torch.tensor([[0.0, 1.0, 2.0]]), ["int32 or int64"]),
    (torch.tensor([[0, 1]]), ["one column per table", "(1, 2)"]),
    (torch.tensor([0, 1, 2]), ["one column per table"]),
])
def test_bad_ids_are_refused_with_their_table(bad, words):
    emb = build_method({"name": "uniform"}, TABLES, DIM, SparseOptimConfig(), seed=0)
    with pytest.raises(ValueError) as err:
        emb(bad)
    for w in words:
        assert w in str(err.value)
