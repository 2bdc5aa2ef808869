"""The fused FIITED embedding step: entries in, addresses read inside the kernels.

The unfused path (``lookup`` over ``addr[entries]`` with a present mask, then the utility's
accumulating ``index_put_`` over [N, K] in the sink) stays the reference and the fallback.

CPU (on by default): two native passes over the batch (gather, then an update grouped by entry
that also credits the utility), with the same sums in the same order as the unfused path, so
it matches it bit for bit. Only where the native core runs: float32 pool, the ``cpu`` backend,
sizes within 32-bit packing. ``FIITED_FUSED=0`` or ``set_enabled(False)`` turns it off.

CUDA (opt-in, ``FIITED_FUSED_CUDA=1``): the Triton twins in ``triton_fused.py``, equal to the
reference to float rounding; tested under ``TRITON_INTERPRET=1`` only, never yet on a GPU,
hence off by default.
"""
from __future__ import annotations

import os
from typing import Callable, Optional

import torch

from fiited.kernels import cpu_native
from fiited.optim import SparseOptimConfig

_ENABLED = os.environ.get("FIITED_FUSED", "1") != "0"
_CUDA = os.environ.get("FIITED_FUSED_CUDA", "0") == "1"
CREDITS = {"freq_grad": 0, "freq": 1}   # utility kinds credited inside the update


def set_enabled(on: bool) -> None:
    """Use the fused step where it applies (True), or always the unfused path (False)."""
    global _ENABLED
    _ENABLED = bool(on)


def applies(pool: torch.Tensor, addr: torch.Tensor, entries: torch.Tensor,
            opt: SparseOptimConfig) -> bool:
    """Whether the fused step can run these tensors (else: the unfused path)."""
    if not (_ENABLED and pool.dtype == torch.float32 and addr.dtype == torch.int32
            and entries.dtype == torch.int64 and pool.is_contiguous() and addr.is_contiguous()
            and opt.name in ("sgd", "rowwise_adagrad")):
        return False
    return _kernels_for(pool) is not None and (pool.device.type != "cpu" or (
        entries.numel() < 2 ** 32 and addr.shape[0] <= 2 ** 32))


def _kernels_for(pool: torch.Tensor) -> str | None:
    """'native' (CPU), 'triton' (CUDA, opt-in) or None: which fused kernels take ``pool``."""
    from fiited import kernels

    backend = kernels.backend_name(pool.device)
    if pool.device.type == "cpu" and backend == "cpu" and cpu_native.library() is not None:
        return "native"
    if pool.device.type == "cuda" and backend == "triton" and _CUDA:
        return "triton"
    return None


def _gather(pool: torch.Tensor, addr: torch.Tensor, entries: torch.Tensor) -> torch.Tensor:
    n, k = entries.numel(), addr.shape[1]
    p, c = pool.shape
    out = torch.empty(n, k * c, dtype=pool.dtype)
    if n == 0 or c == 0:
        return out.zero_()
    code = cpu_native.library().fiited_fused_gather(
        pool.data_ptr(), p, c, addr.data_ptr(), addr.shape[0], k, entries.data_ptr(), n,
        out.data_ptr(), torch.get_num_threads())
    if code <= -3:
        i = -3 - code
        raise ValueError(f"entries[{i}] = {int(entries[i])} is out of range for an entry table "
                         f"of {addr.shape[0]} entries")
    if code >= 0:
        raise ValueError(f"address of occurrence {code} (entry {int(entries[code // k])}, chunk "
                         f"{code % k}) is out of range for a pool of {p} rows")
    return out


def _any_gather(which: str | None, pool, addr, entries) -> torch.Tensor:
    if which == "triton":
        from fiited.kernels import triton_fused
        return triton_fused.fused_gather(pool, addr, entries)
    return _gather(pool, addr, entries)


class _FusedLookup(torch.autograd.Function):
    @staticmethod
    def forward(ctx, anchor, pool, state, addr, entries, opt, row_state, credit):  # noqa: D401
        ctx.pool, ctx.state, ctx.addr, ctx.opt = pool, state, addr, opt
        ctx.row_state, ctx.credit = row_state, credit
        ctx.save_for_backward(entries)
        ctx.kernels = _kernels_for(pool)
        return _any_gather(ctx.kernels, pool, addr, entries)

    @staticmethod
    def backward(ctx, grad_out):
        (entries,) = ctx.saved_tensors
        grad = grad_out.contiguous()
        if grad.dtype != torch.float32:
            grad = grad.float()
        pool, state, addr, opt = ctx.pool, ctx.state, ctx.addr, ctx.opt
        n, k, c = entries.numel(), addr.shape[1], pool.shape[1]
        if grad.shape != (n, k * c):
            raise ValueError(f"grad must be [{n}, {k * c}], got {tuple(grad.shape)}")
        util, scale, kind = None, 1.0, 0
        if ctx.credit is not None:
            util, scale_fn, kind = ctx.credit
            scale = float(scale_fn())
        adagrad = opt.name == "rowwise_adagrad"
        if ctx.kernels == "triton":
            from fiited.kernels import triton_fused
            kinds = {v: name for name, v in CREDITS.items()}
            triton_fused.fused_update(pool, state, addr, entries, grad, opt, ctx.row_state,
                                      util, scale, kinds[kind])
        elif n and c:
            code = cpu_native.library().fiited_fused_update(
                pool.data_ptr(), c, state.data_ptr() if adagrad else None, addr.data_ptr(),
                addr.shape[0], k, entries.data_ptr(), n, grad.data_ptr(), int(adagrad),
                int(ctx.row_state and adagrad), float(opt.lr), float(opt.eps),
                None if util is None else util.data_ptr(), scale, int(kind),
                torch.get_num_threads())
            if code != -1:  # pragma: no cover - applies() checked the sizes
                raise RuntimeError(f"fused update failed with code {code}")
        return (None,) * 8


def fused_lookup(pool: torch.Tensor, state: torch.Tensor, addr: torch.Tensor,
                 entries: torch.Tensor, opt: SparseOptimConfig, row_state: bool,
                 credit: Optional[tuple[torch.Tensor, Callable[[], float], str]] = None
                 ) -> torch.Tensor:
    """out [N, K*C] of ``entries`` [N] (-1: no entry, reads zeros) through ``addr`` [E, K].

    With grad on, backward updates ``pool`` and ``state`` in place (state per entry when
    ``row_state``) and, given ``credit`` = (util [E, K] float32, scale (read during backward),
    kind in ``CREDITS``), adds each occurrence's credit to util[entry, k].
    """
    entries = entries.contiguous()
    if not torch.is_grad_enabled():
        return _any_gather(_kernels_for(pool), pool, addr, entries)
    if credit is not None:
        util, scale_fn, kind = credit
        if kind not in CREDITS or util.dtype != torch.float32 or not util.is_contiguous() \
                or util.shape != addr.shape:
            raise ValueError(f"credit needs a contiguous float32 util {tuple(addr.shape)} and a "
                             f"kind in {tuple(CREDITS)}")
        credit = (util, scale_fn, CREDITS[kind])
    if opt.name == "rowwise_adagrad":
        want = addr.shape[0] if row_state else pool.shape[0]
        if state.shape != (want,) or state.dtype != torch.float32 or not state.is_contiguous():
            raise ValueError(f"rowwise_adagrad state must be contiguous float32 [{want}], got "
                             f"{state.dtype} {tuple(state.shape)}")
    anchor = torch.empty(0, device=pool.device, requires_grad=True)
    return _FusedLookup.apply(anchor, pool, state, addr, entries, opt, row_state, credit)
