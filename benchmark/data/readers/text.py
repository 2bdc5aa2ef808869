"""Delimited text read in blocks of whole lines and split into fields with numpy.

A block is tokenised at once: newline and separator positions come from ``np.flatnonzero``
over the raw bytes, so the per-line cost is a few vectorised passes and no Python code runs
per line. Every line keeps its physical 1-based line number so that errors can name it.
Gzip input is recognised by its magic bytes, whatever the file is called.
"""
from __future__ import annotations

import gzip
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Iterator

import numpy as np

from benchmark.data.readers.badlines import InputError

NEWLINE, CR = 10, 13
SNIPPET = 40                            # characters of a bad field shown in messages
COLUMN_COUNT = "wrong column count"
NUL_BYTE = "NUL byte in line"
WINDOW_MAX = 24                         # widest field the parsers read in one gather


def open_input(path: Path) -> tuple[BinaryIO, BinaryIO]:
    """(stream to read, raw file whose ``tell()`` measures progress)."""
    if not path.is_file():
        raise InputError(f"{path}: input file does not exist")
    raw = open(path, "rb")
    magic = raw.read(2)
    raw.seek(0)
    if magic == b"\x1f\x8b":
        return gzip.GzipFile(fileobj=raw, mode="rb"), raw
    return raw, raw


@dataclass
class LineBlock:
    data: bytes               # whole lines, each ending in b"\n"
    first_line: int           # 1-based line number of the first line in ``data``
    position: int             # bytes of the (possibly compressed) file consumed so far


def read_blocks(path: Path, block_bytes: int, skip_lines: int = 0) -> Iterator[LineBlock]:
    """Yield blocks of whole lines; a last line without newline gets one."""
    stream, raw = open_input(path)
    line = 1
    carry = b""
    with raw, stream:
        while True:
            try:
                chunk = stream.read(block_bytes)
            except (EOFError, OSError, zlib.error) as e:
                what = "truncated or corrupt gzip data" if stream is not raw else "read error"
                raise InputError(f"{path}: {what} near line {line}: {e}") from None
            if not chunk:
                if carry:
                    yield LineBlock(carry + b"\n", line, raw.tell())
                return
            data = carry + chunk
            cut = data.rfind(b"\n")
            if cut < 0:                     # one line longer than a block: keep reading
                carry = data
                continue
            block, carry = data[: cut + 1], data[cut + 1:]
            while skip_lines and block:     # a header: drop it, keep its line number
                block = block[block.index(b"\n") + 1:]
                skip_lines -= 1
                line += 1
            if block:
                yield LineBlock(block, line, raw.tell())
                line += block.count(b"\n")


def read_first_line(path: Path) -> str:
    """The header line (decoded as UTF-8, CR/LF stripped); '' for an empty file."""
    stream, raw = open_input(path)
    with raw, stream:
        return stream.readline().decode("utf-8", "replace").rstrip("\r\n")


