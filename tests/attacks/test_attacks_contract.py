"""The contract every registered attack keeps (parametrized over the registry)."""

from __future__ import annotations

import pytest
import torch
from attack_test_utils import FAST_PARAMS, small_convnet

from robustsnn.attacks import ATTACKS, Attack, NoAttack, attack_parameters, build_attack
from robustsnn.errors import UserError

EPS = 8 / 255
NAMES = ATTACKS.names()


def build_fast(name: str, eps: float = EPS) -> Attack:
    return build_attack(name, eps, **FAST_PARAMS.get(name, {}))


@pytest.fixture(scope="module")
def batch():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(6, 3, 8, 8, generator=g)
    x[0, :, :2] = 0.0  # pixels on the box edges
    x[1, :, :2] = 1.0
    model = small_convnet()
    with torch.no_grad():
        y = model(x).argmax(1)
    y[-1] = (y[-1] + 1) % 4  # one sample misclassified from the start
    return model, x, y


def test_registry_holds_the_paper_attacks():
    expected = {"fgsm", "rfgsm", "pgd", "pgd-dlr", "apgd-ce", "apgd-dlr", "apgd-t", "fab-t"}
    assert expected | {"square", "none"} <= set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_output_in_eps_ball_and_box(name, batch):
    model, x, y = batch
    x_adv = build_fast(name)(model, x, y, generator=torch.Generator().manual_seed(1))
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype
    assert not x_adv.requires_grad
    assert float((x_adv - x).abs().max()) <= EPS + 1e-6
    assert float(x_adv.min()) >= 0.0 and float(x_adv.max()) <= 1.0


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("training", [False, True])
def test_mode_and_parameter_grads_untouched(name, training, batch):
    model, x, y = batch
    model.train(training)
    model[1].weight.grad = torch.full_like(model[1].weight, 3.0)
    before = model[1].weight.grad.clone()
    try:
        build_fast(name)(model, x, y, generator=torch.Generator().manual_seed(1))
        assert all(m.training == training for m in model.modules())
        assert torch.equal(model[1].weight.grad, before)
        assert model[1].bias.grad is None and model[-1].weight.grad is None
    finally:
        model[1].weight.grad = None
        model.eval()


@pytest.mark.parametrize("name", NAMES)
def test_deterministic_under_the_same_seed(name, batch):
    model, x, y = batch
    attack = build_fast(name)
    first = attack(model, x, y, generator=torch.Generator().manual_seed(5))
    second = attack(model, x, y, generator=torch.Generator().manual_seed(5))
    assert torch.equal(first, second)
    assert torch.equal(attack(model, x, y), attack(model, x, y))  # default generator is seeded


@pytest.mark.parametrize("name", NAMES)
def test_global_rng_untouched(name, batch):
    model, x, y = batch
    state = torch.get_rng_state()
    build_fast(name)(model, x, y, generator=torch.Generator().manual_seed(1))
    assert torch.equal(torch.get_rng_state(), state)


@pytest.mark.parametrize("name", NAMES)
def test_misclassified_samples_come_back_unchanged(name, batch):
    model, x, y = batch
    x_adv = build_fast(name)(model, x, y, generator=torch.Generator().manual_seed(1))
    if name != "rfgsm":  # R+FGSM keeps its random point when that already fools
        assert torch.equal(x_adv[-1], x[-1])


@pytest.mark.parametrize("name", NAMES)
def test_eps_zero_and_empty_batch(name, batch):
    model, x, y = batch
    assert torch.equal(build_fast(name, 0.0)(model, x, y), x)
    empty = build_fast(name)(model, x[:0], y[:0])
    assert empty.shape == (0, 3, 8, 8)


@pytest.mark.parametrize("name", NAMES)
def test_works_under_no_grad(name, batch):
    model, x, y = batch
    with torch.no_grad():
        x_adv = build_fast(name)(model, x, y)
    assert float((x_adv - x).abs().max()) <= EPS + 1e-6


@pytest.mark.parametrize("name", [n for n in NAMES if n not in ("none",)])
def test_attacks_lower_accuracy(name, batch):
    model, x, y = batch
    x_adv = build_fast(name, 0.3)(model, x, y, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert (model(x_adv).argmax(1) == y).sum() < (model(x).argmax(1) == y).sum()


def test_plain_callable_model(batch):
    model, x, y = batch
    weight = torch.randn(4, 3 * 8 * 8, generator=torch.Generator().manual_seed(0))

    def logits(inputs: torch.Tensor) -> torch.Tensor:
        return inputs.flatten(1) @ weight.T

    x_adv = build_attack("apgd-ce", EPS, n_iter=5)(logits, x, y)
    assert float((x_adv - x).abs().max()) <= EPS + 1e-6


def test_unknown_names_and_parameters_fail_clearly():
    with pytest.raises(UserError, match="valid"):
        build_attack("pgdd", EPS)
    with pytest.raises(UserError, match="stepz"):
        build_attack("pgd", EPS, stepz=3)
    with pytest.raises(UserError, match="steps"):
        build_attack("pgd", EPS, steps=0)
    with pytest.raises(UserError, match="loss"):
        build_attack("apgd-ce", EPS, loss="hinge")
    with pytest.raises(UserError, match="eps"):
        build_attack("fgsm", -1.0)
    with pytest.raises(UserError, match="eps"):
        build_attack("fgsm", "big")  # type: ignore[arg-type]


def test_every_attack_takes_eps_and_keyword_params():
    for name in NAMES:
        cls = ATTACKS.get(name)
        attack = build_attack(name, EPS)
        assert attack.eps == pytest.approx(EPS)
        assert isinstance(attack.name, str) and attack.name
        assert isinstance(attack_parameters(cls), list)
        assert repr(attack).startswith(cls.__name__)
    assert build_attack("pgd", EPS, loss="dlr").name == "pgd-dlr"
    assert build_attack("pgd", EPS).step_size == pytest.approx(2.5 * EPS / 20)


def test_inputs_are_validated(batch):
    model, x, y = batch
    with pytest.raises(UserError, match=r"\[0, 1\]"):
        NoAttack()(model, x * 255, y)
    with pytest.raises(UserError, match="label"):
        NoAttack()(model, x, y[:2])
    with pytest.raises(UserError, match="target"):
        build_attack("apgd-ce", EPS)(model, x, y, target=y)
    with pytest.raises(UserError, match="logits"):
        build_attack("pgd", EPS)(lambda inputs: inputs.sum(), x, y)
