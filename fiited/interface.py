"""The common embedding interface every method implements (README "What is compared")."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

from fiited.memory import MemoryReport, uniform_bytes
from fiited.optim import SparseOptimConfig


@dataclass(frozen=True)
class TableSpec:
    """One categorical feature's table; ``num_rows`` is the virtual vocabulary size."""

    name: str
    num_rows: int


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
                 config: MethodConfig, seed: int = 0) -> None:
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

    # ---- the interface -------------------------------------------------------------------
    @property
    def num_features(self) -> int:
        return len(self.tables)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        if self.validate_ids:
            self.check_ids(ids)
        out = self.embed(ids.long())
        return out

    def embed(self, ids: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

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
        if ids.dim() != 2 or ids.shape[1] != self.num_features:
            raise ValueError(
                f"ids must be [batch, {self.num_features}] (one column per table), "
                f"got shape {tuple(ids.shape)}")
        if ids.numel() == 0:
            return
        bad = (ids < 0) | (ids >= self.num_rows.to(ids.device))
        if bool(bad.any()):
            b, f = (int(x) for x in bad.nonzero()[0])
            t = self.tables[f]
            raise ValueError(
                f"id {int(ids[b, f])} out of range for table {t.name!r} (feature {f}, batch row "
                f"{b}): valid ids are 0..{t.num_rows - 1}; {int(bad.sum())} bad ids in this batch")

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
