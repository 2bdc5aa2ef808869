"""``fiited-data prepare``: the subcommand that turns raw public files into a prepared dataset.

``benchmark/data/cli.py`` owns the ``fiited-data`` parser and calls ``register(subparsers)``;
the subcommand's handler is ``args.func(args)`` and returns the exit status. Bad input prints
one line (``file:line: reason`` for a bad line) and returns 2.
"""
from __future__ import annotations

import argparse
import sys
import time

from benchmark.data.format import DatasetError, PreparedDataset
from benchmark.data.readers import DATASETS, InputError, PrepareConfig, prepare_dataset

EXIT_BAD_INPUT = 2
EXAMPLES = """examples:
  fiited-data prepare criteo-kaggle --input train.txt --out data/criteo_kaggle
  fiited-data prepare criteo-terabyte --input terabyte/ --out data/criteo_terabyte \\
      --max-ind-range 40000000
  fiited-data prepare avazu --input train.gz --out data/avazu
  fiited-data prepare kdd12 --input training.txt --out data/kdd12 --counts weights
  fiited-data prepare movielens --input ml-1m/ --out data/movielens --split time
"""


def register(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "prepare", help="prepare a real dataset (Criteo, Avazu, KDD12, MovieLens)",
        description="Read raw public dataset files (plain or gzip) in two streaming passes and "
                    "write the prepared format (DLRM preprocessing, DLRM splits).",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dataset", choices=sorted(DATASETS))
    p.add_argument("--input", nargs="+", required=True, metavar="PATH",
                   help="input file(s) or directory (criteo-kaggle: train.txt or its parts in "
                        "order; terabyte: day files or a directory of day_N files; movielens: "
                        "the dataset directory or its ratings file); docs/data.md has the "
                        "formats")
    p.add_argument("--out", required=True, metavar="DIR", help="prepared dataset directory")
    p.add_argument("--max-ind-range", type=int, default=0, metavar="M",
                   help="hash raw categorical values mod M before counting (DLRM; 0 = off)")
    p.add_argument("--min-count", type=int, default=0, metavar="T",
                   help="values seen fewer than T times share id 0 (0 = off)")
    p.add_argument("--on-bad-lines", choices=("error", "skip"), default="error",
                   help="stop at a malformed line (default) or skip and count it")
    p.add_argument("--split", choices=("days", "last-day", "last-part", "random", "time"),
                   default=None,
                   help="criteo: days (default) | random | last-part; avazu: last-day "
                        "(default) | random; kdd12: random; movielens: random (default) | time")
    p.add_argument("--fractions", type=_fractions, default=None, metavar="TRAIN,VAL,TEST",
                   help="for random/time splits (avazu 0.7,0.1,0.2; others 0.8,0.1,0.1)")
    p.add_argument("--seed", type=int, default=0, help="for random splits")
    p.add_argument("--counts", choices=("expand", "weights", "clicked"), default=None,
                   help="kdd12: one row per impression (default), weighted rows, or label = "
                        "any click")
    p.add_argument("--genres", choices=("multi", "first", "bag"), default=None,
                   help="movielens: genre slots (default), the first genre, or one bag "
                        "feature over the genre vocabulary")
    p.add_argument("--history", type=int, default=None, metavar="H",
                   help="movielens: add a bag of the user's last H items rated before the "
                        "row, from training rows only (0/unset: none; 20 is a usual H)")
    p.add_argument("--genre-slots", type=int, default=None, metavar="S",
                   help="movielens multi: slots (default: most genres of any movie)")
    p.add_argument("--positive-rating", type=float, default=None, metavar="R",
                   help="movielens: label = rating >= R (default 4)")
    p.add_argument("--layout", choices=("auto", "recbole", "ml1m", "ml20m"), default=None,
                   help="movielens: file layout (default: auto-detect)")
    p.add_argument("--id-dtype", choices=("auto", "int32", "int64"), default="auto")
    p.add_argument("--block-mb", type=float, default=32.0,
                   help="MiB read per block (memory vs per-block overhead)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.set_defaults(func=run)
    return p


def _fractions(text: str) -> tuple[float, float, float]:
    try:
        parts = tuple(float(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: want three numbers TRAIN,VAL,TEST") from None
    if len(parts) != 3:
        raise argparse.ArgumentTypeError(f"{text!r}: want three numbers TRAIN,VAL,TEST")
    return parts


def config_from_args(args: argparse.Namespace) -> PrepareConfig:
    return PrepareConfig(
        dataset=args.dataset, inputs=list(args.input), out=args.out,
        max_ind_range=args.max_ind_range, min_count=args.min_count,
        on_bad_lines=args.on_bad_lines, split=args.split, fractions=args.fractions,
        seed=args.seed, counts=args.counts, genres=args.genres, genre_slots=args.genre_slots,
        history=args.history,
        positive_rating=args.positive_rating, layout=args.layout, id_dtype=args.id_dtype,
        block_bytes=int(args.block_mb * (1 << 20)), overwrite=args.overwrite)


class ProgressLines:
    """A progress line at most every ``every`` seconds per pass, with rows/s."""

    def __init__(self, every: float = 5.0, stream=sys.stderr) -> None:
        self.every, self.stream = every, stream
        self.t0 = time.perf_counter()
        self.last: dict[str, float] = {}
        self.start: dict[str, float] = {}

    def __call__(self, stage: str, rows: int, done: int, total: int) -> None:
        now = time.perf_counter()
        self.start.setdefault(stage, now)
        if now - self.last.get(stage, self.start[stage]) < self.every:
            return
        self.last[stage] = now
        rate = rows / max(now - self.start[stage], 1e-9)
        pct = 100.0 * done / total if total else 0.0
        print(f"[{stage}] {rows:,} rows  {pct:5.1f}% of input  {rate:,.0f} rows/s",
              file=self.stream, flush=True)


def summary(ds: PreparedDataset) -> str:
    m = ds.manifest
    st = m.stats
    lines = [f"prepared {m.name} at {ds.path}  ({m.num_rows:,} rows, fingerprint "
             f"{m.fingerprint})"]
    for name in ("train", "val", "test"):
        s = st["splits"][name]
        rate = s["positives"] / s["rows"] if s["rows"] else float("nan")
        lines.append(f"  {name:5s} {s['rows']:>13,} rows  click rate {rate:.4f}")
    lines.append(f"  features ({len(m.feature_names)}): " + ", ".join(
        f"{n}={c:,}" for n, c in zip(m.feature_names, m.cardinalities)))
    if m.bags:
        lines.append(f"  bags ({len(m.bags)}): " + ", ".join(
            f"{b['name']}={b['cardinality']:,} ({b['pooling']})" for b in m.bags))
    if m.dense_names:
        lines.append(f"  dense: {len(m.dense_names)} (log(x+1))")
    bad = st["bad_lines"]
    if bad["skipped"]:
        lines.append(f"  skipped {bad['skipped']:,} bad lines: {bad['by_reason']}")
    lines.append(f"  {st['rows_per_s']:,.0f} rows/s over both passes, peak RSS "
                 f"{st['peak_rss_bytes'] / 2**20:,.0f} MiB")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    try:
        cfg = config_from_args(args)                  # option errors are ValueErrors
    except ValueError as e:
        return _fail(e)
    try:
        ds = prepare_dataset(cfg, None if args.quiet else ProgressLines())
    except (InputError, DatasetError, OSError) as e:   # BadLineError is an InputError
        return _fail(e)
    print(summary(ds))
    return 0


def _fail(e: Exception) -> int:
    msg = str(e).splitlines()[0] if str(e) else type(e).__name__
    print(f"fiited-data prepare: error: {msg}", file=sys.stderr)
    return EXIT_BAD_INPUT
