"""The table-wise plan: whole tables, every table once, balanced within LPT's bounds."""
from __future__ import annotations

import itertools
import json
import random

import pytest

from benchmark.distributed.planner import (TableCost, main, plan_tables, table_bytes)


def _tables(sizes):
    return [TableCost(f"T{i}", s, s) for i, s in enumerate(sizes)]


def _optimum(sizes, world):
    best = None
    for owner in itertools.product(range(world), repeat=len(sizes)):
        loads = [0] * world
        for s, r in zip(sizes, owner):
            loads[r] += s
        best = max(loads) if best is None else min(best, max(loads))
    return best


@pytest.mark.parametrize("seed", range(25))
def test_every_table_on_exactly_one_rank_within_lpt_bounds(seed):
    rng = random.Random(seed)
    world = rng.randint(2, 4)
    n = rng.randint(world, 7)
    sizes = [int(rng.paretovariate(0.8) * 100) for _ in range(n)]
    plan = plan_tables(_tables(sizes), world)
    owned = sorted(t for r in range(world) for t in plan.tables_of(r))
    assert owned == list(range(n))                       # once each, never split
    loads = plan.loads()
    assert sum(loads) == sum(sizes)
    assert all(loads[r] == sum(sizes[t] for t in plan.tables_of(r)) for r in range(world))
    # the stated tolerance (planner docstring)
    assert max(loads) <= sum(sizes) / world + max(sizes)
    assert max(loads) <= (4 / 3 - 1 / (3 * world)) * _optimum(sizes, world) + 1e-9
    assert all(plan.tables_of(r) for r in range(world))  # no idle rank


def test_refinement_fixes_what_greedy_misses():
    # [3,3,2,2,2] on 2 ranks: LPT alone gives 7/5, the optimum is 6/6.
    plan = plan_tables(_tables([3, 3, 2, 2, 2]), 2)
    assert sorted(plan.loads()) == [6, 6]
    assert plan.imbalance == 1.0


def test_equal_tables_spread_evenly_and_plan_is_deterministic():
    a = plan_tables(_tables([5] * 8), 4)
    assert a.loads() == [10, 10, 10, 10]
    assert a == plan_tables(_tables([5] * 8), 4)


def test_bad_world_sizes_are_refused_with_the_reason():
    with pytest.raises(ValueError, match="at least one table per rank: 2 tables for 3 ranks"):
        plan_tables(_tables([1, 2]), 3)
    with pytest.raises(ValueError, match="world size must be >= 1"):
        plan_tables(_tables([1, 2]), 0)


def test_plan_prints_every_rank_and_table():
    tables = [TableCost(n, r, table_bytes(r, 16)) for n, r in
              [("big", 1000), ("mid", 600), ("small", 10), ("tiny", 3)]]
    plan = plan_tables(tables, 2)
    text = plan.format("demo")
    assert text.startswith("demo: 4 tables on 2 ranks")
    for name in ("big", "mid", "small", "tiny"):
        assert text.count(name) == 1
    assert len(text.splitlines()) == 2 + 2
    assert table_bytes(1000, 16) == 1000 * 17 * 4
    assert json.loads(json.dumps(plan.as_dict()))["world_size"] == 2


def test_cli_prints_the_criteo_kaggle_plan(capsys):
    main(["--preset", "criteo", "--dim", "16", "--world", "4"])
    out = capsys.readouterr().out
    assert "26 tables on 4 ranks" in out
    assert "10,131,227  C3" in out          # the largest table alone on its rank
    main(["--preset", "criteo", "--dim", "128", "--world", "2", "--json"])
    plans = json.loads(capsys.readouterr().out)
    total = sum(r["bytes"] for r in plans[0]["ranks"])
    assert total == 33_762_577 * (128 + 1) * 4
