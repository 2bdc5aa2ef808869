"""``fiited-kernels``: embedding lookup and lookup+update speed on CPU, ours against torch/FBGEMM.

Every implementation runs in the same process on the same ids, repeats interleaved (so a noisy
neighbour slows all alike); warm-up calls are excluded and the median is reported.

Implementations (``--impls``):
  torch       nn.EmbeddingBag(mode="sum", sparse=True), one bag per id; update = forward +
              backward + torch.optim.Adagrad step. torch's Adagrad is ELEMENT-wise (one
              accumulator per weight, D times the state of row-wise Adagrad).
  torch-sgd   the same module, update with torch.optim.SGD on the sparse gradient.
  reference   fiited.kernels.reference (the spec): gather; gather + backward_update.
  cpu         fiited.kernels.cpu (the product CPU path; native core when it builds).
  cpu-torch   fiited.kernels.cpu with the native core off (its pure-torch fallback).
  fbgemm      fbgemm_gpu's CPU table-batched embedding with fused EXACT_ROWWISE_ADAGRAD, when
              importable (pip install fbgemm-gpu-cpu==1.8.0).
Ours use row-wise Adagrad. torch and FBGEMM hold rows of width D, so they run at K=1; ratios
for K>1 compare with their K=1 numbers at the same B, F, D.

Memory: torch's CPU allocator hands out fresh pages for every large tensor, and faulting them in
can cost more than the kernel at B=16384. ``THP_MEM_ALLOC_ENABLE=1`` (read by torch at import)
backs large tensors with transparent huge pages, which helps every implementation alike; the
setting is recorded in the JSON and printed under the table.

Bytes moved (the same formula for every implementation of a case, so GB/s is a throughput):
  lookup = 4*N*K (int32 row index) + 4*Np*C (present chunks read) + 4*N*D (output written)
  lookup+update = lookup + 4*N*D (gradient read) + U*(8*C + 8) (each unique present chunk row:
  weights and its row-wise state read and written), where N = B*F lookups, Np the present chunk
  occurrences, U the unique present chunk rows.

The FIITED-like case: K=4 with 1/16 of the chunks present (rows -1 elsewhere), against uniform
K=1 at the same B, F, D.
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from fiited.kernels import cpu, cpu_native, reference
from fiited.optim import SparseOptimConfig

IMPLS = ("torch", "torch-sgd", "reference", "cpu", "cpu-torch", "fbgemm")
ROW_IMPLS = ("torch", "torch-sgd", "fbgemm")  # row-based peers: K=1 only
LR = 1e-3


@dataclass
class BenchConfig:
    batches: list[int] = field(default_factory=lambda: [2048, 16384])
    dims: list[int] = field(default_factory=lambda: [16, 64, 128])
    chunks: list[int] = field(default_factory=lambda: [1, 4, 8])
    features: int = 26
    rows_per_table: int = 100_000
    zipf: float = 1.05
    ops: list[str] = field(default_factory=lambda: ["lookup", "update"])
    impls: list[str] = field(default_factory=lambda: list(IMPLS))
    warmup: int = 2
    repeats: int = 5
    fiited_case: bool = True
    present_fraction: float = 1 / 16
    seed: int = 0


def zipf_ids(n: int, vocab: int, alpha: float, gen: torch.Generator) -> torch.Tensor:
    """Zipf-like ids in [0, vocab): rank r has p ~ 1/(r+1)^alpha; ranks scattered over ids."""
    u = torch.rand(n, generator=gen, dtype=torch.float64)
    a = 1.0 - alpha
    if abs(a) < 1e-9:
        rank = ((vocab + 1.0) ** u - 1.0).floor().long()
    else:
        rank = ((((vocab + 1.0) ** a - 1.0) * u + 1.0) ** (1.0 / a) - 1.0).floor().long()
    return (rank.clamp_(0, vocab - 1) * 2654435761) % vocab


def fbgemm_available() -> bool:
    try:
        importlib.import_module("fbgemm_gpu.split_table_batched_embeddings_ops_training")
    except Exception:  # absent, or built for another torch
        return False
    return True


def measure(fns: dict[str, Callable[[], object]], warmup: int, repeats: int) -> dict[str, list]:
    """Seconds per call for each fn; repeats interleaved across fns, warm-up excluded."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    return times


