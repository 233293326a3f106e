"""Integrate-and-fire dynamics over T steps as fused autograd functions.

Forward (PAPER.md section 2), per step t with ``u[0] = 0``::

    h[t] = leak * u[t-1] + I[t]          # membrane before the spike
    s[t] = H(h[t] - theta)               # binary spike, H(0) = 1
    u[t] = h[t] * (1 - s[t])             # hard reset, or  h[t] - s[t] * theta  (soft reset)
    o[t] = theta * s[t]                  # emitted value

Emitting ``theta * s`` is the same as emitting binary spikes and letting the next layer's weights
absorb theta; it keeps the network's function equal to the ANN's as the rate converges to
``clip(relu(I), 0, theta)``, and makes the ANN proxy (ReLU in place of every neuron) the exact ANN.

The whole time loop runs as one autograd node per layer, instead of autograd recording every
elementwise step. The backward is exact BPTT through the reset (no detached reset) with the
surrogate in place of dH/dx, or backpropagation through rate (BPTR).

Inputs are either time-major ``[T, B, ...]`` currents or a static ``[B, ...]`` current repeated
at every step (direct input coding: the first layer's current is computed once, not T times).

Every function here takes the layer's dynamics (threshold, steps, leak, reset, static input,
initial membrane) as one :class:`~robustsnn.snn.spec.Dynamics` value: :func:`if_forward` (no
autograd), :func:`bptt` and :func:`bptr` (the fused autograd layers), :func:`reference_if` (the
per-step ground truth).

What the backward keeps (the memory of one layer, besides its output):

* time-varying input: the membranes ``h`` as one ``[T, B, ...]`` tensor;
* static input: only the ``[B, ...]`` current; the membranes are recomputed in the backward
  (one cheap forward loop) instead of being stored T times;
* the output ``theta * s`` is saved too, but it is the tensor the next layer keeps anyway, so it
  costs no memory; spikes are read from it (``s = o / theta``);
* BPTR: a ``[B, ...]`` "fired at least once" mask (input dtype) besides the output.

Speed (CPU, see benchmarks/): every step writes into preallocated buffers with ``out=`` /
in-place ops (no per-step allocation, no ``stack``); spikes are float 0/1, never bool (bool
comparisons, ``masked_fill`` and bool products are 2-6x slower per element on CPU); the neurons
run in blocks of ``BLOCK`` elements, all T steps of a block before the next, so scratch buffers
stay in cache; surrogates of the paper's families (pcw, exp, expd, rect, ste) run as in-place
formulas with their constant factor folded into another product; the hard-reset factor
``(1 - s)`` in the backward is one ``threshold_backward`` kernel (keep the gradient where
``theta - h > 0``). The same code runs on CUDA (plain tensor ops, no CPU-only calls); there,
when triton is importable, the forward loop and the BPTT backward run instead as one fused Triton
kernel launch each (``snn/triton_kernels.py``; ``ROBUSTSNN_KERNELS=reference`` switches it off).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import torch

import robustsnn.snn.surrogates as _surrogates
import robustsnn.snn.triton_kernels as triton_kernels
from robustsnn.snn.spec import Dynamics
from robustsnn.snn.surrogates import Surrogate

# Recompute the membranes of a static-input layer in the backward instead of storing T copies.
RECOMPUTE_STATIC = True
# Neurons per block: all T steps of one block run before the next, so the per-step scratch
# buffers stay in (L2/L3) cache: 1 MiB of float32 per buffer. Measured on the 2-core EPYC
# (benchmarks/bench_dynamics.py --blocks): 2^16 is slower (per-op overhead), no blocking too.
BLOCK = 1 << 18

_threshold_backward_out = torch.ops.aten.threshold_backward.grad_input


def _flat_currents(inputs: torch.Tensor, steps: int, static: bool) -> list[torch.Tensor]:
    """Per-step currents as flat ``[N]`` tensors (views when ``inputs`` is contiguous)."""
    if static:
        return [inputs.reshape(-1)] * steps
    # unbind, not inputs[t]: indexing in a loop makes autograd zero-fill a [T, ...] buffer per step
    return list(inputs.reshape(steps, -1).unbind(0))


def _block_size(device: torch.device) -> int:
    """``BLOCK`` on CPU; on other devices one block (every op is a kernel launch there, and
    blocking only multiplies the launches without a cache to win)."""
    return BLOCK if device.type == "cpu" else 1 << 62


def _blocks(numel: int, block: int) -> list[slice]:
    return [slice(i, min(i + block, numel)) for i in range(0, numel, block)] or [slice(0, 0)]


def _forward_block(
    currents: list[torch.Tensor],
    dynamics: Dynamics,
    outs: list[torch.Tensor],
    membranes: list[torch.Tensor] | None,
    fired: torch.Tensor | None,
    spike: torch.Tensor,
    u_scratch: torch.Tensor,
) -> None:
    """All T steps of one block of neurons (every tensor argument is a flat view of the same
    length).

    ``outs``: T rows receiving ``theta * s`` (may all be one scratch row); ``membranes``: T rows
    receiving ``h`` or None; ``fired``: receives max_t s or None; ``spike`` and ``u_scratch``:
    scratch rows. ``currents`` are never written. ``dynamics.init`` is this block's initial
    membrane ``u[-1]`` (a 0-dim tensor or a flat row of the block's length, see
    :func:`_block_dynamics`; None = zero, the paper's start), so that ``h[0] = leak * init +
    I[0]``.
    """
    theta, leak, init = dynamics.theta, dynamics.leak, dynamics.init
    soft_reset = dynamics.soft_reset
    steps = len(currents)
    u: torch.Tensor | None = None  # membrane after the reset, u[t-1]; None = zero
    for t in range(steps):
        current = currents[t]
        # h[t] = leak * u[t-1] + I[t]  (the same two roundings as the per-step reference)
        if t == 0 and init is not None:
            h = membranes[0] if membranes is not None else u_scratch
            if leak != 1.0:
                h.copy_(init).mul_(leak).add_(current)  # copy_ broadcasts a 0-dim init
            else:
                torch.add(current, init, out=h)
        elif membranes is not None:
            h = membranes[t]
            if u is None:
                h.copy_(current)
            elif leak != 1.0:
                torch.mul(u, leak, out=h).add_(current)
            else:
                torch.add(current, u, out=h)
        elif u is None:
            h = current  # read only
        else:
            h = u.mul_(leak).add_(current) if leak != 1.0 else u.add_(current)
        torch.ge(h, theta, out=spike)
        emitted = outs[t]
        torch.mul(spike, theta, out=emitted)
        if fired is not None:
            if t == 0:
                fired.copy_(spike)
            else:
                torch.maximum(fired, spike, out=fired)
        if t == steps - 1:
            break
        # u[t] = h - theta * s (soft)  or  h - h * s = h * (1 - s) (hard; exact for s in {0,1})
        u = u_scratch
        if soft_reset:
            torch.sub(h, emitted, out=u)
        else:
            torch.addcmul(h, h, spike, value=-1.0, out=u)


def _run(
    inputs: torch.Tensor,
    dynamics: Dynamics,
    membranes: torch.Tensor | None = None,
    fired: torch.Tensor | None = None,
) -> torch.Tensor:
    """The forward loop, no autograd; returns ``theta * s`` as one ``[T, B, ...]`` tensor.

    ``membranes``: optional contiguous ``[T, B, ...]`` buffer that receives ``h[t]``. ``fired``:
    optional contiguous ``[B, ...]`` buffer (input dtype) that receives 1 where the neuron spiked
    at least once, else 0. The caller's ``inputs`` are never written. ``dynamics.init``: the
    initial membrane, a 0-dim tensor or a ``[B, ...]`` tensor (None = zero).

    The neurons are processed in blocks of ``BLOCK`` elements, all T steps of one block before
    the next, so the membrane and spike scratch stay in cache; spikes are float 0/1 (comparisons
    and products on bool tensors are several times slower on CPU).
    """
    if triton_kernels.use_kernels(inputs):  # one fused launch (CUDA; see triton_kernels)
        return triton_kernels.forward(inputs, dynamics, membranes, fired)
    steps, static = dynamics.steps, dynamics.static
    currents = _flat_currents(inputs, steps, static)
    first = currents[0]
    numel = first.numel()
    shape = dynamics.state_shape(inputs)
    dtype, device = first.dtype, first.device
    out = torch.empty((steps, numel), dtype=dtype, device=device)
    flat_h = membranes.view(steps, numel) if membranes is not None else None
    flat_fired = fired.view(numel) if fired is not None else None
    block_size = _block_size(device)
    width = min(block_size, numel)
    spike_buf = torch.empty(width, dtype=dtype, device=device)  # s[t] as 0.0 / 1.0
    u_buf = torch.empty(width, dtype=dtype, device=device)
    flat_init = _flat_init(dynamics.init, numel)
    for block in _blocks(numel, block_size):
        n = block.stop - block.start
        _forward_block(
            [c[block] for c in currents],
            _block_dynamics(dynamics, flat_init, block),
            list(out[:, block].unbind(0)),
            list(flat_h[:, block].unbind(0)) if flat_h is not None else None,
            flat_fired[block] if flat_fired is not None else None,
            spike_buf[:n],
            u_buf[:n],
        )
    return out.view(steps, *shape)


def _flat_init(init: torch.Tensor | None, numel: int) -> torch.Tensor | None:
    """The initial membrane as a 0-dim tensor or a flat contiguous ``[numel]`` row."""
    if init is None or init.dim() == 0:
        return init
    flat = init.detach().reshape(-1)
    if flat.numel() != numel:
        raise RuntimeError(f"initial membrane has {flat.numel()} elements, expected {numel}")
    return flat.contiguous()


def _block_dynamics(dynamics: Dynamics, flat_init: torch.Tensor | None, block: slice) -> Dynamics:
    """``dynamics`` for one block of neurons: its initial membrane is ``flat_init``'s (see
    :func:`_flat_init`) slice of the block, or the one 0-dim value, or None."""
    if flat_init is None or flat_init.dim() == 0:
        return dynamics
    return replace(dynamics, init=flat_init[block])


def if_forward(
    inputs: torch.Tensor, dynamics: Dynamics, keep_membranes: bool = True
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Run the dynamics without autograd; return spikes*theta ``[T, B, ...]`` and membranes h."""
    with torch.no_grad():
        membranes = None
        if keep_membranes:
            shape = dynamics.state_shape(inputs)
            membranes = torch.empty(
                (dynamics.steps, *shape), dtype=inputs.dtype, device=inputs.device
            )
        out = _run(inputs, dynamics, membranes=membranes)
        return out, (list(membranes.unbind(0)) if membranes is not None else [])


