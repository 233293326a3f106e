"""`robustsnn transfer` on a random target (issue 32): an example fools it when a strict
majority of M fresh draws misclassify it, as the evaluation judges random models; a
deterministic target's cells are those of the single-pass code path, bit for bit."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from robustsnn.evaluation import adversarial as adv
from robustsnn.evaluation.recheck import (
    TransferCell,
    transfer_cell,
    transfer_lines,
    transfer_matrix,
)
from robustsnn.evaluation.views import real_predict
from robustsnn.io.models import load_model, save_ann, save_snn
from robustsnn.models import build_model

M = 15


class CoinFlipper(nn.Module):
    """A random classifier: the true class is written in pixel (0, 1) (0, 0.5, 1 -> 0, 1, 2);
    each draw predicts it, except with probability ``p`` = pixel (0, 0) the next class (torch's
    global generator, as a model with Poisson input draws)."""

    def forward(self, x: Tensor) -> Tensor:
        p = x[:, 0, 0, 0]
        label = (x[:, 0, 0, 1] * 2).round().long()
        flip = torch.rand(p.shape) < p
        return nn.functional.one_hot(torch.where(flip, (label + 1) % 3, label), 3).float()


def _examples(clean_p: list[float], adv_p: list[float]) -> adv.AdversarialSet:
    k = len(adv_p)
    labels = torch.arange(k) % 3
    clean = torch.zeros(k, 1, 4, 4)
    clean[:, 0, 0, 1] = labels.float() / 2
    adversarial = clean.clone()
    clean[:, 0, 0, 0] = torch.tensor(clean_p)
    adversarial[:, 0, 0, 0] = torch.tensor(adv_p)
    logits = torch.zeros(k, 3)
    return adv.AdversarialSet(torch.arange(k), labels, ["pgd"] * k, clean, adversarial, logits,
                              logits)  # fmt: skip


def _coin_set() -> tuple[adv.AdversarialSet, Tensor]:
    """24 examples: misclassified on 15% (even) or 85% (odd) of draws, clean images always
    right; then 4 whose clean image is wrong on 90% of draws (not attacked)."""
    strong = torch.tensor([i % 2 == 1 for i in range(24)])
    adv_p = [0.85 if s else 0.15 for s in strong.tolist()] + [0.0] * 4
    return _examples([0.0] * 24 + [0.9] * 4, adv_p), strong


def _single_pass_cell(model: nn.Module, examples: adv.AdversarialSet) -> tuple[int, int]:
    """The code path before issue 32's transfer change: one forward pass per image."""
    with torch.no_grad():
        clean_ok = real_predict(model, examples.clean, batch_size=64) == examples.label
        fooled = real_predict(model, examples.adversarial, batch_size=64) != examples.label
    return int((fooled & clean_ok).sum()), int(clean_ok.sum())


def test_random_target_is_judged_by_the_majority_of_fresh_draws_not_one() -> None:
    examples, strong = _coin_set()
    model = CoinFlipper()
    cell = transfer_cell(model, examples, "src", "tgt", draws=M, seed=0)
    assert cell.attacked == 24 and cell.draws == M and cell.seed == 0
    wrong = torch.tensor(cell.wrong_draws)
    assert wrong.shape == (24,) and int(wrong.max()) <= M
    majority = 2 * wrong > M
    assert torch.equal(majority, strong)  # the 85% examples, every one, and no 15% example
    assert cell.fooled == 12
    # one draw (the old code path) judges differently, on the very same examples
    torch.manual_seed(0)
    with torch.no_grad():
        one_draw = real_predict(model, examples.adversarial[:24]) != examples.label[:24]
    assert not torch.equal(one_draw, majority)
    torch.manual_seed(0)
    assert _single_pass_cell(model, examples) != (cell.fooled, cell.attacked)
    # the draws behind the cell are stated: M, the seed and the Wilson interval per draw
    line = transfer_lines(["src"], ["tgt"], [cell])[-1]
    assert f"judged by {M} draws (seed 0)" in line and "Wilson 95%" in line
    assert f"{int(wrong.sum())}/{24 * M}" in line


