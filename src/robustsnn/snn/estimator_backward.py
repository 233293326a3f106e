"""Backward passes of the gradient estimators that need per-element information.

The paper's estimators (BPTT with a fixed surrogate, BPTR) run through the fused kernels of
``snn/dynamics.py``. The estimators of the later attack literature need more than a scalar
surrogate: a width per layer, step and element (ASSG), statistics of the membranes (PDSG), the
threshold (threshold-relative widths, HART), the mean input current (RGA), or a different
graph (detached reset, the temporal cut of HART). They share one forward (the exact spiking
dynamics of ``dynamics._run``, so what is attacked is the real network) and one of two
backward passes:

* :class:`ElementwiseBPTT`: BPTT through the reset with a precomputed multiplier
  ``sg[t] = dS/dh`` per element (computed in the forward, where ASSG updates its moments, so
  passes without gradient never touch the state), optionally with the reset detached, or with
  the temporal path cut and the input gradient averaged over time (HART);
* :class:`RateGradient`: RGA's one factor per neuron, no recursion over time.

:class:`ElementwiseBPTT` also differentiates the threshold and the initial membrane, so
thresholds can train through a scale-invariant (threshold-relative) or adaptive surrogate (see
:func:`gives_threshold_gradient`). As for every surrogate gradient, the spike's derivative is
the multiplier and the multiplier itself is not differentiated (a threshold-relative width
depends on theta, but it only shapes the estimate). HART (temporal cut) and RGA (a rate
factor) give the threshold no gradient (None = zero): they are attack estimators only.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor

import robustsnn.snn.triton_kernels as triton_kernels
from robustsnn.snn.dynamics import _block_size, _blocks, _run
from robustsnn.snn.estimators import (
    ASSG,
    BPTT,
    HART,
    PDSG,
    RGA,
    Estimator,
    MixedWidthBPTT,
    RelativeBPTT,
)
from robustsnn.snn.run_state import Moments, RunState
from robustsnn.snn.spec import Dynamics

Multiplier = Callable[[Tensor, Tensor], Tensor]
"""``(membranes h [T, B, ...], theta) -> dS/dh [T, B, ...]`` evaluated at ``x = h - theta``."""


@dataclass(frozen=True)
class BackwardSpec:
    """What :class:`ElementwiseBPTT` differentiates: the multiplier and the graph's shape."""

    multiplier: Multiplier
    detach_reset: bool = False
    cut_temporal: bool = False  # HART: no gradient through the carry-over; time-averaged input
    # a pure function of (h, theta) element by element: evaluated in the backward, one
    # cache-sized row at a time, from the saved membranes (no [T, B, ...] multiplier tensor)
    elementwise: bool = False


# ----------------------------------------------------------------------------- multipliers


def relative_multiplier(surrogate: Any) -> Multiplier:
    """``surrogate.grad(x / theta) / theta``: the surrogate with its width in threshold units."""

    def multiplier(h: Tensor, theta: Tensor) -> Tensor:
        return surrogate.grad((h - theta) / theta) / theta

    return multiplier


def triangle(x: Tensor, width: Tensor | float) -> Tensor:
    """``max(0, w - |x|) / w^2`` (unit integral), ``w`` a scalar or per element."""
    return (width - x.abs()).clamp(min=0.0) / (width * width)


def atan_sharpness(a: float) -> float:
    """``c(a) = 2 tan(pi a) / pi``: atan's sharpness times ``d`` for a mass ``2a`` within ``+-d``."""
    return 2.0 * math.tan(math.pi * a) / math.pi


