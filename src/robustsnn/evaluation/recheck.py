"""``robustsnn recheck``: re-verify every saved break, and run one model's breaks on others.

A break counts only if it holds for anyone who checks it. For each saved example
(:mod:`robustsnn.evaluation.adversarial`) the recheck verifies, independently of the attack
that found it:

- the image lies in [0, 1] and within eps (+ the file's tolerance) of the clean image, and the
  clean image is the dataset's (when the dataset can be loaded);
- the model's own forward pass in float64 misclassifies it (the true class's logit strictly
  below another class's: a tie does not count);
- the independent reference simulator (:mod:`robustsnn.snn.reference`, numpy, float64, no code
  shared with the SNN's fast path) misclassifies it too;
- the float32 forward reproduces the recorded logits (reported; bit for bit on the machine that
  wrote them, not required elsewhere);
- the file holds exactly the evaluation's breaks (its count equals the records').

A random model (Poisson input, noisy neurons, a wrapped model drawing random numbers: found
random by its evaluation, or by two seeded passes when no evaluation.json says) is judged as
its evaluation judged it (:mod:`robustsnn.evaluation.stochastic`): a break holds when the
example is misclassified on a strict majority of M fresh draws (M: the evaluation's
``prediction_draws``), by the float64 forward (torch's global generator seeded per draw and
sample) and by the reference simulator (its own numpy draws); ``recheck.json`` keeps the
wrong-draw counts and the Wilson interval of each break's misclassification probability.

Transfer (:func:`transfer_matrix`): the examples saved for model A, run on model B: the share of
them B misclassifies, among those whose clean image B classifies correctly. A random B is judged
as its evaluation would judge it (:func:`transfer_cell`): by the majority of M fresh draws.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from robustsnn.errors import UserError
from robustsnn.evaluation.adversarial import ADVERSARIAL_FILE, AdversarialSet, read
from robustsnn.evaluation.intervals import wilson_interval
from robustsnn.integrity import NO_HASH
from robustsnn.io.atomic import atomic_write_json

RECHECK_FILE = "recheck.json"


@dataclass
class RecheckResult:
    """The outcome for one evaluation folder."""

    folder: Path
    examples: int
    failures: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    random: dict[str, Any] = field(default_factory=dict)  # a random model's draws and votes

    @property
    def passed(self) -> bool:
        return not self.failures


def evaluation_folders(path: str | Path) -> list[Path]:
    """Folders holding saved examples: ``path`` itself, or every one below a run folder."""
    root = Path(path)
    if not root.exists():
        raise UserError(f"{root} does not exist; give a run folder or an evaluation folder")
    if (root / ADVERSARIAL_FILE).is_file():
        return [root]
    found = sorted(p.parent for p in root.rglob(ADVERSARIAL_FILE) if "escalation-" not in str(p))
    if not found:
        raise UserError(
            f"no {ADVERSARIAL_FILE} in {root} or below; evaluate with --save-adversarial "
            "(robustsnn run saves them by default)"
        )
    return found


def _model_path(folder: Path, recorded: str) -> Path:
    """The checkpoint an evaluation names (as recorded, or found beside the run folder)."""
    candidates = [Path(recorded), folder / recorded]
    candidates += [parent / Path(recorded).name for parent in folder.parents][:4]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise UserError(
        f"the checkpoint {recorded!r} that {folder} evaluated is not found; run recheck from "
        "the folder the evaluation ran in"
    )


def load_evaluated_model(folder: Path, meta: dict[str, Any]) -> tuple[nn.Module, Path]:
    """The model of a saved-examples file, checked to be the one evaluated."""
    from robustsnn.evaluation.views import model_digest
    from robustsnn.io.models import load_model

    path = _model_path(folder, str(meta.get("model")))
    model, _ = load_model(path, "cpu")
    model.eval()
    if meta.get("model_digest") and model_digest(model) != meta["model_digest"]:
        raise UserError(
            f"{path} is not the model {folder} evaluated (its weights changed since); re-run "
            "the evaluation"
        )
    return model, path


def _logits64(model: nn.Module, x: Tensor, draw: int | None = None) -> Tensor:
    """Float64 logits of a copy of the model's real forward pass. ``draw`` (a random model):
    each sample's pass runs with torch's global generator seeded from the draw and the
    sample's digest (fresh draws, independent of the evaluation's; the caller's state kept)."""
    from robustsnn.evaluation.stochastic import seeded_global_rng
    from robustsnn.evaluation.views import derive_seed, is_snn, tensor_digest
    from robustsnn.snn.estimators import DEFAULT_ESTIMATOR

    double = copy.deepcopy(model).double().eval()

    def one(sample: Tensor) -> Tensor:
        if draw is None:
            return double(sample)
        seed = derive_seed(RECHECK_SEED, "recheck", draw, tensor_digest(sample))
        with seeded_global_rng(seed, sample.device):
            return double(sample)

    with torch.no_grad():
        if is_snn(double):
            with double.use_estimator(DEFAULT_ESTIMATOR):  # type: ignore[operator]
                return torch.cat([one(x[i : i + 1].double()) for i in range(x.shape[0])])
        return torch.cat([one(x[i : i + 1].double()) for i in range(x.shape[0])])


