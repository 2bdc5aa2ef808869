"""Memory at paper scale: every method in its own fresh process at Criteo Kaggle's cardinalities.

    python -m benchmark.memory_bench [--scale 1.0] [--steps 300] [--methods SPEC ...]

Each method (a ``name:key=value,...`` spec, as in ``harness_bench``) runs in a fresh child
process: imports, in-memory batches, then a baseline (interpreter + torch + data), then the
method is built and the reference DLRM trains ``--steps`` steps with the method's own pruning
schedule, then ``on_train_end``. Defaults: the reference recipe's batch of 128 and 2000 steps, so
that ~6.7M id draws fill the pools and every in-training method runs >= 5 events. Batches are generated in memory, not read from a prepared
dataset, so the baseline stays small: per table a bounded Zipf law over ranks (exponent
``--skew``), ranks scattered over ids by a fixed bijection, id 0 with the Criteo preset's
default-token share; random dense features and labels (memory, not quality, is measured).

Per method: the ledger (largest ``mem/total_bytes`` seen, and final), the measured peak
(``benchmark.peak``: anonymous RSS high-water mark per window above the baseline, exactly what
the trainer reports as ``mem/train_peak_bytes``), the process's peak RSS above its baseline, and
per pruning event its seconds and its transient (peak inside ``on_step`` above the memory just
before it). A ``floor`` run (hashing with one row per table) measures what every run pays besides
the embeddings (dense model, activations, batches); ``measured - floor`` estimates the embedding
state. Writes ``OUT.json`` and ``OUT.md`` (``benchmark.memory_table``); ratios are to uniform.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmark.memory_table import FLOOR, MB, table   # FLOOR: hashing, one row per table

DEFAULT_METHODS = [
    "uniform",
    "fiited:budget=0.0625,budget_scope=total,index=auto",
    "fiited:budget=0.015625,budget_scope=total,index=auto",
    "adaembed:budget=0.0625,budget_scope=total,index=auto",
    "adaembed:budget=0.015625,budget_scope=total,index=auto",
    "itep:budget=0.0625,budget_scope=total,index=auto",
    "itep:budget=0.015625,budget_scope=total,index=auto",
    "post_prune:budget=0.0625",
    "hashing:budget=0.0625",
]


# ---- the child: one method, one process ------------------------------------------------------

class ZipfBatches:
    """In-memory Criteo-like batches: ids[B, F] by a bounded Zipf law per table (vectorised)."""

    def __init__(self, cards, default_mass, batch: int, num_dense: int, skew: float, seed: int):
        import torch

        self.torch = torch
        self.n = torch.tensor(cards, dtype=torch.int64)
        self.mass = torch.tensor(default_mass, dtype=torch.float64)
        # rank -> id bijection (r * a + c) mod n, gcd(a, n) = 1: popular ids spread over the table
        a = []
        for f, n in enumerate(cards):
            x = max(1, int(n * 0.6180339887) | 1)
            while math.gcd(x, n) != 1:
                x += 2
            a.append(x % n if n > 1 else 0)
        self.a = torch.tensor(a, dtype=torch.int64)
        self.c = torch.tensor([(7919 * f) % n for f, n in enumerate(cards)], dtype=torch.int64)
        self.batch, self.num_dense, self.skew = batch, num_dense, float(skew)
        self.top = (self.n.double() + 1) ** (1 - self.skew)
        self.gen = torch.Generator().manual_seed(seed)

    def next(self):
        torch, g = self.torch, self.gen
        u = torch.rand(self.batch, self.n.numel(), generator=g, dtype=torch.float64)
        if abs(self.skew - 1) < 1e-9:
            x = (self.n.double() + 1) ** u
        else:  # inverse CDF of p(x) ~ x^-s on [1, n + 1)
            x = (1 + u * (self.top - 1)) ** (1 / (1 - self.skew))
        rank = torch.minimum(x.long() - 1, self.n - 1).clamp_min(0)
        ids = (rank * self.a + self.c) % self.n
        empty = torch.rand(self.batch, self.n.numel(), generator=g, dtype=torch.float64) < self.mass
        ids = torch.where(empty, torch.zeros_like(ids), ids)
        dense = torch.randn(self.batch, self.num_dense, generator=g)
        labels = (torch.rand(self.batch, generator=g) < 0.2562).float()
        return dense, ids, labels


def _tables(scale: float):
    from benchmark.data.synthetic import PRESETS

    p = PRESETS["criteo"]
    cards = [min(n, max(1, round(n * scale))) for n in p.cardinalities]
    return list(p.feature_names), cards, list(p.default_mass), p.num_dense


def run_child(spec: str, a: argparse.Namespace) -> dict:
    """Build and train one method here; every byte figure is above this process's baseline."""
    import torch

    from benchmark.harness_bench import parse_method
    from benchmark.model import DLRM, ModelConfig
    from benchmark.peak import PeakMeter, anon_rss_bytes, release_free_heap
    from fiited.interface import TableSpec
    from fiited.optim import SparseOptimConfig
    from fiited.registry import build_method, method_names

    torch.set_num_threads(a.threads)
    names, cards, mass, num_dense = _tables(a.scale)
    tables = [TableSpec(n, c) for n, c in zip(names, cards)]
    def config(sizes: list[int]) -> dict:
        if spec == FLOOR:  # one row per table
            return {"name": "hashing", "budget": min(1.0, 1.0001 * len(sizes) / sum(sizes))}
        return parse_method(spec)

    cfg = config(cards)
    method_names()  # load every method before the baseline
    optim = SparseOptimConfig(name="rowwise_adagrad", lr=0.05)
    mcfg = ModelConfig()
    loss_fn = torch.nn.BCEWithLogitsLoss()
    # Warm-up: the same method on tiny tables through its first events, so that code it loads
    # on first use (optimizer imports, kernel backends) is in the baseline, not in its peak.
    tiny = [TableSpec(n, min(c, 4096)) for n, c in zip(names, cards)]
    small = config([t.num_rows for t in tiny])
    _train(build_method(small, tiny, mcfg.dim, optim, seed=a.seed), mcfg, num_dense, loss_fn,
           ZipfBatches([t.num_rows for t in tiny], mass, 256, num_dense, a.skew, a.seed), 12)
    source = ZipfBatches(cards, mass, a.batch, num_dense, a.skew, a.seed)
    source.next()
    meter = PeakMeter()                                  # the baseline
    t0 = time.perf_counter()
    emb = build_method(cfg, tables, mcfg.dim, optim, seed=a.seed)
    construct_s = time.perf_counter() - t0
    construct_peak = meter.sample()
    model = DLRM(mcfg, num_dense, emb)
    opt = torch.optim.SGD(model.dense_parameters(), lr=0.1)
    ledger = [emb.memory().total]
    state_after_build = anon_rss_bytes() - meter.base
    events = []

    def on_step(step: int, call) -> dict:
        meter.sample()
        release_free_heap()  # else the event reuses freed pages unseen and looks free
        before = anon_rss_bytes() - meter.base
        t = time.perf_counter()
        out = call() or {}
        seconds = time.perf_counter() - t
        peak = meter.sample()
        if "prune/event_seconds" in out:
            ledger.append(emb.memory().total)
            events.append({"step": step, "seconds": seconds, "transient_bytes": peak - before,
                           "ledger_after": ledger[-1]})
            _say(spec, f"event {len(events)} at step {step}: {seconds:.2f} s, transient "
                       f"{(peak - before) / MB:,.1f} MB, ledger {ledger[-1] / MB:,.1f} MB")
        return out

    t_train = time.perf_counter()
    for step in range(1, a.steps + 1):
        dense, ids, labels = source.next()
        loss = loss_fn(model(dense, ids), labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        loss = loss.detach()
        on_step(step, lambda: emb.on_step(step))
        if step % 50 == 0 or step == a.steps:
            ledger.append(emb.memory().total)
            meter.sample()
        if step % 500 == 0 or step == a.steps:
            _say(spec, f"step {step}/{a.steps}: loss {loss.item():.4f}, ledger "
                       f"{ledger[-1] / MB:,.1f} MB, measured peak {meter.peak / MB:,.1f} MB")
    train_s = time.perf_counter() - t_train
    train_peak = meter.measured()
    on_step(a.steps, emb.on_train_end)       # post-training pruning is an event too
    final = emb.memory()
    measured = meter.measured()
    return {
        "spec": spec, "config": cfg, "rows": sum(cards), "tables": len(cards),
        "threads": torch.get_num_threads(), "exact": meter.exact,
        "baseline_anon_bytes": meter.base, "baseline_rss_bytes": meter.rss_base,
        "construct_seconds": construct_s, "construct_peak_bytes": construct_peak,
        "state_after_build_bytes": state_after_build,
        "train_seconds": train_s, "steps": a.steps, "batch": a.batch,
        "ledger_peak_bytes": max(ledger), "ledger_final_bytes": final.total,
        "weights_bytes": final.weights, "uniform_total_bytes": final.uniform_total,
        "train_peak_bytes": train_peak, "measured_peak_bytes": measured,
        "process_peak_above_baseline_bytes": meter.process_peak - meter.rss_base,
        "events": events,
    }


def _train(emb, mcfg, num_dense: int, loss_fn, source: ZipfBatches, steps: int) -> None:
    """A few plain training steps (the warm-up)."""
    import torch

    from benchmark.model import DLRM

    model = DLRM(mcfg, num_dense, emb)
    opt = torch.optim.SGD(model.dense_parameters(), lr=0.1)
    for step in range(1, steps + 1):
        dense, ids, labels = source.next()
        loss_fn(model(dense, ids), labels).backward()
        opt.step()
        emb.on_step(step)
    emb.memory()


def _say(spec: str, msg: str) -> None:
    print(f"[{spec}] {msg}", file=sys.stderr, flush=True)


# ---- the parent: one child per method, then the table ----------------------------------------

def _machine() -> dict:
    info = {"platform": platform.platform(), "python": platform.python_version(),
            "cpus": os.cpu_count()}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
        mem = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
        info["mem_total_gib"] = round(int(mem["MemTotal"].split()[0]) / 2**20, 1)
        info["mem_available_gib_at_start"] = round(int(mem["MemAvailable"].split()[0]) / 2**20, 1)
    except (OSError, KeyError, ValueError):
        pass
    return info


def run_all(a: argparse.Namespace, argv: list[str]) -> dict:
    specs = list(a.methods or DEFAULT_METHODS)
    if "uniform" not in specs:
        specs.insert(0, "uniform")
    if not a.no_floor:
        specs.append(FLOOR)
    import torch

    from benchmark.tracking import git_commit

    meta = {"command": "python -m benchmark.memory_bench " + " ".join(argv),
            "commit": a.commit_label or git_commit(Path(__file__).resolve().parent.parent),
            "torch": torch.__version__,
            "machine": _machine(),
            "load_at_start": os.getloadavg(), "started": time.strftime("%Y-%m-%d %H:%M UTC",
                                                                       time.gmtime()),
            "scale": a.scale, "steps": a.steps, "batch": a.batch, "threads": a.threads,
            "skew": a.skew, "seed": a.seed,
            "data": "batches generated in memory (bounded Zipf ids per table), no dataset"}
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, spec in enumerate(specs, 1):
            out = Path(tmp) / f"{i}.json"
            cmd = [sys.executable, "-m", "benchmark.memory_bench", "--child", spec,
                   "--result", str(out), "--scale", str(a.scale), "--steps", str(a.steps),
                   "--batch", str(a.batch), "--threads", str(a.threads), "--skew", str(a.skew),
                   "--seed", str(a.seed)]
            print(f"[{i}/{len(specs)}] {spec} ...", file=sys.stderr, flush=True)
            t = time.perf_counter()
            try:
                rc = subprocess.run(cmd, timeout=a.child_timeout).returncode
            except subprocess.TimeoutExpired:
                rc = "timeout"
            wall = time.perf_counter() - t
            if rc == 0 and out.is_file():
                row = json.loads(out.read_text())
                row["wall_seconds"] = wall
            else:
                row = {"spec": spec, "error": f"child exit {rc} after {wall:.0f} s"}
            print(f"[{i}/{len(specs)}] {spec}: {'done' if 'error' not in row else row['error']} "
                  f"({wall:.0f} s)", file=sys.stderr, flush=True)
            results.append(row)
    meta["load_at_end"] = os.getloadavg()
    return {"meta": meta, "results": results}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scale", type=float, default=1.0, help="fraction of Criteo Kaggle's ids")
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--batch", type=int, default=128,
                    help="default: the DLRM reference recipe's (conf/train/default.yaml)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per child")
    ap.add_argument("--skew", type=float, default=1.05, help="Zipf exponent of the ids")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--methods", nargs="*", metavar="SPEC",
                    help="method specs `name:key=value,...` (default: the committed table's)")
    ap.add_argument("--no-floor", action="store_true", help="skip the floor run")
    ap.add_argument("--child-timeout", type=float, default=3600)
    ap.add_argument("--out", default="memory_kaggle", help="writes OUT.json and OUT.md")
    ap.add_argument("--commit-label", help="the commit to record when run from an exported tree "
                                          "(default: git rev-parse of the working tree)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if not 0 < a.scale <= 1 or a.steps < 1 or a.batch < 1 or a.threads < 1 or a.skew <= 0:
        print("memory_bench: need 0 < --scale <= 1, --steps/--batch/--threads >= 1, --skew > 0",
              file=sys.stderr)
        return 2
    if a.child:
        try:
            row = run_child(a.child, a)
        except ValueError as e:
            print(f"memory_bench: method {a.child!r}: {e}", file=sys.stderr)
            return 2
        Path(a.result).write_text(json.dumps(row))
        return 0
    report = run_all(a, argv)
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(report, indent=2, default=float))
    out.with_suffix(".md").write_text(table(report))
    print(table(report))
    failed = [r["spec"] for r in report["results"] if "error" in r]
    if failed:
        print(f"memory_bench: {len(failed)} method(s) failed: {failed}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
