"""Tables with their own base width: one method instance per distinct width.

Every method has one width D. ``GroupedEmbeddings`` lets each table have its own: it groups the
tables by width, builds one method per width from the same method config (so the budget
fraction applies to each group, hence to the total), and returns the features' pooled vectors
side by side as ``[B, sum of feature widths]`` (TorchRec's ``KeyedTensor`` layout), features in
the interface's order (one-hot features first, then bags, each in the order given).
"""
from __future__ import annotations

from dataclasses import fields
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from fiited.interface import FeatureSpec, MethodConfig, TableSpec
from fiited.jagged import Jagged
from fiited.memory import MemoryReport
from fiited.optim import SparseOptimConfig
from fiited.registry import build_method, make_config

# Metrics of several groups that add up; every other metric is reported per group.
_ADDITIVE_SUFFIXES = ("_seconds", "_bytes")


def group_seed(seed: int, width: int) -> int:
    """The seed of the group of tables of ``width`` (several groups): a fixed mix of both, so
    groups draw independent initial values and a run is reproducible from ``seed``."""
    return (int(seed) * 0x9E3779B1 + int(width) * 0x85EBCA77 + 0x27D4EB2F) & 0x7FFFFFFF


def select_bags(bags: Jagged, names: Sequence[str]) -> Jagged:
    """The bag features ``names`` of a row-major ``Jagged``, as a new row-major ``Jagged`` (one
    vectorised gather; no copy when ``names`` are all its features in order)."""
    names = tuple(names)
    if names == tuple(bags.feature_names):
        return bags
    b, fm = bags.batch_size, bags.num_features
    dev = bags.offsets.device
    lengths = torch.diff(bags.offsets).view(b, fm)
    starts = bags.offsets[:-1].view(b, fm)
    sel = torch.tensor([bags.feature_names.index(n) for n in names], dtype=torch.long,
                       device=dev)
    out_len = lengths.index_select(1, sel).reshape(-1)
    src = starts.index_select(1, sel).reshape(-1)
    offsets = torch.zeros(out_len.numel() + 1, dtype=torch.long, device=dev)
    torch.cumsum(out_len, 0, out=offsets[1:])
    n = int(offsets[-1])
    idx = torch.repeat_interleave(src - offsets[:-1], out_len, output_size=n) + \
        torch.arange(n, device=dev)
    w = None if bags.weights is None else bags.weights.index_select(0, idx)
    return Jagged(bags.values.index_select(0, idx), offsets, names, w)