RECHECK_SEED = 0
"""Seed of a random model's fresh draws in a recheck (fixed: a recheck repeats)."""


def random_model_draws(folder: Path | None, model: nn.Module, x: Tensor) -> int:
    """M, the draws per verdict for a random model (the evaluation's ``prediction_draws``); 0
    for a deterministic one. The evaluation's ``randomness`` entry decides; without one, two
    seeded passes on ``x`` do (:func:`~robustsnn.evaluation.stochastic.detect_randomness`), and
    always for ``folder`` None (a model without an evaluation)."""
    from robustsnn.evaluation.stochastic import StochasticConfig, detect_randomness

    default = StochasticConfig().prediction_draws
    info: Any = None
    evaluation = folder / "evaluation.json" if folder is not None else None
    if evaluation is not None and evaluation.is_file():
        try:
            info = json.loads(evaluation.read_text()).get("randomness")
        except (ValueError, AttributeError):
            info = None
    if isinstance(info, dict) and "detected" in info:
        if not info["detected"]:
            return 0
        draws = info.get("prediction_draws")
        return int(draws) if isinstance(draws, int) and draws >= 1 else default
    if not x.shape[0]:
        return 0
    random, _ = detect_randomness(model, x[:8].float(), RECHECK_SEED)
    return default if random else 0


def _wrong_draws(verdicts: list[Tensor]) -> Tensor:
    """Per row, how many of the draws' verdicts (bool ``[k]`` each) say misclassified."""
    return torch.stack(verdicts).sum(0) if verdicts else torch.zeros(0, dtype=torch.long)


def misclassified(logits: Tensor, labels: Tensor) -> Tensor:
    """Per row: another class's logit is strictly above the true class's (ties do not count)."""
    true = logits.gather(1, labels.view(-1, 1)).squeeze(1)
    others = logits.clone()
    others.scatter_(1, labels.view(-1, 1), float("-inf"))
    return others.amax(1) > true


def _dataset_split(meta: dict[str, Any]) -> Tensor | None:
    """The evaluated split's uint8 images, or None when the dataset cannot be loaded here."""
    from robustsnn.data import load_dataset

    try:
        data = load_dataset(str(meta["dataset"]))
    except Exception:  # unavailable here: said in a note
        return None
    return data.x_test if meta.get("split", "test") == "test" else data.x_train


def _to_float(image: Tensor) -> Tensor:
    from robustsnn.data import to_float

    return to_float(image.unsqueeze(0))[0]


LOGIT_TOLERANCE = 1e-4
"""Relative slack when recomputed float32 logits are compared with the stored ones (another
machine's float32 may differ in the last bits; a changed number differs by far more)."""


def _warn_or_fail(
    result: RecheckResult, folder: Path, name: str, problems: list[str], named: bool = False
) -> None:
    """``problems`` of file ``name`` as failures (``named``: they name their file already);
    a missing hash is a warning."""
    for problem in problems:
        if problem == NO_HASH:
            result.notes.append(
                f"warning: {name}: no hash recorded (written before hashes existed): its "
                "content is not verified"
            )
        else:
            result.failures.append(f"{folder}: {problem if named else f'{name}: {problem}'}")