class Case:
    """One (B, F, D) batch of Zipf ids, and the chunk rows of our pools at each K."""

    def __init__(self, cfg: BenchConfig, batch: int, dim: int, gen: torch.Generator):
        self.cfg, self.batch, self.dim = cfg, batch, dim
        f, v = cfg.features, cfg.rows_per_table
        self.ids = torch.stack([zipf_ids(batch, v, cfg.zipf, gen) for _ in range(f)], 1)
        self.global_ids = (self.ids + torch.arange(f) * v).reshape(-1)  # [N], batch-major
        self.n = batch * f

    def chunk_rows(self, k: int, present: float, gen: torch.Generator
                   ) -> tuple[torch.Tensor, int]:
        """rows [N, K] int32 and the pool size; present < 1 keeps a random share of chunks."""
        total = self.cfg.features * self.cfg.rows_per_table * k
        rows = (self.global_ids.unsqueeze(1) * k + torch.arange(k)).to(torch.int32)
        if present >= 1:
            return rows, total
        keep = torch.rand(total, generator=gen) < present
        slot = torch.full((total,), -1, dtype=torch.int32)
        slot[keep] = torch.arange(int(keep.sum()), dtype=torch.int32)
        return slot[rows.long()], int(keep.sum())

    def bytes_moved(self, rows: torch.Tensor, c: int) -> dict[str, int]:
        flat = rows.reshape(-1)
        present = flat[flat >= 0]
        unique = int(torch.unique(present).numel())
        d = self.dim
        lookup = 4 * flat.numel() + 4 * present.numel() * c + 4 * self.n * d
        return {"lookup": lookup, "update": lookup + 4 * self.n * d + unique * (8 * c + 8)}


def ours(impls: list[str], rows: torch.Tensor, pool_rows: int, c: int, n: int, k: int,
         gen: torch.Generator) -> dict[str, dict[str, Callable]]:
    """Our kernels on one shared pool (they all update it in place; values do not matter)."""
    pool = torch.rand(pool_rows, c, generator=gen) * 0.02 - 0.01
    state = torch.zeros(pool_rows)
    grad = torch.randn(n, k * c, generator=gen) * 0.01
    opt = SparseOptimConfig(name="rowwise_adagrad", lr=LR)
    out = {}
    for impl in impls:
        kernels = reference if impl == "reference" else cpu

        def lookup(kernels=kernels):
            return kernels.gather(pool, rows)

        def update(kernels=kernels):
            kernels.gather(pool, rows)
            return kernels.backward_update(pool, state, rows, grad, opt)

        if impl == "cpu-torch":  # the same calls with the native core switched off
            lookup, update = _without_native(lookup), _without_native(update)
        out[impl] = {"lookup": lookup, "update": update}
    return out


def _without_native(fn: Callable) -> Callable:
    def run():
        saved = cpu_native._library, cpu_native._tried
        cpu_native._library, cpu_native._tried = None, True
        try:
            return fn()
        finally:
            cpu_native._library, cpu_native._tried = saved
    return run


def torch_peers(case: Case, gen: torch.Generator) -> dict[str, dict[str, Callable]]:
    f, v, d = case.cfg.features, case.cfg.rows_per_table, case.dim
    bag = torch.nn.EmbeddingBag(f * v, d, mode="sum", sparse=True)
    with torch.no_grad():
        bag.weight.uniform_(-0.01, 0.01, generator=gen)
    ids = case.global_ids
    offsets = torch.arange(case.n)
    grad = torch.randn(case.n, d, generator=gen) * 0.01
    adagrad = torch.optim.Adagrad(bag.parameters(), lr=LR)
    sgd = torch.optim.SGD(bag.parameters(), lr=LR)

    def lookup():
        with torch.no_grad():
            return bag(ids, offsets)

    def step(opt):
        def run():
            opt.zero_grad(set_to_none=True)
            bag(ids, offsets).backward(grad)
            opt.step()
        return run

    return {"torch": {"lookup": lookup, "update": step(adagrad)},
            "torch-sgd": {"lookup": lookup, "update": step(sgd)}}


