"""Quotient-remainder embeddings: sizing, exact representation, collisions, exact updates."""
import pytest
import torch
import torch.nn.functional as F

from baselines.qr import QR, QRConfig, QRPlan, split_rows
from fiited.interface import TableSpec
from fiited.optim import SparseOptimConfig
from fiited.registry import build_method
from ledger_check import real_bytes

TABLES = [TableSpec("tiny", 3), TableSpec("mid", 100), TableSpec("big", 5000)]
DIM = 8


def make(budget=0.25, combine="mult", opt=None, seed=0, tables=TABLES):
    return build_method({"name": "qr", "budget": budget, "combine": combine}, tables, DIM,
                        opt or SparseOptimConfig(name="sgd", lr=0.1), seed=seed)


@pytest.mark.parametrize("budget", [1.0, 0.5, 1 / 4, 1 / 16, 1 / 64, 0.001])
@pytest.mark.parametrize("combine", ["mult", "sum"])
def test_ledger_is_real_storage_and_within_budget(budget, combine):
    emb = make(budget, combine, opt=SparseOptimConfig())
    mem = emb.memory()
    assert mem.total == real_bytes(emb)
    assert mem.weights <= budget * mem.uniform_weights
    rows = sum(emb.plan.remainder) + sum(emb.plan.quotient)
    assert mem.weights == rows * DIM * 4 and mem.optimizer == rows * 4
    for t, m, q in zip(TABLES, emb.plan.remainder, emb.plan.quotient):
        assert m + q <= t.num_rows
        if budget == 1.0:
            assert (m, q) == (t.num_rows, 0)  # too small to gain: full
    compressed = [m < t.num_rows for t, m in zip(TABLES, emb.plan.remainder)]
    assert (budget < 1) == any(compressed)


