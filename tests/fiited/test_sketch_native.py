"""The hashed index's count-min sketch update in the native core (``kernels.cpu.sketch_count``)
equals the torch ops of ``HashedIndex.count``, repeats and width-0 tables included."""
from __future__ import annotations

import pytest
import torch

from fiited.index import TableIndex
from fiited.kernels import cpu_native
from fiited.kernels.cpu import sketch_count

pytestmark = pytest.mark.skipif(cpu_native.library() is None,
                                reason=f"native core unavailable: {cpu_native.failure}")


def test_native_sketch_count_equals_torch():
    rows_per_table = torch.tensor([500, 40, 3000, 9])
    index = TableIndex(rows_per_table, ["hashed", "hashed", "direct", "hashed"], num_slots=600,
                       live_cap=[200, 30, 0, 0], sketch_per_entry=1.5,
                       table_keys=[11, 2 ** 31 - 5, 7, 123456])
    h = index.hashed
    assert int(h.sketch_width[3]) == 0 and int(h.sketch_width[0]) > 0   # a table not counted
    g = torch.Generator().manual_seed(1)
    ends = torch.cumsum(rows_per_table, 0)
    rows = torch.cat([torch.randint(0, int(ends[-1]), (4000,), generator=g),
                      torch.full((50,), int(ends[0]) + 3)])              # one row repeated
    rows = rows[(index.table_of_rows(rows) != 2)]                       # hashed tables only
    tables = index.table_of_rows(rows)
    h.sketch.uniform_(0, 8, generator=g).mul_(2).round_().mul_(0.5)     # halved, as after events
    want = h.sketch.clone()
    h.count(tables, rows - index.table_starts[tables], index.table_key[tables])
    want, h.sketch[:] = h.sketch.clone(), want
    assert not torch.equal(want, h.sketch)
    assert sketch_count(h.sketch, rows, tables, index.table_starts, h.sketch_width,
                        h.sketch_base, index.table_key)
    assert torch.equal(h.sketch, want)
