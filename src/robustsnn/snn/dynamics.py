"""Integrate-and-fire dynamics over T steps as fused autograd functions.

Forward (PAPER.md section 2), per step t with ``u[0] = 0``::

    h[t] = leak * u[t-1] + I[t]          # membrane before the spike
    s[t] = H(h[t] - theta)               # binary spike, H(0) = 1
    u[t] = h[t] * (1 - s[t])             # hard reset, or  h[t] - s[t] * theta  (soft reset)
    o[t] = theta * s[t]                  # emitted value

Emitting ``theta * s`` is the same as emitting binary spikes and letting the next layer's weights
absorb theta; it keeps the network's function equal to the ANN's as the rate converges to
``clip(relu(I), 0, theta)``, and makes the ANN proxy (ReLU in place of every neuron) the exact ANN.

The whole time loop runs as one autograd node per layer that stores only the membranes ``h``
(spikes are recomputed from them), instead of autograd recording every elementwise step.
The backward is exact BPTT through the reset (no detached reset) with the surrogate in place
of dH/dx, or backpropagation through rate (BPTR).

Inputs are either time-major ``[T, B, ...]`` currents or a static ``[B, ...]`` current repeated
at every step (direct input coding: the first layer's current is computed once, not T times).
"""

from __future__ import annotations

import torch

from robustsnn.snn.surrogates import Surrogate


def if_forward(
    inputs: torch.Tensor,
    theta: torch.Tensor,
    steps: int,
    leak: float,
    soft_reset: bool,
    static: bool,
    keep_membranes: bool = True,
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Run the dynamics without autograd; return spikes*theta ``[T, B, ...]`` and membranes h."""
    currents = [inputs] * steps if static else list(inputs.unbind(0))
    u = torch.zeros_like(currents[0])
    outs: list[torch.Tensor] = []
    membranes: list[torch.Tensor] = []
    for t in range(steps):
        h = u.mul(leak).add_(currents[t]) if leak != 1.0 else u + currents[t]
        spike = h >= theta
        if keep_membranes:
            membranes.append(h)
        if soft_reset:
            u = h - spike.to(h.dtype) * theta
        else:
            u = h.masked_fill(spike, 0.0)
        outs.append(spike.to(h.dtype) * theta)
    return torch.stack(outs), membranes


class BPTTFunction(torch.autograd.Function):
    """Fused IF/LIF layer with surrogate-gradient BPTT."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx,
        inputs: torch.Tensor,
        theta: torch.Tensor,
        steps: int,
        leak: float,
        soft_reset: bool,
        static: bool,
        surrogate: Surrogate,
    ) -> torch.Tensor:
        out, membranes = if_forward(inputs, theta, steps, leak, soft_reset, static)
        ctx.save_for_backward(theta, *membranes)
        ctx.config = (steps, leak, soft_reset, static, surrogate)
        return out

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):  # type: ignore[override]
        theta, *membranes = ctx.saved_tensors
        steps, leak, soft_reset, static, surrogate = ctx.config
        grads_out = grad_out.unbind(0)
        grad_u = torch.zeros_like(membranes[0])  # dL/du[t] arriving from step t+1
        grad_in_steps: list[torch.Tensor] = [grad_u] * steps
        grad_theta = torch.zeros((), dtype=theta.dtype, device=theta.device)
        need_theta = ctx.needs_input_grad[1]
        for t in range(steps - 1, -1, -1):
            h = membranes[t]
            spike = (h >= theta).to(h.dtype)
            sg = surrogate.grad(h - theta)
            if t == steps - 1:
                grad_s = grads_out[t] * theta
                grad_h = grad_s * sg
            else:
                reset_ds = -h if not soft_reset else -theta
                grad_s = grads_out[t] * theta + grad_u * reset_ds
                grad_h = grad_s * sg + (grad_u if soft_reset else grad_u * (1.0 - spike))
            if need_theta:
                # o = theta * s; s = H(h - theta); soft reset u = h - s * theta.
                g = (grads_out[t] * spike).sum() - (grad_s * sg).sum()
                if soft_reset and t != steps - 1:
                    g = g - (grad_u * spike).sum()
                grad_theta = grad_theta + g
            grad_in_steps[t] = grad_h
            grad_u = grad_h * leak if leak != 1.0 else grad_h
        if static:
            grad_in = torch.stack(grad_in_steps).sum(0)
        else:
            grad_in = torch.stack(grad_in_steps)
        return (
            grad_in,
            (grad_theta.reshape(theta.shape) if need_theta else None),
            None,
            None,
            None,
            None,
            None,
        )


class BPTRFunction(torch.autograd.Function):
    """Exact spiking forward; backward passes the upstream gradient where the neuron fired."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx,
        inputs: torch.Tensor,
        theta: torch.Tensor,
        steps: int,
        leak: float,
        soft_reset: bool,
        static: bool,
    ) -> torch.Tensor:
        out, _ = if_forward(inputs, theta, steps, leak, soft_reset, static)
        fired = out.ne(0).any(0)
        ctx.save_for_backward(fired, out.ne(0))
        ctx.config = (steps, static)
        ctx.theta_shape = theta.shape
        return out

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):  # type: ignore[override]
        fired, spikes = ctx.saved_tensors
        steps, static = ctx.config
        grad_in = grad_out * fired.to(grad_out.dtype)
        if static:
            grad_in = grad_in.sum(0)
        grad_theta = None
        if ctx.needs_input_grad[1]:
            # Only the amplitude path d(theta * s)/d theta; the rate path is what BPTR ignores.
            grad_theta = (grad_out * spikes.to(grad_out.dtype)).sum().reshape(ctx.theta_shape)
        return grad_in, grad_theta, None, None, None, None


def reference_if(
    inputs: torch.Tensor,
    theta: torch.Tensor,
    steps: int,
    leak: float,
    soft_reset: bool,
    surrogate: Surrogate,
    static: bool = False,
) -> torch.Tensor:
    """Plain per-step autograd implementation (slow): the ground truth the fused one must match."""

    class _Spike(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):  # type: ignore[override]
            ctx.save_for_backward(x)
            return (x >= 0).to(x.dtype)

        @staticmethod
        def backward(ctx, g):  # type: ignore[override]
            (x,) = ctx.saved_tensors
            return g * surrogate.grad(x)

    u = torch.zeros_like(inputs if static else inputs[0])
    outs = []
    for t in range(steps):
        h = leak * u + (inputs if static else inputs[t])
        s = _Spike.apply(h - theta)
        u = h - s * theta if soft_reset else h * (1 - s)
        outs.append(s * theta)
    return torch.stack(outs)
