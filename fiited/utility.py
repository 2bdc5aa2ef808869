"""Chunk utilities: u <- gamma * u + contribution, per chunk, at O(touched chunks) per step.

Per training step, a row seen ``a`` times in the batch with per-occurrence chunk gradient
norms ``n_1..n_a`` contributes, per chunk position:

- ``freq``      a                        (access frequency)
- ``grad``      g = (n_1 + ... + n_a) / a (mean gradient norm)
- ``freq_grad`` a * g = n_1 + ... + n_a  (default)

Absent chunks earn utility too: the gradient of a zero-padded slice is defined.

Decay ``decay_per: step`` (gamma per training step) is exact without touching untouched rows:
``util`` holds u * gamma^-(t - t0) (a scaled time base), a contribution at step t is added as
c * gamma^-(t - t0), and the true u = util * gamma^(t - t0). The base is renormalised (one
O(rows) multiply, t0 <- t) when a true value is asked for (pruning events) or before the scale
gets large enough to threaten float32 range. ``decay_per: event`` (ITEP) never decays per step
and multiplies everything by gamma at each pruning event instead.
"""
from __future__ import annotations

import torch
from torch import nn

UTILITIES = ("freq", "grad", "freq_grad")
DECAY_MODES = ("step", "event")


def move_rows(table: torch.Tensor, old: torch.Tensor, new: torch.Tensor, fill,
              offset: int = 0, block: int = 1 << 16) -> None:
    """In place: row new[i] - offset of ``table`` gets row old[i] - offset, every other row
    ``fill``. Only the rows that change place are copied (one column of them at a time) and
    the int32 indices are widened a block at a time: after a hash table rebuild most rows
    stay put, so the temporary is far smaller than a column of the table."""
    n = table.shape[0]
    empty = torch.ones(n, dtype=torch.bool, device=table.device)
    moved = []
    for a in range(0, old.numel(), block):
        o, w = old[a:a + block], new[a:a + block]
        empty[w.long() - offset] = False
        moved.append((o != w).nonzero().squeeze(1).add_(a).to(old.dtype))
    sel = torch.cat(moved) if moved else old[:0]
    del moved
    src, dst = old.index_select(0, sel) - offset, new.index_select(0, sel) - offset
    del sel
    for k in range(table.shape[1]):
        col = table[:, k]
        vals = col.index_select(0, src)                   # read every source before writing
        col.masked_fill_(empty, fill)
        for a in range(0, dst.numel(), block):
            col.index_copy_(0, dst[a:a + block].long(), vals[a:a + block])
        del vals


class ChunkUtility(nn.Module):
    """Utilities of every chunk of every entry (virtual row, or hashed slot), [E, K] float32."""

    def __init__(self, num_entries: int, num_chunks: int, kind: str = "freq_grad",
                 gamma: float = 0.99, decay_per: str = "step", renorm_limit: float = 1e12) -> None:
        super().__init__()
        if kind not in UTILITIES:
            raise ValueError(f"method.utility={kind!r} is not one of {UTILITIES}")
        if decay_per not in DECAY_MODES:
            raise ValueError(f"method.decay_per={decay_per!r} is not one of {DECAY_MODES}")
        if not 0 < gamma <= 1:
            raise ValueError(f"method.gamma must be in (0, 1], got {gamma}")
        if not renorm_limit > 1:
            raise ValueError(f"renorm_limit must be > 1, got {renorm_limit}")
        self.kind = kind
        self.gamma = float(gamma)
        self.decay_per = decay_per
        self.renorm_limit = float(renorm_limit)
        self.register_buffer("util", torch.zeros(num_entries, num_chunks))
        self.t = 0      # training steps completed
        self.t0 = 0     # step of the time base
        self.renormalisations = 0

    @property
    def _per_step(self) -> bool:
        return self.decay_per == "step" and self.gamma < 1.0

    def _scale(self) -> float:
        """Weight of a contribution made during step t+1 in the current time base."""
        if not self._per_step:
            return 1.0
        return self.gamma ** -(self.t + 1 - self.t0)

    def accumulate(self, rows: torch.Tensor, norms: torch.Tensor) -> None:
        """Add this step's contributions: ``rows`` [N] entries, ``norms`` [N, K]."""
        if rows.numel() == 0:
            return
        scale = self._scale()
        norms = norms.float()
        # (index_add_ with alpha= takes a slow path on CPU, and accumulating index_put_ beats
        # index_add_ there: scale the values, then accumulate.)
        if self.kind == "freq_grad":
            self.util.index_put_((rows,), norms * scale if scale != 1.0 else norms,
                                 accumulate=True)
        elif self.kind == "freq":
            self.util.index_put_((rows,), norms.new_full(norms.shape, scale), accumulate=True)
        else:  # grad: the mean over the occurrences of each row
            uniq, inverse, counts = torch.unique(rows, return_inverse=True, return_counts=True)
            sums = norms.new_zeros(uniq.numel(), norms.shape[1]).index_add_(0, inverse, norms)
            self.util.index_add_(0, uniq, sums * (scale / counts.unsqueeze(1).float()))

    def advance(self) -> None:
        """One training step done. Renormalise before the next scale would pass the limit."""
        self.t += 1
        if self._per_step and self.gamma ** -(self.t + 1 - self.t0) > self.renorm_limit:
            self.renormalise()

    def renormalise(self) -> None:
        if self._per_step and self.t != self.t0:
            self.util.mul_(self.gamma ** (self.t - self.t0))
            self.renormalisations += 1
        self.t0 = self.t

    def values(self) -> torch.Tensor:
        """The true utilities now (renormalises the base in place; O(rows))."""
        self.renormalise()
        return self.util

    def event_decay(self) -> None:
        """Per-event decay (``decay_per: event``); a no-op for per-step decay."""
        if self.decay_per == "event" and self.gamma < 1.0:
            self.util.mul_(self.gamma)

    def move(self, old: torch.Tensor, new: torch.Tensor, start: int = 0) -> None:
        """Entries ``old`` now live at ``new`` (a hash table from entry ``start`` on was
        rebuilt); its other entries are gone."""
        lo = int(start)
        move_rows(self.util[lo:], old, new, 0.0, offset=lo)

    def get_extra_state(self) -> dict:
        return {"t": self.t, "t0": self.t0, "renormalisations": self.renormalisations}

    def set_extra_state(self, state: dict) -> None:
        self.t, self.t0 = int(state["t"]), int(state["t0"])
        self.renormalisations = int(state.get("renormalisations", 0))
