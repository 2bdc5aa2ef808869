"""freq_filter: T=1 is uniform, the weights fit the budget, rare ids share one OOV row per table."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fiited.errors import BudgetInfeasible
from fiited.interface import TableSpec
from fiited.optim import SparseOptimConfig
from fiited.registry import build_method
from ledger_check import real_bytes

TABLES = [TableSpec("small", 5), TableSpec("mid", 40), TableSpec("big", 300)]
DIM = 8


def skewed_ids(rows: int, seed: int = 0, cover: bool = False) -> torch.Tensor:
    """Zipf-like ids per table (many ids rare or unseen); ``cover`` adds every id once."""
    g = torch.Generator().manual_seed(seed)
    cols = []
    for t in TABLES:
        p = 1.0 / torch.arange(1, t.num_rows + 1, dtype=torch.float64) ** 1.2
        col = torch.multinomial(p, rows, replacement=True, generator=g)
        if cover:
            col = torch.cat([torch.arange(t.num_rows), col[: rows - t.num_rows]])
        cols.append(col)
    return torch.stack(cols, 1).to(torch.int32)


def make(train_ids, budget=0.25, opt=None, seed=0, **kw):
    emb = build_method({"name": "freq_filter", "budget": budget, **kw}, TABLES, DIM,
                       opt or SparseOptimConfig(), seed=seed)
    emb.prepare(train_ids.numpy())
    return emb


def counts_of(ids):
    offs = torch.tensor([0, 5, 45])
    return torch.bincount((ids.long() + offs).flatten(), minlength=345)


@pytest.mark.parametrize("opt_name", ["sgd", "rowwise_adagrad"])
def test_threshold_one_trains_exactly_like_uniform(opt_name):
    train = skewed_ids(2000, cover=True)           # every id seen: T=1 keeps all, no OOV row
    opt = SparseOptimConfig(name=opt_name, lr=0.1)
    ff = make(train, budget=1.0, opt=opt, seed=3)
    uni = build_method({"name": "uniform", "budget": 1.0}, TABLES, DIM, opt, seed=3)
    assert ff.threshold == 1 and bool((ff.oov_row < 0).all())
    assert torch.equal(ff.pool, uni.pool)
    torch.manual_seed(0)
    head = nn.Linear(len(TABLES) * DIM, 1)
    g = torch.Generator().manual_seed(5)
    for step in range(20):
        ids = train[torch.randint(0, len(train), (64,), generator=g)]
        y = torch.randint(0, 2, (64,), generator=g).float()
        losses = []
        for emb in (ff, uni):
            out = head(emb(ids).flatten(1)).squeeze(1)
            loss = F.binary_cross_entropy_with_logits(out, y)
            head.zero_grad()
            loss.backward()
            losses.append(loss.item())
        assert losses[0] == losses[1], step
    assert torch.equal(ff.pool, uni.pool) and torch.equal(ff.opt_state, uni.opt_state)


@pytest.mark.parametrize("scope", ["weights", "total"])
@pytest.mark.parametrize("budget", [1.0, 0.5, 0.25, 1 / 16])
def test_weights_fit_the_budget_and_the_threshold_is_the_smallest_that_does(scope, budget):
    train = skewed_ids(3000)
    emb = make(train, budget=budget, budget_scope=scope)
    mem = emb.memory()
    counts = counts_of(train)
    assert mem.utility == counts.numel() * 8                   # the counting pass, in the ledger
    assert mem.total == real_bytes(emb) + mem.utility
    bound = mem.weights if scope == "weights" else mem.total - mem.utility
    cap = (int(budget * 345) * DIM * 4 if scope == "weights" else budget * mem.uniform_total)
    assert bound <= cap
    kept = int((counts >= emb.threshold).sum())
    assert len(emb.keys) == kept and emb.pool.shape[0] == kept + int((emb.oov_row >= 0).sum())
    if emb.threshold > 1:                                       # one lower would not fit
        with pytest.raises(BudgetInfeasible, match="threshold"):
            make(train, budget=budget, budget_scope=scope, threshold=emb.threshold - 1)
    emb.on_step(1)
    assert emb.memory().utility == 0 and emb.memory().total == real_bytes(emb)


def test_rare_ids_share_one_oov_row_per_table():
    train = skewed_ids(3000)
    emb = make(train, budget=0.25, opt=SparseOptimConfig(name="sgd", lr=0.5))
    t = emb.threshold
    assert t > 1
    counts = counts_of(train)
    offs = [0, 5, 45]
    rare = {f: [i for i in range(TABLES[f].num_rows) if counts[offs[f] + i] < t]
            for f in range(3)}
    assert len(rare[1]) >= 2 and len(rare[2]) >= 2
    ids = torch.zeros(4, 3, dtype=torch.int64)
    ids[:, 1] = torch.tensor(rare[1][:2] * 2)
    ids[:, 2] = torch.tensor(rare[2][:2] * 2)
    rows = emb.rows_of(ids)
    assert rows[0, 1] == rows[1, 1] == emb.oov_row[1]             # one row for a table's rare ids
    assert rows[0, 2] == rows[1, 2] == emb.oov_row[2] != emb.oov_row[1]   # another per table
    kept = torch.nonzero(counts[45:] >= t).squeeze(1)[:5]
    krows = emb.rows_of(torch.stack([torch.zeros(5, dtype=torch.long),
                                     torch.zeros(5, dtype=torch.long), kept], 1))[:, 2]
    assert len(set(krows.tolist())) == 5 and not (krows == emb.oov_row[2]).any()
    # training one rare id of 'big' moves every rare id of 'big', and nothing of 'mid'
    before = emb(ids).detach()
    emb(ids[:1]).select(1, 2).sum().backward()
    after = emb(ids).detach()
    assert not torch.equal(after[1, 2], before[1, 2]) and torch.equal(after[1, 2], after[0, 2])
    assert torch.equal(after[:, 1], before[:, 1])


def test_clear_errors():
    train = skewed_ids(500)
    with pytest.raises(BudgetInfeasible, match="one OOV row per table"):
        make(train, budget=0.001)
    with pytest.raises(ValueError, match="method.budget_scope"):
        make(train, budget_scope="rows")
    emb = build_method({"name": "freq_filter", "budget": 0.5}, TABLES, DIM, SparseOptimConfig())
    with pytest.raises(RuntimeError, match="prepare"):
        emb(train[:2].long())
