"""What the trainer hands the model from a ``Batch``: bag features only when the dataset has
them, so one-hot runs call ``model(dense, ids)`` exactly as before; and the method's features
(``FeatureSpec``s over tables) from a dataset's manifest."""
from __future__ import annotations

import inspect

import torch

from benchmark.errors import UserError
from fiited.interface import FeatureSpec, TableSpec


def model_inputs(batch, device: torch.device) -> tuple:
    """(dense, ids) or, for a dataset with bag features, (dense, ids, bags) on ``device``."""
    dense, ids = batch.dense.to(device), batch.ids.to(device)
    if getattr(batch, "bags", None) is None:
        return dense, ids
    return dense, ids, batch.bags.to(device)


def feature_specs(manifest) -> tuple[list[TableSpec], list[FeatureSpec] | None]:
    """Tables and features of a dataset: one table per one-hot feature; a bag reads the table
    its manifest entry names, which is a one-hot feature's table when the names agree (e.g. a
    history bag over ``item_id``) and else a table of its own, shared by the bags naming it.
    Features are None for one-hot-only data (the method's default, today's path)."""
    tables = [TableSpec(n, int(c)) for n, c in zip(manifest.feature_names, manifest.cardinalities)]
    if not manifest.bags:
        return tables, None
    rows = {t.name: t.num_rows for t in tables}
    for b in manifest.bags:
        name, table, card = b["name"], b["table"], int(b["cardinality"])
        if table not in rows:
            rows[table] = card
            tables.append(TableSpec(table, card))
        elif rows[table] != card:
            raise UserError(f"dataset bag feature {name!r} reads table {table!r} with "
                            f"cardinality {card}, but that table has {rows[table]} rows "
                            f"(the manifest's one-hot feature or another bag of that name)")
    features = [FeatureSpec(n, n) for n in manifest.feature_names]
    features += [FeatureSpec(b["name"], b["table"], b["pooling"]) for b in manifest.bags]
    return tables, features


def bag_values(data, lo: int, hi: int) -> list[tuple[str, object]]:
    """(bag name, the ids of its bags over dataset rows [lo, hi)) per bag feature: what a
    counting pass (freq_filter's ``prepare``) reads besides the one-hot ids."""
    return [(name, values[int(offsets[lo]):int(offsets[hi])])
            for name, (values, offsets) in data.bags.items()]


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


def check_distributed(manifest, distributed: bool) -> None:
    """The sharded trainer shards one-hot tables only: refuse bag features in one line."""
    if distributed and manifest.bags:
        raise UserError(f"train.distributed=true does not take bag (multi-hot) features yet, "
                        f"and this dataset has {manifest.bag_names}; train on one process "
                        f"(train.distributed=false) or use a one-hot dataset")
