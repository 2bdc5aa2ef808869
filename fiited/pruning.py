"""Pruning events: sample utilities, pick thresholds, evict below, allocate above.

One event, vectorised over entries (loops run over tables, groups or chunk positions only):

1. sample the live entries of every table (``random``: each with probability p_t; ``stride``:
   every s-th from a rotating offset, as ITEP does); a sampled entry stands for n_t / |S_t|;
2. score = utility, divided per table by a scale (``pool: shared`` with ``normalise``) so the
   shared budget flows to the tables that need it; ``layout: prefix`` scores chunk k by the
   minimum over chunks <= k, so a row keeps a prefix: a true per-row dimension;
3. thresholds per group: ``adaptive`` one tau with the estimated count above tau equal to the
   group's capacity; ``manual`` one tau_k per position at the given pruned fraction p_k;
4. margin = score - tau; evict present chunks with margin <= 0 (slots go back on the stack),
   then allocate absent chunks with margin > 0, highest first, while the stack has slots.
   Never more than capacity; a slot has one owner (see ``ChunkStore.check_invariants``);
5. hashed index: drop the least useful entries so that ``index_reserve`` of the entry
   capacity is free for rows not seen yet.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import List

import torch

from fiited.store import ChunkStore, ranks_within_groups
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
    index_reserve: float = 0.1


# ---- sampling -------------------------------------------------------------------------------
def sample_entries(tables: torch.Tensor, num_tables: int, policy: PrunePolicy,
                   generator: torch.Generator, step: int
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Sample the live entries of every table (``tables`` [E]: table of each entry, -1 empty).

    Returns (entries [S], weights [S] = n_t / S_t: how many entries each stands for, tables
    [S]). A table is sampled at fraction max(sample_frac, min_sample_rows / n_t); a table whose
    sample came out empty is taken whole.
    """
    device = tables.device
    live = (tables >= 0).nonzero().squeeze(1)
    order = torch.sort(tables[live], stable=True).indices
    entries, tabs = live[order], tables[live][order]          # by table, entry order within
    rank, counts = ranks_within_groups(tabs, num_tables)
    n = counts.double().clamp_min(1)
    frac = torch.clamp(torch.maximum(torch.full_like(n, policy.sample_frac),
                                     policy.min_sample_rows / n), max=1.0)
    if policy.sampling == "random":
        draw = torch.rand(entries.numel(), generator=generator, dtype=torch.float64).to(device)
        pick = draw < frac[tabs]
    else:
        stride = torch.full_like(counts, policy.sample_stride)
        if policy.min_sample_rows > 0:
            stride = torch.minimum(stride, torch.div(counts, policy.min_sample_rows,
                                                     rounding_mode="floor").clamp_min(1))
        offset = step % stride
        s, o = stride[tabs], offset[tabs]
        pick = (rank >= o) & ((rank - o) % s == 0)
    picked = torch.bincount(tabs[pick], minlength=num_tables)
    pick |= (picked == 0)[tabs]                                # empty sample: take the table
    picked = torch.bincount(tabs[pick], minlength=num_tables)
    weights = counts.double() / picked.double().clamp_min(1)
    return entries[pick], weights[tabs[pick]], tabs[pick]


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
    v, order = torch.sort(values.double().cpu(), descending=True, stable=True)
    cw = torch.cumsum(weights.double().cpu()[order], 0)
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
                     budget_chunks: int) -> tuple[list[int], list[int]]:
    """(capacity per group, group of each table): shared = one group; per_table = one each,
    sized in proportion to the table's rows. ``budget_chunks`` = the whole pool's capacity."""
    total = sum(table_rows) * num_chunks
    if policy.pool == "shared":
        return [min(budget_chunks, total)], [0] * len(table_rows)
    budget_chunks = min(budget_chunks, total)
    shares = [budget_chunks * n * num_chunks for n in table_rows]     # / total, exactly
    caps = [s // total for s in shares]
    # Largest remainders get the chunks that flooring left over, so the sum is exact.
    left = budget_chunks - sum(caps)
    by_remainder = sorted(range(len(caps)), key=lambda t: (-(shares[t] % total), t))
    for t in by_remainder[:left]:
        caps[t] += 1
    return caps, list(range(len(table_rows)))


# ---- the event ------------------------------------------------------------------------------
def _clean(name: str) -> str:
    return "".join(c if c.isalnum() or c in "_-./" else "_" for c in name)


def run_event(store: ChunkStore, utility: ChunkUtility, policy: PrunePolicy,
              generator: torch.Generator, step: int, table_names: list[str]) -> dict[str, float]:
    """One pruning event on ``store``; returns its metrics (timing is the caller's)."""
    K = store.num_chunks
    F = len(table_names)
    G = store.num_groups
    device = store.addr.device

    u = utility.values()
    utility.event_decay()
    tables = store.table_of_entries()                     # [E], -1 = empty hashed slot
    live = tables >= 0
    idx, weights, stab = sample_entries(tables, F, policy, generator, step)

    # Scores: utilities divided by a per-table scale (shared pool), a transient [E, K].
    scales = torch.ones(F + 1)
    if policy.pool == "shared" and policy.normalise != "none":
        for t in range(F):
            scales[t] = table_scale(u[idx[stab == t]], policy.normalise)
    tab_or_none = torch.where(live, tables, torch.full_like(tables, F))
    score = u / scales.to(device)[tab_or_none].unsqueeze(1)

    # Thresholds per group (and per position for manual), from the sample.
    caps = store.group_cap.tolist()
    group_of_table = store.table_group
    sgroup = group_of_table[stab]
    population = torch.bincount(group_of_table[tables[live]], minlength=G).tolist()
    taus = torch.zeros(G + 1, K, dtype=torch.float64)
    taus[G] = math.inf                                    # empty slots keep nothing
    for g in range(G):
        sel = sgroup == g
        vals, wts = score[idx[sel]], weights[sel]
        if policy.thresholds == "manual":
            taus[g] = manual_thresholds(vals, wts, policy.manual_ratios)
        else:
            if policy.layout == "prefix":
                vals = torch.cummin(vals, dim=1).values
            taus[g] = adaptive_threshold(vals.reshape(-1), wts.repeat_interleave(K), caps[g],
                                         population[g] * K)

    best = score.max(dim=1).values if store.keys is not None else None   # entry ranking
    # Margins, in place: score - tau of the entry's group; prefix -> running minimum.
    group_or_none = torch.where(live, group_of_table[tables.clamp_min(0)],
                                torch.full_like(tables, G))
    score -= taus.to(device=device, dtype=score.dtype)[group_or_none]
    if policy.layout == "prefix":
        score = torch.cummin(score, dim=1).values
    keep = score > 0
    present = store.present()

    evict = (present & ~keep).view(-1).nonzero().squeeze(1)
    store.evict(evict)
    cand = (~present & keep).view(-1).nonzero().squeeze(1)
    prio = score.view(-1)[cand]
    order = torch.sort(prio, descending=True, stable=True).indices
    granted = store.allocate(cand[order], policy.regrow_init, generator)
    allocated = int(granted.sum())
    metrics: dict[str, float] = {}
    if store.keys is not None:
        metrics.update(_drop_entries(store, utility, policy, best))

    kept = store.kept_per_table()                     # [F, K]
    metrics.update({
        "prune/evicted": float(evict.numel()),
        "prune/allocated": float(allocated),
        "prune/wanted_not_allocated": float(cand.numel() - allocated),
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
                  best: torch.Tensor) -> dict[str, float]:
    """Hashed index: leave ``index_reserve`` of the entry capacity free for rows not seen yet.

    If more entries are live than that allows, the ones with the lowest best (normalised)
    chunk utility go, chunks and utility history with them, and the table is rebuilt.
    """
    target = store.max_live - math.ceil(policy.index_reserve * store.max_live)
    live = (store.keys >= 0).nonzero().squeeze(1)
    dropped = max(0, live.numel() - target)
    if dropped:
        order = torch.sort(best[live], descending=True, stable=True).indices
        gone = live[order[target:]]
        chunks = store.present()[gone].nonzero()
        store.evict(gone[chunks[:, 0]] * store.num_chunks + chunks[:, 1])
        keep = store.keys >= 0
        keep[gone] = False
        old, new = store.rebuild(keep)
        utility.move(old, new)
    return {"prune/entries_dropped": float(dropped), "prune/live_entries": float(store.live),
            "prune/max_probe": float(store.max_probe),
            "prune/evicted_with_entries": float(chunks.shape[0] if dropped else 0)}


def _finite(x: float) -> float:
    """MLflow rejects infinities: report +-1e30 for 'keep all' / 'keep none'."""
    if math.isinf(x):
        return math.copysign(1e30, x)
    return x
