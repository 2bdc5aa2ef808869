"""On a CUDA machine: train every in-training method on CUDA and on CPU from the same start and
report how far they drift apart (loss, ledger, kept chunks). Needs only torch (+ triton).

    python3 scripts/gpu_methods.py [--steps 40] [--out gpu_methods.md]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from benchmark.model import DLRM, ModelConfig  # noqa: E402
from fiited import SparseOptimConfig, TableSpec  # noqa: E402
from fiited.registry import method_class  # noqa: E402

CASES = {
    "uniform": {},
    "fiited_direct": {"num_chunks": 4, "budget": 0.25},
    "fiited_hashed": {"num_chunks": 4, "budget": 0.25, "index": "hashed"},
    "adaembed": {"budget": 0.25},
    "itep": {"budget": 0.25},
}


def run(case: str, kw: dict, device: str, steps: int, tables, batches) -> dict:
    name = case.split("_")[0]
    cls = method_class(name)
    cfg = cls.config_class(name=name, **kw)
    if hasattr(cfg, "schedule"):
        cfg.schedule.warmup, cfg.schedule.interval = [5, 15], 10
    torch.manual_seed(0)
    emb = cls(tables, 16, SparseOptimConfig(name="rowwise_adagrad", lr=0.05), cfg, seed=0)
    model = DLRM(ModelConfig(dim=16, bottom_mlp=[32], top_mlp=[64]), 13, emb).to(device)
    opt = torch.optim.SGD(model.dense_parameters(), lr=0.05)
    losses = []
    t0 = time.perf_counter()
    for step, (dense, ids, y) in enumerate(batches[:steps], 1):
        loss = torch.nn.functional.binary_cross_entropy_with_logits(
            model(dense.to(device), ids.to(device)), y.to(device))
        opt.zero_grad()
        loss.backward()
        opt.step()
        emb.on_step(step)
        losses.append(float(loss.detach()))
    if device == "cuda":
        torch.cuda.synchronize()
    kept = {k: v.tolist() for k, v in emb.dims().items()}
    return {"loss": losses, "total": emb.memory().total, "kept": kept,
            "seconds": time.perf_counter() - t0}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--out", default="gpu_methods.md")
    a = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print("no CUDA device", file=sys.stderr)
        return 2
    g = torch.Generator().manual_seed(0)
    tables = [TableSpec(f"C{i}", n) for i, n in enumerate([50, 400, 3000, 20000] * 4)]
    batches = []
    for _ in range(a.steps):
        ids = torch.stack([(torch.rand(2048, generator=g) ** 3 * t.num_rows).long()
                           for t in tables], 1)
        batches.append((torch.randn(2048, 13, generator=g), ids,
                        (torch.rand(2048, generator=g) < 0.25).float()))
    lines = ["# gpu_methods", "", f"device: {torch.cuda.get_device_name()}; torch {torch.__version__}",
             "", "| case | last loss cpu | last loss cuda | max loss rel diff | ledger equal | "
             "kept-width hist equal | cuda s | cpu s |", "|---|---|---|---|---|---|---|---|"]
    for case, kw in CASES.items():
        try:
            c = run(case, kw, "cpu", a.steps, tables, batches)
            d = run(case, kw, "cuda", a.steps, tables, batches)
            rel = max(abs(x - y) / abs(x) for x, y in zip(c["loss"], d["loss"]))
            lines.append(f"| {case} | {c['loss'][-1]:.5f} | {d['loss'][-1]:.5f} | {rel:.1e} | "
                         f"{c['total'] == d['total']} | {c['kept'] == d['kept']} | "
                         f"{d['seconds']:.2f} | {c['seconds']:.2f} |")
        except Exception as e:  # report and go on: one broken method must not hide the rest
            lines.append(f"| {case} | ERROR {type(e).__name__}: {str(e)[:120]} | | | | | | |")
        print(lines[-1], flush=True)
    Path(a.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