class GroupedEmbeddings(nn.Module):
    """``forward(ids, bags=None) -> [B, sum of widths]`` over tables of several widths.

    ``widths``: each table's base width, by table name (or one int for all). ``cfg``, ``optim``,
    ``features``: as for ``fiited.build_method``. With one width the only group keeps ``seed``
    (the result is exactly that method's); with several, group w uses ``group_seed(seed, w)``.
    """

    def __init__(self, cfg: Mapping[str, Any] | MethodConfig, tables: Sequence[TableSpec],
                 widths: Mapping[str, int] | int, optim: SparseOptimConfig, seed: int = 0,
                 features: Sequence[FeatureSpec] | None = None) -> None:
        super().__init__()
        tables = list(tables)
        if not tables:
            raise ValueError("GroupedEmbeddings needs at least one table")
        names = [t.name for t in tables]
        if isinstance(widths, int):
            widths = {n: widths for n in names}
        missing = [n for n in names if n not in widths]
        if missing:
            raise ValueError(f"no width given for table {missing[0]!r} (widths name "
                             f"{sorted(widths)})")
        extra = sorted(set(widths) - set(names))
        if extra:
            raise ValueError(f"width given for {extra[0]!r}, which is not one of the tables "
                             f"{names}")
        for n in names:
            w = widths[n]
            if isinstance(w, bool) or not isinstance(w, (int, np.integer)) or w < 1:
                raise ValueError(f"table {n!r}: width must be an int >= 1, got {w!r}")
        features = [FeatureSpec(n, n) for n in names] if features is None else list(features)
        for f in features:
            if f.table not in names:
                raise ValueError(f"feature {f.name!r} reads table {f.table!r}, which is not "
                                 f"one of the tables {names}")
        config = make_config(cfg)
        self.onehot_features = [f for f in features if f.pooling is None]
        self.bag_features = [f for f in features if f.pooling is not None]
        self.features = self.onehot_features + self.bag_features        # output order
        self.bag_names = tuple(f.name for f in self.bag_features)
        self.feature_widths = [int(widths[f.table]) for f in self.features]
        self.group_widths = sorted({int(widths[n]) for n in names})
        single = len(self.group_widths) == 1
        groups, self._onehot_cols, self._bag_names = [], [], []
        placed: list[int] = []                 # output feature index, in concatenation order
        for w in self.group_widths:
            g_tables = [t for t in tables if widths[t.name] == w]
            g_names = {t.name for t in g_tables}
            g_feats = [f for f in features if f.table in g_names]
            try:
                m = build_method(config, g_tables, w, optim,
                                 seed=seed if single else group_seed(seed, w),
                                 features=g_feats)
            except ValueError as e:
                raise ValueError(f"tables {sorted(g_names)} (width {w}): {e}") from None
            groups.append(m)
            self._onehot_cols.append([i for i, f in enumerate(self.onehot_features)
                                      if f.table in g_names])
            self._bag_names.append(tuple(f.name for f in m.bag_features))
            placed += [self.features.index(f) for f in m.features]
        self.groups = nn.ModuleList(groups)
        self._indices: dict[tuple, torch.Tensor] = {}   # not buffers: the ledger counts those
        # Columns of the concatenation that give the features in output order.
        starts = np.cumsum([0] + [self.feature_widths[i] for i in placed])
        at = {fi: int(s) for fi, s in zip(placed, starts[:-1])}
        cols = np.concatenate([np.arange(at[i], at[i] + self.feature_widths[i])
                               for i in range(len(self.features))])
        self._identity = bool((cols == np.arange(cols.size)).all())
        self._cols = cols.tolist()

    @property
    def config(self) -> MethodConfig:
        return self.groups[0].config

    @property
    def output_width(self) -> int:
        return int(sum(self.feature_widths))

    def forward(self, ids: torch.Tensor, bags: Jagged | None = None) -> torch.Tensor:
        if not isinstance(ids, torch.Tensor) or ids.dim() != 2 or \
                ids.shape[1] != len(self.onehot_features):
            shape = tuple(ids.shape) if isinstance(ids, torch.Tensor) else type(ids).__name__
            raise ValueError(f"ids must be [batch, {len(self.onehot_features)}] (one column per "
                             f"one-hot feature), got {shape}")
        if bags is not None and tuple(bags.feature_names) != self.bag_names:
            raise ValueError(f"bags.feature_names {list(bags.feature_names)} do not match the "
                             f"bag features {list(self.bag_names)} (same names, same order)")
        b = ids.shape[0]
        outs = []
        for m, cols, bnames in zip(self.groups, self._onehot_cols, self._bag_names):
            g_ids = ids if len(cols) == ids.shape[1] else \
                ids.index_select(1, self._index(cols, ids.device))
            g_bags = select_bags(bags, bnames) if (bags is not None and bnames) else None
            outs.append(m(g_ids, g_bags).reshape(b, -1))
        out = outs[0] if len(outs) == 1 else torch.cat(outs, 1)
        return out if self._identity else out.index_select(1, self._index(self._cols, out.device))

    def _index(self, cols: list[int], device: torch.device) -> torch.Tensor:
        """``cols`` as an int64 tensor on ``device``, made once (no host copy per step)."""
        key = (tuple(cols), device)
        if key not in self._indices:
            self._indices[key] = torch.tensor(cols, dtype=torch.long, device=device)
        return self._indices[key]

    def split(self, out: torch.Tensor) -> dict[str, torch.Tensor]:
        """The output [B, sum of widths] as {feature name: [B, its width]}."""
        return dict(zip([f.name for f in self.features], out.split(self.feature_widths, 1)))

    # ---- the method lifecycle, forwarded to every group ----------------------------------
    @property
    def needs_train_ids(self) -> bool:
        return any(getattr(m, "needs_train_ids", False) for m in self.groups)

    def prepare(self, train_ids, bag_values=()) -> None:
        """Hand each group its one-hot columns and bag values (methods that count first)."""
        bag_values = list(bag_values)
        for m, cols, bnames in zip(self.groups, self._onehot_cols, self._bag_names):
            if getattr(m, "needs_train_ids", False):
                ids = train_ids if len(cols) == train_ids.shape[1] else \
                    np.asarray(train_ids)[:, cols]
                m.prepare(ids, bag_values=[(n, v) for n, v in bag_values if n in bnames])

    def on_step(self, step: int) -> dict[str, float]:
        return self._merge([m.on_step(step) for m in self.groups])

    def on_train_end(self) -> dict[str, float]:
        return self._merge([m.on_train_end() for m in self.groups])

    def _merge(self, per_group: list[dict[str, float]]) -> dict[str, float]:
        """One group: its metrics. Several: every metric as ``name@d<width>``, and seconds and
        bytes also summed under their own name (the others do not add across widths)."""
        if len(per_group) == 1:
            return per_group[0]
        out: dict[str, float] = {}
        for w, metrics in zip(self.group_widths, per_group):
            for k, v in metrics.items():
                out[f"{k}@d{w}"] = v
                if k.endswith(_ADDITIVE_SUFFIXES):
                    out[k] = out.get(k, 0.0) + float(v)
        return out

    def memory(self) -> MemoryReport:
        """The groups' ledgers summed, component by component (uniform at each table's width
        is the reference, so compression compares like with like)."""
        total = MemoryReport()
        for m in self.groups:
            r = m.memory()
            for fld in fields(MemoryReport):
                if fld.name == "per_table":
                    total.per_table.update(r.per_table)
                else:
                    setattr(total, fld.name, getattr(total, fld.name) + getattr(r, fld.name))
        return total

    def dims(self) -> dict[str, torch.Tensor]:
        """Per table, counts of rows by kept width (each vector as long as its width + 1)."""
        out: dict[str, torch.Tensor] = {}
        for m in self.groups:
            out.update(m.dims())
        return out