def assg_surrogate(
    x: Tensor, d: Tensor, family: str, a: float, out: Tensor | None = None
) -> Tensor:
    """The ASSG multiplier at ``x = h - theta`` for per-element spreads ``d`` (see :class:`ASSG`).

    ``d`` and ``x`` are consumed (overwritten) to save memory and time; ``out`` (optional)
    receives the result.
    """
    if family == "atan":
        # (alpha / 2) / (1 + (pi alpha x / 2)^2) with alpha = c / d
        c = atan_sharpness(a)
        ratio = x.div_(d).mul_(math.pi * c / 2).square_().add_(1.0)
        result = d.mul_(ratio) if out is None else torch.mul(d, ratio, out=out)
        return result.reciprocal_().mul_(c / 2)
    if family == "pcw":
        width = d.mul_(1.0 / (1.0 - math.sqrt(1.0 - a)))
        # triangle(x, width), in place: max(0, width - |x|) / width^2
        magnitude = x.abs_()
        result = width - magnitude if out is None else torch.sub(width, magnitude, out=out)
        return result.clamp_(min=0.0).div_(torch.mul(width, width, out=x))
    if family == "rect":
        width = d.mul_(2.0 / a)
        inside = torch.lt(x.abs_(), width / 2)
        result = inside.to(x.dtype) if out is None else out.copy_(inside)
        return result.div_(width)
    raise ValueError(f"unknown ASSG family {family!r}")


def assg_spread(h: Tensor, theta: Tensor, estimator: ASSG, state: RunState, layer: str) -> Tensor:
    """Update ``layer``'s moments in ``state`` with this pass's ``|h - theta|``; return ``d``.

    The first pass of a row sets ``M = |x|``, ``D = 0``; later passes take the EMAs.
    """
    ax = (h - theta).abs_()
    batch = h.shape[1]
    rows = state.rows_for(batch, h.device)
    moments = state.moments(layer, h)
    moments.sync()
    b1, b2 = estimator.beta1, estimator.beta2
    if _updates_every_row(moments, rows, batch):  # the common case: update in place
        mean = moments.mean.mul_(b1).add_(ax, alpha=1 - b1)
        dispersion = moments.dispersion.mul_(b2).add_((ax - mean).abs_(), alpha=1 - b2)
        return ax.copy_(dispersion).mul_(estimator.relax).add_(mean).add_(1e-4)
    seen = moments.seen[rows].view(1, -1, *([1] * (h.dim() - 2)))
    mean = torch.where(seen, b1 * moments.mean[:, rows] + (1 - b1) * ax, ax)
    dispersion = torch.where(
        seen,
        b2 * moments.dispersion[:, rows] + (1 - b2) * (ax - mean).abs(),
        torch.zeros_like(ax),
    )
    moments.mean[:, rows] = mean
    moments.dispersion[:, rows] = dispersion
    moments.seen[rows] = True
    return dispersion.mul_(estimator.relax).add_(mean).add_(1e-4)


def _updates_every_row(moments: Moments, rows: Tensor, batch: int) -> bool:
    """Whether a pass covers every row of the run, in order, each seen before (in-place EMA)."""
    return (
        batch == moments.seen.shape[0]
        and bool(torch.equal(rows, torch.arange(batch, device=rows.device)))
        and bool(moments.seen.all())
    )


