"""The VHPI store: slot ownership, LIFO free stacks, group ranges, ledger = storage."""
import pytest
import torch
from hypothesis import given, settings, strategies as st

from fiited.budget import split_entries
from fiited.index import SKETCH_ROWS, TableIndex
from fiited.memory import tensor_bytes
from fiited.optim import SparseOptimConfig
from fiited.store import ChunkStore, gather_rows

ADAGRAD = SparseOptimConfig(name="rowwise_adagrad", initial_accumulator=0.5)


def make_store(rows=(5, 7), K=2, caps=(4, 6), groups=(0, 1), optim=ADAGRAD):
    return ChunkStore(list(rows), K, 3, list(caps), list(groups), optim)


def test_pops_hand_out_ascending_slots_and_reuse_is_lifo():
    s = make_store(rows=(10,), caps=(5,), groups=(0,))
    gen = 0  # seed of keyed draws
    got = s.allocate(torch.tensor([0, 1, 2]), "zero", gen)
    assert got.all()
    assert s.addr.view(-1)[:3].tolist() == [0, 1, 2]
    s.evict(torch.tensor([1]))       # slot 1 back on the stack
    s.evict(torch.tensor([0]))       # then slot 0: the top
    s.allocate(torch.tensor([7]), "zero", gen)
    assert int(s.addr.view(-1)[7]) == 0
    s.allocate(torch.tensor([8]), "zero", gen)
    assert int(s.addr.view(-1)[8]) == 1
    s.check_invariants()


def test_allocation_stops_at_each_groups_capacity_in_priority_order():
    s = make_store()                 # table 0: rows 0..4 -> group 0 (4 slots); table 1: group 1 (6)
    gen = 0  # seed of keyed draws
    # 6 chunks of table 0 (rows 0..2) then 2 of table 1 (row 5), interleaved priority order.
    flat = torch.tensor([0, 10, 1, 2, 11, 3, 4, 5])
    got = s.allocate(flat, "zero", gen)
    assert got.tolist() == [True, True, True, True, True, True, False, False]
    assert s.free_counts() == [0, 4]
    slots = s.addr.view(-1)
    assert bool((slots[[0, 1, 2, 3]] < 4).all()) and bool((slots[[10, 11]] >= 4).all())
    s.check_invariants()


def test_allocation_initialises_values_and_resets_optimizer_state():
    s = make_store(rows=(4,), caps=(8,), groups=(0,))
    s.pool.fill_(7.0)
    s.opt_state.fill_(9.0)
    gen = 0  # seed of keyed draws
    s.allocate(torch.tensor([0, 1]), "zero", gen)
    s.allocate(torch.tensor([2, 3]), "random", gen)
    a = s.addr.view(-1).long()
    assert torch.equal(s.pool[a[:2]], torch.zeros(2, 3))
    rnd = s.pool[a[2:4]]
    assert bool((rnd.abs() <= 0.5).all()) and not bool((rnd == 7.0).any())   # bound 1/sqrt(4)
    assert s.opt_state[a[:4]].tolist() == [0.5] * 4
    assert s.opt_state[4:].tolist() == [9.0] * 4       # untouched slots keep their state


def test_evicting_an_absent_chunk_is_refused():
    s = make_store()
    with pytest.raises(RuntimeError, match="absent"):
        s.evict(torch.tensor([3]))


def test_invariant_check_catches_a_slot_with_two_owners():
    s = make_store()
    gen = 0  # seed of keyed draws
    s.allocate(torch.tensor([0, 1]), "zero", gen)
    s.check_invariants()
    s.addr.view(-1)[1] = s.addr.view(-1)[0]
    with pytest.raises(AssertionError):
        s.check_invariants()


def test_invariant_check_catches_a_slot_outside_its_group():
    s = make_store()
    gen = 0  # seed of keyed draws
    s.allocate(torch.tensor([0, 10]), "zero", gen)    # row 0 (group 0), row 5 (group 1)
    a, b = s.addr.view(-1)[0].item(), s.addr.view(-1)[10].item()
    s.addr.view(-1)[0], s.addr.view(-1)[10] = b, a    # swap owners across groups
    with pytest.raises(AssertionError, match="outside its group"):
        s.check_invariants()


@pytest.mark.parametrize("optim", [ADAGRAD, SparseOptimConfig(name="sgd")])
@pytest.mark.parametrize("index", ["direct", "hashed"])
def test_size_formulas_equal_the_real_tensors(optim, index):
    s = ChunkStore([5, 7, 2], 4, 3, [9, 3, 0], [0, 1, 2], optim, index=index, num_entries=6,
                   max_live=5)
    every = tensor_bytes(*s.buffers())
    assert s.weights_bytes() + s.optimizer_bytes() + s.index_bytes() == every
    caps = split_entries([5, 7, 2], 5) if index == "hashed" else []
    sketch = SKETCH_ROWS * 4 * sum(max(16, c) for c in caps if c > 0)
    predicted = (s.num_entries * ChunkStore.bytes_per_entry(4, 14, index)
                 + ChunkStore.geometry_bytes(3, 3, 4) + TableIndex.fixed_bytes(3, index == "hashed")
                 + sketch + s.capacity * ChunkStore.bytes_per_chunk(3, optim))
    assert predicted == every
    assert s.num_entries == (14 if index == "direct" else 6)


