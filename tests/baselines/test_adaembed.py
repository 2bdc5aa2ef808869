"""AdaEmbed = FIITED's store at K=1, freq x grad utility, one shared pool normalised per table."""
import pytest
import torch

from fiited import SparseOptimConfig, TableSpec, build_method

TABLES = [TableSpec("small", 30), TableSpec("large", 400)]


def run(m, steps, seed=0, batch=64):
    g = torch.Generator().manual_seed(seed)
    metrics = []
    for step in range(1, steps + 1):
        ids = torch.stack([torch.randint(0, t.num_rows, (batch,), generator=g) for t in TABLES], 1)
        out = m(ids)
        (out * torch.randn(out.shape, generator=g)).sum().backward()
        metrics.append(m.on_step(step))
    return metrics


@pytest.mark.parametrize("optim", ["sgd", "rowwise_adagrad"])
def test_full_budget_trains_exactly_like_uniform(optim):
    opt = SparseOptimConfig(name=optim, lr=0.1)
    uni = build_method({"name": "uniform"}, TABLES, 8, opt, seed=2)
    ada = build_method({"name": "adaembed", "budget": 1.0, "budget_scope": "weights",
                        "schedule": {"warmup": [2], "interval": 3}}, TABLES, 8, opt, seed=2)
    run(uni, 6)
    run(ada, 6)
    assert torch.equal(uni.pool, ada.store.pool)


def test_prunes_whole_rows_in_one_shared_pool():
    m = build_method({"name": "adaembed", "budget": 0.2, "budget_scope": "weights", "sample_frac": 0.5,
                      "schedule": {"warmup": [3, 6], "interval": 100}},
                     TABLES, 8, SparseOptimConfig(), seed=0)
    assert m.num_chunks == 1 and m.store.num_groups == 1
    assert m.store.capacity == int(0.2 * 430)
    metrics = [x for x in run(m, 8) if x]
    assert len(metrics) == 2
    m.store.check_invariants()
    for counts in m.dims().values():
        assert int(counts[1:8].sum()) == 0                      # a row has all 8 dims or none
    assert metrics[-1]["prune/kept_chunks"] <= m.store.capacity
    assert {"prune/scale/small", "prune/scale/large", "prune/threshold"} <= set(metrics[-1])


def test_config_defaults_and_refuses_chunks():
    m = build_method({"name": "adaembed"}, TABLES, 8, SparseOptimConfig())
    cfg = m.config
    assert (cfg.utility, cfg.pool, cfg.normalise, cfg.num_chunks) == ("freq_grad", "shared",
                                                                     "p95", 1)
    with pytest.raises(ValueError, match="method.num_chunks=2"):
        build_method({"name": "adaembed", "num_chunks": 2}, TABLES, 8, SparseOptimConfig())
