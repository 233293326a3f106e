"""train_ann writes a checkpoint and metadata that load back; evaluate_accuracy's contract."""

from __future__ import annotations

import json

import pytest
import torch

import robustsnn.training.ann as ann_module
from robustsnn.attacks import build_attack
from robustsnn.config import ANNConfig, RunContext
from robustsnn.io.checkpoint import load_state_into, load_tensors
from robustsnn.models import rebuild_model
from robustsnn.training import evaluate_accuracy, train_ann


def test_train_ann_writes_loadable_checkpoint(tmp_path, monkeypatch, toy_dataset):
    requested = []

    def fake_load(spec, data_dir=None, download=False):
        requested.append((spec, data_dir))
        return toy_dataset

    monkeypatch.setattr(ann_module, "load_dataset", fake_load)
    config = ANNConfig(objective="trades", eps=4 / 255, epochs=1, batch_size=16, steps=2)
    run = RunContext(out_dir=tmp_path, eval_n=16, quiet=True)
    path = train_ann("toy", "cnn_small", config, run, model_kwargs={"width": 4, "fc": 16})
    assert path == tmp_path / "ann.safetensors" and requested == [("toy", None)]
    tensors, meta = load_tensors(path)
    assert json.loads((tmp_path / "ann.json").read_text()) == meta
    assert meta["kind"] == "ann"
    assert meta["arch"]["name"] == "cnn_small" and meta["arch"]["width"] == 4
    assert meta["dataset"]["spec"] == "toy" and meta["dataset"]["num_classes"] == 2
    assert meta["normalization"] == {"mean": [0.5], "std": [0.25]}
    assert meta["objective"]["name"] == "trades"
    assert meta["objective"]["params"]["eps"] == pytest.approx(4 / 255)
    assert meta["objective"]["params"]["steps"] == 2
    assert meta["eps"] == pytest.approx(4 / 255) and meta["epochs"] == 1 and meta["seed"] == 0
    assert 0 <= meta["pgd20_accuracy"] <= meta["clean_accuracy"] <= 1
    assert {"robustsnn", "torch", "time"} <= meta["provenance"].keys()
    model = rebuild_model(meta["arch"])
    load_state_into(model, tensors, path)
    assert (tmp_path / "ann.state.safetensors").is_file()
    assert len((tmp_path / "log.jsonl").read_text().splitlines()) == 1


def test_evaluate_accuracy_restores_mode_and_matches_clean(toy_dataset, small_cnn):
    model = small_cnn()
    model.train()
    x, y = toy_dataset.x_test, toy_dataset.y_test
    clean = evaluate_accuracy(model, x, y, batch_size=10)
    assert model.training and all(m.training for m in model.modules())
    with torch.no_grad():
        model.eval()
        expected = (model(x.float() / 255).argmax(1) == y).float().mean().item()
    assert clean == pytest.approx(expected)
    none = evaluate_accuracy(model, x, y, 10, attack=build_attack("none", eps=0.0))
    assert none == pytest.approx(clean)
    pgd = evaluate_accuracy(
        model, x, y, 10, build_attack("pgd", eps=16 / 255, steps=3), generator=torch.Generator()
    )
    assert pgd <= clean
    assert all(p.grad is None for p in model.parameters())
