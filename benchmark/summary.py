"""The readable table that ends every run and sweep, from the runs' summary.json files."""
from __future__ import annotations

import json
import math
from fractions import Fraction
from pathlib import Path
from typing import Any, Iterable

COLUMNS = [
    ("method", "method", "{}"),
    ("budget", "budget", "fraction"),
    ("seed", "seed", "{}"),
    ("val/ne", "val NE", "{:.4f}"),
    ("val/auc", "val AUC", "{:.4f}"),
    ("test/ne", "test NE", "{:.4f}"),
    ("bayes_ne", "Bayes NE", "{:.4f}"),
    ("mem/weights_bytes", "emb weights", "bytes"),
    ("mem/total_bytes", "emb total", "bytes"),
    ("mem/train_peak_bytes", "train peak", "bytes"),
    ("mem/total_compression", "total x smaller", "{:.1f}"),   # equal-memory reading: total
    ("perf/train_samples_per_s", "train samples/s", "{:,.0f}"),
]


def fraction(b: float) -> str:
    """A budget as people write it: 1, 1/4, 1/800 (``{:g}`` would give 0.00390625)."""
    f = Fraction(float(b)).limit_denominator(100000)
    if f <= 0 or abs(float(f) - b) > 1e-9 * max(1.0, abs(b)):
        return f"{b:g}"
    return str(f.numerator) if f.denominator == 1 else f"{f.numerator}/{f.denominator}"


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    return str(n)


def _cell(value: Any, fmt: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if fmt == "bytes":
        return human_bytes(float(value))
    if fmt == "fraction":
        return fraction(float(value))
    try:
        return fmt.format(value)
    except (ValueError, TypeError):
        return str(value)


def format_table(rows: Iterable[dict[str, Any]]) -> str:
    rows = list(rows)
    cols = [c for c in COLUMNS if any(c[0] in r for r in rows)]
    header = [c[1] for c in cols]
    body = [[_cell(r.get(key), fmt) for key, _, fmt in cols] for r in rows]
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h)
              for i, h in enumerate(header)]
    line = lambda cells: "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(header), sep, *(line(b) for b in body)])


def collect(sweep_dir: Path) -> list[dict[str, Any]]:
    """summary.json of every job under a multirun dir, with method/budget/seed from config."""
    from omegaconf import OmegaConf

    rows = []
    for summary in sorted(Path(sweep_dir).rglob("summary.json")):
        row = json.loads(summary.read_text())
        cfg_file = summary.parent / "config.yaml"
        if cfg_file.exists():
            cfg = OmegaConf.load(cfg_file)
            row.update(method=cfg.method.name, budget=cfg.method.get("budget", 1.0),
                       seed=cfg.seed)
            if "num_chunks" in cfg.method:
                row["method"] = f"{cfg.method.name} K={cfg.method.num_chunks}"
        rows.append(row)
    rows.sort(key=lambda r: (str(r.get("method")), -float(r.get("budget", 1)), r.get("seed", 0)))
    return rows
