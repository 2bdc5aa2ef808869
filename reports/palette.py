"""How methods and budgets look in every figure: one fixed colour and marker per method, shades
of it for a method's variants, budgets as fractions (1/16), readable metric names.

Fixed by method name rather than by order of appearance, so FIITED is the same colour in the
compare figure, the ablations and the demo, whatever else a figure holds.
"""
from __future__ import annotations

import colorsys
from fractions import Fraction
from typing import Iterable

import matplotlib.colors as mcolors

# colour-blind-safe (Okabe-Ito / tab10 order); uniform black, FIITED the strongest hue
METHOD_COLORS: dict[str, str] = {
    "uniform": "#000000",
    "fiited": "#D55E00",
    "adaembed": "#0072B2",
    "itep": "#009E73",
    "hashing": "#CC79A7",
    "qr": "#E69F00",
    "post_prune": "#56B4E9",
    "mixed_dim": "#8C564B",
    "freq_filter": "#7F7F7F",
}
METHOD_MARKERS: dict[str, str] = {
    "uniform": "o", "fiited": "D", "adaembed": "s", "itep": "^", "hashing": "v", "qr": "P",
    "post_prune": "X", "mixed_dim": "*", "freq_filter": "h",
}
OTHER_COLORS = ("#BCBD22", "#17BECF", "#9467BD", "#1F77B4", "#2CA02C", "#D62728")
OTHER_MARKERS = ("p", "<", ">", "8", "d", "H")

METRIC_LABELS: dict[str, str] = {
    "val/ne": "validation NE", "test/ne": "test NE", "val/auc": "validation AUC",
    "test/auc": "test AUC", "mem/total_bytes": "total embedding memory (bytes)",
    "mem/weights_bytes": "embedding weights (bytes)",
    "mem/train_peak_bytes": "training peak memory (bytes)",
    "perf/step_ms_p50": "step time, median (ms)", "perf/train_samples_per_s":
    "train samples/s", "mem/compression": "weight compression (x)",
    "mem/total_compression": "total compression (x)",
}


def metric_label(key: str) -> str:
    return METRIC_LABELS.get(key, key)


def fraction(b) -> str:
    """A budget as people write it: 1, 1/4, 1/800 (``{:g}`` would print 0.00390625)."""
    try:
        b = float(b)
    except (TypeError, ValueError):
        return str(b)
    if b != b:  # NaN
        return "-"
    f = Fraction(b).limit_denominator(100000)
    if f <= 0 or abs(float(f) - b) > 1e-9 * max(1.0, abs(b)):
        return f"{b:g}"
    return str(f.numerator) if f.denominator == 1 else f"{f.numerator}/{f.denominator}"


def human_bytes(n: float, digits: int = 3) -> str:
    """1536 -> "1.5 KiB": memory as people read it, in figures and tables alike."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.{digits}g} {unit}"
        n /= 1024
    return str(n)


def method_of(label: str) -> str:
    """The method a figure label names ("fiited K=2 budget=1/4" -> "fiited")."""
    return str(label).split(" ", 1)[0]


def method_color(method: str) -> str:
    if method in METHOD_COLORS:
        return METHOD_COLORS[method]
    return OTHER_COLORS[sum(map(ord, method)) % len(OTHER_COLORS)]


def method_marker(method: str) -> str:
    if method in METHOD_MARKERS:
        return METHOD_MARKERS[method]
    return OTHER_MARKERS[sum(map(ord, method)) % len(OTHER_MARKERS)]


def _shade(color: str, i: int, n: int) -> tuple[float, float, float]:
    """The i-th of n shades of ``color``: the method's own colour first, then alternately
    lighter and darker ones (dark colours only lighter), so variants stay that method."""
    rgb = mcolors.to_rgb(color)
    if i == 0:
        return rgb
    h, lum, s = colorsys.rgb_to_hls(*rgb)
    step = 0.5 / max(n, 2)
    if lum < 0.25:
        lum += i * step
    else:
        lum += (i + 1) // 2 * step * (1 if i % 2 else -1)
    return colorsys.hls_to_rgb(h, min(0.85, max(0.1, lum)), s)


def colors(labels: Iterable[str]) -> dict[str, tuple[float, float, float]]:
    """label -> colour: each method's fixed colour, shades of it for its further variants."""
    levels = list(dict.fromkeys(labels))
    by_method: dict[str, list[str]] = {}
    for lab in levels:
        by_method.setdefault(method_of(lab), []).append(lab)
    out = {}
    for method, labs in by_method.items():
        for i, lab in enumerate(labs):
            out[lab] = _shade(method_color(method), i, len(labs))
    return {lab: out[lab] for lab in levels}


def markers(labels: Iterable[str]) -> dict[str, str]:
    """label -> marker: the method's marker for every variant of it."""
    return {lab: method_marker(method_of(lab)) for lab in dict.fromkeys(labels)}
