"""Random KJTs and EBC configs shared by the TorchRec adapter tests (torchrec must be present)."""
from __future__ import annotations

import torch
from torchrec import EmbeddingBagConfig, KeyedJaggedTensor, PoolingType


def random_kjt(keys, cards, batch, gen, max_len=4, weighted=False, empty_frac=0.3):
    """Feature-major KJT: per key, ``batch`` bags of 0..max_len ids (some forced empty),
    duplicate ids likely (small vocabularies)."""
    lengths = torch.randint(0, max_len + 1, (len(keys), batch), generator=gen)
    lengths[torch.rand(len(keys), batch, generator=gen) < empty_frac] = 0
    vals = [torch.randint(0, cards[k], (int(lengths[i].sum()),), generator=gen)
            for i, k in enumerate(keys)]
    values = torch.cat(vals)
    w = torch.rand(values.numel(), generator=gen) + 0.5 if weighted else None
    return KeyedJaggedTensor(keys=list(keys), values=values, lengths=lengths.reshape(-1),
                             weights=w)


def configs(dim=8, pooling=PoolingType.SUM, shared=True):
    """Three tables; with ``shared`` table "item_t" serves two features (item, history)."""
    items = ["item", "history"] if shared else ["item"]
    return [EmbeddingBagConfig(name="user_t", num_embeddings=13, embedding_dim=dim,
                               feature_names=["user"], pooling=pooling),
            EmbeddingBagConfig(name="item_t", num_embeddings=29, embedding_dim=dim,
                               feature_names=items, pooling=pooling),
            EmbeddingBagConfig(name="genre_t", num_embeddings=7, embedding_dim=dim,
                               feature_names=["genre"], pooling=pooling)]


def cards_of(tables):
    return {f: t.num_embeddings for t in tables for f in t.feature_names}
