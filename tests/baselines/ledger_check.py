"""Shared by the baseline tests: the bytes a method really holds, to check its ledger against."""


def real_bytes(emb) -> int:
    """Bytes of every tensor the module holds, minus the interface's own O(F) bookkeeping."""
    skip = {"num_rows", "table_offsets"}
    named = list(emb.named_buffers()) + list(emb.named_parameters())
    return sum(t.numel() * t.element_size() for n, t in named if n.split(".")[-1] not in skip)
