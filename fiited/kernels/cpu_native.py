"""The CPU path's native core: one fused C++ pass for gather and for the sparse update.

Plain C++ (``cpu_native.cpp`` and ``cpu_native_rows.cpp``, beside this file) with a C ABI,
loaded through ctypes: no torch headers, so a clean checkout compiles it on first use in a few
seconds (about 6 s here), into a cache dir, never into the tree. ctypes drops the GIL during a
call; the code spreads work over ``threads`` std::threads itself.

Update: a stable (parallel LSD radix) sort of (pool row, occurrence) pairs groups duplicates in
occurrence order; then each thread takes whole segments, sums their gradient slices in that order (the
reference's order, so SGD is bit-exact), writes the per-occurrence norms in the same read, and
applies the optimizer to the row. Return codes: -1 ok, -2 too large for 32-bit packing (the
caller falls back to torch ops), >= 0 the index of the first out-of-range row.

Bags (``fiited_bag_gather``, ``fiited_bag_update``): the pooled lookup in one pass over the
bags (each thread owns whole bags, so sums run in occurrence order without atomics), and the
update above reading each occurrence's share straight from the pooled gradient (no [N, K*C]
copy); the one-hot update is the same template with that indirection compiled out.

Row-wise Adagrad per logical row (``fiited_row_update``, one-hot and bags): the same sort,
keyed by each occurrence's state row instead of its pool rows; a thread sums a row's K*C floats
and steps all its present chunks with the one accumulator.

Fused FIITED step (``fiited_fused_gather``, ``fiited_fused_update``, in
``cpu_native_fused.cpp``, driven by ``fused.py``): gather and update take the batch's entries
and read the K chunk addresses from the entry table themselves; the update sorts N entries, not
N*K slots, and credits the utility in the same pass (no [N, K] address tensor, no index_put).
The hashed index's count-min sketch update (``fiited_sketch_count``) is one pass there too.

Hash probe (``fiited_hash_find``): the hashed index's linear-probing lookup for every occurrence
of a batch in one pass, so the store needs ``unique`` only for rows that have no entry yet.

``FIITED_CPU_NATIVE=0`` turns it off; ``FIITED_CACHE_DIR`` moves the build cache; ``CXX`` picks
the compiler.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
import warnings
from pathlib import Path

# One translation unit: the core, the per-logical-row update and the fused FIITED step (and
# the hash probe) that use its helpers.
SOURCE = "\n".join(Path(__file__).with_name(name).read_text()
                   for name in ("cpu_native.cpp", "cpu_native_rows.cpp", "cpu_native_fused.cpp"))

FLAGS = ("-O3", "-std=c++17", "-shared", "-fPIC", "-pthread", "-ffp-contract=off",
         "-fno-math-errno")

_lock = threading.Lock()
_library: ctypes.CDLL | None = None
_tried = False
failure: str | None = None  # why the native core is unavailable, for reports


def cache_dir() -> Path:
    root = os.environ.get("FIITED_CACHE_DIR")
    if root:
        return Path(root)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "fiited" / "native"


def _compiler() -> str | None:
    for name in (os.environ.get("CXX"), "g++", "c++", "clang++"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def _build(cxx: str) -> Path:
    tag = hashlib.sha256("\0".join((SOURCE, cxx, platform.machine(), *FLAGS)).encode())
    target = cache_dir() / f"fiited_cpu_{tag.hexdigest()[:16]}.so"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        src = Path(tmp) / "fiited_cpu.cpp"
        src.write_text(SOURCE)
        out = Path(tmp) / target.name
        proc = subprocess.run([cxx, *FLAGS, str(src), "-o", str(out)], capture_output=True,
                              text=True, timeout=300)
        if proc.returncode != 0:
            raise RuntimeError(f"{cxx} failed:\n{proc.stderr[-2000:]}")
        os.replace(out, target)  # atomic: parallel first uses never load a half-written file
    return target


def _bind(lib: ctypes.CDLL) -> ctypes.CDLL:
    p, i64, i32, f32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int, ctypes.c_float
    lib.fiited_gather.argtypes = [p, i64, i64, p, i32, i64, p, i32]
    lib.fiited_gather.restype = i64
    lib.fiited_update.argtypes = [p, i64, i64, p, p, i32, i64, p, p, i32, f32, f32, i32]
    lib.fiited_update.restype = i64
    lib.fiited_bag_gather.argtypes = [p, i64, i64, p, i32, i64, p, i32, i64, p, i32, p, i32]
    lib.fiited_bag_gather.restype = i64
    lib.fiited_bag_update.argtypes = [p, i64, i64, p, p, i32, i64, i64, p, p, p, p, i32, f32,
                                      f32, i32]
    lib.fiited_bag_update.restype = i64
    lib.fiited_row_update.argtypes = [p, i64, i64, p, i64, p, i32, i64, i64, p, i32, p, p, p,
                                      p, f32, f32, i32]
    lib.fiited_row_update.restype = i64
    lib.fiited_hash_find.argtypes = [p, i32, i64, p, i64, i64, i64, p, i32]
    lib.fiited_hash_find.restype = None
    lib.fiited_sketch_count.argtypes = [p, i64, i64, p, p, i64, i64, p, p, p, p]
    lib.fiited_sketch_count.restype = None
    lib.fiited_fused_gather.argtypes = [p, i64, i64, p, i64, i64, p, i64, p, i32]
    lib.fiited_fused_gather.restype = i64
    lib.fiited_fused_update.argtypes = [p, i64, p, p, i64, i64, p, i64, p, i32, i32, f32, f32,
                                        p, f32, i32, i32]
    lib.fiited_fused_update.restype = i64
    return lib


def library() -> ctypes.CDLL | None:
    """The compiled core, built on first use; None (and ``failure`` says why) if unavailable."""
    global _library, _tried, failure
    if _tried:
        return _library
    with _lock:
        if _tried:
            return _library
        if os.environ.get("FIITED_CPU_NATIVE", "1") == "0":
            failure = "disabled by FIITED_CPU_NATIVE=0"
        else:
            cxx = _compiler()
            if cxx is None:
                failure = "no C++ compiler found (set CXX)"
            else:
                try:
                    _library = _bind(ctypes.CDLL(str(_build(cxx))))
                except (OSError, RuntimeError, subprocess.SubprocessError) as e:
                    failure = f"native CPU kernels unavailable, using torch ops: {e}"
                    warnings.warn(failure, RuntimeWarning, stacklevel=2)
        _tried = True
        return _library
