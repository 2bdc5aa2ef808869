"""One exception type for mistakes the user can fix (a config value, a path, a file), so that
every entry point can show them as one line with exit code 2 instead of a traceback."""
from __future__ import annotations

EXIT_USER_ERROR = 2


class UserError(ValueError):
    """Bad input from the user: a config value, a missing or malformed file, a checkpoint that
    does not fit. ``str()`` names the thing at fault. A ValueError, so older handlers still
    catch it."""


def one_line(exc: BaseException) -> str:
    """The message as one line: the first line of the exception, then the first line of its
    cause when that adds something (OmegaConf puts the key that failed there)."""
    parts = []
    e: BaseException | None = exc
    while e is not None and len(parts) < 3:
        text = str(e).strip()
        first = text.splitlines()[0].strip() if text else type(e).__name__
        full_key = [ln.split(":", 1)[1].strip() for ln in text.splitlines()[1:]
                    if ln.strip().startswith("full_key:")]
        if full_key and full_key[0] not in first:
            first += f" (key {full_key[0]})"
        first = first.rstrip(".") if e.__cause__ is not None else first
        if not any(first in p for p in parts):
            parts.append(first)
        e = e.__cause__
    return ": ".join(parts)
