"""Saved adversarial examples: exact storage, reproduced logits, resume, refusal, recheck."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from evaluation_test_utils import images, labels_of, tiny_mlp, tiny_snn

from robustsnn.conversion import convert
from robustsnn.data import load_dataset, to_float
from robustsnn.evaluation import (
    EvaluationConfig,
    EvaluationContext,
    EvaluationRun,
    evaluate,
    run_evaluation,
)
from robustsnn.evaluation import adversarial as adv
from robustsnn.evaluation.ensembles import Member
from robustsnn.evaluation.evaluate import _run_batch
from robustsnn.evaluation.recheck import (
    misclassified,
    recheck_folder,
    recheck_lines,
    transfer_lines,
    transfer_matrix,
)
from robustsnn.io.models import load_model, save_ann, save_snn
from robustsnn.models import build_model


def _set(clean: torch.Tensor, adversarial: torch.Tensor) -> adv.AdversarialSet:
    k = clean.shape[0]
    return adv.AdversarialSet(
        torch.arange(k) * 3,
        torch.arange(k) % 2,
        ["a" if i % 2 else "b" for i in range(k)],
        clean,
        adversarial,
        torch.randn(k, 2),
        torch.randn(k, 2),
    )


def test_encoding_is_exact_and_picks_the_smallest_exact_form() -> None:
    g = torch.Generator().manual_seed(0)
    clean = torch.randint(0, 256, (3, 1, 4, 4), generator=g, dtype=torch.uint8)
    clean = to_float(clean)
    eps = 8 / 255
    adversarial = torch.stack(
        [
            clean[0],  # delta 0: float16-exact
            (clean[1] + torch.rand(clean[1].shape, generator=g) * eps).clamp(0, 1),  # float32
            clean[2],
        ]
    )
    clean[0] = 0.0
    adversarial[0] = 2.0**-10  # a float16 perturbation, exactly: 2 bytes per pixel
    adversarial[2] = clean[2]
    adversarial[2, 0, 0, 0] = 1.0  # one changed pixel: pixel codes, 1 byte per pixel
    examples = _set(clean, adversarial)
    tensors = adv.encode(examples, {"members": ["a", "b"]})
    assert "clean_uint8" in tensors and tensors["clean_uint8"].dtype == torch.uint8
    assert tensors["encoding"].tolist() == [0, 1, 3]  # the smallest exact encoding per row
    data = adv.to_bytes(examples, {"members": ["a", "b"]})
    back, meta = adv.from_bytes(data)
    assert torch.equal(back.adversarial, adversarial) and torch.equal(back.clean, clean)
    assert back.member == examples.member and meta["members"] == ["a", "b"]
    assert adv.to_bytes(back, meta) == data  # deterministic bytes
    # a clean image that is not uint8-exact is kept as float32, still exact
    odd = clean + 1e-3
    back2, _ = adv.from_bytes(adv.to_bytes(_set(odd, odd.clone()), {"members": ["a", "b"]}))
    assert torch.equal(back2.clean, odd) and torch.equal(back2.adversarial, odd)


def test_pixel_codes_store_boundary_pixels_in_one_byte() -> None:
    g = torch.Generator().manual_seed(1)
    clean = to_float(torch.randint(0, 256, (2, 3, 8, 8), generator=g, dtype=torch.uint8))
    eps = torch.tensor(8 / 255, dtype=torch.float32)
    sign = torch.randint(0, 2, clean.shape, generator=g) * 2 - 1
    adversarial = torch.clamp(clean + sign * eps, 0.0, 1.0)  # PGD's end point: on the boundary
    adversarial[0, 0, 0, :3] = clean[0, 0, 0, :3] + 0.001  # a few pixels inside the ball
    examples = _set(clean, adversarial)
    meta = {"members": ["a", "b"], "eps": 8 / 255}
    tensors = adv.encode(examples, meta)
    assert tensors["encoding"].tolist() == [3, 3]
    assert tensors["pixel_other_float32"].numel() == 3
    back, _ = adv.from_bytes(adv.to_bytes(examples, meta))
    assert torch.equal(back.adversarial, adversarial)
    size = len(adv.to_bytes(examples, meta))
    assert size < 2 * (clean[0].numel() * (1 + 1)) + 2048  # uint8 clean + one code per pixel


def test_an_empty_set_round_trips() -> None:
    empty = adv.AdversarialSet.empty((1, 4, 4), 3)
    back, _ = adv.from_bytes(adv.to_bytes(empty, {"members": []}))
    assert len(back) == 0


def test_examples_outside_range_or_ball_are_refused() -> None:
    model = tiny_mlp()
    x = images(6)
    y = labels_of(model, x)
    eps = 0.1

    def bad_attack(view, xb, yb, generator=None):  # type: ignore[no-untyped-def]
        out = (1.0 - xb).clone()  # far outside the eps-ball: would fool the model
        out[0] = xb[0] + 0.05
        out[0, 0, 0, 0] = 1.5  # outside [0, 1]
        return out

    def fine_attack(view, xb, yb, generator=None):  # type: ignore[no-untyped-def]
        return xb.clone()

    members = [Member("pgd", None), Member("fgsm", None)]
    keep: dict = {}  # type: ignore[type-arg]
    with pytest.warns(RuntimeWarning, match=r"outside \[0, 1\] or the eps-ball"):
        result = _run_batch(
            model, x, y, list(range(6)),
            list(zip(members, [bad_attack, fine_attack], [model, model], strict=True)), eps=eps, independent=False, seed=0, batch_index=0, on_member=lambda _: None,
            keep=keep,
        )  # fmt: skip
    records = result["records"]
    assert all(r["robust"] == r["clean_correct"] for r in records)  # nothing counted as broken
    assert all(r["refused_by"] == ["pgd"] for r in records if r["clean_correct"])
    assert keep == {}
    inner = x * 0.8  # room for +eps inside [0, 1]
    assert adv.valid_examples(inner + eps, inner, eps).all()
    assert not adv.valid_examples(inner + eps + 1e-3, inner, eps).any()
    assert not adv.valid_examples(inner - 1.0, inner - 1.0 + eps, eps).any()  # below 0
    nan = inner.clone()
    nan[0, 0, 0, 0] = float("nan")
    assert adv.valid_examples(nan, inner, eps).tolist() == [False] + [True] * 5


def _evaluate(state_dir: Path | None, callback=None) -> dict:  # type: ignore[no-untyped-def, type-arg]
    x = images(14)
    return evaluate(
        tiny_snn(),
        x,
        labels_of(tiny_mlp(), x),
        EvaluationConfig(
            eps=0.08,
            ensemble="pgd-fast",
            batch_size=5,
            seed=3,
            diagnostics="none",
            save_adversarial=True,
        ),
        EvaluationContext(state_dir=state_dir, quiet=True, callback=callback),
    )


def test_resume_of_an_interrupted_run_gives_the_same_file(tmp_path: Path) -> None:
    reference = _evaluate(None)
    examples = reference["adversarial"]
    broken = [r for r in reference["records"] if r["clean_correct"] and not r["robust"]]
    assert len(examples) == len(broken) > 0
    assert examples.index.tolist() == [r["index"] for r in broken]
    assert examples.member == [r["broken_by"] for r in broken]

    class Killed(Exception):
        pass

    def kill_after_second(batch: int) -> None:
        if batch == 1:
            raise Killed

    with pytest.raises(Killed):
        _evaluate(tmp_path, kill_after_second)
    assert len(list((tmp_path / adv.PARTS_DIR).iterdir())) == 2
    ran: list[int] = []
    resumed = _evaluate(tmp_path, ran.append)
    assert ran == [2]
    meta = {"members": sorted(set(examples.member))}
    assert adv.to_bytes(resumed["adversarial"], meta) == adv.to_bytes(examples, meta)
    # a missing part re-runs its batch (deterministic seeds) instead of losing its examples
    next((tmp_path / adv.PARTS_DIR).glob("*batch000001*")).unlink()
    ran.clear()
    again = _evaluate(tmp_path, ran.append)
    assert ran == [1]
    assert adv.to_bytes(again["adversarial"], meta) == adv.to_bytes(examples, meta)


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A toy npz dataset, an ANN and its SNN, both evaluated with --save-adversarial."""
    root = tmp_path_factory.mktemp("adv")
    g = np.random.default_rng(0)

    def split(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = np.arange(n) % 3
        x = g.normal(90 + 40 * y[:, None, None], 30, size=(n, 8, 8))
        return x.clip(0, 255).astype(np.uint8), y.astype(np.int64)

    x_train, y_train = split(48)
    x_test, y_test = split(30)
    npz = root / "toy.npz"
    np.savez(npz, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    spec = f"npz:{npz}"
    info = load_dataset(spec).info
    torch.manual_seed(0)
    ann = build_model(
        "cnn_small", num_classes=3, in_channels=1, image_size=8, mean=info.mean, std=info.std,
        width=4, fc=16,
    )  # fmt: skip
    xt, yt = to_float(torch.from_numpy(x_train[:, None])), torch.from_numpy(y_train)
    optimizer = torch.optim.Adam(ann.parameters(), lr=0.01)
    for _ in range(60):  # full-batch training: the models must be right before they are wrong
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(ann(xt), yt).backward()
        optimizer.step()
    ann.eval()
    paths = {"ann": save_ann(root / "ann.safetensors", ann, dataset={"spec": spec, "name": "t"})}
    calib = to_float(torch.from_numpy(x_train[:, None]))
    snn = convert(ann, calib, T=4, calib_T=8, calib_batches=2, calib_batch_size=16)
    paths["snn"] = save_snn(root / "snn.safetensors", snn, dataset=spec)
    for name in ("ann", "snn"):
        config = EvaluationConfig(
            eps=0.12, ensemble="pgd-fast", diagnostics="none", batch_size=10, save_adversarial=True
        )
        run_evaluation(
            paths[name], config, EvaluationRun(n=24, out_dir=root / f"eval-{name}", quiet=True)
        )
    return {**paths, "root": root}


def test_saved_examples_reproduce_the_recorded_logits_exactly(evaluated: dict[str, Path]) -> None:
    for name in ("ann", "snn"):
        folder = evaluated["root"] / f"eval-{name}"
        result = json.loads((folder / "evaluation.json").read_text())
        examples, meta = adv.read(folder / adv.ADVERSARIAL_FILE)
        assert result["adversarial_examples"] == len(examples) > 0
        assert result["adversarial_bytes"] == (folder / adv.ADVERSARIAL_FILE).stat().st_size
        assert meta["eps"] == result["eps"] and meta["members"]
        model, _ = load_model(evaluated[name], "cpu")
        model.eval()
        assert torch.equal(
            adv.single_logits(model, examples.adversarial), examples.adversarial_logits
        )
        assert torch.equal(adv.single_logits(model, examples.clean), examples.clean_logits)
        assert misclassified(examples.adversarial_logits, examples.label).all()


def test_recheck_passes_on_honest_examples(evaluated: dict[str, Path]) -> None:
    for name in ("ann", "snn"):
        result = recheck_folder(evaluated["root"] / f"eval-{name}")
        assert result.passed, result.failures
        c = result.counts
        assert c["saved"] == c["misclassified_float64"] == c["misclassified_reference"] > 0
        assert c["logits_reproduced"] == c["saved"]
        assert recheck_lines([result])[0].startswith("PASS")


@pytest.mark.parametrize("tamper", ["eps", "range", "flip", "clean"])
def test_recheck_flags_a_tampered_example(
    evaluated: dict[str, Path], tmp_path: Path, tamper: str
) -> None:
    folder = tmp_path / "eval-snn"
    folder.mkdir()
    source = evaluated["root"] / "eval-snn"
    for f in ("evaluation.json", "records.jsonl"):
        (folder / f).write_text((source / f).read_text())
    examples, meta = adv.read(source / adv.ADVERSARIAL_FILE)
    meta["model"] = str(evaluated["snn"])
    x = examples.adversarial.clone()
    if tamper == "eps":
        x[0] = (examples.clean[0] + 2 * meta["eps"] * torch.sign(x[0] - examples.clean[0])).clamp(
            0, 1
        )
        x[0].view(-1)[0] = (examples.clean[0].view(-1)[0] + 0.5).clamp(0, 1)
        if float((x[0] - examples.clean[0]).abs().max()) <= meta["eps"]:
            x[0].view(-1)[0] = 1.0 - examples.clean[0].view(-1)[0].round()
        expected = "outside the eps-ball"
    elif tamper == "range":
        x[0].view(-1)[0] = -0.01
        expected = r"pixels outside \[0, 1\]"
    elif tamper == "flip":
        x[0] = examples.clean[0]  # flipped back to the clean image: classified correctly
        expected = "correctly classified by the float64 forward"
    else:
        clean = examples.clean.clone()
        clean[0].view(-1)[0] = 1.0 - clean[0].view(-1)[0]
        examples.clean = clean
        expected = "not the dataset's image"
    examples.adversarial = x
    adv.write(folder / adv.ADVERSARIAL_FILE, examples, meta)
    result = recheck_folder(folder)
    assert not result.passed
    sample = int(examples.index[0])
    assert any(f"sample {sample} " in line for line in result.failures)
    assert any(__import__("re").search(expected, line) for line in recheck_lines([result])), (
        recheck_lines([result])
    )


def test_transfer_matrix(evaluated: dict[str, Path]) -> None:
    root = evaluated["root"]
    sources, targets, cells = transfer_matrix([root / "eval-ann", root / "eval-snn"])
    assert len(sources) == 2 and len(targets) == 2 and len(cells) == 4
    for cell in cells:
        if cell.source == cell.target:  # a model's own breaks fool it, every one
            assert cell.fooled == cell.attacked > 0
        assert 0 <= cell.fooled <= cell.attacked
    lines = transfer_lines(sources, targets, cells)
    assert any("100%" in line for line in lines)


def test_escalation_steps_add_their_examples_in_record_order() -> None:
    from robustsnn.evaluation import DiagnosticsConfig
    from robustsnn.evaluation.escalate import EscalationPolicy, evaluate_escalating

    x = images(24)  # the setting of the sharded escalation test, known to escalate once
    config = EvaluationConfig(
        eps=0.08,
        ensemble=[{"attack": "pgd", "estimator": "bptt-pcw-1"}],
        batch_size=5,
        seed=3,
        diagnostics=DiagnosticsConfig(n=4, square_queries=10, base_steps=2, convergence_factor=2),
        save_adversarial=True,
    )
    result = evaluate_escalating(
        tiny_snn(), x, labels_of(tiny_mlp(), x), config, EvaluationContext(quiet=True),
        EscalationPolicy(levels=1), ladder=("pgd-fast", "fgsm-ensemble"),
    )  # fmt: skip
    assert result["escalation"]["steps"], "the test needs an escalation step"
    broken = [r for r in result["records"] if r["clean_correct"] and not r["robust"]]
    examples = result["adversarial"]
    assert examples.index.tolist() == [r["index"] for r in broken]
    assert examples.member == [r["broken_by"] for r in broken]
    assert any(":" in m for m in examples.member)  # found by the escalation step


def test_recheck_and_transfer_commands(
    evaluated: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from robustsnn.cli import main

    root = evaluated["root"]
    assert main(["recheck", str(root / "eval-snn"), "--quiet"]) in (0, None)
    out = capsys.readouterr().out
    assert out.startswith("PASS") and "misclassified by float64 forward" in out
    assert main(["transfer", str(root / "eval-ann"), "--on", str(evaluated["snn"])]) in (0, None)
    assert "100%" in capsys.readouterr().out
    # a tampered file: exit status 1 and one line naming the sample
    folder = tmp_path / "eval"
    folder.mkdir()
    examples, meta = adv.read(root / "eval-snn" / adv.ADVERSARIAL_FILE)
    examples.adversarial = examples.clean.clone()
    adv.write(folder / adv.ADVERSARIAL_FILE, examples, meta)
    with pytest.raises(SystemExit) as exit_info:
        main(["recheck", str(folder)])
    assert exit_info.value.code == 1
    assert f"sample {int(examples.index[0])} " in capsys.readouterr().out
    assert main(["recheck", str(tmp_path / "nothing")]) == 2  # one line, exit 2
    assert "does not exist" in capsys.readouterr().err


def test_report_section_and_figure_from_saved_examples(evaluated: dict[str, Path]) -> None:
    from robustsnn.analysis import write_report
    from robustsnn.analysis.breaks import break_panels, storage_summary
    from robustsnn.evaluation.recheck import recheck

    folder = evaluated["root"] / "eval-snn"
    recheck(folder)
    panels = break_panels(folder, max_samples=2)
    assert len(panels) == 2 and all("raster" in p for p in panels)
    examples, _ = adv.read(folder / adv.ADVERSARIAL_FILE)
    first = int(examples.index.tolist().index(panels[0]["index"]))
    assert panels[0]["adversarial_prediction"] != panels[0]["label"]
    assert panels[0]["adversarial_confidence"] == pytest.approx(
        float(torch.softmax(examples.adversarial_logits[first].double(), 0).max())
    )
    summary = storage_summary(folder)
    assert summary["breaks"] == len(examples) and summary["bytes_per_break"] > 0
    md, html = write_report(folder)
    text = md.read_text()
    assert "Saved adversarial examples" in text and "PASS: " in text
    assert (folder / "figures" / "saved_breaks-evaluation.png").is_file()
    images = [line for line in text.splitlines() if line.startswith("![")]
    assert sum("saved_breaks-evaluation.png" in line for line in images) == 1  # shown once
    assert "data:image/png;base64" in html.read_text()