# ----------------------------------------------------------------------------- surrogates

# (registered formula, in-place fast form) per paper family. The fast form takes a scratch
# tensor holding ``theta - h`` (the surrogates are even, and IEEE subtraction is antisymmetric,
# so |theta - h| == |h - theta| bit for bit) and returns (factor tensor or None, scale) with
# surrogate.grad(h - theta) == scale * factor (None = 1). The scale is folded into another
# product by the caller.
_FastSurrogate = Callable[[torch.Tensor, float], tuple[torch.Tensor | None, float]]


def _fast_pcw(x: torch.Tensor, gamma: float) -> tuple[torch.Tensor | None, float]:
    # max(0, gamma - |x|) / gamma^2 == -(min(0, |x| - gamma)) / gamma^2
    return x.abs_().sub_(gamma).clamp_(max=0.0), -1.0 / (gamma * gamma)


def _fast_exp(x: torch.Tensor, gamma: float) -> tuple[torch.Tensor | None, float]:
    return x.abs_().mul_(-gamma).exp_(), 1.0


def _fast_expd(x: torch.Tensor, gamma: float) -> tuple[torch.Tensor | None, float]:
    return x.abs_().mul_(-gamma).exp_(), 0.3


def _fast_rect(x: torch.Tensor, gamma: float) -> tuple[torch.Tensor | None, float]:
    return x.abs_().lt_(gamma / 2), 1.0 / gamma  # 0.0 / 1.0 in place


