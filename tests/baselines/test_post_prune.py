"""Prune after training: uniform while training, the top chunks by score after, honest ledger."""
import pytest
import torch
import torch.nn.functional as F

from fiited.interface import TableSpec
from fiited.optim import SparseOptimConfig
from fiited.registry import build_method
from ledger_check import real_bytes

TABLES = [TableSpec("a", 5), TableSpec("b", 30), TableSpec("c", 65)]
ROWS = 100
DIM = 8


def make(budget=0.25, opt=None, seed=0, **kw):
    return build_method({"name": "post_prune", "budget": budget, **kw}, TABLES, DIM,
                        opt or SparseOptimConfig(name="sgd", lr=0.1), seed=seed)


def all_ids() -> torch.Tensor:
    """[ROWS, F]: column f walks table f's ids (wrapping), so every row is read once."""
    return torch.stack([torch.arange(ROWS) % t.num_rows for t in TABLES], 1)


def full_table(emb) -> torch.Tensor:
    """Every row as the model reads it, [ROWS, D], in global row order."""
    ids = all_ids()
    out = emb(ids)
    return torch.cat([out[:t.num_rows, f] for f, t in enumerate(TABLES)]).detach()


def train(emb, steps=6, seed=0):
    gen = torch.Generator().manual_seed(seed)
    target = torch.randn(len(TABLES) * DIM, generator=gen)
    for _ in range(steps):
        ids = torch.stack([torch.randint(0, t.num_rows, (24,), generator=gen) for t in TABLES], 1)
        (emb(ids).flatten(1) @ target).sigmoid().sum().backward()
        emb.on_step(0)


