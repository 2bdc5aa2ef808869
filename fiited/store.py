"""The VHPI chunk store: virtually hashed entries, physically indexed chunk pool.

Every virtual row r (table-batched, ``r = table offset + id``) has K chunk addresses
``addr[r, k]`` (int32 pool slot, -1 = absent: reads as zeros). The pool ``[capacity, C]`` and
its per-chunk optimizer state are allocated once, at the budget, so training memory never
grows. Slots are handed out by a LIFO free stack per *group* (one group per table for
``pool: per_table``, one group for ``pool: shared``); group g owns the slot range
``[group_start[g], group_start[g] + group_cap[g])`` and its stack lives in the same range of
``free_stack``, with ``free_top[g]`` free slots on it. One slot is one chunk: no fragmentation.

All operations are vectorised over the chunks they touch; loops run over groups at most.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from fiited.interface import dlrm_init
from fiited.memory import tensor_bytes
from fiited.optim import SparseOptimConfig

INITS = ("zero", "random")


def ranks_within_groups(groups: torch.Tensor, num_groups: int) -> tuple[torch.Tensor, torch.Tensor]:
    """For group ids already sorted (stable), each item's rank inside its group and the counts."""
    counts = torch.bincount(groups, minlength=num_groups)
    first = torch.cumsum(counts, 0) - counts
    return torch.arange(groups.numel(), device=groups.device) - first[groups], counts


