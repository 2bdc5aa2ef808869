"""ITEP: K=1, frequency utility decayed per event, stride sampling, FBGEMM's schedule."""
import pytest
import torch

from fiited import SparseOptimConfig, TableSpec, build_method
from fiited.pruning import sample_entries

TABLES = [TableSpec("a", 40), TableSpec("b", 230)]
OPT = SparseOptimConfig(name="rowwise_adagrad", lr=0.1, initial_accumulator=0.125)


def itep(**cfg):
    cfg.setdefault("budget_scope", "weights")       # FBGEMM's row budget
    return build_method({"name": "itep", "budget": 0.25, **cfg}, TABLES, 8, OPT, seed=0)


def batch(g, n=32):
    return torch.stack([torch.randint(0, t.num_rows, (n,), generator=g) for t in TABLES], 1)


def test_events_follow_fbgemms_front_loaded_schedule():
    m = itep()
    g = torch.Generator().manual_seed(0)
    events = []
    for step in range(1, 32):
        out = m(batch(g))
        out.sum().backward()
        if m.on_step(step):
            events.append(step)
    assert events == [3, 6, 9, 30]
    assert m.config.schedule.interval == 1001


def test_utility_counts_accesses_and_decays_by_0_98_per_event():
    m = itep(schedule={"warmup": [2, 4], "interval": 1000})
    g = torch.Generator().manual_seed(1)
    counts = torch.zeros(270)
    for step in range(1, 6):
        ids = batch(g)
        out = m(ids)
        (out * torch.randn(out.shape, generator=g)).sum().backward()   # norms must not matter
        m.on_step(step)
        counts += torch.bincount(m.global_rows(ids).view(-1), minlength=270).float()
        if step in (2, 4):
            counts *= 0.98
    torch.testing.assert_close(m.utility.values()[:, 0], counts)


def test_stride_sampling_takes_every_23rd_row_from_a_rotating_offset():
    m = itep()
    policy = m.policy
    entries, weights, tabs = sample_entries(m.store, policy, seed=0, step=5)
    assert entries[tabs == 1].tolist() == [40 + r for r in range(5, 230, 23)]
    assert weights[tabs == 1].tolist() == pytest.approx([230 / 10] * 10)
    assert entries[tabs == 0].tolist() == [5, 28]
    entries, _, tabs = sample_entries(m.store, policy, seed=0, step=6)
    assert entries[tabs == 1][0] == 46


def test_per_table_pools_and_reused_slots_start_from_zero_with_fresh_state():
    m = itep(schedule={"warmup": [3], "interval": 1000})
    assert m.store.group_cap.tolist() == [10, 57]
    g = torch.Generator().manual_seed(2)
    for step in range(1, 3):
        out = m(batch(g, 64))
        out.sum().backward()
        m.on_step(step)
    before = m.store.present().clone()
    m.store.pool.fill_(5.0)
    m.store.opt_state.fill_(7.0)
    out = m(batch(g, 64))
    out.sum().backward()
    metrics = m.on_step(3)
    assert metrics["prune/allocated"] > 0
    new = (m.store.present() & ~before).view(-1).nonzero().squeeze(1)
    slots = m.store.addr.view(-1)[new].long()
    assert new.numel() == metrics["prune/allocated"]
    assert bool((m.store.pool[slots] == 0).all())
    assert m.store.opt_state[slots].tolist() == [0.125] * new.numel()
    m.store.check_invariants()
    kept = m.store.kept_per_table()[:, 0].tolist()
    assert kept[0] <= 10 and kept[1] <= 57


def test_refuses_chunks():
    with pytest.raises(ValueError, match="method.num_chunks=4"):
        itep(num_chunks=4)
