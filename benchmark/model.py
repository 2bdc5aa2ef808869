"""DLRM (Naumov et al. 2019): bottom MLP for dense features, dot interaction, top MLP.

The embedding method is a submodule, so one forward covers the whole model; its pools are
buffers updated by the fused sparse optimizer, so ``dense_parameters`` is what the dense
optimizer gets (projection layers of a method included).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from fiited.interface import EmbeddingMethod
from fiited.jagged import Jagged


@dataclass
class ModelConfig:
    name: str = "dlrm"
    dim: int = 16
    bottom_mlp: list[int] = field(default_factory=lambda: [512, 256, 64])
    top_mlp: list[int] = field(default_factory=lambda: [512, 256])
    interaction: str = "dot"      # dot | cat
    self_interaction: bool = False
    # DCN-v2 only (name: dcn, benchmark/dcn.py); DLRM ignores them.
    cross_layers: int = 3
    structure: str = "stacked"    # stacked | parallel


def mlp(sizes: list[int], final_activation: bool) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        lin = nn.Linear(sizes[i], sizes[i + 1])
        # DLRM's init: N(0, sqrt(2/(fan_in+fan_out))) weights, N(0, sqrt(1/fan_out)) biases.
        nn.init.normal_(lin.weight, 0.0, (2.0 / (sizes[i] + sizes[i + 1])) ** 0.5)
        nn.init.normal_(lin.bias, 0.0, (1.0 / sizes[i + 1]) ** 0.5)
        layers.append(lin)
        if i < len(sizes) - 2 or final_activation:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class Head(nn.Module):
    """What every model head shares: the embedding method as a submodule and the bottom MLP
    that turns the dense features into one more D-vector beside the F embeddings (F counts the
    method's bag features too: ``forward(dense, ids, bags=None)``)."""

    def __init__(self, cfg: ModelConfig, num_dense: int, embeddings: EmbeddingMethod) -> None:
        super().__init__()
        if embeddings.dim != cfg.dim:
            raise ValueError(f"embedding dim {embeddings.dim} != model.dim {cfg.dim}")
        self.cfg = cfg
        self.embeddings = embeddings
        self.bottom = (mlp([num_dense, *cfg.bottom_mlp, cfg.dim], final_activation=True)
                       if num_dense else None)
        self.num_vectors = embeddings.num_features + (1 if num_dense else 0)

    def dense_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def vectors(self, dense: torch.Tensor, ids: torch.Tensor, bags: Jagged | None = None
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """([B, n, D]: bottom(dense), if any, then the embeddings (one-hot features, then bag
        features); bottom(dense) [B, D] or None). One-hot-only calls are exactly as before."""
        emb = self.embeddings(ids) if bags is None else self.embeddings(ids, bags)  # [B, F, D]
        if self.bottom is None:
            return emb, None
        x = self.bottom(dense)                                       # [B, D]
        return torch.cat([x.unsqueeze(1), emb], dim=1), x


class DLRM(Head):
    def __init__(self, cfg: ModelConfig, num_dense: int, embeddings: EmbeddingMethod) -> None:
        if cfg.interaction not in ("dot", "cat"):
            raise ValueError(f"model.interaction must be 'dot' or 'cat', got {cfg.interaction!r}")
        super().__init__(cfg, num_dense, embeddings)
        d, n_vec = cfg.dim, self.num_vectors
        if cfg.interaction == "dot":
            offset = 0 if cfg.self_interaction else -1
            li, lj = torch.tril_indices(n_vec, n_vec, offset=offset)
            self.register_buffer("li", li, persistent=False)
            self.register_buffer("lj", lj, persistent=False)
            top_in = (d if num_dense else 0) + li.numel()
        else:
            top_in = n_vec * d
        self.top = mlp([top_in, *cfg.top_mlp, 1], final_activation=False)

    def forward(self, dense: torch.Tensor, ids: torch.Tensor,
                bags: Jagged | None = None) -> torch.Tensor:
        t, x = self.vectors(dense, ids, bags)                        # [B, n, D]
        if self.cfg.interaction == "dot":
            z = torch.bmm(t, t.transpose(1, 2))[:, self.li, self.lj]
            top_in = torch.cat([x, z], dim=1) if x is not None else z
        else:
            top_in = t.flatten(1)
        return self.top(top_in).squeeze(1)
