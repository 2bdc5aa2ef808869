"""C5 as one table: ``harness_bench --methods`` JSONs (one per scale and thread count) -> markdown.

Each row is one training path of one run: samples/s from the median step (events excluded) and
over all timed steps (events included), both as ratios to ``uniform`` on the same batches, the
events' seconds, and the machine's load before and after. A run taken on a loaded machine has
its ratios withheld by ``harness_bench``; the table prints "withheld", never a number.

    python -m benchmark.c5_table reports/results/throughput_c5_scales.md run1.json run2.json ...
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

HEADER = ("| ids | threads | path | samples/s (median step) | vs uniform, events excluded | "
          "vs uniform, events included | events s | load before / after |\n"
          "|---|---|---|---|---|---|---|---|")
LABELS = {"fiited_uniform": "uniform (ours)",
          "torch_embeddingbag_sparse_adagrad": "torch EmbeddingBag + element-wise Adagrad"}


def _ratio(x) -> str:
    return "withheld" if x is None else f"{x:.2f}x"


def rows(run: dict) -> list[str]:
    m = run["machine"]
    load = f"{m['load_before'][0]:.2f} / {m['load_after'][0]:.2f}"
    out = []
    for path in run["ratio_to_uniform"]:
        r = run[path]
        out.append(f"| {run['rows_total']:,} | {run['threads']} | {LABELS.get(path, path)} | "
                   f"{r['samples_per_s']:,.0f} | {_ratio(run['ratio_to_uniform'][path])} | "
                   f"{_ratio(run['ratio_to_uniform_with_events'][path])} | "
                   f"{r['event_seconds']:.2f} | {load} |")
    return out


def table(runs: list[dict]) -> str:
    runs = sorted(runs, key=lambda r: (r["rows_total"], r["threads"]))
    lines = [HEADER]
    for run in runs:
        lines += rows(run)
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path, help="markdown file to write")
    ap.add_argument("runs", nargs="+", type=Path, help="harness_bench --json outputs")
    a = ap.parse_args(argv)
    runs = []
    for p in a.runs:
        try:
            runs.append(json.loads(p.read_text()))
        except (OSError, json.JSONDecodeError) as e:
            ap.error(f"{p}: {e}")
        if "machine" not in runs[-1]:
            ap.error(f"{p}: no machine load recorded (made by an older harness_bench)")
    a.out.write_text(table(runs))
    print(f"wrote {a.out} ({len(runs)} runs)")


if __name__ == "__main__":
    main()
