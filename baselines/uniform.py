"""Uniform embeddings: every row keeps the same width.

At ``budget`` < 1 the width is round(budget * D) (>= 1), zero-padded to D: the simplest
equal-memory baseline.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from fiited.interface import EmbeddingMethod, MethodConfig
from fiited.kernels import bag_lookup, lookup
from fiited.memory import MemoryReport, tensor_bytes
from fiited.registry import register_method


@dataclass
class UniformConfig(MethodConfig):
    name: str = "uniform"


@register_method("uniform")
class Uniform(EmbeddingMethod):
    config_class = UniformConfig

    def __init__(self, tables, dim, optim, config, seed=0, features=None):
        super().__init__(tables, dim, optim, config, seed, features)
        self.width = max(1, min(dim, round(config.budget * dim)))
        self.init_full_table(self.width)

    def embed(self, ids):
        b, f = ids.shape
        rows = self.global_rows(ids).reshape(-1, 1)
        out = lookup(self.pool, self.opt_state, rows, self.optim)
        if self.width < self.dim:
            out = F.pad(out, (0, self.dim - self.width))
        return out.view(b, f, self.dim)

    def embed_bags(self, occ):
        out = bag_lookup(self.pool, self.opt_state, occ.rows.unsqueeze(1), occ.offsets,
                         self.optim, occ.weights, occ.mode)
        return F.pad(out, (0, self.dim - self.width)) if self.width < self.dim else out

    def embed_rows(self, rows):
        out = lookup(self.pool, self.opt_state, rows.unsqueeze(1), self.optim)
        return F.pad(out, (0, self.dim - self.width)) if self.width < self.dim else out

    def memory(self) -> MemoryReport:
        uw, ut = self.uniform_reference()
        per_row = self.width * 4 + self.optim.state_floats_per_row * 4
        return MemoryReport(
            weights=tensor_bytes(self.pool), optimizer=tensor_bytes(self.opt_state),
            uniform_weights=uw, uniform_total=ut,
            per_table={t.name: t.num_rows * per_row for t in self.tables})

    def dims(self):
        return self.constant_width_dims(self.width)