def _fast_ste(x: torch.Tensor, gamma: float) -> tuple[torch.Tensor | None, float]:
    del x, gamma
    return None, 1.0


_FAST_SURROGATES: dict[str, tuple[Callable[..., torch.Tensor], _FastSurrogate]] = {
    "pcw": (_surrogates._pcw, _fast_pcw),
    "exp": (_surrogates._exp, _fast_exp),
    "expd": (_surrogates._exp_damped, _fast_expd),
    "rect": (_surrogates._rect, _fast_rect),
    "ste": (_surrogates._ste, _fast_ste),
}


def _fast_surrogate(surrogate: Surrogate) -> _FastSurrogate | None:
    """The in-place form of ``surrogate``, or None when its kind was re-registered/is unknown."""
    entry = _FAST_SURROGATES.get(surrogate.kind)
    if entry is None or _surrogates.SURROGATE_KINDS.get(surrogate.kind) is not entry[0]:
        return None
    return entry[1]


# ----------------------------------------------------------------------------- BPTT


def _bptt_backward(
    grad_out: torch.Tensor,
    out: torch.Tensor,
    saved: torch.Tensor,
    recompute: bool,
    dynamics: Dynamics,
    surrogate: Surrogate,
    need_theta: bool,
    grad_init: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Exact BPTT through the reset; returns (grad of the input, grad of theta or None).

    ``dynamics``: the forward pass's (its ``init`` is needed to recompute static membranes).
    ``grad_init``: optional flat ``[B*...]`` buffer that receives ``dL/dh[0]`` (the gradient of
    the initial membrane is ``leak`` times it).

    Per step, with ``gu = leak * dL/dh[t+1]`` the gradient that reaches ``u[t]``::

        dL/ds[t] = theta * g[t] - gu * h[t]            (hard)  theta * (g[t] - gu)  (soft)
        dL/dh[t] = dL/ds[t] * sg[t] + gu * (1 - s[t])  (hard)  dL/ds[t] * sg[t] + gu  (soft)
        dL/dtheta = sum_t g[t].s[t] - dL/ds[t].sg[t]  (- gu.s[t] for the soft reset)

    Blocks of ``BLOCK`` neurons run all T steps before the next block (cache-resident scratch;
    one block's reverse loop is :func:`_bptt_block`). ``saved``: the membranes ``[T, B, ...]``,
    or with ``recompute`` the static input current ``[B, ...]``, from which each block's
    membranes are recomputed into a block-sized buffer.
    """
    fast = _fast_surrogate(surrogate)
    kernel_surrogate = fast is not None and triton_kernels.supports_surrogate(surrogate.kind)
    if kernel_surrogate and triton_kernels.use_kernels(grad_out):
        return _kernel_backward(
            grad_out, out, saved, recompute, dynamics, surrogate, need_theta, grad_init
        )
    theta, static = dynamics.theta, dynamics.static
    steps = grad_out.shape[0]
    shape = grad_out.shape[1:]
    grads = grad_out.reshape(steps, -1)
    numel = grads.shape[1]
    hs = None if recompute else saved.reshape(steps, numel)
    outs = out.reshape(steps, numel)
    dtype, device = grad_out.dtype, grad_out.device
    block_size = _block_size(device)
    width = min(block_size, numel)

    def buffer(n: int = width) -> torch.Tensor:
        return torch.empty(n, dtype=dtype, device=device)

    grad_in = None if static else torch.empty((steps, numel), dtype=dtype, device=device)
    acc = buffer(numel) if static else None  # static input: sum over t of dL/dh[t]
    ping_pong = (buffer(), buffer()) if static else None
    scratch_buf = buffer()
    kept_buf = None if dynamics.soft_reset else buffer()  # dL/dh[t+1] * (1 - s[t])
    # sum over t of (g[t] - gu).s[t] * theta, and of dL/ds[t] * sg[t], per block and step
    sums: tuple[list[torch.Tensor], list[torch.Tensor]] | None = ([], []) if need_theta else None
    if recompute:
        static_current = saved.reshape(numel)
        local_h = torch.empty((steps, width), dtype=dtype, device=device)
        spike_buf, u_buf = buffer(), buffer()
        flat_init = _flat_init(dynamics.init, numel)
    for block in _blocks(numel, block_size):
        n = block.stop - block.start
        scratch = scratch_buf[:n]
        kept = kept_buf[:n] if kept_buf is not None else None
        if hs is None:  # recompute this block's membranes (static input)
            rows = list(local_h[:, :n].unbind(0))
            current = static_current[block]
            _forward_block(
                [current] * steps,
                _block_dynamics(dynamics, flat_init, block),
                [scratch] * steps,
                rows,
                None,
                spike_buf[:n],
                u_buf[:n],
            )
        else:
            rows = list(hs[:, block].unbind(0))
        if grad_in is not None:
            targets = list(grad_in[:, block].unbind(0))
        else:
            assert ping_pong is not None
            targets = [ping_pong[t % 2][:n] for t in range(steps)]
        gh0 = _bptt_block(
            rows,
            grads[:, block],
            outs[:, block],
            targets,
            acc[block] if acc is not None else None,
            dynamics,
            surrogate,
            (scratch, kept),
            sums,
        )
        if grad_init is not None and gh0 is not None:
            grad_init[block].copy_(gh0)  # dL/dh[0]
    grad_theta = None
    if sums is not None:
        # dots carry theta^2 * s; one division at the end
        grad_theta = torch.stack(sums[0]).sum() / (theta * theta) - torch.stack(sums[1]).sum()
    result = acc if acc is not None else grad_in
    assert result is not None
    return result.view(shape if static else grad_out.shape), grad_theta


def _bptt_block(
    rows: list[torch.Tensor],
    grads: torch.Tensor,
    outs: torch.Tensor,
    targets: list[torch.Tensor],
    acc: torch.Tensor | None,
    dynamics: Dynamics,
    surrogate: Surrogate,
    scratch: tuple[torch.Tensor, torch.Tensor | None],
    sums: tuple[list[torch.Tensor], list[torch.Tensor]] | None,
) -> torch.Tensor | None:
    """The reverse time loop of :func:`_bptt_backward` over one block of neurons; returns
    ``dL/dh[0]`` of the block (a view of ``targets[0]``).

    ``rows``: the block's membranes ``h[t]``; ``grads``, ``outs``: ``[T, n]`` views of the
    upstream gradient and the output ``theta * s``; ``targets``: T rows that receive
    ``scale * dL/ds[t]`` and then ``dL/dh[t]`` (the input gradient's rows, or two alternating
    buffers for a static input, whose gradient accumulates in ``acc``); ``scratch``: a row for
    ``theta - h`` and, for the hard reset, one for ``dL/dh[t+1] * (1 - s[t])``; ``sums``: the
    lists of the threshold gradient's terms, appended to (None: no threshold gradient).
    """
    theta, leak, soft_reset = dynamics.theta, dynamics.leak, dynamics.soft_reset
    fast = _fast_surrogate(surrogate)
    scratch_row, kept = scratch
    theta_scaled: torch.Tensor | None = None  # theta * scale, made once
    gh_next: torch.Tensor | None = None  # dL/dh[t+1]
    for t in range(len(rows) - 1, -1, -1):
        h, g = rows[t], grads[t]
        x = torch.sub(theta, h, out=scratch_row)  # theta - h: > 0 exactly where s[t] = 0
        if gh_next is not None and kept is not None:
            _threshold_backward_out(gh_next, x, 0, grad_input=kept)
        if fast is not None:
            sg, scale = fast(x, surrogate.gamma)  # destroys x
        else:
            sg, scale = surrogate.grad(h - theta), 1.0
        gs = targets[t]  # gs = scale * dL/ds[t], in the buffer that ends up holding dL/dh[t]
        if theta_scaled is None:
            theta_scaled = theta * scale
        if gh_next is None:
            torch.mul(g, theta_scaled, out=gs)
        elif soft_reset:
            torch.sub(g, gh_next, alpha=leak, out=gs).mul_(theta_scaled)
        else:
            torch.mul(g, theta_scaled, out=gs).addcmul_(gh_next, h, value=-leak * scale)
        if sums is not None:
            # g[t].s[t] (- gu.s[t] for the soft reset) with s = o / theta exactly
            spikes = outs[t]
            if soft_reset and gh_next is not None:
                # gs = scale * theta * (g - gu): one dot for both terms
                sums[0].append(torch.dot(gs, spikes) / scale)
            else:
                sums[0].append(torch.dot(g, spikes) * theta)
        if sg is not None:
            gs.mul_(sg)  # p = dL/ds[t] * sg[t]
        if sums is not None:
            sums[1].append(gs.sum())
        if gh_next is not None:
            gs.add_(kept if kept is not None else gh_next, alpha=leak)  # dL/dh[t]
        if acc is not None:
            if gh_next is None:
                acc.copy_(gs)
            else:
                acc.add_(gs)
        gh_next = gs
    return gh_next


def _kernel_backward(
    grad_out: torch.Tensor,
    out: torch.Tensor,
    saved: torch.Tensor,
    recompute: bool,
    dynamics: Dynamics,
    surrogate: Surrogate,
    need_theta: bool,
    grad_init: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """:func:`_bptt_backward` through the Triton kernels (a static layer's membranes are
    recomputed by one forward launch first)."""
    membranes = saved
    if recompute:
        membranes = torch.empty_like(grad_out)
        triton_kernels.forward(saved, dynamics, membranes=membranes)
    grad_in, grad_theta, grad_h0 = triton_kernels.backward(
        grad_out,
        dynamics,
        membranes=membranes,
        surrogate=(surrogate.kind, surrogate.gamma),
        need_theta=need_theta,
        need_h0=grad_init is not None,
    )
    if grad_init is not None and grad_h0 is not None:
        grad_init.copy_(grad_h0)
    return grad_in, grad_theta


class BPTTFunction(torch.autograd.Function):
    """Fused IF/LIF layer with surrogate-gradient BPTT (call :func:`bptt`).

    ``theta`` and ``init`` are ``dynamics.theta`` and ``dynamics.init``, passed again as
    arguments so that autograd differentiates them.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx,
        inputs: torch.Tensor,
        theta: torch.Tensor,
        init: torch.Tensor | None,
        dynamics: Dynamics,
        surrogate: Surrogate,
    ) -> torch.Tensor:
        # init: optional initial membrane (0-dim or [B, ...]); its gradient is exact BPTT too
        static = dynamics.static
        recompute = static and RECOMPUTE_STATIC
        if recompute:
            out = _run(inputs, dynamics)
            saved = inputs
        else:
            shape = dynamics.state_shape(inputs)
            saved = torch.empty((dynamics.steps, *shape), dtype=inputs.dtype, device=inputs.device)
            out = _run(inputs, dynamics, membranes=saved)
        # the output is the tensor the next layer keeps anyway: saving it costs no memory
        if init is None:
            ctx.save_for_backward(saved, theta, out)
        else:
            ctx.save_for_backward(saved, theta, out, init)
        ctx.dynamics = dynamics
        ctx.config = (surrogate, recompute)
        return out

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):  # type: ignore[override]
        saved, theta, out, *rest = ctx.saved_tensors
        init = rest[0] if rest else None
        dynamics = replace(ctx.dynamics, theta=theta, init=init)  # the saved tensors
        surrogate, recompute = ctx.config
        need_theta = ctx.needs_input_grad[1]
        grad_h0 = None
        if init is not None and ctx.needs_input_grad[2]:
            grad_h0 = torch.empty(out[0].numel(), dtype=grad_out.dtype, device=grad_out.device)
        grad_in, grad_theta = _bptt_backward(
            grad_out, out, saved, recompute, dynamics, surrogate, need_theta, grad_h0
        )
        if grad_theta is not None:
            grad_theta = grad_theta.reshape(theta.shape).to(theta.dtype)
        grad_init = None
        if grad_h0 is not None and init is not None:
            # h[0] = leak * init + I[0]: dL/dinit = leak * dL/dh[0], summed where init broadcasts
            grad_init = grad_h0.mul_(dynamics.leak).view(out.shape[1:])
            grad_init = grad_init.sum() if init.dim() == 0 else grad_init.view(init.shape)
        return grad_in, grad_theta, grad_init, None, None


