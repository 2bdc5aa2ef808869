"""Vectorised field parsers: labels, integers, hex, tokens and decimals straight from bytes.

Each parser takes a ``FieldBlock`` and column indices, gathers the fields right-aligned into
one [n, k, w] byte array (shorter fields left-padded with '0', which changes no number; w = the
longest field in the block), maps characters to digit values with a 256-entry table and
combines the digits with a few array operations (nibble packing for hex, Horner's rule for
decimals): no Python ``int()`` per field. Fields that do not parse are flagged on the block with
``kind`` (the bad-line reason) and come back as 0.
"""
from __future__ import annotations

import numpy as np

from benchmark.data.readers.text import WINDOW_MAX, FieldBlock

ZERO, MINUS, DOT = ord("0"), ord("-"), ord(".")
INVALID = 255
MISSING_KEY = np.uint64(2**64 - 1)     # raw key of "no value" (e.g. no side-table row)


def _lut(chars: str, values) -> np.ndarray:
    t = np.full(256, INVALID, dtype=np.uint8)
    for c, v in zip(chars, values):
        t[ord(c)] = v
    return t


DEC = _lut("0123456789", range(10))
HEX = _lut("0123456789abcdefABCDEF", list(range(16)) + list(range(10, 16)))
BAD_PAIR = 0xFFFF
LANE_HIGH = np.uint64(0xFF00FF00FF00FF00)     # set only in a BAD_PAIR lane
LANES_0_2 = np.uint64(0x0000FFFF0000FFFF)
LOW32 = np.uint64(0xFFFFFFFF)


def _pair_lut(single: np.ndarray, base: int) -> np.ndarray:
    """uint16 little-endian character pair (first char low) -> first*base + second.

    Byte 0 reads as digit 0: it is the padding before a field's first character (text
    with real NUL bytes is rejected by the tokenizer)."""
    single = single.copy()
    single[0] = 0
    lo, hi = np.meshgrid(np.arange(256), np.arange(256))     # [hi, lo]
    a, b = single[lo].astype(np.uint32), single[hi].astype(np.uint32)
    return np.where((a == INVALID) | (b == INVALID), BAD_PAIR, a * base + b) \
        .astype(np.uint16).reshape(-1)


DEC2 = _pair_lut(DEC, 10)        # two decimal digits -> 0..99
HEX2 = _pair_lut(HEX, 16)        # two hex digits -> 0..255
# per field length 0..8 within a word: the bytes that belong to the field (the last ones)
KEEP = np.array([0] + [(2**64 - 1) ^ (2**(8 * (8 - k)) - 1) for k in range(1, 9)],
                dtype=np.uint64)


def _chars(fb: FieldBlock, cols: list[int], width: int):
    """Fields right-aligned in [n, k, w] bytes ('0' before a field's first character).

    One gather from ``fb.windows``: w = the longest field in the block (<= width). Fields
    longer than ``width`` read as empty and are returned in ``long`` (they are bad).
    """
    s, e = fb.span(cols)
    lens = e - s
    long = lens > width
    lens = np.where(long, 0, lens)
    w = max(1, min(width, int(lens.max(initial=0))))
    mat = fb.windows(w)[e]
    real = np.arange(w) >= (w - lens)[..., None]
    mat = np.where(real, mat, np.uint8(ZERO))
    return mat, real, lens, long


