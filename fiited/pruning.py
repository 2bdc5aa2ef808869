"""Pruning events: sample utilities, pick thresholds, evict below, allocate above.

One event, vectorised over entries in bounded blocks (loops run over blocks, tables, groups or
chunk positions only; no temporary has one element per virtual row):

1. sample the live entries of every table (``random``: each with probability p_t, a draw
   keyed by (table, id); ``stride``: ids = step mod s, as ITEP does); a sampled entry stands
   for n_t / |S_t|;
2. score = utility, divided per table by a scale (``pool: shared`` with ``normalise``) so the
   shared budget flows to the tables that need it; ``layout: prefix`` scores chunk k by the
   minimum over chunks <= k, so a row keeps a prefix: a true per-row dimension;
3. thresholds per group: ``adaptive`` one tau with the estimated count above tau equal to the
   group's capacity; ``manual`` one tau_k per position at the given pruned fraction p_k;
4. margin = score - tau; evict present chunks with margin <= 0 (slots go back on the stack),
   then allocate absent chunks with margin > 0, highest first, while the stack has slots;
   then the exact top-up: slots still free go to the best remaining chunks with u > 0 by
   exact rank (present ones below tau are spared instead of evicted), so kept == capacity
   whenever that many chunks have u > 0, ties included (``fiited.selection``).
   Never more than capacity; a slot has one owner (see ``ChunkStore.check_invariants``);
5. hashed index: drop the least useful entries so that ``index_reserve`` of the entry
   capacity is free for rows not seen yet.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import List

import torch

from fiited.budget import split_entries
from fiited.keyed import keyed_uniform, seed32
from fiited.selection import Margins, TopK, allocate_blocks, event_blocks
from fiited.store import ChunkStore
from fiited.utility import ChunkUtility

THRESHOLDS = ("adaptive", "manual")
POOLS = ("per_table", "shared")
NORMALISERS = ("p95", "mean", "max", "none")
LAYOUTS = ("any", "prefix")
SAMPLERS = ("random", "stride")


@dataclass
class ScheduleConfig:
    """Events after the listed (front-loaded) step counts, and every ``interval`` steps.

    Steps count calls of ``on_step`` (steps completed), starting at 1.
    """

    warmup: List[int] = field(default_factory=lambda: [10, 30, 100, 300])
    interval: int = 1000

    def __post_init__(self) -> None:
        if self.interval < 1:
            raise ValueError(f"method.schedule.interval must be >= 1, got {self.interval}")
        bad = [s for s in self.warmup if int(s) < 1]
        if bad:
            raise ValueError(f"method.schedule.warmup steps must be >= 1, got {bad}")

    def is_event(self, step: int) -> bool:
        return step in self.warmup or step % self.interval == 0


@dataclass(frozen=True)
class PrunePolicy:
    """The event knobs (a view of the method config, so pruning stays method-agnostic)."""

    thresholds: str = "adaptive"
    manual_ratios: tuple[float, ...] = ()
    pool: str = "shared"
    normalise: str = "p95"
    layout: str = "any"
    regrow_init: str = "zero"
    sampling: str = "random"
    sample_frac: float = 0.05
    sample_stride: int = 23
    min_sample_rows: int = 64
    max_sample_rows: int = 16384
    index_reserve: float = 0.1


# ---- sampling -------------------------------------------------------------------------------
def sample_entries(store: ChunkStore, policy: PrunePolicy, seed: int, step: int
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Sample the live entries of every table, in bounded blocks over the entries.

    Returns (entries [S], weights [S] = n_t / S_t: how many entries each stands for, tables
    [S]). A table is sampled at fraction max(sample_frac, min_sample_rows / n_t), at most
    max_sample_rows / n_t (0: no cap; the exact top-up absorbs the estimate's error, so a
    bounded sample costs little accuracy and keeps the event's memory bounded); a table
    whose sample came out empty is taken whole. Whether (table, id) is picked depends only on them
    (``random``: a keyed draw with this event's ``seed``; ``stride``: id mod s = step mod s),
    so any sharding of the tables picks the same entries.
    """
    F = store.table_rows.numel()
    counts = store.live_per_table
    n = counts.double().clamp_min(1)
    frac = torch.clamp(torch.maximum(torch.full_like(n, policy.sample_frac),
                                     policy.min_sample_rows / n), max=1.0)
    stride = torch.full_like(counts, policy.sample_stride)
    if policy.min_sample_rows > 0:
        stride = torch.minimum(stride, torch.div(counts, policy.min_sample_rows,
                                                 rounding_mode="floor").clamp_min(1))
    if policy.max_sample_rows > 0:
        frac = torch.minimum(frac, policy.max_sample_rows / n)
        stride = torch.maximum(stride, torch.div(counts + policy.max_sample_rows - 1,
                                                 policy.max_sample_rows, rounding_mode="floor"))
    offset = step % stride

    def picks(whole: torch.Tensor | None):
        out_e, out_t = [], []
        for a, b in event_blocks(store):
            rows, tabs = store.entry_range(a, b)
            e = torch.arange(a, b, device=counts.device)
            if not store.every_row_has_entry:
                live = (tabs >= 0).nonzero().squeeze(1)
                e, rows, tabs = e[live], rows[live], tabs[live]
            ids = rows - store.table_starts.index_select(0, tabs)
            if whole is not None:
                pick = whole[tabs]
            elif policy.sampling == "random":
                pick = keyed_uniform(seed, store.tkey(tabs), ids) < frac[tabs]
            else:
                pick = ids % stride[tabs] == offset[tabs]
            out_e.append(e[pick])
            out_t.append(tabs[pick])
        return torch.cat(out_e), torch.cat(out_t)

    entries, tabs = picks(None)
    picked = torch.bincount(tabs, minlength=F)
    empty = (picked == 0) & (counts > 0)
    if bool(empty.any()):                                      # empty sample: take the table
        more_e, more_t = picks(empty)
        entries, tabs = torch.cat([entries, more_e]), torch.cat([tabs, more_t])
        picked = torch.bincount(tabs, minlength=F)
    weights = counts.double() / picked.double().clamp_min(1)
    return entries, weights[tabs], tabs


