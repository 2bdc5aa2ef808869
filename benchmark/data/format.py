"""The one prepared on-disk format every dataset is turned into; training reads only this.

A dataset is a directory::

    manifest.json   Manifest below; written last, with complete=true
    dense.npy       float32 [N, num_dense]   (num_dense may be 0)
    ids.npy         int32 or int64 [N, F]    contiguous ids per feature, 0..cardinality-1
    labels.npy      uint8 [N]                0/1 (or float32 [N] weights-free labels only)
    bag_<name>.values.npy   int32/int64 [V]  optional, per bag (multi-hot) feature: its ids
    bag_<name>.offsets.npy  int64 [N + 1]    row r's bag is values[offsets[r]:offsets[r+1]]

Bag features are listed in the manifest's ``bags`` (name, table, cardinality, pooling); a
manifest without bags is written exactly as before (no ``bags`` key), so old datasets and
their bytes are unchanged.

Splits are contiguous row ranges [start, end) named in the manifest (time order preserved).
``DatasetWriter`` writes into a hidden temporary sibling and renames it into place only on
success, so a killed prepare never leaves a directory that ``open_dataset`` accepts.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from benchmark.errors import UserError

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
ARRAYS = ("dense", "ids", "labels")
# what a prepared dataset directory may hold: only such a directory is ever replaced
DATASET_FILES = frozenset({MANIFEST, "dense.npy", "ids.npy", "labels.npy", "weights.npy"})
POOLINGS = ("sum", "mean")


def bag_files(name: str) -> tuple[str, str]:
    return f"bag_{name}.values.npy", f"bag_{name}.offsets.npy"


def bag_offsets(lens: np.ndarray) -> np.ndarray:
    """Bag lengths [n] -> int64 offsets [n + 1] (bag r is values[offsets[r]:offsets[r + 1]])."""
    out = np.zeros(len(lens) + 1, dtype=np.int64)
    np.cumsum(lens, out=out[1:])
    return out


def concat_ranges(starts: np.ndarray, lens: np.ndarray) -> np.ndarray:
    """The aranges [starts[i], starts[i] + lens[i]) concatenated, without a loop over i: the
    positions of bags' values, to gather or scatter them."""
    excl = np.cumsum(lens) - lens
    return np.repeat(starts - excl, lens) + np.arange(int(lens.sum()), dtype=np.int64)


def _is_dataset_file(name: str) -> bool:
    return name in DATASET_FILES or (name.startswith("bag_") and name.endswith(".npy"))


class DatasetError(UserError):
    """A prepared dataset is missing, incomplete or inconsistent."""