class ChunkStore(nn.Module):
    """Entry table + chunk pool + optimizer state + free stacks, all as buffers (resumable)."""

    def __init__(self, table_rows: Sequence[int], num_chunks: int, chunk_width: int,
                 group_caps: Sequence[int], table_group: Sequence[int],
                 optim: SparseOptimConfig) -> None:
        super().__init__()
        if len(table_group) != len(table_rows):
            raise ValueError("table_group needs one group id per table")
        self.num_chunks = int(num_chunks)
        self.chunk_width = int(chunk_width)
        self.num_groups = len(group_caps)
        self.optim = optim
        rows = torch.tensor([int(n) for n in table_rows], dtype=torch.int64)
        caps = torch.tensor([int(c) for c in group_caps], dtype=torch.int64)
        if bool((caps < 0).any()):
            raise ValueError(f"group capacities must be >= 0, got {caps.tolist()}")
        total_rows = int(rows.sum())
        capacity = int(caps.sum())
        starts = torch.cumsum(caps, 0) - caps
        # Entry table and chunk pool.
        self.register_buffer("addr", torch.full((total_rows, self.num_chunks), -1, dtype=torch.int32))
        self.register_buffer("pool", torch.zeros(capacity, self.chunk_width))
        self.register_buffer("opt_state", torch.full(
            (capacity * optim.state_floats_per_row,), float(optim.initial_accumulator)))
        # Free stacks: group g's segment holds its slots in reverse, so pops hand out ascending slots.
        slot = torch.arange(capacity, dtype=torch.int64)
        g_of_slot = torch.repeat_interleave(torch.arange(self.num_groups), caps)
        stack = 2 * starts[g_of_slot] + caps[g_of_slot] - 1 - slot
        self.register_buffer("free_stack", stack.to(torch.int32))
        self.register_buffer("free_top", caps.clone())
        # Small geometry (non-persistent: derived from the config).
        self.register_buffer("group_start", starts, persistent=False)
        self.register_buffer("group_cap", caps, persistent=False)
        self.register_buffer("table_rows", rows, persistent=False)
        self.register_buffer("table_ends", torch.cumsum(rows, 0), persistent=False)
        self.register_buffer("table_group", torch.tensor([int(g) for g in table_group],
                                                         dtype=torch.int64), persistent=False)
        self._free_host = caps.tolist()

    # ---- geometry --------------------------------------------------------------------------
    @property
    def capacity(self) -> int:
        return self.pool.shape[0]

    @property
    def total_rows(self) -> int:
        return self.addr.shape[0]

    def free_counts(self) -> list[int]:
        """Free slots per group, from a host mirror (no device sync on the hot path)."""
        return list(self._free_host)

    def has_free(self) -> bool:
        return any(self._free_host)

    def _sync_free(self) -> None:
        self._free_host = self.free_top.tolist()

    def table_of_rows(self, rows: torch.Tensor) -> torch.Tensor:
        return torch.bucketize(rows, self.table_ends, right=True)

    def group_of_rows(self, rows: torch.Tensor) -> torch.Tensor:
        if self.num_groups == 1:
            return torch.zeros_like(rows)
        return self.table_group[self.table_of_rows(rows)]

    @staticmethod
    def bytes_per_chunk(chunk_width: int, optim: SparseOptimConfig) -> int:
        """Pool floats + optimizer state + one free-stack entry, per slot of capacity."""
        return 4 * chunk_width + 4 * optim.state_floats_per_row + 4

    @staticmethod
    def entry_bytes(total_rows: int, num_chunks: int, num_tables: int, num_groups: int) -> int:
        """Capacity-independent index bytes: addresses + geometry buffers."""
        return total_rows * num_chunks * 4 + 8 * (3 * num_groups + 3 * num_tables)

    def weights_bytes(self) -> int:
        return tensor_bytes(self.pool)

    def optimizer_bytes(self) -> int:
        return tensor_bytes(self.opt_state)

    def index_bytes(self) -> int:
        return tensor_bytes(self.addr, self.free_stack, self.free_top, self.group_start,
                            self.group_cap, self.table_rows, self.table_ends, self.table_group)

    # ---- slot management -------------------------------------------------------------------
    def _pop(self, groups: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Requests in priority order (per group) -> (granted mask, slots of the granted ones)."""
        order = torch.sort(groups, stable=True).indices
        g = groups[order]
        rank, _ = ranks_within_groups(g, self.num_groups)
        top = self.free_top[g]
        ok = rank < top
        pos = self.group_start[g] + top - 1 - rank
        slots_sorted = self.free_stack[pos[ok]].long()
        self.free_top.sub_(torch.bincount(g[ok], minlength=self.num_groups))
        granted = torch.zeros_like(groups, dtype=torch.bool)
        granted[order[ok]] = True
        slots = torch.full_like(groups, -1)
        slots[order[ok]] = slots_sorted
        return granted, slots[granted]

    def _push(self, slots: torch.Tensor, groups: torch.Tensor) -> None:
        order = torch.sort(groups, stable=True).indices
        g = groups[order]
        rank, counts = ranks_within_groups(g, self.num_groups)
        pos = self.group_start[g] + self.free_top[g] + rank
        if bool((self.free_top + counts > self.group_cap).any()):
            raise RuntimeError("free stack overflow: a slot was pushed twice")
        self.free_stack[pos] = slots[order].to(torch.int32)
        self.free_top.add_(counts)

    def init_slots(self, slots: torch.Tensor, tables: torch.Tensor, init: str,
                   generator: torch.Generator) -> None:
        """Fresh chunk values (zeros, or DLRM's bound of the chunk's table) and optimizer state."""
        if slots.numel() == 0:
            return
        if init == "zero":
            self.pool[slots] = 0.0
        elif init == "random":
            bound_rows = self.table_rows[tables].cpu()
            values = dlrm_init(slots.numel(), self.chunk_width, bound_rows, generator)
            self.pool[slots] = values.to(self.pool.device)
        else:
            raise ValueError(f"unknown chunk init {init!r}; expected one of {INITS}")
        if self.opt_state.numel():
            self.opt_state[slots] = float(self.optim.initial_accumulator)

    def allocate(self, flat: torch.Tensor, init: str, generator: torch.Generator) -> torch.Tensor:
        """Give slots to absent chunks ``flat`` (= row*K + k, priority order within each group)
        while their group has free slots. Returns the mask of chunks that got one."""
        flat = flat.long()
        if flat.numel() == 0:
            return torch.zeros(0, dtype=torch.bool, device=flat.device)
        rows = torch.div(flat, self.num_chunks, rounding_mode="floor")
        granted, slots = self._pop(self.group_of_rows(rows))
        got = flat[granted]
        self.addr.view(-1)[got] = slots.to(torch.int32)
        self.init_slots(slots, self.table_of_rows(rows[granted]), init, generator)
        self._sync_free()
        return granted

    def evict(self, flat: torch.Tensor) -> None:
        """Drop present chunks ``flat``: their slots go back on their group's stack."""
        flat = flat.long()
        if flat.numel() == 0:
            return
        entries = self.addr.view(-1)
        slots = entries[flat].long()
        if bool((slots < 0).any()):
            raise RuntimeError("evict() was given an absent chunk")
        entries[flat] = -1
        rows = torch.div(flat, self.num_chunks, rounding_mode="floor")
        self._push(slots, self.group_of_rows(rows))
        self._sync_free()

    def fill_all(self, values: torch.Tensor) -> None:
        """Every chunk present (capacity == all chunks): slot r*K+k holds chunk k of row r."""
        n = self.total_rows * self.num_chunks
        if self.capacity != n:
            raise RuntimeError(f"fill_all needs capacity {n}, have {self.capacity}")
        self.addr.copy_(torch.arange(n, dtype=torch.int32).view_as(self.addr))
        self.pool.copy_(values.reshape(n, self.chunk_width))
        self.free_top.zero_()
        self._sync_free()

    # ---- reports ---------------------------------------------------------------------------
    def present(self) -> torch.Tensor:
        return self.addr >= 0

    def kept_per_table(self) -> torch.Tensor:
        """[F, K] present chunks per table and position (O(rows): reports and events only)."""
        ends = self.table_ends.tolist()
        out = torch.zeros(len(ends), self.num_chunks, dtype=torch.int64)
        start = 0
        for t, end in enumerate(ends):
            out[t] = (self.addr[start:end] >= 0).sum(0).cpu()
            start = end
        return out

    def check_invariants(self) -> None:
        """Raise AssertionError unless every slot is free xor owned by exactly one chunk, the
        free stacks hold only their group's slots, and present + free == capacity."""
        cap = self.capacity
        owned = self.addr[self.addr >= 0].long()
        assert owned.numel() == 0 or (owned.min() >= 0 and owned.max() < cap), "address out of pool"
        tops = self.free_top.tolist()
        starts = self.group_start.tolist()
        caps = self.group_cap.tolist()
        free_parts = []
        for g in range(self.num_groups):
            assert 0 <= tops[g] <= caps[g], f"group {g}: free_top {tops[g]} outside [0, {caps[g]}]"
            part = self.free_stack[starts[g]:starts[g] + tops[g]].long()
            assert part.numel() == 0 or (part.min() >= starts[g] and
                                         part.max() < starts[g] + caps[g]), \
                f"group {g}: free stack holds another group's slot"
            free_parts.append(part)
        free = torch.cat(free_parts) if free_parts else owned.new_zeros(0)
        every = torch.cat([owned, free])
        assert every.numel() == cap, f"owned {owned.numel()} + free {free.numel()} != capacity {cap}"
        assert torch.equal(torch.sort(every).values, torch.arange(cap, device=every.device)), \
            "a slot is owned twice, owned and free, or lost"
        # Owned slots lie in the owning row's group.
        flat = (self.addr >= 0).view(-1).nonzero().squeeze(1)
        rows = torch.div(flat, self.num_chunks, rounding_mode="floor")
        g = self.group_of_rows(rows)
        s = self.addr.view(-1)[flat].long()
        assert bool(((s >= self.group_start[g]) & (s < self.group_start[g] + self.group_cap[g])).all()), \
            "a chunk holds a slot outside its group's range"
        assert self._free_host == tops, "host mirror of free counts is stale"

    # ---- resume ----------------------------------------------------------------------------
    def get_extra_state(self) -> dict:
        return {"version": 1}

    def set_extra_state(self, state: dict) -> None:
        # Called after this module's buffers are loaded: refresh the host mirror.
        self._sync_free()
