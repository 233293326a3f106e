"""Evidence that cannot be quietly altered (issue 33): content hashes in adversarial.safetensors
and evaluation.json; recheck fails (exit 1, one line per problem, never a traceback) on any
tampering or malformed file; transfer refuses examples of another input shape in one line."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from test_adversarial import evaluated  # noqa: F401 - the shared module-scoped fixture

from robustsnn.cli import main
from robustsnn.evaluation import adversarial as adv
from robustsnn.evaluation.recheck import recheck_folder
from robustsnn.integrity import INTEGRITY_KEY, integrity_problems


def _copy(evaluated: dict[str, Path], tmp_path: Path) -> Path:  # noqa: F811
    folder = tmp_path / "eval-snn"
    shutil.copytree(evaluated["root"] / "eval-snn", folder)
    return folder


def _rewrite_raw(path: Path, change: Callable[[dict[str, torch.Tensor]], None]) -> None:
    """Change tensors and write them back with the *old* header (the hash is not renewed)."""
    tensors = load_file(str(path))
    with safe_open(str(path), framework="pt") as f:
        header = f.metadata()
    change(tensors)
    save_file(tensors, str(path), metadata=header)


def _recheck(folder: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    try:
        code = main(["recheck", str(folder), "--quiet", "--no-reference"])
    except SystemExit as exc:
        code = int(exc.code or 0)
    captured = capsys.readouterr()
    assert "Traceback" not in captured.out + captured.err
    return code, captured.out


def test_files_carry_their_hashes(evaluated: dict[str, Path]) -> None:  # noqa: F811
    folder = evaluated["root"] / "eval-snn"
    data = (folder / adv.ADVERSARIAL_FILE).read_bytes()
    assert adv.integrity_problems(data) == []
    _, meta = adv.from_bytes(data)
    assert len(meta["content_sha256"]) == 64 and len(meta["images_sha256"]) == 64
    result = json.loads((folder / "evaluation.json").read_text())
    assert set(result[INTEGRITY_KEY]["files"]) == {"records.jsonl", adv.ADVERSARIAL_FILE}
    assert integrity_problems(folder / "evaluation.json") == []


def test_changed_stored_logits_fail(
    evaluated: dict[str, Path],  # noqa: F811
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    folder = _copy(evaluated, tmp_path)

    def change(t: dict[str, torch.Tensor]) -> None:
        t["adversarial_logits"][0] += 0.5

    _rewrite_raw(folder / adv.ADVERSARIAL_FILE, change)
    code, out = _recheck(folder, capsys)
    assert code == 1
    assert "content hash mismatch" in out
    assert "stored adversarial logits do not match" in out
    assert "hash mismatch with evaluation.json" in out  # the file's hash recorded there


def test_changed_logits_with_a_renewed_hash_still_fail(
    evaluated: dict[str, Path],  # noqa: F811
    tmp_path: Path,
) -> None:
    folder = _copy(evaluated, tmp_path)
    examples, meta = adv.read(folder / adv.ADVERSARIAL_FILE)
    examples.adversarial_logits = examples.adversarial_logits + 1.0
    adv.write(folder / adv.ADVERSARIAL_FILE, examples, meta)  # a fresh, self-consistent file
    result = recheck_folder(folder, reference=False)
    assert not result.passed
    assert any("stored adversarial logits do not match" in f for f in result.failures)


def test_two_flipped_bits_fail(
    evaluated: dict[str, Path],  # noqa: F811
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    folder = _copy(evaluated, tmp_path)
    path = folder / adv.ADVERSARIAL_FILE
    data = bytearray(path.read_bytes())
    data[-3] ^= 0x01  # inside the last tensor's bytes
    data[-20] ^= 0x10
    path.write_bytes(bytes(data))
    code, out = _recheck(folder, capsys)
    assert code == 1
    assert "content hash mismatch" in out or "not a readable adversarial-examples file" in out


@pytest.mark.parametrize(
    "tamper, expected",
    [
        ("codes", "pixel"),
        ("member", "member index 99 out of range"),
        ("index", "index out of range"),
        ("label", "label out of range"),
    ],
)
def test_malformed_rows_fail_in_one_line(
    evaluated: dict[str, Path],  # noqa: F811
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    tamper: str,
    expected: str,
) -> None:
    folder = _copy(evaluated, tmp_path)

    def change(t: dict[str, torch.Tensor]) -> None:
        if tamper == "codes":
            assert t["pixel_codes"].shape[0] > 0, "the fixture's breaks use pixel codes"
            t["pixel_codes"].zero_()
        elif tamper == "member":
            t["member"][0] = 99
        elif tamper == "index":
            t["index"][0] = 999999
        else:
            t["label"][0] = 42

    _rewrite_raw(folder / adv.ADVERSARIAL_FILE, change)
    code, out = _recheck(folder, capsys)
    assert code == 1
    assert expected in out, out
    fails = [line for line in out.splitlines() if "FAIL" in line]
    assert fails and all(len(line) < 600 for line in fails)


@pytest.mark.parametrize("damage", ["truncated", "empty", "garbage", "header"])
def test_an_unreadable_file_is_a_failure_not_a_traceback(
    evaluated: dict[str, Path],  # noqa: F811
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    damage: str,
) -> None:
    folder = _copy(evaluated, tmp_path)
    path = folder / adv.ADVERSARIAL_FILE
    data = path.read_bytes()
    if damage == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage == "garbage":
        path.write_bytes(b"\xff" * 64)
    else:
        path.write_bytes(data[:8] + data[8:40].replace(b"{", b"[") + data[40:])
    code, out = _recheck(folder, capsys)
    assert code == 1
    assert "not a readable adversarial-examples file" in out or "FAIL" in out


def test_edited_evaluation_json_fails_and_an_old_one_warns(
    evaluated: dict[str, Path],  # noqa: F811
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    folder = _copy(evaluated, tmp_path)
    path = folder / "evaluation.json"
    result = json.loads(path.read_text())
    result["clean_accuracy"] = 0.123
    path.write_text(json.dumps(result))
    code, out = _recheck(folder, capsys)
    assert code == 1 and "evaluation.json: content hash mismatch" in out
    # a file written before hashes existed: a warning, and the recheck passes
    original = json.loads((evaluated["root"] / "eval-snn" / "evaluation.json").read_text())
    path.write_text(json.dumps({k: v for k, v in original.items() if k != INTEGRITY_KEY}))
    code, out = _recheck(folder, capsys)
    assert code == 0, out
    assert "warning: evaluation.json: no hash recorded" in out


def test_an_old_adversarial_file_without_hash_warns(
    evaluated: dict[str, Path],  # noqa: F811
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    folder = _copy(evaluated, tmp_path)
    path = folder / adv.ADVERSARIAL_FILE
    tensors = load_file(str(path))
    with safe_open(str(path), framework="pt") as f:
        header = dict(f.metadata())
    meta = json.loads(header[adv.FORMAT])
    meta.pop("content_sha256")
    meta.pop("images_sha256")
    save_file(tensors, str(path), metadata={adv.FORMAT: json.dumps(meta, sort_keys=True)})
    (folder / "evaluation.json").write_text(
        json.dumps(
            {
                k: v
                for k, v in json.loads((folder / "evaluation.json").read_text()).items()
                if k != INTEGRITY_KEY
            }
        )
    )
    code, out = _recheck(folder, capsys)
    assert code == 0, out
    assert f"warning: {adv.ADVERSARIAL_FILE}: no hash recorded" in out


def test_transfer_refuses_another_input_shape(
    evaluated: dict[str, Path],  # noqa: F811
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from robustsnn.io.models import save_ann
    from robustsnn.models import build_model

    other = build_model(
        "cnn_small",
        num_classes=3,
        in_channels=1,
        image_size=12,
        mean=(0.5,),
        std=(0.5,),
        width=2,
        fc=8,
    )
    target = save_ann(tmp_path / "big.safetensors", other, dataset="mnist5k")
    code = main(["transfer", str(evaluated["root"] / "eval-ann"), "--on", str(target)])
    err = capsys.readouterr().err
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and "one input shape" in err
