"""FIITED: fine-grained in-training embedding-dimension pruning on a VHPI chunk store.

Each table's width D is cut into K chunks of C = D/K floats; only chunks that earn their place
hold a pool slot, the rest read as zeros. Per step: forward gathers through the entry table
(first-access allocation while the pool has free slots), backward runs the fused sparse update
on present chunks and hands per-occurrence chunk gradient norms to the utility tracker;
``on_step`` advances the utility clock and runs pruning events on the schedule.

Budget (``method.budget``, a fraction of uniform's bytes):
- ``budget_scope: weights``: pool capacity = floor(budget * rows * K) chunks (the paper's
  "embedding size"); the entries (addresses + utilities) come on top, shown in the ledger;
- ``budget_scope: total``: the pool is sized so that the whole ledger (weights + optimizer +
  index + utility + other) stays <= budget * uniform's total: comparisons at equal TOTAL memory.
- ``thresholds: manual``: capacity = sum_k (1 - p_k) * rows, from the ratios; ``budget`` and
  ``budget_scope`` are not used.

Index (``method.index``, per table; ``fiited.index``): ``direct`` keeps an entry (K int32
addresses + K float32 utilities) for every virtual row: 8K bytes per row, i.e. 32 bytes/row at
K=4 against 64 bytes/row of uniform weights at D=16, so at small budgets the metadata
outweighs the weights. ``hashed`` keeps entries only for live rows: at most
``index_entries * (the table's share of the pool) / K`` per table, in one open-addressing
table of ``1/index_load`` times as many slots (plus a key per slot); rows without an entry
read zeros and earn no utility until they get one (admission is frequency-gated by a count-min
sketch of ``admission_sketch`` counters per entry; each event frees ``index_reserve`` of every
table's entries by dropping the least useful ones, chunks and history with them). Metadata
then scales with the budget, not the vocabulary. ``auto``: direct for tables of at most
``index_auto_rows`` rows whose direct entries cost no more bytes than hashed ones would at
this budget, hashed otherwise. Sizes come from ``fiited.budget.store_sizes``.

With capacity for every chunk the store starts full, with uniform's exact initial values, so
FIITED then trains exactly like uniform (SGD at any K; row-wise Adagrad at any K with
``train.sparse_optimizer.accumulator: row``, one accumulator per logical row; with ``chunk``
only at K=1, as each chunk then has its own).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import List, Optional

import torch

from fiited.interface import EmbeddingMethod, MethodConfig, dlrm_init
from fiited.kernels import bag_lookup, fused, lookup
from fiited.memory import MemoryReport, tensor_bytes
from fiited.padding import PADDINGS, ProjectionPadding
from fiited.pruning import (LAYOUTS, NORMALISERS, POOLS, SAMPLERS, THRESHOLDS, PrunePolicy,
                            ScheduleConfig, group_capacities, run_event)
from fiited.registry import register_method
from fiited.budget import StoreGeometry, store_sizes
from fiited.index import AUTO_DIRECT_MAX_ROWS, INDEXES
from fiited.store import INITS, ChunkStore, busiest_first, gather_rows
from fiited.utility import DECAY_MODES, UTILITIES, ChunkUtility

BUDGET_SCOPES = ("weights", "total")


def _one_of(key: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"method.{key}={value!r} is not one of {allowed}")


@dataclass
class FiitedConfig(MethodConfig):
    """Every FIITED knob (conf/method/fiited.yaml says what each means and its default)."""

    name: str = "fiited"
    budget: float = 0.25
    budget_scope: str = "total"            # total | weights (see module doc)
    num_chunks: int = 4                    # K; must divide the embedding dim
    utility: str = "freq_grad"             # freq | grad | freq_grad
    gamma: float = 0.99                    # decay per step (decay_per=step) or per event
    decay_per: str = "step"                # step | event
    sample_frac: float = 0.05              # fraction of rows sampled per event (random)
    sampling: str = "random"               # random | stride (every sample_stride-th row)
    sample_stride: int = 23
    min_sample_rows: int = 64              # small tables are sampled at least this much
    max_sample_rows: int = 16384           # big tables at most this much (0: no cap)
    thresholds: str = "adaptive"           # adaptive | manual
    manual_ratios: List[float] = field(default_factory=list)   # p_k, pruned fraction per position
    pool: str = "shared"                   # shared | per_table
    normalise: str = "p95"                 # per-table utility scale in a shared pool
    layout: str = "any"                    # any | prefix
    regrow_init: str = "zero"              # zero | random: chunks allocated at events
    first_access_alloc: bool = True        # new rows get chunks while the pool has free slots
    first_access_init: str = "random"      # zero | random (DLRM's U(+-1/sqrt(n)))
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    padding: str = "zeros"                 # zeros | projection
    index: str = "auto"                    # auto (per table, by size) | direct | hashed
    index_auto_rows: int = AUTO_DIRECT_MAX_ROWS  # auto: hashed above this many rows
    admission_sketch: float = 1.0          # hashed: sketch counters per entry (0: first come)
    index_entries: float = 2.0             # hashed: live entries = this x (capacity / K)
    index_load: float = 0.75               # hashed: max load of the open-addressing table
    index_reserve: float = 0.1             # hashed: entry capacity left free at events for new ids
    seed: Optional[int] = None             # None: the run's seed

    def __post_init__(self) -> None:
        if not 0 < self.budget <= 1:
            raise ValueError(f"method.budget must be in (0, 1], got {self.budget}")
        if self.num_chunks < 1:
            raise ValueError(f"method.num_chunks must be >= 1, got {self.num_chunks}")
        _one_of("budget_scope", self.budget_scope, BUDGET_SCOPES)
        _one_of("utility", self.utility, UTILITIES)
        _one_of("decay_per", self.decay_per, DECAY_MODES)
        _one_of("sampling", self.sampling, SAMPLERS)
        _one_of("thresholds", self.thresholds, THRESHOLDS)
        _one_of("pool", self.pool, POOLS)
        _one_of("normalise", self.normalise, NORMALISERS)
        _one_of("layout", self.layout, LAYOUTS)
        _one_of("regrow_init", self.regrow_init, INITS)
        _one_of("first_access_init", self.first_access_init, INITS)
        _one_of("padding", self.padding, PADDINGS)
        _one_of("index", self.index, INDEXES)
        if self.index_auto_rows < 0:
            raise ValueError(f"method.index_auto_rows must be >= 0, got {self.index_auto_rows}")
        if self.admission_sketch < 0:
            raise ValueError(f"method.admission_sketch must be >= 0, got {self.admission_sketch}")
        if not self.index_entries > 0:
            raise ValueError(f"method.index_entries must be > 0, got {self.index_entries}")
        if not 0 < self.index_load <= 1:
            raise ValueError(f"method.index_load must be in (0, 1], got {self.index_load}")
        if not 0 <= self.index_reserve < 1:
            raise ValueError(f"method.index_reserve must be in [0, 1), got {self.index_reserve}")
        if not 0 < self.gamma <= 1:
            raise ValueError(f"method.gamma must be in (0, 1], got {self.gamma}")
        if not 0 < self.sample_frac <= 1:
            raise ValueError(f"method.sample_frac must be in (0, 1], got {self.sample_frac}")
        if self.sample_stride < 1:
            raise ValueError(f"method.sample_stride must be >= 1, got {self.sample_stride}")
        if self.min_sample_rows < 0:
            raise ValueError(f"method.min_sample_rows must be >= 0, got {self.min_sample_rows}")
        if self.max_sample_rows < 0:
            raise ValueError(f"method.max_sample_rows must be >= 0, got {self.max_sample_rows}")
        if self.thresholds == "manual":
            if len(self.manual_ratios) != self.num_chunks:
                raise ValueError(
                    f"method.manual_ratios has {len(self.manual_ratios)} entries; "
                    f"thresholds=manual needs one pruned fraction per chunk position "
                    f"(method.num_chunks={self.num_chunks})")
            bad = [p for p in self.manual_ratios if not 0 <= p <= 1]
            if bad:
                raise ValueError(f"method.manual_ratios must lie in [0, 1], got {bad}")

    def policy(self) -> PrunePolicy:
        return PrunePolicy(
            thresholds=self.thresholds, manual_ratios=tuple(float(p) for p in self.manual_ratios),
            pool=self.pool, normalise=self.normalise, layout=self.layout,
            regrow_init=self.regrow_init, sampling=self.sampling, sample_frac=self.sample_frac,
            sample_stride=self.sample_stride, min_sample_rows=self.min_sample_rows,
            max_sample_rows=self.max_sample_rows,
            index_reserve=self.index_reserve)


@register_method("fiited")
class Fiited(EmbeddingMethod):
    config_class = FiitedConfig

    def __init__(self, tables, dim, optim, config: FiitedConfig, seed: int = 0,
                 features=None) -> None:
        super().__init__(tables, dim, optim, config, seed, features)
        cfg = config
        K = int(cfg.num_chunks)
        if dim % K:
            raise ValueError(f"method.num_chunks={K} does not divide the embedding dim {dim}: "
                             f"chunks must all be D/K floats wide")
        self.num_chunks, self.chunk_width = K, dim // K
        self.policy = cfg.policy()
        self.schedule = cfg.schedule
        rows = [t.num_rows for t in self.tables]
        self.total_rows = sum(rows)
        run_seed = self.seed if cfg.seed is None else int(cfg.seed)
        self.generator = torch.Generator().manual_seed(run_seed + 0x5F1173D)
        self.init_seed = (run_seed * 0x9E3779B1 + 0x5F1173D) & 0x7FFFFFFF  # keyed draws
        self.projection = (ProjectionPadding(len(rows), K, self.chunk_width)
                           if cfg.padding == "projection" else None)
        if self.projection is not None and not self.plain:
            raise ValueError("method.padding=projection needs one one-hot feature per table "
                             "(its maps are per table): bag or shared-table features need "
                             "padding=zeros")
        sizes = self._sizes(rows)
        frac = (None if cfg.budget_scope == "total" and cfg.thresholds != "manual" else
                cfg.budget if cfg.thresholds != "manual" else
                sum(1 - p for p in cfg.manual_ratios) / K)
        caps, table_group = group_capacities(rows, K, self.policy, sizes.chunks, frac)
        self.store = ChunkStore(rows, K, self.chunk_width, caps, table_group, optim,
                                index=sizes.kinds, num_entries=sizes.num_slots,
                                live_cap=sizes.live_cap, sketch_per_entry=cfg.admission_sketch,
                                table_names=[t.name for t in self.tables])
        self.utility = ChunkUtility(self.store.num_entries, K, cfg.utility, cfg.gamma,
                                    cfg.decay_per)
        if self.store.index.identity and self.store.capacity == self.total_rows * K:
            # Everything fits: start full with uniform's exact initial values.
            gen = torch.Generator().manual_seed(self.seed)
            self.store.fill_all(dlrm_init(self.total_rows, dim, (self.num_rows, self.num_rows),
                                          gen))
        self.steps = 0
        self.events = 0
        self.first_access_allocs = 0
        if cfg.budget_scope == "total" and cfg.thresholds == "adaptive":
            limit = cfg.budget * self.uniform_reference()[1]
            if self.memory().total > limit:  # pragma: no cover - sizing bug guard
                raise RuntimeError(f"ledger {self.memory().total} exceeds budget {limit}")

    # ---- sizing ----------------------------------------------------------------------------
    def _sizes(self, rows: list[int]):
        """Pool capacity and index sizes from the budget knobs (``fiited.budget``)."""
        cfg: FiitedConfig = self.config
        K = self.num_chunks
        groups = 1 if cfg.pool == "shared" else len(self.tables)
        fixed = (ChunkStore.geometry_bytes(len(self.tables), groups, K)
                 + tensor_bytes(self.num_rows, self.table_offsets)
                 + (self.projection.extra_bytes() if self.projection is not None else 0))
        geo = StoreGeometry(rows, K, ChunkStore.bytes_per_chunk(self.chunk_width, self.optim, K),
                            cfg.index, cfg.index_auto_rows, cfg.index_entries, cfg.index_load,
                            cfg.admission_sketch, fixed,
                            entry_state_bytes=ChunkStore.state_bytes_per_entry(self.optim, K))
        manual = cfg.manual_ratios if cfg.thresholds == "manual" else None
        return store_sizes(geo, cfg.budget, cfg.budget_scope, manual,
                           self.uniform_reference()[1])

    # ---- the interface ---------------------------------------------------------------------
    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        b, f = ids.shape
        store = self.store
        rows = self.global_rows(ids).reshape(-1)
        if self.projection is None and fused.applies(store.pool, store.addr, rows, self.optim) \
                and (not self.training or self.utility.kind in fused.CREDITS):
            # One native pass each way: addresses read through the entry table, utility
            # credited in the update (fiited.kernels.fused); the same numbers as below.
            entries = self._entries(rows)
            credit = ((self.utility.util, self.utility._scale, self.utility.kind)
                      if self.training else None)
            out = fused.fused_lookup(store.pool, store.opt_state, store.addr, entries,
                                     self.optim, store.row_state, credit)
            return out.view(b, f, self.dim)
        addrs, sink, state_rows = self._addresses(rows)
        out = lookup(store.pool, store.opt_state, addrs, self.optim, sink, state_rows)
        out = out.view(b, f, self.dim)
        if self.projection is not None:
            present = (addrs >= 0).view(b, f, self.num_chunks)
            out = self.projection(out, present, compact=self.policy.layout == "any")
        return out

    def embed_bags(self, occ) -> torch.Tensor:
        """Bags through the fused ``bag_lookup``: each occurrence's share of the pooled
        gradient updates its chunks, and its norms [N, K] go to the utility (one access each)."""
        addrs, sink, state_rows = self._addresses(occ.rows)
        return bag_lookup(self.store.pool, self.store.opt_state, addrs, occ.offsets, self.optim,
                          occ.weights, occ.mode, sink, state_rows)

    def _addresses(self, rows: torch.Tensor):
        """(addrs [N, K] of global ``rows``, -1 where absent; the utility sink or None; the
        kernels' ``state_rows``: the entries, or None when Adagrad state is per slot)."""
        store = self.store
        entries = self._entries(rows)
        if store.every_row_has_entry:
            valid = None
            addrs = gather_rows(store.addr, entries)
        else:                                   # rows without an entry read zeros
            valid = entries >= 0
            addrs = gather_rows(store.addr, entries.clamp_min(0))
            addrs = addrs.masked_fill(~valid.unsqueeze(1), -1)
        sink = None
        if self.training:
            utility = self.utility

            def sink(norms: torch.Tensor) -> None:
                if valid is None:
                    utility.accumulate(entries, norms)
                else:  # one nonzero for both selections (boolean indexing would run two)
                    keep = valid.nonzero().squeeze(1)
                    utility.accumulate(entries.index_select(0, keep), norms.index_select(0, keep))
        return addrs, sink, store.state_rows(entries)

    def _entries(self, rows: torch.Tensor) -> torch.Tensor:
        """Entries of global ``rows`` (-1: none); in training, first-access allocation (only
        while the pool has free slots: a host-side check, so a full pool costs nothing)."""
        entries = self.store.entries_of(rows, insert=self.training)  # direct: the rows
        if self.training and self.config.first_access_alloc and self.store.has_free():
            self._first_access(entries)
        return entries

    def _first_access(self, entries: torch.Tensor) -> None:
        """Rows never seen (no chunk, zero utility) get chunks in position order: chunk 0 of
        every new row first, then chunk 1, ...; within a position the rows most frequent in
        the batch first; while their group has free slots."""
        uniq, counts = torch.unique(entries, return_counts=True)
        seen = uniq >= 0
        uniq, counts = uniq[seen], counts[seen]
        new = ((self.store.addr[uniq] < 0).all(1) & (self.utility.util[uniq] == 0).all(1))
        new_entries = uniq[new]
        if new_entries.numel() == 0:
            return
        keys = self.store.row_keys(self.store.rows_of_entries(new_entries), self.init_seed)
        new_entries = new_entries[busiest_first(keys, counts[new])]
        K = self.num_chunks
        flat = (new_entries.unsqueeze(0) * K
                + torch.arange(K, device=entries.device).unsqueeze(1)).reshape(-1)
        granted = self.store.allocate(flat, self.config.first_access_init, self.init_seed)
        self.first_access_allocs += int(granted.sum())

    def on_step(self, step: int) -> dict[str, float]:
        """Advance the utility clock; run a pruning event when the schedule says so.

        Steps are counted here (calls of on_step), not taken from ``step``, so that the
        schedule and the utility clock resume exactly from a checkpoint.
        """
        self.utility.advance()
        self.steps += 1
        if not self.schedule.is_event(self.steps):
            return {}
        return self.prune_now()

    def prune_now(self) -> dict[str, float]:
        """One pruning event now; its wall time is measured and reported."""
        device = self.store.pool.device
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        metrics = run_event(self.store, self.utility, self.policy, self.generator, self.steps,
                            [t.name for t in self.tables])
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - start
        self.events += 1
        metrics["prune/event_seconds"] = seconds
        metrics["prune/events"] = float(self.events)
        metrics["prune/first_access_allocs"] = float(self.first_access_allocs)
        metrics["prune/mean_width"] = metrics["prune/kept_chunks"] * self.chunk_width / self.total_rows
        self.first_access_allocs = 0
        return metrics

    def _table_stats(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(kept chunks [F, K], entries [F]) per table: the store's maintained counters."""
        return self.store.kept_per_table(), self.store.entries_per_table()

    def memory(self) -> MemoryReport:
        uw, ut = self.uniform_reference()
        s = self.store
        per_chunk = ChunkStore.bytes_per_chunk(self.chunk_width, self.optim, self.num_chunks)
        per_entry = 8 * self.num_chunks + ChunkStore.state_bytes_per_entry(self.optim,
                                                                          self.num_chunks)
        kept, entries = self._table_stats()
        chunks = s.group_cap.tolist() if self.policy.pool == "per_table" else kept.sum(1).tolist()
        per_table = {t.name: int(c) * per_chunk + int(e) * per_entry
                     for t, c, e in zip(self.tables, chunks, entries.tolist())}
        return MemoryReport(
            weights=s.weights_bytes(), optimizer=s.optimizer_bytes(),
            index=s.index_bytes() + tensor_bytes(self.num_rows, self.table_offsets),
            utility=tensor_bytes(self.utility.util),
            other=self.projection.extra_bytes() if self.projection is not None else 0,
            uniform_weights=uw, uniform_total=ut, per_table=per_table)

    def dims(self) -> dict[str, torch.Tensor]:
        widths = self.store.widths_per_table()              # [F, K+1] by kept chunks
        at = torch.arange(self.num_chunks + 1) * self.chunk_width
        out = {}
        for t, by_chunks in zip(self.tables, widths):
            counts = torch.zeros(self.dim + 1, dtype=torch.int64)
            counts[at] = by_chunks
            out[t.name] = counts
        return out

    # ---- resume ----------------------------------------------------------------------------
    def get_extra_state(self) -> dict:
        return {"steps": self.steps, "events": self.events,
                "first_access_allocs": self.first_access_allocs,
                "generator": self.generator.get_state(), "init_seed": self.init_seed}

    def set_extra_state(self, state: dict) -> None:
        self.steps = int(state["steps"])
        self.events = int(state["events"])
        self.first_access_allocs = int(state["first_access_allocs"])
        self.generator.set_state(state["generator"])
        self.init_seed = int(state.get("init_seed", self.init_seed))
