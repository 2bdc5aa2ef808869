"""Hydra callbacks of a sweep: prepare the MLflow store and the sweep's parent run before the
jobs, one progress line per finished job, one table (and the parent run's artifact) after them.
"""
from __future__ import annotations

import atexit
import fcntl
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

log = logging.getLogger(__name__)
PROGRESS_FILE = ".progress.json"   # in the sweep dir: total jobs, start time, finished jobs


def count_jobs(config: DictConfig) -> int | None:
    """Jobs the basic sweeper will launch (its params plus the command line), None if unknown."""
    try:
        from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
        from hydra.core.override_parser.overrides_parser import OverridesParser

        if not str(config.hydra.sweeper.get("_target_", "")).endswith("BasicSweeper"):
            return None
        params = [f"{k}={v}" for k, v in (config.hydra.sweeper.params or {}).items()]
        params += list(config.hydra.overrides.task)
        overrides = OverridesParser.create().parse_overrides(params)
        return sum(len(b) for b in BasicSweeper.split_arguments(overrides, None))
    except Exception as e:  # a sweeper plugin of its own: progress without a total
        log.debug("cannot count the sweep's jobs: %s", e)
        return None


class PrepareStore(Callback):
    """Create the sqlite schema and experiment once (parallel jobs race to do it), mark runs
    lost by earlier sweeps, and open the sweep's parent run that the jobs nest under."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from benchmark.job import PARENT_ENV
        from benchmark.run_state import mark_lost
        from benchmark.tracking import Tracker, prepare_store, store_location

        sweep_dir = Path(config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        total = count_jobs(config)
        (sweep_dir / PROGRESS_FILE).write_text(json.dumps(
            {"total": total, "start": time.time(), "done": []}))
        tc = config.tracking
        if not tc.enabled or os.environ.get("RANK", "0") != "0":
            return
        from mlflow import MlflowClient

        uri, root = store_location(tc, Path.cwd())
        exp_id = prepare_store(uri, tc.experiment, root)
        mark_lost(MlflowClient(tracking_uri=uri), [exp_id])
        overrides = list(config.hydra.overrides.task)
        command = " ".join(["fiited-bench", "-m", *overrides])
        parent = Tracker(uri, tc.experiment, f"sweep {sweep_dir.name}", artifact_root=root,
                         tags={"fiited.sweep": "parent", "fiited.sweep.command": command,
                               "fiited.sweep.overrides": json.dumps(overrides),
                               "fiited.sweep.jobs": total if total is not None else "?",
                               "fiited.sweep.dir": str(sweep_dir),
                               "mlflow.note.content": f"`{command}`: {total or '?'} jobs"})
        parent.set_tags({"experiment": tc.experiment})
        os.environ[PARENT_ENV] = parent.run_id  # joblib workers start after this and inherit it
        _SweepRun.tracker = parent
        atexit.register(_SweepRun.abandon)  # Ctrl-C: the parent ends KILLED, not RUNNING
        log.info("MLflow store %s, experiment %r (id %s), sweep run %s", uri, tc.experiment,
                 exp_id, parent.run_id)


class _SweepRun:
    """The parent run of the sweep in progress (one per launching process)."""
    tracker = None

    @classmethod
    def close(cls, status: str, artifacts: list[Path]) -> None:
        t, cls.tracker = cls.tracker, None
        if t is None:
            return
        from benchmark.job import PARENT_ENV

        os.environ.pop(PARENT_ENV, None)
        try:
            t.log_artifacts(artifacts)
        finally:
            t.finish(status)

    @classmethod
    def abandon(cls) -> None:
        """At exit without on_multirun_end: the sweep was interrupted."""
        if cls.tracker is not None:
            from benchmark.run_state import end_children

            t = cls.tracker
            cls.close("KILLED", [])
            try:  # children whose workers were stopped before they could say so
                time.sleep(1.0)  # a worker that got the signal too marks its own run
                end_children(t.client, t.experiment_id, t.run_id, "its sweep was interrupted")
            except Exception as e:
                log.warning("could not end the interrupted sweep's runs: %s", e)


class SweepProgress(Callback):
    """``[sweep] k/N done, m failed, s skipped, eta ...`` after each job, from any worker."""

    def on_job_end(self, config: DictConfig, job_return: Any = None, **kwargs: Any) -> None:
        from benchmark.job import REUSED_FILE, SKIPPED_FILE

        try:
            sweep_dir = Path(config.hydra.sweep.dir)
            job_dir = Path(config.hydra.runtime.output_dir)
        except Exception:
            return
        path = sweep_dir / PROGRESS_FILE
        if not path.exists() or os.environ.get("RANK", "0") != "0":
            return
        state = "failed" if (job_dir / "error.txt").exists() else \
            "skipped" if (job_dir / SKIPPED_FILE).exists() else \
            "reused" if (job_dir / REUSED_FILE).exists() else "done"
        with open(path, "r+") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            info = json.loads(fh.read() or "{}")
            info.setdefault("done", []).append(state)
            fh.seek(0)
            fh.truncate()
            fh.write(json.dumps(info))
        print(progress_line(info["done"], info.get("total"), time.time() - info["start"]),
              file=sys.stderr, flush=True)


def progress_line(states: list[str], total: int | None, elapsed_s: float) -> str:
    k = len(states)
    failed, skipped = states.count("failed"), states.count("skipped")
    reused = states.count("reused")
    parts = [f"{k}/{total if total is not None else '?'} done", f"{failed} failed"]
    if skipped:
        parts.append(f"{skipped} skipped")
    if reused:
        parts.append(f"{reused} already finished")
    ran = k - skipped - reused
    if total is not None and k < total and ran > 0:
        eta = elapsed_s / k * (total - k)
        parts.append(f"eta {_duration(eta)}")
    elif total is not None and k >= total:
        parts.append(f"took {_duration(elapsed_s)}")
    return "[sweep] " + ", ".join(parts)


def _duration(s: float) -> str:
    s = int(round(s))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else \
        f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


class SweepSummary(Callback):
    """After a multirun: the comparison table of every finished job, saved beside the jobs and
    on the parent run; skipped cases listed with why; failures make the sweep exit 1."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from benchmark.job import SKIPPED_FILE
        from benchmark.summary import collect, format_table

        if os.environ.get("RANK", "0") != "0":  # torchrun: rank 0 speaks for the sweep
            return
        sweep_dir = Path(config.hydra.sweep.dir)
        rows = collect(sweep_dir)
        failed = sorted(sweep_dir.rglob("error.txt"))
        skipped = sorted(sweep_dir.rglob(SKIPPED_FILE))
        text = []
        if rows:
            table = format_table(rows)
            text.append(table)
            print(f"\nSweep {sweep_dir} ({len(rows)} finished runs):\n{table}\n")
        else:
            print(f"No finished runs under {sweep_dir}.")
        if skipped:
            lines = [f"  {p.parent.name}: {p.read_text().strip()}" for p in skipped]
            msg = f"{len(skipped)} case(s) skipped, they cannot exist at this data size " \
                  f"(scale):\n" + "\n".join(lines)
            text.append(msg)
            print(msg)
        if failed:
            lines = [f"  {p.parent.name}: {p.read_text().splitlines()[0]}" for p in failed]
            msg = f"{len(failed)} job(s) of the sweep failed (error.txt in each job dir):\n" + \
                "\n".join(lines)
            text.append(msg)
        (sweep_dir / "summary.md").write_text("\n\n".join(text) + "\n")
        _SweepRun.close("FAILED" if failed else "FINISHED", [sweep_dir / "summary.md"])
        if failed:
            print(msg)
            raise SystemExit(1)
