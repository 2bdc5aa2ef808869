"""Whole-model training throughput: our fused uniform path vs plain torch sparse embeddings.

Both train the same DLRM on identical batches (pre-loaded, so data loading is excluded):
ours = ``uniform`` through fiited's kernels with fused row-wise Adagrad; torch =
``nn.EmbeddingBag(sparse=True)`` + ``torch.optim.Adagrad`` (element-wise Adagrad: its state is a
full table-sized tensor; ours is one float per row). Prints samples/s and the ratio.

    python -m benchmark.harness_bench --data data/synthetic_criteo_... --steps 200
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from torch import nn

from benchmark.data.format import open_dataset
from benchmark.data.loader import BatchLoader
from benchmark.model import DLRM, ModelConfig
from fiited import SparseOptimConfig, TableSpec, build_method
from fiited.interface import dlrm_init


class TorchSparseEmbedding(nn.Module):
    """All tables in one nn.EmbeddingBag(sparse=True), one bag per id: torch's own path."""

    def __init__(self, tables: list[TableSpec], dim: int, init: torch.Tensor) -> None:
        super().__init__()
        self.dim, self.num_features = dim, len(tables)
        rows = torch.tensor([t.num_rows for t in tables])
        self.register_buffer("offsets", torch.cumsum(rows, 0) - rows)
        self.bag = nn.EmbeddingBag(int(rows.sum()), dim, mode="sum", sparse=True)
        with torch.no_grad():
            self.bag.weight.copy_(init)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        b, f = ids.shape
        flat = (ids + self.offsets).reshape(-1, 1)
        return self.bag(flat).view(b, f, self.dim)


def _time(model, dense_opt, sparse_opt, batches, warmup: int) -> list[float]:
    loss_fn = nn.BCEWithLogitsLoss()
    times = []
    for i, b in enumerate(batches):
        t0 = time.perf_counter()
        loss = loss_fn(model(b.dense, b.ids), b.labels)
        dense_opt.zero_grad(set_to_none=True)
        if sparse_opt is not None:
            sparse_opt.zero_grad(set_to_none=True)
        loss.backward()
        dense_opt.step()
        if sparse_opt is not None:
            sparse_opt.step()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return times


def run(data: str, steps: int, batch_size: int, dim: int, lr: float, warmup: int,
        seed: int = 0) -> dict:
    ds = open_dataset(data)
    m = ds.manifest
    tables = [TableSpec(n, int(c)) for n, c in zip(m.feature_names, m.cardinalities)]
    loader = BatchLoader(ds, "train", batch_size, shuffle=True, seed=seed, drop_last=True)
    batches = []
    for b in loader:
        batches.append(b)
        if len(batches) == steps + warmup:
            break
    cfg = ModelConfig(dim=dim, bottom_mlp=[64, 32], top_mlp=[128, 64])
    opt = SparseOptimConfig(name="rowwise_adagrad", lr=lr)
    results = {}
    torch.manual_seed(seed)
    ours = build_method({"name": "uniform"}, tables, dim, opt, seed=seed)
    init = ours.pool.clone()
    torch.manual_seed(seed)
    model = DLRM(cfg, m.num_dense, ours)
    dense = torch.optim.Adagrad(model.dense_parameters(), lr=0.02)
    results["fiited_uniform"] = _time(model, dense, None, batches, warmup)
    torch.manual_seed(seed)
    theirs = TorchSparseEmbedding(tables, dim, init)
    model = DLRM(cfg, m.num_dense, theirs)  # DLRM only needs .dim and .num_features
    dense = torch.optim.Adagrad([p for n, p in model.named_parameters()
                                 if not n.startswith("embeddings.")], lr=0.02)
    sparse = torch.optim.Adagrad(list(theirs.parameters()), lr=lr)
    results["torch_embeddingbag_sparse_adagrad"] = _time(model, dense, sparse, batches, warmup)
    out = {"data": str(data), "rows_total": int(sum(t.num_rows for t in tables)),
           "batch_size": batch_size, "steps": len(results["fiited_uniform"]),
           "threads": torch.get_num_threads()}
    for k, ts in results.items():
        out[k] = {"samples_per_s": batch_size / statistics.median(ts),
                  "step_ms_p50": 1e3 * statistics.median(ts)}
    out["ratio_ours_to_torch"] = (out["fiited_uniform"]["samples_per_s"]
                                  / out["torch_embeddingbag_sparse_adagrad"]["samples_per_s"])
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True, help="prepared dataset directory")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=1024)
    ap.add_argument("--dim", type=int, default=16)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--json", help="write the result here")
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    out = run(a.data, a.steps, a.batch_size, a.dim, a.lr, a.warmup)
    print(f"{'path':38s} {'samples/s':>12s} {'step ms p50':>12s}")
    for k in ("fiited_uniform", "torch_embeddingbag_sparse_adagrad"):
        print(f"{k:38s} {out[k]['samples_per_s']:12,.0f} {out[k]['step_ms_p50']:12.2f}")
    print(f"ratio ours/torch: {out['ratio_ours_to_torch']:.2f}x  "
          f"(B={a.batch_size}, threads={out['threads']}, {out['steps']} timed steps)")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=2)


if __name__ == "__main__":
    main()
