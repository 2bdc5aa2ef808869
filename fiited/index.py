"""Indexes: virtual row -> entry, one interface, chosen per table.

An *entry* holds a row's K chunk addresses (``ChunkStore.addr``) and utilities. Two kinds:

- ``direct``: one entry per virtual row, in table order (entry = base of the table + id).
  Metadata scales with the vocabulary; no lookup cost, every id always has an entry.
- ``hashed``: entries only for live rows, in one open-addressing table (keys = global rows,
  -1 = empty; linear probing from a multiplicative hash), an entry budget per table
  (``live_cap``: in a shared pool no table takes the others' entries). Metadata scales with
  the budget. Only ``rebuild`` deletes (re-inserting the survivors): probe chains never break.
  Admission to a full table is frequency-gated: a per-table count-min sketch (2 rows, in the
  ledger; counted natively) counts every training access, and an absent id gets an entry only
  when its estimate beats the weakest live entry's of its table (``bar``, set at each event,
  when the sketch is halved), not first come first served.
- ``auto`` (a config choice): ``direct`` for a table of at most ``auto_rows`` rows
  (``AUTO_DIRECT_MAX_ROWS`` by default) whose direct entries cost no more bytes than its hashed
  ones would at this budget (``fiited.budget.StoreGeometry.kinds``: tables of a few rows, and
  mid-size tables at budgets above ~0.27 at K=4); ``hashed`` otherwise.

``TableIndex`` puts the direct tables' entries first ([0, D)) and the hash table after
([D, D + H)); the store sees only it. Everything is vectorised over the rows or entries
given; loops run over probe distances or sketch rows, never over ids.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from fiited.kernels.cpu import hash_find, sketch_count
from fiited.keyed import keyed_hash
from fiited.memory import tensor_bytes
from fiited.slots import ranks_within_groups

INDEXES = ("direct", "hashed", "auto")
AUTO_DIRECT_MAX_ROWS = 1 << 20     # index=auto: tables above this many rows are hashed
HASH_MULT = 2654435761             # Knuth's multiplicative constant; rows < 2**32 keep products < 2**63
SKETCH_ROWS = 2


def table_kinds(table_rows: Sequence[int], index: str, auto_rows: int = AUTO_DIRECT_MAX_ROWS,
                cheaper_direct: Sequence[bool] | None = None) -> list[str]:
    """``direct`` / ``hashed`` per table for ``method.index``; ``auto``: direct up to
    ``auto_rows`` rows where ``cheaper_direct`` (per table; default: everywhere) says so."""
    if index not in INDEXES:
        raise ValueError(f"method.index={index!r} is not one of {INDEXES}")
    if index != "auto":
        return [index] * len(table_rows)
    cheap = cheaper_direct if cheaper_direct is not None else [True] * len(table_rows)
    return ["direct" if int(n) <= auto_rows and c else "hashed"
            for n, c in zip(table_rows, cheap)]


def _segments(ends: torch.Tensor, sizes: torch.Tensor, a: int, b: int) -> torch.Tensor:
    """Which segment each position of [a, b) lies in (segments of ``sizes`` ending at ``ends``)."""
    lo = (ends - sizes).clamp(a, b)
    seg = ends.clamp(a, b) - lo
    return torch.repeat_interleave(torch.arange(seg.numel(), device=ends.device), seg)


class DirectIndex(nn.Module):
    """One entry per row of its tables; entry = base[t] + id, tables in order."""

    def __init__(self, table_rows: torch.Tensor, is_direct: torch.Tensor) -> None:
        super().__init__()
        rows = torch.where(is_direct, table_rows, torch.zeros_like(table_rows))
        self.register_buffer("base", torch.cumsum(rows, 0) - rows, persistent=False)
        self.register_buffer("sizes", rows, persistent=False)
        self.num_entries = int(rows.sum())

    def entries_of(self, ids: torch.Tensor, tables: torch.Tensor) -> torch.Tensor:
        return self.base.index_select(0, tables) + ids

    def range(self, a: int, b: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(tables, ids) of entries [a, b)."""
        tables = _segments(self.base + self.sizes, self.sizes, a, b)
        ids = torch.arange(a, b, device=tables.device) - self.base.index_select(0, tables)
        return tables, ids

    def tables_of(self, entries: torch.Tensor) -> torch.Tensor:
        return torch.searchsorted(self.base + self.sizes, entries, right=True)


