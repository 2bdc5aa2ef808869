"""``dims.json`` artifacts (rows per kept width, per table) of a report's runs."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Sequence

import pandas as pd

from reports.runs import _client


def load_dims(table, run_ids: Sequence[str]) -> tuple[pd.DataFrame, list[str]]:
    """``dims.json`` of each run as a long frame (run_id, table, width, count) plus problems.

    A run without the artifact is skipped; a malformed one is skipped and named in the
    problems, so one bad file does not take the whole report down.
    """
    client = _client(table.tracking_uri)
    where = table.frame.set_index("run_id")["artifact_uri"]
    rows, problems = [], []
    with tempfile.TemporaryDirectory(prefix="fiited-dims-") as tmp:
        for rid in run_ids:
            local = _local_path(where.get(rid))
            if local is not None:   # the harness's default: read the file where it lies
                path = local / "dims.json"
                if not path.is_file():
                    continue
            else:
                if "dims.json" not in {a.path for a in client.list_artifacts(rid)}:
                    continue
                path = Path(client.download_artifacts(rid, "dims.json", os.path.join(tmp, rid)))
            try:
                rows.extend((rid, *r) for r in parse_dims(path.read_text()))
            except ValueError as e:
                problems.append(f"run {rid}: {path}: {e}")
    return pd.DataFrame(rows, columns=["run_id", "table", "width", "count"]), problems


def _local_path(artifact_uri) -> Path | None:
    if not isinstance(artifact_uri, str):
        return None
    if artifact_uri.startswith("file://"):
        from urllib.parse import unquote, urlparse

        return Path(unquote(urlparse(artifact_uri).path))
    return Path(artifact_uri) if artifact_uri.startswith("/") else None


def parse_dims(text: str) -> list[tuple[str, int, int]]:
    """``{table: [rows with kept width 0, 1, .., D]}`` -> (table, width, count) triples."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"not JSON ({e})") from None
    if not isinstance(data, dict):
        raise ValueError(f"expected an object of table -> counts, got {type(data).__name__}")
    out = []
    for name, counts in data.items():
        if not isinstance(counts, list) or not all(
                isinstance(c, (int, float)) and not isinstance(c, bool) and c >= 0
                for c in counts):
            raise ValueError(f"table {name!r}: expected a list of non-negative counts per kept "
                             f"width 0..D, got {str(counts)[:60]}")
        out.extend((name, w, int(c)) for w, c in enumerate(counts))
    return out
