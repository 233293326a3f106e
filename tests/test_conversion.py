"""ANN -> SNN conversion: determinism, faithfulness, calibration order, errors, BN modes, ResNets."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from robustsnn.conversion import BN_MODES, check_convertible
from robustsnn.conversion import convert as _convert
from robustsnn.errors import UserError
from robustsnn.models import Normalize, build_model
from robustsnn.snn.estimators import ANNProxy
from robustsnn.snn.network import SpikingNetwork

FAST = dict(calib_T=8, calib_batches=2, calib_batch_size=16)

# These tests check the paper's recipe (the defaults are now the low-latency one, issue 14).
PAPER_RECIPE = {"reset": "hard", "v_init": 0.0, "threshold": "percentile", "bn": "reestimate"}


def convert(*args, **kwargs):  # type: ignore[no-untyped-def]
    """``robustsnn.conversion.convert`` with the paper's recipe unless a test says otherwise."""
    return _convert(*args, **{**PAPER_RECIPE, **kwargs})


# ----------------------------------------------------------------------------- helpers
def _mlp(hidden: int = 20, classes: int = 3, seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(
        Normalize([0.5], [0.25]),
        nn.Flatten(),
        nn.Linear(16, hidden),
        nn.ReLU(),
        nn.Linear(hidden, hidden),
        nn.ReLU(),
        nn.Linear(hidden, classes),
    )


def _separable(n: int, seed: int, classes: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """1x4x4 images in [0, 1]: class prototypes plus noise (separable, but not trivially)."""
    protos = torch.rand(classes, 1, 4, 4, generator=torch.Generator().manual_seed(1234))
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % classes
    x = protos[y] + 0.4 * torch.randn(n, 1, 4, 4, generator=g)
    return x.clamp(0, 1), y


def _train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int) -> nn.Module:
    """Plain SGD with momentum, written out (torch.optim's first step imports torch._dynamo,
    several seconds on a busy CPU)."""
    params = [p for p in model.parameters() if p.requires_grad]
    velocity = [torch.zeros_like(p) for p in params]
    g = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(steps):
        idx = torch.randint(0, len(x), (64,), generator=g)
        loss = F.cross_entropy(model(x[idx]), y[idx])
        grads = torch.autograd.grad(loss, params)
        with torch.no_grad():
            for p, v, grad in zip(params, velocity, grads, strict=True):
                v.mul_(0.9).add_(grad)
                p.sub_(0.05 * v)
    return model.eval()


def _small_cnn(seed: int = 0, **kw: object) -> nn.Module:
    torch.manual_seed(seed)
    ann = build_model(
        "cnn_small",
        num_classes=3,
        in_channels=1,
        image_size=8,
        mean=[0.5],
        std=[0.25],
        **{"width": 4, "fc": 16, **kw},
    )
    with torch.no_grad():
        for m in ann.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.1, 0.3)
    return ann.eval()


def _images(n: int, size: int = 8, channels: int = 1, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, channels, size, size, generator=g)


def _state_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)


# ----------------------------------------------------------------------------- determinism
@pytest.mark.parametrize("bn", ["keep", "reestimate", "fold"])
def test_converting_twice_gives_identical_snns(bn: str) -> None:
    ann = _small_cnn()
    data = _images(32)
    a = convert(ann, data, T=5, bn=bn, **FAST)
    b = convert(ann, data, T=5, bn=bn, **FAST)
    assert _state_equal(a.state_dict(), b.state_dict())
    assert a.thresholds() == b.thresholds()
    x = _images(4, seed=3)
    with torch.no_grad():
        assert torch.equal(a(x), b(x))


def test_conversion_result_settings() -> None:
    ann = _small_cnn()
    snn = convert(ann, _images(32), T=5, reset="soft", leak=0.9, bn="keep", **FAST)
    assert isinstance(snn, SpikingNetwork)
    assert snn.T == 5 and not snn.training
    assert {n.reset for n in snn.neurons()} == {"soft"}
    assert {n.leak for n in snn.neurons()} == {0.9}
    assert snn.conversion["bn"] == "keep" and snn.conversion["T"] == 5  # type: ignore[index]
    assert snn.arch == ann.arch