def fbgemm_peer(case: Case, gen: torch.Generator) -> dict[str, Callable]:
    from fbgemm_gpu.split_embedding_configs import EmbOptimType
    from fbgemm_gpu.split_table_batched_embeddings_ops_common import (EmbeddingLocation,
                                                                      PoolingMode)
    from fbgemm_gpu.split_table_batched_embeddings_ops_training import (
        ComputeDevice, SplitTableBatchedEmbeddingBagsCodegen)
    f, v, d = case.cfg.features, case.cfg.rows_per_table, case.dim
    tbe = SplitTableBatchedEmbeddingBagsCodegen(
        embedding_specs=[(v, d, EmbeddingLocation.HOST, ComputeDevice.CPU)] * f,
        optimizer=EmbOptimType.EXACT_ROWWISE_ADAGRAD, learning_rate=LR, eps=1e-8,
        pooling_mode=PoolingMode.SUM)
    indices = case.ids.t().reshape(-1).contiguous()  # table-major, one id per bag
    offsets = torch.arange(case.n + 1)
    grad = torch.randn(case.batch, f * d, generator=gen) * 0.01

    def lookup():
        with torch.no_grad():
            return tbe(indices, offsets)

    def update():
        tbe(indices, offsets).backward(grad)

    return {"lookup": lookup, "update": update}


def _record(results, case, impl, op, k, present, times, nbytes):
    med = statistics.median(times)
    results.append({
        "impl": impl, "op": op, "batch": case.batch, "features": case.cfg.features,
        "dim": case.dim, "chunks": k, "chunk_width": case.dim // k, "present_fraction": present,
        "median_s": med, "times_s": times, "lookups_per_s": case.n / med, "bytes": nbytes,
        "gb_per_s": nbytes / med / 1e9})


def _add_ratios(results: list[dict]) -> None:
    peers = {(r["impl"], r["op"], r["batch"], r["dim"]): r["lookups_per_s"] for r in results
             if r["impl"] in ROW_IMPLS}
    for r in results:
        for peer, key in (("torch", "ratio_vs_torch"), ("torch-sgd", "ratio_vs_torch_sgd"),
                          ("fbgemm", "ratio_vs_fbgemm")):
            base = peers.get((peer, r["op"], r["batch"], r["dim"]))
            r[key] = r["lookups_per_s"] / base if base else None


