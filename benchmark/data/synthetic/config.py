"""What determines a synthetic dataset: its config (validated, fingerprinted), the random
streams its parts draw from, and the directory name the Hydra configs give it."""
from __future__ import annotations

import numbers
import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Mapping

from benchmark.data.format import DatasetError, fingerprint
from benchmark.data.synthetic.presets import PRESETS

GENERATOR_VERSION = 1
WIDTH_LAWS = ("popular", "flat", "tail")
_LATER_KNOBS = {"width_law": "popular", "multi_hot_fields": 0, "multi_hot_mean_len": 5.0}     # added after version 1: fingerprinted only when set
_STREAM_PARAMS, _STREAM_ROWS, _STREAM_DRIFT, _STREAM_LATENT, _STREAM_SCALAR, _STREAM_CAL = range(6)
_STREAM_WIDTH = 6
_CAST = {"float": float, "int": int, "str": str}
_KINDS = {"float": numbers.Real, "int": numbers.Integral, "str": str}


@dataclass
class SyntheticConfig:
    """Everything that determines a synthetic dataset (its fingerprint is taken over these)."""

    preset: str = "criteo"          # criteo | avazu
    scale: float = 0.001            # multiplies the real cardinalities (0 < scale <= 1)
    rows: int = 500_000             # total rows over all days
    days: int = 7                   # contiguous pseudo-days; last one -> test (1st half), val
    seed: int = 0
    min_table_rows: int = 64        # floor for scaled tables (never above the real size)
    zipf_min: float = 0.9           # per-table Zipf exponent drawn uniformly in [min, max]
    zipf_max: float = 1.3
    default_scale: float = 1.0      # multiplies the preset's default-token (id 0) masses
    drift: float = 0.05             # fraction of popularity ranks re-assigned each day
    latent_dim: int = 16            # L: widest planted latent vector
    width_tail: float = 0.5         # ids ranked past this fraction of a table have width 0
    dense_std: float = 0.4          # std of the logit's dense part (on the calibration sample)
    scalar_std: float = 0.5         # ... of its per-id scalar part
    latent_std: float = 1.6         # ... of its pairwise latent (FM) part: where dims matter
    calibration_rows: int = 131_072  # sample that sets the part scales and the bias
    width_law: str = "popular"      # popular: widest on popular ids | flat: widths shuffled,
                                    # independent of popularity | tail: widest on the rarest
    multi_hot_fields: int = 0       # bag (multi-hot) fields added beside the one-hot ones
    multi_hot_mean_len: float = 5.0  # their mean bag length (Poisson); see synthetic.multihot

    def validate(self, where: str = "synthetic") -> None:
        def bad(key: str, msg: str) -> DatasetError:
            return DatasetError(f"{where}.{key}={getattr(self, key)!r}: {msg}")
        for f in fields(self):
            value, kind = getattr(self, f.name), str(f.type)
            if isinstance(value, bool) or not isinstance(value, _KINDS[kind]):
                raise bad(f.name, f"must be {kind}")
        if self.preset not in PRESETS:
            raise bad("preset", f"unknown preset; choose one of {sorted(PRESETS)}")
        if not 0 < self.scale <= 1:
            raise bad("scale", "must be in (0, 1]")
        if self.days < 2:
            raise bad("days", "must be >= 2 (train days + one test/val day)")
        if self.rows < 2 * self.days:
            raise bad("rows", f"must be >= 2 * days = {2 * self.days}")
        if self.min_table_rows < 1:
            raise bad("min_table_rows", "must be >= 1")
        if not 0 <= self.zipf_min <= self.zipf_max <= 4:
            raise bad("zipf_min", f"need 0 <= zipf_min <= zipf_max <= 4 (zipf_max={self.zipf_max})")
        if not 0 <= self.default_scale or any(self.default_scale * m >= 1
                                              for m in PRESETS[self.preset].default_mass):
            raise bad("default_scale", "must keep every default-token mass in [0, 1)")
        if not 0 <= self.drift <= 1:
            raise bad("drift", "must be in [0, 1]")
        if not 1 <= self.latent_dim <= 255:
            raise bad("latent_dim", "must be in 1..255")
        if not 0 < self.width_tail <= 1:
            raise bad("width_tail", "must be in (0, 1]")
        for key in ("dense_std", "scalar_std", "latent_std"):
            if getattr(self, key) < 0:
                raise bad(key, "must be >= 0")
        if self.calibration_rows < 1000:
            raise bad("calibration_rows", "must be >= 1000")
        if not 0 <= self.multi_hot_fields <= len(PRESETS[self.preset].feature_names):
            raise bad("multi_hot_fields", f"must be in 0..{len(PRESETS[self.preset].feature_names)}"
                                          f" (the preset's one-hot tables)")
        if not 0 < self.multi_hot_mean_len <= 1000:
            raise bad("multi_hot_mean_len", "must be in (0, 1000]")
        if self.width_law not in WIDTH_LAWS:
            raise bad("width_law", f"choose one of {', '.join(WIDTH_LAWS)}")

    def canonical(self) -> dict[str, Any]:
        """Field values cast to their declared types (yaml `scale: 1` and 1.0 fingerprint alike).

        Knobs added later are left out at their defaults, so that the datasets made before
        they existed keep their fingerprints (and their directories stay valid)."""
        out = {f.name: _CAST[str(f.type)](getattr(self, f.name)) for f in fields(self)}
        for key, default in _LATER_KNOBS.items():
            if out[key] == default:
                del out[key]
        return out

    def fingerprint(self) -> str:
        return fingerprint(["synthetic", GENERATOR_VERSION, self.canonical()])


def as_config(cfg: SyntheticConfig | Mapping[str, Any]) -> SyntheticConfig:
    """Accept the dataclass, a dict, or an OmegaConf node (what Hydra hands the harness)."""
    if isinstance(cfg, SyntheticConfig):
        return cfg
    try:
        items = dict(cfg.items())
    except AttributeError:
        raise DatasetError(f"synthetic config must be a SyntheticConfig or mapping, "
                           f"got {type(cfg).__name__}") from None
    known = {f.name for f in fields(SyntheticConfig)}
    unknown = sorted(set(items) - known)
    if unknown:
        raise DatasetError(f"synthetic config: unknown keys {unknown}; known: {sorted(known)}")
    return SyntheticConfig(**items)


# Knobs a dataset's directory name spells out (or that a scale fixes); the others go in its
# suffix when they differ from their defaults.
_NAMED_KNOBS = frozenset({"preset", "scale", "rows", "days", "seed"})


def knob_suffix(knobs) -> str:
    """``_drift0.2`` etc. for the generator knobs in ``knobs`` (a SyntheticConfig or a mapping)
    that are off their defaults; '' when none are. A dataset directory holds one set of settings
    (another is refused), so changed knobs must lead to another directory."""
    values = dict(knobs) if hasattr(knobs, "keys") else vars(knobs)
    defaults = vars(SyntheticConfig())
    return "".join(f"_{k.replace('_', '')}{v}" for k, v in values.items()
                   if k not in _NAMED_KNOBS and k in defaults and v != defaults[k])


def default_path(cfg: SyntheticConfig, root: str | os.PathLike = "data") -> Path:
    """The directory name the Hydra configs use for these settings."""
    name = f"synthetic_{cfg.preset}_s{cfg.scale}_n{cfg.rows}_d{cfg.days}_seed{cfg.seed}"
    return Path(root) / (name + knob_suffix(cfg))
