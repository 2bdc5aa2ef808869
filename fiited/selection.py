"""Block-wise pieces of a pruning event: per-block margins and exact top-k selection.

An event never builds an array with one element per entry (let alone per virtual row): it
walks the entries in blocks (``event_blocks``) and recomputes what it needs per block
(``Margins.block``). Exact rank selections (which wanted chunks a full group rejects, which
remaining chunks the top-up takes, which entries a hashed index drops) keep only the current
best candidates (``TopK``): memory O(k + block), work linear in the candidates.

Rank order everywhere: priority (margin) descending, then a hash of (table, id) and the chunk
position ascending, so ties are broken the same way under any sharding of the tables.
"""
from __future__ import annotations

import torch

from fiited.keyed import keyed_hash
from fiited.store import EVENT_BLOCK, ChunkStore, blocks


def event_blocks(store: ChunkStore):
    """The entry blocks of an event's passes: 1/128 of the entries (4096 to EVENT_BLOCK), so
    a block's temporaries (~150 bytes an entry) stay near 1% of the state it walks."""
    return blocks(store.num_entries, min(EVENT_BLOCK, max(4096, store.num_entries // 128)))


def allocate_blocks(store: ChunkStore, flat: torch.Tensor, init: str, seed: int) -> int:
    """``store.allocate`` a block of chunks at a time (its temporaries are ~50 bytes a
    chunk); every chunk here has a slot waiting, so the split changes nothing. Returns the
    count granted."""
    return sum(int(store.allocate(flat[a:b], init, seed).sum())
               for a, b in blocks(flat.numel()))


class Block:
    """Margins and masks of the entries [a, b) ([n, K] tensors; ``g`` [n], G = empty)."""

    def __init__(self, a: int, num_chunks: int, num_groups: int, present: torch.Tensor,
                 keep: torch.Tensor, positive: torch.Tensor, margin: torch.Tensor,
                 score: torch.Tensor, g: torch.Tensor, live: torch.Tensor,
                 tables: torch.Tensor, rows: torch.Tensor) -> None:
        self.a, self.K, self.G = a, num_chunks, num_groups
        self.tables, self.rows = tables, rows
        self.present, self.keep, self.positive = present, keep, positive
        self.margin, self.score, self.g, self.live = margin, score, g, live

    def count(self, mask: torch.Tensor) -> torch.Tensor:
        """Chunks in ``mask`` per group, [G] int64 on the CPU."""
        gk = self.g.unsqueeze(1).expand_as(mask)[mask]
        return torch.bincount(gk, minlength=self.G + 1)[:self.G].cpu()

    def flat(self, mask: torch.Tensor) -> torch.Tensor:
        """Flat chunk ids (entry*K + k) of ``mask``."""
        return mask.reshape(-1).nonzero().squeeze(1) + self.a * self.K

    def member(self, sorted_flat: torch.Tensor) -> torch.Tensor:
        """[n, K] mask of the chunks of this block that are in ``sorted_flat``."""
        n = self.present.shape[0]
        out = torch.zeros(n * self.K, dtype=torch.bool, device=self.present.device)
        if sorted_flat.numel():
            bounds = torch.tensor([self.a * self.K, (self.a + n) * self.K],
                                  device=sorted_flat.device)
            lo, hi = torch.searchsorted(sorted_flat, bounds).tolist()
            out[sorted_flat[lo:hi] - self.a * self.K] = True
        return out.view(n, self.K)


class Margins:
    """score = u / scale[table], margin = score - tau[group] (prefix: running minimum)."""

    def __init__(self, store: ChunkStore, util: torch.Tensor, scales: torch.Tensor,
                 taus: torch.Tensor, prefix: bool) -> None:
        device = store.addr.device
        self.store, self.util, self.prefix = store, util, prefix
        self.scales = scales.to(device=device, dtype=util.dtype)          # [F + 1]
        self.taus = taus.to(device=device, dtype=util.dtype)              # [G + 1, K]
        G = store.num_groups
        self.gmap = torch.cat([store.table_group, torch.tensor([G], device=device)])

    def block(self, a: int, b: int) -> Block:
        s = self.store
        F = s.table_rows.numel()
        rows, tables = s.entry_range(a, b)
        live = tables >= 0
        tables = torch.where(live, tables, torch.full_like(tables, F))
        score = self.util[a:b] / self.scales.index_select(0, tables).unsqueeze(1)
        g = self.gmap.index_select(0, tables)
        if s.num_groups == 1:                   # one row of thresholds: broadcast it
            margin = (score - self.taus[0]).masked_fill_(~live.unsqueeze(1), -torch.inf)
        else:
            margin = score - self.taus.index_select(0, g)
        if self.prefix:
            margin = torch.cummin(margin, dim=1).values
            positive = torch.cummin(score, dim=1).values > 0
        else:
            positive = score > 0
        positive &= live.unsqueeze(1)
        return Block(a, s.num_chunks, s.num_groups, s.addr[a:b] >= 0, margin > 0, positive,
                     margin, score, g, live, tables, rows)


class TopK:
    """The exact best ``k[g]`` candidates of each group g over a stream of blocks.

    ``largest``: best = highest margin, ties to the smallest (table, id) hash and position;
    otherwise the exact complement order (the ones the top order ranks last). ``per_entry``:
    candidates are the live entries of ``mask`` [n] ranked by their best chunk score, k per
    table.
    """

    def __init__(self, store: ChunkStore, k: list[int], largest: bool = True,
                 per_entry: bool = False) -> None:
        self.store = store
        self.k = [int(x) for x in k]
        self.largest, self.per_entry = largest, per_entry
        self.total = sum(self.k)
        self.limit = self.total + max(self.total // 4, EVENT_BLOCK // 16)
        self.parts: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        self.size = 0
        # Per group, the k-th best priority so far (-inf until k were seen): a candidate below
        # it can never be selected, so blocks drop those before they are kept.
        self.cut = torch.full((len(self.k),), -torch.inf, device=store.addr.device)

    def add(self, block: Block, mask: torch.Tensor | None) -> None:
        if self.total == 0:
            return
        if self.per_entry:
            live = (block.live & mask).nonzero().squeeze(1)
            flat = live + block.a
            prio = block.score[live].max(dim=1).values
            g = block.tables[live]
        else:
            flat = block.flat(mask)
            prio = block.margin[mask]
            g = block.g.unsqueeze(1).expand_as(mask)[mask]
        if flat.numel() == 0:
            return
        prio = prio if self.largest else -prio
        ok = prio >= self.cut.index_select(0, g)
        if not bool(ok.all()):
            flat, prio, g = flat[ok], prio[ok], g[ok]
        self.parts.append((flat, prio, g))
        self.size += flat.numel()
        if self.size > self.limit:
            self._compress()

    def _keys(self, flat: torch.Tensor) -> torch.Tensor:
        s = self.store
        if self.per_entry:
            return s.row_keys(s.rows_of_entries(flat))
        tables, ids, k = s.chunk_keys(flat)
        return keyed_hash(0, s.tkey(tables), ids) * s.num_chunks + k

    def _compress(self) -> None:
        if not self.parts:
            return
        flat = torch.cat([p[0] for p in self.parts])
        prio = torch.cat([p[1] for p in self.parts])
        g = torch.cat([p[2] for p in self.parts])
        keep = torch.zeros_like(flat, dtype=torch.bool)
        for gi, kk in enumerate(self.k):
            if kk <= 0:
                continue
            sel = (g == gi).nonzero().squeeze(1)
            if sel.numel() <= kk:
                keep[sel] = True
                continue
            p = prio[sel]
            v = torch.kthvalue(p.cpu(), sel.numel() - kk + 1).values.to(p.device)
            self.cut[gi] = v
            above = p > v
            keep[sel[above]] = True
            need = kk - int(above.sum())
            tied = sel[p == v]
            order = torch.sort(self._keys(flat[tied]), descending=not self.largest,
                               stable=True).indices
            keep[tied[order[:need]]] = True
        self.parts = [(flat[keep], prio[keep], g[keep])]
        self.size = self.parts[0][0].numel()

    def result(self) -> torch.Tensor:
        """The selected flat ids (entries with ``per_entry``), ascending."""
        if self.total == 0 or not self.parts:
            return torch.zeros(0, dtype=torch.int64, device=self.store.addr.device)
        self._compress()
        return torch.sort(self.parts[0][0]).values
