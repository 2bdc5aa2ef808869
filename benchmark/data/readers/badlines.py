"""Malformed input: stop with file, line and reason, or skip the line and count it.

Real click logs are tens of gigabytes; one bad line in the middle must either stop the prepare
with a message that lets the user find it (``path:line: reason``) or, when they ask for it, be
dropped and accounted for in ``manifest.stats`` so that a quietly shrunk dataset is visible.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from benchmark.data.readers.text import FieldBlock

MODES = ("error", "skip")
EXAMPLES = 10          # line numbers kept per reason in skip mode


class InputError(ValueError):
    """An input is missing, unreadable, misnamed, or not in the expected layout."""


class BadLineError(InputError):
    """A malformed line in strict mode; ``str()`` is ``path:line: reason``."""

    def __init__(self, path: str | Path, line: int, reason: str) -> None:
        self.path, self.line, self.reason = str(path), int(line), reason
        super().__init__(f"{self.path}:{self.line}: {reason}")


@dataclass
class BadLineLog:
    """The policy (``error`` or ``skip``) and, in skip mode, what was skipped."""

    mode: str = "error"
    counts: dict[str, int] = field(default_factory=dict)      # reason kind -> lines
    examples: dict[str, list[str]] = field(default_factory=dict)  # kind -> ["file:line", ...]

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"on_bad_lines={self.mode!r}: must be one of {MODES}")

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def resolve(self, block: "FieldBlock", record: bool) -> np.ndarray | None:
        """Raise on the block's first bad line, or return the keep-mask (None: keep all)."""
        bad = block.problem >= 0
        if not bad.any():
            return None
        if self.mode == "error":
            i = int(np.flatnonzero(bad)[0])
            raise BadLineError(block.path, int(block.lines[i]), block.describe(i))
        if record:
            codes = np.unique(block.problem[bad])
            rows = np.flatnonzero(bad)
            for code in codes:
                kind = block.reasons[code][0]
                hit = rows[block.problem[rows] == code]
                self.counts[kind] = self.counts.get(kind, 0) + len(hit)
                ex = self.examples.setdefault(kind, [])
                for r in hit[: max(0, EXAMPLES - len(ex))]:
                    ex.append(f"{Path(block.path).name}:{int(block.lines[r])}")
        return ~bad

    def record_one(self, path: str | Path, line: int, kind: str, detail: str) -> None:
        """Side tables are read line by line; they report through here."""
        if self.mode == "error":
            raise BadLineError(path, line, f"{kind}: {detail}")
        self.counts[kind] = self.counts.get(kind, 0) + 1
        ex = self.examples.setdefault(kind, [])
        if len(ex) < EXAMPLES:
            ex.append(f"{Path(path).name}:{line}")

    def as_stats(self) -> dict:
        return {"mode": self.mode, "skipped": self.total, "by_reason": dict(self.counts),
                "examples": {k: list(v) for k, v in self.examples.items()}}