def run_shape(case: Case, k: int, present: float, impls: list[str], gen: torch.Generator,
              results: list[dict], log) -> None:
    cfg, dim = case.cfg, case.dim
    rows, pool_rows = case.chunk_rows(k, present, gen)
    nbytes = case.bytes_moved(rows, dim // k)
    fns = ours([i for i in impls if i in ("reference", "cpu", "cpu-torch")], rows, pool_rows,
               dim // k, case.n, k, gen)
    if k == 1 and present == 1.0:
        if {"torch", "torch-sgd"} & set(impls):
            peers = torch_peers(case, gen)
            fns.update({i: peers[i] for i in ("torch", "torch-sgd") if i in impls})
        if "fbgemm" in impls:
            fns["fbgemm"] = fbgemm_peer(case, gen)
    for op in cfg.ops:
        times = measure({i: f[op] for i, f in fns.items()}, cfg.warmup, cfg.repeats)
        for impl, ts in times.items():
            _record(results, case, impl, op, k, present, ts, nbytes[op])
        log(f"  B={case.batch} D={dim} K={k} present={present:.4g} {op}: " + ", ".join(
            f"{i} {statistics.median(ts) * 1e3:.1f}ms" for i, ts in times.items()))


def run(cfg: BenchConfig, log=print) -> dict:
    gen = torch.Generator().manual_seed(cfg.seed)
    impls = [i for i in cfg.impls if i != "fbgemm" or fbgemm_available()]
    results: list[dict] = []
    fiited_like: list[dict] = []
    for batch in cfg.batches:
        for dim in cfg.dims:
            case = Case(cfg, batch, dim, gen)
            # K=1 always runs: it is the uniform baseline and where the row-based peers run.
            shapes = [(k, 1.0) for k in sorted({1, *cfg.chunks}) if dim % k == 0]
            if cfg.fiited_case and dim % 4 == 0:
                shapes.append((4, cfg.present_fraction))
            for k, present in shapes:
                run_shape(case, k, present, impls, gen, results, log)
    _add_ratios(results)
    if cfg.fiited_case:
        index = {(r["impl"], r["op"], r["batch"], r["dim"], r["chunks"], r["present_fraction"]): r
                 for r in results}
        for r in results:
            if r["chunks"] == 4 and r["present_fraction"] < 1:
                base = index.get((r["impl"], r["op"], r["batch"], r["dim"], 1, 1.0))
                if base:
                    fiited_like.append({
                        "impl": r["impl"], "op": r["op"], "batch": r["batch"], "dim": r["dim"],
                        "chunks": 4, "present_fraction": r["present_fraction"],
                        "lookups_per_s": r["lookups_per_s"],
                        "uniform_lookups_per_s": base["lookups_per_s"],
                        "ratio_vs_uniform": r["lookups_per_s"] / base["lookups_per_s"]})
    return {"meta": meta(cfg, impls), "results": results, "fiited_like": fiited_like}


def meta(cfg: BenchConfig, impls: list[str]) -> dict:
    cpu_native.library()
    return {
        "torch": torch.__version__, "threads": torch.get_num_threads(),
        "machine": platform.machine(), "processor": platform.processor(),
        "python": platform.python_version(), "impls": impls,
        "cpu_native": cpu_native.failure or "built",
        "thp_mem_alloc_enable": os.environ.get("THP_MEM_ALLOC_ENABLE", "unset"),
        "fbgemm": fbgemm_available(),
        "config": {k: v for k, v in vars(cfg).items()},
        "notes": ["torch uses element-wise Adagrad (D accumulators per row); ours and FBGEMM "
                  "use row-wise Adagrad (one per row)",
                  "bytes: lookup = 4*N*K + 4*Np*C + 4*N*D; update = lookup + 4*N*D "
                  "+ U*(8*C + 8); see the module docstring",
                  "times are medians of interleaved repeats after warm-up"],
    }


def table(report: dict) -> str:
    head = (f"{'op':<7} {'impl':<10} {'B':>6} {'D':>4} {'K':>2} {'present':>7} {'ms':>9} "
            f"{'Mlookup/s':>10} {'GB/s':>7} {'vs torch':>8} {'vs sgd':>7} {'vs fbgemm':>9}")
    lines = [head, "-" * len(head)]
    fmt = lambda x: f"{x:.2f}" if x is not None else "-"  # noqa: E731
    for r in sorted(report["results"], key=lambda r: (r["op"], r["batch"], r["dim"],
                                                      r["chunks"], -r["present_fraction"])):
        lines.append(
            f"{r['op']:<7} {r['impl']:<10} {r['batch']:>6} {r['dim']:>4} {r['chunks']:>2} "
            f"{r['present_fraction']:>7.4g} {r['median_s'] * 1e3:>9.2f} "
            f"{r['lookups_per_s'] / 1e6:>10.2f} {r['gb_per_s']:>7.2f} "
            f"{fmt(r['ratio_vs_torch']):>8} {fmt(r['ratio_vs_torch_sgd']):>7} "
            f"{fmt(r['ratio_vs_fbgemm']):>9}")
    if report["fiited_like"]:
        lines += ["", "FIITED-like: K=4, 1/16 of chunks present, vs uniform K=1 (same B, F, D)"]
        for r in report["fiited_like"]:
            ours, uniform = r["lookups_per_s"] / 1e6, r["uniform_lookups_per_s"] / 1e6
            lines.append(f"  {r['op']:<7} {r['impl']:<10} B={r['batch']:<6} D={r['dim']:<4} "
                         f"{ours:8.2f} vs {uniform:8.2f} Mlookup/s  ratio "
                         f"{r['ratio_vs_uniform']:.2f}")
    lines += ["", "vs torch / vs sgd / vs fbgemm: lookups/s over the peer's at the same B, F, D "
              "(K=1); lookup ops compare with the peer's forward.",
              "torch = EmbeddingBag(sparse) + torch.optim.Adagrad, which is ELEMENT-wise Adagrad; "
              "sgd = the same with torch.optim.SGD."]
    lines.append(report["meta"]["notes"][1])
    thp = report["meta"].get("thp_mem_alloc_enable", "unset")
    lines.append(f"threads={report['meta']['threads']} cpu native core: "
                 f"{report['meta']['cpu_native']}; fbgemm: {report['meta']['fbgemm']}; "
                 f"THP_MEM_ALLOC_ENABLE={thp}")
    if thp != "1":
        lines.append("(without THP_MEM_ALLOC_ENABLE=1, faulting in fresh pages for each large "
                     "output costs every implementation alike and can dominate at B=16384; "
                     "`make bench` sets it)")
    return "\n".join(lines)


def parse(argv=None) -> tuple[BenchConfig, argparse.Namespace]:
    ap = argparse.ArgumentParser(prog="fiited-kernels", description=__doc__.splitlines()[0])
    d = BenchConfig()
    ap.add_argument("--batch", type=int, nargs="+", default=d.batches)
    ap.add_argument("--dim", type=int, nargs="+", default=d.dims)
    ap.add_argument("--chunks", type=int, nargs="+", default=d.chunks)
    ap.add_argument("--features", type=int, default=d.features)
    ap.add_argument("--rows-per-table", type=int, default=d.rows_per_table)
    ap.add_argument("--zipf", type=float, default=d.zipf, help="Zipf exponent of the ids")
    ap.add_argument("--ops", nargs="+", choices=["lookup", "update"], default=d.ops)
    ap.add_argument("--impls", nargs="+", choices=IMPLS, default=d.impls)
    ap.add_argument("--warmup", type=int, default=d.warmup)
    ap.add_argument("--repeats", type=int, default=d.repeats)
    ap.add_argument("--no-fiited-case", action="store_true",
                    help="skip the K=4, 1/16-present case")
    ap.add_argument("--threads", type=int, help="torch.set_num_threads (and our native core)")
    ap.add_argument("--seed", type=int, default=d.seed)
    ap.add_argument("--tiny", action="store_true", help="tiny shapes, for tests")
    ap.add_argument("--json", type=Path, help="write the results as JSON here")
    args = ap.parse_args(argv)
    for name in ("batch", "dim", "chunks"):
        bad = [x for x in getattr(args, name) if x < 1]
        if bad:
            ap.error(f"--{name} values must be >= 1, got {bad}")
    if args.features < 1 or args.rows_per_table < 1 or args.repeats < 1 or args.warmup < 0:
        ap.error("--features, --rows-per-table and --repeats must be >= 1, --warmup >= 0")
    cfg = BenchConfig(batches=args.batch, dims=args.dim, chunks=args.chunks,
                      features=args.features, rows_per_table=args.rows_per_table, zipf=args.zipf,
                      ops=args.ops, impls=args.impls, warmup=args.warmup, repeats=args.repeats,
                      fiited_case=not args.no_fiited_case, seed=args.seed)
    if args.tiny:
        cfg.batches, cfg.dims, cfg.chunks = [32], [8], [1, 2]
        cfg.features, cfg.rows_per_table, cfg.warmup, cfg.repeats = 3, 50, 1, 2
    return cfg, args


def main(argv=None) -> int:
    cfg, args = parse(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"fiited-kernels: B={cfg.batches} F={cfg.features} D={cfg.dims} K={cfg.chunks} "
          f"rows/table={cfg.rows_per_table} zipf={cfg.zipf} threads={torch.get_num_threads()}",
          flush=True)
    report = run(cfg, log=lambda s: print(s, flush=True))
    print(table(report))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