def _meta_problem(meta: dict[str, Any]) -> str | None:
    try:
        eps = float(meta["eps"])
        tolerance = float(meta.get("eps_tolerance", 0.0))
    except (KeyError, TypeError, ValueError):
        return "its metadata has no numeric eps"
    if not (0.0 <= eps <= 1.0 and 0.0 <= tolerance < 1e-2):
        return f"its eps {eps!r} (tolerance {tolerance!r}) is out of range"
    if not isinstance(meta.get("model"), str):
        return "its metadata names no model"
    return None


def recheck_folder(folder: Path, reference: bool = True) -> RecheckResult:
    """Re-verify every saved break of one evaluation folder (a malformed file is a failure
    line, never a traceback)."""
    from robustsnn.evaluation.adversarial import from_bytes
    from robustsnn.evaluation.adversarial import integrity_problems as file_problems
    from robustsnn.integrity import integrity_problems as json_problems

    folder = Path(folder)
    path = folder / ADVERSARIAL_FILE
    evaluation = folder / "evaluation.json"
    try:
        data = path.read_bytes()
        examples, meta = from_bytes(data, str(path))
        problem = _meta_problem(meta)
        if problem is not None:
            raise UserError(f"{path}: {problem}")
    except (UserError, OSError) as exc:
        result = RecheckResult(folder, 0)
        result.failures.append(f"{folder}: {' '.join(str(exc).split())}")
        if evaluation.is_file():
            _warn_or_fail(result, folder, evaluation.name, json_problems(evaluation), named=True)
        return result
    result = RecheckResult(folder, len(examples))
    _warn_or_fail(result, folder, ADVERSARIAL_FILE, file_problems(data, examples))
    if evaluation.is_file():
        _warn_or_fail(result, folder, evaluation.name, json_problems(evaluation), named=True)
    try:
        _recheck_examples(folder, examples, meta, result, reference)
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001 - never a traceback: the file is what is wrong
        detail = " ".join(f"{type(exc).__name__}: {exc}".split())[:200]
        result.failures.append(f"{folder}: the saved examples cannot be rechecked ({detail})")
    return result


def _reference_verdict(
    model: nn.Module, adv: Tensor, labels: Tensor, draws: int
) -> tuple[Tensor, Tensor | None]:
    """Which examples the independent float64 simulator misclassifies; a random model
    (``draws`` > 0): by a strict majority of ``draws`` of its own numpy draws, with the counts."""
    import numpy as np

    from robustsnn.snn.reference import simulate_network

    if not draws:
        sim = simulate_network(model, adv.double())
        return misclassified(torch.from_numpy(sim.logits), labels), None
    rng = np.random.default_rng(RECHECK_SEED)
    votes = _wrong_draws(
        [
            misclassified(
                torch.from_numpy(simulate_network(model, adv.double(), rng=rng).logits), labels
            ).long()
            for _ in range(draws)
        ]
    )
    return 2 * votes > draws, votes


def _note_random(
    result: RecheckResult, draws: int, votes64: Tensor | None, votes_ref: Tensor | None
) -> None:
    """A random model's recheck: its wrong-draw counts and intervals, and a note."""
    counts = [int(v) for v in (votes64 if votes64 is not None else [])]
    result.counts["draws"] = draws
    result.random = {
        "draws": draws,
        "wrong_draws_float64": counts,
        "misclassification_ci95_float64": [list(wilson_interval(c, draws)) for c in counts],
    }
    if votes_ref is not None:
        result.random["wrong_draws_reference"] = [int(v) for v in votes_ref]
    result.notes.append(
        f"random model: each break judged by the majority of {draws} fresh draws (float64 "
        "forward; reference simulator with its own draws), as the evaluation judged it; "
        "the stored float32 logits are one seeded draw"
    )


def _compare_with_records(folder: Path, examples: AdversarialSet, result: RecheckResult) -> None:
    """The file must hold exactly the breaks that ``records.jsonl`` counts."""
    records_file = folder / "records.jsonl"
    if not records_file.is_file():
        if not (folder / "evaluation.json").is_file():
            result.notes.append("no records.jsonl beside the file: the break count is not compared")
        return
    try:
        records = [json.loads(line) for line in records_file.read_text().splitlines() if line]
        broken = {int(r["index"]) for r in records if r["clean_correct"] and not r["robust"]}
    except (ValueError, KeyError, TypeError) as exc:
        result.failures.append(f"{folder}: records.jsonl is malformed ({exc})")
        return
    saved = {int(i) for i in examples.index.tolist()}
    if broken != saved:
        result.failures.append(
            f"{folder}: the file holds {len(saved)} examples but the records count "
            f"{len(broken)} breaks ({len(broken - saved)} unsaved, {len(saved - broken)} "
            "not breaks)"
        )


