"""The Triton kernels under TRITON_INTERPRET=1 (CPU) against the reference, and gpu_check's smoke.

The interpreter must be switched on before triton is first imported, so each check runs in a
fresh subprocess; the checks themselves assert there and report what failed.
"""
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(importlib.util.find_spec("triton") is None,
                                reason="triton is not installed")

CHECK = r'''
import torch
from fiited.kernels import reference, triton_kernels as tk
from fiited.optim import SparseOptimConfig

tk.UPDATE_TILE = 4  # 4 sorted positions per program: duplicates must cross program edges
CASES = [  # n, k, c, pool rows, absent share, hot share, rows dtype
    (40, 1, 12, 5, 0.0, 0.5, torch.int64),      # heavy duplicates, one hot row
    (30, 2, 12, 9, 0.3, 0.3, torch.int32),      # absent chunks
    (16, 4, 12, 200, 15 / 16, 0.0, torch.int64),  # FIITED-like, mostly absent
    (12, 4, 12, 20, 1.0, 0.0, torch.int32),      # all absent
    (0, 2, 12, 9, 0.0, 0.0, torch.int64),        # empty batch
    (24, 2, 16, 1000, 0.1, 0.0, torch.int32),   # mostly unique
]
checked = 0
for i, (n, k, c, p, absent, hot, dtype) in enumerate(CASES):
    gen = torch.Generator().manual_seed(i)
    rows = torch.randint(0, p, (n, k), generator=gen)
    rows = torch.where(torch.rand(n, k, generator=gen) < hot, torch.zeros_like(rows), rows)
    rows = torch.where(torch.rand(n, k, generator=gen) < absent, torch.full_like(rows, -1), rows)
    rows = rows.to(dtype)
    pool, grad = torch.randn(p, c, generator=gen), torch.randn(n, k * c, generator=gen)
    out = torch.full((n, k * c), float("nan"))
    tk.gather(pool, rows, out=out)
    assert torch.equal(out, reference.gather(pool, rows)), f"gather case {i}"
    for name in ("sgd", "rowwise_adagrad"):
        opt = SparseOptimConfig(name=name, lr=0.1)
        state = torch.rand(p, generator=gen) if name != "sgd" else torch.empty(0)
        runs = []
        for _ in range(2):
            p1, s1 = pool.clone(), state.clone()
            norms = torch.full((n, k), float("nan"))
            tk.backward_update(p1, s1, rows, grad, opt, norms=norms)
            runs.append((p1, s1, norms))
        p2, s2 = pool.clone(), state.clone()
        n2 = reference.backward_update(p2, s2, rows, grad, opt)
        (p1, s1, n1), (p3, s3, n3) = runs
        where = f"case {i} {name}"
        assert torch.equal(p1, p3) and torch.equal(s1, s3) and torch.equal(n1, n3), where
        torch.testing.assert_close(p1, p2, rtol=1e-5, atol=1e-5, msg=where)
        torch.testing.assert_close(s1, s2, rtol=1e-5, atol=1e-5, msg=where)
        torch.testing.assert_close(n1, n2, rtol=1e-5, atol=1e-6, msg=where)
        if n and absent < 1:
            assert not torch.equal(p1, pool), where
        checked += 1
try:
    tk.gather(torch.zeros(3, 12), torch.tensor([[0], [3]]))
    raise AssertionError("an out-of-range row must raise")
except ValueError as e:
    assert "rows[1] = 3 is out of range" in str(e), e
print("CHECKED", checked)
'''


def run_interpreted(args, timeout=600):
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    return subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout)


def test_triton_kernels_match_reference_under_interpreter():
    out = run_interpreted(["-c", CHECK])
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-4000:]
    assert "CHECKED 12" in out.stdout


def test_gpu_check_smoke_mode_runs_under_interpreter(tmp_path):
    report = tmp_path / "gpu_check.md"
    out = run_interpreted(["scripts/gpu_check.py", "--device", "cpu", "--interpret", "--tiny",
                           "--tune", "--out", str(report)])
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-4000:]
    text = report.read_text()
    assert "## Correctness" in text and "FAIL" not in text and "ERROR" not in text
    assert text.count("| ok |") == 10
    for row in ("| copy | tensor.copy_", "| gather | triton | 1 |", "| update | triton sgd | 4 |",
                "| lookup+update | triton rowwise_adagrad |", "## Update tile sweep"):
        assert row in text, row
    assert out.stdout.rstrip().endswith(text.rstrip().splitlines()[-1])  # the table comes last
