"""How a row's kept chunks become the D-wide vector the interaction sees.

``zeros`` (default, FIITED's choice): absent chunks read as zeros; nothing to do here.

``projection`` (the paper's comparison): a learned map from the kept width w = j*C to D, one
per (table, j) for 0 < j < K. Kept width = number of kept chunks; with ``layout: any`` the kept
chunks are first compacted to the front in position order (chunks {1, 3} of 4 become the
first 2*C inputs), so the map sees its w inputs in a fixed order. Rows with all chunks
(j = K) pass through unchanged, rows with none read zeros. Each map starts as [I_w | 0] (the
zero-padding map), so projection starts where zero padding is and learns from there.

The maps are dense ``nn.Parameter``s (the dense optimizer trains them; their bytes go in the
ledger under ``other``). Computation is vectorised by grouping rows by kept width: one batched
matmul over tables per width j (a loop over K positions, never over rows). The maps are padded
with fixed identity rows below w: those rows only ever multiply zeros, so they add nothing to
the output but pass the zero-padding gradient to absent chunks, which keeps their utility
(and their way back) as in zero padding.
"""
from __future__ import annotations

import torch
from torch import nn

from fiited.memory import tensor_bytes

PADDINGS = ("zeros", "projection")


class ProjectionPadding(nn.Module):
    def __init__(self, num_tables: int, num_chunks: int, chunk_width: int) -> None:
        super().__init__()
        self.num_chunks = num_chunks
        self.chunk_width = chunk_width
        dim = num_chunks * chunk_width
        eye = torch.eye(dim)
        self.maps = nn.ParameterList(
            nn.Parameter(eye[: j * chunk_width].expand(num_tables, -1, -1).clone())
            for j in range(1, num_chunks))
        self.register_buffer("eye", eye, persistent=False)

    def forward(self, x: torch.Tensor, present: torch.Tensor, compact: bool) -> torch.Tensor:
        """x [B, F, K*C] zero-padded chunks, present [B, F, K] -> [B, F, D]."""
        b, f, d = x.shape
        K, C = self.num_chunks, self.chunk_width
        if K == 1:
            return x
        if compact:
            order = torch.sort((~present).to(torch.int8), dim=2, stable=True).indices
            idx = (order.unsqueeze(3) * C + torch.arange(C, device=x.device)).reshape(b, f, d)
            x = torch.gather(x, 2, idx)
        width = present.sum(dim=2)                                    # [B, F] chunks kept
        passthrough = (width == 0) | (width == K)
        out = x * passthrough.unsqueeze(2)
        xt = x.transpose(0, 1)                                        # [F, B, D]
        for j, w in enumerate(self.maps, start=1):
            full = torch.cat([w, self.eye[j * C:].expand(f, -1, -1)], dim=1)   # [F, D, D]
            y = torch.bmm(xt, full).transpose(0, 1)                   # [B, F, D]
            out = out + y * (width == j).unsqueeze(2)
        return out

    def extra_bytes(self) -> int:
        """Maps plus the identity buffer: all of this module's storage."""
        return tensor_bytes(*self.parameters(), *self.buffers())