Fail = Callable[[int, str], None]


def _dataset_rows(
    folder: Path, examples: AdversarialSet, meta: dict[str, Any], result: RecheckResult, fail: Fail
) -> tuple[Tensor | None, Tensor] | None:
    """The dataset split (None when it cannot be loaded here) and which saved indices lie in
    it; None when its images have another shape than the saved ones (nothing to compare)."""
    clean = examples.clean
    dataset = _dataset_split(meta)
    in_split = torch.ones(len(examples), dtype=torch.bool)
    if dataset is None:
        result.notes.append(f"dataset {meta.get('dataset')!r} not loadable here: clean images "
                            "are not compared with it")  # fmt: skip
        return dataset, in_split
    size = int(dataset.shape[0])
    in_split = examples.index < size
    for row in (~in_split).nonzero().squeeze(1).tolist():
        fail(row, f"index out of range (the {meta.get('split', 'test')} split has {size} "
                  "samples)")  # fmt: skip
    if tuple(dataset.shape[1:]) != tuple(clean.shape[1:]):
        result.failures.append(
            f"{folder}: the saved images have shape {list(clean.shape[1:])}, the dataset's "
            f"{list(dataset.shape[1:])}"
        )
        return None
    return dataset, in_split


@dataclass
class _Verdicts:
    """What the float64 forward and the reference simulator say about the saved examples."""

    logits64: Tensor
    bad_label: Tensor
    wrong64: Tensor
    wrong_ref: Tensor
    votes64: Tensor | None
    votes_ref: Tensor | None
    reference: bool  # whether the reference simulator ran
    draws: int  # a random model's draws per verdict (0: deterministic)


def _verdicts(
    model: nn.Module,
    folder: Path,
    examples: AdversarialSet,
    reference: bool,
    result: RecheckResult,
    fail: Fail,
) -> _Verdicts:
    """The float64 forward's verdict per example (a random model's: the majority of M fresh
    draws), labels outside the model's classes failed, and the reference simulator's."""
    adv, labels = examples.adversarial, examples.label
    draws = random_model_draws(folder, model, adv)
    logits64 = _logits64(model, adv, 0 if draws else None)
    classes = int(logits64.shape[1])
    bad_label = (labels < 0) | (labels >= classes)
    for row in bad_label.nonzero().squeeze(1).tolist():
        fail(row, f"label out of range (the model has {classes} classes)")
    safe_labels = labels.clamp(0, classes - 1)
    wrong64 = misclassified(logits64, safe_labels) & ~bad_label
    wrong_ref = torch.ones_like(wrong64)
    votes64 = votes_ref = None
    if draws:  # a random model: the majority of M fresh draws, as the evaluation judged
        votes64 = _wrong_draws(
            [wrong64.long()]
            + [misclassified(_logits64(model, adv, d), safe_labels).long() for d in range(1, draws)]
        )
        wrong64 = (2 * votes64 > draws) & ~bad_label
    if reference:
        try:
            wrong_ref, votes_ref = _reference_verdict(model, adv, safe_labels, draws)
            wrong_ref &= ~bad_label
        except UserError as exc:  # a layer it does not know: said, and not counted as checked
            result.notes.append(f"reference simulator skipped: {exc}")
            reference = False
    return _Verdicts(logits64, bad_label, wrong64, wrong_ref, votes64, votes_ref, reference, draws)


