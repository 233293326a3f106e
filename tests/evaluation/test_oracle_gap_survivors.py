"""The reference pool on a preset's survivors (issue 30): ``EvaluationRun(indices=...)``
evaluates exactly the given dataset samples, and ``benchmarks/oracle_gap.py run
--pool-on-survivors-of P`` attacks only what P left standing, with the same gap to P as a pool
run on every sample (checked with a deterministic stand-in for the pool: FGSM, which has no
random start, so a sample's result does not depend on which others share its batch)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from evaluation_test_utils import load_oracle_gap, toy_npz_cnn

from robustsnn.conversion import convert
from robustsnn.data import to_float
from robustsnn.errors import UserError
from robustsnn.evaluation import RECORDS_FILE, EvaluationConfig, EvaluationRun, run_evaluation
from robustsnn.evaluation.ensembles import ENSEMBLES, Ensemble, Member
from robustsnn.io.models import save_snn

EPS = 0.2
"""The stand-in pool breaks samples its one member misses at this radius (and not all)."""


@pytest.fixture(scope="module")
def snn_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 3-class 8x8 npz dataset and a small converted SNN (T 4) on it."""
    root = tmp_path_factory.mktemp("survivors")
    spec, x, y, ann = toy_npz_cnn(root, n=36, seed=1, base=70, step=50, spread=30)
    calib = to_float(torch.from_numpy(x[:, None]))
    labels = torch.from_numpy(y).long()
    optimizer = torch.optim.Adam(ann.parameters(), lr=0.01)
    for _ in range(60):  # fit the toy data, so attacks have something to break
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(ann(calib), labels).backward()
        optimizer.step()
    snn = convert(ann.eval(), calib, T=4, calib_T=8, calib_batches=1, calib_batch_size=16)
    return save_snn(root / "snn.safetensors", snn, dataset=spec)


def _records(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / RECORDS_FILE).read_text().splitlines()]


def test_given_indices_are_evaluated_exactly_in_order(snn_checkpoint: Path) -> None:
    root = snn_checkpoint.parent
    config = EvaluationConfig(eps=0.05, ensemble="fgsm-ensemble", diagnostics="none")
    run_evaluation(snn_checkpoint, config, EvaluationRun(n=12, out_dir=root / "all", quiet=True))
    everything = {r["index"]: r for r in _records(root / "all")}
    chosen = [sorted(everything)[k] for k in (7, 2, 10)]
    result = run_evaluation(
        snn_checkpoint, config, EvaluationRun(indices=chosen, out_dir=root / "some", quiet=True)
    )
    some = _records(root / "some")
    assert [r["index"] for r in some] == chosen and result["n"] == 3
    assert result["selection"] == "given indices"
    for record in some:  # FGSM is deterministic: the same sample gives the same record
        assert record == everything[record["index"]]


@pytest.mark.parametrize(
    ("run", "message"),
    [
        (EvaluationRun(indices=[0, 1], n=3), "n = 3 but 2 indices"),
        (EvaluationRun(indices=[0, 36]), "36 is outside the split's 36 samples"),
        (EvaluationRun(indices=[4, 4]), "appears twice"),
        (EvaluationRun(indices=[]), "empty"),
    ],
)
def test_bad_indices_get_one_line(snn_checkpoint: Path, run: EvaluationRun, message: str) -> None:
    config = EvaluationConfig(eps=0.05, ensemble="fgsm-ensemble", diagnostics="none")
    with pytest.raises(UserError, match=message):
        run_evaluation(snn_checkpoint, config, run)


