"""The peers ``fiited-kernels`` measures our kernels against, each a full-table, K=1 module.

  torch          nn.EmbeddingBag(sparse=True) + torch.optim.Adagrad: ELEMENT-wise Adagrad (D
                 accumulators per row), i.e. a different optimizer; kept because it is what most
                 users reach for first, and labelled as such.
  torch-sgd      the same module stepped with torch.optim.SGD on the sparse gradient.
  torch-rowwise  the same module with row-wise Adagrad written in plain torch (coalesce the
                 sparse gradient, one accumulator per row): the same optimizer math as ours and
                 FBGEMM's, so its ratio is like for like.
  fbgemm         FBGEMM's CPU table-batched embedding with fused EXACT_ROWWISE_ADAGRAD.
"""
from __future__ import annotations

import importlib
from typing import Callable

import torch

TORCH_PEERS = ("torch", "torch-sgd", "torch-rowwise")
ROW_IMPLS = (*TORCH_PEERS, "fbgemm")  # full-table peers: K=1 only


def fbgemm_available() -> bool:
    try:
        importlib.import_module("fbgemm_gpu.split_table_batched_embeddings_ops_training")
    except Exception:  # absent, or built for another torch
        return False
    return True


def rowwise_adagrad_step(weight: torch.Tensor, state: torch.Tensor, grad: torch.Tensor,
                         lr: float, eps: float) -> None:
    """Row-wise Adagrad on a sparse gradient, as a user writes it in torch: acc += mean(g^2)
    over the row, w -= lr * g / (sqrt(acc) + eps), duplicates summed first."""
    g = grad.coalesce()
    rows, values = g.indices()[0], g.values()
    acc = state.index_select(0, rows) + values.pow(2).mean(dim=1)
    state.index_copy_(0, rows, acc)
    weight.index_add_(0, rows, values * (-lr / (acc.sqrt() + eps)).unsqueeze(1))


def torch_peers(ids: torch.Tensor, rows: int, dim: int, lr: float, eps: float,
                gen: torch.Generator) -> dict[str, dict[str, Callable]]:
    """``ids`` [N] global rows, one bag each; every peer shares one weight (values don't matter)."""
    bag = torch.nn.EmbeddingBag(rows, dim, mode="sum", sparse=True)
    with torch.no_grad():
        bag.weight.uniform_(-0.01, 0.01, generator=gen)
    offsets = torch.arange(ids.numel())
    grad = torch.randn(ids.numel(), dim, generator=gen) * 0.01
    adagrad = torch.optim.Adagrad(bag.parameters(), lr=lr, eps=eps)
    sgd = torch.optim.SGD(bag.parameters(), lr=lr)
    state = torch.zeros(rows)

    def lookup():
        with torch.no_grad():
            return bag(ids, offsets)

    def step(opt):
        def run():
            opt.zero_grad(set_to_none=True)
            bag(ids, offsets).backward(grad)
            opt.step()
        return run

    def rowwise():
        bag.weight.grad = None
        bag(ids, offsets).backward(grad)
        with torch.no_grad():
            rowwise_adagrad_step(bag.weight, state, bag.weight.grad, lr, eps)

    return {"torch": {"lookup": lookup, "update": step(adagrad)},
            "torch-sgd": {"lookup": lookup, "update": step(sgd)},
            "torch-rowwise": {"lookup": lookup, "update": rowwise}}


def fbgemm_peer(ids: torch.Tensor, rows_per_table: int, dim: int, lr: float, eps: float,
                gen: torch.Generator) -> dict[str, Callable]:
    """``ids`` [B, F] ids within each table; one bag per id, table-major as TBE wants."""
    from fbgemm_gpu.split_embedding_configs import EmbOptimType
    from fbgemm_gpu.split_table_batched_embeddings_ops_common import (EmbeddingLocation,
                                                                      PoolingMode)
    from fbgemm_gpu.split_table_batched_embeddings_ops_training import (
        ComputeDevice, SplitTableBatchedEmbeddingBagsCodegen)
    batch, f = ids.shape
    tbe = SplitTableBatchedEmbeddingBagsCodegen(
        embedding_specs=[(rows_per_table, dim, EmbeddingLocation.HOST, ComputeDevice.CPU)] * f,
        optimizer=EmbOptimType.EXACT_ROWWISE_ADAGRAD, learning_rate=lr, eps=eps,
        pooling_mode=PoolingMode.SUM)
    indices = ids.t().reshape(-1).contiguous()
    offsets = torch.arange(ids.numel() + 1)
    grad = torch.randn(batch, f * dim, generator=gen) * 0.01

    def lookup():
        with torch.no_grad():
            return tbe(indices, offsets)

    def update():
        tbe(indices, offsets).backward(grad)

    return {"lookup": lookup, "update": update}
