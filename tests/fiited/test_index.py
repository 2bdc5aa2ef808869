"""One Index interface: direct == hashed where both can hold every id, auto as documented,
frequency-gated admission to a full hashed table, and sizes the budget module predicts."""
import pytest
import torch

from fiited import SparseOptimConfig, TableSpec, build_method
from fiited.index import AUTO_DIRECT_MAX_ROWS, table_kinds
from fiited.memory import tensor_bytes

ADAGRAD = SparseOptimConfig(name="rowwise_adagrad", lr=0.1, initial_accumulator=0.25)
TABLES = [TableSpec("a", 50), TableSpec("b", 120), TableSpec("c", 9)]


def build(tables=TABLES, **cfg):
    cfg = {"name": "fiited", "budget_scope": "weights", **cfg}
    return build_method(cfg, tables, 8, ADAGRAD, seed=3)


def test_auto_picks_direct_up_to_the_documented_size_and_hashed_above():
    rows = [10, AUTO_DIRECT_MAX_ROWS, AUTO_DIRECT_MAX_ROWS + 1]
    assert table_kinds(rows, "auto") == ["direct", "direct", "hashed"]
    assert table_kinds(rows, "auto", auto_rows=10) == ["direct", "hashed", "hashed"]
    assert table_kinds(rows, "direct") == ["direct"] * 3
    m = build([TableSpec("s", 40), TableSpec("big", 300)], index="auto", index_auto_rows=100,
              budget=0.5)
    assert m.store.index.kinds == ["direct", "hashed"]
    assert m.store.index.D == 40                           # the direct table's rows come first
    # Under the size bound, the cheaper index: at 1/16 a 500-row table's direct entries (32
    # bytes per row at K=4) cost more than its hashed ones; a 3-row table's do not.
    m = build([TableSpec("tiny", 3), TableSpec("mid", 500)], index="auto", budget=1 / 16)
    assert m.store.index.kinds == ["direct", "hashed"]
    m = build([TableSpec("tiny", 3), TableSpec("mid", 500)], index="auto", budget=0.5)
    assert m.store.index.kinds == ["direct", "direct"]
    with pytest.raises(ValueError, match="method.index='tree'"):
        build(index="tree")


@pytest.mark.parametrize("pool", ["shared", "per_table"])
def test_direct_and_hashed_train_identically_when_every_id_can_have_an_entry(pool):
    """Budget 0.5, hashed entry budgets = every row (index_entries=2), no reserve: the same
    losses, utilities and kept chunks step by step, events included (draws and ties are
    keyed by (table, id), never by entry)."""
    cfg = dict(budget=0.5, num_chunks=2, pool=pool, sample_frac=0.3, index_entries=2.0,
               index_reserve=0.0, regrow_init="random",
               schedule={"warmup": [3, 6], "interval": 4})
    ms = [build(index=kind, **cfg) for kind in ("direct", "hashed", "auto")]
    assert ms[1].store.index.hashed.live_cap.tolist() == [50, 120, 9]
    g = torch.Generator().manual_seed(0)
    for step in range(1, 11):
        ids = torch.stack([torch.randint(0, t.num_rows, (120,), generator=g) for t in TABLES], 1)
        if step == 1:                  # every id seen: the hashed tables' population is all rows
            ids = torch.stack([torch.arange(120) % t.num_rows for t in TABLES], 1)
        w = torch.randn(120, 3, 8, generator=g)
        outs = []
        for m in ms:
            out = m(ids)
            (out * w).sum().backward()
            metrics = m.on_step(step)
            outs.append((out.detach(), {k: v for k, v in metrics.items()
                                        if k not in ("prune/event_seconds", "prune/max_probe",
                                                     "prune/live_entries", "prune/entries_dropped",
                                                     "prune/evicted_with_entries")}))
        for out, metrics in outs[1:]:
            assert torch.equal(out, outs[0][0]), f"step {step}"
            assert metrics == outs[0][1], f"step {step}"
        for m in ms:
            m.store.check_invariants()
    assert ms[1].dims().keys() == ms[0].dims().keys()
    for t in ms[0].dims():
        assert torch.equal(ms[1].dims()[t], ms[0].dims()[t])