def assg_multiplier(
    h: Tensor, theta: Tensor, estimator: ASSG, state: RunState, layer: str
) -> Tensor:
    """ASSG's multiplier ``[T, B, ...]`` for this pass, updating ``layer``'s moments.

    On CPU, when every row of the pass was seen before, the moments are updated and the
    multiplier written one cache-sized row at a time, with the operations of
    :func:`assg_spread` and :func:`assg_surrogate` in the same order (bit for bit the same
    values): in place when the pass covers the whole run in order, else on the compact moments
    of its rows (:meth:`~robustsnn.snn.run_state.Moments.compact`). Otherwise (a row's first
    pass, another device) through those two functions on whole tensors.
    """
    batch = h.shape[1]
    rows = state.rows_for(batch, h.device)
    moments = state.moments(layer, h)
    every_row = _updates_every_row(moments, rows, batch)
    if h.device.type != "cpu" or not (every_row or bool(moments.seen[rows].all())):
        return assg_surrogate(
            h - theta, assg_spread(h, theta, estimator, state, layer), estimator.family, estimator.a
        )
    steps = h.shape[0]
    if every_row:
        moments.sync()
        mean, dispersion = moments.mean, moments.dispersion
    else:
        mean, dispersion = moments.compact(rows)
    flat_h = h.reshape(steps, -1)
    flat_mean, flat_dispersion = mean.view(steps, -1), dispersion.view(steps, -1)
    sg = torch.empty_like(flat_h)
    numel = flat_h.shape[1]
    block_size = _block_size(h.device)
    width = min(block_size, numel)
    buffers = [torch.empty(width, dtype=h.dtype, device=h.device) for _ in range(4)]
    b1, b2 = estimator.beta1, estimator.beta2
    for block in _blocks(numel, block_size):
        n = block.stop - block.start
        ax_buf, x_buf, new_mean, new_dispersion = (b[:n] for b in buffers)
        for t in range(steps):
            h_row, m_row, d_row = flat_h[t, block], flat_mean[t, block], flat_dispersion[t, block]
            ax = torch.sub(h_row, theta, out=ax_buf).abs_()
            if every_row:  # assg_spread's in-place update
                m_row.mul_(b1).add_(ax, alpha=1 - b1)
                d_row.mul_(b2).add_(torch.sub(ax, m_row, out=x_buf).abs_(), alpha=1 - b2)
                spread = ax.copy_(d_row).mul_(estimator.relax).add_(m_row).add_(1e-4)
            else:  # assg_spread's update of selected rows, every one seen before
                torch.mul(m_row, b1, out=new_mean).add_(torch.mul(ax, 1 - b1, out=x_buf))
                torch.sub(ax, new_mean, out=x_buf).abs_().mul_(1 - b2)
                torch.mul(d_row, b2, out=new_dispersion).add_(x_buf)
                m_row.copy_(new_mean)
                d_row.copy_(new_dispersion)
                spread = new_dispersion.mul_(estimator.relax).add_(new_mean).add_(1e-4)
            x = torch.sub(h_row, theta, out=x_buf)
            assg_surrogate(x, spread, estimator.family, estimator.a, out=sg[t, block])
    return sg.view(h.shape)


def pdsg_sigma(h: Tensor, channel_dim: int | None, pooled: bool) -> Tensor:
    """Running membrane std for PDSG, broadcastable against ``h [T, B, ...]``.

    ``sigma[t]`` is the unbiased std of ``h[tau]`` over ``tau <= t`` and the spatial dims (and
    the batch when ``pooled``), per channel when ``channel_dim`` (an index into the per-sample
    shape ``h.shape[2:]``) is given, else over all elements of the layer. 0 (or a single
    value) gives 1. Computed in float64.
    """
    steps, batch = h.shape[:2]
    channels = h.shape[2 + channel_dim] if channel_dim is not None else 1
    s1 = torch.empty((steps, batch, channels), dtype=torch.float64, device=h.device)
    s2 = torch.empty_like(s1)
    count = h[0, 0].numel() // channels
    for t in range(steps):  # one step in float64 at a time: [B, ...] not [T, B, ...] copies
        values = h[t].detach().to(torch.float64, copy=True)  # squared in place below
        if channel_dim is not None:
            values = values.movedim(1 + channel_dim, -1)
        values = values.reshape(batch, count, channels)
        torch.sum(values, 1, out=s1[t])
        torch.sum(values.square_(), 1, out=s2[t])  # [B, C]
    if pooled:
        s1, s2, count = s1.sum(1, keepdim=True), s2.sum(1, keepdim=True), count * batch
    s1, s2 = s1.cumsum(0), s2.cumsum(0)
    n = torch.arange(1, steps + 1, device=h.device, dtype=torch.float64).view(-1, 1, 1) * count
    var = (s2 - s1.square() / n) / (n - 1).clamp(min=1)
    sigma = var.clamp(min=0).sqrt()
    sigma = torch.where((sigma > 0) & (n > 1), sigma, torch.ones_like(sigma)).to(h.dtype)
    # back to h's layout: [T, B|1, 1.., C at channel_dim, 1..]
    ndim = h.dim() - 2
    if channel_dim is None:
        return sigma.view(steps, -1, *([1] * ndim))
    shape = [1] * ndim
    shape[channel_dim] = sigma.shape[-1]
    return sigma.view(steps, sigma.shape[1], *shape)


