"""What the trainer hands the model from a ``Batch``: bag features only when the dataset has
them, so one-hot runs call ``model(dense, ids)`` exactly as before."""
from __future__ import annotations

import inspect

import torch

from benchmark.errors import UserError


def model_inputs(batch, device: torch.device) -> tuple:
    """(dense, ids) or, for a dataset with bag features, (dense, ids, bags) on ``device``."""
    dense, ids = batch.dense.to(device), batch.ids.to(device)
    if getattr(batch, "bags", None) is None:
        return dense, ids
    return dense, ids, batch.bags.to(device)


def check_takes_bags(manifest, method_name: str, emb, model_name: str, head) -> None:
    """A dataset with bag features needs a method (and head) whose forward takes ``bags``."""
    if not manifest.bags:
        return
    for what, name, mod in (("method", method_name, emb), ("model", model_name, head)):
        if "bags" not in inspect.signature(mod.forward).parameters:
            raise UserError(
                f"{what} {name!r} does not take bag (multi-hot) "
                f"features, and this dataset has {manifest.bag_names}; use a one-hot dataset "
                f"(e.g. data=movielens instead of data=movielens_multihot)")
