"""Utilities against an obviously-correct reference (Python loops), decay and renormalisation."""
import math

import pytest
import torch

from fiited import SparseOptimConfig, TableSpec, build_method
from fiited.utility import ChunkUtility


def reference_utilities(stream, rows, k, kind, gamma, decay_per, event_steps):
    """u <- gamma*u + contribution each step (or x gamma at events), in plain Python floats."""
    u = [[0.0] * k for _ in range(rows)]
    for step, (ids, norms) in enumerate(stream, start=1):
        if decay_per == "step":
            u = [[gamma * x for x in row] for row in u]
        seen = {}
        for i, r in enumerate(ids.tolist()):
            seen.setdefault(r, []).append(norms[i].tolist())
        for r, occ in seen.items():
            a = len(occ)
            for j in range(k):
                s = sum(o[j] for o in occ)
                u[r][j] += {"freq": a, "grad": s / a, "freq_grad": s}[kind]
        if step in event_steps and decay_per == "event":
            u = [[gamma * x for x in row] for row in u]
    return torch.tensor(u)


def random_stream(steps, rows, k, n, seed):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(steps):
        ids = torch.randint(0, rows, (n,), generator=g)
        out.append((ids, torch.rand(n, k, generator=g) * 3))
    return out


@pytest.mark.parametrize("kind", ["freq", "grad", "freq_grad"])
@pytest.mark.parametrize("gamma,decay_per", [(0.9, "step"), (0.5, "step"), (1.0, "step"),
                                              (0.98, "event")])
def test_utilities_match_the_reference_across_events(kind, gamma, decay_per):
    rows, k, steps = 12, 3, 40
    stream = random_stream(steps, rows, k, n=9, seed=hash((kind, gamma)) % 1000)
    events = {7, 15, 16, 33}
    # A tiny limit forces renormalisations between events too.
    util = ChunkUtility(rows, k, kind, gamma, decay_per, renorm_limit=4.0)
    for step, (ids, norms) in enumerate(stream, start=1):
        util.accumulate(ids, norms)
        util.advance()
        if step in events:
            got = util.values().clone()
            util.event_decay()
            want = reference_utilities(stream[:step], rows, k, kind, gamma, decay_per,
                                       {s for s in events if s < step})
            torch.testing.assert_close(got, want, rtol=2e-5, atol=1e-6)
    want = reference_utilities(stream, rows, k, kind, gamma, decay_per, events)
    torch.testing.assert_close(util.values(), want, rtol=2e-5, atol=1e-6)
    if decay_per == "step" and gamma < 0.95:
        assert util.renormalisations > len(events)   # renormalisation was exercised


def test_decay_costs_nothing_for_untouched_rows():
    """The stored (scaled) value of a row not in the batch does not change from step to step."""
    util = ChunkUtility(100, 2, "freq_grad", 0.9, "step")
    util.accumulate(torch.tensor([3, 50]), torch.ones(2, 2))
    util.advance()
    before = util.util.clone()
    util.accumulate(torch.tensor([3]), torch.ones(1, 2))
    util.advance()
    assert torch.equal(util.util[4:], before[4:])
    assert torch.equal(util.util[50], before[50])
    # ... while the true value decays exactly.
    assert util.values()[50].tolist() == pytest.approx([0.9, 0.9])


def test_scale_never_grows_past_the_limit_over_a_long_run():
    util = ChunkUtility(4, 1, "freq", 0.5, "step", renorm_limit=1e6)
    for _ in range(500):
        util.accumulate(torch.tensor([0]), torch.ones(1, 1))
        util.advance()
        assert util._scale() <= 1e6
    assert math.isfinite(float(util.util.max()))
    assert float(util.values()[0, 0]) == pytest.approx(2.0)      # sum of 0.5^j


def test_bad_utility_settings_name_the_key():
    with pytest.raises(ValueError, match="method.utility"):
        ChunkUtility(3, 1, "clicks")
    with pytest.raises(ValueError, match="method.decay_per"):
        ChunkUtility(3, 1, "freq", 0.9, "epoch")
    with pytest.raises(ValueError, match="method.gamma"):
        ChunkUtility(3, 1, "freq", 1.5)


def test_method_feeds_per_occurrence_gradient_norms_of_every_chunk():
    """Wiring: what reaches the utility is the norm of each chunk's slice of dL/d(output),
    for absent chunks too."""
    tables = [TableSpec("a", 6), TableSpec("b", 4)]
    m = build_method({"name": "fiited", "budget": 0.25, "budget_scope": "weights", "num_chunks": 2, "gamma": 0.5,
                      "first_access_alloc": False}, tables, 4, SparseOptimConfig(name="sgd"))
    assert int((m.store.addr >= 0).sum()) == 0                  # everything absent
    ids = torch.tensor([[1, 0], [1, 3], [5, 3]])
    grad = torch.randn(3, 2, 4, generator=torch.Generator().manual_seed(0))
    m(ids).backward(grad)
    m.on_step(1)
    want = torch.zeros(10, 2)
    for b in range(3):
        for f in range(2):
            r = int(ids[b, f]) + (0 if f == 0 else 6)
            want[r] += grad[b, f].view(2, 2).norm(dim=1)
    torch.testing.assert_close(m.utility.values(), want)
    m(ids).backward(grad)
    m.on_step(2)
    torch.testing.assert_close(m.utility.values(), want * 1.5)
