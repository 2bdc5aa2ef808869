"""Start ``fiited-bench`` on N local ranks with torchrun, with one output dir for all ranks.

    python -m benchmark.distributed.launch --nproc 2 method=fiited data=synthetic_criteo
    python -m benchmark.distributed.launch --nproc 2 -m method=uniform,fiited   # a sweep

Adds ``train.distributed=true`` and pins Hydra's run (or sweep) dir to a timestamp taken once
here: each rank resolves ``${now:...}`` itself, and two ranks can straddle a second.
Everything else is passed to ``benchmark.app`` unchanged; the command is printed first.
"""
from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Sequence


def torchrun_argv(nproc: int, overrides: Sequence[str], log_dir: str | os.PathLike | None = None,
                  python: str = sys.executable, now: float | None = None) -> list[str]:
    """The torchrun command line for ``nproc`` local ranks of the app with ``overrides``."""
    if nproc < 1:
        raise ValueError(f"--nproc must be >= 1, got {nproc}")
    args = list(overrides)
    multirun = any(a in ("-m", "--multirun") for a in args)
    stamp = time.strftime("%Y-%m-%d_%H-%M-%S", time.localtime(now))
    if not any(a.startswith("train.distributed=") for a in args):
        args.append("train.distributed=true")
    if multirun and not any(a.startswith("hydra.sweep.dir=") for a in args):
        args.append(f"hydra.sweep.dir=multirun/${{tracking.experiment}}/{stamp}")
    if not multirun and not any(a.startswith("hydra.run.dir=") for a in args):
        args.append(f"hydra.run.dir=outputs/${{tracking.experiment}}/{stamp}_${{method.name}}")
    argv = [python, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}"]
    if log_dir is not None:   # one stdout/stderr file per rank (and still on the console)
        argv += ["--log-dir", str(log_dir), "--redirects", "3", "--tee", "3"]
    return argv + ["-m", "benchmark.app", *args]


def rank_logs(log_dir: str | os.PathLike) -> dict[int, str]:
    """stdout + stderr of each rank from a ``--log-dir`` run (torchrun's layout)."""
    out: dict[int, str] = {}
    for f in sorted(Path(log_dir).rglob("std*.log")):
        rank = int(f.parent.name)
        out[rank] = out.get(rank, "") + f.read_text(errors="replace")
    return out


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmark.distributed.launch",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("--nproc", type=int, required=True, help="ranks on this machine")
    ap.add_argument("--log-dir", help="also write each rank's output to files here")
    known, rest = ap.parse_known_args(argv)
    cmd = torchrun_argv(known.nproc, rest, known.log_dir)
    print(shlex.join(cmd), flush=True)
    os.execv(cmd[0], cmd)


if __name__ == "__main__":
    main()
