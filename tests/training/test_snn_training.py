"""finetune_snn (robust finetuning of a converted SNN), train_snn (SNN baselines from scratch),
the orthogonality regularizer and the stratified evaluation subset."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

import robustsnn.training.objectives as objectives_module
import robustsnn.training.snn as snn_training
from robustsnn.config import FinetuneConfig, OptimizerConfig, RunContext, SNNTrainingConfig
from robustsnn.conversion import convert
from robustsnn.errors import UserError
from robustsnn.io.checkpoint import load_tensors
from robustsnn.io.models import load_model, save_ann, save_snn
from robustsnn.snn import THRESHOLD_MIN, SpikingNetwork
from robustsnn.training import (
    OrthogonalityRegularizer,
    Trainer,
    finetune_snn,
    orthogonality_penalty,
    stratified_indices,
    train_snn,
)
from robustsnn.training.legacy import RUN_FIELDS

T_SOURCE = 3
SMALL = {"width": 4, "fc": 16}


@pytest.fixture
def toy_data(monkeypatch, toy_dataset):
    """The toy dataset served for every spec (finetune_snn/train_snn load it by name)."""
    requested: list[str] = []

    def fake_load(spec, data_dir=None, download=False):
        requested.append(spec)
        return toy_dataset

    monkeypatch.setattr(snn_training, "load_dataset", fake_load)
    toy_dataset.requested = requested  # type: ignore[attr-defined]
    return toy_dataset


@pytest.fixture
def source(tmp_path, toy_data, small_cnn) -> Path:
    """A converted (not finetuned) SNN checkpoint of a tiny CNN, naming the toy dataset."""
    ann = small_cnn(seed=1)
    images = toy_data.x_train.float() / 255
    snn = convert(ann, images, T=T_SOURCE, calib_T=10, calib_batches=1, calib_batch_size=32)
    path = tmp_path / "source" / "snn_converted.safetensors"
    info = toy_data.info
    save_snn(
        path,
        snn,
        dataset={"spec": "toy", **dataclasses.asdict(info)},
        normalization={"mean": list(info.mean), "std": list(info.std)},
        note="converted",
    )
    return path


def finetune(source: Path, out: Path, **kw: Any) -> Path:
    args: dict[str, Any] = dict(epochs=1, batch_size=16, lr=0.05, eval_n=8, quiet=True)
    # the paper's recipe (the library's default is the run's distillation, issue 33)
    args.update(objective="robust_finetune", adversary=None, estimator="bptt-pcw-1", beta=2.0,
                eps=2 / 255)  # fmt: skip
    args.update(kw)
    run = {k: args.pop(k) for k in list(args) if k in RUN_FIELDS}
    return finetune_snn(source, FinetuneConfig(**args), RunContext(out_dir=out, **run))


def split_state(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(thresholds, everything else) of a checkpoint's tensors."""
    tensors, _ = load_tensors(path)
    thresholds = {k: v for k, v in tensors.items() if k.endswith(".threshold")}
    others = {k: v for k, v in tensors.items() if not k.endswith(".threshold")}
    assert thresholds and others
    return thresholds, others


def at_least_minimum(values: Any) -> bool:
    """Every threshold >= 0.03 as float32 (a clamped threshold is float32(0.03) < 0.03)."""
    floor = torch.tensor(THRESHOLD_MIN, dtype=torch.float32)
    return all(bool(torch.as_tensor(v, dtype=torch.float32) >= floor) for v in values)