def pdsg_surrogate(x: Tensor, sigma: Tensor) -> Tensor:
    """Gaussian density ``N(x; sigma/2, sigma^2)``: peaks just above threshold, unit integral."""
    return torch.exp(-((x - sigma / 2) ** 2) / (2 * sigma * sigma)) / (
        math.sqrt(2 * math.pi) * sigma
    )


def pdsg_multiplier(h: Tensor, theta: Tensor, channel_dim: int | None, pooled: bool) -> Tensor:
    """:func:`pdsg_surrogate` at ``h - theta`` with the running std of ``h``, step by step.

    The same operations as the whole-tensor formula, applied to one step ``[B, ...]`` at a
    time in one scratch buffer (the ``[T, B, ...]`` temporaries of the formula cost more than
    the arithmetic on large layers); the per-step factors of sigma are computed once.
    """
    sigma = pdsg_sigma(h, channel_dim, pooled)
    if h.device.type != "cpu":
        return pdsg_surrogate(h - theta, sigma)
    shift, spread, scale = sigma / 2, 2 * sigma * sigma, math.sqrt(2 * math.pi) * sigma
    sg = torch.empty_like(h)
    scratch = torch.empty_like(h[0])
    for t in range(h.shape[0]):
        x = torch.sub(h[t], theta, out=scratch).sub_(shift[t]).square_().neg_()
        torch.div(x.div_(spread[t]).exp_(), scale[t], out=sg[t])
    return sg


# ----------------------------------------------------------------------------- autograd


def _sum_to_shape(grad: Tensor, shape: torch.Size) -> Tensor:
    """``grad`` summed over the dimensions that were broadcast to it from ``shape``."""
    if grad.shape == shape:
        return grad
    lead = grad.dim() - len(shape)
    summed = grad.sum(dim=tuple(range(lead))) if lead > 0 else grad
    keep = [i for i, n in enumerate(shape) if n == 1 and summed.shape[i] != 1]
    if keep:
        summed = summed.sum(dim=keep, keepdim=True)
    return summed.reshape(shape)