@dataclass
class FieldBlock:
    """The fields of one block: byte ranges [starts, ends) into ``buf`` per (line, column).

    Line-major on purpose: parsers gather field bytes in this order, which walks the block
    buffer front to back (column-major gathers were 5x slower: one buffer pass per column).

    Lines with the wrong number of separators get empty fields and are flagged at once; the
    column parsers flag further problems. Only the first problem of a line is kept (columns
    are checked left to right), which is the one its message names.
    """

    path: Path
    buf: np.ndarray                      # uint8 bytes of the block
    lines: np.ndarray                    # int64 [n] physical line numbers
    line_starts: np.ndarray              # int64 [n]
    line_ends: np.ndarray                # int64 [n], newline and CR excluded
    starts: np.ndarray                   # int64 [n, ncols]
    ends: np.ndarray                     # int64 [n, ncols]
    columns: list[str]
    sep: int
    problem: np.ndarray = field(init=False)      # int32 [n]: index into reasons, -1 = fine
    reasons: list[tuple[str, int | None]] = field(default_factory=list)  # (kind, column)

    def __post_init__(self) -> None:
        self.problem = np.full(len(self.lines), -1, dtype=np.int32)
        self._windows: np.ndarray | None = None

    def windows(self, width: int) -> np.ndarray:
        """A [len(buf), width] view: row ``e`` = the ``width`` bytes ending just before
        ``buf[e]``, with '0' before the block start (a copy of buf with a '0' prefix, once)."""
        if width > WINDOW_MAX:
            raise ValueError(f"window width {width} > {WINDOW_MAX}")
        if self._windows is None:
            self._windows = np.concatenate([np.full(WINDOW_MAX, ord("0"), np.uint8), self.buf])
        src = self._windows[WINDOW_MAX - width:]
        return np.lib.stride_tricks.as_strided(src, shape=(len(self.buf) + 1, width),
                                               strides=(1, 1), writeable=False)

    def words(self) -> np.ndarray:
        """An unaligned little-endian uint64 view: element ``e + WINDOW_MAX - 8`` holds the 8
        bytes ending just before ``buf[e]`` (first byte lowest), '0' before the block."""
        self.windows(1)
        return np.ndarray(shape=(len(self._windows) - 7,), dtype="<u8",
                          buffer=self._windows, strides=(1,))

    def __len__(self) -> int:
        return len(self.lines)

    def flag(self, mask: np.ndarray, kind: str, column: int | None = None) -> None:
        """Record ``kind`` for the lines in ``mask`` that have no problem yet."""
        mask = np.asarray(mask, dtype=bool) & (self.problem < 0)
        if mask.any():
            self.reasons.append((kind, column))
            self.problem[mask] = len(self.reasons) - 1

    def flag_columns(self, bad: np.ndarray, kind: str, columns: list[int]) -> None:
        """``bad`` is [n, len(columns)]: flag each line at its leftmost bad column."""
        for j, col in enumerate(columns):
            if bad[:, j].any():
                self.flag(bad[:, j], kind, col)

    def span(self, cols: list[int]) -> tuple[np.ndarray, np.ndarray]:
        """(starts, ends) of ``cols`` as C-contiguous [n, k] (fancy ``[:, cols]`` is not)."""
        return np.take(self.starts, cols, axis=1), np.take(self.ends, cols, axis=1)

    def text(self, row: int, column: int | None = None) -> str:
        if column is None:
            a, b = self.line_starts[row], self.line_ends[row]
        else:
            a, b = self.starts[row, column], self.ends[row, column]
        return self.buf[a:b].tobytes().decode("utf-8", "replace")

    def describe(self, row: int) -> str:
        kind, col = self.reasons[self.problem[row]]
        if kind == COLUMN_COUNT:
            line = self.text(row)
            got = line.count(chr(self.sep)) + 1
            return (f"{kind}: {got} fields, expected {len(self.columns)}{self._sep_hint(line)} "
                    f"({_snippet(line)})")
        if col is None:
            return f"{kind} ({_snippet(self.text(row))})"
        return f"{kind} in column {self.columns[col]}: {_snippet(self.text(row, col))}"


    def _sep_hint(self, line: str) -> str:
        """Name the separator a line seems to use when it is not this format's."""
        names = {"\t": "tab", ",": "comma", ";": "semicolon", "|": "pipe", " ": "space",
                 ":": "colon"}
        want = names.get(chr(self.sep), repr(chr(self.sep)))
        for sep, name in names.items():
            if sep != chr(self.sep) and line.count(sep) + 1 >= len(self.columns) > 1:
                return f" (the line looks {name}-separated; this format is {want}-separated)"
        return ""


def _snippet(s: str) -> str:
    return repr(s if len(s) <= SNIPPET else s[:SNIPPET] + "...")


def tokenize(block: LineBlock, path: Path, columns: list[str], sep: bytes) -> FieldBlock:
    """Split a block of lines into fields; lines with a wrong field count are flagged."""
    ncols = len(columns)
    s = sep[0]
    buf = np.frombuffer(block.data, dtype=np.uint8)
    nl = np.flatnonzero(buf == NEWLINE)
    n = len(nl)
    line_starts = np.empty(n, dtype=np.int64)
    line_starts[0] = 0
    line_starts[1:] = nl[:-1] + 1
    line_ends = nl.astype(np.int64)
    has_cr = line_ends > line_starts
    has_cr[has_cr] = buf[line_ends[has_cr] - 1] == CR
    line_ends -= has_cr
    seps = np.flatnonzero(buf == s)
    before = np.searchsorted(seps, nl)          # separators before each line's newline
    first = np.empty(n, dtype=np.int64)         # index in seps of each line's first one
    first[0] = 0
    first[1:] = before[:-1]
    good = before - first == ncols - 1
    starts = np.repeat(line_starts[:, None], ncols, axis=1)
    ends = starts.copy()
    if good.all():
        gs = seps.reshape(n, ncols - 1)
        starts[:, 1:] = gs + 1
        ends[:, :-1] = gs
        ends[:, -1] = line_ends
    elif good.any():
        gs = seps[first[good][:, None] + np.arange(ncols - 1)]
        starts[good, 1:] = gs + 1
        ends[good, :-1] = gs
        ends[good, -1] = line_ends[good]
    lines = block.first_line + np.arange(n, dtype=np.int64)
    fb = FieldBlock(Path(path), buf, lines, line_starts, line_ends, starts, ends, list(columns), s)
    fb.flag(~good, COLUMN_COUNT)
    nul = np.flatnonzero(buf == 0)             # field parsers read byte 0 as padding
    if len(nul):
        fb.flag(np.isin(lines, lines[np.searchsorted(nl, nul)]), NUL_BYTE)
    return fb


def iter_field_blocks(path: Path, columns: list[str], sep: bytes, block_bytes: int,
                      header: bool = False) -> Iterator[tuple[FieldBlock, int]]:
    """(fields, bytes of the file consumed) per block; a header line is checked, then skipped."""
    if header:
        check_header(path, columns, sep)
    for block in read_blocks(path, block_bytes, skip_lines=1 if header else 0):
        yield tokenize(block, path, columns, sep), block.position


def check_header(path: Path, columns: list[str], sep: bytes) -> None:
    got = read_first_line(path).split(sep.decode())
    if got != list(columns):
        raise InputError(f"{path}:1: header {got} does not match the expected {list(columns)}")
