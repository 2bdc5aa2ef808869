"""Whole-model training throughput: our fused uniform path vs plain torch sparse embeddings.

Both train the same DLRM on identical batches (pre-loaded, so data loading is excluded):
ours = ``uniform`` through fiited's kernels with fused row-wise Adagrad; torch =
``nn.EmbeddingBag(sparse=True)`` + ``torch.optim.Adagrad`` (element-wise Adagrad: its state is a
full table-sized tensor; ours is one float per row). Prints samples/s and the ratio.

``--methods`` adds any registered method (FIITED, AdaEmbed, ITEP, hashing, ...) on the same
batches, with its pruning events, and reports samples/s relative to ``uniform``: the C5
throughput comparison without the noise of a sweep's parallel jobs. Paths alternate every
``--chunk`` steps.

    python -m benchmark.harness_bench --data data/synthetic_criteo_... --steps 200 \
        --methods fiited adaembed itep "fiited:index=hashed,budget_scope=total"
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import torch
from torch import nn

from benchmark.data.format import open_dataset
from benchmark.data.loader import BatchLoader
from benchmark.kernel_bench import OMP_VARS
from benchmark.model import DLRM, ModelConfig
from fiited import SparseOptimConfig, TableSpec, build_method
from fiited.registry import make_config
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


def parse_method(spec: str) -> dict:
    """``name`` or ``name:key=value,key=value`` (values read as YAML) -> a method config."""
    import yaml

    name, _, rest = spec.partition(":")
    cfg: dict = {"name": name.strip()}
    for item in filter(None, (x.strip() for x in rest.split(","))):
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise ValueError(f"--methods {spec!r}: {item!r} is not key=value")
        cfg[key.strip()] = yaml.safe_load(value)
    return cfg


class _Path:
    """One model and its optimizers, stepped on the shared batches; times each step."""

    def __init__(self, model, dense_opt, sparse_opt=None, emb=None) -> None:
        self.model, self.dense_opt, self.sparse_opt, self.emb = model, dense_opt, sparse_opt, emb
        self.loss_fn = nn.BCEWithLogitsLoss()
        self.step_s: list[float] = []   # steps after warm-up, one each
        self.event_s = 0.0              # pruning events inside those steps
        self.steps = 0

    def step(self, batch, timed: bool) -> None:
        t0 = time.perf_counter()
        loss = self.loss_fn(self.model(batch.dense, batch.ids), batch.labels)
        self.dense_opt.zero_grad(set_to_none=True)
        if self.sparse_opt is not None:
            self.sparse_opt.zero_grad(set_to_none=True)
        loss.backward()
        self.dense_opt.step()
        if self.sparse_opt is not None:
            self.sparse_opt.step()
        self.steps += 1
        events = self.emb.on_step(self.steps) if self.emb is not None else {}
        if timed:
            self.step_s.append(time.perf_counter() - t0)
            self.event_s += float(events.get("prune/event_seconds", 0.0))


def _interleaved(paths: dict[str, _Path], batches, warmup: int, chunk: int) -> None:
    """Every path takes the same batches in the same order; paths alternate every ``chunk``
    steps, so a slow spell of the machine falls on all of them alike."""
    for lo in range(0, len(batches), chunk):
        for path in paths.values():
            for i in range(lo, min(lo + chunk, len(batches))):
                path.step(batches[i], timed=i >= warmup)


def fit_warmup(have: int, steps: int, warmup: int, data: str, batch_size: int) -> int:
    """The warm-up that leaves timed steps when the train split holds fewer batches than
    ``steps + warmup`` (a quarter of them, at most ``warmup``); too few batches is an error
    that says what to change."""
    if have >= steps + warmup:
        return warmup
    if have < 4:
        raise ValueError(f"{data}: the train split holds {have} full batches of {batch_size}; "
                         f"the benchmark needs at least 4 (lower --batch-size or use more data)")
    fitted = min(warmup, have // 4)
    print(f"note: {data} holds {have} batches of {batch_size}, fewer than --steps {steps} + "
          f"--warmup {warmup}: warming up on {fitted}, timing {have - fitted}", file=sys.stderr)
    return fitted


def run(data: str, steps: int, batch_size: int, dim: int, lr: float, warmup: int,
        seed: int = 0, methods: list[str] = (), chunk: int = 10) -> dict:
    load_before = os.getloadavg()
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
    configs = {spec: parse_method(spec) for spec in methods}
    for mcfg in configs.values():  # typos in a spec fail here, before any training
        make_config(mcfg)
    warmup = fit_warmup(len(batches), steps, warmup, data, batch_size)
    paths: dict[str, _Path] = {}
    torch.manual_seed(seed)
    ours = build_method({"name": "uniform"}, tables, dim, opt, seed=seed)
    init = ours.pool.clone()
    torch.manual_seed(seed)
    model = DLRM(cfg, m.num_dense, ours)
    paths["fiited_uniform"] = _Path(model, torch.optim.Adagrad(model.dense_parameters(), lr=0.02))
    torch.manual_seed(seed)
    theirs = TorchSparseEmbedding(tables, dim, init)
    model = DLRM(cfg, m.num_dense, theirs)  # DLRM only needs .dim and .num_features
    dense = torch.optim.Adagrad([p for n, p in model.named_parameters()
                                 if not n.startswith("embeddings.")], lr=0.02)
    paths["torch_embeddingbag_sparse_adagrad"] = _Path(
        model, dense, torch.optim.Adagrad(list(theirs.parameters()), lr=lr))
    for spec, mcfg in configs.items():
        torch.manual_seed(seed)
        emb = build_method(mcfg, tables, dim, opt, seed=seed)
        model = DLRM(cfg, m.num_dense, emb)
        paths[spec] = _Path(model, torch.optim.Adagrad(model.dense_parameters(), lr=0.02),
                            emb=emb)
    _interleaved(paths, batches, warmup, chunk)
    timed = len(paths["fiited_uniform"].step_s)
    out = {"data": str(data), "rows_total": int(sum(t.num_rows for t in tables)),
           "batch_size": batch_size, "steps": timed, "warmup": warmup,
           "threads": torch.get_num_threads(),
           "methods": {spec: configs[spec] for spec in methods}}
    for k, path in paths.items():
        total = sum(path.step_s)
        out[k] = {"samples_per_s": batch_size / statistics.median(path.step_s),
                  "samples_per_s_with_events": batch_size * len(path.step_s) / total,
                  "step_ms_p50": 1e3 * statistics.median(path.step_s),
                  "event_seconds": path.event_s}
    cores = os.cpu_count() or 1
    out["machine"] = {"cores": cores, "load_before": list(load_before),
                      "load_after": list(os.getloadavg()), "loaded": load_before[0] > cores,
                      "omp": {v: os.environ.get(v, "unset") for v in OMP_VARS},
                      "torch": torch.__version__}
    uniform = out["fiited_uniform"]
    out["ratio_ours_to_torch"] = (uniform["samples_per_s"]
                                  / out["torch_embeddingbag_sparse_adagrad"]["samples_per_s"])
    out["ratio_to_uniform"] = {k: out[k]["samples_per_s"] / uniform["samples_per_s"]
                               for k in paths}
    out["ratio_to_uniform_with_events"] = {
        k: out[k]["samples_per_s_with_events"] / uniform["samples_per_s_with_events"]
        for k in paths}
    if out["machine"]["loaded"]:  # speed on a shared machine means nothing: no ratio
        out["ratio_ours_to_torch"] = None
        out["ratio_to_uniform"] = {k: None for k in paths}
        out["ratio_to_uniform_with_events"] = {k: None for k in paths}
    return out


def _x(ratio: float | None) -> str:
    return "withheld" if ratio is None else f"{ratio:.2f}x"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True, help="prepared dataset directory")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=1024)
    ap.add_argument("--dim", type=int, default=16)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--methods", nargs="*", default=[], metavar="SPEC",
                    help="more methods, each `name` or `name:key=value,...` (method config "
                         "keys, e.g. fiited:num_chunks=4,index=hashed,budget_scope=total)")
    ap.add_argument("--chunk", type=int, default=10,
                    help="paths alternate every this many steps (default 10)")
    ap.add_argument("--json", help="write the result here")
    a = ap.parse_args(argv)
    if a.steps < 1 or a.warmup < 0 or a.chunk < 1:
        ap.error("--steps and --chunk must be >= 1, --warmup >= 0")
    if a.threads:
        torch.set_num_threads(a.threads)
    try:
        out = run(a.data, a.steps, a.batch_size, a.dim, a.lr, a.warmup, methods=a.methods,
                  chunk=a.chunk)
    except ValueError as e:
        ap.error(str(e))
    print(f"{'path':52s} {'samples/s':>10s} {'step ms p50':>12s} {'vs uniform':>10s} "
          f"{'events s':>9s}")
    if out["machine"]["loaded"]:
        print(f"warning: load average {out['machine']['load_before'][0]:.2f} exceeds the "
              f"{out['machine']['cores']} cores: ratios withheld", file=sys.stderr)
    for k, ratio in out["ratio_to_uniform"].items():
        r = out[k]
        print(f"{k:52s} {r['samples_per_s']:10,.0f} {r['step_ms_p50']:12.2f} "
              f"{_x(ratio):>10s} {r['event_seconds']:9.3f}")
    print(f"ratio ours/torch: {_x(out['ratio_ours_to_torch'])}  "
          f"(B={a.batch_size}, threads={out['threads']}, {out['steps']} timed steps; "
          f"samples/s from the median step; events are the pruning events' seconds in the "
          f"timed steps)")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=2)


if __name__ == "__main__":
    main()