class HashedIndex(nn.Module):
    """Open addressing over global rows with per-table entry budgets and gated admission."""

    def __init__(self, num_slots: int, live_cap: torch.Tensor, total_rows: int,
                 sketch_per_entry: float = 1.0) -> None:
        super().__init__()
        if total_rows >= 2 ** 32:
            raise ValueError("index=hashed supports up to 2**32 virtual rows")
        self.max_live = int(live_cap.sum())
        if not 0 < self.max_live <= num_slots:
            raise ValueError(f"hashed index needs 0 < live entries ({self.max_live}) <= "
                             f"slots ({num_slots})")
        key_dtype = torch.int32 if total_rows < 2 ** 31 else torch.int64
        self.register_buffer("keys", torch.full((int(num_slots),), -1, dtype=key_dtype))
        self.register_buffer("live_cap", live_cap.clone(), persistent=False)
        self.register_buffer("live_per_table", torch.zeros_like(live_cap), persistent=False)
        width = torch.where(live_cap > 0, torch.ceil(live_cap.double() * sketch_per_entry).long()
                            .clamp_min(16), torch.zeros_like(live_cap))
        if sketch_per_entry <= 0:
            width.zero_()
        self.register_buffer("sketch_width", width, persistent=False)
        self.register_buffer("sketch_base", torch.cumsum(width, 0) - width, persistent=False)
        self.register_buffer("sketch", torch.zeros(SKETCH_ROWS, int(width.sum())))
        self.register_buffer("bar", torch.zeros(live_cap.numel()))
        self.live = 0
        self.max_probe = 0

    @property
    def num_entries(self) -> int:
        return self.keys.numel()

    # ---- probing ----------------------------------------------------------------------------
    def home(self, rows: torch.Tensor) -> torch.Tensor:
        return (rows * HASH_MULT) % self.num_entries

    def find(self, rows: torch.Tensor) -> torch.Tensor:
        """Slot of each row, -1 where it has none (native probe when available)."""
        found = hash_find(self.keys, rows, HASH_MULT, self.max_probe)
        if found is not None:
            return found
        found = torch.full_like(rows, -1)
        home = self.home(rows)
        pending = torch.arange(rows.numel(), device=rows.device)
        for step in range(self.max_probe + 1):
            if pending.numel() == 0:
                break
            slot = (home[pending] + step) % self.num_entries
            key = self.keys[slot].long()
            hit = key == rows[pending]
            found[pending[hit]] = slot[hit]
            pending = pending[~hit & (key >= 0)]
        return found

    def insert(self, rows: torch.Tensor, tables: torch.Tensor) -> torch.Tensor:
        """Put absent unique rows in empty slots (the smallest row wins a contested slot, so
        the layout is deterministic). Returns their slots."""
        entries = torch.full_like(rows, -1)
        home = self.home(rows)
        probe = torch.zeros_like(rows)
        pending = torch.arange(rows.numel(), device=rows.device)
        while pending.numel():
            slot = (home[pending] + probe[pending]) % self.num_entries
            empty = self.keys[slot] < 0
            cand, cslot = pending[empty], slot[empty]
            uniq, inv = torch.unique(cslot, return_inverse=True)
            best = torch.full((uniq.numel(),), torch.iinfo(torch.int64).max, device=rows.device)
            best.scatter_reduce_(0, inv, rows[cand], "amin")
            won = rows[cand] == best[inv]
            winners, wslot = cand[won], cslot[won]
            self.keys[wslot] = rows[winners].to(self.keys.dtype)
            entries[winners] = wslot
            if winners.numel():
                self.max_probe = max(self.max_probe, int(probe[winners].max()))
            done = torch.zeros(rows.numel(), dtype=torch.bool, device=rows.device)
            done[winners] = True
            pending = pending[~done[pending]]
            probe[pending] += 1
        self.live += rows.numel()
        if rows.numel():
            self.live_per_table += torch.bincount(tables, minlength=self.live_cap.numel())
        return entries

    # ---- admission ----------------------------------------------------------------------------
    def _cells(self, tables: torch.Tensor, ids: torch.Tensor,
               tkeys: torch.Tensor) -> list[torch.Tensor]:
        """Sketch cells of (table, id) (tables without entries: cell 0, never counted);
        ``tkeys`` the tables' draw keys."""
        width = self.sketch_width.index_select(0, tables)
        base = torch.where(width > 0, self.sketch_base.index_select(0, tables),
                           torch.zeros_like(width))
        width = width.clamp_min(1)
        return [base + keyed_hash(d + 1, tkeys, ids) % width for d in range(SKETCH_ROWS)]

    def count(self, tables: torch.Tensor, ids: torch.Tensor, tkeys: torch.Tensor) -> None:
        """One access of each (table, id) (occurrences, repeats included)."""
        if self.sketch.shape[1] == 0 or ids.numel() == 0:
            return
        ones = (self.sketch_width.index_select(0, tables) > 0).to(self.sketch.dtype)
        for d, cell in enumerate(self._cells(tables, ids, tkeys)):
            self.sketch[d].index_put_((cell,), ones, accumulate=True)

    def estimate(self, tables: torch.Tensor, ids: torch.Tensor,
                 tkeys: torch.Tensor) -> torch.Tensor:
        """Count-min estimate of each (table, id)'s recent accesses (never an undercount)."""
        if self.sketch.shape[1] == 0:
            return torch.zeros(ids.numel(), device=ids.device)
        cells = self._cells(tables, ids, tkeys)
        est = self.sketch[0].index_select(0, cells[0])
        for d in range(1, SKETCH_ROWS):
            est = torch.minimum(est, self.sketch[d].index_select(0, cells[d]))
        return est * (self.sketch_width.index_select(0, tables) > 0)

    def admit(self, rows: torch.Tensor, tables: torch.Tensor, ids: torch.Tensor,
              counts: torch.Tensor, tkeys: torch.Tensor) -> torch.Tensor:
        """Which absent unique rows get an entry now: those whose estimated count beats their
        table's bar, the most frequent first, while the table has room."""
        room = (self.live_cap - self.live_per_table).clamp_min(0)
        est = self.estimate(tables, ids, tkeys)
        keys = keyed_hash(0, tkeys, ids)
        ok = room.index_select(0, tables) > 0
        if self.sketch.shape[1]:                           # no sketch: first come first served
            ok &= est > self.bar.index_select(0, tables)
        cand = ok.nonzero().squeeze(1)
        if cand.numel() == 0:
            return cand
        prio = est[cand] * (counts.max() + 1).to(est.dtype) + counts[cand].to(est.dtype)
        order = torch.sort(keys[cand], stable=True).indices
        order = order[torch.sort(prio[order], descending=True, stable=True).indices]
        order = order[torch.sort(tables[cand][order], stable=True).indices]
        t = tables[cand][order]
        rank, _ = ranks_within_groups(t, room.numel())
        return cand[order[rank < room.index_select(0, t)]]

    def weakest(self, bar: torch.Tensor, tables: torch.Tensor, ids: torch.Tensor,
                tkeys: torch.Tensor) -> None:
        """Fold live entries (a block of them) into ``bar``: per table the least estimate."""
        if ids.numel():
            bar.scatter_reduce_(0, tables, self.estimate(tables, ids, tkeys), "amin")

    def age(self, bar: torch.Tensor) -> None:
        """At an event, after ``weakest`` saw every surviving live entry: the bar a new id
        must beat is the weakest entry's estimate in a full table (0 where a table has room
        to spare); then the sketch and the bar are halved, so old popularity fades."""
        full = self.live_per_table >= self.live_cap
        bar = torch.where(torch.isinf(bar) | ~full, torch.zeros_like(bar), bar)
        self.bar.copy_(bar * 0.5)
        self.sketch.mul_(0.5)

    # ---- rebuild ------------------------------------------------------------------------------
    def recount(self, tables_of_rows, block: int = 1 << 16) -> None:
        """Live entries per table and the longest probe distance, from the keys (after a
        load), ``block`` slots at a time."""
        live = torch.zeros_like(self.live_per_table)
        probe = 0
        for a in range(0, self.num_entries, block):
            rows = self.keys[a:a + block].long()
            slots = (rows >= 0).nonzero().squeeze(1)
            rows = rows[slots]
            live += torch.bincount(tables_of_rows(rows), minlength=live.numel())
            if slots.numel():
                probe = max(probe, int(((slots + a - self.home(rows)) % self.num_entries).max()))
        self.live_per_table.copy_(live)
        self.live = int(live.sum())
        self.max_probe = probe

    def rebuild(self, keep: torch.Tensor, tables_of_rows,
                block: int = 1 << 16) -> tuple[torch.Tensor, torch.Tensor]:
        """Keep the slots where ``keep`` and re-insert them into a fresh table, ``block``
        rows at a time (bounded temporaries). Returns (old slots, their new slots)."""
        narrow = torch.int32 if self.num_entries < 2 ** 31 else torch.int64
        old = torch.cat([(keep[a:a + block] & (self.keys[a:a + block] >= 0)).nonzero()
                         .squeeze(1).add_(a).to(narrow) for a in range(0, self.num_entries, block)])
        rows = self.keys.index_select(0, old)              # int32 indices: no int64 copy
        self.keys.fill_(-1)
        self.max_probe = 0
        self.live = 0
        self.live_per_table.zero_()
        new = torch.empty_like(old)
        for a in range(0, rows.numel(), block):
            part = rows[a:a + block].long()
            new[a:a + block] = self.insert(part, tables_of_rows(part)).to(narrow)
        return old, new                                     # int32 where it fits


