"""The palette: a method's colour and marker do not depend on what else a figure holds."""
from __future__ import annotations

import matplotlib.colors as mcolors

from reports import palette


def test_a_methods_colour_is_fixed_whatever_the_figure_holds():
    a = palette.colors(["uniform", "fiited", "hashing"])
    b = palette.colors(["qr", "hashing", "fiited K=2", "fiited K=4", "adaembed"])
    assert a["fiited"] == b["fiited K=2"] == mcolors.to_rgb(palette.METHOD_COLORS["fiited"])
    assert a["hashing"] == b["hashing"]
    assert b["fiited K=4"] != b["fiited K=2"]  # a variant: a shade of the same hue
    assert len(set(mcolors.to_hex(c) for c in a.values())) == 3
    assert palette.markers(["fiited K=2", "fiited K=4"]) == {"fiited K=2": "D", "fiited K=4": "D"}


def test_budgets_print_as_fractions():
    assert [palette.fraction(b) for b in (1.0, 0.25, 0.0625, 0.00390625, 0.00125, 0.75)] == \
        ["1", "1/4", "1/16", "1/256", "1/800", "3/4"]
    assert palette.fraction(0.123456789) == "0.123457" and palette.fraction(float("nan")) == "-"
