"""The Triton fused FIITED step (``triton_fused``) under TRITON_INTERPRET=1 against the unfused
reference: gather through the entry table, the update and the utility credit, with rows
without an entry, absent chunks and duplicates, both accumulator modes (fresh subprocess: the
interpreter must be on before triton is first imported)."""
import importlib.util

import pytest

from tests.fiited.test_kernels_triton import run_interpreted

pytestmark = pytest.mark.skipif(importlib.util.find_spec("triton") is None,
                                reason="triton is not installed")

CHECK = r'''
import torch
from fiited.kernels import reference, triton_fused as tf
from fiited.optim import SparseOptimConfig

checked = 0
for i, (n, k, c, e, p) in enumerate([(40, 1, 4, 9, 9), (30, 2, 4, 12, 14), (25, 4, 8, 10, 22)]):
    g = torch.Generator().manual_seed(i)
    addr = torch.full((e, k), -1, dtype=torch.int64)
    flat = torch.randperm(e * k, generator=g)[:p]
    addr.view(-1)[flat] = torch.randperm(p, generator=g)
    addr.view(-1)[torch.rand(e * k, generator=g) < 0.3] = -1          # absent chunks
    addr = addr.to(torch.int32)
    entries = torch.randint(0, e, (n,), generator=g)
    entries[torch.rand(n, generator=g) < 0.2] = -1                     # rows without an entry
    entries[: n // 4] = entries[n // 2]                                 # duplicates
    pool, grad = torch.randn(p, c, generator=g), torch.randn(n, k * c, generator=g)
    addrs = torch.where((entries >= 0).unsqueeze(1), addr[entries.clamp_min(0)].long(), -1)
    assert torch.equal(tf.fused_gather(pool, addr, entries), reference.gather(pool, addrs))
    for name, row_state, kind in [("sgd", False, "freq_grad"), ("rowwise_adagrad", False, "freq"),
                                  ("rowwise_adagrad", True, "freq_grad")]:
        if row_state and k == 1:
            continue
        opt = SparseOptimConfig(name=name, lr=0.1)
        states = e if row_state else p
        state = torch.rand(states, generator=g) if name != "sgd" else torch.empty(0)
        util = torch.rand(e, k, generator=g)
        p1, s1, u1 = pool.clone(), state.clone(), util.clone()
        tf.fused_update(p1, s1, addr, entries, grad, opt, row_state, u1, 0.5, kind)
        p2, s2, u2 = pool.clone(), state.clone(), util.clone()
        norms = reference.backward_update(p2, s2, addrs, grad, opt,
                                          entries if row_state else None)
        keep = entries >= 0
        credit = norms[keep] * 0.5 if kind == "freq_grad" else torch.full_like(norms[keep], 0.5)
        u2.index_put_((entries[keep],), credit, accumulate=True)
        where = f"case {i} {name} row_state={row_state} {kind}"
        torch.testing.assert_close(p1, p2, rtol=1e-5, atol=1e-6, msg=where)
        torch.testing.assert_close(s1, s2, rtol=1e-5, atol=1e-6, msg=where)
        torch.testing.assert_close(u1, u2, rtol=1e-5, atol=1e-6, msg=where)
        assert not torch.equal(p1, pool) and not torch.equal(u1, util), where
        checked += 1
print("CHECKED", checked)
'''


def test_triton_fused_step_matches_reference_under_interpreter():
    out = run_interpreted(["-c", CHECK])
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-4000:]
    assert "CHECKED 8" in out.stdout


WIRED = r'''
import torch
from fiited import SparseOptimConfig, TableSpec, build_method
from fiited.kernels import fused

fused._kernels_for = lambda pool: "triton"  # the CUDA branch, on CPU tensors (interpreter)
tables = [TableSpec("a", 60), TableSpec("b", 200), TableSpec("c", 5)]
checked = 0
for k, accumulator in [(2, "row"), (4, "chunk")]:
    opt = SparseOptimConfig(name="rowwise_adagrad", lr=0.1, accumulator=accumulator)
    models = [build_method({"name": "fiited", "budget": 0.3, "budget_scope": "weights",
                            "index": "hashed", "num_chunks": k,
                            "schedule": {"warmup": [2], "interval": 3}}, tables, 8, opt, seed=1)
              for _ in range(2)]
    g = torch.Generator().manual_seed(k)
    data = [(torch.stack([torch.randint(0, t.num_rows, (48,), generator=g) for t in tables], 1),
             torch.randn(48, 3, 8, generator=g)) for _ in range(5)]
    outs = []
    for m, on in zip(models, (False, True)):
        fused.set_enabled(on)
        seen = []
        for step, (ids, w) in enumerate(data, start=1):
            out = m(ids)
            (out * w).sum().backward()
            m.on_step(step)
            seen.append(out.detach())
        outs.append(seen)
    for a, b in zip(*outs):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    ref, new = (dict(m.state_dict()) for m in models)
    for name in ("store.pool", "store.opt_state", "utility.util", "store.addr"):
        torch.testing.assert_close(ref[name], new[name], rtol=1e-5, atol=1e-6, msg=name)
    assert models[1].events >= 1
    checked += 1
print("CHECKED", checked)
'''


def test_fused_path_through_the_triton_branch_matches_unfused_training():
    out = run_interpreted(["-c", WIRED])
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-4000:]
    assert "CHECKED 2" in out.stdout
