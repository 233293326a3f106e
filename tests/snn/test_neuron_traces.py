"""IF/LIF golden traces: membranes and spikes written out by hand (PAPER.md section 2).

Per step: ``h = leak * u + I``; ``s = H(h - theta)`` with ``H(0) = 1``; hard reset ``u = h (1 - s)``,
soft reset ``u = h - s theta``; the layer emits ``theta * s``. ``h`` is the membrane before reset.
"""

from __future__ import annotations

import pytest
import torch

from robustsnn.snn.dynamics import bptr, bptt, if_forward, reference_if
from robustsnn.snn.estimators import BPTR, BPTT
from robustsnn.snn.neuron import SpikingNeuron, TimeContext
from robustsnn.snn.spec import Dynamics
from robustsnn.snn.surrogates import Surrogate

# name, currents (one per step; a float = static), theta, leak, reset, membranes h, spikes
CASES: list[tuple[str, list[float] | float, float, float, str, list[float], list[int]]] = [
    # IF, hard reset, time-varying 0.6 0.6 0.6 0.2:
    #   h=0.6 -> no; h=1.2 -> spike, u=0; h=0.6 -> no; h=0.6+0.2=0.8 -> no
    ("if-hard-varying", [0.6, 0.6, 0.6, 0.2], 1.0, 1.0, "hard", [0.6, 1.2, 0.6, 0.8], [0, 1, 0, 0]),
    # IF, soft reset, time-varying 0.6 0.6 0.6 0.3 (with 0.2 the last membrane would be 1.0
    # exactly in real arithmetic, a spike by H(0) = 1, but 0.99999999999999994 in floating point):
    #   h=0.6; h=1.2 -> spike, u=0.2; h=0.8; h=1.1 -> spike
    ("if-soft-varying", [0.6, 0.6, 0.6, 0.3], 1.0, 1.0, "soft", [0.6, 1.2, 0.8, 1.1], [0, 1, 0, 1]),
    # IF, hard, static 0.6 over 5 steps: 0.6, 1.2 (s, u=0), 0.6, 1.2 (s), 0.6
    ("if-hard-static", 0.6, 1.0, 1.0, "hard", [0.6, 1.2, 0.6, 1.2, 0.6], [0, 1, 0, 1, 0]),
    # IF, soft, static 0.6 over 4 steps: 0.6, 1.2 (s, u=0.2), 0.8, 1.4 (s)
    ("if-soft-static", 0.6, 1.0, 1.0, "soft", [0.6, 1.2, 0.8, 1.4], [0, 1, 0, 1]),
    # H(0) = 1 with exact binary fractions: 0.5, 1.0 (s, u=0), 0.25, 1.0 (s)
    (
        "if-hard-equal",
        [0.5, 0.5, 0.25, 0.75],
        1.0,
        1.0,
        "hard",
        [0.5, 1.0, 0.25, 1.0],
        [0, 1, 0, 1],
    ),
    # IF with theta 2, static 0.7: 0.7, 1.4, 2.1 (s), 0.7 / soft: 2.1 (s, u=0.1), 0.8, 1.5, 2.2 (s)
    ("if-hard-theta2", 0.7, 2.0, 1.0, "hard", [0.7, 1.4, 2.1, 0.7], [0, 0, 1, 0]),
    (
        "if-soft-theta2",
        0.7,
        2.0,
        1.0,
        "soft",
        [0.7, 1.4, 2.1, 0.8, 1.5, 2.2],
        [0, 0, 1, 0, 0, 1],
    ),
    # LIF leak 0.9, hard, static 0.52: 0.52; 0.468+0.52=0.988; 0.8892+0.52=1.4092 (s, u=0); 0.52
    ("lif-hard-static", 0.52, 1.0, 0.9, "hard", [0.52, 0.988, 1.4092, 0.52], [0, 0, 1, 0]),
    # LIF 0.9, soft, static 0.52: ... 1.4092 (s, u=0.4092); 0.36828+0.52=0.88828;
    #   0.799452+0.52=1.319452 (s)
    (
        "lif-soft-static",
        0.52,
        1.0,
        0.9,
        "soft",
        [0.52, 0.988, 1.4092, 0.88828, 1.319452],
        [0, 0, 1, 0, 1],
    ),
    # LIF 0.9, hard, varying 0.6 0.6 0.6 0.2: 0.6; 1.14 (s, u=0); 0.6; 0.54+0.2=0.74
    (
        "lif-hard-varying",
        [0.6, 0.6, 0.6, 0.2],
        1.0,
        0.9,
        "hard",
        [0.6, 1.14, 0.6, 0.74],
        [0, 1, 0, 0],
    ),
    # LIF 0.9, soft, varying 0.6 0.6 0.6 0.3: 0.6; 1.14 (s, u=0.14); 0.126+0.6=0.726;
    #   0.6534+0.3=0.9534
    (
        "lif-soft-varying",
        [0.6, 0.6, 0.6, 0.3],
        1.0,
        0.9,
        "soft",
        [0.6, 1.14, 0.726, 0.9534],
        [0, 1, 0, 0],
    ),
]
CASE_IDS = [c[0] for c in CASES]


