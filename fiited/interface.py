"""The common embedding interface every method implements (README "What is compared").

``forward(ids, bags=None)``: ``ids[B, F1]`` are the one-hot features (``[B, 0]`` when every
feature is a bag), ``bags`` a ``fiited.jagged.Jagged`` of the bag (multi-hot) features, named
as the method's bag features and in their order; the output is ``[B, F1 + Fm, D]``, one-hot
features first. Features are ``FeatureSpec``s over tables (several may share one table);
by default one one-hot feature per table, and then ``forward(ids)`` is the one-hot path as
before (``embed``), untouched. Everything else goes through ``embed_bags`` on one
``Occurrences`` set (one lookup, one fused update per step).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

import torch
from torch import nn

from fiited.jagged import POOLINGS, Jagged, Occurrences, merge, pool
from fiited.memory import MemoryReport, uniform_bytes
from fiited.optim import SparseOptimConfig


@dataclass(frozen=True)
class TableSpec:
    """One categorical feature's table; ``num_rows`` is the virtual vocabulary size."""

    name: str
    num_rows: int


@dataclass(frozen=True)
class FeatureSpec:
    """One input feature: its name, the table it reads, and ``pooling`` (None: one-hot, one id
    per row; "sum" / "mean": a bag)."""

    name: str
    table: str
    pooling: Optional[str] = None


@dataclass
class MethodConfig:
    """Knobs every method shares. ``budget`` = fraction of uniform weight bytes it may hold."""

    name: str = "uniform"
    budget: float = 1.0