def test_pool_on_survivors_gives_the_gap_of_the_full_pool(
    snn_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gap = load_oracle_gap()
    # the preset: one FGSM member of the stand-in pool (FGSM through all 19 estimators)
    weak = Ensemble("weak-test", (Member("fgsm", "bptt-ste"),), "one FGSM member")
    monkeypatch.setitem(ENSEMBLES._items, "weak-test", weak)
    monkeypatch.setattr(gap, "POOL", "fgsm-ensemble")
    monkeypatch.setattr(gap, "GROUND_TRUTH", ("fgsm-ensemble",))
    suite = tmp_path / "suite.json"
    entry = {"name": "toy", "path": str(snn_checkpoint), "dataset": None, "eps": EPS}
    suite.write_text(json.dumps([entry]))
    preset = "weak-test"
    rows = {}
    for mode in ("full", "survivors"):
        out = tmp_path / mode
        argv = ["run", "--suite", str(suite), "--out", str(out), "--n", "18"]
        argv += ["--diagnostics", "none", "--evals", f"{preset},fgsm-ensemble"]
        if mode == "survivors":
            argv += ["--pool-on-survivors-of", preset]
        gap.main(argv)
        rows[mode] = gap.model_gap(out / "toy", preset)
    standing = gap.survivors(tmp_path / "survivors" / "toy", preset)
    pool_dir = tmp_path / "survivors" / "toy" / gap.survivors_folder(preset)
    pool = _records(pool_dir)
    assert not (tmp_path / "survivors" / "toy" / "fgsm-ensemble").exists()  # its own folder
    assert [r["index"] for r in pool] == standing  # the pool attacked exactly the survivors
    assert len(pool) < 18
    full, cheap = rows["full"], rows["survivors"]
    assert cheap["gap_samples"] == full["gap_samples"]
    assert cheap["gap"] == full["gap"] >= 1  # the stand-in breaks what its one member missed
    assert cheap["n"] == full["n"] == 18
    assert cheap["preset_robust"] == full["preset_robust"]
    # on survivors the truth counts the preset's breaks too: robust only if nothing broke it
    assert cheap["truth_robust"] == cheap["preset_robust"] - cheap["gap"]
    assert cheap["truth_robust"] <= full["truth_robust"]
    text = gap.markdown([cheap], preset)
    assert "pool on weak-test's survivors" in text
    # a second call finds the survivors' run finished and does not redo it
    before = (pool_dir / "cost.json").read_text()
    gap.main(argv)
    assert (pool_dir / "cost.json").read_text() == before
    # beside a full pool run, the survivors' run adds to it (a sample either broke is broken)
    full_pool = tmp_path / "full" / "toy" / "fgsm-ensemble"
    shutil.copytree(pool_dir, tmp_path / "full" / "toy" / gap.survivors_folder(preset))
    both = gap.model_gap(tmp_path / "full" / "toy", preset)
    assert full_pool.exists() and both["gap_samples"] == full["gap_samples"]
    assert both["truth_robust"] == cheap["truth_robust"]


def _write_run(folder: Path, records: list[dict]) -> None:
    folder.mkdir(parents=True)
    (folder / RECORDS_FILE).write_text("".join(json.dumps(r) + "\n" for r in records))
    (folder / "evaluation.json").write_text(json.dumps({"n": len(records)}))


def _record(index: int, robust: bool, margin: float | None) -> dict:
    record = {"index": index, "label": 1, "clean_correct": True, "robust": robust}
    record["broken_by"] = None if robust else "sapgd[steps=300]/assg-atan-0.4-dr"
    if margin is not None:
        record["margin"] = margin
    return record


def test_a_gap_sample_the_pool_broke_only_at_a_tie_is_marked(tmp_path: Path) -> None:
    """The pool's break of #1 reached margin exactly 0 (a spike-count tie that argmax's index
    order decides), #2's went below 0, #3's record has no margin (an older run): only #1 is
    marked; #0 stands in both runs and is not in the gap."""
    gap = load_oracle_gap()
    model = tmp_path / "toy"
    preset = "reliable"
    _write_run(model / preset, [_record(i, True, 1.0) for i in range(4)])
    pool = [_record(0, True, 0.5), _record(1, False, 0.0), _record(2, False, -0.25)]
    _write_run(model / gap.POOL, [*pool, _record(3, False, None)])
    row = gap.model_gap(model, preset)
    assert row is not None
    marks = {s["index"]: s["at_tie"] for s in row["gap_samples"]}
    assert marks == {1: True, 2: False, 3: False}
    text = gap.markdown([row], preset)
    assert "#1 (a tie): " in text and "#2: " in text and "#2 (a tie)" not in text


def test_a_pool_on_a_supersets_survivors_gives_the_gap_of_a_stronger_preset(
    tmp_path: Path,
) -> None:
    """`reliable-v6` runs v5 whole and first, so its survivors are a subset of v5's: the pool
    run on v5's survivors covers them and gives v6's gap (here none: the pool's one break, #1,
    v6 breaks too). A pool run that misses one of the preset's survivors is not used."""
    gap = load_oracle_gap()
    model = tmp_path / "toy"
    _write_run(model / "reliable-v5", [_record(i, i != 0, 1.0) for i in range(4)])
    _write_run(model / "reliable-v6", [_record(i, i in (2, 3), 1.0) for i in range(4)])
    _write_run(model / "reliable-v1", [_record(i, i != 0, 1.0) for i in range(4)])
    pool = model / gap.survivors_folder("reliable-v5")
    _write_run(pool, [_record(1, False, -0.1), _record(2, True, 0.5), _record(3, True, 0.2)])
    (pool / gap.SURVIVORS_FILE).write_text(json.dumps({"of": "reliable-v5", "indices": [1, 2, 3]}))
    row = gap.model_gap(model, "reliable-v6")
    assert row is not None
    assert row["pool_on_survivors"] == "reliable-v5" and row["gap"] == 0
    assert row["truth_robust"] == 2 and row["preset_robust"] == 2
    v5 = gap.model_gap(model, "reliable-v5")
    assert v5 is not None and [s["index"] for s in v5["gap_samples"]] == [1]
    assert "(pool on reliable-v5's survivors)" in gap.markdown([row], "reliable-v6")
    # a pool run that did not attack #3 cannot speak for a preset that left #3 standing
    shutil.rmtree(pool)
    _write_run(pool, [_record(1, False, -0.1), _record(2, True, 0.5)])
    (pool / gap.SURVIVORS_FILE).write_text(json.dumps({"of": "reliable-v5", "indices": [1, 2]}))
    assert gap.model_gap(model, "reliable-v6") is None
