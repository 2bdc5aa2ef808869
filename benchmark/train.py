"""The train/eval loop every method runs through, so their numbers compare like with like.

Throughput counts the wall time of training steps only (data loading, forward, backward,
optimizer, and the method's on_step incl. pruning events), after ``train.warmup_steps``;
validation, ledger sampling and checkpoints are excluded.
"""
from __future__ import annotations

import json
import logging
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from benchmark import checkpoint
from benchmark.batch_inputs import (bag_values, check_distributed, check_takes_bags,
                                    feature_specs, model_inputs)
from benchmark.data.format import DatasetError, PreparedDataset, open_dataset
from benchmark.data.loader import BatchLoader
from benchmark.errors import UserError
from benchmark.early_stop import EarlyStop
from benchmark.metrics import eval_metrics, percentile_ms
from benchmark.dcn import build_head
from benchmark.model import DLRM, ModelConfig
from benchmark.peak import PeakMeter, peak_rss_bytes, warm_up  # noqa: F401 (re-exported)
from fiited.interface import EmbeddingMethod
from fiited.optim import SparseOptimConfig
from fiited.registry import build_method

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pt"


def load_data(data_cfg: DictConfig, launch_dir: Path) -> PreparedDataset:
    """The configured dataset. Real data (``data.prepare`` set) is never generated: whatever
    ``scale=`` or ``data.synthetic`` say, a missing one fails with the command that makes it."""
    path = Path(data_cfg.path)
    if not path.is_absolute():
        path = launch_dir / path
    if data_cfg.get("prepare"):
        name = data_cfg.name
        if not path.exists():
            raise DatasetError(f"data={name}: {path} does not exist; prepare it once with: "
                               f"{data_cfg.prepare}")
        ds = open_dataset(path)
        if ds.manifest.source.get("generator") == "benchmark.data.synthetic":
            raise DatasetError(f"data={name}: {path} holds synthetic data "
                               f"({ds.manifest.name}), not a prepared {name}; prepare it with: "
                               f"{data_cfg.prepare}")
        return ds
    if data_cfg.get("synthetic") is not None:
        from benchmark.data.synthetic import SyntheticConfig, ensure_synthetic

        syn = OmegaConf.to_object(data_cfg.synthetic)
        if not isinstance(syn, SyntheticConfig):
            syn = SyntheticConfig(**syn)
        return ensure_synthetic(path, syn)
    return open_dataset(path)


def make_dense_optimizer(name: str, params, lr: float) -> torch.optim.Optimizer:
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr)
    if name == "adagrad":
        return torch.optim.Adagrad(params, lr=lr)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr)
    raise UserError(f"train.dense_optimizer={name!r} is not one of sgd, adagrad, adam")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@torch.no_grad()
def evaluate(model: DLRM, loader: BatchLoader, device: torch.device,
             prefix: str, base_rate: float) -> tuple[dict[str, float], int, float]:
    """Metrics over a whole split; returns (metrics, rows, seconds)."""
    was_training = model.training
    model.eval()
    t0 = time.perf_counter()
    logits, labels = [], []
    for b in loader:
        logits.append(model(*model_inputs(b, device)).float().cpu())
        labels.append(b.labels)
    seconds = time.perf_counter() - t0
    model.train(was_training)
    if not logits:
        raise ValueError(f"split {prefix!r} is empty: nothing to evaluate")
    lg, lb = torch.cat(logits), torch.cat(labels)
    return eval_metrics(prefix, lg, lb, base_rate), lg.numel(), seconds


@dataclass
class Timing:
    """Steady-state training speed, warm-up excluded."""

    warmup: int
    step_seconds: list[float] = field(default_factory=list)
    wall_seconds: float = 0.0
    samples: int = 0
    event_seconds: float = 0.0
    eval_rows: int = 0
    eval_seconds: float = 0.0

    def add_step(self, step: int, compute_s: float, wall_s: float, batch: int) -> None:
        if step > self.warmup:
            self.step_seconds.append(compute_s)
            self.wall_seconds += wall_s
            self.samples += batch

    def metrics(self) -> dict[str, float]:
        return {
            "perf/train_samples_per_s": self.samples / self.wall_seconds if self.wall_seconds else float("nan"),
            "perf/eval_samples_per_s": self.eval_rows / self.eval_seconds if self.eval_seconds else float("nan"),
            "perf/step_ms_p50": percentile_ms(self.step_seconds, 50),
            "perf/step_ms_p99": percentile_ms(self.step_seconds, 99),
            "prune/event_seconds": self.event_seconds,
        }


