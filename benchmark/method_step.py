"""The embedding step of real methods, for ``fiited-kernels``' FIITED case.

A random 1/16 of chunks marked present says little about FIITED: in training, hot rows keep their
chunks (44-94% of chunk occurrences are present), and each step also translates ids through the
index, accumulates utilities and allocates on first access. So this case builds the methods
themselves through the registry, trains them on a Zipf id stream until the pool has filled and
two pruning events have run, and then times one full embedding step (forward, the fused backward
update with utilities, ``on_step``) per batch, on identical batches, interleaved. No dense model:
the step is the embedding module's own work, which is what the kernels are for.
"""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from typing import Callable

import torch

from fiited.interface import TableSpec
from fiited.optim import SparseOptimConfig
from fiited.registry import make_config, method_class

EVENTS_AT = (10, 30)  # two events during warm-up; none while timing


@dataclass
class MethodCase:
    budget: float = 1 / 16
    chunks: int = 4
    index: str = "hashed"
    warmup_steps: int = 60
    methods: list[str] = field(default_factory=lambda: ["uniform", "fiited"])


def knobs(name: str, case: MethodCase) -> dict:
    if name == "uniform":
        return {"name": "uniform", "budget": 1.0}
    out = {"name": name, "budget": case.budget, "budget_scope": "total", "index": case.index,
           "schedule": {"warmup": list(EVENTS_AT), "interval": 10 ** 9}}
    if name == "fiited":
        out["num_chunks"] = case.chunks
    return out


def build(name: str, case: MethodCase, features: int, rows: int, dim: int, lr: float, seed: int):
    cfg = make_config(knobs(name, case))
    tables = [TableSpec(f"t{f}", rows) for f in range(features)]
    optim = SparseOptimConfig(name="rowwise_adagrad", lr=lr)
    return method_class(name)(tables, dim, optim, cfg, seed=seed)


def present_share(out: torch.Tensor, chunks: int) -> float:
    """Share of chunk occurrences that read nonzero weights (absent chunks read exact zeros)."""
    n = out.shape[0] * out.shape[1]
    return float((out.reshape(n, chunks, -1) != 0).any(dim=2).float().mean())


def run(case: MethodCase, batches: list[torch.Tensor], dim: int, rows: int, lr: float,
        seed: int, repeats: int, log=print) -> list[dict]:
    """``batches``: at least warmup_steps + repeats id tensors [B, F]; returns one row per method."""
    features = batches[0].shape[1]
    gen = torch.Generator().manual_seed(seed)
    grad = torch.randn(*batches[0].shape, dim, generator=gen) * 0.01
    methods = {n: build(n, case, features, rows, dim, lr, seed) for n in case.methods}
    steps = {n: 0 for n in methods}
    events: dict[str, list[float]] = {n: [] for n in methods}

    def stepper(name: str) -> Callable[[torch.Tensor], torch.Tensor]:
        m = methods[name]

        def step(ids: torch.Tensor) -> torch.Tensor:
            out = m(ids)
            out.backward(grad)
            steps[name] += 1
            t = time.perf_counter()
            metrics = m.on_step(steps[name])
            if steps[name] in EVENTS_AT and name != "uniform":
                events[name].append(float(metrics.get("prune/event_seconds",
                                                      time.perf_counter() - t)))
            return out.detach()
        return step

    fns = {n: stepper(n) for n in methods}
    for i in range(case.warmup_steps):
        for fn in fns.values():
            fn(batches[i])
    times: dict[str, list[float]] = {n: [] for n in methods}
    shares: dict[str, list[float]] = {n: [] for n in methods}
    k = {n: (case.chunks if n == "fiited" else 1) for n in methods}
    for r in range(repeats):
        ids = batches[case.warmup_steps + r]
        for n, fn in fns.items():
            t = time.perf_counter()
            out = fn(ids)
            times[n].append(time.perf_counter() - t)
            shares[n].append(present_share(out, k[n]))
    base = statistics.median(times["uniform"]) if "uniform" in times else None
    rows_out = []
    for n in methods:
        med = statistics.median(times[n])
        mem = methods[n].memory()
        rows_out.append({
            "method": n, "chunks": k[n], "budget": 1.0 if n == "uniform" else case.budget,
            "index": None if n == "uniform" else case.index, "median_s": med,
            "times_s": times[n], "samples_per_s": batches[0].shape[0] / med,
            "present_share": statistics.fmean(shares[n]), "event_seconds": events[n],
            "total_bytes": int(mem.total), "ratio_vs_uniform": base / med if base else None})
        log(f"  method step {n}: {med * 1e3:.2f} ms, present share "
            f"{rows_out[-1]['present_share']:.2f}")
    return rows_out