def changed(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> list[str]:
    assert a.keys() == b.keys()
    return [k for k in a if not torch.equal(a[k], b[k])]


# ------------------------------------------------------------------------------ finetune
def test_finetune_trains_thresholds_and_weights(tmp_path, source, toy_data):
    path = finetune(source, tmp_path / "ft", eps=4 / 255)
    assert path == tmp_path / "ft" / "snn.safetensors"
    assert toy_data.requested == ["toy"]
    th0, w0 = split_state(source)
    th1, w1 = split_state(path)
    assert changed(th0, th1), "no threshold moved"
    assert any(k.endswith("weight") and ".features.0." in k for k in changed(w0, w1))
    assert at_least_minimum(th1.values())

    model, meta = load_model(path)
    assert isinstance(model, SpikingNetwork) and model.T == T_SOURCE
    assert json.loads((tmp_path / "ft" / "snn.json").read_text()) == meta
    assert meta["kind"] == "snn" and meta["T"] == T_SOURCE
    assert meta["dataset"]["spec"] == "toy" and meta["normalization"]["std"] == [0.25]
    ft = meta["finetune"]
    assert ft["objective"]["name"] == "robust_finetune"
    assert ft["objective"]["params"] == {"eps": 4 / 255, "beta": 2.0, "alpha": 1 / 255, "steps": 1}
    assert ft["train_thresholds"] and ft["train_weights"] and ft["estimator"] == "bptt-pcw-1"
    assert (ft["lr"], ft["momentum"], ft["weight_decay"], ft["epochs"]) == (0.05, 0.9, 1e-3, 1)
    assert meta["source"]["path"] == str(source)
    assert meta["source"]["metadata"]["note"] == "converted"
    assert meta["eval_n"] == 8 and meta["eval_selection"] == "stratified"
    assert 0 <= meta["pgd20_accuracy"] <= meta["clean_accuracy"] <= 1
    assert meta["pgd20_estimator"] == "bptt-pcw-1"
    assert {"robustsnn", "torch", "time"} <= meta["provenance"].keys()
    assert meta["thresholds"] == pytest.approx(model.thresholds())
    log = [json.loads(line) for line in (tmp_path / "ft" / "log.jsonl").read_text().splitlines()]
    assert [(r["phase"], r["epoch"]) for r in log] == [("finetune", 1)]


def test_finetune_estimator_is_the_one_trained_through(tmp_path, source):
    """The estimator reaches the adversary and the loss (a wider surrogate moves the weights
    and thresholds differently) and is recorded; attack-only estimators, whose backward gives
    the thresholds no gradient, are refused unless the thresholds are frozen."""
    paper = finetune(source, tmp_path / "pcw1", eps=4 / 255)
    wide = finetune(source, tmp_path / "pcw4", eps=4 / 255, estimator="bptt-pcw-4")
    assert load_model(wide)[1]["finetune"]["estimator"] == "bptt-pcw-4"
    (ta, wa), (tw, ww) = split_state(paper), split_state(wide)
    assert changed(ta, tw) and changed(wa, ww)
    with pytest.raises(UserError, match="gives the thresholds no gradient"):
        finetune(source, tmp_path / "hart", estimator="hart-1")
    th0, _ = split_state(source)
    frozen = finetune(source, tmp_path / "hartf", estimator="hart-1", train_thresholds=False)
    assert not changed(th0, split_state(frozen)[0])
    # thresholds train through the threshold-relative surrogate (scale-invariant)
    relative = finetune(source, tmp_path / "rel", eps=4 / 255, estimator="bptt-rel-pcw-1")
    assert changed(th0, split_state(relative)[0])
    with pytest.raises(UserError, match="unknown gradient estimator"):
        finetune(source, tmp_path / "bad", estimator="nonsense")


def test_finetune_add_biases_trains_zero_started_biases_and_reloads(tmp_path, source):
    """The paper's finetuning (--use_bias): bias-free layers get biases that start at zero."""
    before, _ = load_model(source)
    assert all(m.bias is None for m in before.modules() if isinstance(m, nn.Conv2d))
    path = finetune(source, tmp_path / "ft", add_biases=True, cutout=0)
    model, meta = load_model(path)  # rebuilds with the biases from arch["bias"]
    assert meta["arch"]["bias"] is True and meta["finetune"]["add_biases"] is True
    assert meta["finetune"]["cutout"] == 0  # the paper finetunes without cutout
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert convs and all(m.bias is not None for m in convs)
    assert any(bool(m.bias.abs().sum() > 0) for m in convs)  # type: ignore[union-attr]


def test_freezing_thresholds_or_weights_keeps_them_exactly(tmp_path, source):
    th0, w0 = split_state(source)

    weights_only = finetune(source, tmp_path / "w", train_thresholds=False)
    th, w = split_state(weights_only)
    assert not changed(th0, th) and changed(w0, w)
    assert load_model(weights_only)[1]["finetune"]["train_thresholds"] is False

    thresholds_only = finetune(source, tmp_path / "t", train_weights=False)
    th, w = split_state(thresholds_only)
    assert changed(th0, th)
    assert not changed(w0, w)  # BatchNorm running statistics included

    with pytest.raises(UserError, match="nothing to train"):
        finetune(source, tmp_path / "n", train_weights=False, train_thresholds=False)


def test_thresholds_never_go_below_the_minimum(tmp_path, source, monkeypatch):
    minima: list[float] = []
    clamp = snn_training._clamp_thresholds

    def recording_clamp(model: nn.Module) -> None:
        clamp(model)
        assert isinstance(model, SpikingNetwork)
        minima.append(min(model.thresholds().values()))
        assert at_least_minimum(model.thresholds().values())

    monkeypatch.setattr(snn_training, "_clamp_thresholds", recording_clamp)
    path = finetune(source, tmp_path / "ft", lr=1e4, train_weights=False, epochs=2)
    assert len(minima) == 2 * 3  # 48 images / batch 16, two epochs: clamped after every step
    assert min(minima) == pytest.approx(THRESHOLD_MIN)  # the huge steps did hit the floor
    thresholds, _ = split_state(path)
    assert at_least_minimum(thresholds.values())


class Killed(Exception):
    pass


def killed_after_first_epoch(monkeypatch: pytest.MonkeyPatch, run: Any) -> None:
    """``run()`` with the process 'killed' right after the first epoch's state is saved."""
    original = Trainer.save_state

    def save_then_die(self: Trainer, fingerprint: Any) -> None:
        original(self, fingerprint)
        if self.epoch == 1:
            raise Killed

    with monkeypatch.context() as m:
        m.setattr(Trainer, "save_state", save_then_die)
        with pytest.raises(Killed):
            run()


def test_resume_after_kill_is_bit_identical(tmp_path, source, monkeypatch):
    full = finetune(source, tmp_path / "full", epochs=2)

    killed_after_first_epoch(monkeypatch, lambda: finetune(source, tmp_path / "resumed", epochs=2))
    assert not (tmp_path / "resumed" / "snn.safetensors").exists()
    _, state_meta = load_tensors(tmp_path / "resumed" / "snn.state.safetensors")
    assert state_meta["epoch"] == 1
    assert any(
        k.endswith(".threshold")
        for k in load_tensors(tmp_path / "resumed" / "snn.state.safetensors")[0]
    )

    resumed = finetune(source, tmp_path / "resumed", epochs=2)
    a, _ = load_tensors(full)
    b, _ = load_tensors(resumed)
    assert a.keys() == b.keys() and not changed(a, b)

    with pytest.raises(
        UserError, match="another setup"
    ):  # another T is another setup: no silent resume
        finetune(source, tmp_path / "resumed", epochs=2, T=2)


def test_beta_zero_is_clean_finetuning_without_attack(tmp_path, source, monkeypatch):
    def no_attack(*args: Any, **kwargs: Any) -> torch.Tensor:
        raise AssertionError("beta = 0 must not run the adversary")

    monkeypatch.setattr(objectives_module, "finetune_kl_adversary", no_attack)
    path = finetune(source, tmp_path / "ft", beta=0.0, T=2)
    meta = load_model(path)[1]
    assert meta["finetune"]["beta"] == 0.0 and meta["T"] == 2 and meta["source"]["T"] == T_SOURCE


def test_finetune_needs_an_snn(tmp_path, small_cnn):
    ann = small_cnn()
    path = save_ann(tmp_path / "ann.safetensors", ann, dataset={"spec": "toy"})
    with pytest.raises(UserError, match="SNN checkpoint"):
        finetune_snn(path, FinetuneConfig(), RunContext(out_dir=tmp_path / "ft", quiet=True))


# ------------------------------------------------------------------------- from scratch
VARIANTS: dict[str, dict[str, Any]] = {
    "natural": dict(objective="natural"),
    "rfgsm_at": dict(objective="rfgsm_at"),
    "snn_rat": dict(objective="rfgsm_at", snn_rat=True, orth_beta=1e-2),
    "bntt": dict(objective="natural", bntt=True),
    "lif": dict(objective="natural", leak=0.99, reset="soft"),
}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_train_snn_checkpoint_reloads_with_identical_outputs(
    variant, tmp_path, toy_data, monkeypatch
):
    saved: list[SpikingNetwork] = []
    save = snn_training.save_snn

    def capture(path: Any, snn: SpikingNetwork, **meta: Any) -> Path:
        saved.append(snn)
        return save(path, snn, **meta)

    monkeypatch.setattr(snn_training, "save_snn", capture)
    kw = dict(VARIANTS[variant])
    config = SNNTrainingConfig(
        T=2, epochs=1, batch_size=16, optimizer=OptimizerConfig(lr=0.05), init_threshold=0.5,
        **kw,
    )  # fmt: skip
    run = RunContext(out_dir=tmp_path, eval_n=8, quiet=True)
    path = train_snn("toy", "cnn_small", config, run, model_kwargs=SMALL)
    model, meta = load_model(path)
    (trained,) = saved
    trained.eval()
    x = toy_data.x_test.float() / 255
    with torch.no_grad():
        assert torch.equal(model(x), trained(x))
    assert isinstance(model, SpikingNetwork) and model.T == 2 and meta["T"] == 2
    assert meta["arch"]["name"] == "cnn_small" and meta["dataset"]["spec"] == "toy"
    training = meta["training"]
    assert training["baseline"] == {"natural": "vanilla", "lif": "vanilla", "bntt": "vanilla"}.get(
        variant, variant
    )
    assert any(v != 0.5 for v in meta["thresholds"].values())  # thresholds are learned
    assert 0 <= meta["pgd20_accuracy"] <= meta["clean_accuracy"] <= 1
    assert meta["eps"] == pytest.approx(8 / 255)
    if variant == "snn_rat":
        assert meta["objective"]["params"]["regularizer"] == "orthogonality(beta=0.01)"
        assert meta["objective"]["params"]["eps"] == pytest.approx(8 / 255)
    if variant == "bntt":
        assert meta["transforms"] == ["bntt"]
        assert any(".bns.1." in k for k in model.state_dict())
    else:
        assert meta["transforms"] == []
    if variant == "lif":
        assert (meta["leak"], meta["reset"]) == (0.99, "soft")
        assert all(n.leak == 0.99 and n.reset == "soft" for n in model.neurons())
    log = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [(r["phase"], r["epoch"]) for r in log] == [("train_snn", 1)]


def test_train_snn_objective_snn_rat_is_shorthand(tmp_path, toy_data):
    config = SNNTrainingConfig(objective="snn_rat", T=2, epochs=0)
    run = RunContext(out_dir=tmp_path, eval_n=0, quiet=True)
    path = train_snn("toy", "cnn_small", config, run, model_kwargs=SMALL)
    meta = load_model(path)[1]
    assert meta["training"]["baseline"] == "snn_rat"
    assert meta["objective"]["name"] == "rfgsm_at"
    assert meta["objective"]["params"]["regularizer"] == "orthogonality(beta=0.001)"
    with pytest.raises(UserError, match="init_threshold"):
        train_snn(
            "toy", "cnn_small", SNNTrainingConfig(epochs=0, init_threshold=0.0),
            RunContext(out_dir=tmp_path / "x", quiet=True), model_kwargs=SMALL,
        )  # fmt: skip


# -------------------------------------------------------------------------- regularizer
def orthonormal_rows(rows: int, cols: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(cols, rows, generator=g, dtype=torch.float64))
    return q.t().contiguous()  # [rows, cols], W W^T = I


def test_orthogonality_penalty_zero_for_orthogonal_positive_otherwise():
    w = orthonormal_rows(6, 18)
    assert orthogonality_penalty(w).item() == pytest.approx(0.0, abs=1e-12)
    assert orthogonality_penalty(w.view(6, 2, 3, 3)).item() == pytest.approx(0.0, abs=1e-12)
    assert orthogonality_penalty(1.1 * w).item() > 0.1
    tall = orthonormal_rows(6, 18).t()  # 18 x 6: W W^T has rank 6, penalty = 18 - 6
    assert orthogonality_penalty(tall).item() == pytest.approx(12.0)
    g = torch.Generator().manual_seed(1)
    for shape in [(5, 7), (7, 5), (4, 3, 3, 3), (12, 1, 2, 2)]:
        x = torch.randn(*shape, generator=g, dtype=torch.float64)
        m = x.reshape(shape[0], -1)
        formula = ((m @ m.t() - torch.eye(shape[0], dtype=m.dtype)) ** 2).sum()
        assert orthogonality_penalty(x).item() == pytest.approx(formula.item())


def test_orthogonality_gradient_matches_autograd_of_the_formula():
    g = torch.Generator().manual_seed(2)
    model = nn.Sequential(nn.Conv2d(2, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(16, 9))
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    beta = 0.3
    reg = OrthogonalityRegularizer(beta)
    conv, linear = model[0], model[3]
    assert isinstance(conv, nn.Conv2d) and isinstance(linear, nn.Linear)
    weights = [conv.weight, linear.weight]
    ours = torch.autograd.grad(reg(model), weights)

    def formula(w: torch.Tensor) -> torch.Tensor:
        m = w.reshape(w.shape[0], -1)
        return torch.linalg.matrix_norm(m @ m.t() - torch.eye(m.shape[0]), "fro") ** 2

    reference = torch.autograd.grad(beta * (formula(weights[0]) + formula(weights[1])), weights)
    for a, b, w in zip(ours, reference, weights, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-3)
        m = w.detach().reshape(w.shape[0], -1)
        closed = 4 * beta * (m @ m.t() - torch.eye(m.shape[0])) @ m  # the retraction direction
        torch.testing.assert_close(a.reshape(m.shape), closed, rtol=1e-4, atol=1e-3)
    assert all(p.grad is None for p in model.parameters())
    assert reg.name == "orthogonality(beta=0.3)"


# --------------------------------------------------------------------- evaluation subset
def test_stratified_indices_take_the_first_of_each_class():
    labels = torch.tensor([0] * 5 + [1] * 5 + [2] * 5)  # a test split grouped by class
    assert stratified_indices(labels, 6).tolist() == [0, 1, 5, 6, 10, 11]
    assert stratified_indices(labels, 4).tolist() == [0, 1, 5, 10]
    assert stratified_indices(labels, 100).tolist() == list(range(15))
    assert stratified_indices(labels, 0).tolist() == []
    assert stratified_indices(torch.tensor([1, 0, 1, 0]), 2).tolist() == [0, 1]


# ------------------------------------------------------------- adversaries and objectives
ADVERSARY = "pgd[steps=2]/bptt-rel-pcw-1+ann-proxy+assg-atan-0.425-dr"


def test_finetune_adversary_and_objective_are_recorded_and_resume(tmp_path, source, monkeypatch):
    """A drawn-estimator adversary with the distillation objective: recorded in the metadata
    (adversary, objective with its options, teacher), and a killed run resumes to the same
    weights (the per-batch draws repeat)."""
    kw: dict[str, Any] = dict(
        eps=4 / 255,
        epochs=2,
        adversary=ADVERSARY,
        objective="distill",
        objective_options={"clean_weight": 0.5, "teacher_input": "adversarial"},
        teacher="proxy",
        estimator="bptt-rel-pcw-1",
    )
    full = finetune(source, tmp_path / "full", **kw)
    meta = load_model(full)[1]["finetune"]
    assert meta["adversary"]["estimators"] == [
        "bptt-rel-pcw-1",
        "ann-proxy",
        "assg-atan-0.425-dr",
    ]
    assert meta["adversary"]["attack"] == "pgd" and meta["adversary"]["params"]["steps"] == 2
    assert meta["objective"]["name"] == "distill"
    assert meta["objective"]["params"]["clean_weight"] == 0.5
    assert meta["objective"]["params"]["teacher_input"] == "adversarial"
    assert meta["objective"]["params"]["adversary"]["name"] == meta["adversary"]["name"]
    assert meta["teacher"].startswith("proxy")

    killed_after_first_epoch(monkeypatch, lambda: finetune(source, tmp_path / "resumed", **kw))
    resumed = finetune(source, tmp_path / "resumed", **kw)
    a, _ = load_tensors(full)
    b, _ = load_tensors(resumed)
    assert not changed(a, b)
    # another adversary is another setup: no silent resume into it
    with pytest.raises(UserError, match="another setup"):
        finetune(source, tmp_path / "resumed", **{**kw, "adversary": "pgd[steps=2]/bptr"})


def test_paper_adversary_unchanged_without_an_adversary_spec(tmp_path, source):
    """The default (no adversary) is the paper's KL adversary through the loss estimator, bit
    for bit the same as the explicit spec kl/<estimator>."""
    default = finetune(source, tmp_path / "default", eps=4 / 255)
    explicit = finetune(source, tmp_path / "explicit", eps=4 / 255, adversary="kl/bptt-pcw-1")
    a, _ = load_tensors(default)
    b, _ = load_tensors(explicit)
    assert not changed(a, b)
    assert load_model(default)[1]["finetune"]["adversary"]["name"] == "kl[steps=1]/bptt-pcw-1"


def test_distill_finds_the_source_ann_or_says_how(tmp_path, source, small_cnn):
    with pytest.raises(UserError, match="--teacher"):
        finetune(source, tmp_path / "d", objective="distill")  # no source ANN recorded
    with pytest.raises(UserError, match="not a finetuning objective|unknown finetuning objective"):
        finetune(source, tmp_path / "x", objective="pgd_at")
    with pytest.raises(UserError, match="unknown parameter"):
        finetune(source, tmp_path / "y", objective="distill", objective_options={"gamma": 1})
    ann_path = tmp_path / "ann.safetensors"
    save_ann(ann_path, small_cnn(seed=1))
    path = finetune(source, tmp_path / "ok", objective="distill", teacher=str(ann_path))
    assert load_model(path)[1]["finetune"]["teacher"] == str(ann_path)


def test_distill_refuses_a_teacher_of_another_task(tmp_path, source, small_cnn):
    """A teacher with other classes or input shape (e.g. an MNIST ANN for a CIFAR SNN) is one
    clear line before any batch runs, not a shape error inside the loss."""
    other = small_cnn(num_classes=3)
    other_path = tmp_path / "other.safetensors"
    save_ann(other_path, other)
    with pytest.raises(UserError, match="num_classes 3, the SNN 2"):
        finetune(source, tmp_path / "bad", objective="distill", teacher=str(other_path))
    assert not (tmp_path / "bad" / "snn.safetensors").exists()


def test_latency_aware_finetuning_with_the_margin_term(tmp_path, source, monkeypatch):
    """T drawn per batch from T_choices (the seeded draw: the same seed sees the same T
    sequence), the margin option on, the checkpoint saved at its own T with both recorded; a
    killed run resumes to the same weights, and other T_choices are another setup."""
    seen: list[int] = []
    original = objectives_module.Distill.finetune_loss

    def spy(self: Any, model: Any, x: Any, y: Any, generator: Any) -> Any:
        seen.append(model.T)
        return original(self, model, x, y, generator)

    monkeypatch.setattr(objectives_module.Distill, "finetune_loss", spy)
    kw: dict[str, Any] = dict(
        eps=4 / 255,
        epochs=2,
        adversary="pgd[steps=1]/bptr+ann-proxy",
        objective="distill",
        objective_options={"margin_weight": 0.5, "margin": 0.2},
        teacher="proxy",
        estimator="bptt-rel-pcw-1",
        T_choices=[1, 2],
    )
    full = finetune(source, tmp_path / "full", **kw)
    first = list(seen)
    assert set(first) == {1, 2} and len(first) == 2 * 3  # 48 images, batch 16, 2 epochs
    model, meta = load_model(full)
    assert model.T == T_SOURCE and meta["T"] == T_SOURCE  # the deploy T is the checkpoint's
    assert meta["finetune"]["T_choices"] == [1, 2]
    params = meta["finetune"]["objective"]["params"]
    assert params["T_choices"] == [1, 2] and params["margin_weight"] == 0.5

    seen.clear()
    again = finetune(source, tmp_path / "again", **kw)
    assert seen == first  # same seed, same T sequence
    assert not changed(load_tensors(full)[0], load_tensors(again)[0])

    killed_after_first_epoch(monkeypatch, lambda: finetune(source, tmp_path / "resumed", **kw))
    resumed = finetune(source, tmp_path / "resumed", **kw)
    assert not changed(load_tensors(full)[0], load_tensors(resumed)[0])
    with pytest.raises(UserError, match="another setup"):
        finetune(source, tmp_path / "resumed", **{**kw, "T_choices": [1, 3]})
    with pytest.raises(UserError, match="T_choices must be"):
        finetune(source, tmp_path / "bad", **{**kw, "T_choices": [0]})


def test_t_choices_refuse_a_bntt_network(tmp_path, toy_data):
    path = train_snn(
        "toy", "cnn_small", SNNTrainingConfig(T=2, epochs=0, bntt=True),
        RunContext(out_dir=tmp_path / "bntt", eval_n=0, quiet=True), model_kwargs=SMALL,
    )  # fmt: skip
    with pytest.raises(UserError, match="BNTT"):
        finetune(path, tmp_path / "ft", T_choices=[1, 2])
