"""The VHPI store: slot ownership, LIFO free stacks, group ranges, ledger = storage."""
import pytest
import torch
from hypothesis import given, settings, strategies as st

from fiited.memory import tensor_bytes
from fiited.optim import SparseOptimConfig
from fiited.store import ChunkStore

ADAGRAD = SparseOptimConfig(name="rowwise_adagrad", initial_accumulator=0.5)


def make_store(rows=(5, 7), K=2, caps=(4, 6), groups=(0, 1), optim=ADAGRAD):
    return ChunkStore(list(rows), K, 3, list(caps), list(groups), optim)


def test_pops_hand_out_ascending_slots_and_reuse_is_lifo():
    s = make_store(rows=(10,), caps=(5,), groups=(0,))
    gen = torch.Generator().manual_seed(0)
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
    gen = torch.Generator().manual_seed(0)
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
    gen = torch.Generator().manual_seed(0)
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
    gen = torch.Generator().manual_seed(0)
    s.allocate(torch.tensor([0, 1]), "zero", gen)
    s.check_invariants()
    s.addr.view(-1)[1] = s.addr.view(-1)[0]
    with pytest.raises(AssertionError):
        s.check_invariants()


def test_invariant_check_catches_a_slot_outside_its_group():
    s = make_store()
    gen = torch.Generator().manual_seed(0)
    s.allocate(torch.tensor([0, 10]), "zero", gen)    # row 0 (group 0), row 5 (group 1)
    a, b = s.addr.view(-1)[0].item(), s.addr.view(-1)[10].item()
    s.addr.view(-1)[0], s.addr.view(-1)[10] = b, a    # swap owners across groups
    with pytest.raises(AssertionError, match="outside its group"):
        s.check_invariants()


@pytest.mark.parametrize("optim", [ADAGRAD, SparseOptimConfig(name="sgd")])
def test_size_formulas_equal_the_real_tensors(optim):
    s = make_store(rows=(5, 7, 2), K=4, caps=(9, 3, 0), groups=(0, 1, 2), optim=optim)
    every = tensor_bytes(*s.buffers())
    assert s.weights_bytes() + s.optimizer_bytes() + s.index_bytes() == every
    predicted = (ChunkStore.entry_bytes(14, 4, 3, 3)
                 + s.capacity * ChunkStore.bytes_per_chunk(3, optim))
    assert predicted == every


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
    gen = torch.Generator().manual_seed(0)
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
    gen = torch.Generator().manual_seed(0)
    s.allocate(torch.tensor([0, 1, 2, 10]), "random", gen)
    s.evict(torch.tensor([1]))
    t = make_store()
    t.load_state_dict(s.state_dict())
    assert t.free_counts() == s.free_counts()
    t.check_invariants()
    for name, buf in s.state_dict().items():
        if isinstance(buf, torch.Tensor):
            assert torch.equal(buf, t.state_dict()[name]), name