@dataclass
class Manifest:
    name: str
    num_rows: int
    feature_names: list[str]
    cardinalities: list[int]
    dense_names: list[str]
    splits: dict[str, list[int]]          # split -> [start, end)
    click_rate: float                     # of the train split: NE's background rate
    fingerprint: str                      # of the source (inputs + options, or generator config)
    id_dtype: str = "int32"
    source: dict[str, Any] = field(default_factory=dict)   # how it was made (options, preset)
    stats: dict[str, Any] = field(default_factory=dict)    # e.g. bayes_ne, bad lines skipped
    format_version: int = FORMAT_VERSION
    created: str = ""
    complete: bool = False
    # bag (multi-hot) features: {"name", "table", "cardinality", "pooling"}; a table shared by
    # several bags has one cardinality; empty for one-hot-only datasets
    bags: list[dict[str, Any]] = field(default_factory=list)

    @property
    def bag_names(self) -> list[str]:
        return [b["name"] for b in self.bags]

    @property
    def num_features(self) -> int:
        return len(self.feature_names)

    @property
    def num_dense(self) -> int:
        return len(self.dense_names)

    def validate(self, where: str = "manifest") -> None:
        if len(self.cardinalities) != len(self.feature_names):
            raise DatasetError(f"{where}: {len(self.feature_names)} feature_names but "
                               f"{len(self.cardinalities)} cardinalities")
        for name, card in zip(self.feature_names, self.cardinalities):
            if card < 1:
                raise DatasetError(f"{where}: feature {name!r} has cardinality {card}")
        for split, rng in self.splits.items():
            if len(rng) != 2 or not 0 <= rng[0] <= rng[1] <= self.num_rows:
                raise DatasetError(f"{where}: split {split!r}={rng} is not a range within "
                                   f"0..{self.num_rows}")
        if not 0.0 < self.click_rate < 1.0:
            raise DatasetError(f"{where}: click_rate {self.click_rate} must be in (0, 1)")
        tables: dict[str, int] = {}
        for b in self.bags:
            if not isinstance(b, dict) or set(b) != {"name", "table", "cardinality", "pooling"}:
                raise DatasetError(f"{where}: bag entry {b!r} must have exactly name, table, "
                                   f"cardinality, pooling")
            if b["name"] in self.feature_names or self.bag_names.count(b["name"]) > 1:
                raise DatasetError(f"{where}: bag feature {b['name']!r} is named twice")
            if int(b["cardinality"]) < 1 or b["pooling"] not in POOLINGS:
                raise DatasetError(f"{where}: bag feature {b['name']!r}: cardinality "
                                   f"{b['cardinality']} must be >= 1, pooling {b['pooling']!r} "
                                   f"one of {POOLINGS}")
            if tables.setdefault(b["table"], int(b["cardinality"])) != int(b["cardinality"]):
                raise DatasetError(f"{where}: bag feature {b['name']!r} shares table "
                                   f"{b['table']!r} with a different cardinality")

    def to_json(self) -> str:
        d = asdict(self)
        if not d["bags"]:              # one-hot-only manifests stay byte-identical to before
            del d["bags"]
        return json.dumps(d, indent=2, sort_keys=True)

    @classmethod
    def from_file(cls, path: Path) -> "Manifest":
        try:
            raw = json.loads(Path(path).read_text())
        except json.JSONDecodeError as e:
            raise DatasetError(f"{path}: not valid JSON (line {e.lineno}): {e.msg}") from None
        except UnicodeDecodeError:
            raise DatasetError(f"{path}: not a text file (not UTF-8)") from None
        if not isinstance(raw, dict):
            raise DatasetError(f"{path}: not a manifest (a JSON object), got {type(raw).__name__}")
        known = set(cls.__dataclass_fields__)
        unknown = set(raw) - known
        if unknown:
            raise DatasetError(f"{path}: unknown manifest keys {sorted(unknown)}")
        try:
            return cls(**raw)
        except TypeError as e:
            raise DatasetError(f"{path}: {e}") from None


@dataclass
class PreparedDataset:
    path: Path
    manifest: Manifest
    dense: np.ndarray
    ids: np.ndarray
    labels: np.ndarray
    bags: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)  # (values, offsets)

    def split(self, name: str) -> tuple[int, int]:
        if name not in self.manifest.splits:
            raise DatasetError(f"{self.path}: no split {name!r}; has {sorted(self.manifest.splits)}")
        a, b = self.manifest.splits[name]
        return int(a), int(b)


def open_dataset(path: str | os.PathLike) -> PreparedDataset:
    """Open a prepared dataset memory-mapped; refuse anything missing or half-written."""
    p = Path(path)
    if not p.exists():
        raise DatasetError(f"dataset directory {p} does not exist (prepare it with "
                           f"`fiited-data generate` or `fiited-data prepare`)")
    mpath = p / MANIFEST
    if not mpath.is_file():
        raise DatasetError(f"{p} has no {MANIFEST}: not a prepared dataset, or its preparation "
                           f"did not finish")
    m = Manifest.from_file(mpath)
    if not m.complete:
        raise DatasetError(f"{mpath}: complete=false, the dataset was not fully written")
    if m.format_version != FORMAT_VERSION:
        raise DatasetError(f"{mpath}: format_version {m.format_version}, this code reads "
                           f"{FORMAT_VERSION}; prepare the dataset again")
    m.validate(str(mpath))
    arrays = {}
    for name in ARRAYS:
        f = p / f"{name}.npy"
        if not f.is_file():
            raise DatasetError(f"{p}: {f.name} is missing")
        try:
            arrays[name] = np.load(f, mmap_mode="r")
        except (ValueError, OSError, EOFError) as e:
            raise DatasetError(f"{f}: not a readable .npy array, truncated or corrupt "
                               f"({str(e).splitlines()[0] if str(e) else type(e).__name__}); "
                               f"prepare the dataset again") from None
    dense, ids, labels = arrays["dense"], arrays["ids"], arrays["labels"]
    want = {"dense": (m.num_rows, m.num_dense), "ids": (m.num_rows, m.num_features),
            "labels": (m.num_rows,)}
    for name, arr in arrays.items():
        if arr.shape != want[name]:
            raise DatasetError(f"{p}/{name}.npy has shape {arr.shape}, manifest says {want[name]}")
    if ids.dtype.kind not in "iu":
        raise DatasetError(f"{p}/ids.npy has dtype {ids.dtype}, want an integer type")
    return PreparedDataset(p, m, dense, ids, labels, _open_bags(p, m))


