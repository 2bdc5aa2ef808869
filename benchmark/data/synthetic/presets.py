"""The real datasets the generator imitates: table names, cardinalities, default-token masses,
dense feature count and click rate."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from benchmark.data.synthetic.config import SyntheticConfig


@dataclass(frozen=True)
class Preset:
    name: str
    feature_names: tuple[str, ...]
    cardinalities: tuple[int, ...]     # the real dataset's (docs/data.md)
    default_mass: tuple[float, ...]    # share of id 0 (empty / default value) per table
    num_dense: int
    click_rate: float
    top_is_default: tuple[str, ...] = ()   # tables whose top value must be id 0 (flatten Zipf)


_CRITEO_CARDS = (1460, 583, 10131227, 2202608, 305, 24, 12517, 633, 3, 93145, 5683, 8351593,
                 3194, 27, 14992, 5461306, 10, 5652, 2173, 4, 7046547, 18, 15, 286181, 105, 142572)
# Approximate empty-value shares of Criteo Kaggle's C1..C26 (the empties DLRM maps to one id);
# an approximation to make the default-token structure Criteo-like, not a measured fact here.
_CRITEO_EMPTY = {"C3": 0.034, "C4": 0.034, "C6": 0.121, "C12": 0.034, "C16": 0.034,
                 "C19": 0.44, "C20": 0.44, "C21": 0.034, "C22": 0.763, "C24": 0.034,
                 "C25": 0.44, "C26": 0.44}
_AVAZU_NAMES = ("C1", "banner_pos", "site_id", "site_domain", "site_category", "app_id",
                "app_domain", "app_category", "device_id", "device_ip", "device_model",
                "device_type", "device_conn_type", "C14", "C15", "C16", "C17", "C18", "C19",
                "C20", "C21")
_AVAZU_CARDS = (7, 7, 4737, 7745, 26, 8552, 559, 36, 2686408, 6729486, 8251, 5, 4, 2626, 8, 9,
                435, 4, 68, 172, 60)
# Top-value shares from docs/data.md (C1, app_id, device_id, device_ip). app_domain/app_category
# follow app_id (site traffic has no app) and the site_* fields take the remaining app traffic:
# an assumption derived from app_id's share, not a measured fact.
_AVAZU_TOP = {"C1": 0.919, "app_id": 0.639, "device_id": 0.825, "device_ip": 0.0052,
              "app_domain": 0.639, "app_category": 0.639, "site_id": 0.361,
              "site_domain": 0.361, "site_category": 0.361}

PRESETS: dict[str, Preset] = {
    "criteo": Preset(
        "criteo", tuple(f"C{i}" for i in range(1, 27)), _CRITEO_CARDS,
        tuple(_CRITEO_EMPTY.get(f"C{i}", 0.0) for i in range(1, 27)), 13, 0.2562),
    "avazu": Preset(
        "avazu", _AVAZU_NAMES, _AVAZU_CARDS, tuple(_AVAZU_TOP.get(n, 0.0) for n in _AVAZU_NAMES),
        0, 0.1698, top_is_default=tuple(_AVAZU_TOP)),
}


def table_rows(cfg: SyntheticConfig) -> list[int]:
    """Scaled cardinalities: real * scale, floored at min_table_rows, never above the real size."""
    p = PRESETS[cfg.preset]
    return [min(real, max(cfg.min_table_rows, round(real * cfg.scale))) for real in p.cardinalities]


# Named settings for the cross-dataset comparison (conf/data/synthetic_<name>.yaml spell out the
# same): knobs off the SyntheticConfig defaults, the preset included.
VARIANTS: dict[str, dict] = {
    # control: the planted widths shuffled over ids, so width does not follow popularity
    "control": {"preset": "criteo", "width_law": "flat"},
    # control: the widest latents on the rarest ids
    "control_tail": {"preset": "criteo", "width_law": "tail"},
    # the default Criteo-like data with 4x the rows per id: uniform is not data-starved
    "criteo_large": {"preset": "criteo", "rows": 2_000_000},
    # a second Avazu-like dataset: another seed, heavier skew, more drift
    "avazu_heavy": {"preset": "avazu", "days": 10, "seed": 1, "zipf_min": 1.1, "zipf_max": 1.5,
                    "drift": 0.15},
    # Criteo-like with three multi-hot (bag) fields beside the 26 one-hot ones
    "criteo_multihot": {"preset": "criteo", "multi_hot_fields": 3, "multi_hot_mean_len": 5.0},
}