# ---- thresholds -----------------------------------------------------------------------------
def table_scale(values: torch.Tensor, normalise: str) -> float:
    """The per-table divisor of utilities in a shared pool, from its sampled utilities."""
    if normalise == "none":
        return 1.0
    pos = values[values > 0]
    if pos.numel() == 0:
        return 1.0
    if normalise == "mean":
        s = pos.mean()
    elif normalise == "max":
        s = pos.max()
    else:  # p95 of the positive sampled utilities (zeros = never-seen rows carry no scale)
        k = max(1, min(pos.numel(), math.ceil(0.95 * pos.numel())))
        s = torch.kthvalue(pos.float().cpu(), k).values
    return float(s) if float(s) > 0 else 1.0


def adaptive_threshold(values: torch.Tensor, weights: torch.Tensor, capacity: int,
                       population: int) -> float:
    """tau with (estimated count of chunks > tau) <= capacity, as large a count as possible.

    ``values`` [S] sampled scores, ``weights`` [S] how many chunks each stands for,
    ``population`` all chunks of the group. Capacity for everything: -inf (keep all). Ties at
    the cut are all dropped (kept <= capacity). Never below 0: a chunk with no utility is not
    worth a slot unless everything fits.
    """
    if capacity >= population:
        return -math.inf
    if values.numel() == 0:
        return math.inf
    # Sorted in the scores' own dtype (a float64 copy of S x K scores changes no order).
    v, order = torch.sort(values.cpu(), descending=True, stable=True)
    cw = torch.cumsum(weights.cpu()[order], 0, dtype=torch.float64)
    j = int(torch.searchsorted(cw, torch.tensor([float(capacity)], dtype=torch.float64),
                               right=True))
    tau = 0.0 if j >= v.numel() else float(v[j])
    return max(tau, 0.0)


def manual_thresholds(values: torch.Tensor, weights: torch.Tensor,
                      ratios: tuple[float, ...]) -> torch.Tensor:
    """One tau_k per position: the weighted p_k-quantile of the sampled scores at position k."""
    v_all = values.double().cpu()
    w = weights.double().cpu()
    taus = torch.empty(len(ratios), dtype=torch.float64)
    for k, p in enumerate(ratios):
        if p <= 0:
            taus[k] = -math.inf
        elif p >= 1 or v_all.shape[0] == 0:
            taus[k] = math.inf
        else:
            v, order = torch.sort(v_all[:, k])
            cw = torch.cumsum(w[order], 0)
            i = int(torch.searchsorted(cw, p * cw[-1:], right=False))
            taus[k] = v[min(i, v.numel() - 1)]
    return taus