class EmbeddingMethod(nn.Module):
    """All categorical features of a model, table-batched: ids[B, F] -> embeddings[B, F, D].

    Subclasses implement ``embed`` (ids already validated) and ``memory``; they hold their
    weights in pools updated by the fused sparse optimizer (``fiited.kernels.lookup``), so the
    dense optimizer never sees them.
    """

    config_class: type[MethodConfig] = MethodConfig

    def __init__(self, tables: Sequence[TableSpec], dim: int, optim: SparseOptimConfig,
                 config: MethodConfig, seed: int = 0,
                 features: Sequence[FeatureSpec] | None = None) -> None:
        super().__init__()
        if not tables:
            raise ValueError("an embedding method needs at least one table")
        names = [t.name for t in tables]
        if len(set(names)) != len(names):
            raise ValueError(f"table names must be unique, got {names}")
        for t in tables:
            if t.num_rows < 1:
                raise ValueError(f"table {t.name!r} has num_rows={t.num_rows}; it must be >= 1")
        if dim < 1:
            raise ValueError(f"embedding dim must be >= 1, got {dim}")
        if not 0 < config.budget <= 1:
            raise ValueError(f"method.budget must be in (0, 1], got {config.budget}")
        self.tables = list(tables)
        self.dim = int(dim)
        self.optim = optim
        self.config = config
        self.seed = int(seed)
        self.validate_ids = True
        rows = torch.tensor([t.num_rows for t in tables], dtype=torch.int64)
        self.register_buffer("num_rows", rows, persistent=False)
        offsets = torch.zeros(len(tables), dtype=torch.int64)
        offsets[1:] = torch.cumsum(rows, 0)[:-1]
        self.register_buffer("table_offsets", offsets, persistent=False)
        self._set_features(features)

    def _set_features(self, features: Sequence[FeatureSpec] | None) -> None:
        """Check the features against the tables; precompute each column's table."""
        names = [t.name for t in self.tables]
        if features is None:
            features = [FeatureSpec(n, n) for n in names]
        features = list(features)
        fnames = [f.name for f in features]
        if not features or len(set(fnames)) != len(fnames):
            raise ValueError(f"feature names must be unique and non-empty, got {fnames}")
        for f in features:
            if f.table not in names:
                raise ValueError(f"feature {f.name!r} reads table {f.table!r}, which is not one "
                                 f"of the tables {names}")
            if f.pooling is not None and f.pooling not in POOLINGS:
                raise ValueError(f"feature {f.name!r}: pooling must be None (one-hot), 'sum' or "
                                 f"'mean', got {f.pooling!r}")
        self.onehot_features = [f for f in features if f.pooling is None]
        self.bag_features = [f for f in features if f.pooling is not None]
        self.features = self.onehot_features + self.bag_features   # output order
        self.bag_names = tuple(f.name for f in self.bag_features)
        self.bag_modes = tuple(f.pooling for f in self.bag_features)
        # The plain path: one one-hot feature per table, in table order (today's behaviour).
        self.plain = [f.table for f in self.features] == names and not self.bag_features
        index = {n: i for i, n in enumerate(names)}
        # Not buffers (the ledger counts every buffer): tiny, moved on use (_column_shifts).
        self.onehot_tables = [index[f.table] for f in self.onehot_features]
        self.bag_tables = [index[f.table] for f in self.bag_features]
        self._shifts: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    def _column_shifts(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Table offset of each one-hot column and of each bag feature, on ``device``."""
        if device not in self._shifts:
            off = self.table_offsets.to(device)
            self._shifts[device] = tuple(
                off[torch.tensor(t, dtype=torch.int64, device=device)]
                for t in (self.onehot_tables, self.bag_tables))
        return self._shifts[device]

    # ---- the interface -------------------------------------------------------------------
    @property
    def num_features(self) -> int:
        """Output vectors per row: one-hot features plus bag features."""
        return len(self.features)

    @property
    def num_onehot(self) -> int:
        """Columns of ``ids``."""
        return len(self.onehot_features)

    def forward(self, ids: torch.Tensor, bags: Jagged | None = None) -> torch.Tensor:
        if self.validate_ids:
            self.check_ids(ids)
        if bags is None and self.plain:
            return self.embed(ids.long())
        self.check_bags(bags, ids.shape[0])
        occ = merge(ids, bags, *self._column_shifts(ids.device), self.bag_modes)
        return self.embed_bags(occ).view(occ.batch_size, occ.num_columns, self.dim)

    def embed(self, ids: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def embed_bags(self, occ: Occurrences) -> torch.Tensor:
        """Pooled [B*C, D] of ``occ``. This generic path pools ``embed_rows`` (per occurrence,
        each with its method's fused update) with ``fiited.jagged.pool``; methods whose lookup
        is "global rows -> pool addresses" override it with the fused ``bag_lookup``."""
        return pool(self.embed_rows(occ.rows), occ)

    def embed_rows(self, rows: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        """Per-occurrence lookup of global rows [N] -> [N, D], trained like ``embed``."""
        raise NotImplementedError(f"{type(self).__name__} has no per-row lookup (embed_rows)")

    def table_of(self, rows: torch.Tensor) -> torch.Tensor:
        """The table index of each global row (int64, same shape)."""
        return torch.searchsorted(self.table_offsets, rows, right=True) - 1

    def on_step(self, step: int) -> dict[str, float]:
        """After the optimizer step: bookkeeping and pruning events. Returns metrics to log."""
        return {}

    def on_train_end(self) -> dict[str, float]:
        """Post-training methods act here (e.g. prune-after-training). Returns metrics to log."""
        return {}

    def memory(self) -> MemoryReport:  # pragma: no cover - abstract
        raise NotImplementedError

    def dims(self) -> dict[str, torch.Tensor]:
        """Per table, counts of rows by kept width: ``counts[w]`` rows keep w of D dims."""
        raise NotImplementedError

    # ---- shared helpers ------------------------------------------------------------------
    def init_full_table(self, width: int) -> None:
        """Buffers ``pool`` [rows, width] (DLRM init, seeded) and ``opt_state`` (one float per
        row for row-wise Adagrad): the full table that uniform-like methods hold."""
        total = int(self.num_rows.sum())
        gen = torch.Generator().manual_seed(self.seed)
        self.register_buffer("pool", dlrm_init(total, width, (self.num_rows, self.num_rows), gen))
        self.register_buffer(
            "opt_state", torch.full((total * self.optim.state_floats_per_row,),
                                    float(self.optim.initial_accumulator)))

    def constant_width_dims(self, width: int) -> dict[str, torch.Tensor]:
        """``dims()`` of a method whose every row reads ``width`` dims."""
        out = {}
        for t in self.tables:
            counts = torch.zeros(self.dim + 1, dtype=torch.int64)
            counts[width] = t.num_rows
            out[t.name] = counts
        return out

    def check_ids(self, ids: torch.Tensor) -> None:
        """Refuse bad ids with the table and position named, before anything reads memory."""
        if not isinstance(ids, torch.Tensor):
            raise ValueError(f"ids must be a torch.Tensor, got {type(ids).__name__}")
        if ids.dtype not in (torch.int32, torch.int64):
            raise ValueError(f"ids must be int32 or int64, got {ids.dtype}")
        if ids.dim() != 2 or ids.shape[1] != self.num_onehot:
            raise ValueError(
                f"ids must be [batch, {self.num_onehot}] (one column per "
                f"{'table' if self.plain else 'one-hot feature'}), "
                f"got shape {tuple(ids.shape)}")
        if ids.numel() == 0:
            return
        limit = self.num_rows if self.plain else self.num_rows[self.onehot_tables]
        bad = (ids < 0) | (ids >= limit.to(ids.device))
        if bool(bad.any()):
            b, f = (int(x) for x in bad.nonzero()[0])
            feat = self.onehot_features[f]
            t = self.tables[self.onehot_tables[f]]
            name = f"feature {f}" if feat.name == t.name else f"feature {feat.name!r}"
            raise ValueError(
                f"id {int(ids[b, f])} out of range for table {t.name!r} ({name}, batch row "
                f"{b}): valid ids are 0..{t.num_rows - 1}; {int(bad.sum())} bad ids in this batch")

    def check_bags(self, bags: Jagged | None, batch: int) -> None:
        """Refuse bags that do not match this method's bag features (names, batch, ids)."""
        if bags is None:
            if self.bag_features:
                raise ValueError(f"this method has bag features {list(self.bag_names)}; "
                                 f"forward needs bags= (a fiited.jagged.Jagged)")
            return
        if not isinstance(bags, Jagged):
            raise ValueError(f"bags must be a fiited.jagged.Jagged, got {type(bags).__name__}")
        if tuple(bags.feature_names) != self.bag_names:
            raise ValueError(f"bags.feature_names {list(bags.feature_names)} do not match this "
                             f"method's bag features {list(self.bag_names)} (same names, same "
                             f"order)")
        if bags.batch_size != batch:
            raise ValueError(f"bags hold {bags.batch_size} rows, ids {batch}")
        if self.validate_ids:
            bags.validate([self.tables[t].num_rows for t in self.bag_tables])

    def global_rows(self, ids: torch.Tensor) -> torch.Tensor:
        """Table-batched row numbers: ids[B, F] + offset of table f, as int64."""
        return ids.long() + self.table_offsets.to(ids.device)

    def uniform_reference(self) -> tuple[int, int]:
        return uniform_bytes([t.num_rows for t in self.tables], self.dim,
                             self.optim.state_floats_per_row)


INIT_BLOCK_ROWS = 1 << 16


def dlrm_init(rows: int, width: int,
              table_rows: torch.Tensor | int | tuple[torch.Tensor, torch.Tensor],
              generator: torch.Generator | None = None) -> torch.Tensor:
    """DLRM's init, U(-1/sqrt(n_f), 1/sqrt(n_f)) with n_f the table's vocabulary size.

    ``table_rows``: an int (one bound for every row), a tensor [rows] (one per row), or a pair
    (lengths, vocab): run i is lengths[i] consecutive rows of a table of vocab[i] ids, for pools
    shared by tables without a per-row array. Drawn in blocks of ``INIT_BLOCK_ROWS`` rows into the
    output, so construction peaks at the table plus one block, not at three tables; the values are
    those of one draw of the whole table (the CPU generator is consumed in order).
    """
    out = torch.empty(rows, width, dtype=torch.float32)
    if isinstance(table_rows, tuple):
        lengths, vocab = (torch.as_tensor(x, dtype=torch.int64) for x in table_rows)
        if int(lengths.sum()) != rows:
            raise ValueError(f"dlrm_init: run lengths sum to {int(lengths.sum())}, not {rows} rows")
        ends = torch.cumsum(lengths, 0)
        run_bound = vocab.double().clamp_min(1).rsqrt().float()
    elif isinstance(table_rows, torch.Tensor):
        row_bound = table_rows  # converted per block
    else:
        scalar = 1.0 / math.sqrt(max(int(table_rows), 1))
    for lo in range(0, rows, INIT_BLOCK_ROWS):
        hi = min(rows, lo + INIT_BLOCK_ROWS)
        block = out[lo:hi]
        torch.rand(hi - lo, width, generator=generator, dtype=torch.float32, out=block)
        block.mul_(2).sub_(1)
        if isinstance(table_rows, tuple):
            run = torch.searchsorted(ends, torch.arange(lo, hi), right=True)
            block.mul_(run_bound[run].unsqueeze(1))
        elif isinstance(table_rows, torch.Tensor):
            block.mul_(row_bound[lo:hi].double().clamp_min(1).rsqrt().float().unsqueeze(1))
        else:
            block.mul_(scalar)
    return out
