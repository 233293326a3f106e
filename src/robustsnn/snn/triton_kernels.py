"""Fused Triton kernels for the spiking layer: one launch for the forward over all T steps, one
for the BPTT backward.

Why: on a GPU the reference dynamics (``snn/dynamics.py``) launch a few small elementwise
kernels per time step and layer, and a CUDA profile of VGG11 is launch-bound. Here each
thread block owns ``BLOCK`` neurons and runs their whole time loop in registers:

* :func:`forward` (``_run``'s contract): IF/LIF leak, hard or soft reset, initial membrane
  (none, one value, or one per neuron), output ``theta * s``, optionally the membranes ``h``
  (for the backward) and the "fired at least once" mask (BPTR);
* :func:`backward`: BPTT in reverse time with the surrogate evaluated in the kernel for the
  paper's families (``pcw``, ``exp``, ``expd``, ``rect``, ``ste``) or read from a precomputed
  per-element multiplier (``sg [T, B, ...]``: threshold-relative widths, ASSG, PDSG, HART's
  triangle), optionally the reset detached or the temporal path cut with the input gradient
  averaged over time (HART), plus the threshold gradient (per-neuron sums over time, one
  ``[B*...]`` buffer summed by torch) and
  ``dL/dh[0]`` for the initial membrane's gradient.

The kernels are called from the existing autograd functions (``BPTTFunction``,
``BPTRFunction`` and ``ElementwiseBPTT`` through ``dynamics._run``; the backward of
``BPTTFunction`` and ``ElementwiseBPTT``), so every estimator keeps one code path for its
graph and the kernels only replace the time loops. What stays on the reference path and why:

* the multipliers of ASSG (running moments per layer, step and element, updated in the forward
  with the rows of the attack run), PDSG (running std over channels and time: a reduction) and
  the threshold-relative widths are computed by the existing vectorised torch code in the
  forward (a handful of launches per layer, not per step); only their BPTT recursion is fused;
* RGA and BPTR have no recursion in their backward (one elementwise product), so only their
  forward is fused;
* a surrogate kind that is not one of the five built-in ones (or was re-registered) runs the
  reference backward;
* dtypes other than float32/float64 (half precision) run the reference path.

Dispatch (:func:`use_kernels`): environment variable ``ROBUSTSNN_KERNELS`` (or, in code, the
context manager :func:`kernel_override`):
``auto`` (default: the kernels on CUDA float32/float64 tensors when triton is importable,
today's path elsewhere), ``reference`` (never the kernels), ``triton`` (the kernels on every float32/float64
tensor, CPU tensors through Triton's interpreter: how the tests verify them without a GPU).

Exactness: the forward does the same floating-point operations in the same order as the
reference (``h = u * leak + I``, the reset as a select), and the launches pass
``enable_fp_fusion=False`` so the GPU compiler cannot contract ``u * leak + I`` into an FMA:
spikes are bit-identical (``tests/snn/test_triton_kernels.py`` compiles the kernels for sm_90
ahead of time, no GPU needed, and checks the PTX has no FMA). The backward reorders a few
products (ulp-level differences).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor

from robustsnn.errors import UserError
from robustsnn.snn.spec import Dynamics

# Optional dependency, imported on first use (the kernels' bodies read the module global ``tl``;
# their ``tl.constexpr`` annotations are strings, so this module imports without triton).
triton: Any = None
tl: Any = None
_IMPORTED: bool | None = None
_OVERRIDE: str | None = None  # set by kernel_override(); takes precedence over the environment

KERNELS_ENV = "ROBUSTSNN_KERNELS"
KERNEL_MODES = ("auto", "reference", "triton")
SUPPORTED_DTYPES = (torch.float32, torch.float64)
# no FMA contraction: the forward must round ``u * leak`` and ``+ I`` separately, as on CPU
COMPILE_OPTIONS = {"enable_fp_fusion": False}
BLOCK = 1024  # neurons per program (GPU); the interpreter uses one program per INTERPRET_BLOCK
INTERPRET_BLOCK = 1 << 14

# surrogate codes of the backward kernel (0: a precomputed per-element multiplier)
GIVEN = 0
SURROGATE_CODES = {"pcw": 1, "exp": 2, "expd": 3, "rect": 4, "ste": 5}


def available() -> bool:
    """Whether triton is importable (imports it on the first call)."""
    global triton, tl, _IMPORTED
    if _IMPORTED is None:
        try:
            import triton as triton_module
            import triton.language as language
        except Exception:  # noqa: BLE001 - missing or broken: the reference path runs
            _IMPORTED = False
        else:
            triton, tl, _IMPORTED = triton_module, language, True
    return _IMPORTED


def kernel_mode() -> str:
    """The dispatch mode: :func:`kernel_override`'s, else ``ROBUSTSNN_KERNELS`` (``auto``)."""
    mode = _OVERRIDE or os.environ.get(KERNELS_ENV, "auto").strip().lower() or "auto"
    if mode not in KERNEL_MODES:
        raise UserError(
            f"{KERNELS_ENV}={mode!r} is not a kernel mode; use one of {', '.join(KERNEL_MODES)}"
        )
    return mode