class ElementwiseBPTT(torch.autograd.Function):
    """Exact spiking forward; BPTT backward with a per-element multiplier (see module doc).

    On CPU the multiplier of an elementwise spec is evaluated in the backward, one row of
    ``BLOCK`` neurons and one step at a time, from the saved membranes, and the BPTT recursion
    runs block by block into preallocated rows (:func:`_blocked_backward`): the same arithmetic,
    operation for operation, as the whole-tensor form it replaced (results are bit for bit the
    same), without a full-size temporary per operation. ASSG's moments are updated in the
    forward the same way (:func:`assg_multiplier_rows`).
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx,
        inputs: Tensor,
        theta: Tensor,
        init: Tensor | None,
        dynamics: Dynamics,
        spec: BackwardSpec,
    ) -> Tensor:
        shape = dynamics.state_shape(inputs)
        membranes = torch.empty((dynamics.steps, *shape), dtype=inputs.dtype, device=inputs.device)
        out = _run(inputs, dynamics, membranes=membranes)
        lazy = spec.elementwise and not triton_kernels.use_kernels(inputs)
        if lazy:
            sg = membranes  # placeholder: the backward evaluates the multiplier from h
        else:
            with torch.no_grad():
                sg = spec.multiplier(membranes, theta.detach()).expand_as(membranes)
        keep_h = lazy or not (dynamics.soft_reset or spec.detach_reset or spec.cut_temporal)
        ctx.save_for_backward(sg, theta, out, membranes if keep_h else theta)
        ctx.config = (dynamics, spec, lazy)
        ctx.init_shape = None if init is None else init.shape
        return out

    @staticmethod
    def backward(ctx, grad_out: Tensor):  # type: ignore[override]
        sg, theta, out, h_all = ctx.saved_tensors
        forward_dynamics, spec, lazy = ctx.config
        theta = theta.detach()
        dynamics = replace(forward_dynamics, theta=theta, init=None)
        leak, soft_reset, static = dynamics.leak, dynamics.soft_reset, dynamics.static
        if triton_kernels.use_kernels(grad_out):  # the recursion in one launch (CUDA)
            keep_h = not (soft_reset or spec.detach_reset or spec.cut_temporal)
            fused_theta = ctx.needs_input_grad[1] and not spec.cut_temporal
            fused_h0 = (
                ctx.init_shape is not None and ctx.needs_input_grad[2] and not spec.cut_temporal
            )
            grad_in, grad_theta_k, grad_h0 = triton_kernels.backward(
                grad_out,
                dynamics,
                membranes=h_all if keep_h else None,
                out=out,
                multiplier=sg,
                detach_reset=spec.detach_reset,
                cut_temporal=spec.cut_temporal,
                need_theta=fused_theta,
                need_h0=fused_h0,
            )
            init_grad = None
            if fused_h0 and grad_h0 is not None:
                first = grad_h0.view(grad_out.shape[1:]) * leak
                init_grad = _sum_to_shape(first, ctx.init_shape)
            return grad_in, grad_theta_k, init_grad, None, None
        grad_out = grad_out.contiguous()
        multiplier_rows = _multiplier_rows(spec, theta, h_all if lazy else None, sg)
        if spec.cut_temporal:
            # dL/ds[t] * sg[t], no carry-over
            local = _blocked_products(grad_out, theta, multiplier_rows)
            if static:
                grad_in = local.sum(0)
            else:
                grad_in = local.mean(0, keepdim=True).expand_as(local).clone()
            return grad_in, None, None, None, None
        # dL/ds[t] * sg[t] for every step, kept only for the threshold's gradient
        products = torch.empty_like(grad_out) if ctx.needs_input_grad[1] else None
        grad_steps = _blocked_backward(
            grad_out, out, h_all, dynamics, spec.detach_reset, multiplier_rows, products
        )
        grad_theta_out = None
        if products is not None:
            grad_theta_out = _threshold_gradient(grad_out, grad_steps, products, out, dynamics)
        grad_in = grad_steps.sum(0) if static else grad_steps
        grad_init = None
        if ctx.init_shape is not None and ctx.needs_input_grad[2]:
            # h[0] = leak * init + I[0]: the initial membrane's gradient, summed to its shape
            grad_init = _sum_to_shape(grad_steps[0] * leak, ctx.init_shape)
        return grad_in, grad_theta_out, grad_init, None, None


RowMultiplier = Callable[[int, slice], Tensor]
"""``(t, block) -> sg[t]`` on the flat neurons ``block`` (a view or a block-sized tensor)."""


def _multiplier_rows(
    spec: BackwardSpec, theta: Tensor, membranes: Tensor | None, sg: Tensor
) -> RowMultiplier:
    """Rows of the multiplier: evaluated from the membranes (lazy) or read from ``sg``."""
    steps = sg.shape[0]
    if membranes is not None:
        flat_h = membranes.reshape(steps, -1)

        def evaluate(t: int, block: slice) -> Tensor:
            row = flat_h[t, block]
            return spec.multiplier(row, theta).expand_as(row)

        return evaluate
    flat_sg = sg.reshape(steps, -1)
    return lambda t, block: flat_sg[t, block]


def _blocked_products(grad_out: Tensor, theta: Tensor, multiplier_rows: RowMultiplier) -> Tensor:
    """``grad_out * theta * sg`` as ``[T, ...]``, row by row (HART's temporal cut)."""
    steps = grad_out.shape[0]
    grads = grad_out.reshape(steps, -1)
    local = torch.empty_like(grads)
    for block in _blocks(grads.shape[1], _block_size(grads.device)):
        for t in range(steps):
            torch.mul(grads[t, block], theta, out=local[t, block]).mul_(multiplier_rows(t, block))
    return local.view(grad_out.shape)


def _blocked_backward(
    grad_out: Tensor,
    out: Tensor,
    membranes: Tensor,
    dynamics: Dynamics,
    detach_reset: bool,
    multiplier_rows: RowMultiplier,
    products: Tensor | None = None,
) -> Tensor:
    """``dL/dh[t]`` for every step as ``[T, ...]``: BPTT through the reset, block by block.

    ``dynamics``: the forward's, with a detached threshold. ``products``: optional ``[T, ...]``
    tensor that receives ``dL/ds[t] * sg[t]``.

    Per step, with ``gu = leak * dL/dh[t+1]`` (the order of operations is that of the
    whole-tensor loop this replaced, so every value is bit for bit the same)::

        dL/ds[t] = g[t] * theta - gu * theta   (soft)   g[t] * theta - gu * h[t]   (hard)
                                               (reset detached: g[t] * theta)
        dL/dh[t] = dL/ds[t] * sg[t] + gu       (soft)   ... + gu * [s[t] == 0]     (hard)
    """
    theta, leak, soft_reset = dynamics.theta, dynamics.leak, dynamics.soft_reset
    steps = grad_out.shape[0]
    grads = grad_out.reshape(steps, -1)
    numel = grads.shape[1]
    outs = out.reshape(steps, numel)
    hs = membranes.reshape(steps, numel) if not (soft_reset or detach_reset) else None
    grad_steps = torch.empty_like(grads)
    kept = products.view(steps, numel) if products is not None else None
    block_size = _block_size(grads.device)
    width = min(block_size, numel)
    ds_buf = torch.empty(width, dtype=grads.dtype, device=grads.device)
    tmp_buf = torch.empty_like(ds_buf)
    gu_buf = torch.empty_like(ds_buf) if leak != 1.0 else None
    for block in _blocks(numel, block_size):
        n = block.stop - block.start
        ds, tmp = ds_buf[:n], tmp_buf[:n]
        gh_next: Tensor | None = None
        for t in range(steps - 1, -1, -1):
            torch.mul(grads[t, block], theta, out=ds)
            gu: Tensor | None = None
            if gh_next is not None:
                # gh_next * 1.0 is gh_next exactly
                gu = gh_next if gu_buf is None else torch.mul(gh_next, leak, out=gu_buf[:n])
                if not detach_reset:
                    other = theta if hs is None else hs[t, block]
                    ds.sub_(torch.mul(gu, other, out=tmp))
            dh = torch.mul(ds, multiplier_rows(t, block), out=grad_steps[t, block])
            if kept is not None:
                kept[t, block].copy_(dh)
            if gu is not None:
                if soft_reset:
                    dh.add_(gu)
                else:
                    torch.eq(outs[t, block], 0, out=tmp)  # 1.0 where no spike
                    dh.add_(tmp.mul_(gu))
            gh_next = dh
    return grad_steps.view(grad_out.shape)


def _threshold_gradient(
    grad_out: Tensor, grad_steps: Tensor, products: Tensor, out: Tensor, dynamics: Dynamics
) -> Tensor:
    """``dL/dtheta = sum_t g[t].s[t] - dL/ds[t].sg[t]`` (``- gu.s[t]`` for the soft reset).

    The output ``theta * s``, the spike ``H(h - theta)`` and the soft reset's ``theta * s``.
    ``products[t]`` holds ``dL/ds[t].sg[t]``; sums run over whole steps, last step first.
    """
    theta, leak, soft = dynamics.theta, dynamics.leak, dynamics.soft_reset
    steps = grad_out.shape[0]
    grad_theta = torch.zeros((), dtype=grad_out.dtype, device=grad_out.device)
    for t in range(steps - 1, -1, -1):
        g = grad_out[t]
        spikes = out[t] / theta  # exactly 0 / 1
        direct = g - grad_steps[t + 1] * leak if soft and t < steps - 1 else g
        grad_theta = grad_theta + (direct * spikes).sum() - products[t].sum()
    return grad_theta


class RateGradient(torch.autograd.Function):
    """Exact spiking forward; RGA backward ``dL/dI_t = dL/dy_t * f(mean_t I_t)``."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx, inputs: Tensor, theta: Tensor, dynamics: Dynamics, estimator: RGA
    ) -> Tensor:
        out = _run(inputs, dynamics)
        with torch.no_grad():
            mean_current = inputs if dynamics.static else inputs.mean(0)
            factor = rga_factor(mean_current, theta.detach(), dynamics.leak, estimator)
            ctx.save_for_backward(factor)
        ctx.static = dynamics.static
        return out

    @staticmethod
    def backward(ctx, grad_out: Tensor):  # type: ignore[override]
        (factor,) = ctx.saved_tensors
        grad_in = grad_out.sum(0) * factor if ctx.static else grad_out * factor
        return grad_in, None, None, None


def rga_factor(mean_current: Tensor, theta: Tensor, leak: float, estimator: RGA) -> Tensor:
    """RGA's factor in units of the emitted value ``theta * s`` (see :class:`RGA`)."""
    low = (1.0 - leak) * theta
    high = (1.0 + estimator.ext) * theta
    c1 = (1.0 - estimator.gs * (1.0 - leak)) / (leak + estimator.ext)
    in_band = (mean_current >= low) & (mean_current <= high)
    below = (mean_current >= 0) & (mean_current < low)
    zero = torch.zeros_like(mean_current)
    return torch.where(in_band, zero + c1, torch.where(below, zero + estimator.gs, zero))


# ----------------------------------------------------------------------------- dispatch


def backward_spec(
    estimator: Estimator, layer: str, channel_dim: int | None, state: RunState | None
) -> BackwardSpec:
    """The multiplier and graph of a per-element estimator for one layer."""
    if isinstance(estimator, RelativeBPTT):
        return BackwardSpec(
            relative_multiplier(estimator.surrogate), estimator.detach_reset, elementwise=True
        )
    if isinstance(estimator, MixedWidthBPTT):
        return BackwardSpec(
            relative_multiplier(estimator.surrogate(layer)),
            estimator.detach_reset,
            elementwise=True,
        )
    if isinstance(estimator, BPTT):
        surrogate = estimator.surrogate
        return BackwardSpec(
            lambda h, theta: surrogate.grad(h - theta), estimator.detach_reset, elementwise=True
        )
    if isinstance(estimator, HART):
        gamma = estimator.gamma
        return BackwardSpec(
            lambda h, theta: triangle(h - theta, gamma * theta),
            cut_temporal=True,
            elementwise=True,
        )
    if isinstance(estimator, PDSG):
        pooled = estimator.pooled

        def pdsg(h: Tensor, theta: Tensor) -> Tensor:
            return pdsg_multiplier(h, theta, channel_dim, pooled)

        return BackwardSpec(pdsg, estimator.detach_reset)
    if isinstance(estimator, ASSG):
        run = state if state is not None else RunState()  # no run: every pass is a first pass
        assg = estimator

        def adaptive(h: Tensor, theta: Tensor) -> Tensor:
            return assg_multiplier(h, theta, assg, run, layer)

        return BackwardSpec(adaptive, estimator.detach_reset)
    raise TypeError(f"estimator {estimator!r} has no per-element backward")


def spiking_layer(
    inputs: Tensor,
    dynamics: Dynamics,
    estimator: Estimator,
    *,
    layer: str,
    channel_dim: int | None,
    state: RunState | None,
) -> Tensor:
    """One spiking layer under a per-element estimator: ``theta * s`` as ``[T, B, ...]``.

    ``dynamics.init``: the initial membrane (0-dim or ``[B, ...]``; None = zero); its gradient
    (and through it the threshold's, ``init = v_init * theta``) flows under every BPTT-type
    estimator.
    """
    if isinstance(estimator, RGA):
        return RateGradient.apply(inputs, dynamics.theta, dynamics, estimator)
    spec = backward_spec(estimator, layer, channel_dim, state)
    return ElementwiseBPTT.apply(inputs, dynamics.theta, dynamics.init, dynamics, spec)
