"""TorchRec adapter: any registered method in place of an ``EmbeddingBagCollection``.

``TorchRecEmbeddings(tables=[EmbeddingBagConfig, ...], method={"name": "fiited", ...})`` takes a
``KeyedJaggedTensor`` and returns a ``KeyedTensor`` exactly as TorchRec's EBC does (same keys,
same order, ``feature@table`` for a feature that several tables read), so a TorchRec model (e.g.
``torchrec.models.dlrm.DLRM``) runs on uniform, FIITED or any baseline unchanged. It lives in
``baselines`` so it sees every method; torchrec is imported only when the adapter is built (the
extra ``pip install '.[torchrec]'`` + ``make install-torchrec``), so ``import baselines`` works
without it.

KJT is feature-major (feature f's bags of all rows, then f+1); ``Jagged`` is row-major (bag
``b*Fm + f``). ``kjt_to_jagged`` converts with one vectorised gather (no loop over rows or ids).
The method's pooled gradient updates its own pools in backward (the fused sparse optimizer), so
the dense optimizer never sees them, as for every method here; call ``on_step`` after each step.
Tables may have different ``embedding_dim``s: ``fiited.grouped.GroupedEmbeddings`` builds one
method per width (same config, so the budget applies to each width's tables) and the KeyedTensor's
``length_per_key`` are the per-feature widths.
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from fiited.grouped import GroupedEmbeddings
from fiited.interface import FeatureSpec, MethodConfig, TableSpec
from fiited.jagged import Jagged
from fiited.optim import SparseOptimConfig

_POOLING = {"SUM": "sum", "MEAN": "mean"}


def _torchrec():
    try:
        import torchrec
    except ImportError as e:  # pragma: no cover - exercised only without the extra
        raise ImportError("the TorchRec adapter needs the extra: pip install '.[torchrec]' "
                          "then make install-torchrec (torchrec==1.8.0 --no-deps)") from e
    return torchrec


def embedding_names(tables: Sequence[Any]) -> list[tuple[str, str, str]]:
    """(output key, KJT feature, table) per pooled output, in EBC's order: tables in order,
    each table's feature_names in order; a feature read by several tables is ``feature@table``
    (TorchRec's ``get_embedding_names_by_table`` rule)."""
    seen: dict[str, int] = {}
    for t in tables:
        for f in _feature_names(t):
            seen[f] = seen.get(f, 0) + 1
    return [(f"{f}@{t.name}" if seen[f] > 1 else f, f, t.name)
            for t in tables for f in _feature_names(t)]


def _feature_names(table: Any) -> list[str]:
    return list(table.feature_names) or [table.name]


def kjt_to_jagged(kjt: Any, features: Sequence[str], names: Sequence[str] | None = None,
                  weighted: bool = True) -> Jagged:
    """A ``Jagged`` (row-major) of the KJT keys ``features`` in that order (repeats allowed).

    ``names``: the Jagged's feature names (default ``features``). KJT keys not asked for are
    dropped; a missing key or a variable-batch KJT raises ValueError. ``weighted=False`` drops
    the KJT's weights (EBC's ``is_weighted=False`` ignores them too)."""
    keys = list(kjt.keys())
    missing = [f for f in features if f not in keys]
    if missing:
        raise ValueError(f"KeyedJaggedTensor has no feature {missing[0]!r} (its keys: {keys})")
    if kjt.variable_stride_per_key():
        raise ValueError("variable-batch KeyedJaggedTensor (stride per key) is not supported; "
                         "pass one batch size for every feature")
    fk, fm, b = len(keys), len(features), kjt.stride()
    lengths = kjt.lengths().long()
    if lengths.numel() != fk * b:
        raise ValueError(f"KeyedJaggedTensor: {lengths.numel()} lengths for {fk} keys x "
                         f"batch {b}")
    lengths = lengths.view(fk, b)
    starts = torch.cumsum(lengths.reshape(-1), 0).view(fk, b) - lengths   # feature-major
    sel = torch.tensor([keys.index(f) for f in features], dtype=torch.long,
                       device=lengths.device)
    out_len = lengths.index_select(0, sel).t().reshape(-1)                  # row-major [B*Fm]
    src = starts.index_select(0, sel).t().reshape(-1)
    offsets = torch.zeros(b * fm + 1, dtype=torch.long, device=lengths.device)
    torch.cumsum(out_len, 0, out=offsets[1:])
    n = int(offsets[-1])
    idx = torch.repeat_interleave(src - offsets[:-1], out_len, output_size=n) + \
        torch.arange(n, device=lengths.device)
    w = kjt.weights_or_none() if weighted else None
    return Jagged(kjt.values().index_select(0, idx), offsets,
                  tuple(names if names is not None else features),
                  None if w is None else w.index_select(0, idx))


class TorchRecEmbeddings(nn.Module):
    """EBC's interface (``forward(kjt) -> KeyedTensor``, ``embedding_bag_configs()``,
    ``is_weighted()``) over one embedding method per width; ``method`` is a method config (dict or
    ``MethodConfig``) as for ``fiited.build_method``."""

    def __init__(self, tables: Sequence[Any], method: Mapping[str, Any] | MethodConfig | None = None,
                 optim: SparseOptimConfig | None = None, seed: int = 0,
                 is_weighted: bool = False) -> None:
        super().__init__()
        torchrec = _torchrec()
        tables = list(tables)
        if not tables:
            raise ValueError("TorchRecEmbeddings: no EmbeddingBagConfig given")
        names = [t.name for t in tables]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"EmbeddingBagConfig: duplicate table name {dup[0]!r}")
        for t in tables:
            if t.pooling.name not in _POOLING:
                raise ValueError(f"EmbeddingBagConfig {t.name!r}: pooling={t.pooling.name} is "
                                 f"not supported (SUM or MEAN)")
            if t.data_type != torchrec.DataType.FP32:
                raise ValueError(f"EmbeddingBagConfig {t.name!r}: data_type={t.data_type.name};"
                                 f" only FP32 is supported")
        self._configs = tables
        self._is_weighted = bool(is_weighted)
        self._prepared = False
        triples = embedding_names(tables)
        self.keys = [k for k, _, _ in triples]
        self.kjt_features = [f for _, f, _ in triples]
        pooling = {t.name: _POOLING[t.pooling.name] for t in tables}
        features = [FeatureSpec(k, tab, pooling[tab]) for k, _, tab in triples]
        self.embeddings = GroupedEmbeddings(
            method if method is not None else {"name": "uniform"},
            [TableSpec(t.name, int(t.num_embeddings)) for t in tables],
            {t.name: int(t.embedding_dim) for t in tables},
            optim if optim is not None else SparseOptimConfig(), seed=seed, features=features)
        self.widths = list(self.embeddings.feature_widths)       # per key, KeyedTensor order

    @property
    def method(self):
        """The embedding method when every table has one width; with several widths there is
        one method per width, in ``embeddings.groups`` (ascending width)."""
        groups = self.embeddings.groups
        if len(groups) > 1:
            raise ValueError(f"tables have {len(groups)} widths "
                             f"{self.embeddings.group_widths}: one method per width, see "
                             f"TorchRecEmbeddings.embeddings.groups")
        return groups[0]

    @property
    def needs_train_ids(self) -> bool:
        """True for methods that read the training split before training (freq_filter)."""
        return self.embeddings.needs_train_ids

    def prepare(self, train: Any | Iterable[Any]) -> None:
        """Hand the training split (one KJT or an iterable of KJT batches) to a method that
        counts it before training (freq_filter: every id occurrence counts); a no-op for the
        others. Call it once, before the first forward."""
        if not self.needs_train_ids:
            return
        batches = [train] if hasattr(train, "keys") and hasattr(train, "values") else list(train)
        per: dict[str, list[torch.Tensor]] = {k: [] for k in self.keys}
        for kjt in batches:                                     # batches, not rows
            cols = kjt_to_jagged(kjt, self.kjt_features, self.keys, weighted=False)
            for k in self.keys:
                per[k].append(cols.feature(k)[0].cpu())
        self.embeddings.prepare(np.zeros((0, 0), dtype=np.int64),
                                bag_values=[(k, torch.cat(v).numpy()) for k, v in per.items()])
        self._prepared = True

    def embedding_bag_configs(self) -> list[Any]:
        return self._configs

    def is_weighted(self) -> bool:
        return self._is_weighted

    def to_jagged(self, kjt: Any) -> Jagged:
        return kjt_to_jagged(kjt, self.kjt_features, self.keys, weighted=self._is_weighted)

    def forward(self, features: Any) -> Any:
        kt_cls = _torchrec().KeyedTensor
        if self.needs_train_ids and not self._prepared:
            raise ValueError(f"method {self.embeddings.config.name!r} counts the training split "
                             f"first: call TorchRecEmbeddings.prepare(train KJTs) before forward")
        bags = self.to_jagged(features)
        b = bags.batch_size
        ids = torch.empty(b, 0, dtype=torch.long, device=bags.values.device)
        out = self.embeddings(ids, bags=bags)                      # [B, sum of widths]
        return kt_cls(keys=list(self.keys), length_per_key=list(self.widths), values=out)

    # the method's lifecycle, for a training loop that owns this module
    def on_step(self, step: int) -> dict[str, float]:
        return self.embeddings.on_step(step)

    def on_train_end(self) -> dict[str, float]:
        return self.embeddings.on_train_end()

    def memory(self):
        return self.embeddings.memory()

    def dims(self):
        return self.embeddings.dims()
