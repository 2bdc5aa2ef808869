"""Multi-hot lookup and lookup+update speed: our bag kernels against nn.EmbeddingBag and FBGEMM.

``python -m benchmark.bag_bench`` runs, in one process on the same ids (repeats interleaved,
warm-up excluded, medians), the issue-17 shape by default: B=4096 samples x F=8 features, bag
lengths uniform on [0, 2L] (mean L=20, empty bags included), Zipf ids per table, D=64, mean
pooling, row-wise Adagrad:

  cpu / cpu-torch / reference  fiited.kernels bag_gather (+ bag_backward_update), at each
               ``--chunks`` K (pool rows of D/K floats, all chunks present)
  torch-rowwise  nn.EmbeddingBag(mode="mean", sparse=True) + row-wise Adagrad written in torch
               (the same optimizer math as ours)
  fbgemm       FBGEMM's CPU TBE, PoolingMode.MEAN, fused EXACT_ROWWISE_ADAGRAD (when importable:
               ``make bench-peers``)

Before timing, every implementation's pooled lookup is checked against torch's. Ratios are to
torch-rowwise at the same thread count; they are withheld (null) when the load average before
the run exceeds the cores: speed on a shared machine means nothing.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
from pathlib import Path

import torch

from benchmark.kernel_bench import measure, without_native, zipf_ids
from benchmark.kernel_peers import fbgemm_available, rowwise_adagrad_step
from fiited.kernels import cpu, cpu_native, reference
from fiited.optim import SparseOptimConfig

OURS = {"cpu": cpu, "cpu-torch": cpu, "reference": reference}


def make_bags(batch: int, features: int, mean_len: int, vocab: int, zipf: float,
              gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(global ids [N] int64, offsets [B*F + 1]): bag b*F + f holds table f's ids."""
    lengths = torch.randint(0, 2 * mean_len + 1, (batch * features,), generator=gen)
    offsets = torch.cat([torch.zeros(1, dtype=torch.int64), lengths.cumsum(0)])
    n = int(offsets[-1])
    table = torch.arange(batch * features).remainder(features).repeat_interleave(lengths)
    return zipf_ids(n, vocab, zipf, gen) + table * vocab, offsets


