"""FIITED's row-wise Adagrad with one accumulator per logical row (``accumulator: row``):
at full capacity it trains like uniform at K>1 (the per-chunk state does not), a pruned row's
present chunks take one step, the state follows its entries through events, and the ledger and
the total-budget sizing count one float per entry instead of one per slot."""
from __future__ import annotations

import pytest
import torch

from fiited import FeatureSpec, Jagged, SparseOptimConfig, TableSpec, build_method, kernels
from fiited.errors import BudgetInfeasible

TABLES = [TableSpec("a", 50), TableSpec("b", 200), TableSpec("c", 7)]
DIM = 8
ROW = SparseOptimConfig(name="rowwise_adagrad", lr=0.1, accumulator="row")
CHUNK = SparseOptimConfig(name="rowwise_adagrad", lr=0.1, accumulator="chunk")


def fiited(optim, budget=1.0, tables=TABLES, dim=DIM, **cfg):
    cfg.setdefault("budget_scope", "weights")
    cfg.setdefault("index", "direct")
    features = cfg.pop("features", None)
    return build_method({"name": "fiited", "budget": budget, **cfg}, tables, dim, optim,
                        seed=3, features=features)


def batches(n, batch=64, seed=0):
    """Ids with many duplicates (table c has 7 rows) and the loss weights."""
    g = torch.Generator().manual_seed(seed)
    return [(torch.stack([torch.randint(0, t.num_rows, (batch,), generator=g) for t in TABLES],
                         1), torch.randn(batch, len(TABLES), DIM, generator=g))
            for _ in range(n)]


def train_pair(optim, k, steps=20, bags=False):
    """Uniform and FIITED at budget 1.0 side by side: the largest output and weight gaps."""
    names = [t.name for t in TABLES]
    feats = [FeatureSpec(n, n, "mean" if i % 2 else "sum") for i, n in enumerate(names)] \
        if bags else None
    uni = build_method({"name": "uniform"}, TABLES, DIM, optim, seed=3, features=feats)
    fii = fiited(optim, num_chunks=k, schedule={"warmup": [2], "interval": 3}, features=feats)
    gap = 0.0
    for step, (ids, w) in enumerate(batches(steps), start=1):
        outs = []
        for m in (uni, fii):
            out = m(ids[:, :0], Jagged.from_dense(ids, names)) if bags else m(ids)
            (out * w).sum().backward()
            m.on_step(step)
            outs.append(out.detach())
        gap = max(gap, float((outs[0] - outs[1]).abs().max()))
    weights = float((uni.pool - fii.store.pool.view(-1, DIM)).abs().max())
    return gap, weights, fii


@pytest.fixture(params=["auto", "reference"])
def backend(request):
    kernels.set_backend(None if request.param == "auto" else "reference")
    yield request.param
    kernels.set_backend(None)


@pytest.mark.parametrize("bags", [False, True], ids=["one-hot", "bags"])
@pytest.mark.parametrize("k", [2, 4])
def test_full_capacity_equals_uniform_with_one_accumulator_per_row(k, bags, backend):
    out_gap, weight_gap, fii = train_pair(ROW, k, bags=bags)
    assert fii.events > 0 and fii.store.opt_state.numel() == sum(t.num_rows for t in TABLES)
    assert out_gap < 1e-5 and weight_gap < 1e-5, (out_gap, weight_gap)
    # The per-chunk accumulators train differently: this test can tell the two apart.
    out_gap, weight_gap, _ = train_pair(CHUNK, k, bags=bags)
    assert out_gap > 1e-3 and weight_gap > 1e-3, (out_gap, weight_gap)


