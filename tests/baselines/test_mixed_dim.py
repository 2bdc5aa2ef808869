"""Mixed-dimension embeddings: widths by popularity within budget, exact sparse + dense updates."""
import pytest
import torch
import torch.nn.functional as F

from baselines.mixed_dim import floats_of, plan_widths
from fiited.interface import TableSpec
from fiited.optim import SparseOptimConfig
from fiited.registry import build_method
from ledger_check import real_bytes

TABLES = [TableSpec("a", 4), TableSpec("b", 60), TableSpec("c", 300), TableSpec("d", 2000)]
NS = [t.num_rows for t in TABLES]
DIM = 8


def make(budget=0.25, opt=None, seed=0, **kw):
    return build_method({"name": "mixed_dim", "budget": budget, **kw}, TABLES, DIM,
                        opt or SparseOptimConfig(name="sgd", lr=0.1), seed=seed)


@pytest.mark.parametrize("budget", [1.0, 0.5, 1 / 4, 1 / 16, 1 / 64, 0.002])
@pytest.mark.parametrize("alpha", [0.0, 0.3, 1.0])
def test_ledger_is_real_storage_and_within_budget(budget, alpha):
    emb = make(budget, opt=SparseOptimConfig(), alpha=alpha)
    mem = emb.memory()
    assert mem.total == real_bytes(emb)
    assert mem.weights <= budget * mem.uniform_weights
    assert mem.weights == floats_of(emb.widths, NS, DIM) * 4
    assert sum(mem.per_table.values()) == mem.weights + mem.optimizer
    w = emb.widths
    assert all(x >= y for x, y in zip(w, w[1:])), f"popular (small) tables get >= width: {w}"
    if alpha == 0.0:
        assert len({x for x, n in zip(w, NS) if x > 0}) <= 1 or 0 in w
    if budget == 1.0:
        assert w == [DIM] * len(TABLES) and len(list(emb.parameters())) == 0


def test_widths_follow_the_power_rule_where_uncapped():
    w = plan_widths([10**4, 10**6], 64, 0.1, 0.5, 1)
    # d ~ n^-alpha: a 100x larger table gets ~10x fewer dims (floor rounding aside).
    assert 8 <= w[0] / w[1] <= 12


def test_budget_one_is_uniform():
    ids = torch.tensor([[0, 5, 299, 1999], [3, 59, 0, 7]])
    uniform = build_method({"name": "uniform"}, TABLES, DIM, SparseOptimConfig(), seed=4)
    assert torch.equal(make(1.0, seed=4)(ids), uniform(ids))


def test_dropped_tables_read_zero_and_hold_nothing():
    emb = make(0.02)
    assert emb.widths[-1] == 0 and emb.widths[0] > 0
    out = emb(torch.tensor([[1, 2, 3, 1500]]))
    assert torch.all(out[0, -1] == 0) and out[0, 0].abs().sum() > 0
    assert emb.memory().per_table["d"] == 0
    assert int(emb.dims()["d"][0]) == 2000


def test_min_dim_that_cannot_fit_is_refused():
    with pytest.raises(ValueError, match="method.min_dim=1"):
        make(1 / 16, min_dim=1)  # 1 dim of 8 per row is already 1/8


@pytest.mark.parametrize("opt_name", ["sgd", "rowwise_adagrad"])
def test_fused_and_dense_updates_equal_autograd_through_embedding_and_linear(opt_name):
    opt = SparseOptimConfig(name=opt_name, lr=0.1)
    emb = make(0.3, opt=opt, seed=2)
    widths = emb.widths
    assert len(set(widths)) >= 3 and DIM in widths and any(0 < d < DIM for d in widths)
    dense = torch.optim.SGD(emb.parameters(), lr=0.1)
    start_proj = {k: v.detach().clone() for k, v in emb.proj.items()}
    # Reference: one nn.Embedding weight and one projection per table, SGD written out.
    tables, projs, accs = [], [], []
    for f, d in enumerate(widths):
        pool = getattr(emb, f"pool_{d}")
        pos = getattr(emb, f"cols_{d}").tolist().index(f)
        start = int(getattr(emb, f"offsets_{d}")[pos])
        tables.append(pool[start:start + NS[f]].clone().requires_grad_(True))
        accs.append(torch.zeros(NS[f]))
        projs.append(emb.proj[str(d)][pos].detach().clone().requires_grad_(True)
                     if d < DIM else None)
    gen = torch.Generator().manual_seed(0)
    target = torch.randn(len(TABLES) * DIM, generator=gen)
    for _ in range(5):
        ids = torch.stack([torch.randint(0, n, (32,), generator=gen) for n in NS], 1)
        dense.zero_grad()
        (emb(ids).flatten(1) @ target).sigmoid().sum().backward()
        dense.step()
        outs = []
        for f, (w, p) in enumerate(zip(tables, projs)):
            e = F.embedding(ids[:, f], w)
            outs.append(e @ p if p is not None else e)
        (torch.stack(outs, 1).flatten(1) @ target).sigmoid().sum().backward()
        with torch.no_grad():
            for w, p, acc in zip(tables, projs, accs):
                g = w.grad
                if opt_name == "sgd":
                    w -= 0.1 * g
                else:
                    acc += torch.where(g.abs().sum(1) > 0, g.pow(2).mean(1), 0.0)
                    w -= 0.1 * g / (acc.sqrt() + opt.eps).unsqueeze(1)
                w.grad = None
                if p is not None:
                    p -= 0.1 * p.grad
                    p.grad = None
    for f, d in enumerate(widths):
        pos = getattr(emb, f"cols_{d}").tolist().index(f)
        start = int(getattr(emb, f"offsets_{d}")[pos])
        assert (getattr(emb, f"pool_{d}")[start:start + NS[f]] - tables[f]).abs().max() < 1e-5
        if d < DIM:
            assert (emb.proj[str(d)][pos] - projs[f]).abs().max() < 1e-5
    assert all((emb.proj[k] - v).abs().max() > 1e-4 for k, v in start_proj.items()), \
        "the dense optimizer must have trained the projections"