def _check_stored_logits(
    folder: Path, model: nn.Module, examples: AdversarialSet, result: RecheckResult, fail: Fail
) -> Tensor:
    """Compare the stored float32 logits with the model's; returns which adversarial rows
    are reproduced bit for bit."""
    from robustsnn.evaluation.adversarial import single_logits

    reproduced = torch.zeros(len(examples), dtype=torch.bool)
    for name, stored, fresh in (
        ("adversarial", examples.adversarial_logits, single_logits(model, examples.adversarial)),
        ("clean", examples.clean_logits, single_logits(model, examples.clean)),
    ):
        if tuple(stored.shape) != tuple(fresh.shape):
            result.failures.append(
                f"{folder}: stored {name} logits have shape {list(stored.shape)}, the model "
                f"gives {list(fresh.shape)}"
            )
            continue
        if name == "adversarial":
            reproduced = (fresh == stored).all(1)
        scale = fresh.abs().amax(1).clamp_min(1.0)
        gap = (fresh - stored).abs().amax(1)
        gap = torch.where(torch.isfinite(gap), gap, torch.full_like(gap, float("inf")))
        for row in (gap > LOGIT_TOLERANCE * scale).nonzero().squeeze(1).tolist():
            fail(row, f"stored {name} logits do not match the model's (max difference "
                      f"{float(gap[row]):.3g})")  # fmt: skip
    return reproduced


def _check_row(
    row: int,
    examples: AdversarialSet,
    ball: tuple[Tensor, Tensor, Tensor, float, float],
    rows: tuple[Tensor | None, Tensor],
    verdicts: _Verdicts,
    fail: Fail,
) -> None:
    """One saved example: in [0, 1], in the eps-ball, its clean image the dataset's, and
    misclassified by the float64 forward and the reference simulator."""
    low, high, distance, eps, eps_bound = ball
    dataset, in_split = rows
    v = verdicts
    if not (0.0 <= float(low[row]) and float(high[row]) <= 1.0):
        fail(row, f"pixels outside [0, 1] (min {float(low[row]):.6g}, "
                  f"max {float(high[row]):.6g})")  # fmt: skip
    if not float(distance[row]) <= eps_bound:
        fail(row, f"outside the eps-ball: max |x_adv - x| = {float(distance[row]):.6g} > "
                  f"eps {eps:.6g}")  # fmt: skip
    if dataset is not None and bool(in_split[row]):
        if not torch.equal(_to_float(dataset[int(examples.index[row])]), examples.clean[row]):
            fail(row, "the stored clean image is not the dataset's image at this index")
    if not bool(v.wrong64[row]) and not bool(v.bad_label[row]):
        if v.votes64 is not None:
            fail(row, f"misclassified on only {int(v.votes64[row])} of {v.draws} fresh draws of "
                      "the float64 forward (a break needs a strict majority)")  # fmt: skip
        else:
            fail(row, f"correctly classified by the float64 forward (predicts "
                      f"{int(v.logits64[row].argmax())}, true class {int(examples.label[row])})")  # fmt: skip
    if v.reference and not bool(v.wrong_ref[row]) and not bool(v.bad_label[row]):
        if v.votes_ref is not None:
            fail(row, f"misclassified on only {int(v.votes_ref[row])} of {v.draws} draws of the "
                      "reference simulator (a break needs a strict majority)")  # fmt: skip
        else:
            fail(row, "correctly classified by the reference simulator (float64)")


def _recheck_examples(
    folder: Path,
    examples: AdversarialSet,
    meta: dict[str, Any],
    result: RecheckResult,
    reference: bool,
) -> None:
    """Every check of :func:`recheck_folder` on one folder's saved examples, into ``result``."""
    eps = float(meta["eps"])
    tolerance = float(meta.get("eps_tolerance", 0.0))
    _compare_with_records(folder, examples, result)
    if not len(examples):
        result.notes.append("no breaks saved: nothing to recheck")
        return
    model, _ = load_evaluated_model(folder, meta)

    def fail(row: int, why: str) -> None:
        result.failures.append(
            f"{folder}: sample {int(examples.index[row])} (label {int(examples.label[row])}, "
            f"broken by {examples.member[row]}): {why}"
        )

    rows = _dataset_rows(folder, examples, meta, result, fail)
    if rows is None:
        return
    verdicts = _verdicts(model, folder, examples, reference, result, fail)
    reproduced = _check_stored_logits(folder, model, examples, result, fail)
    k = len(examples)
    flat_adv = examples.adversarial.reshape(k, -1).double()
    flat_clean = examples.clean.reshape(k, -1).double()
    distance = (flat_adv - flat_clean).abs().amax(1)
    low, high = flat_adv.amin(1), flat_adv.amax(1)
    ball = (low, high, distance, eps, eps + tolerance)
    for row in range(k):
        _check_row(row, examples, ball, rows, verdicts, fail)
    result.counts = {
        "saved": k,
        "in_range": int(((low >= 0) & (high <= 1)).sum()),
        "in_eps_ball": int((distance <= eps + tolerance).sum()),
        "misclassified_float64": int(verdicts.wrong64.sum()),
        "misclassified_reference": int(verdicts.wrong_ref.sum()) if verdicts.reference else -1,
        "logits_reproduced": int(reproduced.sum()),
    }
    if verdicts.draws:
        _note_random(result, verdicts.draws, verdicts.votes64, verdicts.votes_ref)
    largest = float(distance.max())
    result.notes.append(
        f"max |x_adv - x| = {largest:.9g}, eps = {eps:.9g} (float32 rounding above eps: "
        f"{max(largest - eps, 0.0):.2g}; tolerance {tolerance:g})"
    )