def _digit_words(fb: FieldBlock, e: np.ndarray, lens: np.ndarray, nwords: int,
                 pairs: np.ndarray, hex_digits: bool) -> tuple[np.ndarray, list[np.ndarray]]:
    """Fields of ``lens`` <= 8*nwords characters ending at ``e``, 8 characters per word:
    (any bad character, [value of each word, most significant first]).

    Each word is one unaligned uint64 read; bytes before the field are zeroed (read as
    digit 0); its four character pairs go through a 65536-entry table (two digits at a time)
    and are combined per word.
    """
    view = fb.words()
    bad = np.zeros(lens.shape, dtype=bool)
    out = []
    for j in reversed(range(nwords)):              # j = 0: the last 8 characters
        keep = KEEP[lens if nwords == 1 else np.clip(lens - 8 * j, 0, 8)]
        u = view[e + (WINDOW_MAX - 8 - 8 * j)]
        u &= keep
        v = pairs[u.view(np.uint16)]               # [n, 4k]: pair values or BAD_PAIR
        x = v.view(np.uint64)                      # [n, k]: 16-bit lanes p0..p3, p0 lowest
        bad |= (x & LANE_HIGH) != 0
        if hex_digits:      # each pair is one byte: p0 p1 p2 p3 is the big-endian value
            out.append(v.astype(np.uint8).view(">u4").astype(np.uint64))
        else:               # base-100 digits, combined in the lanes (SWAR), in place:
            y = x * np.uint64(100)                 # lane0 = p0*100 + p1, lane2 = p2*100 + p3
            y += x >> np.uint64(16)
            y &= LANES_0_2
            x = y >> np.uint64(32)                 # value = lane0 * 10000 + lane2
            y *= np.uint64(10000)
            y += x
            y &= LOW32
            out.append(y)
    return bad, out


def _horner(d: np.ndarray, base: int) -> np.ndarray:
    """Digits [..., w] (most significant first) -> uint64 [...]; wraps past 2**64."""
    v = np.zeros(d.shape[:-1], dtype=np.uint64)
    b = np.uint64(base)
    for p in range(d.shape[-1]):
        v = v * b + d[..., p]
    return v


def labels01(fb: FieldBlock, col: int, kind: str = "bad label") -> np.ndarray:
    """A label is exactly '0' or '1'."""
    s, e = fb.starts[:, col], fb.ends[:, col]
    c = fb.buf[np.minimum(s, len(fb.buf) - 1)]
    ok = (e - s == 1) & ((c == ZERO) | (c == ZERO + 1))
    fb.flag(~ok, kind, col)
    return np.where(ok, c - ZERO, 0).astype(np.uint8)


