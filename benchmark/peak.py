"""Measured memory peaks: the kernel's high-water mark, read and reset per window.

A ledger counts what a method holds between steps; what a process needs is its peak, which
temporaries (construction, pruning events, ``memory()``) set. On Linux a process may reset its
own peak RSS (write ``5`` to ``/proc/self/clear_refs``), so the peak of each window between two
``sample()`` calls is read exactly instead of being sampled and missed. Anonymous memory only:
file pages of a memory-mapped dataset are subtracted (``VmHWM - RssFile - RssShmem`` at the end
of the window, exact to the file pages one window touches). On CUDA the measure is
``torch.cuda.max_memory_allocated`` instead. Where the reset is refused (not Linux, a read-only
/proc) the current RSS is sampled and ``exact`` is False: transients between samples are missed.

Resetting the high-water mark also resets what ``getrusage`` reports as the process peak, so
``peak_rss_bytes()`` here keeps the largest mark seen before every reset. The baseline is taken
after returning freed heap pages to the OS, else the method would reuse them unseen.
"""
from __future__ import annotations

import contextlib
import gc
import resource
import sys

import torch

_STATUS = "/proc/self/status"
_FIELDS = ("VmHWM", "VmRSS", "RssFile", "RssShmem")
_seen_max = 0          # largest VmHWM read before a reset, in bytes (process-wide)


def _status() -> dict[str, int] | None:
    """The memory fields of /proc/self/status in bytes, or None off Linux."""
    try:
        with open(_STATUS, "rb") as f:
            text = f.read().decode()
    except OSError:
        return None
    out = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        if key in _FIELDS:
            out[key] = int(rest.split()[0]) * 1024
    return out if len(out) == len(_FIELDS) else None


def _reset_hwm(st: dict[str, int] | None = None) -> bool:
    """Reset this process's peak RSS to its current RSS; False where that is refused."""
    global _seen_max
    st = st or _status()
    if st is None:
        return False
    _seen_max = max(_seen_max, st["VmHWM"])
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def release_free_heap() -> None:
    """Hand freed heap pages back to the OS (glibc ``malloc_trim``), so that memory freed before
    a baseline is not silently reused after it, unseen by the RSS; a no-op elsewhere."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def peak_rss_bytes() -> int:
    """Peak resident set size of this process so far, including marks reset by a meter."""
    st = _status()
    if st is not None:
        return max(_seen_max, st["VmHWM"])
    scale = 1 if sys.platform == "darwin" else 1024  # Linux reports KiB, macOS bytes
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * scale


def anon_rss_bytes() -> int:
    """Current anonymous resident memory (RSS without file-backed and shared pages)."""
    st = _status()
    if st is None:
        return peak_rss_bytes()
    return st["VmRSS"] - st["RssFile"] - st["RssShmem"]


def warm_up(device: torch.device | str = "cpu") -> None:
    """One tiny training step, so that what training loads on first use (``torch._dynamo``,
    which the optimizers import lazily: ~80 MB; the kernel backend; autograd's engine) is in the
    baseline rather than in the method's peak."""
    from fiited.interface import TableSpec
    from fiited.optim import SparseOptimConfig
    from fiited.registry import build_method

    emb = build_method({"name": "uniform"}, [TableSpec("warm_up", 8)], 4,
                       SparseOptimConfig(name="rowwise_adagrad"), seed=0).to(device)
    lin = torch.nn.Linear(4, 1).to(device)
    opt = torch.optim.SGD(lin.parameters(), lr=0.1)
    ids = torch.arange(4, device=device).view(4, 1)
    lin(emb(ids).view(4, 4)).sum().backward()
    opt.step()
    emb.on_step(1)
    emb.memory()


class PeakMeter:
    """Peak memory above a baseline taken at construction, over windows closed by ``sample``.

    ``peak`` is the largest window peak above the baseline; windows run under ``excluded()``
    (evaluation, checkpoints) count for the process peak but not for ``peak``. On CPU,
    ``process_peak`` is the whole-RSS high-water mark (file pages included) since the baseline
    ``rss_base``.
    """

    def __init__(self, device: torch.device | str = "cpu") -> None:
        self.device = torch.device(device)
        self.cuda = self.device.type == "cuda"
        if self.cuda:
            torch.cuda.synchronize(self.device)
            self.base = torch.cuda.memory_allocated(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.exact = True
        else:
            gc.collect()
            release_free_heap()
            self.base = anon_rss_bytes()
            self.exact = _reset_hwm()
        st = _status()
        self.rss_base = st["VmRSS"] if st else 0     # whole RSS, file pages included
        self.process_peak = self.rss_base            # whole-RSS high-water mark since then
        self.peak = 0
        self.last_window = 0

    def window_peak(self) -> int:
        """Peak of the window now ending, above the baseline; opens the next window."""
        if self.cuda:
            torch.cuda.synchronize(self.device)
            value = torch.cuda.max_memory_allocated(self.device) - self.base
            torch.cuda.reset_peak_memory_stats(self.device)
            return value
        st = _status()
        if st is None:
            return 0
        high = st["VmHWM"] if self.exact else st["VmRSS"]
        self.process_peak = max(self.process_peak, high)
        value = high - st["RssFile"] - st["RssShmem"] - self.base
        if self.exact:
            _reset_hwm(st)
        return value

    def sample(self) -> int:
        """Close the current window: its peak counts for ``peak``. Returns that window's peak."""
        self.last_window = self.window_peak()
        self.peak = max(self.peak, self.last_window)
        return self.last_window

    def measured(self) -> int:
        """Close the current window and return ``peak`` (so far, this window included)."""
        self.sample()
        return self.peak

    @contextlib.contextmanager
    def excluded(self):
        """Run a block whose memory is not the embedding state's (evaluation, checkpoints)."""
        self.sample()
        try:
            yield
        finally:
            self.window_peak()
