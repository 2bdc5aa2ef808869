#!/usr/bin/env python3
"""One command for a CUDA machine: are the Triton kernels right, and how fast are they?

Needs python3 with torch and triton only: no pip install, no hydra/mlflow/pandas, and the repo
need not be installed (it loads ``fiited/kernels`` straight from this checkout).

1. Correctness: fresh random inputs (heavy duplicates, hot rows longer than a program's tile,
   -1 rows, K in {1,2,4,8}, C not a power of two, empty batches, int32/int64 rows, SGD and
   row-wise Adagrad); outputs and the caching allocator are poisoned with NaN first; pool, state
   and norms after the update are compared with the reference; a second run must be bit-equal.
2. Speed at D=128, B*F >= 1M Zipf ids: gather and lookup+update against torch's CUDA ops and
   against the measured device-to-device copy bandwidth (targets: gather >= 50%, update >= 30%).

    python3 scripts/gpu_check.py [--out gpu_check.md]
    python3 scripts/gpu_check.py --device cpu --interpret --tiny     # smoke test, no GPU
"""
from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import sys
import time
import traceback
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

GATHER_TARGET = 0.50  # fraction of copy bandwidth
UPDATE_TARGET = 0.30
TOLERANCE = 1e-5  # max |a - b| / max |b| after an update


def load_kernels():
    """Import fiited.kernels.{reference,triton_kernels} without running the packages' __init__."""
    if "fiited" not in sys.modules:
        for name, path in (("fiited", ROOT / "fiited"),
                           ("fiited.kernels", ROOT / "fiited" / "kernels")):
            pkg = types.ModuleType(name)
            pkg.__path__ = [str(path)]
            sys.modules[name] = pkg
    from fiited.kernels import reference, triton_kernels
    from fiited.optim import SparseOptimConfig
    return reference, triton_kernels, SparseOptimConfig


def zipf_ids(n: int, vocab: int, alpha: float, gen, device):
    """Zipf-like ids in [0, vocab): rank r drawn with p ~ 1/(r+1)^alpha, ranks scattered."""
    import torch
    u = torch.rand(n, generator=gen, device=device, dtype=torch.float64)
    a = 1.0 - alpha
    rank = ((((vocab + 1.0) ** a - 1.0) * u + 1.0) ** (1.0 / a) - 1.0).floor().long()
    rank = rank.clamp_(0, vocab - 1)
    return (rank * 2654435761) % vocab  # hot ids are not neighbours


# ---- correctness ---------------------------------------------------------------------------
# name, N, K, C, pool rows, absent fraction, hot fraction (share of one row), rows dtype
FULL_CASES = [
    ("k1 c128 dup", 6000, 1, 128, 300, 0.0, 0.0, "int64"),
    ("k1 c100 one hot row", 5000, 1, 100, 50, 0.0, 0.6, "int32"),
    ("k2 c12 absent", 4000, 2, 12, 900, 0.3, 0.1, "int32"),
    ("k4 c32 hot+absent", 3000, 4, 32, 4000, 0.5, 0.3, "int64"),
    ("k4 c24 1/16 present", 4000, 4, 24, 2000, 15 / 16, 0.0, "int32"),
    ("k8 c16 unique", 1000, 8, 16, 100000, 0.2, 0.0, "int64"),
    ("k8 c3", 2500, 8, 3, 700, 0.1, 0.2, "int64"),
    ("k4 c40 all absent", 1000, 4, 40, 64, 1.0, 0.0, "int64"),
    ("k4 c12 empty batch", 0, 4, 12, 10, 0.0, 0.0, "int32"),
    ("k1 c64 empty pool", 500, 1, 64, 0, 1.0, 0.0, "int64"),
]
TINY_CASES = [
    ("k1 c12 dup", 40, 1, 12, 7, 0.0, 0.0, "int64"),
    ("k2 c12 hot+absent", 30, 2, 12, 9, 0.3, 0.5, "int32"),
    ("k4 c8 1/16 present", 24, 4, 8, 40, 15 / 16, 0.0, "int64"),
    ("k4 c12 all absent", 6, 4, 12, 5, 1.0, 0.0, "int64"),
    ("k2 c12 empty batch", 0, 2, 12, 5, 0.0, 0.0, "int32"),
]