def recheck(path: str | Path, reference: bool = True, write: bool = True) -> list[RecheckResult]:
    """Recheck every evaluation folder at or below ``path``; with ``write``, each folder gets
    ``recheck.json`` (the outcome, for the report)."""
    results = [recheck_folder(folder, reference) for folder in evaluation_folders(path)]
    if write:
        for result in results:
            lines = recheck_lines([result])
            atomic_write_json(
                result.folder / RECHECK_FILE,
                {
                    "passed": result.passed,
                    "summary": lines[0].split(": ", 1)[-1],
                    "counts": result.counts,
                    "failures": result.failures,
                    "notes": result.notes,
                    "reference_simulator": reference,
                    **({"random": result.random} if result.random else {}),
                },
            )
    return results


def recheck_lines(results: Sequence[RecheckResult]) -> list[str]:
    """The report: one summary line per folder, then one line per failure."""
    lines = []
    for r in results:
        c = r.counts
        if c:
            ref = (
                f"reference simulator {c['misclassified_reference']}/{c['saved']}"
                if c["misclassified_reference"] >= 0
                else "reference simulator skipped"
            )
            lines.append(
                f"{'PASS' if r.passed else 'FAIL'} {r.folder}: {c['saved']} saved breaks; in "
                f"[0, 1] {c['in_range']}/{c['saved']}, in the eps-ball "
                f"{c['in_eps_ball']}/{c['saved']}, misclassified by float64 forward "
                f"{c['misclassified_float64']}/{c['saved']}, by {ref}; float32 logits "
                f"reproduced bit for bit {c['logits_reproduced']}/{c['saved']}"
                + (f" (random model: majority of {c['draws']} draws)" if c.get("draws") else "")
            )
        else:
            lines.append(f"{'PASS' if r.passed else 'FAIL'} {r.folder}: {r.examples} saved breaks")
        lines += [f"  note: {note}" for note in r.notes]
        lines += [f"  FAIL {failure}" for failure in r.failures]
    return lines


# --------------------------------------------------------------------------- transfer


TRANSFER_SEED = 0
"""Default seed of a random target's draws in a transfer matrix (one seed: the same matrix)."""


@dataclass
class TransferCell:
    """One cell of the matrix. A random target also keeps its M (``draws``; 0: deterministic,
    one forward pass), the seed of its draws and, per attacked example, how many of the M
    draws misclassify it (``wrong_draws``)."""

    source: str
    target: str
    fooled: int
    attacked: int  # source examples whose clean image the target classifies correctly
    draws: int = 0
    wrong_draws: list[int] = field(default_factory=list)
    seed: int | None = None

    @property
    def rate(self) -> float:
        return self.fooled / self.attacked if self.attacked else float("nan")

    def per_draw(self) -> tuple[int, int]:
        """A random target: (misclassifying draws, draws) over the attacked examples."""
        return sum(self.wrong_draws), self.draws * len(self.wrong_draws)


def _predictions(model: nn.Module, x: Tensor) -> Tensor:
    from robustsnn.evaluation.views import real_predict

    with torch.no_grad():
        return real_predict(model, x, batch_size=64)