class TableIndex(nn.Module):
    """The store's index: direct tables' entries, then the hash table's slots."""

    def __init__(self, table_rows: torch.Tensor, kinds: Sequence[str], num_slots: int = 0,
                 live_cap: Sequence[int] | None = None, sketch_per_entry: float = 1.0,
                 table_keys: Sequence[int] | None = None) -> None:
        super().__init__()
        keys = table_keys if table_keys is not None else range(table_rows.numel())
        # Per table, the key of its draws and hashes (fiited.keyed.table_key of its name).
        self.register_buffer("table_key", torch.tensor([int(k) for k in keys],
                                                       dtype=torch.int64), persistent=False)
        bad = [k for k in kinds if k not in ("direct", "hashed")]
        if bad or len(kinds) != table_rows.numel():
            raise ValueError(f"one of 'direct'/'hashed' per table, got {list(kinds)}")
        self.kinds = list(kinds)
        is_direct = torch.tensor([k == "direct" for k in kinds])
        self.register_buffer("is_direct", is_direct, persistent=False)
        self.register_buffer("table_ends", torch.cumsum(table_rows, 0), persistent=False)
        self.register_buffer("table_starts", self.table_ends - table_rows, persistent=False)
        self.direct = DirectIndex(table_rows, is_direct)
        self.D = self.direct.num_entries
        self.identity = bool(is_direct.all())          # entry = row
        if self.identity:
            self.hashed = None
        else:
            cap = torch.tensor([int(c) for c in live_cap], dtype=torch.int64)
            cap = torch.where(is_direct, torch.zeros_like(cap), cap)
            self.hashed = HashedIndex(num_slots, cap, int(table_rows.sum()), sketch_per_entry)
        self.all_hashed = not bool(is_direct.any())

    # ---- geometry -------------------------------------------------------------------------
    @property
    def num_entries(self) -> int:
        return self.D + (self.hashed.num_entries if self.hashed is not None else 0)

    def table_of_rows(self, rows: torch.Tensor) -> torch.Tensor:
        return torch.searchsorted(self.table_ends, rows, right=True)

    def bytes(self) -> int:
        h = self.hashed
        return tensor_bytes(self.is_direct, self.table_ends, self.table_starts, self.table_key,
                            self.direct.base,
                            self.direct.sizes, *((h.keys, h.live_cap, h.live_per_table,
                                                  h.sketch_width, h.sketch_base, h.sketch, h.bar)
                                                 if h is not None else ()))

    @staticmethod
    def fixed_bytes(num_tables: int, any_hashed: bool) -> int:
        """Bytes that do not scale with entries: geometry, sketch offsets and the bar."""
        return 8 * 5 * num_tables + num_tables + (4 * 8 + 4) * num_tables * any_hashed

    # ---- rows <-> entries ---------------------------------------------------------------------
    def entries_of(self, rows: torch.Tensor, insert: bool) -> torch.Tensor:
        """Entry of each row [N] (-1: none). ``insert`` (training): count hashed tables'
        accesses and admit rows without an entry as ``HashedIndex.admit`` says."""
        if self.identity:
            return rows
        h = self.hashed
        if self.all_hashed:
            tables = self.table_of_rows(rows) if insert else None
            return self._hashed(rows, tables, insert)
        tables = self.table_of_rows(rows)
        direct = self.is_direct.index_select(0, tables)
        out = torch.full_like(rows, -1)
        d = direct.nonzero().squeeze(1)
        out[d] = self.direct.entries_of(rows[d] - self.table_starts.index_select(0, tables[d]),
                                        tables[d])
        hsel = (~direct).nonzero().squeeze(1)
        if hsel.numel() and h is not None:
            found = self._hashed(rows[hsel], tables[hsel], insert)
            out[hsel] = torch.where(found >= 0, found + self.D, found)
        return out

    def _hashed(self, rows: torch.Tensor, tables: torch.Tensor | None,
                insert: bool) -> torch.Tensor:
        h = self.hashed
        found = h.find(rows)
        if not insert:
            return found
        if not sketch_count(h.sketch, rows, tables, self.table_starts, h.sketch_width,
                            h.sketch_base, self.table_key):    # one native pass, else torch
            h.count(tables, rows - self.table_starts[tables], self.table_key[tables])
        absent = found < 0
        if h.live >= h.max_live or not bool(absent.any()):
            return found
        where = absent.nonzero().squeeze(1)
        uniq, counts = torch.unique(rows[where], return_counts=True)
        ut = self.table_of_rows(uniq)
        uid = uniq - self.table_starts.index_select(0, ut)
        pick = h.admit(uniq, ut, uid, counts, self.table_key.index_select(0, ut))
        if pick.numel() == 0:
            return found
        h.insert(uniq[pick], ut[pick])
        found[where] = h.find(rows[where])
        return found

    def rows_of(self, entries: torch.Tensor) -> torch.Tensor:
        """Virtual row of each entry (-1 for an empty hashed slot)."""
        if self.identity:
            return entries
        if self.all_hashed:
            return self.hashed.keys.index_select(0, entries).long()
        out = torch.empty_like(entries)
        d = entries < self.D
        de = entries[d]
        t = self.direct.tables_of(de)
        out[d] = self.table_starts.index_select(0, t) + de - self.direct.base.index_select(0, t)
        out[~d] = self.hashed.keys.index_select(0, entries[~d] - self.D).long()
        return out

    def range(self, a: int, b: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(rows, tables) of entries [a, b); -1 both for empty hashed slots."""
        parts_r, parts_t = [], []
        if a < self.D:
            tables, ids = self.direct.range(a, min(b, self.D))
            parts_r.append(self.table_starts.index_select(0, tables) + ids)
            parts_t.append(tables)
        if b > self.D:
            rows = self.hashed.keys[max(a, self.D) - self.D:b - self.D].long()
            tables = self.table_of_rows(rows)
            parts_r.append(rows)
            parts_t.append(torch.where(rows >= 0, tables, torch.full_like(tables, -1)))
        if len(parts_r) == 1:
            return parts_r[0], parts_t[0]
        return torch.cat(parts_r), torch.cat(parts_t)

    def live_counts(self, table_rows: torch.Tensor) -> torch.Tensor:
        """[F] live entries per table (direct tables: all their rows)."""
        out = torch.where(self.is_direct, table_rows, torch.zeros_like(table_rows))
        if self.hashed is not None:
            out = out + self.hashed.live_per_table
        return out