def group_capacities(table_rows: list[int], num_chunks: int, policy: PrunePolicy,
                     budget_chunks: int, frac: float | None = None
                     ) -> tuple[list[int], list[int]]:
    """(capacity per group, group of each table): shared = one group; per_table = one each,
    sized in proportion to the table's rows. ``budget_chunks`` = the whole pool's capacity;
    ``frac`` given (a fixed fraction of every table's chunks): floor(frac x n_t x K) each,
    which depends on the table alone (the same on whichever rank it lives)."""
    total = sum(table_rows) * num_chunks
    if policy.pool == "shared":
        return [min(budget_chunks, total)], [0] * len(table_rows)
    if frac is not None:
        return ([min(n * num_chunks, math.floor(frac * n * num_chunks + 1e-9))
                 for n in table_rows], list(range(len(table_rows))))
    # In proportion to the chunks, floors with the largest remainders taking the rest.
    return (split_entries([n * num_chunks for n in table_rows], budget_chunks),
            list(range(len(table_rows))))


# ---- the event ------------------------------------------------------------------------------
def _clean(name: str) -> str:
    return "".join(c if c.isalnum() or c in "_-./" else "_" for c in name)


def run_event(store: ChunkStore, utility: ChunkUtility, policy: PrunePolicy,
              generator: torch.Generator, step: int, table_names: list[str]) -> dict[str, float]:
    """One pruning event on ``store``; returns its metrics (timing is the caller's).

    Every pass runs over the entries in bounded blocks (``store.blocks``): temporaries are
    O(block + sample + chunks that change), never O(virtual rows).
    """
    K = store.num_chunks
    F = len(table_names)
    G = store.num_groups
    device = store.addr.device
    seed = seed32(generator)                               # this event's keyed draws

    u = utility.values()
    utility.event_decay()
    idx, weights, stab = sample_entries(store, policy, seed, step)

    # Scores: utilities divided by a per-table scale (shared pool).
    scales = torch.ones(F + 1, device=device)
    sampled = u[idx]
    if policy.pool == "shared" and policy.normalise != "none":
        for t in range(F):
            scales[t] = table_scale(sampled[stab == t], policy.normalise)
    sampled.div_(scales[stab].unsqueeze(1))                # u[idx] is a copy: in place

    # Thresholds per group (and per position for manual), from the sample.
    caps = store.group_cap.tolist()
    group_of_table = store.table_group
    sgroup = group_of_table[stab]
    population = torch.zeros(G, dtype=torch.int64, device=device).index_add_(
        0, group_of_table, store.live_per_table).tolist()
    taus = torch.zeros(G + 1, K, dtype=torch.float64)
    taus[G] = math.inf                                    # empty slots keep nothing
    for g in range(G):
        sel = sgroup == g
        vals, wts = sampled[sel], weights[sel]
        if policy.thresholds == "manual":
            taus[g] = manual_thresholds(vals, wts, policy.manual_ratios)
        else:
            if policy.layout == "prefix":
                vals = torch.cummin(vals, dim=1).values
            taus[g] = adaptive_threshold(vals.reshape(-1), wts.repeat_interleave(K), caps[g],
                                         population[g] * K)
    margins = Margins(store, u, scales, taus, policy.layout == "prefix")
    del idx, weights, stab, sampled, sgroup              # the sample is not needed past here

    # Pass 1: how many chunks each group evicts (present, margin <= 0) and wants (absent, > 0).
    evict_n = torch.zeros(G, dtype=torch.int64)
    want_n = torch.zeros(G, dtype=torch.int64)
    for a, b in event_blocks(store):
        m = margins.block(a, b)
        evict_n += m.count(m.present & ~m.keep)
        want_n += m.count(~m.present & m.keep)
    avail = store.free_top.cpu() + evict_n
    # Pass 2, where a group cannot take every wanted chunk: reject its lowest-ranked wanted
    # ones; where it has slots left over: the exact top-up, the best remaining chunks with
    # u > 0 (present ones below tau are then spared, absent ones allocated).
    over = (want_n - avail).clamp_min(0)
    left = (avail - want_n).clamp_min(0)
    rejected = TopK(store, over.tolist(), largest=False)
    topped = TopK(store, left.tolist(), largest=True)
    if rejected.total or topped.total:
        for a, b in event_blocks(store):
            m = margins.block(a, b)
            if rejected.total:
                rejected.add(m, ~m.present & m.keep)
            if topped.total:
                topped.add(m, ~m.keep & m.positive)
    rejected_flat, topped_flat = rejected.result(), topped.result()

    # Pass 3: evict everything below tau but the spared, and allocate what is granted; a
    # block's requests that find no free slot yet wait for later blocks' evictions (every
    # request is granted in the end: the counts above say the slots exist).
    evicted = allocated = 0
    waiting = []
    for a, b in event_blocks(store):
        m = margins.block(a, b)
        go = m.flat(m.present & ~m.keep & ~m.member(topped_flat))
        store.evict(go)
        evicted += go.numel()
        absent = ~m.present
        take = m.flat((absent & m.keep & ~m.member(rejected_flat))
                      | (absent & m.member(topped_flat)))
        granted = store.allocate(take, policy.regrow_init, seed)
        allocated += int(granted.sum())
        if not bool(granted.all()):
            waiting.append(take[~granted])
    if waiting:
        allocated += allocate_blocks(store, torch.cat(waiting), policy.regrow_init, seed)
    del waiting
    n_rejected, n_topped = rejected_flat.numel(), topped_flat.numel()
    del rejected, topped, rejected_flat, topped_flat
    metrics: dict[str, float] = {}
    if not store.every_row_has_entry:
        metrics.update(_drop_entries(store, utility, policy, margins, seed))

    kept = store.kept_per_table()                     # [F, K]
    metrics.update({
        "prune/evicted": float(evicted),
        "prune/allocated": float(allocated),
        "prune/wanted_not_allocated": float(n_rejected),
        "prune/topped_up": float(n_topped),
        "prune/kept_chunks": float(kept.sum()),
        "prune/capacity": float(store.capacity),
        "prune/free_slots": float(sum(store.free_counts())),
    })
    total_rows = store.total_rows
    for k in range(K):
        metrics[f"prune/kept_pos{k}"] = float(kept[:, k].sum())
        metrics[f"prune/kept_frac_pos{k}"] = float(kept[:, k].sum()) / total_rows
    for t, name in enumerate(table_names):
        metrics[f"prune/kept/{_clean(name)}"] = float(kept[t].sum())
        if policy.pool == "shared" and policy.normalise != "none":
            metrics[f"prune/scale/{_clean(name)}"] = float(scales[t])
    for g in range(G):
        gname = "" if G == 1 else f"/{_clean(table_names[g])}"
        if policy.thresholds == "manual":
            for k in range(K):
                metrics[f"prune/threshold{gname}/pos{k}"] = _finite(float(taus[g, k]))
        else:
            metrics[f"prune/threshold{gname}"] = _finite(float(taus[g, 0]))
    return metrics


