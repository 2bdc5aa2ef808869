"""The chunk store's consistency check (tests and debugging; O(entries), never on a hot path)."""
from __future__ import annotations

import torch


def check_store(store) -> None:
    """Raise AssertionError unless every slot is free xor owned by exactly one chunk, the
    free stacks hold only their group's slots, present + free == capacity, and (hashed)
    every live key is found at its own entry and empty entries own nothing."""
    cap = store.capacity
    owned = store.addr[store.addr >= 0].long()
    assert owned.numel() == 0 or (owned.min() >= 0 and owned.max() < cap), "address out of pool"
    tops = store.free_top.tolist()
    starts = store.group_start.tolist()
    caps = store.group_cap.tolist()
    free_parts = []
    for g in range(store.num_groups):
        assert 0 <= tops[g] <= caps[g], f"group {g}: free_top {tops[g]} outside [0, {caps[g]}]"
        part = store.free_stack[starts[g]:starts[g] + tops[g]].long()
        assert part.numel() == 0 or (part.min() >= starts[g] and
                                     part.max() < starts[g] + caps[g]), \
            f"group {g}: free stack holds another group's slot"
        free_parts.append(part)
    free = torch.cat(free_parts) if free_parts else owned.new_zeros(0)
    every = torch.cat([owned, free])
    assert every.numel() == cap, f"owned {owned.numel()} + free {free.numel()} != capacity {cap}"
    assert torch.equal(torch.sort(every).values, torch.arange(cap, device=every.device)), \
        "a slot is owned twice, owned and free, or lost"
    flat = (store.addr >= 0).view(-1).nonzero().squeeze(1)
    entries = torch.div(flat, store.num_chunks, rounding_mode="floor")
    g = store.group_of_entries(entries)
    s = store.addr.view(-1)[flat].long()
    assert bool(((s >= store.group_start[g]) & (s < store.group_start[g] + store.group_cap[g])).all()), \
        "a chunk holds a slot outside its group's range"
    h = store.index.hashed
    if h is not None:
        live = (h.keys >= 0).nonzero().squeeze(1)
        rows = h.keys[live].long()
        assert live.numel() == h.live <= h.max_live, "live entry count is off"
        assert bool((h.live_per_table <= h.live_cap).all()), "a table exceeds its entries"
        assert torch.unique(rows).numel() == rows.numel(), "a row has two entries"
        assert bool(h.live_cap[store.table_of_rows(rows)].gt(0).all()), \
            "a direct table's row is in the hash table"
        assert torch.equal(h.find(rows), live), "a live key is not found at its entry"
        assert bool((store.addr[store.index.D:][h.keys < 0] < 0).all()), \
            "an empty entry owns a chunk"
    assert store._free_host == tops, "host mirror of free counts is stale"
    kept, live = store.kept.clone(), store.live_per_table.clone()
    store._recount()
    assert torch.equal(store.kept, kept), "kept-chunk counters are stale"
    assert torch.equal(store.live_per_table, live), "live-entry counters are stale"