def _wrong_draws_of(model: nn.Module, x: Tensor, y: Tensor, draws: int, seed: int) -> Tensor:
    """How many of ``draws`` draws of a random ``model`` misclassify each of ``x``: the verdict
    of :class:`~robustsnn.evaluation.stochastic.Randomness` (torch's global generator seeded
    from ``seed``, its verdict stream and each chunk's digest; the caller's state restored)."""
    from robustsnn.evaluation.stochastic import Randomness, StochasticConfig

    config = StochasticConfig(mode="force", prediction_draws=draws)
    handler = Randomness(model, config, int(seed), True, True, prediction_draws=draws)
    with torch.no_grad():
        chunks = zip(x.split(64), y.split(64), strict=True)
        wrong = [handler.verdict(xc, yc)[1].cpu() for xc, yc in chunks]
    return torch.cat(wrong) if wrong else torch.zeros(0, dtype=torch.long)


def transfer_cell(
    model: nn.Module,
    examples: AdversarialSet,
    source: str,
    target: str,
    draws: int = 0,
    seed: int = TRANSFER_SEED,
) -> TransferCell:
    """``examples`` (saved for ``source``) run on ``model`` (``target``).

    ``draws`` 0 (a deterministic target): one forward pass per image. ``draws`` M (a random
    target): an example fools the target when a strict majority of M fresh draws misclassify
    it, among the examples whose clean image a strict majority classifies correctly: the
    evaluation's rule for random models (:mod:`robustsnn.evaluation.stochastic`), on draws
    seeded from ``seed`` (the same seed gives the same cell)."""
    if not draws:
        clean_ok = _predictions(model, examples.clean) == examples.label
        fooled = _predictions(model, examples.adversarial) != examples.label
        return TransferCell(source, target, int((fooled & clean_ok).sum()), int(clean_ok.sum()))
    from robustsnn.evaluation.views import derive_seed

    stream = derive_seed(seed, "transfer")
    clean_wrong = _wrong_draws_of(model, examples.clean, examples.label, draws, stream)
    wrong = _wrong_draws_of(model, examples.adversarial, examples.label, draws, stream)
    clean_ok = 2 * clean_wrong < draws
    fooled = (2 * wrong > draws) & clean_ok
    counts = [int(w) for w in wrong[clean_ok]]
    return TransferCell(
        source, target, int(fooled.sum()), int(clean_ok.sum()), draws, counts, int(seed)
    )


def _target_draws(folder: Path | None, model: nn.Module, x: Tensor) -> int:
    """M for a target: 0 if deterministic, else its evaluation's M (:func:`random_model_draws`),
    but never a single draw (a random model evaluated with randomness 'off' records M = 1)."""
    from robustsnn.evaluation.stochastic import StochasticConfig

    draws = random_model_draws(folder, model, x)
    return StochasticConfig().prediction_draws if draws == 1 else draws


def _check_input_shape(
    model: nn.Module, examples: AdversarialSet, source: str, target: str
) -> None:
    """One line, not a matmul error, when ``target`` cannot read ``source``'s examples."""
    shape = list(examples.clean.shape[1:])
    try:
        with torch.no_grad():
            logits = _predictions(model, examples.clean[:1])
        del logits
    except (RuntimeError, ValueError, IndexError) as exc:
        detail = " ".join(str(exc).split())[:120]
        raise UserError(
            f"the examples saved for {source} are {shape} images, which {target} cannot read "
            f"({detail}); transfer runs between models of one input shape"
        ) from None
    from robustsnn.io.models import expected_input

    for meta_path in (Path(target).with_suffix(".json"),):
        meta = None
        if meta_path.is_file():
            try:
                meta = json.loads(meta_path.read_text())
            except ValueError:
                meta = None
        expected = expected_input(meta) if isinstance(meta, dict) else None
        if expected is not None and list(expected) != shape:
            raise UserError(
                f"the examples saved for {source} are {shape} images, {target} reads "
                f"{list(expected)}; transfer runs between models of one input shape"
            )


