"""Real dataset readers: raw public files -> the prepared format (``fiited-data prepare``).

``prepare_dataset(PrepareConfig(...))`` is the library entry point; ``cli.register`` adds the
``prepare`` subcommand to ``fiited-data``.
"""
from __future__ import annotations

from benchmark.data.format import PreparedDataset
from benchmark.data.readers.avazu import Avazu
from benchmark.data.readers.badlines import BadLineError, InputError
from benchmark.data.readers.criteo import CriteoKaggle, CriteoTerabyte
from benchmark.data.readers.kdd12 import KDD12
from benchmark.data.readers.movielens import MovieLens
from benchmark.data.readers.pipeline import Progress, prepare
from benchmark.data.readers.source import PrepareConfig, Source

DATASETS: dict[str, type[Source]] = {
    "criteo-kaggle": CriteoKaggle,
    "criteo-terabyte": CriteoTerabyte,
    "avazu": Avazu,
    "kdd12": KDD12,
    "movielens": MovieLens,
}
# options that only some datasets read; passing one elsewhere is an error, not a silent no-op
ONLY_FOR = {"counts": ("kdd12",), "genres": ("movielens",), "genre_slots": ("movielens",),
           "history": ("movielens",),
            "positive_rating": ("movielens",), "layout": ("movielens",)}


def build_source(cfg: PrepareConfig) -> Source:
    if cfg.dataset not in DATASETS:
        raise InputError(f"unknown dataset {cfg.dataset!r}; known: {sorted(DATASETS)}")
    for opt, where in ONLY_FOR.items():
        if getattr(cfg, opt) is not None and cfg.dataset not in where:
            raise InputError(f"option --{opt.replace('_', '-')} applies to {', '.join(where)} "
                             f"only, not {cfg.dataset}")
    return DATASETS[cfg.dataset](cfg)


def prepare_dataset(cfg: PrepareConfig, progress: Progress | None = None) -> PreparedDataset:
    source = build_source(cfg)
    source.split_plan()                     # reject an unsupported --split before reading
    return prepare(source, progress)


__all__ = ["BadLineError", "DATASETS", "InputError", "PrepareConfig", "build_source",
           "prepare_dataset"]
