"""configs/paper/*.yaml hold the paper's settings (its public code: main_train.py defaults and
sample_scripts.sh), and name each deliberate deviation with the key that restores the paper's."""

from __future__ import annotations

from pathlib import Path

import pytest

from robustsnn.config import load_config
from robustsnn.evaluation.ensembles import ENSEMBLES
from robustsnn.models import MODELS

PAPER = Path(__file__).resolve().parents[1] / "configs" / "paper"
CONFIGS = sorted(PAPER.glob("*.yaml"))
MODEL_OF = {  # config -> the paper's network for it
    "cifar10-vgg11": "vgg11",
    "cifar100-vgg11": "vgg11",
    "svhn-vgg11": "vgg11",
    "tinyimagenet-vgg11": "vgg11_tin",
    "cifar10-resnet20": "resnet20",
    "cifar10-wrn16_4": "wrn16_4",
}


def test_every_paper_config_is_listed() -> None:
    assert {c.stem for c in CONFIGS} == set(MODEL_OF)


@pytest.mark.parametrize("path", CONFIGS, ids=[c.stem for c in CONFIGS])
def test_paper_config_holds_the_papers_settings(path: Path) -> None:
    cfg = load_config(path)
    assert cfg.model.name == MODEL_OF[path.stem] and cfg.model.name in MODELS.names()
    assert cfg.data.dataset == path.stem.split("-")[0]
    a, s, f, e = cfg.ann, cfg.snn, cfg.finetune, cfg.eval
    # ANN: PGD-AT 2/255, 10 steps, SGD 0.1 / 0.9 / 5e-4, 200 epochs, batch 64, cutout
    assert (a.objective, a.eps, a.steps) == ("pgd_at", pytest.approx(2 / 255), 10)
    assert (a.optimizer, a.lr, a.momentum, a.weight_decay) == ("sgd", 0.1, 0.9, 5e-4)
    assert (a.epochs, a.batch_size, a.augment) == (200, 64, True)
    assert a.cutout == (16 if path.stem.startswith("tinyimagenet") else 8)
    # conversion: T = 100 calibration, 99.7th percentile, x0.3, hard-reset IF, T = 8
    assert (s.calib_T, s.percentile, s.scale, s.reset, s.leak, s.T) == (
        100, 99.7, 0.3, "hard", 1.0, 8,
    )  # fmt: skip
    # finetuning: 60 epochs, beta 2, eps 2/255, alpha 1/255, one step, SGD 1e-3 / 0.9 / 1e-3
    assert (f.epochs, f.beta, f.adversary_steps, f.batch_size) == (60, 2.0, 1, 64)
    assert (f.eps, f.alpha) == (pytest.approx(2 / 255), pytest.approx(1 / 255))
    assert (f.lr, f.momentum, f.weight_decay) == (1e-3, 0.9, 1e-3)
    assert f.train_thresholds and f.train_weights and f.add_biases and f.cutout == 0
    assert e.eps == pytest.approx(8 / 255) and e.ensemble in ENSEMBLES.names()
    # the deviations are stated with the key that restores the paper's choice
    text = path.read_text(encoding="utf-8")
    assert s.bn == "reestimate" and "--set snn.bn=reset" in text
    assert e.ensemble == "reliable" and "--set eval.ensemble=pgd-ensemble" in text
    assert load_config(path, ["snn.bn=reset"]).snn.bn == "reset"