def unsigned(fb: FieldBlock, cols: list[int], kind: str, empty: int | None = None) -> np.ndarray:
    """Decimal digits -> uint64 [n, k], exact up to 2**64-1; ``empty=None`` rejects ''."""
    s, e = fb.span(cols)
    lens_raw = e - s
    bad = lens_raw > 20
    lens = np.where(bad, 0, lens_raw)
    nwords = max(1, -(-int(lens.max(initial=0)) // 8))
    inv, words = _digit_words(fb, e, lens, nwords, DEC2, False)
    bad |= inv
    words = [np.zeros_like(words[0])] * (3 - nwords) + words        # [w2, w1, w0]
    low = words[1] * np.uint64(10**8) + words[2]                     # < 1e16
    # w2 * 1e16 + low overflows uint64 iff w2 > 1844 or (== 1844 and low > 6744073709551615)
    over = (words[0] > 1844) | ((words[0] == 1844) & (low > 6744073709551615))
    _flag_out_of_range(fb, cols, (over & ~bad) | (lens_raw > 20), "above 2**64-1")
    bad |= over
    v = words[0] * np.uint64(10**16) + low
    v = _empty(v, lens, bad, empty)
    return _done(fb, v, bad, kind, cols)


def _sign_and_digits(fb: FieldBlock, cols: list[int], max_digits: int):
    """(ends, lengths, leading '-', digit counts (0 where bad), bad) of each field: bad = more
    than ``max_digits`` digits, or a lone '-'."""
    s, e = fb.span(cols)
    lens = e - s
    neg = (lens > 0) & (fb.buf[np.minimum(s, len(fb.buf) - 1)] == MINUS)
    digits = lens - neg
    bad = (digits > max_digits) | (neg & (digits == 0))
    return e, lens, neg, np.where(bad, 0, digits), bad


def _flag_out_of_range(fb: FieldBlock, cols: list[int], over: np.ndarray, limit: str) -> None:
    """Fields of digits too long (or too large) to hold: 'out of range', not 'non-integer'.
    Only such fields are looked at one by one (they are bad lines, never the bulk)."""
    if not over.any():
        return
    digits = np.zeros(over.shape, dtype=bool)
    for r, j in zip(*np.nonzero(over)):
        text = fb.text(int(r), cols[int(j)])
        digits[r, j] = text.lstrip("-").isdigit() and text.isascii()
    fb.flag_columns(over & digits, f"integer out of range ({limit})", cols)


def signed(fb: FieldBlock, cols: list[int], kind: str, empty: int | None = None) -> np.ndarray:
    """Optional '-' then at most 18 decimal digits -> int64 [n, k]."""
    e, lens, neg, digits, bad = _sign_and_digits(fb, cols, 18)
    _flag_out_of_range(fb, cols, bad & (lens - neg > 18), "more than 18 digits")
    nwords = max(1, -(-int(digits.max(initial=0)) // 8))
    inv, words = _digit_words(fb, e, digits, nwords, DEC2, False)
    bad |= inv
    v = np.zeros(lens.shape, dtype=np.int64)
    for w in words:
        v = v * 10**8 + w.astype(np.int64)
    v = np.where(neg, -v, v)
    v = _empty(v, lens, bad, empty)
    return _done(fb, v, bad, kind, cols)


def hex64(fb: FieldBlock, cols: list[int], kind: str, empty: int | None = 0) -> np.ndarray:
    """Up to 16 hex digits -> uint64 [n, k]: DLRM's ``int(x, 16)`` (so '' and '0' are equal)."""
    v, lens, bad = _hex(fb, cols, 16)
    v = _empty(v, lens, bad, empty)
    return _done(fb, v, bad, kind, cols)


def token(fb: FieldBlock, cols: list[int], kind: str) -> np.ndarray:
    """An optional '-' and up to 14 hex digits (Avazu: '1fbe01fe', '1005', '-1') -> uint64,
    exact up to letter case: (length << 60) | (minus << 59) | value.

    Unlike ``int(x, 16)`` this keeps '0a' and 'a' apart; the empty field is its own value.
    """
    e, lens, neg, digits, bad = _sign_and_digits(fb, cols, 14)
    nwords = 1 if int(digits.max(initial=0)) <= 8 else 2
    inv, words = _digit_words(fb, e, digits, nwords, HEX2, True)
    bad |= inv
    v = words[0] if nwords == 1 else (words[0] << np.uint64(32)) | words[1]
    v |= (lens.astype(np.uint64) << np.uint64(60)) | (neg.astype(np.uint64) << np.uint64(59))
    return _done(fb, v, bad, kind, cols)


def _hex(fb: FieldBlock, cols: list[int], width: int):
    s, e = fb.span(cols)
    lens = e - s
    bad = lens > width
    lens = np.where(bad, 0, lens)
    nwords = 1 if int(lens.max(initial=0)) <= 8 else 2
    inv, words = _digit_words(fb, e, lens, nwords, HEX2, True)
    bad |= inv
    v = words[0] if nwords == 1 else (words[0] << np.uint64(32)) | words[1]
    return v, lens, bad


def decimal(fb: FieldBlock, cols: list[int], kind: str) -> np.ndarray:
    """Non-negative number with at most one '.' (e.g. '4', '3.5', '881250949') -> float64."""
    mat, _, lens, long = _chars(fb, cols, 18)
    dot = mat == DOT
    ndot = dot.sum(-1)
    w = mat.shape[-1]
    frac = np.where(ndot == 1, w - 1 - np.argmax(dot, axis=-1), 0)   # digits after the dot
    d = DEC[mat]
    inv = (d == INVALID) & ~dot
    bad = long | (lens == 0) | inv.any(-1) | (ndot > 1) | (lens == ndot)
    d[inv] = 0
    v = np.zeros(d.shape[:-1], dtype=np.uint64)
    for p in range(w):                                 # Horner, skipping the dot
        v = np.where(dot[..., p], v, v * np.uint64(10) + d[..., p])
    out = v.astype(np.float64) / 10.0 ** frac
    return _done(fb, out, bad, kind, cols)


def _empty(v: np.ndarray, lens: np.ndarray, bad: np.ndarray, empty: int | None) -> np.ndarray:
    """Empty fields become ``empty`` (they parse as 0 already), or are bad when it is None."""
    is_empty = lens == 0
    if empty is None:
        bad |= is_empty
        return v
    return v if empty == 0 else np.where(is_empty, v.dtype.type(empty), v)


def _done(fb: FieldBlock, v: np.ndarray, bad: np.ndarray, kind: str, cols: list[int]):
    if bad.any():
        fb.flag_columns(bad, kind, cols)
        v[bad] = 0
    return v