@settings(max_examples=40, deadline=None)
@given(data=st.data(), shared=st.booleans(), k=st.sampled_from([1, 2, 4]))
def test_random_allocate_evict_sequences_keep_every_slot_owned_once(data, shared, k):
    rows = data.draw(st.lists(st.integers(1, 12), min_size=1, max_size=4), label="rows")
    total = sum(rows) * k
    if shared:
        caps, groups = [data.draw(st.integers(0, total))], [0] * len(rows)
    else:
        caps = [data.draw(st.integers(0, n * k)) for n in rows]
        groups = list(range(len(rows)))
    s = ChunkStore(rows, k, 2, caps, groups, ADAGRAD)
    gen = 0  # seed of keyed draws
    for _ in range(data.draw(st.integers(1, 8), label="ops")):
        present = (s.addr.view(-1) >= 0).nonzero().squeeze(1)
        absent = (s.addr.view(-1) < 0).nonzero().squeeze(1)
        if data.draw(st.booleans()) and present.numel():
            pick = data.draw(st.lists(st.sampled_from(present.tolist()), unique=True, max_size=6))
            s.evict(torch.tensor(pick, dtype=torch.long))
        elif absent.numel():
            pick = data.draw(st.lists(st.sampled_from(absent.tolist()), unique=True, max_size=10))
            before = int((s.addr >= 0).sum())
            got = s.allocate(torch.tensor(pick, dtype=torch.long), "zero", gen)
            assert int((s.addr >= 0).sum()) == before + int(got.sum())
        s.check_invariants()
        assert int((s.addr >= 0).sum()) + sum(s.free_counts()) == s.capacity


def test_state_dict_round_trip_restores_free_stacks():
    s = make_store()
    gen = 0  # seed of keyed draws
    s.allocate(torch.tensor([0, 1, 2, 10]), "random", gen)
    s.evict(torch.tensor([1]))
    t = make_store()
    t.load_state_dict(s.state_dict())
    assert t.free_counts() == s.free_counts()
    t.check_invariants()
    for name, buf in s.state_dict().items():
        if isinstance(buf, torch.Tensor):
            assert torch.equal(buf, t.state_dict()[name]), name


# ---- the hashed index -------------------------------------------------------------------------
def hashed_store(rows=(100, 300), entries=16, live=8, caps=(12,), groups=(0, 0), K=2):
    return ChunkStore(list(rows), K, 2, list(caps), list(groups), ADAGRAD, index="hashed",
                      num_entries=entries, max_live=live)


def test_hashed_index_finds_what_it_inserted_and_nothing_else():
    s = hashed_store()
    rows = torch.tensor([5, 105, 399, 5, 250])
    e = s.entries_of(rows, insert=True)
    assert bool((e >= 0).all()) and e[0] == e[3] and s.live == 4
    assert torch.equal(s.entries_of(rows, insert=False), e)
    assert s.entries_of(torch.tensor([6, 7]), insert=False).tolist() == [-1, -1]
    assert torch.equal(s.keys[e].long(), rows)
    s.check_invariants()


def test_hashed_index_stops_inserting_at_each_tables_entry_budget():
    s = hashed_store(entries=16, live=8)                   # 2 + 6 entries (100 : 300 rows)
    assert s.index.hashed.live_cap.tolist() == [2, 6]
    e = s.entries_of(torch.arange(20), insert=True)        # all table 0
    assert int((e >= 0).sum()) == 2 and s.live == 2
    e = s.entries_of(torch.arange(100, 120), insert=True)  # table 1
    assert int((e >= 0).sum()) == 6 and s.live == 8
    s.check_invariants()


def test_hashed_index_survives_collisions():
    s = hashed_store(entries=8, live=8)
    rows = torch.arange(0, 8 * 40, 40)                     # many share a home slot
    e = s.entries_of(rows, insert=True)
    assert torch.unique(e).numel() == 8
    assert s.max_probe > 0
    assert torch.equal(s.entries_of(rows, insert=False), e)
    s.check_invariants()


