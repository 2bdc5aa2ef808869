"""Every user error through the real ``fiited-bench`` command (a subprocess): exactly one line
on stderr, exit code 2, no traceback; ``HYDRA_FULL_ERROR=1`` still gives the stack; in a sweep
the same line heads the job's error.txt. Checkpoints: a crafted pickle is refused without
running, a config mismatch names the keys, a broken file is named."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.slow

FAST = ["tracking=none", "train.max_steps=6", "summary_table=false"]
FIITED = ["method=fiited", "method.budget_scope=weights", "method.index=direct"]


def one_line_error(proc, *needles: str) -> str:
    err = proc.stderr
    assert proc.returncode == 2, f"rc={proc.returncode}\n{proc.stdout[-2000:]}\n{err[-3000:]}"
    assert "Traceback" not in err and "Error executing job" not in err, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("fiited-bench: error: "), err
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """A small prepared dataset to copy and break."""
    from benchmark.data.synthetic import ensure_synthetic

    root = tmp_path_factory.mktemp("prepared")
    ensure_synthetic(root / "good", {"preset": "criteo", "scale": 0.0001, "rows": 6000,
                                     "days": 2, "seed": 0})
    return root / "good"


def broken_copy(prepared: Path, dest: Path, how: str) -> Path:
    shutil.copytree(prepared, dest)
    ids = dest / "ids.npy"
    if how == "truncated":
        data = ids.read_bytes()
        ids.write_bytes(data[: len(data) // 2])
    elif how == "id_range":
        arr = np.load(ids, mmap_mode="r+")
        arr[1234, 3] = 10**6                       # far beyond that table's cardinality
        arr.flush()
    return dest


@pytest.mark.parametrize("override,needles", [
    (["method=uniform", "method.budget=0"], ["method.budget must be in (0, 1]"]),
    (["method=fiited", "method.num_chunks=3"], ["method.num_chunks=3", "16"]),
    (["method=uniform", "train.batchsize=3"], ["train.batchsize"]),
    (["method=uniform", "train.dense_optimizer=sgdd"], ["train.dense_optimizer='sgdd'"]),
    (["method=uniform", "+method.budgte=0.5"], ["budgte"]),
    (["method=uniform", "train.epochs=0"], ["no training steps"]),
])
def test_bad_config_is_one_line_exit_2(run_app, override, needles):
    one_line_error(run_app(*override, *FAST, check=False), *needles)


def test_bad_data_is_one_line_naming_the_file(run_app, tmp_path, prepared):
    missing = tmp_path / "nope"
    one_line_error(run_app(f"data.path={missing}", "data.synthetic=null", *FAST, check=False,
                           tiny=False), str(missing), "does not exist")
    bad = broken_copy(prepared, tmp_path / "trunc", "truncated")
    one_line_error(run_app(f"data.path={bad}", "data.synthetic=null", *FAST, check=False,
                           tiny=False), str(bad / "ids.npy"), "truncated or corrupt")
    bad = broken_copy(prepared, tmp_path / "range", "id_range")
    one_line_error(run_app(f"data.path={bad}", "data.synthetic=null", "method=uniform",
                           "tracking=none", "summary_table=false", check=False, tiny=False),
                   str(bad / "ids.npy"), "row 1234", "C4", "out of range")


@pytest.mark.parametrize("scale", ["smoke", "none", "full"])
def test_missing_real_dataset_fails_with_its_prepare_command_at_any_scale(run_app, tmp_path,
                                                                          scale):
    proc = run_app("data=criteo_kaggle", f"scale={scale}", "tracking=none", check=False,
                   tiny=False)
    one_line_error(proc, "data=criteo_kaggle", "does not exist",
                   "fiited-data prepare criteo-kaggle --input")
    assert not (tmp_path / "data").exists() or not any((tmp_path / "data").iterdir())


def test_real_config_pointing_at_synthetic_data_is_refused(run_app, prepared):
    one_line_error(run_app("data=criteo_kaggle", f"data.path={prepared}", "scale=smoke",
                           "tracking=none", check=False, tiny=False),
                   "holds synthetic data", "fiited-data prepare criteo-kaggle")


def test_hydra_full_error_still_gives_the_stack(run_app, monkeypatch):
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    proc = run_app("method=uniform", "method.budget=0", *FAST, check=False)
    assert proc.returncode != 0 and "Traceback" in proc.stderr
    assert "method.budget must be in (0, 1]" in proc.stderr


def test_sweep_error_txt_starts_with_the_same_line(run_app, tmp_path):
    single = one_line_error(run_app("method=uniform", "method.budget=0", *FAST, check=False))
    proc = run_app("method=uniform", "method.budget=0,1.0", *FAST, multirun=True, check=False)
    assert proc.returncode != 0
    errors = list((tmp_path / "multirun").rglob("error.txt"))
    assert len(errors) == 1
    text = errors[0].read_text()
    assert text.splitlines()[0] == single and "Traceback" not in text


# ---- checkpoints ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, tiny_data_dir) -> Path:
    """One real checkpoint (FIITED, stopped at step 4) shared by the checkpoint tests."""
    from tests.benchmark.conftest import APP, REPO, tiny_overrides

    cwd = tmp_path_factory.mktemp("ckpt")
    subprocess.run([*APP, *tiny_overrides(tiny_data_dir), *FIITED, "method.gamma=0.9",
                    "tracking=none", "train.max_steps=12", "train.stop_after=4",
                    "summary_table=false"], cwd=cwd, check=True, capture_output=True,
                   env=dict(os.environ, PYTHONPATH=str(REPO)), timeout=600)
    return next((cwd / "outputs").rglob("checkpoint.pt"))


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_crafted_pickle_is_refused_without_running(run_app, tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    torch.save({"format": "fiited-bench/checkpoint", "model": _Payload(marker)}, evil)
    line = one_line_error(run_app("method=uniform", f"train.resume={evil}", *FAST, check=False),
                          str(evil),
                          "refused")
    assert "GLOBAL posix.system" in line          # what it would have run is named
    assert not marker.exists()


def test_resume_with_another_config_names_the_differing_keys(run_app, checkpoint):
    line = one_line_error(run_app(*FIITED, "method.gamma=0.5", "train.dense_lr=0.05",
                                  "tracking=none", "train.max_steps=12",
                                  f"train.resume={checkpoint}", check=False),
                          str(checkpoint), "another config")
    assert "method.gamma: 0.9 in the checkpoint, 0.5 now" in line
    assert "train.dense_lr: 0.02 in the checkpoint, 0.05 now" in line
    assert "train.max_steps" not in line.split("(keys that may change")[0]
    # keys on the allow-list may change: a longer run from the same checkpoint is accepted
    proc = run_app(*FIITED, "method.gamma=0.9", "tracking=none", "train.max_steps=14",
                   f"train.resume={checkpoint}", "summary_table=false")
    assert proc.returncode == 0


@pytest.mark.parametrize("damage", ["truncated", "random", "empty"])
def test_broken_checkpoint_is_one_line_naming_it(run_app, checkpoint, tmp_path, damage):
    bad = tmp_path / f"{damage}.pt"
    data = checkpoint.read_bytes()
    bad.write_bytes({"truncated": data[: len(data) // 3],
                     "random": np.random.default_rng(0).bytes(4096),
                     "empty": b""}[damage])
    one_line_error(run_app(*FIITED, "method.gamma=0.9", "tracking=none",
                           "train.max_steps=12", f"train.resume={bad}", check=False),
                   str(bad), "not a readable checkpoint")


def test_real_dataset_at_smoke_scale_trains_on_that_dataset(run_app, tmp_path):
    """scale=smoke sizes only synthetic data: with a prepared real dataset the run uses it, and
    the smoke scale's synthetic sizes are not logged as if they applied."""
    from benchmark.data.readers import PrepareConfig, prepare_dataset

    rng = np.random.default_rng(0)
    lines = ["\t".join([str(int(rng.random() < 0.3))] +
                       [str(int(x)) for x in rng.integers(0, 50, 13)] +
                       [format(int(x), "08x") for x in rng.integers(0, 40, 26)])
             for _ in range(3000)]
    raw = tmp_path / "train.txt"
    raw.write_text("\n".join(lines) + "\n")
    out = tmp_path / "kaggle"
    prepare_dataset(PrepareConfig("criteo-kaggle", [str(raw)], str(out)))
    run_app("method=uniform", "data=criteo_kaggle", f"data.path={out}", "scale=smoke",
            "train.max_steps=5",
            "tracking=none", "summary_table=false", tiny=False)
    cfg = (next((tmp_path / "outputs").rglob("config.yaml"))).read_text()
    assert "name: criteo_kaggle" in cfg and "synthetic: null" in cfg
    summary = next((tmp_path / "outputs").rglob("summary.json")).read_text()
    assert "bayes_ne" not in summary            # no generator: this is the real data