def _train(m, batches, start):
    events = []
    for i, ids in enumerate(batches):
        out = m(ids)
        out.sum().backward()
        if m.on_step(start + i + 1):
            events.append(start + i + 1)
    return events


def _live_ids(m):
    keys = m.store.keys
    return set(keys[keys >= 0].tolist())


def admission_model(**cfg):
    """One hashed table of 1000 ids with 8 entries (budget 1/125, index_entries 1, K=1)."""
    return build([TableSpec("t", 1000)], index="hashed", num_chunks=1, budget=0.008,
                 index_entries=1.0, index_reserve=0.125, sample_frac=1.0,
                 first_access_alloc=True, schedule={"warmup": [], "interval": 10}, **cfg)


def test_a_new_id_that_becomes_the_most_frequent_gets_an_entry_within_one_event():
    m = admission_model()
    assert m.store.index.hashed.max_live == 8
    frequent = torch.arange(8)
    old = [frequent.repeat(4).unsqueeze(1) for _ in range(10)]          # steps 1-10, event 10
    _train(m, old, 0)
    assert _live_ids(m) <= set(range(8))
    hot = torch.tensor([777])
    new = [torch.cat([frequent.repeat(2), hot.repeat(20)]).unsqueeze(1) for _ in range(10)]
    assert _train(m, new, 10) == [20]
    assert 777 in _live_ids(m)                 # admitted after the event at step 20 at the latest
    _train(m, new[:1], 20)
    assert 777 in _live_ids(m)


def test_one_off_ids_never_take_a_frequent_ids_entry():
    m = admission_model()
    frequent = torch.arange(8)
    _train(m, [frequent.repeat(4).unsqueeze(1) for _ in range(10)], 0)   # event at 10
    kept = _live_ids(m)
    assert len(kept) == 7 and kept <= set(range(8))        # the reserve: one entry free
    g = torch.Generator().manual_seed(0)
    stream = []
    for _ in range(30):                                     # events at 20, 30, 40
        once = torch.randperm(990, generator=g)[:6] + 10    # each one-off id appears once
        stream.append(torch.cat([frequent.repeat(4), once]).unsqueeze(1))
    _train(m, stream, 10)
    live = _live_ids(m)
    assert kept <= live, "a frequent id lost its entry"
    assert live <= set(range(8)), f"one-off ids got entries: {sorted(live - set(range(8)))}"


def test_first_come_admission_is_what_the_sketch_prevents():
    """The same one-off stream with the sketch off (admission_sketch=0): one-off ids take
    the free entry, so the test above can fail."""
    m = admission_model(admission_sketch=0.0)
    frequent = torch.arange(8)
    _train(m, [frequent.repeat(4).unsqueeze(1) for _ in range(10)], 0)
    _train(m, [torch.arange(100, 106).unsqueeze(1)], 10)        # only one-off ids
    assert _live_ids(m) - set(range(8))


@pytest.mark.parametrize("index", ["direct", "hashed", "auto"])
@pytest.mark.parametrize("budget", [0.5, 1 / 16])
def test_total_scope_ledger_is_what_the_budget_module_sized(index, budget):
    tables = [TableSpec("s", 30), TableSpec("m", 500), TableSpec("big", 3000)]
    if index == "direct" and budget < 0.25:     # 16 bytes of entry per row > 1/16 of 64
        with pytest.raises(ValueError, match="too few for any chunk"):
            build_method({"name": "fiited", "budget": budget, "index": index, "num_chunks": 2},
                         tables, 8, ADAGRAD)
        return
    m = build_method({"name": "fiited", "budget": budget, "budget_scope": "total",
                      "index": index, "index_auto_rows": 100, "num_chunks": 2},
                     tables, 8, ADAGRAD, seed=0)
    r = m.memory()
    assert r.total == tensor_bytes(*m.buffers(), *m.parameters())
    assert r.total <= budget * m.uniform_reference()[1]
    # the largest pool that fits: one more chunk would not
    sizes = m._sizes([t.num_rows for t in tables])
    assert sizes.chunks == m.store.capacity