def test_split_rows_is_collision_free_when_it_can_be():
    for n in range(2, 150):
        cost = {k: k + -(-n // k) for k in range(1, n + 1)}
        for allowance in range(1, n):
            m, q = split_rows(n, allowance)
            assert m + q <= allowance
            fits = [k for k, c in cost.items() if c <= allowance]
            if fits:  # the largest collision-free m, and its quotient covers every id
                assert m == max(fits) and m * q >= n


def test_pairs_are_unique_so_the_split_loses_nothing():
    emb = make(0.25)
    assert emb.plan.remainder[0] < 3, "'tiny' gets 1 row: it collides, the others must not"
    for f, t in list(enumerate(TABLES))[1:]:
        ids = torch.zeros(t.num_rows, len(TABLES), dtype=torch.int64)
        ids[:, f] = torch.arange(t.num_rows)
        rem, quo = emb.split(ids)
        pairs = torch.stack([rem[:, f], quo[:, f]], 1)
        assert torch.unique(pairs, dim=0).shape[0] == t.num_rows, t.name


@pytest.mark.parametrize("combine", ["mult", "sum"])
def test_represents_any_table_when_remainder_covers_it(combine):
    """m_f >= n_f (no collisions possible): R = target, Q = identity element gives any table."""
    tables = [TableSpec("a", 6), TableSpec("b", 9)]
    plan = QRPlan(remainder=(6, 12), quotient=(1, 1))
    emb = QR(tables, DIM, SparseOptimConfig(), QRConfig(combine=combine), plan=plan)
    target = torch.randn(15, DIM, generator=torch.Generator().manual_seed(0))
    emb.rem_pool.zero_()
    emb.rem_pool[0:6] = target[:6]
    emb.rem_pool[6:15] = target[6:]
    emb.quo_pool.fill_(1.0 if combine == "mult" else 0.0)
    ids = torch.stack([torch.arange(9) % 6, torch.arange(9)], 1)
    out = emb(ids)
    assert torch.equal(out[:, 0], target[:6][ids[:, 0]])
    assert torch.equal(out[:, 1], target[6:])


def test_represents_a_compositional_table_exactly():
    """With a real split (m < n, m*Q >= n) every table of the form R[r] * Q[q] is exact."""
    tables = [TableSpec("a", 100)]
    emb = make(0.3, tables=tables)
    m, q = emb.plan.remainder[0], emb.plan.quotient[0]
    assert 1 < m < 100 and m * q >= 100
    g = torch.Generator().manual_seed(1)
    r_t, q_t = torch.randn(m, DIM, generator=g), torch.randn(q, DIM, generator=g)
    emb.rem_pool.copy_(r_t)
    emb.quo_pool.copy_(q_t)
    ids = torch.arange(100).unsqueeze(1)
    assert torch.equal(emb(ids)[:, 0], r_t[ids[:, 0] % m] * q_t[ids[:, 0] // m])


def test_folded_quotient_collides_as_documented():
    emb = make(0.02, tables=[TableSpec("big", 5000)])  # 100 rows < 2*sqrt(5000)
    m, q = emb.plan.remainder[0], emb.plan.quotient[0]
    assert m * q < 5000
    a = 7
    b = a + m * q  # same id mod m, same (id // m) mod Q
    out = emb(torch.tensor([[a], [b], [a + 1]]))
    assert torch.equal(out[0], out[1]) and not torch.equal(out[0], out[2])


def test_budget_one_is_uniform():
    ids = torch.tensor([[0, 5, 4999], [2, 99, 0]])
    uniform = build_method({"name": "uniform"}, TABLES, DIM, SparseOptimConfig(), seed=4)
    assert torch.equal(make(1.0, seed=4)(ids), uniform(ids))


def test_bad_combine_is_refused():
    with pytest.raises(ValueError, match="method.combine"):
        make(0.5, combine="concat")


@pytest.mark.parametrize("combine", ["mult", "sum"])
@pytest.mark.parametrize("opt_name", ["sgd", "rowwise_adagrad"])
def test_fused_updates_equal_autograd_through_two_embeddings(combine, opt_name):
    opt = SparseOptimConfig(name=opt_name, lr=0.05)
    emb = make(0.2, combine, opt=opt, seed=1)
    assert emb.plan.quotient[0] == 0 and emb.plan.quotient[2] > 0  # both kinds of table
    # Leave the quotient tables away from their init so the product's chain rule matters.
    emb.quo_pool.add_(torch.randn(emb.quo_pool.shape, generator=torch.Generator().manual_seed(5)))
    r_w = emb.rem_pool.clone().requires_grad_(True)
    q_w = emb.quo_pool.clone().requires_grad_(True)
    accs = {"r": torch.zeros(r_w.shape[0]), "q": torch.zeros(q_w.shape[0])}
    gen = torch.Generator().manual_seed(0)
    target = torch.randn(len(TABLES) * DIM, generator=gen)
    for _ in range(5):
        ids = torch.stack([torch.randint(0, t.num_rows, (32,), generator=gen) for t in TABLES], 1)
        (emb(ids).flatten(1) @ target).sigmoid().sum().backward()
        rem, quo = emb.split(ids)
        er = F.embedding(rem, r_w)
        eq = F.embedding(quo.clamp_min(0), q_w) * (quo >= 0).unsqueeze(-1)
        if combine == "sum":
            out = er + eq
        else:
            out = er * torch.where((quo >= 0).unsqueeze(-1), eq, torch.ones_like(eq))
        (out.flatten(1) @ target).sigmoid().sum().backward()
        with torch.no_grad():
            for key, w in (("r", r_w), ("q", q_w)):
                g = w.grad
                if opt_name == "sgd":
                    w -= 0.05 * g
                else:
                    touched = g.abs().sum(1) > 0
                    accs[key] += torch.where(touched, g.pow(2).mean(1), 0.0)
                    w -= 0.05 * g / (accs[key].sqrt() + opt.eps).unsqueeze(1)
                w.grad = None
    assert (emb.rem_pool - r_w).abs().max() < 1e-5
    assert (emb.quo_pool - q_w).abs().max() < 1e-5
    assert (emb.quo_pool - 1.0).abs().max() > 1e-2