def table_major(values: torch.Tensor, offsets: torch.Tensor, batch: int, features: int
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Reorder sample-major bags (b*F + f) to FBGEMM's table-major order (f*B + b)."""
    lengths = offsets[1:] - offsets[:-1]
    bag = torch.arange(batch * features).repeat_interleave(lengths)
    key = (bag % features) * batch + bag // features
    perm = torch.sort(key, stable=True).indices
    t_lengths = lengths.view(batch, features).t().reshape(-1)
    return values[perm], torch.cat([offsets.new_zeros(1), t_lengths.cumsum(0)])


def _ours(name: str, k: int, ids, offsets, rows_total: int, dim: int, grad, opt, gen):
    mod = OURS[name]
    c = dim // k
    pool = torch.rand(rows_total * k, c, generator=gen) * 0.02 - 0.01
    state = torch.zeros(rows_total * k)
    rows = (ids.unsqueeze(1) * k + torch.arange(k)).to(torch.int32)
    flat_grad = grad.view(-1, dim)  # [B*F, K*C]: chunks are column slices of the row

    def lookup():
        return mod.bag_gather(pool, rows, offsets, None, "mean")

    def update():
        mod.bag_gather(pool, rows, offsets, None, "mean")
        mod.bag_backward_update(pool, state, rows, offsets, flat_grad, opt, None, "mean")
    fns = {"lookup": lookup, "update": update}
    if name == "cpu-torch":  # the CPU path with its native core off
        fns = {op: without_native(fn) for op, fn in fns.items()}
    return fns, pool


def _torch(ids, offsets, rows_total, dim, grad, opt, gen):
    bag = torch.nn.EmbeddingBag(rows_total, dim, mode="mean", sparse=True,
                                include_last_offset=True)
    with torch.no_grad():
        bag.weight.uniform_(-0.01, 0.01, generator=gen)
    state = torch.zeros(rows_total)

    def lookup():
        with torch.no_grad():
            return bag(ids, offsets)

    def update():
        bag.weight.grad = None
        bag(ids, offsets).backward(grad.view(-1, dim))
        with torch.no_grad():
            rowwise_adagrad_step(bag.weight, state, bag.weight.grad, opt.lr, opt.eps)
    return {"lookup": lookup, "update": update}, bag.weight.detach()


def _fbgemm(ids, offsets, batch, features, vocab, dim, grad, opt, weight):
    from fbgemm_gpu.split_embedding_configs import EmbOptimType
    from fbgemm_gpu.split_table_batched_embeddings_ops_common import (EmbeddingLocation,
                                                                      PoolingMode)
    from fbgemm_gpu.split_table_batched_embeddings_ops_training import (
        ComputeDevice, SplitTableBatchedEmbeddingBagsCodegen)
    tbe = SplitTableBatchedEmbeddingBagsCodegen(
        embedding_specs=[(vocab, dim, EmbeddingLocation.HOST, ComputeDevice.CPU)] * features,
        optimizer=EmbOptimType.EXACT_ROWWISE_ADAGRAD, learning_rate=opt.lr, eps=opt.eps,
        pooling_mode=PoolingMode.MEAN)
    with torch.no_grad():
        for f, w in enumerate(tbe.split_embedding_weights()):
            w.copy_(weight[f * vocab:(f + 1) * vocab])
    values, t_offsets = table_major(ids - (ids // vocab) * vocab, offsets, batch, features)
    values = values.contiguous()

    def lookup():
        with torch.no_grad():
            return tbe(values, t_offsets).view(batch, features, dim).reshape(-1, dim)

    def update():
        tbe(values, t_offsets).backward(grad.view(batch, features * dim))
    return {"lookup": lookup, "update": update}


def run(args, log=print) -> dict:
    gen = torch.Generator().manual_seed(args.seed)
    b, f, v, d = args.batch, args.features, args.rows_per_table, args.dim
    ids, offsets = make_bags(b, f, args.mean_len, v, args.zipf, gen)
    grad = torch.randn(b * f, d, generator=gen) * 0.01
    opt = SparseOptimConfig(lr=0.01)
    load = os.getloadavg()[0]
    withheld = load > (os.cpu_count() or 1)
    results = []
    for threads in args.threads:
        torch.set_num_threads(threads)
        peer, weight = _torch(ids, offsets, f * v, d, grad, opt, gen)
        fns = {"torch-rowwise": peer}
        expect = fns["torch-rowwise"]["lookup"]()
        impls = [i for i in args.impls if i != "torch-rowwise"]
        if "fbgemm" in impls and fbgemm_available():
            fns["fbgemm"] = _fbgemm(ids, offsets, b, f, v, d, grad, opt, weight)
        for name in (i for i in impls if i in OURS):
            for k in args.chunks:
                fn, pool = _ours(name, k, ids, offsets, f * v, d, grad, opt, gen)
                with torch.no_grad():  # the same table as torch's, split into chunks
                    pool.copy_(weight.reshape(-1, d // k))
                fns[f"{name} K={k}"] = fn
        for label, fn in fns.items():  # every lookup equals torch's before anything is timed
            torch.testing.assert_close(fn["lookup"](), expect, rtol=1e-5, atol=1e-6, msg=label)
        for op in ("lookup", "update"):
            times = measure({k: v[op] for k, v in fns.items()}, args.warmup, args.repeats)
            base = statistics.median(times["torch-rowwise"])
            for label, t in times.items():
                sec = statistics.median(t)
                results.append({"impl": label, "op": op, "threads": threads, "seconds": sec,
                                "samples_per_s": b / sec,
                                "vs_torch": None if withheld else base / sec})
                log(f"{op:7s} {label:16s} threads={threads} {1e3 * sec:9.3f} ms")
    return {"shape": {"batch": b, "features": f, "mean_len": args.mean_len, "dim": d,
                      "rows_per_table": v, "occurrences": int(offsets[-1])},
            "load_before": load, "ratios_withheld": withheld,
            "fbgemm": fbgemm_available(), "native": cpu_native.library() is not None,
            "results": results}


def parse(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m benchmark.bag_bench",
                                 description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=4096)
    ap.add_argument("--features", type=int, default=8)
    ap.add_argument("--mean-len", type=int, default=20)
    ap.add_argument("--rows-per-table", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--zipf", type=float, default=1.05)
    ap.add_argument("--chunks", type=int, nargs="+", default=[1, 4])
    ap.add_argument("--threads", type=int, nargs="+", default=[1])
    ap.add_argument("--impls", nargs="+", default=["cpu", "cpu-torch", "torch-rowwise", "fbgemm"],
                    choices=[*OURS, "torch-rowwise", "fbgemm"])
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = ap.parse_args(argv)
    bad = [k for k in args.chunks if k < 1 or args.dim % k]
    if bad or min(args.batch, args.features, args.rows_per_table, args.mean_len + 1) < 1:
        ap.error(f"--chunks must divide --dim ({args.dim}), got {bad}" if bad
                 else "--batch, --features and --rows-per-table must be >= 1, --mean-len >= 0")
    return args


def main(argv=None) -> int:
    args = parse(argv)
    report = run(args)
    if args.out:
        args.out.write_text(json.dumps(report, indent=2))
    if report["ratios_withheld"]:
        print(f"load {report['load_before']:.1f} > cores: ratios withheld")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
