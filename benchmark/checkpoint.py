"""Checkpoint files: safe to load, and refused when they do not belong to the run resuming them.

A checkpoint is a dict of tensors and plain data loaded with ``torch.load(weights_only=True)``
(no pickled objects: a crafted file cannot run code). Non-tensor trainer state (loader
position, RNG states, history) is JSON in ``meta``. The file holds the resolved config that
wrote it and its fingerprint; resuming under another config is refused with the differing keys
named, except for keys that only steer how long or how visibly the run goes on (``MAY_CHANGE``).
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Mapping

import torch

from benchmark.errors import UserError

FORMAT = "fiited-bench/checkpoint"
VERSION = 2
# keys that may differ between the run that wrote a checkpoint and the one resuming it: they
# change neither the model nor the data order, only the schedule's end, logging and speed
# (data.path may move; the dataset itself is checked by its fingerprint)
MAY_CHANGE = ("train.max_steps", "train.epochs", "train.progress", "train.resume",
              "train.checkpoint_every", "train.stop_after", "train.log_every",
              "train.memory_every", "train.eval_every", "train.eval_batch_size", "train.threads",
              "data.path", "data.max_eval_rows", "summary_table", "tracking.*")


class CheckpointError(UserError):
    """A checkpoint is missing, unreadable, unsafe or from another config."""


def flat(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, Mapping):
            out.update(flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def may_change(key: str) -> bool:
    return any(key == m or (m.endswith(".*") and key.startswith(m[:-1])) for m in MAY_CHANGE)


def config_fingerprint(config: Mapping[str, Any]) -> str:
    """Hash of the resolved config without the keys that may change on resume."""
    kept = {k: v for k, v in flat(config).items() if not may_change(k)}
    return hashlib.sha256(json.dumps(kept, sort_keys=True, default=str).encode()).hexdigest()[:16]


def config_diff(saved: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    a, b = flat(saved), flat(current)
    return [f"{k}: {a.get(k, '<absent>')!r} in the checkpoint, {b.get(k, '<absent>')!r} now"
            for k in sorted(set(a) | set(b)) if not may_change(k) and a.get(k) != b.get(k)]


def save(path: Path, tensors: dict[str, Any], meta: dict[str, Any], config: Mapping[str, Any],
         dataset_fingerprint: str) -> None:
    """Write atomically (temporary file, then rename): a kill never leaves a half file."""
    state = {"format": FORMAT, "version": VERSION, **tensors,
             "meta": json.dumps(meta, default=float),
             "config": json.dumps(config, sort_keys=True, default=str),
             "config_fingerprint": config_fingerprint(config),
             "dataset_fingerprint": dataset_fingerprint}
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load(path: Path, device: torch.device, config: Mapping[str, Any],
         dataset_fingerprint: str, what: str = "train.resume") -> tuple[dict[str, Any], dict]:
    """(state, meta) of the checkpoint at ``path``, or one clear CheckpointError naming it."""
    path = Path(path)
    where = f"{what}={str(path)!r}"
    if not path.is_file():
        raise CheckpointError(f"{where}: no such checkpoint file")
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch/pickle/zip raise many types for bad files
        msg = str(e).strip()
        unsafe = next((ln.strip() for ln in msg.splitlines()
                       if "unsupported global" in ln.lower()), None)
        if unsafe is not None:          # weights_only stopped at an object it would import
            hint = unsafe
            raise CheckpointError(f"{where}: refused: the file holds more than tensors and plain "
                                  f"data ({hint.rstrip('.')}), and loading it could run code; "
                                  f"it was not written by fiited-bench") from None
        raise CheckpointError(f"{where}: not a readable checkpoint, truncated or corrupt "
                              f"({_reason(msg, type(e).__name__)})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{where}: not a fiited-bench checkpoint (no {FORMAT!r} marker; "
                              f"older checkpoints cannot be resumed)")
    if state.get("version") != VERSION:
        raise CheckpointError(f"{where}: checkpoint version {state.get('version')}, this code "
                              f"reads {VERSION}")
    try:
        saved = json.loads(state["config"])
        meta = json.loads(state["meta"])
    except (KeyError, TypeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{where}: checkpoint is incomplete ({e})") from None
    if state.get("dataset_fingerprint") != dataset_fingerprint:
        raise CheckpointError(f"{where}: written on another dataset (fingerprint "
                              f"{state.get('dataset_fingerprint')}, the configured dataset's is "
                              f"{dataset_fingerprint})")
    if state.get("config_fingerprint") != config_fingerprint(config):
        diff = config_diff(saved, config)
        raise CheckpointError(f"{where}: written with another config: {'; '.join(diff)} (keys "
                              f"that may change on resume: {', '.join(MAY_CHANGE)})")
    return state, meta


_BOILERPLATE = ("Weights only load failed", "Please file an issue", "Check the documentation",
                "Re-running `torch.load`", "In PyTorch 2.6")


def _reason(msg: str, kind: str) -> str:
    """What a torch.load error says is wrong: its first specific sentence, not torch's generic
    advice (which suggests weights_only=False)."""
    for line in msg.splitlines():
        line = line.strip().removeprefix("WeightsUnpickler error:").strip()
        if line and not any(b in line for b in _BOILERPLATE):
            first = line.split(". ")[0].rstrip(".")
            return first if len(first) > 24 else f"{kind}: {first}"
    return kind