@contextlib.contextmanager
def kernel_override(mode: str | None) -> Iterator[None]:
    """Run the block (forward and backward) in dispatch ``mode`` (None: leave it as it is);
    benchmarks compare the kernels and the reference path in one process this way."""
    global _OVERRIDE
    if mode is not None and mode not in KERNEL_MODES:
        raise ValueError(f"kernel mode must be one of {KERNEL_MODES}, not {mode!r}")
    previous = _OVERRIDE
    _OVERRIDE = mode if mode is not None else previous
    try:
        yield
    finally:
        _OVERRIDE = previous


def use_kernels(tensor: Tensor) -> bool:
    """Whether the spiking dynamics on ``tensor`` run through the Triton kernels (see module doc)."""
    mode = kernel_mode()
    if mode == "reference" or tensor.dtype not in SUPPORTED_DTYPES:
        return False
    if mode == "auto" and tensor.device.type != "cuda":
        return False  # without importing triton
    if not available():
        if mode == "triton":
            raise UserError(
                f"{KERNELS_ENV}=triton forces the Triton kernels, but triton is not importable; "
                f"install it (pip install --no-deps triton) or unset {KERNELS_ENV}"
            )
        return False
    if mode == "triton":
        return tensor.device.type in ("cuda", "cpu")
    return tensor.device.type == "cuda"


# ----------------------------------------------------------------------------- kernels
# Plain functions, compiled (GPU) or interpreted (CPU tensors) on first use: see _launcher.


def _forward_kernel(
    cur_ptr,
    theta_ptr,
    param_ptr,
    init_ptr,
    out_ptr,
    h_ptr,
    fired_ptr,
    n,
    steps,
    STATIC: tl.constexpr,
    SOFT: tl.constexpr,
    LEAKY: tl.constexpr,
    INIT: tl.constexpr,
    KEEP_H: tl.constexpr,
    FIRED: tl.constexpr,
    BLOCK: tl.constexpr,
):
    """All T steps of BLOCK neurons. INIT: 0 none, 1 one value, 2 one per neuron."""
    pid = tl.program_id(0)
    offs = pid.to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    theta = tl.load(theta_ptr)
    leak = tl.load(param_ptr)
    cur_p = cur_ptr + offs
    out_p = out_ptr + offs
    h_p = h_ptr + offs
    current = tl.load(cur_p, mask=mask, other=0.0)
    # step 0: h = leak * init + I (the reference's two roundings), or I
    if INIT == 1:
        init = tl.load(init_ptr)
        h = (init * leak if LEAKY else init) + current
    elif INIT == 2:
        init = tl.load(init_ptr + offs, mask=mask, other=0.0)
        h = (init * leak if LEAKY else init) + current
    else:
        h = current
    spike = h >= theta
    tl.store(out_p, tl.where(spike, theta, 0.0).to(h.dtype), mask=mask)
    if KEEP_H:
        tl.store(h_p, h, mask=mask)
    fired = spike
    for _ in range(1, steps):
        # reset: h - theta * s (soft) or h * (1 - s) (hard), exact as selects for s in {0, 1}
        if SOFT:
            u = tl.where(spike, h - theta, h)
        else:
            u = tl.where(spike, 0.0, h).to(h.dtype)
        out_p += n
        h_p += n
        if not STATIC:
            cur_p += n
            current = tl.load(cur_p, mask=mask, other=0.0)
        h = u * leak + current if LEAKY else current + u
        spike = h >= theta
        tl.store(out_p, tl.where(spike, theta, 0.0).to(h.dtype), mask=mask)
        if KEEP_H:
            tl.store(h_p, h, mask=mask)
        fired = fired | spike
    if FIRED:
        tl.store(fired_ptr + offs, fired.to(h.dtype), mask=mask)


