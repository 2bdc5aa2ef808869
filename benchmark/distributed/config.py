"""Settings of a distributed run that are not model or data: backend, timeouts, init values.

Read from ``cfg.train.dist`` when the harness config has that node, else from environment
variables (``FIITED_DIST_BACKEND``, ``FIITED_DIST_TIMEOUT_S``, ``FIITED_DIST_INIT``), so
that they work under any launcher without a config change.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, fields
from typing import Any, Mapping, Optional

BACKENDS = ("auto", "gloo", "nccl")
INIT_VALUES = ("global", "local")


@dataclass
class DistConfig:
    """``backend: auto`` = NCCL for CUDA devices, gloo otherwise.

    ``timeout_s`` bounds every collective: a rank that died or diverged makes the others fail
    after this long instead of hanging. ``init_values: global`` draws each rank's initial
    embedding values from the same random stream as a 1-process run (bitwise-equal starts,
    at the cost of generating the stream up to the rank's last table once);
    ``local`` lets each rank's method draw its own (faster start, statistically equivalent).
    """

    backend: str = "auto"
    timeout_s: float = 600.0
    init_values: str = "global"

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"distributed backend {self.backend!r} is not one of {BACKENDS} "
                             f"(FIITED_DIST_BACKEND or train.dist.backend)")
        if not self.timeout_s > 0:
            raise ValueError(f"distributed timeout_s must be > 0, got {self.timeout_s} "
                             f"(FIITED_DIST_TIMEOUT_S or train.dist.timeout_s)")
        if self.init_values not in INIT_VALUES:
            raise ValueError(f"distributed init_values {self.init_values!r} is not one of "
                             f"{INIT_VALUES} (FIITED_DIST_INIT or train.dist.init_values)")

    @classmethod
    def resolve(cls, node: Optional[Mapping[str, Any]] = None,
                env: Optional[Mapping[str, str]] = None) -> "DistConfig":
        """Config node first, then environment, then the defaults above."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for key, var, cast in (("backend", "FIITED_DIST_BACKEND", str),
                               ("timeout_s", "FIITED_DIST_TIMEOUT_S", float),
                               ("init_values", "FIITED_DIST_INIT", str)):
            if var in env:
                try:
                    values[key] = cast(env[var])
                except ValueError:
                    raise ValueError(f"environment variable {var}={env[var]!r} is not a "
                                     f"valid {cast.__name__}") from None
        if node:
            known = {f.name for f in fields(cls)}
            unknown = sorted(set(node) - known)
            if unknown:
                raise ValueError(f"train.dist has unknown keys {unknown}; known: {sorted(known)}")
            values.update({k: v for k, v in node.items() if v is not None})
        return cls(**values)
