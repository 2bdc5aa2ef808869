"""Builds a real sqlite MLflow store, filled through the real MLflow API with runs that follow the
harness's conventions (params, tags, final metrics, time series, dims.json artifacts).

Experiment ``ablations`` holds one config per ablation axis so that one report draws every
figure; besides, a FAILED run, a finished run without its core metrics (both excluded), and a
finished run without one perf metric (kept, but listed). ``broken`` holds only unusable runs,
``empty`` none.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

D = 16
FIITED_BASE = {"method.num_chunks": 4, "method.utility": "freq_grad", "method.gamma": 0.99,
               "method.sample_frac": 0.05, "method.thresholds": "adaptive",
               "method.padding": "zeros", "method.layout": "any", "method.manual_ratios": "[]",
               "method.seed": None, "method.schedule.warmup": "[10, 30, 100, 300]"}
CONFIGS = [  # (method, budget, overrides of FIITED_BASE)
    ("uniform", 1.0, None), ("hashing", 0.5, None), ("hashing", 0.1, None),
    ("fiited", 0.5, {}), ("fiited", 0.1, {}),
    ("fiited", 0.1, {"method.num_chunks": 2}),
    ("fiited", 0.1, {"method.utility": "freq"}),
    ("fiited", 0.1, {"method.gamma": 0.9}),
    ("fiited", 0.1, {"method.sample_frac": 0.01}),
    ("fiited", 0.1, {"method.thresholds": "manual",
                     "method.manual_ratios": "[0.5, 0.7, 0.8, 1.0]"}),
    ("fiited", 0.1, {"method.padding": "projection"}),
]
SEEDS = (0, 1)


@dataclass
class Store:
    root: Path
    uri: str
    failed_run: str
    no_core_run: str
    no_perf_run: str
    broken_runs: tuple[str, ...]


def _params(method: str, budget: float, over: dict | None, seed: int, i: int) -> dict:
    p = {"method.name": method, "method.budget": budget, "data.name": "synthetic_criteo",
         "model.dim": D, "train.batch_size": 128, "seed": seed, "data.seed": seed,
         "hydra.run.dir": f"multirun/{i}"}
    if over is not None:
        p.update(FIITED_BASE)
        p.update(over)
    return p


def _final_metrics(method: str, budget: float, params: dict, rng) -> dict[str, float]:
    k = int(params.get("method.num_chunks", 1))
    quality = {"uniform": 0.0, "hashing": 0.03, "fiited": 0.004}[method] * (1 - budget)
    if params.get("method.utility") == "freq":
        quality += 0.002
    ne = 0.78 + quality + 5e-4 * rng.standard_normal()
    weights = budget * 4e6
    index = 0.0 if method != "fiited" else 4e4 * k
    opt = weights / D
    total = weights + opt + index
    return {
        "val/ne": ne, "val/auc": 0.80 - quality + 1e-4 * rng.standard_normal(),
        "val/logloss": 0.44 * ne, "test/ne": ne + 1e-3, "test/auc": 0.79 - quality,
        "test/logloss": 0.44 * (ne + 1e-3), "bayes_ne": 0.75,
        "mem/weights_bytes": weights, "mem/optimizer_bytes": opt, "mem/index_bytes": index,
        "mem/utility_bytes": index / 2, "mem/total_bytes": total,
        "mem/train_peak_bytes": total, "mem/compression": 1 / budget,
        "mem/total_compression": (4e6 * (1 + 1 / D)) / total, "mem/peak_rss_bytes": 5e8,
        "perf/train_samples_per_s": {"uniform": 50_000, "hashing": 60_000,
                                     "fiited": 40_000 - 2000 * k}[method]
        * (1 + 0.02 * rng.standard_normal()),
        "perf/eval_samples_per_s": 2e5, "perf/step_ms_p50": 2.0 + 0.3 * k,
        "perf/step_ms_p99": 4.0 + 0.5 * k, "prune/event_seconds": 0.01 * k,
    }


def _dims(method: str, budget: float, k: int, rng) -> dict[str, list[int]]:
    out = {}
    for table, rows in (("C1", 1000), ("C2", 300)):
        counts = [0] * (D + 1)
        if method == "fiited":
            widths = rng.choice(np.arange(0, D + 1, D // k), size=rows,
                                p=np.diff(np.r_[0, np.sort(rng.random(k)), 1]))
            for w, c in zip(*np.unique(widths, return_counts=True)):
                counts[int(w)] = int(c)
        else:
            counts[D] = rows
        out[table] = counts
    return out


def _log_run(client, exp_id: str, params: dict, metrics: dict, *, status="FINISHED",
             dims=None, history_k: int = 0) -> str:
    from mlflow.entities import Metric, Param, RunTag

    method, budget, seed = params["method.name"], params["method.budget"], params["seed"]
    tags = {"method": method, "budget": str(budget), "seed": str(seed),
            "dataset": params["data.name"], "dataset_fingerprint": "abc123",
            "git_commit": "0" * 40, "torch_version": "2.13.0", "device": "cpu",
            "experiment": "test"}
    run = client.create_run(exp_id, run_name=f"{method}-b{budget}-s{seed}", tags=tags)
    rid, now = run.info.run_id, int(time.time() * 1000)
    series = [Metric("train/loss", 0.5 - 0.01 * s, now, s) for s in range(5)]
    if "val/ne" in metrics:  # validation curve ending at the final value
        series += [Metric("val/ne", metrics["val/ne"] + 0.01 * (3 - s), now, 100 * s)
                   for s in (1, 2, 3)]
    for pos in range(history_k):   # named as the harness logs them
        series += [Metric(f"prune/kept_frac_pos{pos}", max(0.0, 1 - 0.15 * pos * s), now, 50 * s)
                   for s in range(5)]
    finals = [Metric(k, float(v), now, 300) for k, v in metrics.items() if k != "val/ne"]
    client.log_batch(rid, metrics=series + finals,
                     params=[Param(k, str(v)) for k, v in params.items()])
    if dims is not None:
        client.log_dict(rid, dims, "dims.json")
    client.set_terminated(rid, status)
    return rid


def build_store(root: Path) -> Store:
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    art = root / "mlartifacts"
    exp = client.create_experiment("ablations", artifact_location=(art / "ablations").as_uri())
    rng = np.random.default_rng(7)
    i = 0
    for method, budget, over in CONFIGS:
        for seed in SEEDS:
            p = _params(method, budget, over, seed, i := i + 1)
            k = int(p.get("method.num_chunks", 1))
            _log_run(client, exp, p, _final_metrics(method, budget, p, rng),
                     dims=_dims(method, budget, k, rng),
                     history_k=k if method == "fiited" else 0)
    p = _params("fiited", 0.1, {"method.num_chunks": 8}, 0, i := i + 1)
    failed = _log_run(client, exp, p, {}, status="FAILED")
    p = _params("fiited", 0.5, {}, 2, i := i + 1)
    m = _final_metrics("fiited", 0.5, p, rng)
    no_core = _log_run(client, exp, p, {k: v for k, v in m.items()
                                        if k not in ("val/ne", "mem/total_bytes")})
    p = _params("uniform", 1.0, None, 2, i := i + 1)
    m = _final_metrics("uniform", 1.0, p, rng)
    no_perf = _log_run(client, exp, p, {k: v for k, v in m.items() if k != "perf/step_ms_p99"},
                       dims=_dims("uniform", 1.0, 1, rng))

    broken = client.create_experiment("broken", artifact_location=(art / "broken").as_uri())
    b1 = _log_run(client, broken, _params("fiited", 0.1, {}, 0, 90), {}, status="FAILED")
    b2 = _log_run(client, broken, _params("uniform", 1.0, None, 0, 91), {})
    client.create_experiment("empty", artifact_location=(art / "empty").as_uri())
    return Store(root, uri, failed, no_core, no_perf, (b1, b2))