@pytest.mark.parametrize("score", ["magnitude", "utility"])
@pytest.mark.parametrize("chunks", [1, 4])
def test_training_ledger_is_uniform_and_final_ledger_is_real(score, chunks):
    opt = SparseOptimConfig()
    emb = make(0.25, opt=opt, score=score, chunks=chunks)
    uniform = build_method({"name": "uniform"}, TABLES, DIM, opt, seed=0).memory()
    mem = emb.memory()
    util = ROWS * chunks * 4 if score == "utility" else 0
    assert (mem.weights, mem.optimizer, mem.index) == (uniform.weights, uniform.optimizer, 0)
    assert mem.utility == util and mem.total == uniform.total + util
    assert mem.total == real_bytes(emb)
    train(emb)
    metrics = emb.on_train_end()
    final = emb.memory()
    assert final.total == real_bytes(emb)
    assert final.weights <= 0.25 * final.uniform_weights
    assert final.weights == int(0.25 * ROWS * chunks) * (DIM // chunks) * 4
    assert final.index == ROWS * chunks * 4 and final.utility == 0
    assert final.optimizer == int(0.25 * ROWS * chunks) * 4
    assert sum(final.per_table.values()) == final.total
    assert metrics["mem/pre_prune_total_bytes"] == mem.total
    assert metrics["mem/final_total_bytes"] == final.total < mem.total
    assert metrics["prune/kept_chunks"] == int(0.25 * ROWS * chunks)
    assert emb.on_train_end() == metrics, "a second call must not prune again"


@pytest.mark.parametrize("chunks", [1, 2, 4])
@pytest.mark.parametrize("scope", ["global", "per_table"])
def test_kept_set_is_the_top_by_magnitude_and_the_rest_reads_zero(chunks, scope):
    emb = make(0.3, chunks=chunks, scope=scope)
    train(emb)
    before = full_table(emb)
    c = DIM // chunks
    score = before.view(ROWS, chunks, c).norm(dim=2)
    emb.on_train_end()
    after = full_table(emb).view(ROWS, chunks, c)
    kept = (after != 0).any(dim=2)
    expected = torch.zeros(ROWS * chunks, dtype=torch.bool)
    if scope == "global":
        expected[torch.topk(score.flatten(), int(0.3 * ROWS * chunks)).indices] = True
    else:
        start = 0
        for t in TABLES:
            part = score[start:start + t.num_rows].flatten()
            idx = torch.topk(part, int(0.3 * t.num_rows * chunks)).indices
            expected[start * chunks + idx] = True
            start += t.num_rows
    assert torch.equal(kept.flatten(), expected)
    old = before.view(ROWS, chunks, c)
    assert torch.equal(after[kept], old[kept]), "kept chunks keep their trained values"
    assert torch.all(after[~kept] == 0)
    dims = emb.dims()
    assert sum(int((d * torch.arange(DIM + 1)).sum()) for d in dims.values()) == int(kept.sum()) * c


def test_utility_is_the_sum_of_per_occurrence_chunk_grad_norms_and_picks_the_top():
    chunks = 2
    emb = make(0.2, chunks=chunks, score="utility")
    gen = torch.Generator().manual_seed(3)
    target = torch.randn(len(TABLES) * DIM, generator=gen)
    want = torch.zeros(ROWS, chunks)
    offsets = emb.table_offsets
    for _ in range(4):
        ids = torch.stack([torch.randint(0, t.num_rows, (16,), generator=gen) for t in TABLES], 1)
        out = emb(ids)
        out.retain_grad()
        (out.flatten(1) @ target).tanh().sum().backward()
        norms = out.grad.reshape(-1, chunks, DIM // chunks).norm(dim=2)
        want.index_add_(0, (ids + offsets).reshape(-1), norms)
    assert torch.allclose(emb.utility, want, atol=1e-6)
    assert (want == 0).any() and (want > 0).any()
    mag = full_table(emb).view(ROWS, chunks, -1).norm(dim=2)
    emb.on_train_end()
    kept = (full_table(emb).view(ROWS, chunks, -1) != 0).any(dim=2).flatten()
    # Ties (rows never seen: utility 0) are broken by magnitude.
    key = want.flatten() * 1e6 + mag.flatten()
    expected = torch.zeros_like(kept)
    expected[torch.topk(key, int(0.2 * ROWS * chunks)).indices] = True
    assert torch.equal(kept, expected)


@pytest.mark.parametrize("chunks", [1, 4])
def test_budget_one_changes_nothing(chunks):
    emb = make(1.0, chunks=chunks)
    train(emb)
    ids = torch.stack([torch.randint(0, t.num_rows, (50,)) for t in TABLES], 1)
    labels = torch.randint(0, 2, (50,)).float()
    w = torch.randn(len(TABLES) * DIM)
    with torch.no_grad():
        before = F.binary_cross_entropy_with_logits(emb(ids).flatten(1) @ w, labels)
        emb.on_train_end()
        after = F.binary_cross_entropy_with_logits(emb(ids).flatten(1) @ w, labels)
    assert emb.pruned and float(before) == float(after)


def test_trains_exactly_like_uniform_before_pruning():
    opt = SparseOptimConfig(name="rowwise_adagrad", lr=0.1)
    ours = make(0.25, opt=opt, seed=7, score="utility", chunks=2)
    uniform = build_method({"name": "uniform"}, TABLES, DIM, opt, seed=7)
    train(ours)
    train(uniform)
    assert torch.equal(ours.pool, uniform.pool)
    assert torch.equal(ours.opt_state, uniform.opt_state)


@pytest.mark.parametrize("opt_name", ["sgd", "rowwise_adagrad"])
@pytest.mark.parametrize("chunks", [1, 2])
def test_finetune_keeps_the_mask_and_equals_masked_autograd(chunks, opt_name):
    """Fine-tuning = nn.Embedding with the pruning mask on weights and grads; row-wise Adagrad
    continues with one accumulator per kept chunk, started from its row's."""
    opt = SparseOptimConfig(name=opt_name, lr=0.1)
    emb = make(0.3, chunks=chunks, opt=opt)
    train(emb)
    row_acc = emb.opt_state.clone()
    emb.on_train_end()
    assert emb.finetune_steps == 0
    c = DIM // chunks
    weights = full_table(emb).clone().requires_grad_(True)
    kept = (weights.detach().view(ROWS, chunks, c) != 0).any(2)
    mask = kept.unsqueeze(2).expand(ROWS, chunks, c).reshape(ROWS, DIM).float()
    acc = row_acc.unsqueeze(1).repeat(1, chunks) if opt_name != "sgd" else None
    gen = torch.Generator().manual_seed(9)
    target = torch.randn(len(TABLES) * DIM, generator=gen)
    for _ in range(5):
        ids = torch.stack([torch.randint(0, t.num_rows, (24,), generator=gen) for t in TABLES], 1)
        (emb(ids).flatten(1) @ target).sigmoid().sum().backward()
        ref = F.embedding(ids + emb.table_offsets, weights * mask)
        (ref.flatten(1) @ target).sigmoid().sum().backward()
        with torch.no_grad():
            g = (weights.grad * mask).view(ROWS, chunks, c)
            if opt_name == "sgd":
                step = 0.1 * g
            else:
                touched = (g != 0).any(2)
                acc += torch.where(touched, g.pow(2).mean(2), 0.0)
                step = 0.1 * g / (acc.sqrt() + opt.eps).unsqueeze(2)
            weights -= step.reshape(ROWS, DIM)
            weights.grad = None
    now = full_table(emb)
    assert torch.all(now[mask == 0] == 0)
    assert (now - weights.detach()).abs().max() < 1e-5
    assert (now - full_table(make(0.3, chunks=chunks, opt=opt))).abs().max() > 1e-3
    if acc is not None:
        assert torch.allclose(emb.opt_state, acc[kept], atol=1e-6)
    assert emb.memory().total == real_bytes(emb)


def test_pruned_state_dict_resumes_in_a_fresh_module():
    emb = make(0.25, chunks=2, opt=SparseOptimConfig())
    train(emb)
    emb.on_train_end()
    fresh = make(0.25, chunks=2, opt=SparseOptimConfig(), seed=1)
    fresh.load_state_dict(emb.state_dict())
    assert fresh.pruned and torch.equal(full_table(fresh), full_table(emb))
    assert fresh.memory().total == emb.memory().total


@pytest.mark.parametrize("key, value", [("score", "random"), ("scope", "per_row"),
                                        ("chunks", 3), ("finetune_steps", -1)])
def test_bad_settings_are_refused_by_name(key, value):
    with pytest.raises(ValueError, match=f"method.{key}"):
        make(0.5, **{key: value})


def test_finetune_steps_is_exposed_for_the_harness():
    assert make(0.5, finetune_steps=12).finetune_steps == 12
