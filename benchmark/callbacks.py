"""Hydra callbacks: prepare the MLflow store before a sweep, print one table after it."""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

log = logging.getLogger(__name__)


class PrepareStore(Callback):
    """Create the sqlite schema and experiment once, before parallel jobs race to do it."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from benchmark.tracking import prepare_store, resolve_uri

        tc = config.tracking
        if not tc.enabled:
            return
        uri = resolve_uri(tc.uri, Path.cwd())
        root = tc.artifact_root
        if root and "://" not in root:
            root = (Path.cwd() / root).resolve().as_uri()
        exp_id = prepare_store(uri, tc.experiment, root)
        log.info("MLflow store %s, experiment %r (id %s)", uri, tc.experiment, exp_id)


class SweepSummary(Callback):
    """After a multirun: the comparison table of every finished job, saved beside the jobs."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from benchmark.summary import collect, format_table

        if os.environ.get("RANK", "0") != "0":  # torchrun: rank 0 speaks for the sweep
            return
        sweep_dir = Path(config.hydra.sweep.dir)
        rows = collect(sweep_dir)
        failed = sorted(sweep_dir.rglob("error.txt"))
        if rows:
            table = format_table(rows)
            (sweep_dir / "summary.md").write_text(table + "\n")
            print(f"\nSweep {sweep_dir} ({len(rows)} finished runs):\n{table}\n")
        else:
            print(f"No finished runs under {sweep_dir}.")
        if failed:
            lines = [f"  {p.parent.name}: {p.read_text().splitlines()[0]}" for p in failed]
            msg = f"{len(failed)} job(s) of the sweep failed (error.txt in each job dir):\n" + \
                "\n".join(lines)
            print(msg)
            raise SystemExit(1)
