"""``fiited-data``: generate synthetic data, describe a prepared dataset, prepare real data."""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Sequence

import numpy as np

from benchmark.data.format import DatasetError, PreparedDataset, open_dataset
from benchmark.data.stats import coverage_table
from benchmark.data.synthetic import PRESETS, SyntheticConfig, generate

EXIT_BAD_INPUT = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fiited-data", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    d = SyntheticConfig()
    g = sub.add_parser("generate", help="generate a synthetic Criteo-/Avazu-like dataset")
    g.add_argument("--preset", choices=sorted(PRESETS), default=d.preset)
    g.add_argument("--scale", type=float, default=d.scale,
                   help="multiplies the real cardinalities (default %(default)s)")
    g.add_argument("--rows", type=int, default=d.rows, help="total rows (default %(default)s)")
    g.add_argument("--days", type=int, default=d.days, help="pseudo-days (default %(default)s)")
    g.add_argument("--seed", type=int, default=d.seed)
    g.add_argument("--multi-hot-fields", type=int, default=d.multi_hot_fields, metavar="M",
                   help="bag (multi-hot) fields beside the one-hot ones (default %(default)s)")
    g.add_argument("--multi-hot-mean-len", type=float, default=d.multi_hot_mean_len,
                   metavar="L", help="their mean bag length (default %(default)s)")
    g.add_argument("--out", required=True, metavar="DIR", help="prepared dataset directory")
    g.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    g.add_argument("--quiet", action="store_true", help="no progress bar")
    g.set_defaults(func=_generate)

    i = sub.add_parser("info", help="describe a prepared dataset (splits, skew, Bayes NE)")
    i.add_argument("dir", metavar="DIR")
    i.add_argument("--json", action="store_true", help="machine-readable output")
    i.set_defaults(func=_info)

    try:
        from benchmark.data.readers.cli import register as register_prepare
    except ModuleNotFoundError as e:
        if e.name not in ("benchmark.data.readers", "benchmark.data.readers.cli"):
            raise
    else:
        register_prepare(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except BrokenPipeError:              # `fiited-data info DIR | head`: not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (DatasetError, ValueError, OSError) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        print(f"fiited-data {args.command}: error: {msg}", file=sys.stderr)
        return EXIT_BAD_INPUT


def _generate(args: argparse.Namespace) -> int:
    cfg = SyntheticConfig(preset=args.preset, scale=args.scale, rows=args.rows, days=args.days,
                          seed=args.seed, multi_hot_fields=args.multi_hot_fields,
                          multi_hot_mean_len=args.multi_hot_mean_len)
    t0 = time.perf_counter()
    ds = generate(cfg, args.out, overwrite=args.overwrite, progress=not args.quiet)
    m, st = ds.manifest, ds.manifest.stats
    sizes = " / ".join(f"{s} {m.splits[s][1] - m.splits[s][0]:,}" for s in ("train", "val", "test"))
    print(f"generated {m.name} at {ds.path}\n"
          f"  rows {m.num_rows:,} ({sizes}), {m.num_features} tables "
          f"({sum(m.cardinalities):,} ids), {m.num_dense} dense\n"
          f"  click rate (train) {m.click_rate:.4f} (preset {PRESETS[cfg.preset].click_rate})\n"
          f"  Bayes NE test {st['bayes_ne']:.4f}, val {st['bayes_ne_val']:.4f}\n"
          f"  took {time.perf_counter() - t0:.1f} s")
    return 0


def describe(ds: PreparedDataset) -> dict:
    """Everything ``info`` shows, as plain data."""
    m = ds.manifest
    splits = {}
    order = [s for s in ("train", "val", "test") if s in m.splits]
    for name in order + sorted(set(m.splits) - set(order)):
        a, b = m.splits[name]
        pos = int(np.count_nonzero(ds.labels[a:b])) if b > a else 0
        splits[name] = {"start": a, "end": b, "rows": b - a,
                        "click_rate": pos / (b - a) if b > a else None}
    out = {"path": str(ds.path), "name": m.name, "num_rows": m.num_rows,
           "fingerprint": m.fingerprint, "created": m.created, "click_rate": m.click_rate,
           "num_dense": m.num_dense, "splits": splits,
           "tables": coverage_table(ds, "train") if "train" in m.splits else []}
    if m.bags and "train" in m.splits:
        a, b = m.splits["train"]
        out["bags"] = [dict(spec, mean_len=(float(ds.bags[spec["name"]][1][b] -
                                                  ds.bags[spec["name"]][1][a]) / max(b - a, 1)))
                       for spec in m.bags]
    for key in ("bayes_ne", "bayes_ne_val"):
        if key in m.stats:
            out[key] = m.stats[key]
    return out


def _info(args: argparse.Namespace) -> int:
    info = describe(open_dataset(args.dir))
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"{info['path']}: {info['name']}  ({info['num_rows']:,} rows, {info['num_dense']} "
          f"dense, fingerprint {info['fingerprint']}, created {info['created']})")
    for name, s in info["splits"].items():
        rate = "-" if s["click_rate"] is None else f"{s['click_rate']:.4f}"
        span = f"[{s['start']:,}, {s['end']:,})"
        print(f"  {name:5s} {span:>28s} {s['rows']:>12,} rows  click {rate}")
    print(f"  click rate (train, NE background): {info['click_rate']:.4f}")
    if "bayes_ne" in info:
        print(f"  Bayes NE: test {info['bayes_ne']:.4f}, val {info.get('bayes_ne_val', 0):.4f}")
    print(f"  {'table':18s} {'rows':>12s} {'seen':>12s} {'top1%':>7s} {'top10%':>7s}"
          f"   (access coverage in train)")
    for t in info["tables"]:
        print(f"  {t['name']:18s} {t['cardinality']:>12,} {t['seen']:>12,} "
              f"{t['top1']:>7.1%} {t['top10']:>7.1%}")
    for bag in info.get("bags", []):
        print(f"  bag {bag['name']:14s} {bag['cardinality']:>12,} ids of table {bag['table']!r}, "
              f"{bag['pooling']} pooling, mean length {bag['mean_len']:.2f} (train)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
