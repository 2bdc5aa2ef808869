"""DCN-v2 (Wang et al. 2021, "DCN V2"): a full-rank cross network beside DLRM, same inputs.

x0 = [bottom(dense), e_1, ..., e_F] flattened (the embedding outputs [B, F, D] exactly as DLRM
gets them, the dense features through the same bottom MLP as in the MLPerf DLRM-DCNv2 model;
without dense features x0 is the embeddings alone). Each cross layer computes
``x_{l+1} = x0 * (W_l x_l + b_l) + x_l`` with a full-rank W_l [d, d]. ``structure``:
``stacked`` (the default here, one of the paper's two structures, chosen for this suite): the
deep tower (``top_mlp``) runs on the cross output x_L, then a linear logit; ``parallel``: the
deep tower runs on x0 beside the cross network and the logit reads [x_L, deep(x0)]. The
low-rank / mixture-of-experts variant is not built.
"""
from __future__ import annotations

import torch
from torch import nn

from benchmark.model import DLRM, Head, ModelConfig, mlp
from fiited.interface import EmbeddingMethod
from fiited.jagged import Jagged

STRUCTURES = ("stacked", "parallel")


class CrossLayer(nn.Module):
    """x_{l+1} = x0 * (W x_l + b) + x_l (elementwise *, full-rank W)."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.linear = nn.Linear(width, width)
        nn.init.xavier_normal_(self.linear.weight)  # xavier kernels, zero bias, as is common
        nn.init.zeros_(self.linear.bias)

    def forward(self, x0: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return x0 * self.linear(x) + x


class DCN(Head):
    def __init__(self, cfg: ModelConfig, num_dense: int, embeddings: EmbeddingMethod) -> None:
        if cfg.structure not in STRUCTURES:
            raise ValueError(f"model.structure must be 'stacked' or 'parallel', got "
                             f"{cfg.structure!r}")
        if cfg.cross_layers < 0:
            raise ValueError(f"model.cross_layers must be >= 0, got {cfg.cross_layers}")
        super().__init__(cfg, num_dense, embeddings)
        width = self.num_vectors * cfg.dim
        self.cross = nn.ModuleList(CrossLayer(width) for _ in range(cfg.cross_layers))
        self.deep = mlp([width, *cfg.top_mlp], final_activation=True) if cfg.top_mlp else None
        deep_out = cfg.top_mlp[-1] if cfg.top_mlp else width
        logit_in = deep_out + (width if cfg.structure == "parallel" and self.deep else 0)
        self.logit = mlp([logit_in, 1], final_activation=False)

    def forward(self, dense: torch.Tensor, ids: torch.Tensor,
                bags: Jagged | None = None) -> torch.Tensor:
        x0 = self.vectors(dense, ids, bags)[0].flatten(1)            # [B, (F+1)*D]
        x = x0
        for layer in self.cross:
            x = layer(x0, x)
        if self.deep is None:
            top_in = x
        elif self.cfg.structure == "stacked":
            top_in = self.deep(x)
        else:
            top_in = torch.cat([x, self.deep(x0)], dim=1)
        return self.logit(top_in).squeeze(1)


HEADS = {"dlrm": DLRM, "dcn": DCN}


def build_head(cfg: ModelConfig, num_dense: int, embeddings: EmbeddingMethod) -> Head:
    """The model head named by ``model.name`` over one embedding method."""
    if cfg.name not in HEADS:
        raise ValueError(f"model.name must be one of {sorted(HEADS)}, got {cfg.name!r}")
    return HEADS[cfg.name](cfg, num_dense, embeddings)
