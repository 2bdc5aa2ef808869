"""FIITED as an EmbeddingMethod: equal to uniform at full capacity, resume, budgets, configs."""
import dataclasses
import io
import math
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from fiited import SparseOptimConfig, TableSpec, build_method
from fiited.memory import tensor_bytes
from fiited.method import FiitedConfig
from fiited.registry import make_config
from fiited.store import ChunkStore

CONF = Path(__file__).resolve().parents[2] / "conf" / "method"
TABLES = [TableSpec("a", 50), TableSpec("b", 200), TableSpec("c", 7)]
SGD = SparseOptimConfig(name="sgd", lr=0.1)
ADAGRAD = SparseOptimConfig(name="rowwise_adagrad", lr=0.1)


def fiited(budget=0.3, optim=ADAGRAD, tables=TABLES, dim=8, seed=0, **cfg):
    cfg.setdefault("budget_scope", "weights")       # mechanics at a given pool size
    cfg.setdefault("index", "direct")               # (defaults: test_index.py, below)
    return build_method({"name": "fiited", "budget": budget, **cfg}, tables, dim, optim, seed)


def batches(n, tables=TABLES, batch=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        ids = torch.stack([torch.randint(0, t.num_rows, (batch,), generator=g) for t in tables], 1)
        out.append((ids, torch.randn(batch, len(tables), 8, generator=g)))
    return out


# ---- equal to uniform at full capacity -------------------------------------------------------
@pytest.mark.parametrize("optim,k", [(SGD, 1), (SGD, 2), (SGD, 4), (SGD, 8), (ADAGRAD, 1)])
def test_full_capacity_trains_exactly_like_uniform(optim, k):
    uni = build_method({"name": "uniform"}, TABLES, 8, optim, seed=3)
    fii = fiited(budget=1.0, optim=optim, seed=3, num_chunks=k,
                 schedule={"warmup": [2], "interval": 3})        # events change nothing
    for step, (ids, w) in enumerate(batches(8), start=1):
        outs = []
        for m in (uni, fii):
            out = m(ids)
            (out * w).sum().backward()
            m.on_step(step)
            outs.append(out.detach())
        assert torch.equal(outs[0], outs[1])
    assert torch.equal(uni.pool, fii.store.pool.view(-1, 8))


def test_rowwise_adagrad_at_k_above_1_keeps_one_accumulator_per_chunk_by_design():
    """Row-wise Adagrad keeps one accumulator per physical row of the pool: per chunk here, so
    at K>1 the step sizes differ from uniform's per-row accumulator (documented, not a bug)."""
    uni = build_method({"name": "uniform"}, TABLES, 8, ADAGRAD, seed=3)
    fii = fiited(budget=1.0, seed=3, num_chunks=4)
    ids, w = batches(1)[0]
    for m in (uni, fii):
        (m(ids) * w).sum().backward()
    assert fii.store.opt_state.numel() == 4 * uni.opt_state.numel()
    assert not torch.allclose(uni.pool, fii.store.pool.view(-1, 8))
    # Each chunk's accumulator = mean of its squared coalesced gradient: check one row.
    rows = fii.global_rows(ids)
    r = int(rows[0, 0])
    g = torch.zeros(8)
    for b, f in (rows == r).nonzero().tolist():
        g += w[b, f]
    want = g.view(4, 2).pow(2).mean(dim=1)
    torch.testing.assert_close(fii.store.opt_state[r * 4:(r + 1) * 4], want)


# ---- resume ----------------------------------------------------------------------------------
RESUME_CONFIGS = [
    dict(num_chunks=4, sample_frac=0.5, regrow_init="random"),
    dict(num_chunks=2, pool="per_table", layout="prefix", thresholds="manual",
         manual_ratios=[0.3, 0.8], padding="projection", utility="grad", gamma=0.9),
    dict(num_chunks=4, index="hashed", index_entries=1.0, index_reserve=0.2, sample_frac=0.5,
         utility="freq", decay_per="event", gamma=0.98, regrow_init="random"),
]


@pytest.mark.parametrize("cfg", RESUME_CONFIGS)
def test_stop_and_resume_gives_the_same_numbers_as_an_uninterrupted_run(cfg):
    cfg = dict(cfg, schedule={"warmup": [2, 5, 7], "interval": 4})
    data = [(ids, torch.randint(0, 2, (64,), generator=torch.Generator().manual_seed(i)).float())
            for i, (ids, _) in enumerate(batches(12, seed=5))]

    def make(seed):
        emb = fiited(budget=0.3, seed=seed, **cfg)
        torch.manual_seed(seed)
        dense = nn.Linear(len(TABLES) * 8, 1)
        opt = torch.optim.Adagrad([*dense.parameters(), *emb.parameters()], lr=0.05)
        return emb, dense, opt

    def run(parts, start, end, log):
        emb, dense, opt = parts
        for i in range(start, end):
            ids, y = data[i]
            emb.train()
            loss = nn.functional.binary_cross_entropy_with_logits(
                dense(emb(ids).flatten(1)).squeeze(1), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            metrics = emb.on_step(i + 1)
            metrics.pop("prune/event_seconds", None)
            log.append((float(loss.detach()), metrics))

    straight, log_a = make(0), []
    run(straight, 0, 12, log_a)

    first, log_b = make(0), []
    run(first, 0, 6, log_b)
    buf = io.BytesIO()
    torch.save({k: p.state_dict() for k, p in zip("edo", first)}, buf)
    buf.seek(0)
    saved = torch.load(buf, weights_only=False)
    resumed = make(99)                                 # different seed: the state must win
    for k, part in zip("edo", resumed):
        part.load_state_dict(saved[k])
    run(resumed, 6, 12, log_b)

    assert log_a == log_b
    assert any(m for _, m in log_a[6:]), "no pruning event after the resume point"
    sa, sb = straight[0].state_dict(), resumed[0].state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        if isinstance(sa[key], torch.Tensor):
            assert torch.equal(sa[key], sb[key]), key
    resumed[0].store.check_invariants()


# ---- budgets and the ledger ------------------------------------------------------------------
@pytest.mark.parametrize("optim", [SGD, ADAGRAD])
@pytest.mark.parametrize("k,budget", [(1, 0.9), (1, 0.5), (1, 0.25), (4, 0.9), (4, 0.6)])
def test_total_scope_keeps_the_whole_ledger_within_budget(k, optim, budget):
    tables = [TableSpec("a", 3000), TableSpec("b", 500)]
    m = fiited(budget=budget, optim=optim, tables=tables, dim=16, num_chunks=k,
               budget_scope="total")
    report = m.memory()
    limit = budget * report.uniform_total
    assert report.total <= limit
    assert report.total + ChunkStore.bytes_per_chunk(16 // k, optim) > limit     # tight
    assert report.total == tensor_bytes(*m.buffers(), *m.parameters())


def test_weights_scope_sizes_the_pool_and_counts_metadata_on_top():
    m = fiited(budget=0.25, dim=8, num_chunks=4)
    rows = 257
    assert m.store.capacity == math.floor(0.25 * rows * 4)
    r = m.memory()
    assert r.weights == m.store.capacity * 2 * 4
    assert r.utility == rows * 4 * 4
    assert r.index >= rows * 4 * 4 + m.store.capacity * 4
    assert r.total == tensor_bytes(*m.buffers(), *m.parameters())
    assert r.compression == pytest.approx(r.uniform_weights / r.weights)


@pytest.mark.parametrize("k", [1, 4])
@pytest.mark.parametrize("budget", [0.25, 1 / 16, 1 / 64])
def test_hashed_index_reaches_small_total_budgets(k, budget):
    tables = [TableSpec("a", 30000), TableSpec("b", 3000)]
    m = fiited(budget=budget, tables=tables, dim=16, num_chunks=k, budget_scope="total",
               index="hashed")
    report = m.memory()
    limit = budget * report.uniform_total
    assert report.total <= limit
    assert report.total == tensor_bytes(*m.buffers(), *m.parameters())
    assert report.weights >= 0.2 * limit          # most of it is not metadata
    assert m.store.max_live == math.ceil(2.0 * m.store.capacity / k)


def test_hashed_metadata_scales_with_the_budget_not_the_vocabulary():
    tables = [TableSpec("a", 40000)]
    direct = fiited(budget=1 / 64, tables=tables, dim=16, num_chunks=4)
    hashed = fiited(budget=1 / 64, tables=tables, dim=16, num_chunks=4, index="hashed")
    assert direct.store.capacity == hashed.store.capacity
    d, h = direct.memory(), hashed.memory()
    assert d.index + d.utility > 10 * (h.index + h.utility)


def test_defaults_compare_at_equal_total_memory_with_the_index_chosen_per_table():
    """FIITED, AdaEmbed and ITEP with their defaults: the whole ledger within budget x
    uniform's total, at budgets where a direct index alone would not fit."""
    tables = [TableSpec("tiny", 4), TableSpec("mid", 3000), TableSpec("big", 20000)]
    for name in ("fiited", "adaembed", "itep"):
        for budget in (0.25, 1 / 16, 1 / 64):
            m = build_method({"name": name, "budget": budget}, tables, 16, ADAGRAD, seed=0)
            assert m.config.budget_scope == "total" and m.config.index == "auto"
            r = m.memory()
            assert r.total <= budget * r.uniform_total, (name, budget)
            assert r.total > 0.9 * budget * r.uniform_total, (name, budget)   # and uses it
            assert m.store.index.kinds[0] == "direct"
            if budget < 0.25:
                assert m.store.index.kinds[2] == "hashed"


def test_hashed_index_trains_prunes_and_drops_entries():
    tables = [TableSpec("a", 500), TableSpec("b", 80)]
    m = fiited(budget=0.05, tables=tables, num_chunks=2, index="hashed", index_entries=1.0,
               schedule={"warmup": [3, 6], "interval": 100})
    events = []
    for step, (ids, w) in enumerate(batches(8, tables=tables), start=1):
        out = m(ids)
        (out * w).sum().backward()
        metrics = m.on_step(step)
        if metrics:
            events.append(metrics)
        m.store.check_invariants()
        assert m.store.live <= m.store.max_live
    assert len(events) == 2 and events[0]["prune/live_entries"] <= m.store.max_live
    assert sum(e["prune/entries_dropped"] for e in events) > 0
    ids = torch.tensor([[r, 0] for r in range(500)])
    m.eval()
    with torch.no_grad():
        out = m(ids)
    missing = m.store.entries_of(torch.arange(500), insert=False) < 0
    assert missing.any() and torch.equal(out[missing, 0], torch.zeros(int(missing.sum()), 8))
    counts = m.dims()["a"]
    assert int(counts.sum()) == 500 and int(counts[0]) >= int(missing.sum())


def test_total_scope_too_small_for_the_entry_table_is_a_clear_error():
    # D=16, K=4: 32 bytes/row of addresses + utilities vs 64 bytes/row of uniform (SGD).
    with pytest.raises(ValueError, match="method.budget=0.5 with method.budget_scope=total"):
        fiited(budget=0.5, budget_scope="total", optim=SGD, dim=16, num_chunks=4)
    with pytest.raises(ValueError, match="use method.index=hashed"):
        fiited(budget=0.5, budget_scope="total", optim=SGD, dim=16, num_chunks=4)


def test_dims_histograms_match_the_kept_chunks():
    m = fiited(budget=0.4, num_chunks=4, schedule={"warmup": [3], "interval": 100})
    for step, (ids, w) in enumerate(batches(4), start=1):
        (m(ids) * w).sum().backward()
        m.on_step(step)
    kept = m.store.kept_per_table()
    for t, (name, counts) in enumerate(m.dims().items()):
        assert counts.shape == (9,)
        assert int(counts.sum()) == TABLES[t].num_rows
        assert int((counts * torch.arange(9)).sum()) == int(kept[t].sum()) * 2
        assert int(counts[1::2].sum()) == 0                    # widths are multiples of C=2


# ---- training-only behaviour -----------------------------------------------------------------
def test_eval_neither_allocates_nor_updates_utilities():
    m = fiited(budget=0.5, num_chunks=2)
    ids, _ = batches(1)[0]
    m.eval()
    with torch.no_grad():
        out = m(ids)
    assert int(m.store.present().sum()) == 0 and float(m.utility.util.abs().sum()) == 0
    assert torch.equal(out, torch.zeros_like(out))
    m.train()
    m(ids).sum().backward()
    assert int(m.store.present().sum()) > 0 and float(m.utility.util.abs().sum()) > 0


def test_first_access_allocates_position_by_position_only_for_never_seen_rows():
    m = fiited(budget=0.1, num_chunks=4, tables=[TableSpec("a", 10)], dim=8)   # 4 slots
    m.utility.util[3] = 1.0                        # row 3 was seen before: no first access
    ids = torch.tensor([[1], [2], [3], [1]])
    m(ids).sum().backward()
    present = m.store.present()
    assert present[1].tolist() == [True, True, False, False]
    assert present[2].tolist() == [True, True, False, False]
    assert not present[3].any()


# ---- projection padding ----------------------------------------------------------------------
def test_projection_starts_as_zero_padding_and_learns():
    tables = [TableSpec("a", 5)]
    ms = [fiited(budget=1.0, num_chunks=4, layout="prefix", tables=tables, padding=p,
                 first_access_alloc=False) for p in ("zeros", "projection")]
    for m in ms:                                   # rows 0..4 keep 0, 1, 2, 3, 4 chunks
        m.store.evict(torch.tensor([0, 1, 2, 3, 5, 6, 7, 10, 11, 15]))
    ids = torch.arange(5).unsqueeze(1)
    out_z, out_p = ms[0](ids), ms[1](ids)
    assert torch.equal(out_z, out_p)
    w = torch.randn(out_p.shape, generator=torch.Generator().manual_seed(0))
    (out_p * w).sum().backward()
    grads = [p.grad for p in ms[1].parameters()]
    assert len(grads) == 3 and all(g is not None and g.abs().sum() > 0 for g in grads)
    torch.optim.SGD(ms[1].parameters(), lr=0.5).step()
    with torch.no_grad():
        moved = ms[1](ids)
    assert not torch.equal(moved[1:4], out_z[1:4].detach())      # widths 1..3 are projected
    pool, addr = ms[1].store.pool, ms[1].store.addr
    assert torch.equal(moved[0, 0], torch.zeros(8))                # width 0 reads zeros
    assert torch.equal(moved[4, 0], pool[addr[4].long()].view(-1))  # width D passes through
    r = ms[1].memory()
    assert r.other == tensor_bytes(*ms[1].parameters()) + 8 * 8 * 4 > 0
    assert r.total == tensor_bytes(*ms[1].buffers(), *ms[1].parameters())


def test_projection_with_any_layout_compacts_kept_chunks_first():
    m = fiited(budget=1.0, num_chunks=4, padding="projection", tables=[TableSpec("a", 2)])
    m.store.evict(torch.tensor([0, 2]))            # row 0 keeps chunks 1 and 3
    m.eval()
    with torch.no_grad():
        out = m(torch.tensor([[0]]))[0, 0]
    pool = m.store.pool
    want = torch.cat([pool[1], pool[3], torch.zeros(4)])     # identity map of width 4
    assert torch.equal(out, want)


# ---- configuration ---------------------------------------------------------------------------
@pytest.mark.parametrize("bad,key", [
    ({"num_chunks": 3}, "method.num_chunks=3 does not divide"),
    ({"utility": "clicks"}, "method.utility"),
    ({"budget": 0.0}, "method.budget"),
    ({"budget": 1.5}, "method.budget"),
    ({"thresholds": "manual", "manual_ratios": [0.5, 0.5]}, "method.manual_ratios"),
    ({"thresholds": "manual", "manual_ratios": [0.5, 0.5, 2.0, 0.1]}, "method.manual_ratios"),
    ({"pool": "global"}, "method.pool"),
    ({"layout": "suffix"}, "method.layout"),
    ({"sample_frac": 0.0}, "method.sample_frac"),
    ({"index": "tree"}, "method.index"),
    ({"index": "hashed", "index_load": 0.0}, "method.index_load"),
    ({"schedule": {"warmup": [0], "interval": 5}}, "method.schedule.warmup"),
])
def test_bad_config_names_the_key(bad, key):
    with pytest.raises(ValueError, match=key.replace(".", r"\.").replace("[", r"\[")):
        build_method({"name": "fiited", **bad}, TABLES, 8, ADAGRAD)


def test_unknown_key_is_refused_by_the_schema():
    with pytest.raises(ValueError, match="num_chunk"):
        make_config({"name": "fiited", "num_chunk": 4})


@pytest.mark.parametrize("name", ["fiited", "adaembed", "itep"])
def test_yaml_exposes_every_knob_and_validates(name):
    raw = OmegaConf.load(CONF / f"{name}.yaml")
    cfg = make_config(raw)
    assert cfg.name == name
    fields = {f.name for f in dataclasses.fields(cfg)}
    assert set(raw.keys()) == fields
    assert set(raw.schedule.keys()) == {"warmup", "interval"}
    defaults = type(cfg)()
    assert cfg == defaults, "the yaml and the dataclass defaults disagree"
    assert isinstance(cfg, FiitedConfig)