def test_random_cell_repeats_with_one_seed_and_leaves_the_generator_alone() -> None:
    examples, _ = _coin_set()
    state = torch.get_rng_state()
    cells = [transfer_cell(CoinFlipper(), examples, "s", "t", M, seed) for seed in (0, 0, 1)]
    assert torch.equal(torch.get_rng_state(), state)
    assert cells[0] == cells[1]
    assert cells[0].wrong_draws != cells[2].wrong_draws  # another seed, other draws


def _ann(calibration: Tensor) -> nn.Module:
    """A random cnn_small whose logits are spread and centred, so every class is predicted."""
    torch.manual_seed(0)
    ann = build_model(
        "cnn_small", num_classes=3, in_channels=1, image_size=8, mean=[0.5], std=[0.25],
        width=4, fc=16,
    ).eval()  # fmt: skip
    last = [m for m in ann.modules() if isinstance(m, nn.Linear)][-1]
    with torch.no_grad():
        last.weight.mul_(10)
        last.bias.sub_(ann(calibration).mean(0))
    return ann


def _source_folder(root: Path, ann: nn.Module) -> Path:
    """An evaluation folder of ``ann`` holding 16 saved examples (sign noise at eps 0.2)."""
    path = save_ann(root / "ann.safetensors", ann, dataset="toy")
    g = torch.Generator().manual_seed(4)
    clean = (torch.randint(0, 256, (16, 1, 8, 8), generator=g) / 255.0).float()
    sign = torch.randint(0, 2, clean.shape, generator=g).float() * 2 - 1
    adversarial = (clean + 0.2 * sign).clamp(0, 1)
    with torch.no_grad():
        labels = ann(clean).argmax(1)
        logits = (ann(clean), ann(adversarial))
    examples = adv.AdversarialSet(torch.arange(16), labels, ["pgd"] * 16, clean, adversarial,
                                  *logits)  # fmt: skip
    folder = root / "eval-ann"
    folder.mkdir()
    adv.write(folder / adv.ADVERSARIAL_FILE, examples, {"model": str(path), "eps": 0.2,
                                                         "members": ["pgd"]})  # fmt: skip
    return folder


def test_transfer_matrix_deterministic_cells_unchanged_random_cells_by_majority(
    tmp_path: Path,
) -> None:
    from robustsnn.conversion import convert
    from robustsnn.snn.encoding import configure_stochastic

    calibration = torch.rand(64, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    ann = _ann(calibration)
    folder = _source_folder(tmp_path, ann)
    snn = convert(ann, calibration[:16], T=4, calib_T=6, calib_batches=1, calib_batch_size=16)
    deterministic = save_snn(tmp_path / "snn.safetensors", snn, dataset="toy")
    poisson = save_snn(tmp_path / "poisson.safetensors",
                       configure_stochastic(snn, "poisson"), dataset="toy")  # fmt: skip
    sources, targets, cells = transfer_matrix([folder], [deterministic, poisson])
    assert targets == [str(tmp_path / "ann.safetensors"), str(deterministic), str(poisson)]
    examples = adv.read(folder / adv.ADVERSARIAL_FILE)[0]
    by_target = {c.target: c for c in cells}
    for target in targets[:2]:  # deterministic: the single-pass cell, nothing else
        cell = by_target[target]
        model = load_model(target, "cpu")[0].eval()
        assert cell == TransferCell(sources[0], target, *_single_pass_cell(model, examples))
        assert cell.draws == 0 and cell.wrong_draws == [] and cell.seed is None
    random = by_target[str(poisson)]
    assert random.draws == M and random.seed == 0 and len(random.wrong_draws) == random.attacked
    assert random.attacked > 0 and random.fooled == sum(2 * w > M for w in random.wrong_draws)
    assert any(0 < w < M for w in random.wrong_draws)  # draws disagree: the target is random
    lines = transfer_lines(sources, targets, cells)
    assert [line for line in lines if "random target" in line] == [lines[-1]]
    assert lines[-1].startswith("M1 on M3: random target")
    deterministic_only = transfer_lines(sources, targets[:2], cells)
    assert not any("random target" in line for line in deterministic_only)
    assert transfer_matrix([folder], [deterministic, poisson])[2] == cells  # repeats
