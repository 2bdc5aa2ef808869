"""Table-wise sharding plan: every table lives whole on one rank, ranks balanced by bytes.

Greedy LPT (Graham 1969): tables by bytes, largest first, each to the least-loaded rank
(ties: lower rank); then moves and swaps out of the fullest rank while they lower it (a plan
only ever gets better, so LPT's guarantees hold). For the loads L_r of W ranks and tables t:
    max_r L_r <= sum_t bytes_t / W + max_t bytes_t      (the last table added to the fullest
                                                         rank went to the then-lightest one)
    max_r L_r <= (4/3 - 1/(3W)) * optimum
Table-wise sharding cannot beat the largest table: with Criteo's 10M-row table on 8 ranks the
fullest rank holds ~2.4x the mean (row-wise sharding of the big tables would be the next step).

Bytes per table default to uniform's (weights + optimizer state at dim D): every method's
memory is close to proportional to a table's rows, so this balances them all.

    python -m benchmark.distributed.planner --preset criteo --dim 16 128 --world 2 4 8
    python -m benchmark.distributed.planner --manifest data/criteo_kaggle --world 4
"""
from __future__ import annotations

import argparse
import heapq
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

LPT_BOUND = "max load <= mean load + largest table, and <= (4/3 - 1/(3W)) x optimum"


@dataclass(frozen=True)
class TableCost:
    name: str
    rows: int
    bytes: int


def table_bytes(rows: int, dim: int, state_floats_per_row: int = 1) -> int:
    """Uniform's bytes for one table: float32 weights at ``dim`` + optimizer state per row."""
    return int(rows) * (int(dim) + int(state_floats_per_row)) * 4


@dataclass(frozen=True)
class ShardingPlan:
    """``owner[t]`` = the rank holding table t (tables in the model's feature order)."""

    world_size: int
    tables: tuple[TableCost, ...]
    owner: tuple[int, ...]

    def tables_of(self, rank: int) -> list[int]:
        """Feature indices the rank owns, in feature order (so local order = global order)."""
        return [t for t, r in enumerate(self.owner) if r == rank]

    def loads(self) -> list[int]:
        out = [0] * self.world_size
        for t, r in zip(self.tables, self.owner):
            out[r] += t.bytes
        return out

    def rows(self) -> list[int]:
        out = [0] * self.world_size
        for t, r in zip(self.tables, self.owner):
            out[r] += t.rows
        return out

    @property
    def imbalance(self) -> float:
        """Fullest rank / mean rank (1.0 = perfect)."""
        loads = self.loads()
        mean = sum(loads) / len(loads)
        return max(loads) / mean if mean else 1.0

    def as_dict(self) -> dict:
        return {"world_size": self.world_size, "imbalance": self.imbalance,
                "ranks": [{"rank": r, "bytes": b, "rows": n,
                           "tables": [self.tables[t].name for t in self.tables_of(r)]}
                          for r, (b, n) in enumerate(zip(self.loads(), self.rows()))]}

    def format(self, title: str = "") -> str:
        """A readable table: one line per rank, tables largest first."""
        loads, rows = self.loads(), self.rows()
        total = sum(loads) or 1
        head = (f"{title + ': ' if title else ''}{len(self.tables)} tables on "
                f"{self.world_size} ranks, {_size(sum(loads))} in all, imbalance "
                f"{self.imbalance:.3f} (fullest / mean)")
        lines = [head, f"{'rank':>4}  {'bytes':>10}  {'share':>6}  {'rows':>12}  tables"]
        for r in range(self.world_size):
            mine = sorted(self.tables_of(r), key=lambda t: -self.tables[t].bytes)
            names = ", ".join(self.tables[t].name for t in mine)
            lines.append(f"{r:>4}  {_size(loads[r]):>10}  {100 * loads[r] / total:5.1f}%  "
                         f"{rows[r]:>12,}  {names}")
        return "\n".join(lines)


