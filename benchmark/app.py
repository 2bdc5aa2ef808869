"""`fiited-bench`: the Hydra app. One job = one training run logged to MLflow.

    fiited-bench method=fiited method.budget=0.25
    fiited-bench -m experiment=compare            # a ready sweep from conf/experiment/
"""
from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from benchmark.config import register_configs
from benchmark.errors import EXIT_USER_ERROR, UserError, one_line

log = logging.getLogger(__name__)
CONF_DIR = str(Path(__file__).resolve().parent.parent / "conf")
REPO_DIR = Path(__file__).resolve().parent.parent

register_configs()


def run_job(cfg: DictConfig, run_dir: Path, launch_dir: Path) -> dict[str, Any]:
    """Validate, track and train one config; the MLflow run is FAILED if anything raises."""
    import torch

    from benchmark.job import describe_run, in_sweep, is_infeasible, open_run
    from benchmark.run_state import install_signal_handlers
    from benchmark.tracking import flatten, git_commit, store_location
    from benchmark.train import Trainer
    from fiited.registry import make_config

    try:
        make_config(OmegaConf.to_container(cfg.method, resolve=True))  # typos fail before any work
    except (ValueError, TypeError) as e:
        raise UserError(one_line(e).replace("(key ", "(key method.")) from e
    if cfg.data.get("prepare") and cfg.data.get("synthetic") is not None:
        cfg.data.synthetic = None  # a scale='s synthetic sizes do not apply to real data
    tc = cfg.tracking
    uri, artifact_root = store_location(tc, launch_dir)
    rank = int(os.environ.get("RANK", "0")) if cfg.train.distributed else 0
    install_signal_handlers()  # SIGTERM ends the run KILLED, not RUNNING forever
    flat = flatten(OmegaConf.to_container(cfg, resolve=True))
    tracker, reused = open_run(cfg, run_dir, launch_dir, uri, artifact_root, flat,
                               enabled=bool(tc.enabled) and rank == 0)
    if reused is not None:  # a sweep re-run: this config already FINISHED
        return reused
    try:
        trainer_cls = Trainer
        if cfg.train.distributed:  # torchrun: tables sharded across ranks, MLPs under DDP
            from benchmark.distributed.trainer import DistributedTrainer as trainer_cls
        try:
            trainer = trainer_cls(cfg, run_dir, launch_dir, tracker=tracker)
        except (ValueError, TypeError) as e:   # config validation inside fiited/baselines
            if isinstance(e, UserError):
                raise
            raise UserError(one_line(e)) from e
        describe_run(tracker, cfg, trainer.data.manifest, str(trainer.data.path), flat, {
            "git_commit": git_commit(REPO_DIR), "torch_version": torch.__version__,
            "device": str(trainer.device), "experiment": tc.experiment,
            "kernel_backend": _backend(trainer.device), "run_dir": str(run_dir),
        }, run_dir=run_dir)
        summary = trainer.fit()
    except BaseException as e:
        if in_sweep() and is_infeasible(e):
            tracker.delete()  # not a run: the sweep lists it as skipped, with why
        else:
            tracker.finish("KILLED" if isinstance(e, KeyboardInterrupt) else "FAILED")
        raise
    # train.stop_after stops as if killed (a checkpoint, no final metrics): not a finished run
    tracker.finish("FINISHED" if "val/ne" in summary else "KILLED")
    summary["mlflow_run_id"] = tracker.run_id
    return summary


def _backend(device) -> str:
    from fiited.kernels import backend_name

    return backend_name(device)


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="config")
def _main(cfg: DictConfig) -> float:
    from benchmark.job import is_infeasible, record_skip, run_name

    hc = HydraConfig.get()
    run_dir = Path(hc.runtime.output_dir)
    launch_dir = Path(hydra.utils.get_original_cwd())
    t0 = time.perf_counter()
    multirun = hc.mode.name == "MULTIRUN"
    try:
        if cfg.get("tune"):   # experiment=tune: this job runs its own trials (benchmark/tune.py)
            from benchmark.tune import run_tune

            return run_tune(cfg, run_dir, launch_dir)
        if cfg.get("tuned"):
            from benchmark.tune import apply_tuned

            apply_tuned(cfg, hc.runtime.choices, launch_dir)
        summary = run_job(cfg, run_dir, launch_dir)
    except Exception as e:
        if multirun and is_infeasible(e):  # a case that cannot exist at this data size
            record_skip(run_dir, run_name(cfg), one_line(e))
            return float("nan")
        if not multirun:
            if is_user_error(e) and not _USER_FULL_ERROR:   # before Hydra adds its own lines
                print(error_line(e), file=sys.stderr)
                sys.exit(EXIT_USER_ERROR)
            raise
        # In a sweep one bad job must not hide the others: record it; SweepSummary lists it
        # (error.txt's first line) and makes the sweep exit non-zero at the end. A user error
        # is the same one line a single run prints; anything else keeps its traceback.
        import traceback

        line = error_line(e)
        stack = "" if is_user_error(e) and not _USER_FULL_ERROR else \
            f"\n{traceback.format_exc()}"
        (run_dir / "error.txt").write_text(f"{line}\n{stack}")
        log.error("%s failed: %s", run_name(cfg), line)
        return float("nan")
    if "val/ne" in summary and os.environ.get("RANK", "0") == "0":
        log.info("%s: val NE %.4f, test NE %.4f, embedding total %.0f bytes, %.0f train samples/s "
                 "(%.0fs)", run_name(cfg), summary["val/ne"], summary["test/ne"],
                 summary["mem/total_bytes"], summary["perf/train_samples_per_s"],
                 time.perf_counter() - t0)
    if "val/ne" not in summary:
        log.info("stopped early: %s", summary)
        return float("nan")
    if cfg.summary_table and not multirun and os.environ.get("RANK", "0") == "0":
        from benchmark.summary import format_table

        print(format_table([dict(summary, method=cfg.method.name,
                                 budget=cfg.method.get("budget", 1.0), seed=cfg.seed)]))
    return float(summary["val/ne"])


def is_user_error(e: BaseException) -> bool:
    """Mistakes in the command line, configs or input files (not bugs): one line, exit 2."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    return isinstance(e, (UserError, HydraException, OmegaConfBaseException))


def error_line(e: BaseException) -> str:
    if is_user_error(e):
        return f"fiited-bench: error: {one_line(e)}"
    return f"fiited-bench: error: {type(e).__name__}: {one_line(e)}"


# HYDRA_FULL_ERROR=1 as the user set it; main() sets it for Hydra so that errors reach us
_USER_FULL_ERROR = os.environ.get("FIITED_USER_FULL_ERROR",
                                  os.environ.get("HYDRA_FULL_ERROR", "")) == "1"


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "ui":
        from reports.ui import main as ui_main

        sys.argv = [sys.argv[0] + " ui", *sys.argv[2:]]
        ui_main()
        return
    # Hydra prints its own (multi-line) report of an error unless HYDRA_FULL_ERROR=1; with it
    # set the exception comes back here, and a user error becomes one line and exit code 2.
    # Launcher workers inherit the user's choice through FIITED_USER_FULL_ERROR.
    os.environ["FIITED_USER_FULL_ERROR"] = "1" if _USER_FULL_ERROR else "0"
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        _main()
    except Exception as e:
        if _USER_FULL_ERROR or not is_user_error(e):
            raise
        print(error_line(e), file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)


if __name__ == "__main__":
    main()