def _open_bags(p: Path, m: Manifest) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Each bag's memmapped (values, offsets), checked against the manifest (ends only: the
    loader checks ids per window, as for ``ids.npy``)."""
    out = {}
    for b in m.bags:
        arrs = []
        for fname in bag_files(b["name"]):
            f = p / fname
            if not f.is_file():
                raise DatasetError(f"{p}: {fname} is missing (bag feature {b['name']!r})")
            try:
                arrs.append(np.load(f, mmap_mode="r"))
            except (ValueError, OSError, EOFError):
                raise DatasetError(f"{f}: not a readable .npy array; prepare the dataset "
                                   f"again") from None
        values, offsets = arrs
        if values.ndim != 1 or values.dtype.kind not in "iu":
            raise DatasetError(f"{p}/{bag_files(b['name'])[0]}: want integer [V], got "
                               f"{values.dtype} {values.shape}")
        if offsets.shape != (m.num_rows + 1,) or offsets.dtype != np.int64:
            raise DatasetError(f"{p}/{bag_files(b['name'])[1]}: want int64 [{m.num_rows + 1}], "
                               f"got {offsets.dtype} {offsets.shape}")
        if int(offsets[0]) != 0 or int(offsets[-1]) != len(values):
            raise DatasetError(f"{p}/{bag_files(b['name'])[1]}: offsets run "
                               f"{int(offsets[0])}..{int(offsets[-1])}, want 0..{len(values)}")
        out[b["name"]] = (values, offsets)
    return out


class DatasetWriter:
    """Write arrays of a known row count in chunks; publish atomically on ``close``.

    Use as a context manager: an exception inside the block removes the temporary directory
    and leaves any earlier dataset at ``out`` untouched.
    """

    def __init__(self, out: str | os.PathLike, num_rows: int, num_features: int, num_dense: int,
                 id_dtype: str = "int32", overwrite: bool = False) -> None:
        self.out = Path(out)
        if self.out.exists() and not overwrite:
            raise DatasetError(f"{self.out} already exists (pass overwrite to replace it)")
        check_replaceable(self.out)
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = Path(tempfile.mkdtemp(prefix=f".{self.out.name}.partial-", dir=self.out.parent))
        self.num_rows = int(num_rows)
        self.dense = np.lib.format.open_memmap(self.tmp / "dense.npy", mode="w+",
                                               dtype=np.float32, shape=(num_rows, num_dense))
        self.ids = np.lib.format.open_memmap(self.tmp / "ids.npy", mode="w+",
                                             dtype=np.dtype(id_dtype),
                                             shape=(num_rows, num_features))
        self.labels = np.lib.format.open_memmap(self.tmp / "labels.npy", mode="w+",
                                                dtype=np.uint8, shape=(num_rows,))
        self.id_dtype = id_dtype
        self.written = 0
        self._closed = False

    def write(self, start: int, dense: np.ndarray | None, ids: np.ndarray,
              labels: np.ndarray) -> None:
        n = len(labels)
        if start < 0 or start + n > self.num_rows:
            raise DatasetError(f"chunk [{start}, {start + n}) outside 0..{self.num_rows}")
        if dense is not None and self.dense.shape[1]:
            self.dense[start:start + n] = dense
        self.ids[start:start + n] = ids
        self.labels[start:start + n] = labels
        self.written += n

    def add_bag(self, name: str, values: np.ndarray, offsets: np.ndarray) -> None:
        """Write one bag feature whole (``offsets`` int64 [num_rows + 1]); the manifest's
        ``bags`` must name it."""
        offsets = np.asarray(offsets, dtype=np.int64)
        if offsets.shape != (self.num_rows + 1,) or offsets[0] != 0 or \
                offsets[-1] != len(values) or (np.diff(offsets) < 0).any():
            raise DatasetError(f"bag {name!r}: offsets must be non-decreasing int64 "
                               f"[{self.num_rows + 1}] from 0 to len(values)={len(values)}")
        vf, of = bag_files(name)
        np.save(self.tmp / vf, np.ascontiguousarray(values))
        np.save(self.tmp / of, offsets)

    def add_bags(self, bags: Iterable[tuple[dict[str, Any], np.ndarray, np.ndarray]]
                 ) -> list[dict[str, Any]]:
        """``add_bag`` each (manifest bag entry, values, offsets); returns the entries, for the
        manifest's ``bags``."""
        specs = []
        for spec, values, offsets in bags:
            self.add_bag(spec["name"], values, offsets)
            specs.append(spec)
        return specs

    def close(self, manifest: Manifest) -> PreparedDataset:
        """Flush, write the manifest last, and rename into place."""
        if manifest.num_rows != self.num_rows:
            raise DatasetError(f"manifest num_rows {manifest.num_rows} != written {self.num_rows}")
        manifest.id_dtype = self.id_dtype
        manifest.validate("manifest being written")
        for arr in (self.dense, self.ids, self.labels):
            arr.flush()
        del self.dense, self.ids, self.labels
        manifest.complete = True
        manifest.created = manifest.created or time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        tmp_manifest = self.tmp / (MANIFEST + ".tmp")
        tmp_manifest.write_text(manifest.to_json())
        os.replace(tmp_manifest, self.tmp / MANIFEST)
        if self.out.exists():
            check_replaceable(self.out)        # again: it may have changed while we wrote
            old = self.out.with_name(f".{self.out.name}.old-{os.getpid()}")
            os.replace(self.out, old)
            os.replace(self.tmp, self.out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(self.tmp, self.out)
        self._closed = True
        return open_dataset(self.out)

    def abort(self) -> None:
        if not self._closed:
            shutil.rmtree(self.tmp, ignore_errors=True)
            self._closed = True

    def __enter__(self) -> "DatasetWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None or not self._closed:
            self.abort()


def check_replaceable(path: str | os.PathLike) -> None:
    """Refuse to replace ``path`` unless it is absent, an empty directory, or a prepared
    dataset (a readable manifest and only the files this format writes), so that
    ``--overwrite`` can never delete a user's own folder."""
    p = Path(path)
    if not p.exists() and not p.is_symlink():
        return
    if p.is_symlink() or not p.is_dir():
        raise DatasetError(f"{p} is not a directory; refusing to replace it (remove it "
                           f"yourself or choose another --out)")
    entries = sorted(e.name for e in p.iterdir())
    if not entries:
        return
    if MANIFEST not in entries:
        raise DatasetError(f"{p} is not a prepared dataset (no {MANIFEST}); --overwrite "
                           f"replaces only prepared datasets, refusing to delete it")
    try:
        Manifest.from_file(p / MANIFEST)
    except (DatasetError, OSError, UnicodeDecodeError) as e:
        raise DatasetError(f"{p}: its {MANIFEST} is not a valid manifest ({e}); --overwrite "
                           f"replaces only prepared datasets, refusing to delete it") from None
    others = [e for e in entries if not _is_dataset_file(e)]
    if others:
        shown = ", ".join(others[:5]) + (", ..." if len(others) > 5 else "")
        raise DatasetError(f"{p} holds files a prepared dataset does not ({shown}); "
                           f"--overwrite replaces only prepared datasets, refusing to delete it")


def fingerprint(parts: Iterable[Any]) -> str:
    """A short stable hash of what made a dataset (file sizes/mtimes or contents, options)."""
    h = hashlib.sha256()
    for p in parts:
        h.update(json.dumps(p, sort_keys=True, default=str).encode())
        h.update(b"\0")
    return h.hexdigest()[:16]