def _backward_kernel(
    grad_ptr,
    h_ptr,
    out_ptr,
    sg_ptr,
    theta_ptr,
    param_ptr,
    grad_in_ptr,
    grad_h0_ptr,
    partial_ptr,
    n,
    steps,
    last,
    STATIC: tl.constexpr,
    SOFT: tl.constexpr,
    DETACH: tl.constexpr,
    CUT: tl.constexpr,
    SURROGATE: tl.constexpr,
    HAS_H: tl.constexpr,
    NEED_THETA: tl.constexpr,
    NEED_H0: tl.constexpr,
    BLOCK: tl.constexpr,
):
    """BPTT of BLOCK neurons in reverse time (see dynamics._bptt_backward for the formulas).

    Spikes come from ``h >= theta`` (HAS_H) or from ``out != 0``. SURROGATE: 0 reads the
    multiplier from ``sg_ptr``, 1-5 evaluate pcw/exp/expd/rect/ste at ``h - theta``.
    """
    pid = tl.program_id(0)
    offs = pid.to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    theta = tl.load(theta_ptr)
    leak = tl.load(param_ptr)
    gamma = tl.load(param_ptr + 1)
    damp = tl.load(param_ptr + 2)  # expd's 0.3 in the tensor's dtype
    count = tl.load(param_ptr + 3)  # T in the tensor's dtype
    g_p = grad_ptr + last + offs
    h_p = h_ptr + last + offs
    o_p = out_ptr + last + offs
    s_p = sg_ptr + last + offs
    gi_p = grad_in_ptr + last + offs
    zero = tl.full([BLOCK], 0.0, theta.dtype)  # (tl.zeros/tl.sum: not interpretable here)
    gh_next = zero  # dL/dh[t+1]
    acc = zero  # static input: sum_t dL/dh[t]; HART: sum_t of the local gradient
    tacc = zero  # threshold gradient terms
    for _ in range(steps):
        g = tl.load(g_p, mask=mask, other=0.0)
        if HAS_H:
            h = tl.load(h_p, mask=mask, other=0.0)
            spike = h >= theta
        else:
            h = zero
            spike = tl.load(o_p, mask=mask, other=0.0) != 0.0
        if SURROGATE == 0:
            sg = tl.load(s_p, mask=mask, other=0.0)
        elif SURROGATE == 1:
            sg = tl.maximum(gamma - tl.abs(h - theta), 0.0) / (gamma * gamma)
        elif SURROGATE == 2:
            sg = tl.exp(-gamma * tl.abs(h - theta))
        elif SURROGATE == 3:
            sg = tl.exp(-gamma * tl.abs(h - theta)) * damp
        elif SURROGATE == 4:
            sg = tl.where(tl.abs(h - theta) < gamma * 0.5, 1.0 / gamma, zero)
        else:
            sg = zero + 1.0
        if CUT:
            acc += g * theta * sg
        else:
            gu = gh_next * leak
            if DETACH:
                ds = g * theta
            elif SOFT:
                ds = (g - gu) * theta
            else:
                ds = g * theta - gu * h
            p = ds * sg
            if SOFT:
                dh = p + gu
            else:
                dh = p + tl.where(spike, zero, gu)
            if STATIC:
                acc += dh
            else:
                tl.store(gi_p, dh, mask=mask)
            if NEED_THETA:
                fired = spike.to(theta.dtype)
                if SOFT:
                    tacc += (g - gu) * fired - p
                else:
                    tacc += g * fired - p
            gh_next = dh
        g_p -= n
        h_p -= n
        o_p -= n
        s_p -= n
        gi_p -= n
    if CUT and not STATIC:
        mean = acc / count  # HART: the time-averaged gradient at every step
        gi_p = grad_in_ptr + offs
        for _ in range(steps):
            tl.store(gi_p, mean, mask=mask)
            gi_p += n
    if STATIC:
        tl.store(grad_in_ptr + offs, acc, mask=mask)
    if NEED_H0:
        tl.store(grad_h0_ptr + offs, gh_next, mask=mask)
    if NEED_THETA:
        tl.store(partial_ptr + offs, tacc, mask=mask)  # summed by the caller