def plan_tables(tables: Sequence[TableCost], world_size: int) -> ShardingPlan:
    """Assign every table to one rank (never split), balancing bytes by LPT."""
    if world_size < 1:
        raise ValueError(f"world size must be >= 1, got {world_size}")
    if len(tables) < world_size:
        raise ValueError(
            f"table-wise sharding needs at least one table per rank: {len(tables)} tables for "
            f"{world_size} ranks; use --nproc-per-node <= {len(tables)}")
    for t in tables:
        if t.bytes < 0 or t.rows < 0:
            raise ValueError(f"table {t.name!r}: negative size (rows={t.rows}, bytes={t.bytes})")
    order = sorted(range(len(tables)), key=lambda t: (-tables[t].bytes, t))
    heap = [(0, r) for r in range(world_size)]
    owner = [0] * len(tables)
    for t in order:
        load, r = heapq.heappop(heap)
        owner[t] = r
        heapq.heappush(heap, (load + tables[t].bytes, r))
    _refine(owner, [t.bytes for t in tables], world_size)
    return ShardingPlan(world_size, tuple(tables), tuple(owner))


def _refine(owner: list[int], sizes: list[int], world_size: int, max_rounds: int = 10_000) -> None:
    """Best single move or swap that lowers the fullest rank, until none does (in place).

    Each step lowers the fullest rank's load or the number of ranks at the maximum, so it ends.
    """
    loads = [0] * world_size
    for t, r in enumerate(owner):
        loads[r] += sizes[t]
    for _ in range(max_rounds):
        f = max(range(world_size), key=lambda r: (loads[r], -r))
        best, step = loads[f], None
        mine = [t for t, r in enumerate(owner) if r == f]
        for r in range(world_size):
            if r == f:
                continue
            theirs = [u for u, q in enumerate(owner) if q == r] + [None]
            for t in mine:
                for u in theirs:
                    delta = sizes[t] - (sizes[u] if u is not None else 0)
                    if delta <= 0:
                        continue
                    worst = max(loads[f] - delta, loads[r] + delta)
                    if worst < best:
                        best, step = worst, (t, u, r, delta)
        if step is None:
            return
        t, u, r, delta = step
        owner[t] = r
        if u is not None:
            owner[u] = f
        loads[f] -= delta
        loads[r] += delta


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


# ---- CLI ------------------------------------------------------------------------------------
def _tables_from_args(args: argparse.Namespace, dim: int) -> tuple[str, list[TableCost]]:
    state = 1 if args.optimizer == "rowwise_adagrad" else 0
    if args.manifest:
        path = Path(args.manifest)
        mpath = path / "manifest.json" if path.is_dir() else path
        if not mpath.is_file():
            raise SystemExit(f"--manifest {args.manifest}: no manifest.json there")
        m = json.loads(mpath.read_text())
        names, rows = m["feature_names"], m["cardinalities"]
        label = m.get("name", str(path))
    else:
        from benchmark.data.synthetic import PRESETS

        if args.preset not in PRESETS:
            raise SystemExit(f"--preset {args.preset!r}: choose one of {sorted(PRESETS)}")
        p = PRESETS[args.preset]
        names, rows, label = list(p.feature_names), list(p.cardinalities), f"{args.preset} (full)"
    return label, [TableCost(n, int(r), table_bytes(int(r), dim, state)) for n, r in zip(names, rows)]


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmark.distributed.planner",
                                 description="Print table-wise sharding plans (uniform bytes).")
    src = ap.add_mutually_exclusive_group()
    src.add_argument("--preset", default="criteo",
                     help="full-size cardinalities of a known dataset (criteo = Criteo Kaggle)")
    src.add_argument("--manifest", help="a prepared dataset dir (or its manifest.json)")
    ap.add_argument("--dim", type=int, nargs="+", default=[16])
    ap.add_argument("--world", type=int, nargs="+", default=[2, 4, 8])
    ap.add_argument("--optimizer", choices=("rowwise_adagrad", "sgd"), default="rowwise_adagrad")
    ap.add_argument("--json", action="store_true", help="print the plans as JSON")
    args = ap.parse_args(argv)
    out = []
    for dim in args.dim:
        label, tables = _tables_from_args(args, dim)
        for w in args.world:
            plan = plan_tables(tables, w)
            if args.json:
                out.append({"dataset": label, "dim": dim, **plan.as_dict()})
            else:
                print(plan.format(f"{label}, dim {dim}, {args.optimizer}") + "\n")
    if args.json:
        print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
