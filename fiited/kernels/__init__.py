"""The shared kernel backend: every method is gather + fused backward_update over a chunk pool.

Multi-hot features use the pooled pair ``bag_gather`` / ``bag_backward_update`` (``bag_lookup``
for autograd); one-hot features keep the plain pair, untouched.

Dispatch: ``reference`` (pure torch, the spec) is always available; faster backends register
themselves in ``_BACKENDS`` by device type. ``FIITED_KERNELS=reference`` or
``set_backend("reference")`` forces the reference everywhere. Imports only torch (triton optional).
"""
from __future__ import annotations

import os
from typing import Callable

import torch

from fiited.kernels import reference
from fiited.kernels.lookup import bag_lookup, lookup

_FORCED: str | None = os.environ.get("FIITED_KERNELS") or None
# device type -> (name, gather, backward_update); filled by optional backends below.
_BACKENDS: dict[str, tuple[str, Callable, Callable]] = {}
# device type -> (bag_gather, bag_backward_update): the pooled (multi-hot) pair, same dispatch.
_BAG_BACKENDS: dict[str, tuple[Callable, Callable]] = {}


def set_backend(name: str | None) -> None:
    """Force a backend by name ('reference') or go back to dispatch by device (None/'auto')."""
    global _FORCED
    _FORCED = None if name in (None, "auto") else name


def backend_name(device: torch.device | str) -> str:
    dev = torch.device(device).type
    if _FORCED == "reference" or dev not in _BACKENDS:
        return "reference"
    return _BACKENDS[dev][0]


def _impl(device: torch.device) -> tuple[Callable, Callable]:
    if _FORCED == "reference" or device.type not in _BACKENDS:
        return reference.gather, reference.backward_update
    _, g, u = _BACKENDS[device.type]
    return g, u


def gather(pool: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    return _impl(pool.device)[0](pool, rows)


def backward_update(pool, state, rows, grad, opt, state_rows=None):
    """The fused update; ``state_rows`` [N] (optional): Adagrad state per logical row."""
    update = _impl(pool.device)[1]
    if state_rows is None:  # backends registered before state_rows need not take it
        return update(pool, state, rows, grad, opt)
    return update(pool, state, rows, grad, opt, state_rows)


def register_backend(device_type: str, name: str, gather_fn: Callable, update_fn: Callable) -> None:
    _BACKENDS[device_type] = (name, gather_fn, update_fn)


def _bag_impl(device: torch.device) -> tuple[Callable, Callable]:
    if _FORCED == "reference" or device.type not in _BAG_BACKENDS:
        return reference.bag_gather, reference.bag_backward_update
    return _BAG_BACKENDS[device.type]


def bag_gather(pool, rows, offsets, weights=None, mode="sum"):
    """Pooled lookup of bags [B, K*C]; the contract is in ``reference.py``."""
    return _bag_impl(pool.device)[0](pool, rows, offsets, weights, mode)


def bag_backward_update(pool, state, rows, offsets, grad, opt, weights=None, mode="sum",
                        state_rows=None):
    """The fused update for bags; returns per-occurrence norms [N, K] of gradient shares."""
    update = _bag_impl(pool.device)[1]
    if state_rows is None:
        return update(pool, state, rows, offsets, grad, opt, weights, mode)
    return update(pool, state, rows, offsets, grad, opt, weights, mode, state_rows)


def register_bag_backend(device_type: str, gather_fn: Callable, update_fn: Callable) -> None:
    _BAG_BACKENDS[device_type] = (gather_fn, update_fn)


def _register_builtin_backends() -> None:
    """CPU tensors -> the fused CPU path; CUDA tensors -> Triton when it is installed.

    Triton is imported on the first CUDA call, not here, so importing the kernels stays cheap
    and works with torch alone.
    """
    import importlib.util

    from fiited.kernels import cpu

    register_backend("cpu", "cpu", cpu.gather, cpu.backward_update)
    register_bag_backend("cpu", cpu.bag_gather, cpu.bag_backward_update)
    if importlib.util.find_spec("triton") is not None:
        def triton_gather(pool, rows):
            from fiited.kernels import triton_kernels
            return triton_kernels.gather(pool, rows)

        def triton_update(*args):
            from fiited.kernels import triton_kernels
            return triton_kernels.backward_update(*args)

        def triton_bag_gather(*args):
            from fiited.kernels import triton_kernels
            return triton_kernels.bag_gather(*args)

        def triton_bag_update(*args):
            from fiited.kernels import triton_kernels
            return triton_kernels.bag_backward_update(*args)

        register_backend("cuda", "triton", triton_gather, triton_update)
        register_bag_backend("cuda", triton_bag_gather, triton_bag_update)


_register_builtin_backends()


__all__ = ["backend_name", "backward_update", "bag_backward_update", "bag_gather", "bag_lookup",
           "gather", "lookup", "register_backend", "register_bag_backend", "set_backend"]
