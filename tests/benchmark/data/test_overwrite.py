"""``--overwrite`` replaces only a prepared dataset: a user's own folder survives, through the
real ``fiited-data`` command line (a subprocess, as a user runs it)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from benchmark.data.format import open_dataset

REPO = Path(__file__).resolve().parents[3]
GENERATE = ["generate", "--preset", "criteo", "--scale", "0.0002", "--rows", "3000", "--days",
            "2", "--quiet"]


def fiited_data(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "benchmark.data.cli", *map(str, args)],
                          cwd=REPO, capture_output=True, text=True, timeout=300)


def assert_one_line_refusal(proc, *needles: str) -> None:
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr, proc.stderr
    for n in needles:
        assert n in proc.stderr, proc.stderr


def user_folder(path: Path) -> Path:
    path.mkdir()
    (path / "thesis.tex").write_text("years of work")
    (path / "sub").mkdir()
    (path / "sub" / "notes.txt").write_text("more")
    return path


def kaggle_input(tmp_path: Path) -> Path:
    line = "\t".join(["1"] + ["3"] * 13 + ["68fd1e64"] * 26)
    other = "\t".join(["0"] + ["1"] * 13 + ["80e26c9b"] * 26)
    path = tmp_path / "train.txt"
    path.write_text("\n".join([line, other] * 10) + "\n")
    return path


def test_generate_and_prepare_overwrite_refuse_a_user_folder(tmp_path):
    mine = user_folder(tmp_path / "mine")
    before = sorted(p.relative_to(mine) for p in mine.rglob("*"))
    assert_one_line_refusal(fiited_data(*GENERATE, "--out", mine, "--overwrite"),
                            str(mine), "not a prepared dataset", "refusing to delete")
    assert_one_line_refusal(
        fiited_data("prepare", "criteo-kaggle", "--input", kaggle_input(tmp_path), "--out", mine,
                    "--overwrite", "--quiet"), str(mine), "not a prepared dataset")
    assert sorted(p.relative_to(mine) for p in mine.rglob("*")) == before
    assert (mine / "thesis.tex").read_text() == "years of work"
    assert not list(tmp_path.glob(".mine.*"))           # no temporary left behind


def test_overwrite_replaces_a_prepared_dataset_but_not_one_holding_other_files(tmp_path):
    out = tmp_path / "ds"
    assert fiited_data(*GENERATE, "--out", out).returncode == 0
    first = open_dataset(out).manifest.fingerprint
    proc = fiited_data(*GENERATE[:-1], "--seed", "5", "--quiet", "--out", out, "--overwrite")
    assert proc.returncode == 0, proc.stderr
    assert open_dataset(out).manifest.fingerprint != first      # it was replaced
    (out / "my_analysis.ipynb").write_text("{}")
    assert_one_line_refusal(fiited_data(*GENERATE, "--out", out, "--overwrite"),
                            "my_analysis.ipynb", "refusing to delete")
    assert (out / "my_analysis.ipynb").exists()


@pytest.mark.parametrize("content", ["{broken", "[1, 2]", "{\"name\": 1}"])
def test_a_folder_whose_manifest_is_not_valid_is_not_replaced(tmp_path, content):
    out = tmp_path / "fake"
    out.mkdir()
    (out / "manifest.json").write_text(content)
    assert_one_line_refusal(fiited_data(*GENERATE, "--out", out, "--overwrite"),
                            "not a valid manifest")
    assert (out / "manifest.json").read_text() == content