def transfer_matrix(
    sources: Sequence[str | Path], targets: Sequence[str | Path] = (), seed: int = TRANSFER_SEED
) -> tuple[list[str], list[str], list[TransferCell]]:
    """Every source folder's saved examples run on every model: the sources' own models, then
    ``targets`` (checkpoints or evaluation folders). A random model (so found by its
    evaluation, or by two seeded passes) is judged by the majority of M draws seeded from
    ``seed`` (:func:`transfer_cell`); a deterministic one by one forward pass, as always."""
    from robustsnn.io.models import load_model

    loaded: list[tuple[str, AdversarialSet]] = []
    models: dict[str, nn.Module] = {}
    folders: dict[str, Path | None] = {}  # where a model's evaluation.json may say M
    for source in sources:
        for folder in evaluation_folders(source):
            examples, meta = read(folder / ADVERSARIAL_FILE)
            model, path = load_evaluated_model(folder, meta)
            name = str(path)
            loaded.append((name, examples))
            models.setdefault(name, model)
            folders.setdefault(name, folder)
    for target in targets:
        path = Path(target)
        if path.is_dir():
            for folder in evaluation_folders(path):
                meta = read(folder / ADVERSARIAL_FILE)[1]
                model, found = load_evaluated_model(folder, meta)
                models.setdefault(str(found), model)
                folders.setdefault(str(found), folder)
        elif path.is_file():
            models.setdefault(str(path), load_model(path, "cpu")[0].eval())
            folders.setdefault(str(path), None)
        else:
            raise UserError(f"target {path} is neither a checkpoint nor an evaluation folder")
    cells = []
    draws: dict[str, int] = {}
    for name, examples in loaded:
        for target_name, model in models.items():
            if len(examples) == 0:
                cells.append(TransferCell(name, target_name, 0, 0))
                continue
            _check_input_shape(model, examples, name, target_name)
            if target_name not in draws:
                draws[target_name] = _target_draws(folders[target_name], model, examples.clean)
            cells.append(
                transfer_cell(model, examples, name, target_name, draws[target_name], seed)
            )
    return [n for n, _ in loaded], list(models), cells


def transfer_lines(sources: list[str], targets: list[str], cells: list[TransferCell]) -> list[str]:
    """A text matrix: rows = whose examples, columns = the model they run on."""
    short = {name: f"M{i + 1}" for i, name in enumerate(dict.fromkeys(sources + targets))}
    lines = [f"{label} = {name}" for name, label in short.items()]
    lines.append(
        "rows: the model whose saved examples are run; columns: the model they run on; cell: "
        "fooled / examples whose clean image that model classifies correctly, rate [Wilson 95%]"
    )
    lines.append("from \\ on  " + "".join(f"{short[t]:>28}" for t in targets))
    for s in sources:
        row = f"{short[s]:<11}"
        for t in targets:
            cell = next(c for c in cells if c.source == s and c.target == t)
            if cell.attacked:
                lo, hi = wilson_interval(cell.fooled, cell.attacked)
                text = f"{cell.fooled}/{cell.attacked} {cell.rate:.0%} [{lo:.0%}, {hi:.0%}]"
            else:
                text = "n/a"
            row += f"{text:>28}"
        lines.append(row)
    for cell in cells:
        if cell.draws and cell.source in sources and cell.target in targets:
            lines.append(_random_cell_line(cell, short[cell.source], short[cell.target]))
    return lines


def _random_cell_line(cell: TransferCell, source: str, target: str) -> str:
    """The draws behind a random target's cell: M, the seed, the per-draw misclassification
    rate with its Wilson interval, and how many examples each count of wrong draws has."""
    wrong, total = cell.per_draw()
    spread = {k: cell.wrong_draws.count(k) for k in sorted(set(cell.wrong_draws))}
    per_draw = "no attacked example"
    if total:
        lo, hi = wilson_interval(wrong, total)
        per_draw = f"{wrong}/{total} = {wrong / total:.0%} [{lo:.0%}, {hi:.0%}]"
    return (
        f"{source} on {target}: random target, each image judged by {cell.draws} draws "
        f"(seed {cell.seed}): fooled when more than half misclassify the example and at most "
        f"half the clean image; draws misclassifying the attacked examples {per_draw} "
        f"(Wilson 95%); examples by misclassifying draws {spread}"
    )


__all__ = [
    "RecheckResult",
    "TransferCell",
    "evaluation_folders",
    "misclassified",
    "recheck",
    "recheck_folder",
    "recheck_lines",
    "transfer_cell",
    "transfer_lines",
    "transfer_matrix",
]