@pytest.mark.parametrize("key_rows", [(100, 300), (2 ** 31, 5)])  # int32 keys, int64 keys
def test_native_probe_gives_the_torch_path_entries_and_table(monkeypatch, key_rows):
    """The same skewed id stream through entries_of with the native probe and with torch ops
    only: identical entries every step and identical keys, live count and probe length."""
    from fiited.kernels import cpu_native
    if cpu_native.library() is None:
        pytest.skip(f"native core unavailable: {cpu_native.failure}")
    gen = torch.Generator().manual_seed(1)
    total = sum(key_rows)
    hot = torch.randint(0, total, (40,), generator=gen)
    stream = [torch.cat([hot[torch.randint(0, 40, (60,), generator=gen)],
                         torch.randint(0, total, (30,), generator=gen)]) for _ in range(12)]
    native = hashed_store(rows=key_rows, entries=64, live=48)
    plain = hashed_store(rows=key_rows, entries=64, live=48)
    assert native.keys.dtype == (torch.int64 if total >= 2 ** 31 else torch.int32)
    for i, rows in enumerate(stream):
        insert = i % 4 != 3
        got = native.entries_of(rows, insert=insert)
        with monkeypatch.context() as m:
            m.setattr(cpu_native, "_library", None)
            m.setattr(cpu_native, "_tried", True)
            want = plain.entries_of(rows, insert=insert)
        assert torch.equal(got, want), f"step {i}"
    assert native.live == plain.live == 48 and native.max_probe == plain.max_probe > 0
    assert torch.equal(native.keys, plain.keys)
    native.check_invariants()


def test_rebuild_keeps_the_chosen_entries_with_their_chunks():
    s = hashed_store()
    gen = 0  # seed of keyed draws
    rows = torch.tensor([3, 30, 130, 230])
    e = s.entries_of(rows, insert=True)
    s.allocate(e[:2] * 2, "random", gen)                  # chunk 0 of rows 3 and 30
    values = s.pool[s.addr[e[:2], 0].long()].clone()
    old, new = s.drop_entries(e[[2]])
    assert sorted(old.tolist()) == sorted(e[[0, 1, 3]].tolist())
    after = s.entries_of(rows, insert=False)
    assert after[2] == -1 and s.live == 3
    assert torch.equal(s.pool[s.addr[after[:2], 0].long()], values)
    s.check_invariants()


@settings(max_examples=30, deadline=None)
@given(data=st.data())
def test_random_hashed_sequences_keep_the_index_consistent(data):
    s = hashed_store(rows=(50, 70), entries=20, live=12, caps=(10, 8), groups=(0, 1))
    gen = 0  # seed of keyed draws
    for _ in range(data.draw(st.integers(1, 8), label="ops")):
        op = data.draw(st.sampled_from(["insert", "insert", "alloc", "evict", "rebuild"]))
        if op == "insert":
            rows = data.draw(st.lists(st.integers(0, 119), min_size=1, max_size=10))
            s.entries_of(torch.tensor(rows), insert=True)
        elif op == "alloc":
            live = (s.keys >= 0).nonzero().squeeze(1)
            if live.numel():
                e = torch.tensor(data.draw(st.lists(st.sampled_from(live.tolist()), unique=True)),
                                 dtype=torch.long)
                flat = e * 2 + data.draw(st.integers(0, 1))
                s.allocate(flat[s.addr.view(-1)[flat] < 0], "zero", gen)
        elif op == "evict":
            present = (s.addr.view(-1) >= 0).nonzero().squeeze(1)
            if present.numel():
                s.evict(present[: data.draw(st.integers(0, present.numel()))])
        else:
            mask = torch.tensor(data.draw(st.lists(st.booleans(), min_size=20, max_size=20)))
            s.drop_entries((~mask & (s.keys >= 0)).nonzero().squeeze(1))   # chunks go too
        s.check_invariants()


def test_hashed_state_round_trip_recounts_live_entries_and_probes():
    s = hashed_store(entries=8, live=8)
    s.entries_of(torch.arange(0, 8 * 40, 40), insert=True)
    t = hashed_store(entries=8, live=8)
    t.load_state_dict(s.state_dict())
    assert (t.live, t.max_probe) == (s.live, s.max_probe)
    t.check_invariants()


def test_hashed_insertion_prefers_the_rows_most_frequent_in_the_batch():
    s = hashed_store(entries=16, live=3)
    e = s.entries_of(torch.tensor([399, 399, 399, 7, 250, 250, 1, 2]), insert=True)
    assert e[:3].ge(0).all() and e[4:6].ge(0).all()           # rows 399 and 250 first
    assert int((e[[3, 6, 7]] >= 0).sum()) == 1                # then one of the singletons


@pytest.mark.parametrize("k", [1, 2, 3, 4, 8])
def test_gather_rows_equals_plain_indexing(k):
    table = torch.randint(-1, 1000, (50, k), dtype=torch.int32)
    index = torch.randint(0, 50, (200,))
    assert torch.equal(gather_rows(table, index), table[index])
