"""The measured-peak meter sees transients that are freed before it samples."""
from __future__ import annotations

import pytest
import torch

from benchmark.peak import PeakMeter, anon_rss_bytes, peak_rss_bytes

MB = 2**20


def _exact_meter() -> PeakMeter:
    meter = PeakMeter()
    if not meter.exact:
        pytest.skip("this kernel refuses /proc/self/clear_refs: peaks are sampled, not exact")
    return meter


def test_a_freed_temporary_sets_the_window_peak_and_the_next_window_is_clean():
    meter = _exact_meter()
    meter.sample()
    x = torch.ones(40 * MB // 4)  # 40 MiB, touched, then freed before the sample
    del x
    assert meter.sample() >= 38 * MB
    assert meter.sample() < 8 * MB
    assert meter.peak >= 38 * MB


def test_excluded_windows_count_for_the_process_peak_only():
    meter = _exact_meter()
    before = peak_rss_bytes()
    with meter.excluded():
        y = torch.ones(60 * MB // 4)
        held = anon_rss_bytes()
        del y
    assert meter.peak < 20 * MB
    assert peak_rss_bytes() >= max(before, held)
    assert meter.measured() == meter.peak
