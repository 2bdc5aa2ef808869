"""``fiited-kernels``: embedding lookup and lookup+update speed on CPU, ours against torch/FBGEMM.

Every implementation runs in the same process on the same ids, repeats interleaved (so a noisy
neighbour slows all alike); warm-up calls are excluded and the median is reported.

Implementations (``--impls``):
  torch       nn.EmbeddingBag(mode="sum", sparse=True), one bag per id; update = forward +
              backward + torch.optim.Adagrad step. torch's Adagrad is ELEMENT-wise (one
              accumulator per weight, D times the state of row-wise Adagrad): another optimizer.
  torch-sgd   the same module, update with torch.optim.SGD on the sparse gradient.
  torch-rowwise  the same module with row-wise Adagrad written in torch (the like-for-like
              torch peer: same optimizer math as ours and FBGEMM's).
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

The synthetic sparse case: K=4 with a random 1/16 of the chunks present (rows -1 elsewhere),
against uniform K=1 at the same B, F, D. It is a kernel shape, not FIITED: in training hot rows
keep their chunks, so far more lookups hit the pool, and a step also translates ids, accumulates
utilities and allocates on first access. The METHOD case (``benchmark.method_step``) times the real
FIITED and uniform embedding steps on identical batches; quote that one for FIITED.

Every case runs at each ``--threads`` count (default: 1 and all cores), ratios within one count.
The JSON records the load average before and after and the OpenMP settings; when the load
before the run exceeds the core count, peer ratios are withheld (other work would skew them:
FBGEMM's OpenMP barriers stall on a busy machine).
"""
from __future__ import annotations

import argparse
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

from benchmark import method_step
from benchmark.kernel_table import table
from benchmark.kernel_peers import (ROW_IMPLS, TORCH_PEERS, fbgemm_available, fbgemm_peer,
                                    torch_peers)
from fiited.kernels import cpu, cpu_native, reference
from fiited.optim import SparseOptimConfig

IMPLS = ("torch", "torch-sgd", "torch-rowwise", "reference", "cpu", "cpu-torch", "fbgemm")
LR = 1e-3
EPS = 1e-8
OMP_VARS = ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "OMP_PROC_BIND", "OMP_PLACES",
            "KMP_BLOCKTIME", "MKL_NUM_THREADS", "GOMP_SPINCOUNT")


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
    threads: list[int] = field(default_factory=lambda: sorted({1, os.cpu_count() or 1}))
    method_case: bool = True
    method: method_step.MethodCase = field(default_factory=method_step.MethodCase)
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
            lookup, update = without_native(lookup), without_native(update)
        out[impl] = {"lookup": lookup, "update": update}
    return out


def without_native(fn: Callable) -> Callable:
    """``fn`` run as if the native core had not built (the CPU path's torch fallback)."""
    def run():
        saved = cpu_native._library, cpu_native._tried
        cpu_native._library, cpu_native._tried = None, True
        try:
            return fn()
        finally:
            cpu_native._library, cpu_native._tried = saved
    return run


PEER_KEYS = (("torch", "ratio_vs_torch"), ("torch-sgd", "ratio_vs_torch_sgd"),
             ("torch-rowwise", "ratio_vs_torch_rowwise"), ("fbgemm", "ratio_vs_fbgemm"))


def _record(results, case, impl, op, k, present, times, nbytes):
    med = statistics.median(times)
    results.append({
        "impl": impl, "op": op, "threads": torch.get_num_threads(), "batch": case.batch,
        "features": case.cfg.features, "dim": case.dim, "chunks": k, "chunk_width": case.dim // k,
        "present_fraction": present, "median_s": med, "times_s": times,
        "lookups_per_s": case.n / med, "bytes": nbytes, "gb_per_s": nbytes / med / 1e9})


def _add_ratios(results: list[dict], withheld: bool) -> None:
    """Ratios to each K=1 peer at the same threads, B, F, D; none when the machine was loaded."""
    peers = {(r["impl"], r["op"], r["threads"], r["batch"], r["dim"]): r["lookups_per_s"]
             for r in results if r["impl"] in ROW_IMPLS}
    for r in results:
        for peer, key in PEER_KEYS:
            base = peers.get((peer, r["op"], r["threads"], r["batch"], r["dim"]))
            r[key] = r["lookups_per_s"] / base if base and not withheld else None


