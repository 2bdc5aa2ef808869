"""The VHPI chunk store: virtually hashed entries, physically indexed chunk pool.

An *entry* holds K chunk addresses ``addr[e, k]`` (int32 pool slot, -1 = absent: reads as
zeros); utilities live beside it (``fiited.utility``, same entry index). Which entry a virtual
row (table-batched, ``r = table offset + id``) has is the index's business
(``fiited.index.TableIndex``: ``direct`` or ``hashed``, chosen per table); rows without an
entry read zeros and earn no utility until they get one.

The pool ``[capacity, C]`` and its optimizer state are allocated once, at the budget: one
float per slot, or per *entry* (``accumulator: row`` at K>1; reset when the entry regains a
chunk after holding none, moved with it when the hash table is rebuilt). Slots are handed
out by a LIFO free stack per *group* (one group per table for ``pool: per_table``, one for
``pool: shared``; ``fiited.slots``): group g owns the slot range
``[group_start[g], group_start[g] + group_cap[g])`` and its stack lives in the same range of
``free_stack``, with ``free_top[g]`` free slots on it. One slot is one chunk: no fragmentation.

Everything is vectorised over the entries or chunks touched; loops run over groups, tables,
blocks of entries or probe distances, never over ids.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from fiited.budget import split_entries
from fiited.index import TableIndex, table_kinds
from fiited.keyed import keyed_hash, keyed_init, table_key
from fiited.memory import tensor_bytes
from fiited.optim import SparseOptimConfig
from fiited.slots import initial_stack, pop, push
from fiited.utility import move_rows

INITS = ("zero", "random")
EVENT_BLOCK = 1 << 16       # entries per block of an event / report pass (bounded temporaries)


def busiest_first(keys: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """Order by occurrence count (descending), ties by ``keys`` (a hash of (table, id)) rather
    than by id: ids are grouped by table, so 'smallest first' would hand everything to the
    first tables whenever demand exceeds supply, and global rows differ between shardings."""
    scrambled = torch.sort(keys, stable=True).indices
    by_count = torch.sort(counts[scrambled], descending=True, stable=True).indices
    return scrambled[by_count]


def blocks(n: int, size: int = 0):
    """[a, b) ranges covering 0..n in blocks of ``size`` (EVENT_BLOCK by default)."""
    size = size or EVENT_BLOCK
    for a in range(0, n, size):
        yield a, min(n, a + size)


def gather_rows(table: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """table[index] for a small-row integer table, read through the widest integer view that
    fits the row (a [R, 4] int32 table as [R, 2] int64): index_select is per element."""
    width = table.shape[1] * table.element_size()
    if table.is_contiguous() and width % 8 == 0 and table.element_size() < 8:
        return table.view(torch.int64).index_select(0, index).view(table.dtype)
    return table.index_select(0, index)


class ChunkStore(nn.Module):
    """Entries + chunk pool + optimizer state + free stacks, all as buffers (resumable)."""

    def __init__(self, table_rows: Sequence[int], num_chunks: int, chunk_width: int,
                 group_caps: Sequence[int], table_group: Sequence[int],
                 optim: SparseOptimConfig, index: str | Sequence[str] = "direct",
                 num_entries: int = 0, max_live: int = 0,
                 live_cap: Sequence[int] | None = None, sketch_per_entry: float = 1.0,
                 table_names: Sequence[str] | None = None) -> None:
        """``index``: one kind for all tables, or one per table. Hashed tables share
        ``num_entries`` slots; their entry budgets are ``live_cap`` (per table) or
        ``max_live`` split over them in proportion to their rows."""
        super().__init__()
        if len(table_group) != len(table_rows):
            raise ValueError("table_group needs one group id per table")
        kinds = table_kinds(table_rows, index) if isinstance(index, str) else list(index)
        self.num_chunks = int(num_chunks)
        self.chunk_width = int(chunk_width)
        self.num_groups = len(group_caps)
        self.optim = optim
        self.row_state = optim.per_logical_row(self.num_chunks)   # state per entry, not slot
        rows = torch.tensor([int(n) for n in table_rows], dtype=torch.int64)
        caps = torch.tensor([int(c) for c in group_caps], dtype=torch.int64)
        if bool((caps < 0).any()):
            raise ValueError(f"group capacities must be >= 0, got {caps.tolist()}")
        capacity = int(caps.sum())
        starts = torch.cumsum(caps, 0) - caps
        if live_cap is None and "hashed" in kinds:
            live_cap = split_entries([n if k == "hashed" else 0 for n, k in
                                      zip(rows.tolist(), kinds)], int(max_live))
        names = list(table_names) if table_names is not None else [str(t) for t in
                                                                    range(rows.numel())]
        self.index = TableIndex(rows, kinds, int(num_entries), live_cap, sketch_per_entry,
                                [table_key(n) for n in names])
        entries = self.index.num_entries
        # Entry table and chunk pool.
        self.register_buffer("addr", torch.full((entries, self.num_chunks), -1, dtype=torch.int32))
        self.register_buffer("pool", torch.zeros(capacity, self.chunk_width))
        states = entries if self.row_state else capacity * optim.state_floats_per_row
        self.register_buffer("opt_state", torch.full((states,),
                                                     float(optim.initial_accumulator)))
        self.register_buffer("free_stack", initial_stack(caps, starts))
        self.register_buffer("free_top", caps.clone())
        # Small geometry (non-persistent: derived from the config).
        self.register_buffer("group_start", starts, persistent=False)
        self.register_buffer("group_cap", caps, persistent=False)
        self.register_buffer("table_rows", rows, persistent=False)
        self.register_buffer("table_ends", torch.cumsum(rows, 0), persistent=False)
        self.register_buffer("table_starts", self.table_ends - rows, persistent=False)
        self.register_buffer("table_group", torch.tensor([int(g) for g in table_group],
                                                         dtype=torch.int64), persistent=False)
        self._free_host = caps.tolist()
        # Kept chunks per (table, position), maintained by allocate/evict (derived state,
        # rebuilt on load), so reports never scan the entries.
        self.register_buffer("kept", torch.zeros(rows.numel(), self.num_chunks,
                                                 dtype=torch.int64), persistent=False)
        # After a load (this module and its index): refresh what derives from the buffers.
        self.register_load_state_dict_post_hook(lambda module, _: module._after_load())

    # ---- geometry --------------------------------------------------------------------------
    @property
    def capacity(self) -> int:
        return self.pool.shape[0]

    @property
    def num_entries(self) -> int:
        return self.addr.shape[0]

    @property
    def total_rows(self) -> int:
        return int(self.table_ends[-1])

    def free_counts(self) -> list[int]:
        """Free slots per group, from a host mirror (no device sync on the hot path)."""
        return list(self._free_host)

    def has_free(self) -> bool:
        return any(self._free_host)

    def _sync_free(self) -> None:
        self._free_host = self.free_top.tolist()

    # The index, as the rest of the store and the events see it.
    @property
    def keys(self) -> torch.Tensor | None:
        """The hash table's keys (entries D.. of the hashed tables), None if none is hashed."""
        return self.index.hashed.keys if self.index.hashed is not None else None

    @property
    def every_row_has_entry(self) -> bool:
        return self.index.hashed is None

    @property
    def live(self) -> int:
        h = self.index.hashed
        return self.index.D + (h.live if h is not None else 0)

    @property
    def max_live(self) -> int:
        h = self.index.hashed
        return self.index.D + (h.max_live if h is not None else 0)

    @property
    def max_probe(self) -> int:
        return self.index.hashed.max_probe if self.index.hashed is not None else 0

    @property
    def live_per_table(self) -> torch.Tensor:
        return self.index.live_counts(self.table_rows)

    def table_of_rows(self, rows: torch.Tensor) -> torch.Tensor:
        return self.index.table_of_rows(rows)

    def rows_of_entries(self, entries: torch.Tensor | None = None) -> torch.Tensor:
        """Virtual row of each entry (-1 for an empty hashed slot); all entries if None."""
        if entries is None:
            entries = torch.arange(self.num_entries, device=self.addr.device)
        return self.index.rows_of(entries)

    def entry_range(self, a: int, b: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(rows, tables) of the entries [a, b), -1 both for empty hashed slots."""
        return self.index.range(a, b)

    def table_of_entries(self, entries: torch.Tensor | None = None) -> torch.Tensor:
        """Table of each entry (-1 for an empty hashed slot)."""
        rows = self.rows_of_entries(entries)
        tables = self.table_of_rows(rows.clamp_min(0))
        return torch.where(rows >= 0, tables, torch.full_like(tables, -1))

    def group_of_entries(self, entries: torch.Tensor) -> torch.Tensor:
        if self.num_groups == 1:
            return torch.zeros_like(entries)
        return self.table_group[self.table_of_entries(entries)]

    def ids_of_rows(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(table, id within the table) of virtual rows (>= 0)."""
        tables = self.table_of_rows(rows)
        return tables, rows - self.table_starts[tables]

    def chunk_keys(self, flat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(table, id, position) of chunks ``flat`` = entry*K + k of live entries."""
        entries = torch.div(flat, self.num_chunks, rounding_mode="floor")
        tables, ids = self.ids_of_rows(self.rows_of_entries(entries))
        return tables, ids, flat - entries * self.num_chunks

    def row_keys(self, rows: torch.Tensor, seed: int = 0) -> torch.Tensor:
        """A hash of (table, id) of each row: tie-break order that sharding does not change."""
        tables, ids = self.ids_of_rows(rows)
        return keyed_hash(seed, self.tkey(tables), ids)

    def tkey(self, tables: torch.Tensor) -> torch.Tensor:
        """The draw keys of ``tables`` (from their names: the same under any sharding)."""
        return self.index.table_key.index_select(0, tables)

    @staticmethod
    def bytes_per_chunk(chunk_width: int, optim: SparseOptimConfig, num_chunks: int = 1) -> int:
        """Pool floats + optimizer state (unless per entry) + a free-stack entry, per slot."""
        per_slot = 0 if optim.per_logical_row(num_chunks) else optim.state_floats_per_row
        return 4 * chunk_width + 4 * per_slot + 4

    @staticmethod
    def state_bytes_per_entry(optim: SparseOptimConfig, num_chunks: int) -> int:
        """Optimizer state kept per entry: one float32 with ``accumulator: row`` at K>1."""
        return 4 if optim.per_logical_row(num_chunks) else 0

    def state_rows(self, entries: torch.Tensor) -> torch.Tensor | None:
        """The kernels' ``state_rows`` for lookups of ``entries`` (-1: none); None when the
        state is per slot."""
        return entries if self.row_state else None

    @staticmethod
    def bytes_per_entry(num_chunks: int, total_rows: int, index: str) -> int:
        """Addresses (+ the key of a hashed slot), per entry."""
        if index == "direct":
            return 4 * num_chunks
        return 4 * num_chunks + (4 if total_rows < 2 ** 31 else 8)

    @staticmethod
    def geometry_bytes(num_tables: int, num_groups: int, num_chunks: int) -> int:
        """Group and table geometry and the kept counters (the index's: TableIndex)."""
        return 8 * (3 * num_groups + 4 * num_tables + num_tables * num_chunks)

    def weights_bytes(self) -> int:
        return tensor_bytes(self.pool)

    def optimizer_bytes(self) -> int:
        return tensor_bytes(self.opt_state)

    def index_bytes(self) -> int:
        return self.index.bytes() + tensor_bytes(
            self.addr, self.free_stack, self.free_top, self.group_start, self.group_cap,
            self.table_rows, self.table_ends, self.table_starts, self.table_group, self.kept)

    # ---- entries ----------------------------------------------------------------------------
    def entries_of(self, rows: torch.Tensor, insert: bool) -> torch.Tensor:
        """Entry of each row [N] (-1: none). ``insert`` (training): hashed tables count the
        accesses and admit rows without an entry (``fiited.index``)."""
        return self.index.entries_of(rows, insert)

    def drop_entries(self, gone: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Hashed entries ``gone`` lose their entry (and chunks); the survivors are
        re-inserted into a fresh table and their addresses move with them. Returns (old
        entries, their new entries) so callers can move their own rows."""
        D = self.index.D
        for a, b in blocks(gone.numel()):                  # bounded temporaries
            part = gone[a:b]
            chunks = (self.addr[part] >= 0).nonzero()
            self.evict(part[chunks[:, 0]] * self.num_chunks + chunks[:, 1])
        keep = self.index.hashed.keys >= 0
        keep[gone - D] = False
        old, new = self.index.hashed.rebuild(keep, self.table_of_rows,   # blocks as events'
                                             min(EVENT_BLOCK, max(4096, self.num_entries // 128)))
        move_rows(self.addr[D:], old, new, -1)
        if self.row_state:  # the accumulators move with their entries
            move_rows(self.opt_state[D:].unsqueeze(1), old, new,
                      float(self.optim.initial_accumulator))
        return old.add_(D), new.add_(D)

    def _recount(self) -> None:
        """Counts derived from the entries (after loading a state), in bounded blocks: kept
        chunks per (table, position); the hash table's own counts (``HashedIndex.recount``)."""
        F, K = self.table_rows.numel(), self.num_chunks
        kept = torch.zeros(F * K, dtype=torch.int64, device=self.addr.device)
        pos = torch.arange(K, device=self.addr.device)
        for a, b in blocks(self.num_entries):
            _, tables = self.entry_range(a, b)
            cells = (self.addr[a:b] >= 0) & (tables >= 0).unsqueeze(1)
            kept += torch.bincount((tables.clamp_min(0).unsqueeze(1) * K + pos)[cells],
                                   minlength=F * K)
        self.kept.copy_(kept.view(F, K))
        if self.index.hashed is not None:
            self.index.hashed.recount(self.table_of_rows, EVENT_BLOCK)

    def _count_chunks(self, flat: torch.Tensor, sign: int) -> None:
        """kept[table, k] += sign for each chunk in ``flat`` (O(chunks changed))."""
        if flat.numel() == 0:
            return
        tables, _, k = self.chunk_keys(flat)
        F, K = self.kept.shape
        self.kept.view(-1).add_(torch.bincount(tables * K + k, minlength=F * K), alpha=sign)

    # ---- slot management (LIFO free stacks: fiited.slots) ----------------------------------
    def init_slots(self, slots: torch.Tensor, flat: torch.Tensor, init: str, seed: int) -> None:
        """Fresh values for chunks ``flat`` in ``slots`` (zeros, or DLRM's bound of the chunk's
        table, keyed by (seed, table, id, position)) and fresh optimizer state."""
        if slots.numel() == 0:
            return
        if init == "zero":
            self.pool[slots] = 0.0
        elif init == "random":
            tables, ids, k = self.chunk_keys(flat)
            self.pool[slots] = keyed_init(seed, self.tkey(tables), ids, k, self.chunk_width,
                                          self.table_rows[tables])
        else:
            raise ValueError(f"unknown chunk init {init!r}; expected one of {INITS}")
        if self.opt_state.numel() and not self.row_state:
            self.opt_state[slots] = float(self.optim.initial_accumulator)

    def allocate(self, flat: torch.Tensor, init: str, seed: int) -> torch.Tensor:
        """Give slots to absent chunks ``flat`` (= entry*K + k, priority order within each
        group) while their group has free slots. Returns the mask of chunks that got one.
        ``init: random`` values are keyed by (``seed``, table, id, position)."""
        flat = flat.long()
        if flat.numel() == 0:
            return torch.zeros(0, dtype=torch.bool, device=flat.device)
        entries = torch.div(flat, self.num_chunks, rounding_mode="floor")
        granted, slots = pop(self.free_stack, self.free_top, self.group_start,
                             self.group_of_entries(entries))
        got = flat[granted]
        if self.row_state:  # entries that had no chunk start a fresh accumulator
            owners = torch.div(got, self.num_chunks, rounding_mode="floor")
            fresh = owners[(self.addr.index_select(0, owners) < 0).all(1)]
            self.opt_state[fresh] = float(self.optim.initial_accumulator)
        self.addr.view(-1)[got] = slots.to(torch.int32)
        self.init_slots(slots, got, init, seed)
        self._count_chunks(got, +1)
        self._sync_free()
        return granted

    def evict(self, flat: torch.Tensor) -> None:
        """Drop present chunks ``flat``: their slots go back on their group's stack."""
        flat = flat.long()
        if flat.numel() == 0:
            return
        cells = self.addr.view(-1)
        slots = cells[flat].long()
        if bool((slots < 0).any()):
            raise RuntimeError("evict() was given an absent chunk")
        cells[flat] = -1
        entries = torch.div(flat, self.num_chunks, rounding_mode="floor")
        push(self.free_stack, self.free_top, self.group_start, self.group_cap, slots,
             self.group_of_entries(entries))
        self._count_chunks(flat, -1)
        self._sync_free()

    def fill_all(self, values: torch.Tensor) -> None:
        """Direct index, capacity == all chunks: slot r*K+k holds chunk k of row r."""
        n = self.total_rows * self.num_chunks
        if self.capacity != n or not self.index.identity:
            raise RuntimeError(f"fill_all needs a direct index and capacity {n}")
        self.addr.copy_(torch.arange(n, dtype=torch.int32).view_as(self.addr))
        self.pool.copy_(values.reshape(n, self.chunk_width))
        self.free_top.zero_()
        self.kept.copy_(self.table_rows.unsqueeze(1).expand_as(self.kept))
        self._sync_free()

    # ---- reports ---------------------------------------------------------------------------
    def present(self) -> torch.Tensor:
        return self.addr >= 0

    def kept_per_table(self) -> torch.Tensor:
        """[F, K] present chunks per table and position: a counter kept up to date by
        allocate/evict (O(F*K) to read; no pass over the entries)."""
        return self.kept.cpu().clone()

    def entries_per_table(self) -> torch.Tensor:
        """[F] live entries per table (direct: its rows), maintained like ``kept``."""
        return self.live_per_table.cpu().clone()

    def widths_per_table(self) -> torch.Tensor:
        """[F, K+1] rows per table by number of kept chunks (rows without an entry: 0); one
        pass over the entries in bounded blocks (reports only)."""
        F, K = self.table_rows.numel(), self.num_chunks
        out = torch.zeros(F * (K + 1), dtype=torch.int64, device=self.addr.device)
        for a, b in blocks(self.num_entries):
            _, tables = self.entry_range(a, b)
            live = tables >= 0
            chunks = (self.addr[a:b][live] >= 0).sum(1)
            out += torch.bincount(tables[live] * (K + 1) + chunks, minlength=F * (K + 1))
        out = out.view(F, K + 1).cpu()
        out[:, 0] += self.table_rows.cpu() - out.sum(1)
        return out

    def check_invariants(self) -> None:
        """Raise AssertionError unless the store is consistent (``fiited.invariants``)."""
        from fiited.invariants import check_store
        check_store(self)

    # ---- resume ----------------------------------------------------------------------------
    def get_extra_state(self) -> dict:
        return {"version": 3, "row_state": self.row_state}

    def set_extra_state(self, state: dict) -> None:
        if bool(state.get("row_state", False)) != self.row_state:
            want = "row" if state.get("row_state", False) else "chunk"
            raise ValueError(f"the checkpoint keeps row-wise Adagrad state per {want}: resume "
                             f"with train.sparse_optimizer.accumulator={want}")

    def _after_load(self) -> None:
        self._sync_free()
        self._recount()
