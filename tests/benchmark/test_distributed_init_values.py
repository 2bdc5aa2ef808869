"""A rank's aligned initial values are exactly the 1-process method's rows of its tables."""
from __future__ import annotations

import pytest
import torch

from benchmark.distributed.init_values import (align_initial_values, sharding_differences,
                                               stream_rows)
from fiited.interface import TableSpec, dlrm_init
from fiited.optim import SparseOptimConfig
from fiited.registry import build_method

TABLES = [TableSpec(f"T{i}", n) for i, n in enumerate([13, 4, 29, 7, 18])]
ROWS = [t.num_rows for t in TABLES]
OPT = SparseOptimConfig()


def _slice(full: torch.Tensor, owned: list[int]) -> torch.Tensor:
    starts = [sum(ROWS[:f]) for f in range(len(ROWS))]
    return torch.cat([full[starts[f]:starts[f] + ROWS[f]] for f in owned])


@pytest.mark.parametrize("chunk_floats", [1, 7, 64, 1 << 20])
def test_stream_rows_equals_the_whole_draw_at_any_chunking(chunk_floats):
    gen = torch.Generator().manual_seed(5)
    full = dlrm_init(sum(ROWS), 6, torch.repeat_interleave(torch.tensor(ROWS), torch.tensor(ROWS)),
                     gen)
    owned = [1, 2, 4]
    assert torch.equal(stream_rows(5, 6, ROWS, owned, chunk_floats), _slice(full, owned))
    assert stream_rows(5, 6, ROWS, []).shape == (0, 6)


@pytest.mark.parametrize("cfg,values", [
    ({"name": "uniform"}, lambda m: m.pool),
    ({"name": "uniform", "budget": 0.5}, lambda m: m.pool),
    ({"name": "post_prune", "budget": 0.5}, lambda m: m.pool),
    ({"name": "fiited", "budget": 1.0, "budget_scope": "weights", "num_chunks": 2},
     lambda m: m.store.pool.view(m.store.total_rows, -1)),
])
def test_aligned_subset_starts_like_the_one_process_method(cfg, values):
    full = build_method(cfg, TABLES, 8, OPT, seed=9)
    for owned in ([0, 3], [1, 2, 4], [2]):
        part = build_method(cfg, [TABLES[f] for f in owned], 8, OPT, seed=9)
        assert not torch.equal(values(part), _slice(values(full), owned))   # drawn differently
        assert align_initial_values(part, ROWS, owned)
        assert torch.equal(values(part), _slice(values(full), owned))


def test_methods_it_cannot_align_say_so():
    part = build_method({"name": "hashing", "budget": 0.5}, TABLES[:2], 8, OPT, seed=1)
    assert align_initial_values(part, ROWS, [0, 1]) is False


def test_sharding_differences_name_only_capacity_coupled_across_tables():
    default = build_method({"name": "fiited", "budget": 1.0}, TABLES, 8, OPT)
    got = sharding_differences(default)                # defaults: shared pool, total scope
    assert got[0].startswith("method.pool=shared")
    assert got[1].startswith("method.budget_scope=total")
    assert len(got) == 2
    keyed = build_method({"name": "fiited", "budget_scope": "weights", "pool": "per_table",
                          "regrow_init": "random"}, TABLES, 8, OPT)
    assert sharding_differences(keyed) == []           # random draws are keyed: no difference
    full = build_method({"name": "fiited", "budget": 1.0, "budget_scope": "weights"},
                        TABLES, 8, OPT)
    assert sharding_differences(full) == []            # starts full: nothing left to allocate
    assert sharding_differences(build_method({"name": "uniform"}, TABLES, 8, OPT)) == []


@pytest.mark.parametrize("name,cfg", [
    ("fiited", {"pool": "per_table", "budget_scope": "weights", "regrow_init": "random"}),
    ("fiited", {"pool": "per_table", "budget_scope": "weights", "index": "hashed",
                "index_reserve": 0.2}),
    ("itep", {"budget_scope": "weights", "budget": 0.5}),
])
def test_a_subset_of_the_tables_trains_exactly_like_those_tables_in_the_full_method(name, cfg):
    """Random draws (first-access and regrow values, sampling) and tie-breaks are keyed by
    (table name, id): a method built for a subset of the tables (a rank's) takes exactly the
    1-process decisions and values for them, events included."""
    cfg = {"name": name, "budget": 0.25, "schedule": {"warmup": [2, 4], "interval": 3},
           "sample_frac": 0.3, "min_sample_rows": 0, **cfg}
    full = build_method(cfg, TABLES, 8, OPT, seed=4)
    owned = [1, 2, 4]
    part = build_method(cfg, [TABLES[f] for f in owned], 8, OPT, seed=4)
    assert sharding_differences(part) == sharding_differences(full) == []
    g = torch.Generator().manual_seed(0)
    for step in range(1, 9):
        ids = torch.stack([torch.randint(0, t.num_rows, (24,), generator=g) for t in TABLES], 1)
        w = torch.randn(24, len(TABLES), 8, generator=g)
        a, b = full(ids), part(ids[:, owned])
        assert torch.equal(a[:, owned], b), f"step {step}"
        (a * w).sum().backward()
        (b * w[:, owned]).sum().backward()
        ma, mb = full.on_step(step), part.on_step(step)
        assert bool(ma) == bool(mb)
    dims_a, dims_b = full.dims(), part.dims()
    for f in owned:
        assert torch.equal(dims_a[TABLES[f].name], dims_b[TABLES[f].name])
    assert full.events == part.events == 4
