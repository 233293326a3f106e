"""The per-element estimators' CPU path runs block by block (issue 22): the same values, bit for
bit, whatever the block size, and the same as the whole-tensor formulas it replaced."""

from __future__ import annotations

import copy
import itertools

import pytest
import torch

from robustsnn.snn import dynamics, parse_estimator
from robustsnn.snn.estimator_backward import (
    assg_multiplier,
    assg_spread,
    assg_surrogate,
    spiking_layer,
)
from robustsnn.snn.estimators import ASSG
from robustsnn.snn.run_state import RunState
from robustsnn.snn.spec import Dynamics

ESTIMATORS = (
    "bptt-rel-pcw-0.5",
    "bptt-pcw-1-dr",
    "hart-1",
    "assg-atan-0.425-dr",
    "assg-atan-0.4",
    "assg-pcw-0.85-dr",
    "assg-rect-0.85-dr",
    "pdsg",
)
STEPS, BATCH, WIDTH = 5, 3, 7  # 21 neurons: blocks of 8 leave a ragged last block


def _grads(
    name: str, static: bool, soft: bool, leak: float, passes: int = 3
) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Output, input gradient and threshold gradient of one layer, over several passes of one
    attack run (ASSG's moments: the first pass initialises them, later ones update in place)."""
    estimator = parse_estimator(name)
    state = RunState()
    state.begin(BATCH)
    gen = torch.Generator().manual_seed(3)
    shape = (BATCH, WIDTH) if static else (STEPS, BATCH, WIDTH)
    results = []
    for _ in range(passes):
        x = (torch.rand(shape, generator=gen) * 1.4 - 0.2).requires_grad_(True)
        theta = torch.tensor(0.45, requires_grad=True)
        init = torch.full((BATCH, WIDTH), 0.1, requires_grad=True)
        out = spiking_layer(
            x,
            Dynamics(theta, STEPS, leak, soft, static, init),
            estimator,
            layer="l",
            channel_dim=None,
            state=state,
        )
        upstream = torch.randn(out.shape, generator=gen)
        grads = torch.autograd.grad(out, [x, theta], upstream, allow_unused=True)
        theta_grad = grads[1] if grads[1] is not None else torch.zeros(())
        results.append((out.detach(), grads[0], theta_grad))
    return results


@pytest.mark.parametrize(
    "name,static,soft,leak",
    [
        (n, s, r, lk)
        for n, s, r, lk in itertools.product(ESTIMATORS, [False, True], [False, True], [1.0, 0.6])
    ],
)
def test_block_size_does_not_change_a_single_bit(
    monkeypatch: pytest.MonkeyPatch, name: str, static: bool, soft: bool, leak: float
) -> None:
    monkeypatch.setattr(dynamics, "BLOCK", 1 << 20)
    whole = _grads(name, static, soft, leak)
    monkeypatch.setattr(dynamics, "BLOCK", 8)
    blocked = _grads(name, static, soft, leak)
    for (o1, g1, t1), (o2, g2, t2) in zip(whole, blocked, strict=True):
        assert torch.equal(o1, o2)
        assert torch.equal(g1, g2), (g1 - g2).abs().max()
        assert torch.equal(t1, t2)


def _two_runs(n: int) -> tuple[RunState, RunState]:
    """Two fresh attack runs on ``n`` samples: one for the row path, one for the formulas."""
    states = RunState(), RunState()
    for state in states:
        state.begin(n)
    return states


@pytest.mark.parametrize("family,a", [("atan", 0.425), ("pcw", 0.85), ("rect", 0.85)])
@pytest.mark.parametrize("block", [4, 1 << 20])
def test_assg_rows_equal_the_whole_tensor_formulas(
    monkeypatch: pytest.MonkeyPatch, family: str, a: float, block: int
) -> None:
    """The in-place row update of the moments and the multiplier against assg_spread +
    assg_surrogate on whole tensors, over passes that update every row (the common case)."""
    monkeypatch.setattr(dynamics, "BLOCK", block)
    estimator = ASSG(family, a, detach_reset=True)
    gen = torch.Generator().manual_seed(0)
    theta = torch.tensor(0.3)
    rows_state, whole_state = _two_runs(4)
    for step in range(4):
        h = torch.randn((6, 4, 5), generator=gen)
        got = assg_multiplier(h, theta, estimator, rows_state, "l")
        spread = assg_spread(h, theta, estimator, whole_state, "l")
        want = assg_surrogate(h - theta, spread, family, a)
        assert torch.equal(got, want), f"pass {step}"
        assert torch.equal(rows_state.layers["l"].mean, whole_state.layers["l"].mean)
        assert torch.equal(rows_state.layers["l"].dispersion, whole_state.layers["l"].dispersion)
    assert bool(got.abs().sum() > 0)


@pytest.mark.parametrize("family,a", [("atan", 0.425), ("pcw", 0.85), ("rect", 0.85)])
@pytest.mark.parametrize("block", [4, 1 << 20])
def test_assg_shrinking_rows_equal_the_whole_tensor_formulas(
    monkeypatch: pytest.MonkeyPatch, family: str, a: float, block: int
) -> None:
    """An attack's passes: the whole run, then fewer and fewer rows (fooled samples dropped),
    each subset several times (the compact moments are updated in place, written back when
    the rows change). Every multiplier and the moments read back equal the whole-tensor
    formulas bit for bit."""
    monkeypatch.setattr(dynamics, "BLOCK", block)
    estimator = ASSG(family, a, detach_reset=True)
    gen = torch.Generator().manual_seed(1)
    theta = torch.tensor(0.3)
    fast, whole = _two_runs(6)
    schedule = [None, None, [0, 2, 3, 5], [0, 2, 3, 5], [2, 5], [2, 5], [2, 5], None]
    for step, rows in enumerate(schedule):
        selected = None if rows is None else torch.tensor(rows)
        fast.select(selected)
        whole.select(selected)
        h = torch.randn((3, 6 if rows is None else len(rows), 5), generator=gen)
        got = assg_multiplier(h, theta, estimator, fast, "l")
        want = assg_surrogate(h - theta, assg_spread(h, theta, estimator, whole, "l"), family, a)
        assert torch.equal(got, want), f"pass {step}"
    fast.layers["l"].sync()
    assert torch.equal(fast.layers["l"].mean, whole.layers["l"].mean)
    assert torch.equal(fast.layers["l"].dispersion, whole.layers["l"].dispersion)


def test_assg_rows_keep_a_subset_pass_on_the_whole_tensor_path() -> None:
    """A pass on some rows of the run (an attack dropped fooled samples); the moments of the
    other rows stay as they were."""
    estimator = ASSG("atan", 0.425, detach_reset=True)
    state = RunState()
    state.begin(4)
    theta = torch.tensor(0.3)
    assg_multiplier(torch.randn(3, 4, 2), theta, estimator, state, "l")
    before = copy.deepcopy(state.layers["l"])
    state.select(torch.tensor([1, 3]))
    assg_multiplier(torch.randn(3, 2, 2), theta, estimator, state, "l")
    after = state.layers["l"]
    after.sync()
    assert torch.equal(after.mean[:, [0, 2]], before.mean[:, [0, 2]])
    assert not torch.equal(after.mean[:, [1, 3]], before.mean[:, [1, 3]])


@pytest.mark.parametrize("name", ["assg-atan-0.425-dr", "bptt-rel-pcw-1", "hart-1", "bptt-pcw-1"])
def test_frozen_parameters_leave_the_attack_unchanged(name: str) -> None:
    """Evaluation freezes the parameters (no threshold gradient is computed during attacks);
    the attack's trajectory, hence every adversarial example, is the same bit for bit."""
    from robustsnn.attacks import build_attack
    from robustsnn.conversion import convert
    from robustsnn.models import build_model

    torch.manual_seed(0)
    ann = build_model(
        "cnn_small",
        num_classes=3,
        in_channels=1,
        image_size=8,
        mean=[0.5],
        std=[0.25],
        width=4,
        fc=16,
    ).eval()
    x = torch.rand(6, 1, 8, 8)
    snn = convert(ann, x, T=4, calib_T=8, calib_batches=1, calib_batch_size=6, bn="keep")
    y = snn(x).argmax(1)
    view = snn.with_estimator(parse_estimator(name))
    attack = build_attack("sapgd", eps=0.1, steps=6)
    trainable = attack(view, x, y, generator=torch.Generator().manual_seed(1))
    for p in snn.parameters():
        p.requires_grad_(False)
    frozen = attack(view, x, y, generator=torch.Generator().manual_seed(1))
    assert torch.equal(trainable, frozen)
    assert not torch.equal(trainable, x)