class Trainer:
    """Builds data, method and model from a resolved config and runs one training job."""

    def __init__(self, cfg: DictConfig, run_dir: Path, launch_dir: Path, tracker=None) -> None:
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.launch_dir = Path(launch_dir)
        self.tracker = tracker
        tc = cfg.train
        if tc.threads:
            torch.set_num_threads(int(tc.threads))
        if tc.device.startswith("cuda") and not torch.cuda.is_available():
            raise UserError(f"train.device={tc.device!r} but CUDA is not available here")
        self.device = torch.device(tc.device)
        seed_everything(int(cfg.seed))
        self.data = load_data(cfg.data, self.launch_dir)
        m = self.data.manifest
        check_distributed(m, bool(tc.get("distributed", False)))
        self.tables, self.features = feature_specs(m)
        self.sparse_opt = SparseOptimConfig(**OmegaConf.to_container(tc.sparse_optimizer))
        self.model_cfg = ModelConfig(**OmegaConf.to_container(cfg.model, resolve=True))
        warm_up(self.device)
        self.meter = PeakMeter(self.device)  # baseline: interpreter, torch, data
        self.emb: EmbeddingMethod = self.build_embeddings()
        self.emb.validate_ids = bool(tc.validate_ids)
        self.model = self.build_model()
        check_takes_bags(m, str(cfg.method.get("name", type(self.emb).__name__)), self.emb,
                         str(cfg.model.get("name", "dlrm")), self.model)
        self.dense_opt = make_dense_optimizer(tc.dense_optimizer, self.model.dense_parameters(),
                                              tc.dense_lr)
        self.train_loader, self.val_loader, self.test_loader = self.build_loaders()
        self.base_rate = float(m.click_rate)
        steps_per_epoch = len(self.train_loader)
        self.total_steps = steps_per_epoch * int(tc.epochs)
        if tc.max_steps:
            self.total_steps = min(self.total_steps, int(tc.max_steps))
        if self.total_steps < 1:
            raise UserError(f"no training steps: {len(self.train_loader)} batches per epoch, "
                             f"train.epochs={tc.epochs}, train.max_steps={tc.max_steps}")
        self.step = 0
        self.epoch = 0
        self.peak_total = 0
        self.timing = Timing(warmup=int(tc.warmup_steps))
        self.history: list[dict[str, Any]] = []
        self.early_stop = EarlyStop(int(tc.get("early_stopping", 0)))
        self.embedding_l2 = float(tc.get("embedding_l2", 0.0))
        if self.embedding_l2 < 0:
            raise UserError(f"train.embedding_l2 must be >= 0, got {self.embedding_l2}")
        if self.embedding_l2:
            self.emb.register_forward_hook(self._keep_embeddings)

    # ---- construction (a distributed trainer overrides these) ----------------------------
    def build_embeddings(self) -> EmbeddingMethod:
        method_cfg = OmegaConf.to_container(self.cfg.method, resolve=True)
        emb = build_method(method_cfg, self.tables, self.model_cfg.dim, self.sparse_opt,
                           seed=int(self.cfg.seed), features=self.features)
        if getattr(emb, "needs_train_ids", False):   # e.g. freq_filter's counting pass
            ids = self.train_ids()
            if self.features is None:
                emb.prepare(ids)
            else:
                lo = self.data.manifest.splits["train"][0]
                emb.prepare(ids, bag_values(self.data, lo, lo + len(ids)))
        return emb

    def train_ids(self):
        """The ids [rows, F] the train loader reads (the split, cut to data.max_train_rows)."""
        lo, hi = self.data.manifest.splits["train"]
        cap = self.cfg.data.max_train_rows
        return self.data.ids[lo:hi if cap is None else min(hi, lo + int(cap))]

    def build_model(self) -> torch.nn.Module:
        """The head named by model.name (dlrm | dcn) over the embedding method."""
        try:
            head = build_head(self.model_cfg, self.data.manifest.num_dense, self.emb)
        except ValueError as e:
            raise UserError(str(e)) from e
        return head.to(self.device)

    def build_loaders(self) -> tuple[BatchLoader, BatchLoader, BatchLoader]:
        tc, dc = self.cfg.train, self.cfg.data
        train = BatchLoader(self.data, "train", tc.batch_size, shuffle=True,
                            seed=int(self.cfg.seed), max_rows=dc.max_train_rows)
        val = BatchLoader(self.data, "val", tc.eval_batch_size, shuffle=False,
                          max_rows=dc.max_eval_rows)
        test = BatchLoader(self.data, "test", tc.eval_batch_size, shuffle=False,
                           max_rows=dc.max_eval_rows)
        return train, val, test

    def train_step(self, batch, loss_fn) -> torch.Tensor:
        """Forward, backward (the sparse update runs inside), dense optimizer step."""
        labels = batch.labels.to(self.device)
        loss = loss_fn(self.model(*model_inputs(batch, self.device)), labels)
        self.dense_opt.zero_grad(set_to_none=True)
        if self.embedding_l2:    # L2 on the rows this batch touched, through the same update
            e = self._emb_out
            (loss + self.embedding_l2 * e.pow(2).sum() / e.shape[0]).backward()
        else:
            loss.backward()
        self.dense_opt.step()
        return loss

    def _keep_embeddings(self, module, inputs, output) -> None:
        self._emb_out = output       # the looked-up rows [B, F, D], for train.embedding_l2

    # ---- pieces --------------------------------------------------------------------------
    def _log(self, metrics: dict[str, float], step: int) -> None:
        if self.tracker is not None:
            self.tracker.log_metrics(metrics, step)

    def _sample_memory(self) -> None:
        total = self.emb.memory().total
        self.peak_total = max(self.peak_total, total)
        self._log({"mem/total_bytes": float(total)}, self.step)

    def _validate(self) -> dict[str, float]:
        with self.meter.excluded():
            metrics, rows, secs = evaluate(self.model, self.val_loader, self.device, "val",
                                           self.base_rate)
        self.timing.eval_rows += rows
        self.timing.eval_seconds += secs
        self._log(metrics, self.step)
        self.history.append({"step": self.step, **metrics})
        return metrics

    def save_checkpoint(self, path: Path) -> None:
        """Tensors plus JSON meta, with the resolved config (``benchmark.checkpoint``)."""
        np_state = np.random.get_state()
        meta = {
            "step": self.step, "epoch": self.epoch, "peak_total": self.peak_total,
            "measured_peak": self.meter.measured(),
            "loader": self.train_loader.state_dict(),
            "rng_numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
            "rng_python": random.getstate(),
            "event_seconds": self.timing.event_seconds, "history": self.history,
            "early_stop": self.early_stop.state(),
        }
        checkpoint.save(path, {"model": self.model.state_dict(),
                               "dense_opt": self.dense_opt.state_dict(),
                               "rng_torch": torch.get_rng_state()},
                        meta, OmegaConf.to_container(self.cfg, resolve=True),
                        self.data.manifest.fingerprint)

    def load_checkpoint(self, path: Path) -> None:
        state, meta = checkpoint.load(path, self.device,
                                      OmegaConf.to_container(self.cfg, resolve=True),
                                      self.data.manifest.fingerprint)
        try:
            self.model.load_state_dict(state["model"])
            self.dense_opt.load_state_dict(state["dense_opt"])
            self.train_loader.load_state_dict(meta["loader"])
        except (KeyError, RuntimeError, ValueError) as e:
            raise checkpoint.CheckpointError(
                f"train.resume={str(path)!r}: does not fit this model "
                f"({str(e).strip().splitlines()[0]})") from None
        torch.set_rng_state(state["rng_torch"])
        kind, keys, *rest = meta["rng_numpy"]
        np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), *rest))
        version, internal, gauss = meta["rng_python"]
        random.setstate((version, tuple(internal), gauss))
        self.step, self.epoch = int(meta["step"]), int(meta["epoch"])
        self.peak_total = int(meta["peak_total"])
        self.meter.peak = max(self.meter.peak, int(meta.get("measured_peak", 0)))
        self.timing.event_seconds = float(meta["event_seconds"])
        self.history = list(meta["history"])
        self.early_stop.load(meta.get("early_stop"))
        log.info("resumed from %s at step %d (epoch %d)", path, self.step, self.epoch)

    # ---- the loop ------------------------------------------------------------------------
    def fit(self) -> dict[str, Any]:
        tc = self.cfg.train
        if tc.resume:
            self.load_checkpoint(Path(tc.resume))
        loss_fn = torch.nn.BCEWithLogitsLoss()
        eval_every = int(tc.eval_every) or len(self.train_loader)
        progress = _progress(self.total_steps, self.step, bool(tc.progress),
                             f"{self.cfg.method.name}")
        self.model.train()
        loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        loss_n = 0
        self._sample_memory()
        stopped = early = False
        last = time.perf_counter()
        while self.step < self.total_steps and not stopped and not early:
            self.train_loader.set_epoch(self.epoch)
            for batch in self.train_loader:
                t0 = time.perf_counter()
                loss = self.train_step(batch, loss_fn)
                self.step += 1
                events = self.emb.on_step(self.step)
                end = time.perf_counter()
                if events:
                    self.timing.event_seconds += float(events.get("prune/event_seconds", 0.0))
                    self._log(events, self.step)
                self.timing.add_step(self.step, end - t0, end - last, len(batch.labels))
                self.meter.sample()  # this step's window: batch, step, events (untimed)
                loss_sum += loss.detach()
                loss_n += 1
                if self.step % int(tc.log_every) == 0:
                    self._log({"train/loss": float(loss_sum) / loss_n}, self.step)
                    progress.set_postfix(loss=f"{float(loss_sum) / loss_n:.4f}", refresh=False)
                    loss_sum.zero_()
                    loss_n = 0
                progress.update(1)
                if self.step % int(tc.memory_every) == 0:
                    self._sample_memory()
                if self.step % eval_every == 0 and self.step < self.total_steps:
                    early = self.early_stop.update(self._validate(), self.step)
                if tc.checkpoint_every and self.step % int(tc.checkpoint_every) == 0:
                    self.save_checkpoint(self.run_dir / CHECKPOINT)
                if tc.stop_after and self.step >= int(tc.stop_after):
                    self.save_checkpoint(self.run_dir / CHECKPOINT)
                    stopped = True
                    break
                if self.step >= self.total_steps or early:
                    break
                last = time.perf_counter()
            else:  # the epoch ran to its end
                self.epoch += 1
        progress.close()
        if stopped:
            return {"stopped_at_step": self.step, "checkpoint": str(self.run_dir / CHECKPOINT)}
        return self._finish()

    def _finish(self) -> dict[str, Any]:
        self._sample_memory()
        end_metrics = self.emb.on_train_end() or {}
        if end_metrics:
            self._log(end_metrics, self.step)
        summary: dict[str, Any] = {}
        finetune = int(getattr(self.emb, "finetune_steps", 0) or 0)
        if finetune > 0:  # e.g. post_prune: evaluate the pruned model, then fine-tune, mask fixed
            with self.meter.excluded():
                pruned, _, _ = evaluate(self.model, self.val_loader, self.device, "val",
                                        self.base_rate)
            summary.update({f"pruned/{k}": v for k, v in pruned.items()})
            summary["perf/finetune_seconds"] = self._finetune(finetune)
            summary["train/finetune_steps"] = float(finetune)
        report = self.emb.memory()
        summary.update(self._validate())
        with self.meter.excluded():
            test, rows, secs = evaluate(self.model, self.test_loader, self.device, "test",
                                        self.base_rate)
        self.timing.eval_rows += rows
        self.timing.eval_seconds += secs
        summary.update(test)
        stats = self.data.manifest.stats or {}
        if "bayes_ne" in stats:
            summary["bayes_ne"] = float(stats["bayes_ne"])
            summary["test/ne_gap_to_bayes"] = summary["test/ne"] - summary["bayes_ne"]
        summary.update(report.metrics())
        summary["mem/train_peak_bytes"] = float(self.meter.measured())
        summary["mem/ledger_peak_bytes"] = float(self.peak_total)
        summary["mem/peak_rss_bytes"] = float(peak_rss_bytes())
        summary.update(self.timing.metrics())
        summary.update({k: float(v) for k, v in end_metrics.items()})
        summary["train/steps"] = float(self.step)
        summary.update(self.early_stop.summary())
        self._log(summary, self.step)
        self._write_outputs(summary, report)
        return summary

    def _finetune(self, steps: int) -> float:
        """Ordinary training steps after on_train_end; the method keeps its mask fixed."""
        loss_fn = torch.nn.BCEWithLogitsLoss()
        t0 = time.perf_counter()
        done = 0
        while done < steps:
            self.train_loader.set_epoch(self.epoch)
            for batch in self.train_loader:
                self.train_step(batch, loss_fn)
                self.step += 1
                done += 1
                events = self.emb.on_step(self.step)
                if events:
                    self._log(events, self.step)
                if done >= steps:
                    break
            else:
                self.epoch += 1
        return time.perf_counter() - t0

    def _write_outputs(self, summary: dict[str, Any], report) -> list[Path]:
        files = {
            "summary.json": summary,
            "memory.json": report.as_dict(),
            "history.json": self.history,
        }
        try:
            dims = {k: v.tolist() for k, v in self.emb.dims().items()}
            files["dims.json"] = dims
        except NotImplementedError:
            pass
        paths = []
        for name, obj in files.items():
            p = self.run_dir / name
            p.write_text(json.dumps(obj, indent=2, sort_keys=True, default=float))
            paths.append(p)
        cfg_path = self.run_dir / "config.yaml"
        cfg_path.write_text(OmegaConf.to_yaml(self.cfg, resolve=True))
        paths.append(cfg_path)
        if self.tracker is not None:
            self.tracker.log_artifacts(paths)
        return paths


class _NoProgress:
    def update(self, n: int = 1) -> None: ...
    def set_postfix(self, **kw) -> None: ...
    def close(self) -> None: ...


def _progress(total: int, initial: int, enabled: bool, desc: str):
    if not enabled:
        return _NoProgress()
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit="step", mininterval=2.0,
                dynamic_ncols=True, leave=False)