# ----------------------------------------------------------------------------- faithfulness
def test_soft_reset_long_t_conversion_is_faithful() -> None:
    """Soft reset, scale 1, T = 256: the SNN classifies like its ANN (rate -> clip(relu(I)))."""
    x_train, y_train = _separable(600, seed=1)
    x_test, y_test = _separable(300, seed=2)
    ann = _train(_mlp(), x_train, y_train, steps=300)
    with torch.no_grad():
        ann_pred = ann(x_test).argmax(1)
    ann_acc = (ann_pred == y_test).float().mean().item()
    assert 0.75 < ann_acc < 1.0, f"ANN accuracy {ann_acc}: make the toy task non-trivial"
    snn = convert(ann, x_train, T=256, reset="soft", scale=1.0, calib_T=64, bn="keep")
    assert snn.T == 256
    with torch.no_grad():
        snn_logits, ann_logits = snn(x_test), ann(x_test)
    snn_pred = snn_logits.argmax(1)
    snn_acc = (snn_pred == y_test).float().mean().item()
    assert abs(snn_acc - ann_acc) <= 0.01, (ann_acc, snn_acc)
    assert (snn_pred != ann_pred).sum() <= 2
    # the rates approach the ANN's activations: mean logits within a few percent of the ANN's
    # (a hard reset, which drops the charge above threshold, is off by about 40 % here)
    rel = (snn_logits - ann_logits).abs().mean() / ann_logits.abs().mean()
    assert rel < 0.05, rel


def test_soft_reset_long_t_cnn_logits_approach_ann() -> None:
    """A conv net with BatchNorm: the mean logits at T = 256 are close to the ANN's logits."""
    ann = _small_cnn(seed=2)
    data = _images(64, seed=5)
    snn = convert(ann, data, T=256, reset="soft", scale=1.0, bn="keep", **FAST)
    snn_short = convert(ann, data, T=4, reset="soft", scale=1.0, bn="keep", **FAST)
    x = _images(16, seed=6)
    with torch.no_grad():
        ann_out, snn_out, short_out = ann(x), snn(x), snn_short(x)
    err_long = (snn_out - ann_out).abs().max().item()
    err_short = (short_out - ann_out).abs().max().item()
    scale = ann_out.abs().max().item()
    assert err_long < 0.1 * scale, (err_long, scale)
    assert err_long < err_short


# ----------------------------------------------------------------------------- calibration
def _percentile_sorted(values: torch.Tensor, q: float) -> float:
    """q-th percentile as the ceil(q n)-th smallest value; the tests pick n with q n integral."""
    flat = values.reshape(-1).sort().values
    k = q / 100.0 * flat.numel()
    assert abs(k - round(k)) < 1e-9, "choose sizes so that the percentile rank is an integer"
    return float(flat[int(round(k)) - 1])


def test_thresholds_calibrated_first_layer_first_with_earlier_layers_spiking() -> None:
    ann = _mlp(hidden=20, seed=3)
    data = _separable(100, seed=4)[0]
    calib_T, batch = 10, 50
    snn = convert(
        ann, data, T=4, calib_T=calib_T, calib_batches=2, calib_batch_size=batch, scale=0.3
    )
    got = [float(n.threshold.detach()) for n in snn.neurons()]

    # layer 1: static input current (the image at every step), 50 x 20 = 1000 values per batch
    with torch.no_grad():
        batches = [data[:batch], data[batch:]]
        currents1 = [ann[2](ann[1](ann[0](b))) for b in batches]
        theta1 = max(_percentile_sorted(c, 99.7) for c in currents1)
        # layer 2: the input current while layer 1 spikes (hard reset IF, theta1, calib_T steps)
        theta2_candidates, ann_candidates = [], []
        for c1 in currents1:
            u = torch.zeros_like(c1)
            currents2 = []
            for _ in range(calib_T):
                h = u + c1
                spike = h >= theta1
                u = torch.where(spike, torch.zeros_like(h), h)
                currents2.append(ann[4](spike.float() * theta1))
            theta2_candidates.append(_percentile_sorted(torch.stack(currents2), 99.7))
            ann_candidates.append(_percentile_sorted(ann[4](torch.relu(c1)), 99.7))
        theta2 = max(theta2_candidates)
        theta2_ann = max(ann_candidates)
    assert got[0] == pytest.approx(0.3 * theta1, rel=1e-6)
    assert got[1] == pytest.approx(0.3 * theta2, rel=1e-5)
    # it really is the spiking current, not the ANN activation's
    assert abs(theta2 - theta2_ann) > 1e-3 * abs(theta2_ann)


