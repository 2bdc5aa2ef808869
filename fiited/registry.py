"""Config name -> method class. Hydra's conf/method/<name>.yaml selects one by ``name``."""
from __future__ import annotations

import importlib
from typing import Any, Mapping, Sequence

from fiited.interface import EmbeddingMethod, FeatureSpec, MethodConfig, TableSpec
from fiited.optim import SparseOptimConfig

_REGISTRY: dict[str, type[EmbeddingMethod]] = {}
# Packages whose import registers more methods; fiited must not import them at module level.
_PLUGIN_PACKAGES = ("fiited.method", "baselines")


def register_method(name: str):
    def deco(cls: type[EmbeddingMethod]) -> type[EmbeddingMethod]:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"method name {name!r} registered twice")
        _REGISTRY[name] = cls
        return cls
    return deco


def _load_plugins() -> None:
    for pkg in _PLUGIN_PACKAGES:
        try:
            importlib.import_module(pkg)
        except ModuleNotFoundError as e:
            if e.name != pkg:
                raise


def method_names() -> list[str]:
    _load_plugins()
    return sorted(_REGISTRY)


def method_class(name: str) -> type[EmbeddingMethod]:
    _load_plugins()
    if name not in _REGISTRY:
        raise ValueError(f"method.name={name!r} is unknown; known methods: {sorted(_REGISTRY)}")
    return _REGISTRY[name]


def make_config(cfg: Mapping[str, Any] | MethodConfig) -> MethodConfig:
    """Validate a method's settings against its dataclass: typos and wrong types fail here."""
    if isinstance(cfg, MethodConfig):
        return cfg
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    if "name" not in cfg:
        raise ValueError("method config has no 'name' key (e.g. method=fiited)")
    cls = method_class(str(cfg["name"]))
    schema = OmegaConf.structured(cls.config_class)
    raw = cfg if OmegaConf.is_config(cfg) else OmegaConf.create(dict(cfg))
    try:
        merged = OmegaConf.merge(schema, raw)
    except OmegaConfBaseException as e:
        raise ValueError(f"bad method config for {cfg['name']!r}: {e}") from None
    obj = OmegaConf.to_object(merged)
    return obj


def build_method(cfg: Mapping[str, Any] | MethodConfig, tables: Sequence[TableSpec], dim: int,
                 optim: SparseOptimConfig, seed: int = 0,
                 features: Sequence[FeatureSpec] | None = None) -> EmbeddingMethod:
    """``features``: the inputs over ``tables`` (default: one one-hot feature per table)."""
    config = make_config(cfg)
    cls = method_class(config.name)
    if features is None:
        return cls(tables, dim, optim, config, seed=seed)
    return cls(tables, dim, optim, config, seed=seed, features=features)