class BPTRFunction(torch.autograd.Function):
    """Exact spiking forward; backward passes the upstream gradient where the neuron fired
    (call :func:`bptr`; ``theta`` is ``dynamics.theta``, passed again for autograd)."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx, inputs: torch.Tensor, theta: torch.Tensor, dynamics: Dynamics
    ) -> torch.Tensor:
        # the initial membrane gets no gradient under BPTR (like theta's rate path)
        shape = dynamics.state_shape(inputs)
        fired = torch.empty(shape, dtype=inputs.dtype, device=inputs.device)
        out = _run(inputs, dynamics, fired=fired)
        ctx.save_for_backward(fired, theta, out)
        ctx.static = dynamics.static
        return out

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):  # type: ignore[override]
        fired, theta, out = ctx.saved_tensors
        if ctx.static:
            grad_in = grad_out.sum(0).mul_(fired)
        else:
            grad_in = grad_out * fired
        grad_theta = None
        if ctx.needs_input_grad[1]:
            # Only the amplitude path d(theta * s)/d theta; the rate path is what BPTR ignores.
            dot = torch.dot(grad_out.reshape(-1), out.reshape(-1)) / theta
            grad_theta = dot.reshape(theta.shape).to(theta.dtype)
        return grad_in, grad_theta, None


def bptt(inputs: torch.Tensor, dynamics: Dynamics, surrogate: Surrogate) -> torch.Tensor:
    """The fused layer under surrogate-gradient BPTT: ``theta * s`` as ``[T, B, ...]``, with
    exact BPTT gradients for the input, the threshold and the initial membrane."""
    return BPTTFunction.apply(inputs, dynamics.theta, dynamics.init, dynamics, surrogate)


def bptr(inputs: torch.Tensor, dynamics: Dynamics) -> torch.Tensor:
    """The fused layer under backpropagation through rate (the initial membrane gets no
    gradient)."""
    return BPTRFunction.apply(inputs, dynamics.theta, dynamics)


def reference_if(inputs: torch.Tensor, dynamics: Dynamics, surrogate: Surrogate) -> torch.Tensor:
    """Plain per-step autograd implementation (slow): the ground truth the fused one must match.

    ``dynamics.init``: the initial membrane u[-1] (broadcastable; None = zero)."""

    class _Spike(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):  # type: ignore[override]
            ctx.save_for_backward(x)
            return (x >= 0).to(x.dtype)

        @staticmethod
        def backward(ctx, g):  # type: ignore[override]
            (x,) = ctx.saved_tensors
            return g * surrogate.grad(x)

    theta, leak, static = dynamics.theta, dynamics.leak, dynamics.static
    soft_reset = dynamics.soft_reset
    u = torch.zeros_like(inputs if static else inputs[0])
    if dynamics.init is not None:
        u = u + dynamics.init
    outs = []
    for t in range(dynamics.steps):
        h = leak * u + (inputs if static else inputs[t])
        s = _Spike.apply(h - theta)
        u = h - s * theta if soft_reset else h * (1 - s)
        outs.append(s * theta)
    return torch.stack(outs)
