"""``fiited-report``: an experiment's runs in MLflow -> figures, tables, executed notebook."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from reports import ReportError


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="fiited-report",
        description="Figures, tables and an executed notebook for one MLflow experiment "
                    "(one Hydra experiment of fiited-bench).")
    p.add_argument("--experiment", help="MLflow experiment name, e.g. compare, k_sweep, demo")
    p.add_argument("--tracking-uri", default=None,
                   help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or "
                        "sqlite:///mlflow.db in the working directory)")
    p.add_argument("--out", type=Path, default=None,
                   help="output directory (default: reports/out/<experiment>/)")
    p.add_argument("--no-notebook", action="store_true",
                   help="skip generating and executing the notebook (faster)")
    p.add_argument("--notebook-timeout", type=int, default=900,
                   help="seconds a notebook cell may run (default 900)")
    p.add_argument("--reference", metavar="EXPERIMENT", default=None,
                   help="borrow the uniform runs at budget 1.0 of this experiment of the same "
                        "store as the reference (for ablations that run no uniform); refused "
                        "unless data, model and training params all match")
    p.add_argument("--list", action="store_true", help="list the store's experiments and exit")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    from reports.report import ReportConfig, build_report
    from reports.runs import experiment_names, resolve_tracking_uri

    def say(line: str) -> None:
        print(line, flush=True)

    try:
        if args.list:
            for name in experiment_names(resolve_tracking_uri(args.tracking_uri)):
                say(name)
            return 0
        if not args.experiment:
            parser().error("--experiment is required (use --list to see the experiments)")
        out = build_report(ReportConfig(args.experiment, args.tracking_uri, args.out,
                                        notebook=not args.no_notebook,
                                        notebook_timeout_s=args.notebook_timeout,
                                        reference=args.reference), log=say)
    except ReportError as e:
        print(f"fiited-report: error: {e}", file=sys.stderr, flush=True)
        return 2
    say(f"done: report {out.index}")
    say(f"  figures {out.out_dir / 'figures'} ({len(out.figures)}), tables "
        f"{out.out_dir / 'tables'}" + (f", notebook {out.html}" if out.html else ""))
    if out.missing is not None and len(out.missing):
        say(f"  {len(out.missing)} run(s) missing results: listed in the report")
    if out.notebook_errors:
        print(f"fiited-report: the notebook raised {len(out.notebook_errors)} error(s); "
              f"see {out.notebook}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