def _drop_entries(store: ChunkStore, utility: ChunkUtility, policy: PrunePolicy,
                  margins: Margins, seed: int) -> dict[str, float]:
    """Hashed tables: leave ``index_reserve`` of each table's entry budget free for ids not
    seen yet, and set the admission bar.

    Where a table has more live entries than that allows, the ones with the lowest best
    (normalised) chunk score go, chunks and utility history with them, and the hash table is
    rebuilt; slots their chunks held are then topped up with the best absent chunks left
    (u > 0). Then the bar a new id's estimated count must beat (``fiited.index``).
    """
    h = store.index.hashed
    D = store.index.D
    cap = h.live_cap
    target = cap - torch.ceil(policy.index_reserve * cap.double()).long()
    over = (h.live_per_table - target).clamp_min(0)
    dropped = int(over.sum())
    freed = 0
    hashed_blocks = [(max(a, D), b) for a, b in event_blocks(store) if b > D]
    if dropped:
        worst = TopK(store, over.tolist(), largest=False, per_entry=True)
        for a, b in hashed_blocks:
            worst.add(margins.block(a, b), torch.ones(b - a, dtype=torch.bool,
                                                       device=store.addr.device))
        gone = worst.result()                         # entries, sorted
        before = int(store.kept.sum())
        old, new = store.drop_entries(gone)
        freed = before - int(store.kept.sum())
        utility.move(old, new, D)
        if freed:
            fill = TopK(store, store.free_top.tolist(), largest=True)
            for a, b in event_blocks(store):
                m = margins.block(a, b)
                fill.add(m, ~m.present & m.positive)
            allocate_blocks(store, fill.result(), policy.regrow_init, seed)
    bar = torch.full((cap.numel(),), math.inf, device=store.addr.device)
    for a, b in hashed_blocks:
        rows, tables = store.entry_range(a, b)
        live = tables >= 0
        tables, rows = tables[live], rows[live]
        h.weakest(bar, tables, rows - store.table_starts.index_select(0, tables),
                  store.tkey(tables))
    h.age(bar)
    return {"prune/entries_dropped": float(dropped), "prune/live_entries": float(store.live),
            "prune/max_probe": float(store.max_probe),
            "prune/evicted_with_entries": float(freed)}


def _finite(x: float) -> float:
    """MLflow rejects infinities: report +-1e30 for 'keep all' / 'keep none'."""
    if math.isinf(x):
        return math.copysign(1e30, x)
    return x
