"""``Jagged``: one batch of multi-hot (bag) features, the one place this concept lives.

Like TorchRec's ``KeyedJaggedTensor`` but ours and torch-only: for ``B`` rows and ``Fm`` bag
features, ``values[N]`` holds the ids (each within its own feature's table, 0..cardinality-1),
``offsets[B*Fm + 1]`` bounds the bags, bag ``b*Fm + f`` (row-major: row b, feature f; the order
the bag kernels in ``fiited.kernels`` use) being ``values[offsets[i]:offsets[i+1]]``; optional
``weights[N]`` weigh each id in its bag. An empty bag pools to zeros.

How a batch with both kinds of feature is passed: the one-hot columns stay ``ids[B, F1]`` as
today (no cost for them), the bag features come as an optional ``Jagged``; an embedding method
takes ``forward(ids, bags=None)``. ``Jagged.from_dense(ids)`` turns one-hot ``ids[B, F]`` into
the special case of bags of length one, for code that wants a single path.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch


@dataclass(frozen=True)
class Jagged:
    values: torch.Tensor                 # int64/int32 [N]
    offsets: torch.Tensor                # int64 [B*Fm + 1], offsets[0] == 0, non-decreasing
    feature_names: tuple[str, ...]
    weights: torch.Tensor | None = None  # float [N]

    @property
    def num_features(self) -> int:
        return len(self.feature_names)

    @property
    def batch_size(self) -> int:
        return (self.offsets.numel() - 1) // max(self.num_features, 1)

    def lengths(self) -> torch.Tensor:
        """Bag lengths as [B, Fm] (int64)."""
        return torch.diff(self.offsets).view(self.batch_size, self.num_features)

    @classmethod
    def from_lengths(cls, values: torch.Tensor, lengths: torch.Tensor,
                     feature_names: Sequence[str], weights: torch.Tensor | None = None,
                     validate: bool = True) -> "Jagged":
        """From bag lengths [B, Fm] (or flat [B*Fm], row-major) instead of offsets."""
        lengths = torch.as_tensor(lengths).reshape(-1).long()
        offsets = torch.zeros(lengths.numel() + 1, dtype=torch.long, device=lengths.device)
        torch.cumsum(lengths, 0, out=offsets[1:])
        j = cls(values, offsets, tuple(feature_names), weights)
        if validate:
            j.validate()
        return j

    @classmethod
    def from_dense(cls, ids: torch.Tensor, feature_names: Sequence[str]) -> "Jagged":
        """One-hot ids[B, F] as bags of one id each (values = ids row-major)."""
        if ids.dim() != 2 or ids.shape[1] != len(feature_names):
            raise ValueError(f"from_dense: ids must be [batch, {len(feature_names)}], "
                             f"got {tuple(ids.shape)}")
        offsets = torch.arange(ids.numel() + 1, dtype=torch.long, device=ids.device)
        return cls(ids.reshape(-1), offsets, tuple(feature_names))

    def to(self, device: torch.device | str, non_blocking: bool = False) -> "Jagged":
        w = None if self.weights is None else self.weights.to(device, non_blocking=non_blocking)
        return Jagged(self.values.to(device, non_blocking=non_blocking),
                      self.offsets.to(device, non_blocking=non_blocking), self.feature_names, w)

    def rows(self, lo: int, hi: int) -> "Jagged":
        """Rows [lo, hi) of the batch (e.g. one rank's share), no copy of the values."""
        fm = self.num_features
        a, b = int(self.offsets[lo * fm]), int(self.offsets[hi * fm])
        w = None if self.weights is None else self.weights[a:b]
        return Jagged(self.values[a:b], self.offsets[lo * fm:hi * fm + 1] - a,
                      self.feature_names, w)

    def feature(self, name: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """One feature's (values, offsets[B+1], weights) as its own jagged column."""
        f = self.feature_names.index(name)
        lens = self.lengths()[:, f]
        starts = self.offsets[:-1].view(self.batch_size, self.num_features)[:, f]
        idx = torch.repeat_interleave(starts - _excl_cumsum(lens), lens) + \
            torch.arange(int(lens.sum()), device=lens.device)
        off = torch.cat([lens.new_zeros(1), torch.cumsum(lens, 0)])
        w = None if self.weights is None else self.weights[idx]
        return self.values[idx], off, w

    def validate(self, cardinalities: Sequence[int] | None = None) -> None:
        """Raise one ValueError naming the feature and bag at fault (shapes, offsets, ids)."""
        fm, off = self.num_features, self.offsets
        if fm == 0:
            raise ValueError("Jagged: no feature_names")
        if self.values.dim() != 1 or self.values.dtype not in (torch.int32, torch.int64):
            raise ValueError(f"Jagged: values must be int32/int64 [N], got {self.values.dtype} "
                             f"{tuple(self.values.shape)}")
        if off.dim() != 1 or off.dtype != torch.int64 or (off.numel() - 1) % fm:
            raise ValueError(f"Jagged: offsets must be int64 [B*{fm}+1] for {fm} features, got "
                             f"{off.dtype} {tuple(off.shape)}")
        if int(off[0]) != 0 or int(off[-1]) != self.values.numel():
            raise ValueError(f"Jagged: offsets must run from 0 to len(values)="
                             f"{self.values.numel()}, got {int(off[0])}..{int(off[-1])}")
        bad = torch.nonzero(torch.diff(off) < 0)
        if bad.numel():
            i = int(bad[0])
            raise ValueError(f"Jagged: feature {self.feature_names[i % fm]!r}, bag of row "
                             f"{i // fm}: offsets decrease ({int(off[i])} -> {int(off[i + 1])})")
        if self.weights is not None and self.weights.shape != self.values.shape:
            raise ValueError(f"Jagged: weights shape {tuple(self.weights.shape)} != values "
                             f"shape {tuple(self.values.shape)}")
        if cardinalities is None or not self.values.numel():
            return
        if len(cardinalities) != fm:
            raise ValueError(f"Jagged: {len(cardinalities)} cardinalities for {fm} features")
        bag = torch.repeat_interleave(torch.arange(off.numel() - 1, device=off.device),
                                      torch.diff(off))
        card = torch.as_tensor(list(cardinalities), device=off.device)[bag % fm]
        v = self.values.long()
        wrong = torch.nonzero((v < 0) | (v >= card))
        if wrong.numel():
            n = int(wrong[0])
            i = int(bag[n])
            raise ValueError(f"Jagged: feature {self.feature_names[i % fm]!r}, bag of row "
                             f"{i // fm}: id {int(v[n])} outside 0..{int(card[n]) - 1}")


def _excl_cumsum(x: torch.Tensor) -> torch.Tensor:
    return torch.cumsum(x, 0) - x


# ---- what an embedding method's bag path sees ------------------------------------------------
POOLINGS = ("sum", "mean")


@dataclass(frozen=True)
class Occurrences:
    """Every id of a batch as bags over C = F1 + Fm columns (one-hot columns first, as bags of
    one), row-major: bag ``b*C + c``; ``rows`` are global pool rows (id + its table's offset).

    One set, so that one lookup (one fused update, a row's occurrences coalesced across all the
    features that read its table) serves the whole batch. Mixed pooling is folded into ``weights`` (mean = sum with
    w/len), so one ``mode`` holds for every bag.
    """

    rows: torch.Tensor                   # int64 [N]
    offsets: torch.Tensor                # int64 [B*C + 1]
    weights: torch.Tensor | None         # float32 [N] or None (all ones)
    mode: str                            # "sum" | "mean"
    batch_size: int
    num_columns: int

    def bag_of(self) -> torch.Tensor:
        """The bag of each occurrence [N] (int64), without a Python loop."""
        lengths = torch.diff(self.offsets)
        return torch.repeat_interleave(torch.arange(lengths.numel(), device=lengths.device),
                                       lengths, output_size=self.rows.numel())


def merge(ids: torch.Tensor, bags: Jagged | None, onehot_shift: torch.Tensor,
          bag_shift: torch.Tensor, modes: Sequence[str]) -> Occurrences:
    """One-hot ids[B, F1] and ``bags`` (Fm features) as ``Occurrences``; ``onehot_shift[F1]`` and
    ``bag_shift[Fm]`` are each column's table offset, ``modes[Fm]`` each bag feature's pooling."""
    b, f1 = ids.shape
    dev = ids.device
    oh_rows = (ids.long() + onehot_shift.to(dev)).reshape(-1)
    if bags is None:
        return Occurrences(oh_rows, torch.arange(b * f1 + 1, device=dev), None, "sum", b, f1)
    fm, nb = bags.num_features, bags.values.numel()
    lens_b = bags.lengths()
    bag_n = torch.repeat_interleave(torch.arange(b * fm, device=dev), lens_b.reshape(-1),
                                    output_size=nb)
    fcol = bag_n % fm
    vals = bags.values.long() + bag_shift.to(dev)[fcol]
    w = None if bags.weights is None else bags.weights.float()
    mode = modes[0] if len(set(modes)) == 1 else "sum"
    if len(set(modes)) > 1:                  # mean features: weight w / len, pooled by sum
        is_mean = torch.tensor([m == "mean" for m in modes], device=dev)[fcol]
        inv = lens_b.reshape(-1).index_select(0, bag_n).float().reciprocal()
        factor = torch.where(is_mean, inv, torch.ones_like(inv))
        w = factor if w is None else w * factor
    if f1 == 0:
        return Occurrences(vals, bags.offsets, w, mode, b, fm)
    lens = torch.cat([torch.ones(b, f1, dtype=torch.long, device=dev), lens_b], 1).reshape(-1)
    offsets = torch.zeros(lens.numel() + 1, dtype=torch.long, device=dev)
    torch.cumsum(lens, 0, out=offsets[1:])
    n = b * f1 + nb
    pos_b = torch.arange(nb, device=dev) + f1 * (bag_n // fm + 1)
    starts = bags.offsets[:-1:fm]            # where each row's bag values begin [B]
    pos_oh = ((starts + torch.arange(b, device=dev) * f1).unsqueeze(1)
              + torch.arange(f1, device=dev)).reshape(-1)
    rows = torch.empty(n, dtype=torch.long, device=dev)
    rows[pos_b] = vals
    rows[pos_oh] = oh_rows
    weights = None
    if w is not None:
        weights = torch.ones(n, dtype=torch.float32, device=dev)
        weights[pos_b] = w
    return Occurrences(rows, offsets, weights, mode, b, f1 + fm)


def pool(per: torch.Tensor, occ: Occurrences) -> torch.Tensor:
    """Pool per-occurrence vectors [N, W] into bags [B*C, W] (weighted sum or mean; empty bags
    give zeros). Differentiable: each occurrence's gradient is its share w * g (/ len)."""
    if occ.weights is not None:
        per = per * occ.weights.to(per.dtype).unsqueeze(1)
    out = per.new_zeros(occ.offsets.numel() - 1, per.shape[1])
    out = out.index_add(0, occ.bag_of(), per)
    if occ.mode == "mean":
        out = out / torch.diff(occ.offsets).clamp_min(1).to(out.dtype).unsqueeze(1)
    return out
