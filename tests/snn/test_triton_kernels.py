"""The fused Triton kernels against the reference dynamics, run on CPU through Triton's
interpreter (``ROBUSTSNN_KERNELS=triton``): forward spikes and membranes bit-identical,
gradients (input, threshold, initial membrane, upstream weights) equal within float32/float64
rounding, for every surrogate, reset, leak and initial membrane, odd shapes, T = 1 and T = 32,
and every estimator that reaches the kernels through the spiking layer."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import torch

from robustsnn.errors import UserError
from robustsnn.snn import SpikingNeuron, parse_estimator, triton_kernels
from robustsnn.snn.dynamics import _run, bptr, bptt, reference_if
from robustsnn.snn.neuron import RUN_STATE_KEY
from robustsnn.snn.run_state import RunState
from robustsnn.snn.spec import Dynamics
from robustsnn.snn.surrogates import Surrogate

pytestmark = pytest.mark.skipif(
    not triton_kernels.available(),
    reason="triton is not installed (pip install --no-deps triton): the kernel tests need it",
)

KINDS = ("pcw", "exp", "expd", "rect", "ste")
GAMMA = {"pcw": 0.5, "exp": 2.0, "expd": 1.0, "rect": 0.5, "ste": 1.0}
TOL = {torch.float32: 1e-5, torch.float64: 1e-10}


class Calls:
    """Counts the kernel launches, so a test fails if the dispatch silently took the
    reference path (which would compare the reference with itself)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.forward = 0
        self.backward = 0
        for name in ("forward", "backward"):
            original = getattr(triton_kernels, name)
            monkeypatch.setattr(triton_kernels, name, self._counted(name, original))

    def _counted(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            setattr(self, name, getattr(self, name) + 1)
            return fn(*args, **kwargs)

        return wrapper


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[Calls]:
    yield Calls(monkeypatch)


def _mode(monkeypatch: pytest.MonkeyPatch, mode: str) -> None:
    monkeypatch.setenv(triton_kernels.KERNELS_ENV, mode)


def _close(
    actual: torch.Tensor | None,
    expected: torch.Tensor | None,
    what: str,
    scale: float | None = None,
) -> None:
    """Equal within ``TOL`` relative, absolute errors measured against ``scale`` (default the
    largest entry of ``expected``, at least 1)."""
    assert actual is not None and expected is not None, what
    tol = TOL[expected.dtype]
    scale = max(1.0, float(expected.abs().max())) if scale is None else scale
    torch.testing.assert_close(actual, expected, rtol=tol, atol=tol * scale, msg=what)


# --------------------------------------------------------------------------- dispatch


def test_kernel_dispatch_modes(monkeypatch: pytest.MonkeyPatch) -> None:
    x = torch.zeros(3)
    _mode(monkeypatch, "auto")
    assert not triton_kernels.use_kernels(x)  # CPU keeps today's path
    _mode(monkeypatch, "triton")
    assert triton_kernels.use_kernels(x)  # the interpreter
    assert triton_kernels.use_kernels(x.double())
    assert not triton_kernels.use_kernels(x.half())  # half precision: reference path
    _mode(monkeypatch, "reference")
    assert not triton_kernels.use_kernels(x)
    _mode(monkeypatch, "fast")
    with pytest.raises(UserError, match="ROBUSTSNN_KERNELS"):
        triton_kernels.use_kernels(x)


# --------------------------------------------------------------------------- forward


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("steps", [1, 32])
def test_triton_forward_is_bit_identical(
    monkeypatch: pytest.MonkeyPatch, calls: Calls, steps: int, dtype: torch.dtype
) -> None:
    """Spikes, membranes and the fired mask equal the reference bit for bit (every reset,
    leak, initial membrane and input coding; an odd neuron count)."""
    gen = torch.Generator().manual_seed(steps)
    theta = torch.tensor(0.37, dtype=dtype)
    launches = 0
    for static, soft, leak, init_kind in itertools.product(
        (False, True), (False, True), (1.0, 0.9), ("none", "scalar", "per-neuron")
    ):
        shape = (3, 5, 7) if static else (steps, 3, 5, 7)
        inputs = (torch.rand(shape, generator=gen, dtype=dtype) * 1.4 - 0.3) * theta
        init = {
            "none": None,
            "scalar": theta * 0.5,
            "per-neuron": torch.rand((3, 5, 7), generator=gen, dtype=dtype) * theta,
        }[init_kind]
        results = []
        for mode in ("reference", "triton"):
            _mode(monkeypatch, mode)
            membranes = torch.empty((steps, 3, 5, 7), dtype=dtype)
            fired = torch.empty((3, 5, 7), dtype=dtype)
            out = _run(inputs, Dynamics(theta, steps, leak, soft, static, init), membranes, fired)
            results.append((out, membranes, fired))
        launches += 1
        case = f"static={static} soft={soft} leak={leak} init={init_kind}"
        for name, ref, got in zip(("out", "membranes", "fired"), *results, strict=True):
            assert torch.equal(ref, got), f"{name} differs: {case}"
        assert results[0][0].ne(0).any(), "no spikes: the case tests nothing"
    assert calls.forward == launches


# --------------------------------------------------------------------------- BPTT


def _bptt_case(
    kind: str,
    *,
    steps: int,
    static: bool,
    soft: bool,
    leak: float,
    init_kind: str,
    dtype: torch.dtype,
    seed: int,
    reference: bool = False,
) -> dict[str, torch.Tensor | None]:
    """Output and gradients of a Linear -> spiking layer (odd sizes) under BPTT(kind)."""
    gen = torch.Generator().manual_seed(seed)
    batch, features, hidden = 3, 11, 35
    z = torch.rand((batch if static else steps * batch, features), generator=gen, dtype=dtype)
    weight = (torch.randn((hidden, features), generator=gen, dtype=dtype) * 0.3).requires_grad_()
    theta = torch.tensor(0.6, dtype=dtype, requires_grad=True)
    upstream = torch.randn((steps, batch, hidden), generator=gen, dtype=dtype)
    offset = torch.rand((batch, hidden), generator=gen, dtype=dtype) * 0.5
    z.requires_grad_()
    init: torch.Tensor | None = None
    if init_kind == "scalar":
        init = theta * 0.5
    elif init_kind == "per-neuron":
        init = (theta.detach() * 0.5 + offset).requires_grad_()
    # in [-0.05, 0.85]: strongly negative static currents would make the hard reset's
    # gradient factor |1 - h| compound over 32 steps into float32 overflow (in every path)
    currents = torch.sigmoid(z @ weight.T * 3 - 1) * 0.9 - 0.05
    inputs = currents if static else currents.view(steps, batch, hidden)
    surrogate = Surrogate(kind, GAMMA[kind])
    if reference:
        out = reference_if(inputs, Dynamics(theta, steps, leak, soft, static, init), surrogate)
    else:
        out = bptt(inputs, Dynamics(theta, steps, leak, soft, static, init), surrogate)
    leaves = {"z": z, "weight": weight, "theta": theta, "current": currents}
    if init_kind == "per-neuron":
        assert init is not None
        leaves["init"] = init
    grads = torch.autograd.grad(out, list(leaves.values()), upstream, allow_unused=True)
    return {"out": out.detach(), **dict(zip(leaves, grads, strict=True))}


@pytest.mark.parametrize("kind", KINDS)
def test_triton_bptt_kernel_matches_reference(
    monkeypatch: pytest.MonkeyPatch, calls: Calls, kind: str
) -> None:
    """Every surrogate x reset x leak x initial membrane x input coding, T = 1 and 32, float32
    and float64: identical spikes, equal gradients of the input, the upstream weights, the
    threshold and the initial membrane (the CPU fused path and, in float64, per-step autograd)."""
    # T = 1: every reset x leak x initial membrane (time-varying input: a static input at T = 1
    # is an ordinary one); T = 32 (the interpreter is slow): every input coding x reset with
    # three (leak, initial membrane) pairs
    short = [
        (1, False, soft, leak, init)
        for soft, leak, init in itertools.product(
            (False, True), (1.0, 0.8), ("none", "scalar", "per-neuron")
        )
    ]
    long = [
        (32, static, soft, leak, init)
        for static, soft, (leak, init) in itertools.product(
            (False, True), (False, True), ((1.0, "none"), (0.8, "per-neuron"), (1.0, "scalar"))
        )
    ]
    for index, (steps, static, soft, leak, init_kind) in enumerate(short + long):
        dtype = torch.float64 if index % 2 else torch.float32
        config = dict(
            steps=steps, static=static, soft=soft, leak=leak, init_kind=init_kind, dtype=dtype
        )
        _mode(monkeypatch, "reference")
        expected = _bptt_case(kind, seed=index, **config)  # type: ignore[arg-type]
        _mode(monkeypatch, "triton")
        before = calls.backward
        got = _bptt_case(kind, seed=index, **config)  # type: ignore[arg-type]
        assert calls.backward == before + 1
        case = f"{kind} {config}"
        assert torch.equal(got["out"], expected["out"]), f"spikes differ: {case}"
        # the threshold gradient is one sum over all neurons and steps of terms as large as the
        # current's gradient, often cancelling: its rounding error scales with their L1 norm
        theta_scale = max(1.0, float(expected["current"].abs().sum()))  # type: ignore[union-attr]
        for name in expected:
            if name != "out":
                scale = theta_scale if name == "theta" else None
                _close(got[name], expected[name], f"d{name}: {case}", scale)
        if dtype == torch.float64:
            truth = _bptt_case(kind, seed=index, reference=True, **config)  # type: ignore[arg-type]
            for name in truth:
                scale = theta_scale if name == "theta" else None
                _close(got[name], truth[name], f"d{name} vs per-step autograd: {case}", scale)


def test_kernel_bptr_matches_reference(monkeypatch: pytest.MonkeyPatch, calls: Calls) -> None:
    gen = torch.Generator().manual_seed(3)
    for static, soft in itertools.product((False, True), (False, True)):
        inputs = torch.rand((5, 7) if static else (8, 5, 7), generator=gen)
        upstream = torch.randn((8, 5, 7), generator=gen)
        results = []
        for mode in ("reference", "triton"):
            _mode(monkeypatch, mode)
            x = inputs.clone().requires_grad_()
            theta = torch.tensor(0.4, requires_grad=True)
            out = bptr(x, Dynamics(theta, 8, 0.9, soft, static))
            results.append((out.detach(), *torch.autograd.grad(out, (x, theta), upstream)))
        assert torch.equal(results[0][0], results[1][0])
        for ref, got in zip(results[0][1:], results[1][1:], strict=True):
            _close(got, ref, f"bptr static={static} soft={soft}")
    assert calls.forward == 4


# --------------------------------------------------------------------------- estimators

ESTIMATORS = (
    "bptt-pcw-1",
    "bptt-rect-0.5-dr",
    "bptt-rel-pcw-0.5",
    "bptt-rel-exp-1-dr",
    "hart-1",
    "assg-atan-0.425-dr",
    "assg-pcw-0.85",
    "pdsg",
    "rga",
    "bptr",
)


def _layer_run(
    name: str, *, steps: int, static: bool, soft: bool, leak: float, dtype: torch.dtype
) -> tuple[torch.Tensor, ...]:
    """Two attack iterations of one conv-shaped spiking layer (channels-first, odd sizes)
    under estimator ``name``; returns the outputs and input gradients of both."""
    gen = torch.Generator().manual_seed(11)
    batch = 3
    neuron = SpikingNeuron(threshold=0.45, leak=leak, reset="soft" if soft else "hard", v_init=0.5)
    neuron.to(dtype)
    neuron.name = "layer"
    neuron.context.steps, neuron.context.batch = steps, batch
    neuron.context.estimator = parse_estimator(name)
    neuron.context.extra = {RUN_STATE_KEY: RunState()}
    shape = (batch if static else steps * batch, 4, 3, 5)
    x = (torch.rand(shape, generator=gen, dtype=dtype) * 0.8).requires_grad_()
    upstream = torch.randn((steps * batch, 4, 3, 5), generator=gen, dtype=dtype)
    results: list[torch.Tensor] = []
    for step in range(2):  # the second pass sees ASSG's updated moments
        out = neuron(x + 0.05 * step)
        (grad,) = torch.autograd.grad(out, x, upstream)
        results += [out.detach(), grad]
    return tuple(results)


@pytest.mark.parametrize("name", ESTIMATORS)
def test_estimators_through_the_triton_kernels(
    monkeypatch: pytest.MonkeyPatch, calls: Calls, name: str
) -> None:
    """The spiking layer under each estimator: outputs identical and input gradients equal with
    the kernels (forward always; backward where the estimator has a recursion)."""
    configs = [
        dict(steps=6, static=False, soft=False, leak=1.0, dtype=torch.float32),
        dict(steps=5, static=True, soft=True, leak=0.9, dtype=torch.float64),
    ]
    for config in configs:
        _mode(monkeypatch, "reference")
        expected = _layer_run(name, **config)  # type: ignore[arg-type]
        _mode(monkeypatch, "triton")
        got = _layer_run(name, **config)  # type: ignore[arg-type]
        for index, (ref, value) in enumerate(zip(expected, got, strict=True)):
            if index % 2 == 0:
                assert torch.equal(ref, value), f"{name} {config}: outputs differ"
            else:
                assert value.abs().sum() > 0, f"{name} {config}: zero gradient"
                _close(value, ref, f"{name} {config}: input gradient")
    assert calls.forward >= 4
    recursive = name not in ("rga", "bptr")
    assert (calls.backward >= 4) == recursive


def test_kernel_override_takes_precedence_and_restores(monkeypatch: pytest.MonkeyPatch) -> None:
    x = torch.zeros(3)
    _mode(monkeypatch, "reference")
    with triton_kernels.kernel_override("triton"):
        assert triton_kernels.use_kernels(x)
        with triton_kernels.kernel_override(None):
            assert triton_kernels.use_kernels(x)
    assert not triton_kernels.use_kernels(x)
    with pytest.raises(ValueError, match="kernel mode"):
        with triton_kernels.kernel_override("fast"):
            pass


# --------------------------------------------------------------------------- GPU code


def _compile_for_sm90(
    fn: Callable[..., None], pointers: int, ints: dict[str, str], **constexprs: Any
) -> Any:
    """Compile ``fn`` ahead of time for an H100/H200 (sm_90): no GPU needed."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    jitted = triton.jit(fn)
    names = jitted.arg_names
    signature = {name: "*fp32" for name in names[:pointers]}
    signature.update(ints)
    signature.update({name: "constexpr" for name in constexprs})
    source = ASTSource(jitted, signature, constexprs)
    target = GPUTarget("cuda", 90, 32)
    return triton.compile(source, target=target, options=dict(triton_kernels.COMPILE_OPTIONS))


def test_kernels_compile_for_the_gpu_without_fma() -> None:
    """The compiled (not interpreted) kernels build for sm_90, and the forward's PTX has no
    fused multiply-add: ``u * leak + I`` rounds twice, as on CPU, so spikes stay identical."""
    from triton.backends import backends

    if "nvidia" not in backends:
        pytest.skip("this triton build has no NVIDIA compiler backend")
    forward = _compile_for_sm90(
        triton_kernels._forward_kernel,
        7,
        {"n": "i32", "steps": "i32"},
        STATIC=False, SOFT=True, LEAKY=True, INIT=2, KEEP_H=True, FIRED=False, BLOCK=1024,
    )  # fmt: skip
    ptx = forward.asm["ptx"]
    assert "mul.rn.f32" in ptx and "fma.rn.f32" not in ptx
    for config in (
        dict(SOFT=False, DETACH=False, CUT=False, SURROGATE=1, HAS_H=True, NEED_THETA=True,
             NEED_H0=True),
        dict(SOFT=True, DETACH=True, CUT=False, SURROGATE=0, HAS_H=False, NEED_THETA=False,
             NEED_H0=False),
        dict(SOFT=False, DETACH=False, CUT=True, SURROGATE=0, HAS_H=False, NEED_THETA=False,
             NEED_H0=False),
    ):  # fmt: skip
        backward = _compile_for_sm90(
            triton_kernels._backward_kernel,
            9,
            {"n": "i32", "steps": "i32", "last": "i64"},
            STATIC=True, BLOCK=1024, **config,
        )  # fmt: skip
        assert backward.asm["cubin"]


def test_forcing_the_kernels_without_triton_is_a_user_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(triton_kernels, "_IMPORTED", False)  # as if triton were not installed
    x = torch.zeros(3, device="cpu")
    _mode(monkeypatch, "auto")
    assert not triton_kernels.use_kernels(x)
    _mode(monkeypatch, "triton")
    with pytest.raises(UserError, match="pip install --no-deps triton"):
        triton_kernels.use_kernels(x)


def test_unknown_surrogate_kind_keeps_the_reference_backward(
    monkeypatch: pytest.MonkeyPatch, calls: Calls
) -> None:
    """A surrogate kind the kernel does not know: forward fused, backward on the reference
    path with ``surrogate.grad``, equal to per-step autograd."""

    class Sigmoidish(Surrogate):
        def grad(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
            s = torch.sigmoid(4.0 * x)
            return 4.0 * s * (1 - s)

    _mode(monkeypatch, "triton")
    gen = torch.Generator().manual_seed(2)
    inputs = torch.rand((6, 3, 5), generator=gen, dtype=torch.float64)
    upstream = torch.randn((6, 3, 5), generator=gen, dtype=torch.float64)
    surrogate = Sigmoidish("custom")
    grads = []
    for fused in (True, False):
        x = inputs.clone().requires_grad_()
        theta = torch.tensor(0.7, dtype=torch.float64, requires_grad=True)
        if fused:
            out = bptt(x, Dynamics(theta, 6, 0.9, False, False), surrogate)
        else:
            out = reference_if(x, Dynamics(theta, 6, 0.9, False, False), surrogate)
        grads.append(torch.autograd.grad(out, (x, theta), upstream))
    assert (calls.forward, calls.backward) == (1, 0)
    for got, expected in zip(*grads, strict=True):
        _close(got, expected, "custom surrogate")


@pytest.mark.parametrize("soft", [False, True], ids=["hard", "soft"])
def test_kernel_threshold_and_init_gradients_with_detached_reset(soft: bool) -> None:
    """With the reset detached (``u = h - stopgrad(s) theta`` / ``h (1 - stopgrad(s))``) and a
    precomputed multiplier, the kernel's threshold and initial-membrane gradients equal
    per-step autograd (float64, CPU interpreter)."""
    steps, leak = 7, 0.9
    surrogate = Surrogate("pcw", 0.7)
    gen = torch.Generator().manual_seed(4)
    inputs = torch.rand((steps, 3, 5), generator=gen, dtype=torch.float64)
    upstream = torch.randn((steps, 3, 5), generator=gen, dtype=torch.float64)
    init0 = torch.rand((3, 5), generator=gen, dtype=torch.float64) * 0.3

    class Spike(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):  # type: ignore[override]
            ctx.save_for_backward(x)
            return (x >= 0).to(x.dtype)

        @staticmethod
        def backward(ctx, g):  # type: ignore[override]
            (x,) = ctx.saved_tensors
            return g * surrogate.grad(x)

    x = inputs.clone().requires_grad_()
    theta = torch.tensor(0.5, dtype=torch.float64, requires_grad=True)
    init = init0.clone().requires_grad_()
    u, outs = init, []
    for t in range(steps):
        h = leak * u + x[t]
        s = Spike.apply(h - theta)
        u = h - s.detach() * theta if soft else h * (1 - s.detach())
        outs.append(s * theta)
    expected = torch.autograd.grad(torch.stack(outs), (x, theta, init), upstream)

    membranes = torch.empty((steps, 3, 5), dtype=torch.float64)
    dynamics = Dynamics(theta.detach(), steps, leak, soft, False, init0)
    out = triton_kernels.forward(inputs, dynamics, membranes)
    grad_in, grad_theta, grad_h0 = triton_kernels.backward(
        upstream,
        dynamics,
        membranes=membranes,
        out=out,
        multiplier=surrogate.grad(membranes - theta.detach()),
        detach_reset=True,
        need_theta=True,
        need_h0=True,
    )
    assert grad_h0 is not None
    got = (grad_in, grad_theta, grad_h0.view(3, 5) * leak)
    for name, a, b in zip(("input", "theta", "init"), got, expected, strict=True):
        _close(a, b, f"{name} (soft={soft})")