def _inputs(currents: list[float] | float, steps: int) -> tuple[torch.Tensor, bool]:
    """One neuron, batch 1: static ``[1, 1]`` or time-major ``[T, 1, 1]`` currents (float64)."""
    if isinstance(currents, float):
        return torch.full((1, 1), currents, dtype=torch.float64), True
    assert len(currents) == steps
    return torch.tensor(currents, dtype=torch.float64).view(steps, 1, 1), False


@pytest.mark.parametrize(
    ("name", "currents", "theta", "leak", "reset", "membranes", "spikes"), CASES, ids=CASE_IDS
)
def test_if_forward_golden(
    name: str,
    currents: list[float] | float,
    theta: float,
    leak: float,
    reset: str,
    membranes: list[float],
    spikes: list[int],
) -> None:
    steps = len(spikes)
    inputs, static = _inputs(currents, steps)
    th = torch.tensor(theta, dtype=torch.float64)
    out, h = if_forward(inputs, Dynamics(th, steps, leak, reset == "soft", static))
    assert out.shape == (steps, 1, 1)
    expected_out = theta * torch.tensor(spikes, dtype=torch.float64).view(steps, 1, 1)
    assert torch.equal(out, expected_out), f"{name}: spikes {out.flatten().tolist()}"
    torch.testing.assert_close(
        torch.stack(h).flatten(), torch.tensor(membranes, dtype=torch.float64)
    )


@pytest.mark.parametrize(
    ("name", "currents", "theta", "leak", "reset", "membranes", "spikes"), CASES, ids=CASE_IDS
)
def test_every_implementation_gives_the_golden_spikes(
    name: str,
    currents: list[float] | float,
    theta: float,
    leak: float,
    reset: str,
    membranes: list[float],
    spikes: list[int],
) -> None:
    """reference_if, bptt, bptr and the SpikingNeuron module all agree."""
    del membranes
    steps = len(spikes)
    inputs, static = _inputs(currents, steps)
    inputs.requires_grad_(True)
    th = torch.tensor(theta, dtype=torch.float64, requires_grad=True)
    soft = reset == "soft"
    expected = theta * torch.tensor(spikes, dtype=torch.float64).view(steps, 1, 1)
    sur = Surrogate("pcw", 1.0)
    outs = {
        "reference": reference_if(inputs, Dynamics(th, steps, leak, soft, static), sur),
        "bptt": bptt(inputs, Dynamics(th, steps, leak, soft, static), sur),
        "bptr": bptr(inputs, Dynamics(th, steps, leak, soft, static)),
    }
    for estimator in (BPTT(sur), BPTR()):
        for grad in (True, False):
            neuron = SpikingNeuron(theta, leak=leak, reset=reset).double()
            neuron.context = TimeContext(steps=steps, batch=1, estimator=estimator)
            x = inputs.detach() if static else inputs.detach().reshape(steps, 1)
            with torch.set_grad_enabled(grad):
                out = neuron(x.requires_grad_(grad))
            assert out.shape == (steps, 1)
            outs[f"module-{estimator.name}-grad{grad}"] = out.view(steps, 1, 1)
    for key, out in outs.items():
        assert torch.equal(out.detach(), expected), f"{name} / {key}: {out.flatten().tolist()}"


def test_neurons_are_elementwise_and_batched() -> None:
    """A batch of neurons with different static currents: counts follow floor-like IF rates."""
    steps = 8
    currents = torch.tensor([[0.0, 0.25, 0.5, 1.0, 2.0, -1.0]], dtype=torch.float64)
    th = torch.tensor(1.0, dtype=torch.float64)
    out_soft, _ = if_forward(currents, Dynamics(th, steps, 1.0, True, True))
    # soft reset IF with static current c in [0, theta]: exactly floor(T c / theta) spikes
    # (the residue carries over); a current >= theta fires at every step.
    assert out_soft.sum(0).flatten().tolist() == [0.0, 2.0, 4.0, 8.0, 8.0, 0.0]
    out_hard, _ = if_forward(currents, Dynamics(th, steps, 1.0, False, True))
    # hard reset: c=0.25 fires every 4th step, c=0.5 every 2nd, c>=1 every step
    assert out_hard.sum(0).flatten().tolist() == [0.0, 2.0, 4.0, 8.0, 8.0, 0.0]
    first_spike = out_hard.squeeze(1).argmax(0)
    assert first_spike[1].item() == 3 and first_spike[2].item() == 1


def test_soft_and_hard_reset_differ_on_excess_charge() -> None:
    """Current 1.5 with theta 1: soft reset keeps the 0.5 excess, hard reset drops it."""
    steps = 4
    x = torch.full((1, 1), 1.5, dtype=torch.float64)
    th = torch.tensor(1.0, dtype=torch.float64)
    _, h_soft = if_forward(x, Dynamics(th, steps, 1.0, True, True))
    _, h_hard = if_forward(x, Dynamics(th, steps, 1.0, False, True))
    assert torch.stack(h_soft).flatten().tolist() == [1.5, 2.0, 2.5, 3.0]
    assert torch.stack(h_hard).flatten().tolist() == [1.5, 1.5, 1.5, 1.5]