class _ReversedRegistration(nn.Module):
    """ReLU modules registered in the opposite order of their use in forward."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(5)
        self.act_late = nn.ReLU()
        self.fc2 = nn.Linear(20, 20)
        self.out = nn.Linear(20, 3)
        self.norm = Normalize([0.5], [0.25])
        self.flat = nn.Flatten()
        self.fc1 = nn.Linear(16, 20)
        self.act_early = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act_early(self.fc1(self.flat(self.norm(x))))
        return self.out(self.act_late(self.fc2(h)))


def test_calibration_follows_execution_order_not_registration_order() -> None:
    custom = _ReversedRegistration().eval()
    mlp = _mlp(hidden=20)
    mlp[0], mlp[1], mlp[2], mlp[4], mlp[6] = (
        custom.norm,
        custom.flat,
        custom.fc1,
        custom.fc2,
        custom.out,
    )
    data = _separable(64, seed=6)[0]
    a = convert(custom, data, T=4, **FAST)
    b = convert(mlp.eval(), data, T=4, **FAST)
    assert a.thresholds()["act_early"] == b.thresholds()["3"]
    assert a.thresholds()["act_late"] == b.thresholds()["5"]


# ----------------------------------------------------------------------------- errors
class _FunctionalRelu(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(16, 8)
        self.fc2 = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.relu(self.fc1(x.flatten(1))))


class _Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(16, 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu_(self.fc(x))


class _NestedFunctional(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.flat = nn.Flatten()
        self.block = _Block()
        self.act = nn.ReLU()
        self.head = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.act(self.block(self.flat(x))))


class _SharedRelu(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.flat = nn.Flatten()
        self.fc1 = nn.Linear(16, 8)
        self.fc2 = nn.Linear(8, 8)
        self.act = nn.ReLU()
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.act(self.fc2(self.act(self.fc1(self.flat(x))))))


def _with_layer(layer: nn.Module) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), layer, nn.Flatten(), nn.Linear(16, 3)
    )


@pytest.mark.parametrize(
    ("model", "needles"),
    [
        (_with_layer(nn.MaxPool2d(2)), ["'2'", "MaxPool2d"]),
        (
            nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.GELU(), nn.Linear(8, 3)),
            ["'2'", "GELU"],
        ),
        (_FunctionalRelu(), ["relu", "functionally"]),
        (_NestedFunctional(), ["'block'", "_Block", "relu_"]),
        (_SharedRelu(), ["'act'", "2 times"]),
    ],
    ids=["maxpool", "gelu", "functional-relu", "nested-functional", "shared-relu"],
)
def test_unsupported_layers_fail_with_one_line_user_error(
    model: nn.Module, needles: list[str]
) -> None:
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(UserError) as info:
        convert(model, torch.rand(8, 1, 4, 4), T=2, **FAST)
    message = str(info.value)
    assert "\n" not in message
    for needle in needles:
        assert needle in message, message
    assert _state_equal(before, model.state_dict())


def test_registered_models_are_convertible() -> None:
    check_convertible(_small_cnn())  # no error


@pytest.mark.parametrize(
    "bad",
    [dict(bn="bogus"), dict(reset="medium"), dict(leak=1.5), dict(T=0), dict(percentile=0.0)],
    ids=["bn", "reset", "leak", "T", "percentile"],
)
def test_bad_settings_are_user_errors(bad: dict[str, object]) -> None:
    with pytest.raises(UserError) as info:
        convert(_small_cnn(), _images(8), **{**FAST, **bad})  # type: ignore[arg-type]
    assert "\n" not in str(info.value)
    assert str(next(iter(bad.values()))) in str(info.value)


# ----------------------------------------------------------------------------- BatchNorm modes
def test_bn_modes_run_and_never_modify_the_ann() -> None:
    ann = _small_cnn()
    ann.train()  # conversion must not flip the ANN's mode either
    before = copy.deepcopy(ann.state_dict())
    types_before = [type(m) for m in ann.modules()]
    data = _images(32)
    x = _images(6, seed=9)
    outs = {}
    for bn in BN_MODES:
        snn = convert(ann, data, T=4, bn=bn, **FAST)
        assert ann.training, bn
        assert _state_equal(before, ann.state_dict()), bn
        assert [type(m) for m in ann.modules()] == types_before, bn
        with torch.no_grad():
            outs[bn] = snn(x)
        assert outs[bn].shape == (6, 3) and torch.isfinite(outs[bn]).all(), bn
        assert not any(m.training for m in snn.modules()), bn
    # reestimated statistics come from the SNN, not the ANN
    assert not torch.equal(outs["reestimate"], outs["keep"])


def test_bn_fold_matches_keep() -> None:
    ann = _small_cnn(bias=False)
    data = _images(32)
    keep = convert(ann, data, T=6, bn="keep", **FAST)
    fold = convert(ann, data, T=6, bn="fold", **FAST)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fold.modules())
    assert sum(isinstance(m, nn.BatchNorm2d) for m in keep.modules()) == 2
    for name, t in keep.thresholds().items():
        assert fold.thresholds()[name] == pytest.approx(t, rel=1e-5)
    x = _images(8, seed=10)
    with torch.no_grad():
        torch.testing.assert_close(fold(x), keep(x), rtol=1e-4, atol=1e-4)
        with keep.use_estimator(ANNProxy()), fold.use_estimator(ANNProxy()):
            torch.testing.assert_close(fold(x), keep(x), rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(keep(x), ann(x), rtol=0, atol=0)


def test_bn_reset_resets_running_statistics() -> None:
    snn = convert(_small_cnn(), _images(32), T=4, bn="reset", **FAST)
    for m in snn.modules():
        if isinstance(m, nn.BatchNorm2d):
            assert torch.equal(m.running_mean, torch.zeros_like(m.running_mean))
            assert torch.equal(m.running_var, torch.ones_like(m.running_var))


# ----------------------------------------------------------------------------- residual models
@pytest.mark.parametrize(
    ("name", "kw"),
    [
        ("resnet20", dict(width=1, blocks=1)),
        ("resnet20", dict(width=1)),
        ("wrn16_4", dict(width=1)),  # identity shortcut from the (static) stem into block 1
        ("wrn16_4", dict()),
    ],
    ids=["resnet8", "resnet20", "wrn16_1", "wrn16_4"],
)
@pytest.mark.parametrize("bn", ["keep", "fold"])
def test_residual_models_convert_and_run(name: str, kw: dict[str, int], bn: str) -> None:
    torch.manual_seed(0)
    ann = build_model(
        name, num_classes=4, in_channels=3, image_size=8, mean=[0.5] * 3, std=[0.25] * 3, **kw
    ).eval()
    data = _images(6, channels=3, seed=11)
    snn = convert(ann, data, T=3, calib_T=3, calib_batches=1, calib_batch_size=3, bn=bn)
    x = _images(2, channels=3, seed=12)
    with torch.no_grad(), snn.recording() as rec:
        out = snn(x)
    assert out.shape == (2, 4) and torch.isfinite(out).all()
    assert len(rec) == len(snn.neurons()) == sum(isinstance(m, nn.ReLU) for m in ann.modules())
    with torch.no_grad(), snn.use_estimator(ANNProxy()):
        tol = 0.0 if bn == "keep" else 1e-4
        torch.testing.assert_close(snn(x), ann(x), rtol=tol, atol=tol)
    xg = x.clone().requires_grad_(True)
    snn(xg).sum().backward()
    assert xg.grad is not None and torch.isfinite(xg.grad).all()