def test_a_pruned_rows_present_chunks_take_the_same_step():
    """At half the chunks, after events: one step on rows with some chunks pruned; every
    present chunk moves by lr / (sqrt(acc) + eps) times its summed gradient, acc = the row's
    accumulator, which grew by the mean of g^2 over the present chunks' floats only."""
    m = fiited(ROW, budget=0.5, num_chunks=4, schedule={"warmup": [2], "interval": 2})
    data = batches(7, seed=1)
    for step, (ids, w) in enumerate(data[:6], start=1):
        (m(ids) * w).sum().backward()
        m.on_step(step)
    store = m.store
    ids, w = data[6]
    rows = m.global_rows(ids)
    present = store.addr[rows.reshape(-1)] >= 0
    partial = (present.any(1) & ~present.all(1)).view(rows.shape)
    assert partial.any(), "no partially pruned row in the batch"
    r = int(rows[partial][0])
    g = torch.zeros(DIM)
    for b, f in (rows == r).nonzero().tolist():
        g += w[b, f]
    addr = store.addr[r].long()
    keep = addr >= 0
    before, acc0 = store.pool[addr[keep]].clone(), float(store.opt_state[r])
    (m(ids) * w).sum().backward()
    g = g.view(4, DIM // 4)[keep]
    acc = acc0 + float(g.pow(2).mean())
    assert float(store.opt_state[r]) == pytest.approx(acc, rel=1e-5)
    step = ROW.lr / (acc ** 0.5 + ROW.eps)
    torch.testing.assert_close(store.pool[addr[keep]], before - step * g, rtol=1e-5, atol=1e-6)


def test_a_row_that_regains_chunks_starts_a_fresh_accumulator_others_keep_theirs():
    store = fiited(ROW, budget=0.5, num_chunks=4).store
    store.opt_state.fill_(7.0)
    r = 3
    assert store.allocate(torch.tensor([r * 4, r * 4 + 1, 9 * 4]), "zero", 0).all()
    assert store.opt_state[r] == 0.0 and store.opt_state[9] == 0.0   # fresh rows
    assert store.opt_state[4] == 7.0                                 # untouched row
    store.opt_state[r] = 5.0
    assert store.allocate(torch.tensor([r * 4 + 2]), "zero", 0).all()
    assert store.opt_state[r] == 5.0                       # it held chunks: the same row
    store.evict(torch.tensor([r * 4, r * 4 + 1, r * 4 + 2]))
    assert store.opt_state[r] == 5.0                       # nothing to reset until it regrows
    assert store.allocate(torch.tensor([r * 4 + 3]), "zero", 0).all()
    assert store.opt_state[r] == 0.0                       # no chunk left: a fresh row again
    store.check_invariants()


def test_hashed_entries_keep_their_accumulator_when_the_table_is_rebuilt():
    m = fiited(ROW, budget=0.3, num_chunks=2, index="hashed")
    ids, w = batches(1)[0]
    (m(ids) * w).sum().backward()
    store = m.store
    live = (store.keys >= 0).nonzero().view(-1) + store.index.D
    rows_before = store.rows_of_entries(live)
    store.opt_state[live] = torch.arange(1, live.numel() + 1, dtype=torch.float32)
    want = dict(zip(rows_before.tolist(), store.opt_state[live].tolist()))
    gone = live[:3]
    old, new = store.drop_entries(gone)
    assert new.numel() == live.numel() - 3
    rows_after = store.rows_of_entries(new)
    assert store.opt_state[new].tolist() == [want[r] for r in rows_after.tolist()]
    store.check_invariants()


BIG = [TableSpec("a", 5000), TableSpec("b", 20000), TableSpec("c", 7)]


@pytest.mark.parametrize("index", ["direct", "hashed", "auto"])
@pytest.mark.parametrize("budget", [1.0, 0.25, 1 / 16])
def test_ledger_counts_one_float_per_entry_and_total_budget_holds(index, budget):
    big = {"tables": BIG, "dim": 16, "num_chunks": 4, "index": index, "budget_scope": "total"}
    if index == "direct" and budget < 0.5:
        # 8K + 4 = 36 bytes of entry per row, uniform's 4D + 4 = 68: entries alone overflow
        with pytest.raises(BudgetInfeasible, match="36 bytes per row"):
            fiited(ROW, budget=budget, **big)
        return
    m = fiited(ROW, budget=budget, **big)
    store, rep = m.store, m.memory()
    assert store.opt_state.numel() == store.num_entries
    assert rep.optimizer == 4 * store.num_entries
    assert 0.9 * budget * rep.uniform_total < rep.total <= budget * rep.uniform_total
    per_slot = fiited(CHUNK, budget=budget, **big)
    assert per_slot.store.opt_state.numel() == per_slot.store.capacity
    assert per_slot.memory().total <= budget * rep.uniform_total


def test_resume_with_the_other_accumulator_is_refused_by_name():
    a, b = fiited(ROW, num_chunks=2), fiited(CHUNK, num_chunks=2)
    with pytest.raises(ValueError, match="accumulator=row"):
        b.load_state_dict(a.state_dict())
    c = fiited(ROW, num_chunks=2)
    c.load_state_dict(a.state_dict())
    assert torch.equal(c.store.opt_state, a.store.opt_state)


def test_hashed_training_with_events_keeps_the_state_coherent():
    """Hashed index, events that drop entries and regrow chunks: the state stays one float per
    entry, finite, and equal to the initial value on every slot that holds no live entry."""
    m = fiited(ROW, budget=0.3, num_chunks=4, index="hashed", index_reserve=0.3,
               schedule={"warmup": [2], "interval": 2})
    for step, (ids, w) in enumerate(batches(10, seed=2), start=1):
        (m(ids) * w).sum().backward()
        m.on_step(step)
    store = m.store
    assert m.events >= 4 and store.opt_state.numel() == store.num_entries
    assert torch.isfinite(store.opt_state).all() and (store.opt_state >= 0).all()
    empty = (store.keys < 0).nonzero().view(-1) + store.index.D
    assert (store.opt_state[empty] == 0).all()
    held = (store.addr >= 0).any(1)
    assert (store.opt_state[held] > 0).any()
    store.check_invariants()