_LAUNCHERS: dict[tuple[str, bool], Any] = {}


def _launcher(fn: Callable[..., None], interpret: bool) -> Any:
    """``fn`` compiled by ``triton.jit`` (GPU) or wrapped by Triton's interpreter (CPU tensors)."""
    key = (fn.__name__, interpret)
    launcher = _LAUNCHERS.get(key)
    if launcher is None:
        if not available():
            raise RuntimeError("the Triton kernels need triton (pip install triton)")
        if interpret:
            from triton.runtime.interpreter import InterpretedFunction

            launcher = InterpretedFunction(fn)
        else:
            launcher = triton.jit(fn)
        _LAUNCHERS[key] = launcher
    return launcher


def _on_device(device: torch.device) -> Any:
    """Launch on the tensors' GPU (Triton launches on the current CUDA device)."""
    return torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()


def _grid_block(tensor: Tensor, numel: int) -> tuple[tuple[int], int, bool]:
    interpret = tensor.device.type == "cpu"
    block = INTERPRET_BLOCK if interpret else BLOCK
    block = min(block, max(16, 1 << max(numel - 1, 1).bit_length()))
    return ((numel + block - 1) // block,), block, interpret


_PARAMS: dict[tuple[Any, ...], Tensor] = {}


def _params(
    dtype: torch.dtype, device: torch.device, leak: float, gamma: float = 1.0, steps: int = 1
) -> Tensor:
    """``[leak, gamma, 0.3, T]`` on the device, in the tensor's dtype (as the reference rounds
    its Python scalars to it; Triton would pass a Python float as float32). Cached: a fresh
    host-to-device copy per launch would synchronise the CUDA stream every time."""
    key = (dtype, device, leak, gamma, steps)
    params = _PARAMS.get(key)
    if params is None:
        if len(_PARAMS) > 4096:
            _PARAMS.clear()
        params = torch.tensor([leak, gamma, 0.3, float(steps)], dtype=dtype, device=device)
        _PARAMS[key] = params
    return params


def forward(
    inputs: Tensor,
    dynamics: Dynamics,
    membranes: Tensor | None = None,
    fired: Tensor | None = None,
) -> Tensor:
    """The spiking forward in one launch: ``theta * s`` as ``[T, B, ...]`` (``dynamics._run``'s
    contract: ``membranes`` [T, B, ...] and ``fired`` [B, ...] are optional contiguous outputs,
    ``dynamics.init`` the initial membrane, 0-dim or [B, ...], None = zero). The kernel takes
    the dynamics as scalars and compile-time flags."""
    steps, leak, static = dynamics.steps, dynamics.leak, dynamics.static
    shape = dynamics.state_shape(inputs)
    currents = inputs.detach().contiguous()
    numel = currents.numel() // (1 if static else steps)
    dtype, device = currents.dtype, currents.device
    out = torch.empty((steps, *shape), dtype=dtype, device=device)
    theta = dynamics.theta.detach().to(dtype).reshape(1)
    init_mode, init_arg = 0, out
    init = dynamics.init
    if init is not None:
        init = init.detach().to(dtype)
        if init.dim() == 0:
            init_mode, init_arg = 1, init.reshape(1)
        else:
            init_arg = init.reshape(-1).contiguous()
            if init_arg.numel() != numel:
                raise RuntimeError(
                    f"initial membrane has {init_arg.numel()} elements, expected {numel}"
                )
            init_mode = 2
    for name, buffer in (("membranes", membranes), ("fired", fired)):
        if buffer is not None and not buffer.is_contiguous():
            raise ValueError(f"{name} must be a contiguous buffer")
    grid, block, interpret = _grid_block(currents, numel)
    if numel == 0:
        return out
    with _on_device(device):
        _launcher(_forward_kernel, interpret)[grid](
            currents,
            theta,
            _params(dtype, device, leak),
            init_arg,
            out,
            membranes if membranes is not None else out,
            fired if fired is not None else out,
            numel,
            steps,
            STATIC=static,
            SOFT=dynamics.soft_reset,
            LEAKY=leak != 1.0,
            INIT=init_mode,
            KEEP_H=membranes is not None,
            FIRED=fired is not None,
            BLOCK=block,
            **COMPILE_OPTIONS,
        )
    return out


def backward(
    grad_out: Tensor,
    dynamics: Dynamics,
    *,
    membranes: Tensor | None = None,
    out: Tensor | None = None,
    surrogate: tuple[str, float] | None = None,
    multiplier: Tensor | None = None,
    detach_reset: bool = False,
    cut_temporal: bool = False,
    need_theta: bool = False,
    need_h0: bool = False,
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """BPTT of one layer in one launch; returns (grad of the input, of theta, ``dL/dh[0]``).

    ``dynamics``: the forward's (its ``init`` is not read: the initial membrane enters only
    through ``dL/dh[0]``). ``grad_out`` [T, B, ...]; ``membranes`` h [T, B, ...] (needed by an in-kernel surrogate and
    by the hard reset through the reset path) and/or ``out`` (``theta * s``, for the spikes when
    no membranes are given); exactly one of ``surrogate`` (``(kind, gamma)``, a kind of
    :data:`SURROGATE_CODES`) or ``multiplier`` (``dS/dh`` [T, B, ...]). Static input: the input
    gradient is summed over time (``[B, ...]``). ``cut_temporal`` (HART): no carry-over, the
    local gradient averaged over time. The threshold gradient is that of the graph (the output
    ``theta * s``, the spike ``H(h - theta)`` with the multiplier as its derivative, and the soft
    reset's ``theta * s``, also with ``detach_reset``, which detaches only ``s``), the
    multiplier itself not differentiated; none with ``cut_temporal``.
    ``dL/dh[0]`` is a flat ``[B*...]`` tensor (the initial membrane's gradient is ``leak``
    times it).
    """
    leak, soft_reset, static = dynamics.leak, dynamics.soft_reset, dynamics.static
    if (surrogate is None) == (multiplier is None):
        raise ValueError("give exactly one of surrogate or multiplier")
    if membranes is None and (
        surrogate is not None or not (soft_reset or detach_reset or cut_temporal)
    ):
        raise ValueError("this backward needs the membranes")
    if membranes is None and out is None:
        raise ValueError("give the membranes or the output")
    if (need_theta or need_h0) and cut_temporal:
        raise ValueError("the temporal cut (HART) gives no threshold or initial-membrane gradient")
    steps = grad_out.shape[0]
    shape = grad_out.shape[1:]
    grads = grad_out.detach().contiguous()
    dtype, device = grads.dtype, grads.device
    numel = grads.numel() // steps
    gamma = 1.0
    code = GIVEN
    if surrogate is not None:
        code = SURROGATE_CODES[surrogate[0]]
        gamma = float(surrogate[1])
    grid, block, interpret = _grid_block(grads, numel)
    grad_in = torch.empty(shape if static else (steps, *shape), dtype=dtype, device=device)
    grad_h0 = torch.empty(numel, dtype=dtype, device=device) if need_h0 else None
    partial = torch.empty(numel, dtype=dtype, device=device) if need_theta else None
    h = membranes.detach().contiguous() if membranes is not None else grads
    spikes = out.detach().contiguous() if out is not None else grads
    sg = (
        multiplier.detach().to(dtype).expand(grads.shape).contiguous()
        if multiplier is not None
        else grads
    )
    if numel:
        with _on_device(device):
            _launcher(_backward_kernel, interpret)[grid](
                grads,
                h,
                spikes,
                sg,
                dynamics.theta.detach().to(dtype).reshape(1),
                _params(dtype, device, leak, gamma, steps),
                grad_in,
                grad_h0 if grad_h0 is not None else grad_in,
                partial if partial is not None else grad_in,
                numel,
                steps,
                (steps - 1) * numel,  # offset of the last step (an int64 argument when large)
                STATIC=static,
                SOFT=soft_reset,
                DETACH=detach_reset,
                CUT=cut_temporal,
                SURROGATE=code,
                HAS_H=membranes is not None,
                NEED_THETA=need_theta,
                NEED_H0=need_h0,
                BLOCK=block,
                **COMPILE_OPTIONS,
            )
    grad_theta = partial.sum() if partial is not None else None
    return grad_in, grad_theta, grad_h0


def supports_surrogate(kind: str) -> bool:
    """Whether the backward kernel evaluates surrogate ``kind`` itself."""
    return kind in SURROGATE_CODES
