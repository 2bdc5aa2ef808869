"""Initial embedding values a rank would have had in a 1-process run of the same seed.

Methods draw their initial values as ONE stream over all tables (``dlrm_init(total_rows, ...)``
with a generator seeded by the run seed), so a method built with a subset of the tables draws
different numbers. Here a rank regenerates that stream, in bounded chunks, up to its last
table and keeps its own tables' rows: bitwise the 1-process values (torch's CPU generator is
stream-consistent: drawing n then m numbers equals drawing n + m).

Knows the methods whose start is one such stream: ``uniform`` and ``post_prune`` (their
pools), ``freq_filter`` (its kept rows: uniform's values of the same ids), and FIITED-family
stores that start full (``fill_all``, i.e. capacity for every chunk). Others keep their own
per-rank draws (``align_initial_values`` returns False and the trainer says so). The clean fix
is per-table generators inside the methods; then this module goes away.
"""
from __future__ import annotations

from typing import Sequence

import torch

from fiited.interface import EmbeddingMethod, dlrm_init

CHUNK_FLOATS = 1 << 22   # 16 MiB of float32 per generated piece


def stream_rows(seed: int, width: int, table_rows: Sequence[int], owned: Sequence[int],
                chunk_floats: int = CHUNK_FLOATS) -> torch.Tensor:
    """Rows of the ``owned`` tables (ascending) from ``dlrm_init(sum(table_rows), width,
    per-row bound of its table, Generator().manual_seed(seed))``, never holding the rest."""
    owned_set = set(int(t) for t in owned)
    if not owned_set:
        return torch.zeros(0, width)
    gen = torch.Generator().manual_seed(int(seed))
    step = max(1, chunk_floats // max(1, width))
    keep: list[torch.Tensor] = []
    for t in range(max(owned_set) + 1):
        n = int(table_rows[t])
        for a in range(0, n, step):
            m = min(step, n - a)
            values = dlrm_init(m, width, torch.full((m,), n, dtype=torch.int64), gen)
            if t in owned_set:
                keep.append(values)
    return torch.cat(keep) if keep else torch.zeros(0, width)


def align_initial_values(method: EmbeddingMethod, table_rows: Sequence[int],
                         owned: Sequence[int]) -> bool:
    """Overwrite ``method``'s initial values (built for tables ``owned`` of ``table_rows``) with
    the 1-process stream's. Returns False for methods it does not know how to align."""
    from baselines.freq_filter import FreqFilter
    from baselines.post_prune import PostPrune
    from baselines.uniform import Uniform

    if type(method) in (Uniform, PostPrune):  # post_prune is uniform at D until it prunes
        with torch.no_grad():
            method.pool.copy_(stream_rows(method.seed, method.pool.shape[1], table_rows, owned))
        return True
    if isinstance(method, FreqFilter):        # after prepare; its OOV rows are keyed by table
        method.align_to(table_rows, owned)
        return True
    try:
        from fiited.method import Fiited
    except ImportError:  # pragma: no cover - FIITED not in this tree
        Fiited = None
    if Fiited is not None and isinstance(method, Fiited):
        store = method.store
        if store.capacity != store.total_rows * store.num_chunks:
            return True   # starts empty; later differences: sharding_differences
        with torch.no_grad():
            store.fill_all(stream_rows(method.seed, method.dim, table_rows, owned))
        return True
    return False


def sharding_differences(method: EmbeddingMethod) -> list[str]:
    """What makes a sharded run of ``method`` take other decisions than a 1-process run,
    beyond float rounding. FIITED-family draws and tie-breaks are keyed by (table name, id),
    so what is left is capacity coupled across tables: one pool shared by tables on several
    ranks (each rank's pool holds its own tables' share), and a pool sized from the whole
    ledger of a rank's tables. Empty: the sharded run follows the 1-process run."""
    cfg = method.config
    out: list[str] = []
    if getattr(method, "needs_train_ids", False) and getattr(cfg, "threshold", 1) is None:
        out.append("freq_filter's threshold T (each rank chooses the T that fits the budget "
                   "over its own tables; set method.threshold to fix one T for all)")
    if not hasattr(cfg, "first_access_init"):
        return out
    store = getattr(method, "store", None)
    full = store is not None and store.capacity == store.total_rows * store.num_chunks
    if full:
        return out
    if cfg.pool == "shared":
        out.append("method.pool=shared (each rank's pool holds its own tables' share of the "
                   "budget; one process lets tables compete for all of it)")
    if cfg.budget_scope == "total" and cfg.thresholds != "manual":
        out.append("method.budget_scope=total (each rank sizes its pool from its own tables' "
                   "ledger)")
    return out