def make_rows(n, k, pool_rows, absent, hot, dtype, gen, device):
    import torch
    if pool_rows == 0:
        return torch.full((n, k), -1, dtype=dtype, device=device)
    rows = torch.randint(0, pool_rows, (n, k), generator=gen, device=device)
    if hot > 0:
        rows = torch.where(torch.rand(n, k, generator=gen, device=device) < hot,
                           torch.zeros_like(rows), rows)
    if absent > 0:
        rows = torch.where(torch.rand(n, k, generator=gen, device=device) < absent,
                           torch.full_like(rows, -1), rows)
    return rows.to(dtype)


def rel_err(a, b) -> float:
    if a.numel() == 0:
        return 0.0
    if bool(a.isnan().any()):
        return math.inf
    scale = float(b.abs().max())
    return float((a.float() - b.float()).abs().max()) / max(scale, 1e-30)


def poison_allocator(device) -> None:
    """Leave NaN in the caching allocator's free blocks, so unwritten internal buffers show."""
    import torch
    if device.type == "cuda":  # large blocks, then the small-block pool (<= 1 MiB each)
        free, _ = torch.cuda.mem_get_info()
        junk = [torch.full((min(free // 8, 1 << 28),), float("nan"), device=device)]
        junk += [torch.full((1 << 16,), float("nan"), device=device) for _ in range(128)]
        del junk


def check_case(case, opt_name, kernels, device, seed):
    import torch
    reference, tk, SparseOptimConfig = kernels
    name, n, k, c, p, absent, hot, dt = case
    gen = torch.Generator(device=device).manual_seed(seed)
    rows = make_rows(n, k, p, absent, hot, getattr(torch, dt), gen, device)
    pool = torch.randn(p, c, generator=gen, device=device)
    adagrad = opt_name == "rowwise_adagrad"
    state = (torch.rand(p, generator=gen, device=device) if adagrad
             else torch.empty(0, device=device))
    grad = torch.randn(n, k * c, generator=gen, device=device)
    opt = SparseOptimConfig(name=opt_name, lr=0.05)

    out = torch.full((n, k * c), float("nan"), device=device)
    poison_allocator(device)
    tk.gather(pool, rows, out=out)
    g_err = rel_err(out, reference.gather(pool, rows))

    results = []
    for _ in range(2):
        p1, s1 = pool.clone(), state.clone()
        norms = torch.full((n, k), float("nan"), device=device)
        poison_allocator(device)
        tk.backward_update(p1, s1, rows, grad, opt, norms=norms)
        results.append((p1, s1, norms))
    p2, s2 = pool.clone(), state.clone()
    n2 = reference.backward_update(p2, s2, rows, grad, opt)
    (p1, s1, n1), (p3, s3, n3) = results
    deterministic = torch.equal(p1, p3) and torch.equal(s1, s3) and torch.equal(n1, n3)
    errs = {"gather": g_err, "pool": rel_err(p1, p2), "state": rel_err(s1, s2),
            "norms": rel_err(n1, n2)}
    ok = (g_err == 0.0 and deterministic
          and all(v <= TOLERANCE for key, v in errs.items() if key != "gather"))
    return {"case": name, "opt": opt_name, **errs, "deterministic": deterministic, "ok": ok}


def run_correctness(kernels, device, tiny: bool):
    _, tk, _ = kernels
    cases = TINY_CASES if tiny else FULL_CASES
    old_tile = tk.UPDATE_TILE
    tk.UPDATE_TILE = 4  # 4 positions per program: segments must cross tile edges
    rows = []
    try:
        for i, case in enumerate(cases):
            for opt_name in ("sgd", "rowwise_adagrad"):
                try:
                    rows.append(check_case(case, opt_name, kernels, device, seed=1000 + i))
                except Exception as e:  # keep checking the rest; report the failure
                    traceback.print_exc()
                    rows.append({"case": case[0], "opt": opt_name, "error": repr(e)[:200],
                                 "ok": False})
                r = rows[-1]
                print(f"  {r['case']:<24} {r['opt']:<16} {'ok' if r['ok'] else 'FAIL'}",
                      flush=True)
    finally:
        tk.UPDATE_TILE = old_tile
    return rows


# ---- timing --------------------------------------------------------------------------------
def timer(device):
    import torch

    def measure(fn, warmup: int, repeats: int) -> float:
        for _ in range(warmup):
            fn()
        times = []
        for _ in range(repeats):
            if device.type == "cuda":
                a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                a.record()
                fn()
                b.record()
                b.synchronize()
                times.append(a.elapsed_time(b) / 1e3)
            else:
                t = time.perf_counter()
                fn()
                times.append(time.perf_counter() - t)
        return statistics.median(times)
    return measure


def run_timing(kernels, device, tiny: bool):
    import torch
    import torch.nn.functional as F
    reference, tk, SparseOptimConfig = kernels
    measure = timer(device)
    warmup, repeats = (0, 1) if tiny else (3, 10)
    b, f, d, vocab = (8, 2, 16, 20) if tiny else (40960, 26, 128, 400_000)
    gen = torch.Generator(device=device).manual_seed(0)
    ids = torch.stack([zipf_ids(b, vocab, 1.05, gen, device) + t * vocab for t in range(f)], 1)
    n = b * f
    opt = SparseOptimConfig(name="rowwise_adagrad", lr=1e-3)
    sgd = SparseOptimConfig(name="sgd", lr=1e-3)

    copy_elems = (1 << 12) if tiny else (1 << 28)
    src = torch.randn(copy_elems, device=device)
    dst = torch.empty_like(src)
    copy_s = measure(lambda: dst.copy_(src), warmup, repeats)
    copy_bw = 2 * src.numel() * 4 / copy_s
    table = [{"op": "copy", "impl": "tensor.copy_", "k": "-", "present": "-",
              "ms": copy_s * 1e3, "gbps": copy_bw / 1e9, "of_copy": 1.0, "target": ""}]

    for k, present in ((1, 1.0), (4, 1.0), (4, 1 / 16)):
        c = d // k
        rows = (ids.reshape(-1, 1) * k + torch.arange(k, device=device)).reshape(n, k)
        pool_rows = f * vocab * k
        if present < 1:  # FIITED-like: a compact pool holding 1/16 of the chunks
            uniq, inv = torch.unique(rows.reshape(-1), return_inverse=True)
            kept = torch.rand(uniq.numel(), generator=gen, device=device) < present
            slot = torch.cumsum(kept.long(), 0) - 1
            rows = torch.where(kept[inv], slot[inv], torch.full_like(inv, -1)).reshape(n, k)
            pool_rows = int(kept.sum())
        rows = rows.to(torch.int32)
        pool = torch.randn(pool_rows, c, device=device) * 0.01
        state = torch.zeros(pool_rows, device=device)
        grad = torch.randn(n, k * c, device=device) * 0.01
        flat = rows.reshape(-1)
        present_flat = flat[flat >= 0]
        n_present = present_flat.numel()
        n_unique = int(torch.unique(present_flat).numel())
        idx_bytes = flat.numel() * flat.element_size()
        gather_bytes = idx_bytes + 2 * n_present * c * 4 + (flat.numel() - n_present) * c * 4
        update_bytes = (idx_bytes + n * k * c * 4 + n * k * 4
                        + n_unique * (2 * c * 4 + 2 * 4))
        label = f"{present:.4g}" if present < 1 else "1"

        def add(op, impl, seconds, nbytes, target=None):
            bw = nbytes / seconds
            table.append({"op": op, "impl": impl, "k": k, "present": label, "ms": seconds * 1e3,
                          "gbps": bw / 1e9, "of_copy": bw / copy_bw,
                          "target": "" if target is None else
                          ("PASS" if bw / copy_bw >= target else "MISS") + f" (>= {target:.0%})"})

        cases = [
            ("gather", "triton", lambda: tk.gather(pool, rows), gather_bytes, GATHER_TARGET),
            ("gather", "torch reference", lambda: reference.gather(pool, rows), gather_bytes,
             None),
            ("update", "triton rowwise_adagrad",
             lambda: tk.backward_update(pool, state, rows, grad, opt), update_bytes,
             UPDATE_TARGET),
            ("update", "triton sgd", lambda: tk.backward_update(pool, state, rows, grad, sgd),
             update_bytes, None),
            ("update", "part: torch.sort(stable) of rows", lambda: torch.sort(flat, stable=True),
             update_bytes, None),
            ("update", "torch reference adagrad",
             lambda: reference.backward_update(pool, state, rows, grad, opt), update_bytes, None),
        ]
        if present == 1:
            lflat = flat.long()
            g2 = grad.view(-1, c)
            cases += [
                ("gather", "torch F.embedding", lambda: F.embedding(lflat, pool), gather_bytes,
                 None),
                ("update", "torch index_add_ sgd (atomics)",
                 lambda: pool.index_add_(0, lflat, g2, alpha=-1e-3), update_bytes, None),
            ]
        for op, impl, fn, nbytes, target in cases:
            try:
                add(op, impl, measure(fn, warmup, repeats), nbytes, target)
            except Exception as e:
                traceback.print_exc()
                table.append({"op": op, "impl": impl, "k": k, "present": label, "ms": math.nan,
                              "gbps": math.nan, "of_copy": math.nan, "target": repr(e)[:80]})
        try:
            def step():
                tk.gather(pool, rows)
                tk.backward_update(pool, state, rows, grad, opt)
            add("lookup+update", "triton rowwise_adagrad", measure(step, warmup, repeats),
                gather_bytes + update_bytes)
            if present == 1:
                def torch_step():
                    F.embedding(lflat, pool)
                    pool.index_add_(0, lflat, g2, alpha=-1e-3)
                add("lookup+update", "torch embedding + index_add_ sgd",
                    measure(torch_step, warmup, repeats), gather_bytes + update_bytes)
        except Exception:
            traceback.print_exc()
        print(f"  timed K={k} present={label}: N={n} unique={n_unique}", flush=True)
    return table, {"B": b, "F": f, "D": d, "vocab_per_table": vocab, "N": n}


def run_tuning(kernels, device, tiny: bool):
    """Update time over the kernel's tile knobs, to choose the defaults in triton_kernels."""
    import itertools
    import torch
    _, tk, SparseOptimConfig = kernels
    measure = timer(device)
    b, f, d, vocab = (8, 2, 16, 20) if tiny else (40960, 26, 128, 400_000)
    gen = torch.Generator(device=device).manual_seed(1)
    ids = torch.stack([zipf_ids(b, vocab, 1.05, gen, device) + t * vocab for t in range(f)], 1)
    n = b * f
    opt = SparseOptimConfig(name="rowwise_adagrad", lr=1e-3)
    saved = (tk.UPDATE_TILE_ELEMS, tk.UPDATE_WARPS)
    grid = [(64, 4)] if tiny else list(itertools.product((1024, 2048, 4096), (2, 4, 8)))
    out = []
    try:
        for k in (1, 4):
            c = d // k
            rows = (ids.reshape(-1, 1) * k + torch.arange(k, device=device)).reshape(n, k)
            rows = rows.to(torch.int32)
            pool = torch.randn(f * vocab * k, c, device=device) * 0.01
            state = torch.zeros(f * vocab * k, device=device)
            grad = torch.randn(n, k * c, device=device) * 0.01
            for elems, warps in grid:
                tk.UPDATE_TILE_ELEMS, tk.UPDATE_WARPS = elems, warps
                try:
                    sec = measure(lambda: tk.backward_update(pool, state, rows, grad, opt),
                                  1, 1 if tiny else 7)
                except Exception:
                    traceback.print_exc()
                    sec = math.nan
                out.append({"k": k, "elems": elems, "warps": warps, "ms": sec * 1e3})
                print(f"  tune K={k} elems={elems} warps={warps}: {sec * 1e3:.3f} ms", flush=True)
    finally:
        tk.UPDATE_TILE_ELEMS, tk.UPDATE_WARPS = saved
    return out


# ---- report --------------------------------------------------------------------------------
def markdown(header, correctness, timing, shape, tuning=()) -> str:
    lines = ["# gpu_check", "", header, "", "## Correctness (vs reference)", "",
             "| case | optimizer | gather err | pool rel err | state rel err | norms rel err "
             "| deterministic | result |", "|---|---|---|---|---|---|---|---|"]
    for r in correctness:
        if "error" in r:
            lines.append(f"| {r['case']} | {r['opt']} | | | | | | ERROR {r['error']} |")
            continue
        lines.append(f"| {r['case']} | {r['opt']} | {r['gather']:.1e} | {r['pool']:.1e} | "
                     f"{r['state']:.1e} | {r['norms']:.1e} | {r['deterministic']} | "
                     f"{'ok' if r['ok'] else 'FAIL'} |")
    lines += ["", f"## Speed (B={shape['B']}, F={shape['F']}, D={shape['D']}, N={shape['N']}, "
              f"Zipf ids over {shape['vocab_per_table']} rows per table)", "",
              "Bytes: gather = index + present chunks read + output written; update = index + "
              "grad read + norms written + each unique row's weights and state read and written; "
              "copy = bytes read + written.", "",
              "| op | impl | K | present | ms | GB/s | of copy bw | target |",
              "|---|---|---|---|---|---|---|---|"]
    for r in timing:
        lines.append(f"| {r['op']} | {r['impl']} | {r['k']} | {r['present']} | {r['ms']:.3f} | "
                     f"{r['gbps']:.1f} | {r['of_copy']:.0%} | {r['target']} |")
    if tuning:
        lines += ["", "## Update tile sweep (rowwise_adagrad, same shape)", "",
                  "| K | UPDATE_TILE_ELEMS | UPDATE_WARPS | ms |", "|---|---|---|---|"]
        lines += [f"| {r['k']} | {r['elems']} | {r['warps']} | {r['ms']:.3f} |"
                  for r in tuning]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda", help="cuda (default) or cpu with --interpret")
    ap.add_argument("--interpret", action="store_true",
                    help="run Triton under TRITON_INTERPRET=1 (CPU tensors; smoke test)")
    ap.add_argument("--tiny", action="store_true", help="tiny shapes (smoke test)")
    ap.add_argument("--skip-timing", action="store_true")
    ap.add_argument("--tune", action="store_true", help="also sweep the update's tile knobs")
    ap.add_argument("--out", default="gpu_check.md", help="markdown report path")
    args = ap.parse_args(argv)
    if args.interpret:
        os.environ["TRITON_INTERPRET"] = "1"
    t0 = time.time()
    import torch
    import triton
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("CUDA is not available; use --device cpu --interpret for a smoke test",
              file=sys.stderr)
        return 2
    if device.type == "cpu" and not args.interpret:
        print("--device cpu needs --interpret (Triton kernels run on CUDA only)", file=sys.stderr)
        return 2
    kernels = load_kernels()
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
    header = (f"device: {name}; torch {torch.__version__}; triton {triton.__version__}; "
              f"interpret: {args.interpret}")
    print(header, flush=True)
    print("correctness:", flush=True)
    correctness = run_correctness(kernels, device, args.tiny)
    print(f"correctness done in {time.time() - t0:.1f}s", flush=True)
    timing, shape = [], {"B": 0, "F": 0, "D": 0, "N": 0, "vocab_per_table": 0}
    if not args.skip_timing:
        print("timing:", flush=True)
        timing, shape = run_timing(kernels, device, args.tiny)
    tuning = run_tuning(kernels, device, args.tiny) if args.tune else []
    report = markdown(header + f"; wall {time.time() - t0:.0f}s", correctness, timing, shape,
                      tuning)
    Path(args.out).write_text(report)
    print(report)
    return 0 if all(r["ok"] for r in correctness) else 1


if __name__ == "__main__":
    sys.exit(main())
