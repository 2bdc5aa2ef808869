"""Counter-based draws keyed by (table, id within the table): shard-invariant randomness.

A draw depends only on (seed, table, id, salt), never on a generator's position or on the
global row number, so a rank that holds a subset of the tables draws exactly what the
1-process run draws for them, in any order and in any block size. The mixer is murmur3's
32-bit finaliser on int64 tensors (products wrap; the low 32 bits are exact on every device).
"""
from __future__ import annotations

import zlib

import torch

_M32 = 0xFFFFFFFF


def table_key(name: str) -> int:
    """A table's key in every draw: from its name, so it is the same on whichever rank (and
    at whichever position) the table lives."""
    return zlib.crc32(name.encode()) & 0x7FFFFFFF


def mix32(x: torch.Tensor) -> torch.Tensor:
    """murmur3 fmix32 of int64 values in [0, 2**32): a bijection with good avalanche."""
    x = x ^ (x >> 16)
    x = (x * 0x85EBCA6B) & _M32
    x = x ^ (x >> 13)
    x = (x * 0xC2B2AE35) & _M32
    return x ^ (x >> 16)


def keyed_hash(seed: int, tables: torch.Tensor, ids: torch.Tensor,
               salt: torch.Tensor | int = 0) -> torch.Tensor:
    """A 32-bit hash (int64 in [0, 2**32)) of (seed, table, id, salt), elementwise."""
    ids = ids.long()
    h = mix32((tables.long() * 0x9E3779B1 + (int(seed) & _M32)) & _M32)
    h = mix32(h ^ (ids & _M32))
    h = mix32(h ^ ((ids >> 32) & _M32) ^ 0x27D4EB2F)
    if isinstance(salt, torch.Tensor) or salt:
        h = mix32(h ^ (torch.as_tensor(salt, device=h.device).long() & _M32))
    return h


def keyed_uniform(seed: int, tables: torch.Tensor, ids: torch.Tensor,
                  salt: torch.Tensor | int = 0) -> torch.Tensor:
    """U[0, 1) as float64, one per element, keyed like ``keyed_hash``."""
    return (keyed_hash(seed, tables, ids, salt).double() + 0.5) * (1.0 / 4294967296.0)


def keyed_init(seed: int, tables: torch.Tensor, ids: torch.Tensor, chunk: torch.Tensor,
               width: int, bound_rows: torch.Tensor) -> torch.Tensor:
    """DLRM's U(-1/sqrt(n_t), 1/sqrt(n_t)) values [N, width] for chunk ``chunk`` of (table,
    id): the same numbers whatever else is drawn, wherever the chunk lives."""
    j = torch.arange(width, device=ids.device)
    salt = chunk.long().unsqueeze(1) * width + j + 1
    h = keyed_hash(seed, tables.unsqueeze(1), ids.unsqueeze(1), salt)
    u = (h >> 8).float() * (1.0 / 16777216.0)            # 24 bits: exact in float32
    bound = bound_rows.double().clamp_min(1).rsqrt().float().unsqueeze(1)
    return (u * 2 - 1) * bound


def seed32(generator: torch.Generator) -> int:
    """One 31-bit seed from ``generator`` (advances it by one draw)."""
    return int(torch.randint(0, 2 ** 31 - 1, (1,), generator=generator))