def run_shape(case: Case, k: int, present: float, impls: list[str], gen: torch.Generator,
              results: list[dict], log) -> None:
    cfg, dim = case.cfg, case.dim
    rows, pool_rows = case.chunk_rows(k, present, gen)
    nbytes = case.bytes_moved(rows, dim // k)
    fns = ours([i for i in impls if i in ("reference", "cpu", "cpu-torch")], rows, pool_rows,
               dim // k, case.n, k, gen)
    if k == 1 and present == 1.0:
        if set(TORCH_PEERS) & set(impls):
            peers = torch_peers(case.global_ids, cfg.features * cfg.rows_per_table, dim, LR,
                                EPS, gen)
            fns.update({i: peers[i] for i in TORCH_PEERS if i in impls})
        if "fbgemm" in impls:
            fns["fbgemm"] = fbgemm_peer(case.ids, cfg.rows_per_table, dim, LR, EPS, gen)
    for op in cfg.ops:
        times = measure({i: f[op] for i, f in fns.items()}, cfg.warmup, cfg.repeats)
        for impl, ts in times.items():
            _record(results, case, impl, op, k, present, ts, nbytes[op])
        log(f"  threads={torch.get_num_threads()} B={case.batch} D={dim} K={k} "
            f"present={present:.4g} {op}: " + ", ".join(
                f"{i} {statistics.median(ts) * 1e3:.1f}ms" for i, ts in times.items()))


def run_methods(cfg: BenchConfig, batch: int, dim: int, gen: torch.Generator, log) -> list[dict]:
    """The real uniform and FIITED embedding steps on one Zipf id stream (see method_step)."""
    mc = cfg.method
    n = mc.warmup_steps + cfg.repeats
    batches = [torch.stack([zipf_ids(batch, cfg.rows_per_table, cfg.zipf, gen)
                            for _ in range(cfg.features)], 1) for _ in range(n)]
    rows = method_step.run(mc, batches, dim, cfg.rows_per_table, LR, cfg.seed, cfg.repeats, log)
    for r in rows:
        r.update(threads=torch.get_num_threads(), batch=batch, dim=dim, features=cfg.features)
    return rows


def _sparse_case(results: list[dict]) -> list[dict]:
    index = {(r["impl"], r["op"], r["threads"], r["batch"], r["dim"], r["chunks"],
              r["present_fraction"]): r for r in results}
    out = []
    for r in results:
        if r["chunks"] == 4 and r["present_fraction"] < 1:
            base = index.get((r["impl"], r["op"], r["threads"], r["batch"], r["dim"], 1, 1.0))
            if base:
                out.append({
                    "impl": r["impl"], "op": r["op"], "threads": r["threads"],
                    "batch": r["batch"], "dim": r["dim"], "chunks": 4,
                    "present_fraction": r["present_fraction"],
                    "lookups_per_s": r["lookups_per_s"],
                    "uniform_lookups_per_s": base["lookups_per_s"],
                    "ratio_vs_uniform": r["lookups_per_s"] / base["lookups_per_s"]})
    return out


def run(cfg: BenchConfig, log=print) -> dict:
    gen = torch.Generator().manual_seed(cfg.seed)
    impls = [i for i in cfg.impls if i != "fbgemm" or fbgemm_available()]
    load_before = os.getloadavg()
    results: list[dict] = []
    methods: list[dict] = []
    saved_threads = torch.get_num_threads()
    try:
        for threads in cfg.threads:
            torch.set_num_threads(threads)
            for batch in cfg.batches:
                for dim in cfg.dims:
                    case = Case(cfg, batch, dim, gen)
                    # K=1 always runs: the uniform baseline and where the full-table peers run.
                    shapes = [(k, 1.0) for k in sorted({1, *cfg.chunks}) if dim % k == 0]
                    if cfg.fiited_case and dim % 4 == 0:
                        shapes.append((4, cfg.present_fraction))
                    for k, present in shapes:
                        run_shape(case, k, present, impls, gen, results, log)
                    if cfg.method_case and dim % cfg.method.chunks == 0:
                        methods += run_methods(cfg, batch, dim, gen, log)
    finally:
        torch.set_num_threads(saved_threads)
    info = meta(cfg, impls, load_before, os.getloadavg())
    _add_ratios(results, withheld=info["loaded"])
    if info["loaded"]:
        for r in methods:
            r["ratio_vs_uniform"] = None
    return {"meta": info, "results": results,
            "fiited_like": _sparse_case(results) if cfg.fiited_case else [],
            "method_case": methods}


def meta(cfg: BenchConfig, impls: list[str], load_before, load_after) -> dict:
    cpu_native.library()
    cores = os.cpu_count() or 1
    return {
        "torch": torch.__version__, "threads": list(cfg.threads), "cores": cores,
        "load_before": list(load_before), "load_after": list(load_after),
        "loaded": load_before[0] > cores,
        "omp": {v: os.environ.get(v, "unset") for v in OMP_VARS},
        "machine": platform.machine(), "processor": platform.processor(),
        "python": platform.python_version(), "impls": impls,
        "cpu_native": cpu_native.failure or "built",
        "thp_mem_alloc_enable": os.environ.get("THP_MEM_ALLOC_ENABLE", "unset"),
        "fbgemm": fbgemm_available(),
        "config": {k: (vars(v) if k == "method" else v) for k, v in vars(cfg).items()},
        "notes": ["torch uses element-wise Adagrad (D accumulators per row), another optimizer; "
                  "torch-rowwise, ours and FBGEMM use row-wise Adagrad (one per row)",
                  "bytes: lookup = 4*N*K + 4*Np*C + 4*N*D; update = lookup + 4*N*D "
                  "+ U*(8*C + 8); see the module docstring",
                  "times are medians of interleaved repeats after warm-up",
                  "fiited_like is a synthetic kernel shape (random 1/16 present); method_case "
                  "times the real FIITED and uniform embedding steps"],
    }


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
                    help="skip the synthetic K=4, 1/16-present kernel shape")
    ap.add_argument("--no-method-case", action="store_true",
                    help="skip the real uniform-vs-FIITED embedding step")
    ap.add_argument("--method-budget", type=float, default=d.method.budget,
                    help="FIITED's total budget in the method case")
    ap.add_argument("--threads", type=int, nargs="+", default=d.threads,
                    help="thread counts to run every case at (default: 1 and all cores)")
    ap.add_argument("--seed", type=int, default=d.seed)
    ap.add_argument("--tiny", action="store_true", help="tiny shapes, for tests")
    ap.add_argument("--json", type=Path, help="write the results as JSON here")
    args = ap.parse_args(argv)
    for name in ("batch", "dim", "chunks", "threads"):
        bad = [x for x in getattr(args, name) if x < 1]
        if bad:
            ap.error(f"--{name} values must be >= 1, got {bad}")
    if args.features < 1 or args.rows_per_table < 1 or args.repeats < 1 or args.warmup < 0:
        ap.error("--features, --rows-per-table and --repeats must be >= 1, --warmup >= 0")
    if not 0 < args.method_budget <= 1:
        ap.error(f"--method-budget must be in (0, 1], got {args.method_budget}")
    cfg = BenchConfig(batches=args.batch, dims=args.dim, chunks=args.chunks,
                      features=args.features, rows_per_table=args.rows_per_table, zipf=args.zipf,
                      ops=args.ops, impls=args.impls, warmup=args.warmup, repeats=args.repeats,
                      fiited_case=not args.no_fiited_case, threads=sorted(set(args.threads)),
                      method_case=not args.no_method_case,
                      method=method_step.MethodCase(budget=args.method_budget), seed=args.seed)
    if args.tiny:
        cfg.batches, cfg.dims, cfg.chunks = [32], [8], [1, 2]
        cfg.features, cfg.rows_per_table, cfg.warmup, cfg.repeats = 3, 50, 1, 2
        cfg.method = method_step.MethodCase(budget=0.5, warmup_steps=35)
    return cfg, args


def main(argv=None) -> int:
    cfg, args = parse(argv)
    print(f"fiited-kernels: B={cfg.batches} F={cfg.features} D={cfg.dims} K={cfg.chunks} "
          f"rows/table={cfg.rows_per_table} zipf={cfg.zipf} threads={cfg.threads} "
          f"load={os.getloadavg()[0]:.2f} cores={os.cpu_count()}", flush=True)
    report = run(cfg, log=lambda s: print(s, flush=True))
    print(table(report))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
