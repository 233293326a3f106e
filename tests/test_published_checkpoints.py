"""The models published under ``checkpoints/`` (issue 31): each folder's ANN and SNN load
from safetensors with their JSON, its README states the command that made them and their
measured numbers, and the MNIST-5k models (whose data is embedded) reproduce the clean
accuracy their README states on the quickstart's 200 test images."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from robustsnn.data import load_dataset, to_float
from robustsnn.evaluation.run import stratified_indices
from robustsnn.io.models import load_model

ROOT = Path(__file__).resolve().parents[1] / "checkpoints"
FOLDERS = sorted(p for p in ROOT.iterdir() if p.is_dir()) if ROOT.is_dir() else []


@pytest.mark.parametrize("folder", FOLDERS, ids=[p.name for p in FOLDERS])
def test_each_published_folder_loads_and_documents_itself(folder: Path) -> None:
    for name in ("ann", "snn"):
        assert (folder / f"{name}.json").is_file()
        model, meta = load_model(folder / f"{name}.safetensors")
        assert meta["kind"] == name and sum(p.numel() for p in model.parameters()) > 0
    readme = (folder / "README.md").read_text()
    assert "robustsnn" in readme and "## Measured" in readme and "n = " in readme


def test_the_mnist_models_have_the_clean_accuracy_their_readme_states() -> None:
    """On the quickstart's 200 test images (the first 20 of each class, as every evaluation
    selects them), the ANN and the SNN classify exactly as many correctly as the README says."""
    folder = ROOT / "mnist5k-cnn_small"
    readme = (folder / "README.md").read_text()
    data = load_dataset("mnist5k", None)
    index = stratified_indices(data.y_test, 200, data.info.num_classes)
    x, y = to_float(data.x_test[index]), data.y_test[index]
    for name, row in (("ann", "ANN (`ann.safetensors`)"), ("snn", "`snn.safetensors` (finetuned")):
        model, _ = load_model(folder / f"{name}.safetensors")
        with torch.no_grad():
            correct = int((model.eval()(x).argmax(1) == y).sum())
        stated = next(line for line in readme.splitlines() if line.startswith(f"| {row}"))
        assert f"| {correct / 2:.1f}% [" in stated, (name, correct, stated)
